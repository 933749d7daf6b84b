//! Real PET DICOM that nobody here wrote (tests/data/real, NOTICE.md there). The IBSI digital
//! reference objects for SUV computation. Every object converts, or is refused naming the tag,
//! as pydicom's QIBA implementation (tests/oracle/qiba_suv_oracle.py) says; the SUV volume
//! matches that oracle to 1e-4 relative and the objects' published SUV levels (0.2, 1, 4;
//! `ibsi_suv_dro_list.csv`) to within the quantisation of their stored values. The Ga-68 object
//! converts (SUV is defined for it) but is out of scope for the models. Four GE PET series of a
//! public collection (three cropped and re-exported by MIRP, one whole-body series as the scanner
//! wrote it, with rounded slice positions) convert with dcm2niix's geometry and voxels and
//! pydicom's SUV; two CTI/Siemens slices give pydicom's SUV factor, and their series are refused
//! as incomplete.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{read_f32_file, read_json, run_oracle};
use tracerd::io::dicom;

/// Relative tolerance against the pydicom oracle.
const TOL: f64 = 1e-4;

/// Relative tolerance on the published levels: the objects store SUV-like values as integers
/// times a RescaleSlope, so a level is only as exact as half a step of the stored value. Most
/// objects store activity (steps far below 1e-3 of a level); two store a normalised SUV with
/// coarse steps: LBM James (slope 0.001 on 0.161: 0.3 %) and BSA (slope 0.01 on 0.05: 10 %).
fn level_tolerance(case: &str) -> f64 {
    match case {
        "DRO_2_1" => 4e-3,
        "DRO_2_3" => 0.1,
        _ => 2e-3,
    }
}

/// Unpacks `tests/data/real/<name>` into `dir`; the folders it made, sorted.
fn unpack(name: &str, dir: &Path) -> Vec<String> {
    let archive = common::repo_root().join("tests/data/real").join(name);
    let status = Command::new("tar")
        .arg("-xJf")
        .arg(&archive)
        .arg("-C")
        .arg(dir)
        .status()
        .expect("tar");
    assert!(status.success(), "tar -xJf {}", archive.display());
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cases.sort();
    cases
}

#[test]
fn ibsi_suv_reference_objects_match_pydicom_qiba_and_their_published_levels() {
    let dir = tempfile::tempdir().unwrap();
    let drops = dir.path().join("drops");
    let expected = dir.path().join("expected");
    std::fs::create_dir_all(&drops).unwrap();
    std::fs::create_dir_all(&expected).unwrap();
    let cases = unpack("ibsi_suv_dro.tar.xz", &drops);
    assert_eq!(cases.len(), 17, "{cases:?}");
    let folders: Vec<_> = cases.iter().map(|c| drops.join(c)).collect();
    let mut args: Vec<&Path> = vec![Path::new("expect"), &expected];
    args.extend(folders.iter().map(|p| p.as_path()));
    run_oracle("qiba_suv_oracle.py", &args);
    let mut refused = Vec::new();
    for case in &cases {
        let oracle = read_json(&expected.join(format!("{case}.json")));
        let out = dir.path().join("out").join(case);
        let converted = dicom::convert(&drops.join(case), &out, &Default::default()).unwrap();
        assert_eq!(converted.len(), 1, "{case}");
        if let Some(tag) = oracle["refused"].as_str() {
            let e = converted[0].result.as_ref().unwrap_err().to_string();
            assert!(e.contains(tag) && !e.contains('\n'), "{case}: {e}");
            refused.push(case.clone());
            continue;
        }
        if let Err(e) = &converted[0].result {
            panic!("{case}: {e}");
        }
        let suv = tracerd::io::nifti::read_f32(&out.join("pet_suv.nii.gz")).unwrap();
        let want = read_f32_file(&expected.join(format!("{case}.f32")));
        compare_with_oracle(case, suv.data(), &want);
        check_levels(case, suv.data(), published_levels(case));
    }
    // IBW has no standard formula.
    assert_eq!(refused, ["DRO_2_2"]);
}

fn compare_with_oracle(case: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{case}");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let rel = (*a as f64 - *b as f64).abs() / scale;
        assert!(rel <= TOL, "{case}: voxel {i}: tracerd {a}, oracle {b}");
    }
}

