//! `tracerd synth --format dicom` then `tracerd convert` reproduces the NIfTI study of the same
//! seed: PET SUV, CT HU and both grids.
//!
//! Tolerances: the synthetic PET is stored as int16 with a per-slice slope mapping each slice's
//! maximum to 32767, so a voxel can be off by half a step, ≤ 1.6e-5 of its slice's maximum. We
//! require |Δ| ≤ 1e-4 × (slice maximum) everywhere, and 1e-4 relative for every voxel above 20 %
//! of its slice maximum (where half a step is < 7.7e-5 relative). CT HU is exact. Affines agree to
//! 1e-4 mm: NIfTI stores them as float32 (6e-6 mm at 100 mm from the origin).

use std::path::Path;
use std::process::Command;

use tracerd::io::dicom::{self, convert::ConversionReport};
use tracerd::io::nifti;
use tracerd::synth::{self, Size, SynthOptions};

const AFFINE_TOL: f64 = 1e-4;

fn tracerd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run tracerd")
}

fn check_pet(got: &tracerd::Volume<f32>, want: &tracerd::Volume<f32>) {
    assert_eq!(got.shape(), want.shape());
    let d = (got.geometry().affine_lps() - want.geometry().affine_lps())
        .abs()
        .max();
    assert!(d < AFFINE_TOL, "PET affine differs by {d}");
    let [nx, ny, nz] = want.shape();
    let plane = nx * ny;
    let mut worst = 0f64;
    for k in 0..nz {
        let a = &got.data()[k * plane..(k + 1) * plane];
        let b = &want.data()[k * plane..(k + 1) * plane];
        let max = b.iter().cloned().fold(0f32, f32::max) as f64;
        for (x, y) in a.iter().zip(b) {
            let (x, y) = (*x as f64, *y as f64);
            let diff = (x - y).abs();
            assert!(
                diff <= 1e-4 * max,
                "slice {k}: {x} vs {y} (slice max {max})"
            );
            if y > 0.2 * max {
                worst = worst.max(diff / y);
                assert!(
                    diff <= 1e-4 * y,
                    "slice {k}: {x} vs {y} relative {}",
                    diff / y
                );
            }
        }
    }
    assert!(
        worst > 0.0,
        "quantisation must show somewhere; did the test compare anything?"
    );
}

#[test]
fn synth_dicom_converts_back_to_the_nifti_study() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 7;
    let (drop, out) = (dir.path().join("drop"), dir.path().join("out"));
    let o = tracerd(&[
        "synth",
        "--out",
        drop.to_str().unwrap(),
        "--seed",
        "7",
        "--format",
        "dicom",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tracerd(&[
        "convert",
        "--out",
        out.to_str().unwrap(),
        drop.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stderr}");
    assert!(
        !stderr.contains("SYNTHETIC")
            && !stdout.contains("SYNTHETIC")
            && !stdout.contains("SYNTH7"),
        "patient name in output: {stdout}{stderr}"
    );

    let want = synth::generate(&SynthOptions {
        seed,
        size: Size::Small,
    });
    let pet = nifti::read_f32(&out.join("pet_suv.nii.gz")).unwrap();
    check_pet(&pet, &want.pet);
    let ct = nifti::read_f32(&out.join("ct.nii.gz")).unwrap();
    assert_eq!(ct.data(), want.ct.data(), "CT HU must be exact");
    let d = (ct.geometry().affine_lps() - want.ct.geometry().affine_lps())
        .abs()
        .max();
    assert!(d < AFFINE_TOL, "CT affine differs by {d}");

    let text = std::fs::read_to_string(out.join("conversion.json")).unwrap();
    assert!(
        !text.contains("SYNTHETIC") && !text.contains("SYNTH7"),
        "identifier leaked"
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["schema"], "tracerd.conversion/1");
    assert_eq!(json["suv"]["method"], "bqml");
    assert_eq!(json["suv"]["units"]["value"], "BQML");
    assert_eq!(json["suv"]["decay_correction"]["value"], "START");
    assert!(
        json["suv"]["weight_g"]["source"]
            .as_str()
            .unwrap()
            .contains("(0010,1030)")
    );
    let tags = tracerd::synth::dicom::SynthPetTags::for_seed(seed);
    let f = json["suv"]["suv_factor"].as_f64().unwrap();
    assert!((f / tags.suv_factor() - 1.0).abs() < 1e-12, "{f}");
    assert_eq!(json["pet"]["slices"], 96);
    assert_eq!(json["ct"]["slices"], 96);
    let ignored: Vec<String> = serde_json::from_value(json["ignored_files"].clone()).unwrap();
    assert!(
        ignored.iter().any(|p| p.ends_with("README.txt")),
        "{ignored:?}"
    );
    // The per-slice slopes really vary.
    let slopes = &json["pet"]["rescale_slope_range"];
    assert!(slopes[0].as_f64().unwrap() < slopes[1].as_f64().unwrap());
}

#[test]
fn two_studies_in_one_drop_give_two_keys_and_same_bytes_twice() {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    for seed in [3u64, 4] {
        let study = synth::generate(&SynthOptions {
            seed,
            size: Size::Small,
        });
        tracerd::synth::dicom::write_dicom(&study, &drop.join(format!("s{seed}"))).unwrap();
    }
    let out = dir.path().join("out");
    let results = dicom::convert(&drop, &out, &Default::default()).unwrap();
    assert_eq!(results.len(), 2);
    let mut keys = Vec::new();
    for r in &results {
        let report: &ConversionReport = r.result.as_ref().unwrap();
        assert_eq!(r.dir, out.join(&r.key));
        assert!(r.dir.join("pet_suv.nii.gz").exists() && r.dir.join("ct.nii.gz").exists());
        assert_eq!(report.key, r.key);
        keys.push(r.key.clone());
    }
    assert_ne!(keys[0], keys[1]);
    // Same input, same keys (stable hash), same conversion.json.
    let again = dicom::convert(&drop, &dir.path().join("out2"), &Default::default()).unwrap();
    for (a, b) in results.iter().zip(&again) {
        assert_eq!(a.key, b.key);
        let x = std::fs::read(a.dir.join("conversion.json")).unwrap();
        let y = std::fs::read(b.dir.join("conversion.json")).unwrap();
        assert_eq!(x, y);
    }
    let _ = Path::new("");
}
