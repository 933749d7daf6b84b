//! `tracerd process`'s code on the first five held-out synthetic studies with lesions (seeds from
//! 100000, never trained on) reaches the Dice the L2SNet card claims for those very studies
//! (`[metrics.per_study_fp32] dice_adaptive`, measured by `models/training/evaluate.py` with
//! onnxruntime): each within 1e-4 (the card rounds to 6 decimals). The card's 100-study mean and
//! pooled figures are printed beside the five-study ones; five studies are too few to hold to the
//! population mean (one faint 1-voxel lesion scores 0.22).

use crate::common;

use tracerd::config::{Config, Engine};
use tracerd::io::nifti;
use tracerd::models::card::ModelCard;
use tracerd::process::Processor;
use tracerd::synth::{self, Size, SynthOptions};

#[test]
fn five_heldout_studies_reach_the_cards_dice() {
    let card = ModelCard::load(&common::repo_root().join("models/l2snet")).unwrap();
    let per_study = &card.sections["metrics"]["per_study_fp32"];
    let card_seeds: Vec<i64> = per_study["seeds_with_lesions"]
        .as_array()
        .expect("the card lists the held-out seeds with lesions")
        .iter()
        .map(|v| v.as_integer().unwrap())
        .collect();
    let card_dice: Vec<f64> = per_study["dice_adaptive"]
        .as_array()
        .expect("the card lists per-study Dice")
        .iter()
        .map(|v| v.as_float().unwrap())
        .collect();
    let claims = &card.sections["metrics"]["results"]["fp32_l2snet_adaptive"];
    let claimed = claims["mean_dice_lesion_studies"]
        .as_float()
        .expect("the card states the held-out mean Dice");
    let claimed_pooled = claims["pooled_dice"]
        .as_float()
        .expect("the card states the held-out pooled Dice");
    let mut config = Config::default();
    config.paths.models = common::repo_root().join("models");
    config.inference.engines = vec![Engine::OrtCpu];
    config.inference.ort_library = Some(common::ort_library());
    let mut processor = Processor::new(&config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut dices = Vec::new();
    let (mut both, mut total) = (0usize, 0usize);
    for seed in 100000u64.. {
        if dices.len() == 5 {
            break;
        }
        let study = synth::generate(&SynthOptions {
            seed,
            size: Size::Small,
        });
        if study.labels.lesions.is_empty() {
            continue;
        }
        let input = dir.path().join(format!("s{seed}"));
        synth::write_nifti(&study, &input).unwrap();
        let published = processor
            .process(&input, &format!("s{seed}"), &dir.path().join("outbox"))
            .unwrap();
        let mask = nifti::read_u8(&published.dir.join("lesions.nii.gz")).unwrap();
        let truth = nifti::read_u8(&input.join("SEG.nii.gz")).unwrap();
        let d = common::dice(mask.data(), truth.data());
        both += mask
            .data()
            .iter()
            .zip(truth.data())
            .filter(|(a, b)| **a != 0 && **b != 0)
            .count();
        total += mask
            .data()
            .iter()
            .chain(truth.data())
            .filter(|v| **v != 0)
            .count();
        let slot = card_seeds
            .iter()
            .position(|&s| s == seed as i64)
            .expect("a held-out seed with lesions is on the card");
        eprintln!("seed {seed}: Dice {d:.6}, card {:.6}", card_dice[slot]);
        assert!(
            (d - card_dice[slot]).abs() <= 1e-4,
            "seed {seed}: Dice {d:.6}, the card claims {:.6}",
            card_dice[slot]
        );
        dices.push(d);
    }
    let mean = dices.iter().sum::<f64>() / dices.len() as f64;
    let pooled = 2.0 * both as f64 / total as f64;
    eprintln!(
        "5 held-out studies: mean Dice {mean:.3}, pooled {pooled:.3}; the card claims mean \
         {claimed:.3}, pooled {claimed_pooled:.3} over the whole held-out set"
    );
}