/// SUVmin, SUVmed and SUVmax expected for `case` by `ibsi_suv_dro_list.csv`.
fn published_levels(case: &str) -> [f64; 3] {
    let path = common::repo_root().join("tests/data/real/ibsi_suv_dro_list.csv");
    let text = std::fs::read_to_string(path).unwrap();
    let row: Vec<String> = text
        .lines()
        .map(|l| {
            l.split(',')
                .map(|f| f.trim_matches('"').to_string())
                .collect()
        })
        .find(|r: &Vec<String>| r.get(1).is_some_and(|id| id == case))
        .unwrap_or_else(|| panic!("{case} not in the list"));
    // Counted from the end: a description may hold a comma inside its quotes.
    let n = row.len();
    [n - 6, n - 5, n - 4].map(|i| row[i].parse().unwrap())
}

/// Every object holds background (0) and its three published levels (SUVbw).
fn check_levels(case: &str, suv: &[f32], levels: [f64; 3]) {
    let tol = level_tolerance(case);
    for level in levels {
        let near = suv
            .iter()
            .any(|v| ((*v as f64) - level).abs() <= tol * level);
        assert!(near, "{case}: no voxel within {tol} of SUV {level}");
    }
    let stray = suv.iter().find(|v| {
        let v = **v as f64;
        v != 0.0 && levels.iter().all(|l| (v - l).abs() > tol * l)
    });
    assert!(stray.is_none(), "{case}: voxel {stray:?} is no level");
}

/// The Ga-68 object: SUV is defined (convert gives it), but the models are for 18F-FDG.
#[test]
fn the_ga68_reference_object_is_out_of_scope_for_the_models() {
    let dir = tempfile::tempdir().unwrap();
    unpack("ibsi_suv_dro.tar.xz", dir.path());
    let e = tracerd::study::load(
        &dir.path().join("DRO_5_0"),
        "k",
        &Default::default(),
        &Default::default(),
    )
    .unwrap_err();
    assert_eq!(e.stage, tracerd::study::Stage::Scope, "{e}");
    assert!(e.error.contains("68Ga"), "{e}");
}

/// Three PET series of a GE scanner from the public soft-tissue-sarcoma collection (as
/// re-exported in SUV by the MIRP project; every slice says ImageIndex 1): geometry and voxels
/// as dcm2niix reads them, SUV as pydicom's QIBA implementation computes it.
#[test]
fn ge_series_match_dcm2niix_and_pydicom() {
    let dir = tempfile::tempdir().unwrap();
    let drops = dir.path().join("drops");
    std::fs::create_dir_all(&drops).unwrap();
    let cases = unpack("sts_ge_pet.tar.xz", &drops);
    assert_eq!(cases, ["STS_001", "STS_002", "STS_003"]);
    for case in &cases {
        let report = matches_dcm2niix_and_pydicom(dir.path(), &drops.join(case));
        assert!(
            report.warnings.iter().all(|w| !w.contains("jitter")),
            "{case}"
        );
    }
}

/// The whole-body PET series of the same collection's first patient as the GE scanner wrote it
/// (267 slices, BQML, decay-corrected to START): its slice positions step 3.27 mm, but 3.19 or
/// 3.29 mm where two bed positions meet (every slice within 0.04 mm of a uniform grid). It
/// converts with a warning naming the largest deviation, on dcm2niix's grid and with its voxels,
/// and with pydicom's SUV.
#[test]
fn a_ge_whole_body_series_with_rounded_positions_matches_dcm2niix_and_pydicom() {
    let dir = tempfile::tempdir().unwrap();
    let drops = dir.path().join("drops");
    std::fs::create_dir_all(&drops).unwrap();
    let cases = unpack("sts_ge_pet_whole_body.tar.xz", &drops);
    assert_eq!(cases, ["STS_001_whole_body"]);
    let report = matches_dcm2niix_and_pydicom(dir.path(), &drops.join(&cases[0]));
    let jitter: Vec<_> = report
        .warnings
        .iter()
        .filter(|w| w.contains("jitter"))
        .collect();
    assert_eq!(jitter.len(), 1, "{:?}", report.warnings);
    assert!(
        jitter[0].contains("largest deviation 0.040 mm"),
        "{}",
        jitter[0]
    );
}

