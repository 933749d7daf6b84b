//! `tracerd process` as users run it: a published outbox folder that independent tools accept
//! (jsonschema, nibabel: `tests/oracle/result_oracle.py`), re-runs that replace, the engine
//! fallback recorded in `result.json`, DICOM input with its SEG, a real scanner's series, and bad
//! inputs that fail with a one-line reason and publish nothing.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tracerd::synth::dicom as synth_dicom;
use tracerd::synth::{self, Size, SynthOptions};
use tracerd::volume::{Geometry, Volume};

fn process(config: Option<&Path>, input: &Path, outbox: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracerd"));
    cmd.arg("process");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("--outbox")
        .arg(outbox)
        .arg(input)
        .env("RUST_LOG", "warn")
        .env("ORT_DYLIB_PATH", common::ort_library())
        .output()
        .expect("run tracerd")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn synth_nifti(dir: &Path, seed: u64) {
    let study = synth::generate(&SynthOptions {
        seed,
        size: Size::Small,
    });
    synth::write_nifti(&study, dir).unwrap();
}

/// `result.json` of a body too short for 2Be3-Net [WS]: scores absent with the reason, which the
/// warnings repeat.
fn assert_not_scored(r: &serde_json::Value) {
    let reason = r["scores"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("mm of body head to foot") && r["scores"].get("lr").is_none(),
        "{}",
        r["scores"]
    );
    assert!(
        r["warnings"].to_string().contains("no risk scores"),
        "{}",
        r["warnings"]
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn check_with_oracle(published: &Path, pet: &Path) {
    common::run_oracle(
        "result_oracle.py",
        &[
            published,
            &common::repo_root().join("schemas/result.schema.json"),
            pet,
        ],
    );
}

#[test]
fn publishes_a_valid_result_and_a_mask_on_the_pet_grid_and_reruns_replace() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("study-100001");
    synth_nifti(&input, 100001);
    let before = common::files_below(&input)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect::<Vec<_>>();
    let outbox = dir.path().join("outbox");
    for run in 0..2 {
        let o = process(None, &input, &outbox);
        assert!(o.status.success(), "run {run}: {}", stderr(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.starts_with("published "), "{stdout}");
        // One folder per study, never a duplicate or temporary debris.
        assert_eq!(entries(&outbox), ["study-100001"]);
    }
    let published = outbox.join("study-100001");
    assert_eq!(
        entries(&published),
        ["lesions.nii.gz", "overview.png", "result.json"]
    );
    check_with_oracle(&published, &input.join("SUV.nii.gz"));
    let r = common::read_json(&published.join("result.json"));
    assert_eq!(r["schema"], "tracerd.result/1");
    assert_eq!(r["key"], "study-100001");
    assert_eq!(r["inputs"]["pet"], "SUV.nii.gz");
    assert_eq!(r["backend"]["engine"], "ort-cpu");
    assert!(r["lesions"]["count"].as_u64().unwrap() > 0);
    // The half-scale phantom's body is shorter than the whole-body scans 2Be3-Net [WS] learned
    // from (the card's [slices] ws_min_body_length_mm): no scores, and why.
    assert_not_scored(&r);
    // The input was only read.
    for (path, bytes) in before {
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{}", path.display());
    }
}

#[test]
fn a_bogus_ort_library_falls_back_to_tract_and_result_json_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pet-only");
    synth_nifti(&input, 100002);
    // PET only: the mask is absent with its reason (and the half-scale body's scores too).
    std::fs::remove_file(input.join("CT.nii.gz")).unwrap();
    let config = dir.path().join("tracerd.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\nmodels = \"{}\"\n[inference]\nort_library = \"/nonexistent/libonnxruntime.so\"\n",
            common::repo_root().join("models").display()
        ),
    )
    .unwrap();
    let outbox = dir.path().join("outbox");
    let o = process(Some(&config), &input, &outbox);
    assert!(o.status.success(), "{}", stderr(&o));
    let published = outbox.join("pet-only");
    assert_eq!(entries(&published), ["overview.png", "result.json"]);
    check_with_oracle(&published, &input.join("SUV.nii.gz"));
    let r = common::read_json(&published.join("result.json"));
    assert_eq!(r["backend"]["engine"], "tract");
    assert_eq!(r["backend"]["device"], "tract-cpu");
    for m in r["models"].as_array().unwrap() {
        assert_eq!(m["engine"], "tract", "{m}");
    }
    assert!(
        r["lesions"]["reason"].as_str().unwrap().contains("no CT"),
        "{}",
        r["lesions"]
    );
    assert_not_scored(&r);
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("no CT")),
        "{}",
        r["warnings"]
    );
}

