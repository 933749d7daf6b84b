//! `tracerd process`'s code on held-out clinical-geometry synthetic studies (seeds from 100000,
//! never trained on: adults on the grids real scanners write).
//!
//! - Two of the first with lesions reach the Dice the L2SNet card claims for those very studies
//!   (`[metrics.per_study_fp32] dice_shipped`, of the rule `[metrics] shipped_rule` names,
//!   measured by `models/training/evaluate.py` with onnxruntime): each within 1e-4 (the card
//!   rounds to 6 decimals). The first (a GE grid, 3.6 mm) is checked in
//!   `heldout_clinical_study_reaches_the_cards_dice`, the second ([`GRID_SEED`], drawn on a 2 mm
//!   grid) in the grid test. One clinical study costs about a minute here, so
//!   two are what CI can afford; the card holds the held-out means. The first also runs on the
//!   default path (precision `auto`: loc2d and seg3d INT8), which must stay within one study's
//!   share of the speed issue's bounds of the fp32 run (`fast_path_agrees`).
//! - [`GRID_SEED`] rendered at 2.0 mm and at 4.0 mm voxels finds the same lesions: Dice ≥ 0.75 at
//!   both, found volumes (in all, and per lesion of 5 ml or more) within 10 % of each other and
//!   each lesion of 5 ml or more within 10 % of the truth, and
//!   no voxel along the volume's faces (the small-phantom models drew lines of false voxels there).

use crate::common;

use std::path::Path;

use tracerd::Volume;
use tracerd::config::{Config, Engine, Limits, Precision, Scope};
use tracerd::io::nifti;
use tracerd::models::card::ModelCard;
use tracerd::models::l2snet::label_components;
use tracerd::outbox::OrAbsent;
use tracerd::process::{Processor, Published};
use tracerd::synth::{self, Size, SynthOptions};

/// A processor on ort-cpu with the committed models. The card's per-study figures are of the
/// fp32 files.
fn ort_processor() -> Processor {
    ort_processor_at(Precision::Fp32)
}

fn ort_processor_at(precision: Precision) -> Processor {
    let mut config = Config::default();
    config.paths.models = common::repo_root().join("models");
    config.inference.engines = vec![Engine::OrtCpu];
    config.inference.ort_library = Some(common::ort_library());
    config.inference.precision = precision;
    Processor::new(&config).unwrap()
}

/// What the L2SNet card says about the held-out set.
struct CardFigures {
    /// Seeds of the held-out studies with lesions, in order.
    seeds: Vec<u64>,
    /// Their Dice (the shipped post-processing, fp32).
    dice: Vec<f64>,
    /// Mean and pooled Dice over the whole held-out set.
    mean: f64,
    pooled: f64,
}

impl CardFigures {
    fn load() -> CardFigures {
        let card = ModelCard::load(&common::repo_root().join("models/l2snet")).unwrap();
        let metrics = &card.sections["metrics"];
        let list = |key: &str| {
            metrics["per_study_fp32"][key]
                .as_array()
                .unwrap_or_else(|| panic!("the card lists per_study_fp32.{key}"))
                .clone()
        };
        let rule = metrics["shipped_rule"]
            .as_str()
            .expect("the card names its shipped_rule");
        let claims = &metrics["results"][&format!("fp32_{rule}")];
        let get = |key: &str| {
            claims[key]
                .as_float()
                .unwrap_or_else(|| panic!("card: {key}"))
        };
        CardFigures {
            seeds: list("seeds_with_lesions")
                .iter()
                .map(|v| v.as_integer().unwrap() as u64)
                .collect(),
            dice: list("dice_shipped")
                .iter()
                .map(|v| v.as_float().unwrap())
                .collect(),
            mean: get("mean_dice_lesion_studies"),
            pooled: get("pooled_dice"),
        }
    }

    /// The card's Dice for `seed`.
    fn dice_of(&self, seed: u64) -> f64 {
        let slot = self
            .seeds
            .iter()
            .position(|s| *s == seed)
            .expect("a seed on the card");
        self.dice[slot]
    }
}

/// The most INT8 moved one held-out study's Dice (L2SNet card, `metrics.int8_seg3d`: 0.03 on 100
/// studies, rounded up).
const INT8_STUDY_DICE: f64 = 0.03;

/// A held-out phantom drawn on a 2 mm grid (a Philips-like adult with two neck nodes, 13 and
/// 1.8 ml), rendered again at 4 mm by the grid test.
const GRID_SEED: u64 = 100001;

