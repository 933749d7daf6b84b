//! The generator's tests: determinism, grids, lesions against their labels and hosts, physics,
//! outcomes, files, and the pinned voxels.

use super::*;
use std::sync::OnceLock;

fn small(seed: u64) -> SynthOptions {
    SynthOptions {
        seed,
        size: Size::Small,
    }
}

struct Sample {
    study: SyntheticStudy,
    lesions: Vec<PlacedLesion>,
}

/// Seeds 0..40, generated once for all voxel-level tests (CT dropped to save memory; it has
/// its own test).
fn corpus() -> &'static [Sample] {
    static CORPUS: OnceLock<Vec<Sample>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        (0..40)
            .map(|seed| {
                let (mut study, lesions) = build(&small(seed));
                study.ct =
                    Volume::filled(Geometry::axial([1, 1, 1], [1.0; 3], [0.0; 3]), 0.0).unwrap();
                Sample { study, lesions }
            })
            .collect()
    })
}

/// Chebyshev dilation of a 0/1 mask by `r` voxels.
fn dilate(mask: &[u8], n: [usize; 3], r: usize) -> Vec<u8> {
    let mut out = vec![0u8; mask.len()];
    for k in 0..n[2] {
        for j in 0..n[1] {
            for i in 0..n[0] {
                if mask[i + n[0] * (j + n[1] * k)] == 0 {
                    continue;
                }
                for kk in k.saturating_sub(r)..(k + r + 1).min(n[2]) {
                    for jj in j.saturating_sub(r)..(j + r + 1).min(n[1]) {
                        for ii in i.saturating_sub(r)..(i + r + 1).min(n[0]) {
                            out[ii + n[0] * (jj + n[1] * kk)] = 1;
                        }
                    }
                }
            }
        }
    }
    out
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

#[test]
fn same_seed_same_study_and_different_seeds_differ() {
    let a = generate(&small(11));
    let b = generate(&small(11));
    assert_eq!(a.pet, b.pet);
    assert_eq!(a.ct, b.ct);
    assert_eq!(a.seg, b.seg);
    assert_eq!(a.labels, b.labels);
    let c = generate(&small(12));
    assert_ne!(a.pet.data(), c.pet.data());
    assert_ne!(a.ct.data(), c.ct.data());
    assert_ne!(a.labels, c.labels);
}

#[test]
fn grids_match_the_sizes() {
    let s = &corpus()[0].study;
    assert_eq!(s.pet.shape(), [64, 64, 96]);
    assert_eq!(s.seg.geometry(), s.pet.geometry());
    assert_eq!(s.labels.ct.shape, [128, 128, 96]);
}

#[test]
fn clinical_plans_cover_the_scanner_distribution() {
    let plans: Vec<ClinicalPlan> = (0..400).map(ClinicalPlan::draw).collect();
    let range = |f: &dyn Fn(&ClinicalPlan) -> f64| {
        let v: Vec<f64> = plans.iter().map(f).collect();
        (
            v.iter().cloned().fold(f64::INFINITY, f64::min),
            v.iter().cloned().fold(0.0, f64::max),
        )
    };
    let (lo, hi) = range(&|p| p.acquisition.weight_kg);
    assert!(
        lo <= 50.0 && hi >= 130.0 && lo >= 45.0 && hi <= 150.0,
        "weight {lo}..{hi}"
    );
    let (lo, hi) = range(&|p| p.pet.spacing.x);
    assert!(
        (1.6..1.7).contains(&lo) && hi <= 5.5 && hi > 5.4,
        "PET pixel {lo}..{hi}"
    );
    let (lo, hi) = range(&|p| p.pet.spacing.z);
    assert!(lo >= 1.5 && hi <= 5.0, "PET slices {lo}..{hi}");
    let (lo, hi) = range(&|p| p.pet.shape[0] as f64);
    assert!(lo >= 128.0 && hi <= 440.0, "PET matrix {lo}..{hi}");
    let (lo, hi) = range(&|p| p.ct.spacing.x);
    assert!(
        lo >= 500.0 / 512.0 && hi <= 700.0 / 512.0,
        "CT pixel {lo}..{hi}"
    );
    let (lo, hi) = range(&|p| p.ct.spacing.z);
    assert!(lo >= 1.0 && hi <= 5.0, "CT slices {lo}..{hi}");
    // Every family, both arm positions, both starts and both ends occur.
    for (family, _) in SCANNERS {
        assert!(
            plans.iter().any(|p| p.acquisition.scanner == family),
            "{family}"
        );
    }
    let a = |f: &dyn Fn(&Acquisition) -> bool| plans.iter().filter(|p| f(&p.acquisition)).count();
    assert!(a(&|q| q.arms == Arms::Up) > 200 && a(&|q| q.arms == Arms::Down) > 60);
    assert!(a(&|q| q.from == AxialStart::SkullBase) > 60 && a(&|q| q.to == AxialEnd::Feet) > 40);
    for p in &plans {
        // The CT covers the PET's axial extent, on its own origin.
        let pet_top = p.pet.origin.z + (p.pet.shape[2] - 1) as f64 * p.pet.spacing.z;
        let ct_top = p.ct.origin.z + (p.ct.shape[2] - 1) as f64 * p.ct.spacing.z;
        assert!(p.ct.origin.z <= p.pet.origin.z && ct_top >= pet_top - 1e-9);
        let extent = pet_top - p.pet.origin.z;
        assert!((600.0..2100.0).contains(&extent), "axial extent {extent}");
    }
}

#[test]
fn lesions_have_mask_voxels_that_match_the_labels() {
    let corpus = corpus();
    let empty = corpus
        .iter()
        .filter(|s| s.study.labels.lesions.is_empty())
        .count();
    assert!(empty >= 4, "only {empty} of 40 studies without lesions");
    assert!(empty <= 20, "{empty} of 40 studies without lesions");
    for s in corpus {
        let labels = &s.study.labels;
        let seg = s.study.seg.data();
        let total: u64 = labels.lesions.iter().map(|l| l.voxels).sum();
        let marked = seg.iter().filter(|&&v| v == 1).count() as u64;
        assert_eq!(total, marked, "seed {}", labels.seed);
        assert!(seg.iter().all(|&v| v <= 1));
        for (l, placed) in labels.lesions.iter().zip(&s.lesions) {
            assert!(l.voxels >= 1, "seed {} lesion {}", labels.seed, l.id);
            let mut own = vec![0u8; seg.len()];
            let counts = make_seg(
                std::slice::from_ref(placed),
                s.study.seg.geometry(),
                &mut own,
            );
            assert_eq!(counts[0], l.voxels);
            assert!(own.iter().zip(seg).all(|(o, s)| *o <= *s));
            assert!((3.0..=15.0).contains(&l.radii_mm.iter().cloned().fold(0.0, f64::max)));
            assert!((2.0..=15.0).contains(&l.suv_peak));
        }
    }
}

#[test]
fn lesions_are_hotter_than_their_surroundings() {
    for s in corpus() {
        if s.lesions.is_empty() {
            continue;
        }
        let pet = s.study.pet.data();
        let seg = s.study.seg.data();
        let n = s.study.pet.shape();
        let ring = dilate(seg, n, 2);
        let mean = |sel: &dyn Fn(usize) -> bool| {
            let v: Vec<f64> = (0..pet.len())
                .filter(|&i| sel(i))
                .map(|i| pet[i] as f64)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let inside = mean(&|i| seg[i] == 1);
        let shell = mean(&|i| ring[i] == 1 && seg[i] == 0);
        let seed = s.study.labels.seed;
        assert!(inside > shell, "seed {seed}: inside {inside} shell {shell}");
        for (l, placed) in s.study.labels.lesions.iter().zip(&s.lesions) {
            let mut own = vec![0u8; seg.len()];
            make_seg(
                std::slice::from_ref(placed),
                s.study.seg.geometry(),
                &mut own,
            );
            let own_ring = dilate(&own, n, 2);
            let max = (0..pet.len())
                .filter(|&i| own[i] == 1)
                .map(|i| pet[i])
                .fold(0.0, f32::max);
            let shell: Vec<f32> = (0..pet.len())
                .filter(|&i| own_ring[i] == 1 && seg[i] == 0)
                .map(|i| pet[i])
                .collect();
            let med = median(shell);
            assert!(
                max > med,
                "seed {seed} lesion {}: max {max} shell median {med}",
                l.id
            );
        }
    }
}

#[test]
fn lesions_sit_in_their_hosts_and_outside_hot_organs() {
    for seed in 0..40 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (pet, _) = small_grids();
        let anatomy = build_anatomy(&pet, &mut rng, None);
        let lesions = &corpus()[seed as usize].lesions;
        for l in lesions {
            assert!(l.site.host().contains(&anatomy.tissue_at(&l.shape.c)));
            for u in probe_directions() {
                let p = l.shape.point(&u, 1.0, 0.0);
                assert!(
                    anatomy.hot_organ_at(&p).is_none(),
                    "seed {seed}: {:?}",
                    l.site
                );
            }
            let [lo, hi] = anatomy.head_neck_z;
            assert_eq!(l.site.is_head_neck(), (lo..=hi).contains(&l.shape.c.z));
        }
    }
}

#[test]
fn outcomes_follow_the_rules_and_are_balanced() {
    let mut positive = [0usize; 3];
    let n = 60;
    for seed in 0..n {
        let labels = generate(&small(seed)).labels;
        let rules = derive_outcomes(&labels.lesions);
        let o = labels.outcomes;
        for (name, got, rule) in [
            ("lr", o.lr, rules.lr),
            ("dm", o.dm, rules.dm),
            ("os", o.os, rules.os),
        ] {
            let flipped = labels.flipped.iter().any(|f| f == name);
            assert_eq!(got == rule, !flipped, "seed {seed} {name}");
        }
        positive[0] += o.lr as usize;
        positive[1] += o.dm as usize;
        positive[2] += o.os as usize;
    }
    for (name, p) in ["lr", "dm", "os"].iter().zip(positive) {
        let rate = p as f64 / n as f64;
        assert!((0.1..=0.6).contains(&rate), "{name} prevalence {rate}");
    }
}

#[test]
fn values_are_physical() {
    for s in corpus() {
        let pet = s.study.pet.data();
        assert!(pet.iter().all(|v| v.is_finite() && *v >= 0.0));
        for (p, m) in pet.iter().zip(s.study.seg.data()) {
            assert!(*m == 0 || *p > 0.0);
        }
    }
    for seed in [0, 5] {
        let s = generate(&small(seed));
        assert!(
            s.ct.data()
                .iter()
                .all(|v| (-1024.0..=3071.0).contains(v) && v.fract() == 0.0)
        );
    }
}

#[test]
fn liver_noise_is_in_the_target_range() {
    // Liver SNR after blur is drawn from 8–15; texture adds a little, so allow 5–18.
    let seed = 3;
    let s = generate(&small(seed));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let anatomy = build_anatomy(s.pet.geometry(), &mut rng, None);
    let g = s.pet.geometry();
    let [nx, ny, nz] = g.shape;
    let mut v = Vec::new();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p = g.index_to_world(Vector3::new(i as f64, j as f64, k as f64));
                let deep = [-8.0, 8.0].iter().all(|d| {
                    (0..3).all(|a| {
                        let mut q = p;
                        q[a] += d;
                        anatomy.tissue_at(&q) == tissue::LIVER
                    })
                });
                if deep && s.seg.data()[g.linear_index(i, j, k)] == 0 {
                    v.push(*s.pet.at(i, j, k) as f64);
                }
            }
        }
    }
    assert!(v.len() > 20, "{} deep liver voxels", v.len());
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    assert!((1.6..=3.0).contains(&mean), "liver mean {mean}");
    assert!(
        (5.0..=18.0).contains(&(mean / sd)),
        "liver SNR {}",
        mean / sd
    );
}