#[test]
fn dicom_input_is_keyed_by_uids_and_gets_a_seg_an_sr_and_a_secondary_capture() {
    let dir = tempfile::tempdir().unwrap();
    let study = synth::generate(&SynthOptions {
        seed: 100001,
        size: Size::Small,
    });
    let input = dir.path().join("Doe^Jane-export");
    synth_dicom::write_dicom(&study, &input).unwrap();
    let outbox = dir.path().join("outbox");
    let o = process(None, &input, &outbox);
    assert!(o.status.success(), "{}", stderr(&o));
    let keys = entries(&outbox);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert!(
        !key.contains("Doe"),
        "the folder name must not become the key"
    );
    let published = outbox.join(key);
    assert_eq!(
        entries(&published),
        [
            "lesions.nii.gz",
            "lesions.seg.dcm",
            "lesions.sr.dcm",
            "overview.png",
            "overview.sc.dcm",
            "result.json"
        ]
    );
    // The PET the mask must sit on: tracerd convert's SUV volume of the same drop.
    let converted = dir.path().join("converted");
    tracerd::io::dicom::convert(&input, &converted, &Default::default()).unwrap();
    check_with_oracle(&published, &converted.join("pet_suv.nii.gz"));
    let r = common::read_json(&published.join("result.json"));
    assert_eq!(r["inputs"]["format"], "dicom");
    assert_eq!(r["key"], key.as_str());
    let text = std::fs::read_to_string(published.join("result.json")).unwrap();
    assert!(
        !text.contains("Doe"),
        "no patient identifier in result.json"
    );
}

/// A whole-body FDG PET series as a GE scanner wrote it (public soft-tissue-sarcoma collection,
/// `tests/data/real/NOTICE.md`; no CT in it): published with risk scores, the reason there is no
/// lesion mask, the warnings about the missing CT and the rounded slice positions, and no
/// patient identifier (the collection's de-identified ID, "STS_001") in the result.
#[test]
fn a_real_ge_whole_body_series_is_published_with_risk_scores_and_its_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let archive = common::repo_root().join("tests/data/real/sts_ge_pet_whole_body.tar.xz");
    let status = Command::new("tar")
        .arg("-xJf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar");
    assert!(status.success());
    let input = dir.path().join("STS_001_whole_body");
    let outbox = dir.path().join("outbox");
    let o = process(None, &input, &outbox);
    assert!(o.status.success(), "{}", stderr(&o));
    let keys = entries(&outbox);
    let published = outbox.join(&keys[0]);
    assert_eq!(
        entries(&published),
        ["overview.png", "overview.sc.dcm", "result.json"]
    );
    let converted = dir.path().join("converted");
    tracerd::io::dicom::convert(&input, &converted, &Default::default()).unwrap();
    check_with_oracle(&published, &converted.join("pet_suv.nii.gz"));
    let r = common::read_json(&published.join("result.json"));
    for s in ["lr", "dm", "os"] {
        let v = r["scores"][s].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{s} {v}");
    }
    assert!(r["lesions"]["reason"].as_str().unwrap().contains("no CT"));
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("jitter"), "{warnings}");
    let text = std::fs::read_to_string(published.join("result.json")).unwrap();
    assert!(
        !text.contains("STS_001") && !keys[0].contains("STS"),
        "{text}"
    );
}

/// Writes a NIfTI study folder whose PET is `pet`.
fn study_with_pet(dir: &Path, pet: &Volume<f32>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    tracerd::io::nifti::write_f32(&dir.join("SUV.nii.gz"), pet).unwrap();
    dir.to_path_buf()
}

#[test]
fn bad_inputs_fail_with_one_line_and_publish_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    synth_nifti(&good, 3);
    let g = Geometry::axial([16, 16, 16], [4.0; 3], [0.0; 3]);
    let mut nan = Volume::filled(g.clone(), 1.0f32).unwrap();
    nan.data_mut()[7] = f32::NAN;
    let tiny = Volume::filled(Geometry::axial([4, 16, 16], [4.0; 3], [0.0; 3]), 1.0f32).unwrap();

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let zero = dir.path().join("zero-byte");
    std::fs::create_dir(&zero).unwrap();
    std::fs::write(zero.join("SUV.nii.gz"), b"").unwrap();
    let truncated = dir.path().join("truncated");
    std::fs::create_dir(&truncated).unwrap();
    let bytes = std::fs::read(good.join("SUV.nii.gz")).unwrap();
    std::fs::write(truncated.join("SUV.nii.gz"), &bytes[..bytes.len() / 2]).unwrap();
    let bad_ct = dir.path().join("bad-ct");
    std::fs::create_dir(&bad_ct).unwrap();
    std::fs::copy(good.join("SUV.nii.gz"), bad_ct.join("SUV.nii.gz")).unwrap();
    std::fs::write(bad_ct.join("CT.nii.gz"), b"not a nifti file at all").unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (empty, "no PET"),
        (zero, "empty"),
        (truncated, "SUV.nii.gz"),
        (
            study_with_pet(&dir.path().join("nan"), &nan),
            "1 NaN or infinite voxel",
        ),
        (
            study_with_pet(&dir.path().join("tiny"), &tiny),
            "4×16×16 voxels",
        ),
        (bad_ct, "CT.nii.gz"),
        (dir.path().join("missing"), "is not a folder"),
    ];
    let outbox = dir.path().join("outbox");
    for (input, needle) in cases {
        let o = process(None, &input, &outbox);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", input.display());
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: one line expected:\n{err}",
            input.display()
        );
        assert!(
            lines[0].starts_with("tracerd: error: ingest: ") && lines[0].contains(needle),
            "{}: {err}",
            input.display()
        );
        assert!(
            entries(&outbox).is_empty(),
            "{}: published",
            input.display()
        );
    }
}