#[test]
fn heldout_clinical_study_reaches_the_cards_dice() {
    let card = CardFigures::load();
    let seed = *card
        .seeds
        .iter()
        .find(|s| **s != GRID_SEED)
        .expect("the card lists a held-out study with lesions");
    let study = synth::generate(&SynthOptions {
        seed,
        size: Size::Clinical,
    });
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(format!("s{seed}"));
    synth::write_nifti(&study, &input).unwrap();
    let published = ort_processor()
        .process(&input, &format!("s{seed}"), &dir.path().join("outbox"))
        .unwrap();
    let mask = nifti::read_u8(&published.dir.join("lesions.nii.gz")).unwrap();
    let truth = nifti::read_u8(&input.join("SEG.nii.gz")).unwrap();
    let d = common::dice(mask.data(), truth.data());
    let expected = card.dice_of(seed);
    eprintln!(
        "seed {seed}: Dice {d:.6}, card {expected:.6}; the card's held-out mean {:.3}, pooled {:.3}",
        card.mean, card.pooled
    );
    assert!(
        (d - expected).abs() <= 1e-4,
        "seed {seed}: Dice {d:.6}, the card claims {expected:.6}"
    );
    fast_path_agrees(&input, &published, &truth, d);
}

/// The default path (precision `auto`: loc2d and seg3d INT8 on ort-cpu) against the fp32 run of
/// the same study. The speed issue's bounds hold for the held-out means (mean Dice within 0.005 of
/// fp32, the same lesion count on at least 95 % of studies; the L2SNet card's `metrics.int8_seg3d`
/// and its acceptance entry). One study moves by more than a mean does: on the card's 100 held-out
/// studies INT8 changed a study's Dice by at most [`INT8_STUDY_DICE`], and the masks agreed to a
/// pooled Dice of 0.99. So here: Dice within that of fp32, mask Dice against fp32 at least 0.97,
/// the same lesion count, scores within 0.02.
fn fast_path_agrees(input: &Path, fp32: &Published, truth: &Volume<u8>, fp32_dice: f64) {
    let dir = tempfile::tempdir().unwrap();
    let auto = ort_processor_at(Precision::Auto)
        .process(input, "auto", dir.path())
        .unwrap();
    let mask = nifti::read_u8(&auto.dir.join("lesions.nii.gz")).unwrap();
    let fp32_mask = nifti::read_u8(&fp32.dir.join("lesions.nii.gz")).unwrap();
    let d = common::dice(mask.data(), truth.data());
    let agree = common::dice(mask.data(), fp32_mask.data());
    let (a, f) = (&auto.result, &fp32.result);
    eprintln!(
        "precision auto: Dice {d:.6} (fp32 {fp32_dice:.6}); mask Dice against fp32 {agree:.4}"
    );
    assert!(
        (d - fp32_dice).abs() <= INT8_STUDY_DICE,
        "auto {d:.6}, fp32 {fp32_dice:.6}"
    );
    assert!(agree >= 0.97, "auto against fp32: mask Dice {agree:.4}");
    let count = |r: &tracerd::outbox::ResultDoc| match &r.lesions {
        OrAbsent::Present(l) => l.count,
        OrAbsent::Absent { .. } => panic!("no lesion summary"),
    };
    assert_eq!(count(a), count(f), "lesion count");
    let scores = |r: &tracerd::outbox::ResultDoc| match &r.scores {
        OrAbsent::Present(s) => [s.scores.lr, s.scores.dm, s.scores.os],
        OrAbsent::Absent { .. } => panic!("no scores"),
    };
    for (x, y) in scores(f).into_iter().zip(scores(a)) {
        assert!((x - y).abs() <= 0.02, "scores: fp32 {x}, auto {y}");
    }
}