/// SHA-256 (first 16 hex digits) of a volume's voxel bytes.
fn digest<T: bytemuck::Pod>(v: &Volume<T>) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytemuck::cast_slice::<T, u8>(v.data()));
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Pins what the generator makes, so that refactoring it provably changes nothing: the voxels
/// of a small study and of a clinical one (generator version 2).
#[test]
fn generated_voxels_are_pinned() {
    let pins = [
        (
            small(0),
            ["36d01dd2c33a8a10", "10dc0b5a1ff867d7", "5b7645de502b05da"],
        ),
        (
            SynthOptions {
                seed: 0,
                size: Size::Clinical,
            },
            ["c39f1fe5270ced22", "6840f9bce2322104", "d470e778636e3655"],
        ),
    ];
    for (options, [pet, ct, seg]) in pins {
        let s = generate(&options);
        let got = [digest(&s.pet), digest(&s.ct), digest(&s.seg)];
        eprintln!("{} seed {}: {got:?}", options.size, options.seed);
        assert_eq!(
            got,
            [pet, ct, seg],
            "{} seed {}",
            options.size,
            options.seed
        );
    }
}

/// Pins the DICOM export's bytes (every file under the study folder, by relative path), so that
/// refactoring the exporter provably changes nothing.
#[test]
fn dicom_export_is_pinned() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    super::dicom::write_dicom(&generate(&small(3)), dir.path()).unwrap();
    let mut files = Vec::new();
    let mut dirs = vec![dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap().map(Result::unwrap) {
            let path = entry.path();
            match path.is_dir() {
                true => dirs.push(path),
                false => files.push(path),
            }
        }
    }
    files.sort();
    assert_eq!(
        files.len(),
        194,
        "PET and CT slices, README.txt, labels.json"
    );
    let mut all = Sha256::new();
    for path in &files {
        all.update(
            path.strip_prefix(dir.path())
                .unwrap()
                .to_string_lossy()
                .as_bytes(),
        );
        all.update(Sha256::digest(std::fs::read(path).unwrap()));
    }
    let got: String = all
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(got, "9b29502c8f2a8cf1");
}

