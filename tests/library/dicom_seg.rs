//! DICOM SEG (`lesions.seg.dcm`): written for the synthetic ground-truth mask on a DICOM PET,
//! validated by `dciodvfy` (Debian dicom3tools: no error and no warning), and read back by pydicom
//! (tests/oracle/dicom_seg_oracle.py) into a mask identical to the one written, with each frame
//! on the slice it references. An empty mask writes no file.

use crate::common;

use std::process::Command;

use common::run_oracle;
use tracerd::Volume;
use tracerd::io::dicom::{self, assemble::assemble, scan::scan_folder, seg::write_seg};
use tracerd::synth::{self, Size, SynthOptions};

#[test]
fn seg_is_valid_and_reads_back_as_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    // Seed 7 has lesions (checked below).
    let study = synth::generate(&SynthOptions {
        seed: 7,
        size: Size::Small,
    });
    assert!(study.seg.data().contains(&1));
    dicom::synth_export::write_dicom(&study, &drop).unwrap();
    let assembled = assemble(scan_folder(&drop).unwrap())
        .remove(0)
        .result
        .unwrap();
    let path = dir.path().join("lesions.seg.dcm");
    assert!(write_seg(&assembled.pet, &study.seg, &path).unwrap());

    let o = Command::new("dciodvfy")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run dciodvfy ({e}); install dicom3tools or run `bash .ci/run`")
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    println!("dciodvfy:\n{report}");
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("Error") || l.starts_with("Warning"))
        .collect();
    assert!(
        problems.is_empty(),
        "dciodvfy errors or warnings:\n{report}"
    );
    assert!(
        report.contains("Segmentation"),
        "dciodvfy did not recognise a SEG:\n{report}"
    );

    let out = dir.path().join("mask.u8");
    run_oracle("dicom_seg_oracle.py", &[&path, &drop, &out]);
    let back = std::fs::read(&out).unwrap();
    assert_eq!(back.len(), study.seg.data().len());
    assert!(
        back == study.seg.data(),
        "pydicom's mask differs from the one written"
    );
    // Frames only for slices with lesions.
    let obj = dicom_object::open_file(&path).unwrap();
    let frames: usize = obj
        .element(dicom_dictionary_std::tags::NUMBER_OF_FRAMES)
        .unwrap()
        .to_int()
        .unwrap();
    let [nx, ny, nz] = study.seg.shape();
    let with_lesions = (0..nz)
        .filter(|k| study.seg.data()[k * nx * ny..(k + 1) * nx * ny].contains(&1))
        .count();
    assert_eq!(frames, with_lesions);
    assert!(frames < nz);
}

#[test]
fn empty_mask_writes_no_seg() {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    let study = synth::generate(&SynthOptions {
        seed: 7,
        size: Size::Small,
    });
    dicom::synth_export::write_dicom(&study, &drop).unwrap();
    let assembled = assemble(scan_folder(&drop).unwrap())
        .remove(0)
        .result
        .unwrap();
    let empty = Volume::filled(study.seg.geometry().clone(), 0u8).unwrap();
    let path = dir.path().join("lesions.seg.dcm");
    assert!(!write_seg(&assembled.pet, &empty, &path).unwrap());
    assert!(!path.exists());
}