/// [`GRID_SEED`] with its PET rendered at 2.0 mm (the grid it was drawn on, so the card's Dice
/// holds there) and at 4.0 mm: each lesion of 5 ml or more found within 10 % of the truth on both
/// grids and of each other. L2SNet 0.5.0 finds the 13 ml node as 13.55 ml at 2 mm and 13.82 ml at
/// 4 mm (0.4.0, whose lowered threshold drew the edge: 16.9 and 15.5 ml, 18-26 % too large).
#[test]
fn the_same_phantom_at_2_and_4_mm_finds_the_same_lesions() {
    let card = CardFigures::load();
    let mut processor = ort_processor();
    let mut runs = Vec::new();
    for mm in [2.0, 4.0] {
        let options = SynthOptions {
            seed: GRID_SEED,
            size: Size::Clinical,
        };
        let study = synth::generate_with_pet_spacing(&options, [mm, mm, mm]);
        let (mask, truth) = segment(&mut processor, &study);
        let d = common::dice(mask.data(), truth.data());
        let (truth_ml, found_ml) = per_lesion_ml(&mask, &truth);
        let edges = edge_voxels(&mask, &truth, 2);
        eprintln!(
            "{mm} mm: Dice {d:.6}; lesions true {truth_ml:.2?} ml, found {found_ml:.2?} ml; \
             {edges} voxels along the faces"
        );
        runs.push((mm, d, truth_ml, found_ml, edges));
    }
    let expected = card.dice_of(GRID_SEED);
    assert!(
        (runs[0].1 - expected).abs() <= 1e-4,
        "2 mm: the card claims {expected:.6}"
    );
    for (mm, d, truth_ml, found_ml, edges) in &runs {
        assert!(*d >= 0.75, "{mm} mm: Dice {d:.3}");
        assert_eq!(*edges, 0, "{mm} mm: voxels along a face");
        for (t, f) in truth_ml.iter().zip(found_ml).filter(|(t, _)| **t >= 5.0) {
            assert!(
                (f - t).abs() <= 0.10 * t,
                "{mm} mm: found {f:.2} ml of {t:.2} ml"
            );
        }
    }
    let total = |r: &[f64]| r.iter().sum::<f64>();
    let (a, b) = (total(&runs[0].3), total(&runs[1].3));
    assert!(
        (a - b).abs() <= 0.10 * a.max(b),
        "found 2 mm {a:.2} ml, 4 mm {b:.2} ml in all"
    );
    for (a, b) in runs[0].3.iter().zip(&runs[1].3).filter(|(a, _)| **a >= 5.0) {
        assert!(
            (a - b).abs() <= 0.10 * a.max(*b),
            "a lesion: 2 mm {a:.2} ml, 4 mm {b:.2} ml"
        );
    }
}

/// `process`'s analysis of a synthetic study written as NIfTI and read back: the lesion mask on
/// the PET grid and the truth on the same grid.
fn segment(processor: &mut Processor, study: &synth::SyntheticStudy) -> (Volume<u8>, Volume<u8>) {
    let dir = tempfile::tempdir().unwrap();
    synth::write_nifti(study, dir.path()).unwrap();
    let loaded =
        tracerd::study::load(dir.path(), "k", &Limits::default(), &Scope::default()).unwrap();
    let (loaded, ct) = tracerd::process::prepare(loaded, processor.l2snet_params());
    let mask = processor
        .analyse(&loaded, ct)
        .unwrap()
        .lesions
        .expect("a CT")
        .mask;
    assert_eq!(mask.geometry(), study.seg.geometry());
    (mask, study.seg.clone())
}

/// Per true lesion (18-connected component of `truth`, largest first): its volume and the
/// volume of the found components that touch it, in ml.
fn per_lesion_ml(mask: &Volume<u8>, truth: &Volume<u8>) -> (Vec<f64>, Vec<f64>) {
    let voxel_ml = truth.geometry().spacing.iter().product::<f64>() / 1000.0;
    let (t_labels, nt) = label_components(truth);
    let (m_labels, nm) = label_components(mask);
    let mut m_size = vec![0usize; nm + 1];
    for &l in &m_labels {
        m_size[l as usize] += 1;
    }
    let mut lesions: Vec<(f64, f64)> = (1..=nt as u32)
        .map(|t| {
            let pairs = t_labels.iter().zip(&m_labels).filter(|&(&a, _)| a == t);
            let mut touching: Vec<u32> = pairs
                .clone()
                .filter(|&(_, &b)| b != 0)
                .map(|(_, &b)| b)
                .collect();
            touching.sort_unstable();
            touching.dedup();
            let found: usize = touching.iter().map(|&b| m_size[b as usize]).sum();
            (pairs.count() as f64 * voxel_ml, found as f64 * voxel_ml)
        })
        .collect();
    lesions.sort_by(|a, b| b.0.total_cmp(&a.0));
    lesions.into_iter().unzip()
}

/// Found voxels within `r` voxels of a face of the volume, unless the truth has voxels there too.
fn edge_voxels(mask: &Volume<u8>, truth: &Volume<u8>, r: usize) -> usize {
    let [nx, ny, nz] = mask.shape();
    let near = |v: usize| {
        let (i, j, k) = (v % nx, (v / nx) % ny, v / (nx * ny));
        [(i, nx), (j, ny), (k, nz)]
            .iter()
            .any(|&(c, n)| c < r || c + r >= n)
    };
    if truth
        .data()
        .iter()
        .enumerate()
        .any(|(v, &t)| t != 0 && near(v))
    {
        return 0;
    }
    mask.data()
        .iter()
        .enumerate()
        .filter(|&(v, &m)| m != 0 && near(v))
        .count()
}
