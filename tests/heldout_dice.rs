//! `tracerd process` on five held-out synthetic studies with lesions (seeds from 100000, never
//! trained on) reaches the mean Dice the L2SNet card claims for the adaptive-threshold pipeline
//! over all 100 held-out studies. Five studies are a small sample, so the bar is the card's claim
//! minus 0.05; the measured figures are printed.

mod common;

use tracerd::config::{Config, Engine};
use tracerd::io::nifti;
use tracerd::models::card::ModelCard;
use tracerd::process::Processor;
use tracerd::synth::{self, Size, SynthOptions};

fn dice(a: &[u8], b: &[u8]) -> f64 {
    let inter = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x != 0 && **y != 0)
        .count();
    let total = a.iter().filter(|x| **x != 0).count() + b.iter().filter(|x| **x != 0).count();
    2.0 * inter as f64 / total.max(1) as f64
}

#[test]
fn five_heldout_studies_reach_the_cards_dice() {
    let card = ModelCard::load(&common::repo_root().join("models/l2snet")).unwrap();
    let claimed =
        card.sections["metrics"]["results"]["fp32_l2snet_adaptive"]["mean_dice_lesion_studies"]
            .as_float()
            .expect("the card states the held-out mean Dice");
    let mut config = Config::default();
    config.paths.models = common::repo_root().join("models");
    config.inference.engines = vec![Engine::OrtCpu];
    config.inference.ort_library = Some(common::ort_library());
    let mut processor = Processor::new(&config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut dices = Vec::new();
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
        let d = dice(mask.data(), truth.data());
        eprintln!("seed {seed}: Dice {d:.3}");
        dices.push(d);
    }
    let mean = dices.iter().sum::<f64>() / dices.len() as f64;
    eprintln!("mean Dice over 5 held-out studies {mean:.3}; the card claims {claimed:.3} over 100");
    assert!(
        mean >= claimed - 0.05,
        "mean Dice {mean:.3} is below the card's {claimed:.3} - 0.05 ({dices:?})"
    );
}