#[test]
fn write_nifti_round_trips_and_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let study = generate(&small(2));
    let a = dir.path().join("a");
    let b = dir.path().join("nested/b");
    write_nifti(&study, &a).unwrap();
    write_nifti(&generate(&small(2)), &b).unwrap();
    for name in ["SUV.nii.gz", "CT.nii.gz", "SEG.nii.gz", "labels.json"] {
        let x = std::fs::read(a.join(name)).unwrap();
        assert_eq!(x, std::fs::read(b.join(name)).unwrap(), "{name}");
    }
    for (name, vol) in [("SUV.nii.gz", &study.pet), ("CT.nii.gz", &study.ct)] {
        let back = nifti::read_f32(&a.join(name)).unwrap();
        assert_eq!(back.data(), vol.data(), "{name}");
        let d = (back.geometry().affine_lps() - vol.geometry().affine_lps())
            .abs()
            .max();
        assert!(d < 1e-4, "{name}: affine differs by {d}");
    }
    let seg = nifti::read_u8(&a.join("SEG.nii.gz")).unwrap();
    assert_eq!(seg.data(), study.seg.data());
    let text = std::fs::read_to_string(a.join("labels.json")).unwrap();
    assert!(text.ends_with("}\n"));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "schema",
        "generator_version",
        "seed",
        "size",
        "pet",
        "ct",
        "head_neck_region_mm",
        "lesions",
        "outcomes",
        "derivation",
        "flipped",
        "note",
    ] {
        assert!(json.get(key).is_some(), "labels.json lacks {key}");
    }
    assert_eq!(json["schema"], SCHEMA);
    assert_eq!(json["size"], "small");
    let back: Labels = serde_json::from_str(&text).unwrap();
    assert_eq!(back, study.labels);
}

#[test]
fn size_parses_and_prints() {
    for size in [Size::Small, Size::Clinical] {
        assert_eq!(size.to_string().parse::<Size>(), Ok(size));
        assert_eq!(serde_json::to_string(&size).unwrap(), format!("\"{size}\""));
    }
    assert_eq!("Clinical".parse::<Size>(), Ok(Size::Clinical));
    assert!("huge".parse::<Size>().is_err());
}