/// Converts the PET series in `input` and checks it against dcm2niix (affine to 1e-3 mm, voxels
/// as activity to 1e-5 of each slice's maximum) and pydicom's QIBA SUV (1e-4 relative); every
/// slice's pixels must have been located by the fast path. Scratch files go under `dir`.
fn matches_dcm2niix_and_pydicom(dir: &Path, input: &Path) -> dicom::ConversionReport {
    let case = input.file_name().unwrap().to_str().unwrap();
    let out = dir.join("out").join(case);
    let r = dicom::convert(input, &out, &Default::default()).unwrap();
    let report = r[0]
        .result
        .as_ref()
        .unwrap_or_else(|e| panic!("{case}: {e}"))
        .clone();
    let d2n = dir.join("d2n").join(case);
    std::fs::create_dir_all(&d2n).unwrap();
    let o = Command::new("dcm2niix")
        .args(["-b", "n", "-z", "n", "-f", "%s", "-o"])
        .arg(&d2n)
        .arg(input)
        .output()
        .expect("dcm2niix (Debian package; `bash .ci/run` installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let factor = format!("{:.17e}", report.suv.suv_factor);
    let pet = out.join("pet_suv.nii.gz");
    let args: [&Path; 4] = [&d2n, &pet, Path::new("-"), Path::new(&factor)];
    run_oracle("dicom_dcm2niix_oracle.py", &args);
    let expected = dir.join("expected");
    std::fs::create_dir_all(&expected).unwrap();
    run_oracle(
        "qiba_suv_oracle.py",
        &[Path::new("expect"), &expected, input],
    );
    let suv = tracerd::io::nifti::read_f32(&pet).unwrap();
    let want = read_f32_file(&expected.join(format!("{case}.f32")));
    compare_with_oracle(case, suv.data(), &want);
    let scan = dicom::scan_folder(input).unwrap();
    let native = scan.instances.iter().filter(|i| i.native.is_some()).count();
    assert_eq!(native, scan.instances.len(), "{case}");
    report
}

/// Two slices of a CTI/Siemens scanner (model "1094") from the public ACRIN-FLT-Breast
/// collection, each the only file of its series: slice 60 of a 324-slice whole-body series and
/// one frame of a 45-frame dynamic series (SeriesTime before its AcquisitionTime). Each series
/// is refused whole as incomplete, naming NumberOfSlices; each slice's SUVbw factor matches
/// pydicom's QIBA implementation; the scope rule finds 18F and, as the files name no
/// radiopharmaceutical (the collection's tracer, FLT, is not in them), warns instead of refusing.
#[test]
fn siemens_slices_give_pydicoms_suv_factor_and_incomplete_series_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let drops = dir.path().join("drops");
    let expected = dir.path().join("expected");
    std::fs::create_dir_all(&drops).unwrap();
    std::fs::create_dir_all(&expected).unwrap();
    let cases = unpack("acrin_flt_pet.tar.xz", &drops);
    assert_eq!(cases, ["FLT_1", "FLT_2"]);
    for case in &cases {
        let input = drops.join(case);
        let r = dicom::convert(
            &input,
            &dir.path().join("out").join(case),
            &Default::default(),
        );
        let e = r.unwrap()[0].result.as_ref().unwrap_err().to_string();
        assert!(
            e.contains("incomplete") && e.contains("NumberOfSlices (0054,0081)"),
            "{case}: {e}"
        );

        let file = std::fs::read_dir(&input)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let obj = dicom_object::open_file(&file).unwrap();
        let mut bad = Vec::new();
        let tags = dicom::suv::SuvTags::read(&obj, &mut bad);
        assert!(bad.is_empty(), "{case}: {bad:?}");
        let got = dicom::suv::compute(&[&tags], case).unwrap().factors[0];
        run_oracle(
            "qiba_suv_oracle.py",
            &[Path::new("expect"), &expected, &input],
        );
        let want = read_json(&expected.join(format!("{case}.json")))["factors"][0]
            .as_f64()
            .unwrap();
        assert!(
            (got - want).abs() <= TOL * want,
            "{case}: factor {got} vs pydicom {want}"
        );

        let tracer = dicom::tracer::TracerTags::read(&obj);
        let verdict = tracerd::study::scope::check(&tracer, &Default::default());
        assert!(
            verdict.refusals.is_empty(),
            "{case}: {:?}",
            verdict.refusals
        );
        assert!(
            !verdict.warnings.is_empty(),
            "{case}: no warning for the unnamed tracer"
        );
    }
}
