//! The DICOM results beside the SEG, for a DICOM study with lesions (synthetic seed 4, its
//! ground-truth lesions):
//!
//! * `overview.sc.dcm`: `dciodvfy` reports no error and no warning; pydicom reads the pixels back equal to the
//!   picture, in the source study, its own series, referencing the source PET series.
//! * `lesions.sr.dcm`: `dciodvfy` reports no error and no warning; highdicom (tests/oracle/dicom_sr_highdicom.py)
//!   parses it as a TID 1500 Measurement Report and finds one TID 1411 group per lesion, in
//!   lesion order, each with the lesion's tracking identifier and UID (the SEG segment's), the
//!   SEG instance and segment number it references, the PET as source series, and the volume,
//!   SUVmax, SUVmean and TLG of the lesion summary (the values `result.json` carries) in the
//!   template's UCUM units; the SEG is listed as evidence.

use crate::common;

use std::path::{Path, PathBuf};

use common::run_oracle;
use serde_json::Value;
use tracerd::io::dicom::{self, SeriesStack, assemble::assemble, scan::scan_folder};
use tracerd::models::l2snet::{LesionSummary, lesion_ids, lesion_summary};
use tracerd::report::{self, Overview};
use tracerd::synth::{self, Size, SynthOptions};

struct Written {
    dir: tempfile::TempDir,
    drop: PathBuf,
    pet: SeriesStack,
    summary: LesionSummary,
}

/// A synthetic DICOM study with its ground-truth lesions, and the SEG, SC and SR for them.
fn written() -> Written {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    let study = synth::generate(&SynthOptions {
        seed: 4,
        size: Size::Small,
    });
    tracerd::synth::dicom::write_dicom(&study, &drop).unwrap();
    let pet = assemble(scan_folder(&drop).unwrap())
        .remove(0)
        .result
        .unwrap()
        .pet;
    let ids = lesion_ids(&study.seg);
    let summary = lesion_summary(&ids, &study.pet);
    assert!(summary.count >= 2, "seed 4 has {} lesions", summary.count);
    let out = |name: &str| dir.path().join(name);
    assert!(dicom::seg::write_seg(&pet, &ids, &out("lesions.seg.dcm")).unwrap());
    dicom::sr::write_sr(&pet, &summary, &out("lesions.sr.dcm")).unwrap();
    let picture = report::render(&Overview {
        key: "s4",
        pet: &study.pet,
        lesions: Some((&ids, &summary)),
        scores: None,
        models: &[],
        statuses: &[],
    });
    dicom::sc::write_sc(&pet, &picture.image, &out("overview.sc.dcm")).unwrap();
    picture
        .image
        .save(out("overview.png"))
        .expect("the picture saves");
    Written {
        dir,
        drop,
        pet,
        summary,
    }
}

fn dciodvfy_is_clean(path: &Path) {
    let (report, problems) = common::dciodvfy_problems(path);
    assert!(
        problems.is_empty(),
        "dciodvfy errors or warnings:\n{report}"
    );
}

#[test]
fn the_secondary_capture_is_valid_and_holds_the_picture() {
    let w = written();
    let sc = w.dir.path().join("overview.sc.dcm");
    dciodvfy_is_clean(&sc);
    let out = w.dir.path().join("sc.json");
    let args = [&sc, &w.drop, &w.dir.path().join("overview.png"), &out];
    run_oracle("dicom_sc_oracle.py", &args.map(PathBuf::as_path));
    let back: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(back["pixels_equal"], true, "{back}");
    assert_eq!(back["same_study"], true, "{back}");
    assert_eq!(back["same_patient"], true, "{back}");
    assert_eq!(back["own_series"], true, "{back}");
    assert_eq!(back["references_pet_series"], true, "{back}");
    assert_eq!(back["sop_class"], dicom::sc::SECONDARY_CAPTURE_STORAGE);
}

#[test]
fn the_measurement_report_is_valid_and_reads_back_as_the_lesions() {
    let w = written();
    let sr = w.dir.path().join("lesions.sr.dcm");
    dciodvfy_is_clean(&sr);
    let out = w.dir.path().join("sr.json");
    run_oracle("dicom_sr_highdicom.py", &[&sr, &out]);
    let back: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let groups = back["groups"].as_array().unwrap();
    assert_eq!(groups.len(), w.summary.count);
    let (seg_uid, _) = dicom::seg::seg_uids(&w.pet.series_uid);
    for (g, l) in groups.iter().zip(&w.summary.items) {
        let tracking = dicom::seg::tracking_uid(&w.pet.series_uid, l.id);
        assert_eq!(g["tracking_id"], format!("Lesion {}", l.id));
        assert_eq!(g["tracking_uid"], tracking);
        assert_eq!(g["finding"], "108369006 SCT");
        assert_eq!(g["seg_instance"], seg_uid.as_str());
        assert_eq!(g["segment"], serde_json::json!([l.id]));
        assert_eq!(g["source_series"], w.pet.series_uid.as_str());
        let m = &g["measurements"];
        for (key, unit, value) in [
            ("118565006 SCT/", "ml UCUM", l.volume_ml),
            ("126401 DCM/56851009 SCT", "g/ml{SUVbw} UCUM", l.suv_max),
            ("126401 DCM/373098007 SCT", "g/ml{SUVbw} UCUM", l.suv_mean),
            ("126033 DCM/", "g{SUVbw} UCUM", l.tlg),
        ] {
            assert_eq!(m[key]["unit"], unit, "lesion {} {key}: {m}", l.id);
            let got = m[key]["value"].as_f64().unwrap();
            assert_eq!(got, value, "lesion {} {key}", l.id);
        }
    }
    let evidence = back["evidence"].as_array().unwrap();
    assert!(
        evidence
            .iter()
            .any(|e| e[2] == seg_uid.as_str() && e[3] == dicom::seg::SEGMENTATION_STORAGE),
        "the SEG is not in the evidence: {evidence:?}"
    );
}
