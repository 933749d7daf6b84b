//! DICOM SEG (`lesions.seg.dcm`): written for the lesions (one segment each) of the synthetic
//! ground-truth mask on a DICOM PET, validated by `dciodvfy` (Debian dicom3tools: no error and no
//! warning), and read back into a label map identical to the one written by two independent
//! readers: pydicom frame by frame (tests/oracle/dicom_seg_oracle.py, which also checks each
//! frame's slice, position and segment) and highdicom by source instance with its spatial checks
//! on (tests/oracle/dicom_seg_highdicom.py). An empty mask writes no file.

use crate::common;

use common::run_oracle;
use tracerd::Volume;
use tracerd::io::dicom::{assemble::assemble, scan::scan_folder, seg::write_seg};
use tracerd::models::l2snet::lesion_ids;
use tracerd::synth::{self, Size, SynthOptions};

#[test]
fn seg_is_valid_and_reads_back_as_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    // Seed 4 has three lesions (checked below).
    let study = synth::generate(&SynthOptions {
        seed: 4,
        size: Size::Small,
    });
    assert!(study.seg.data().contains(&1));
    tracerd::synth::dicom::write_dicom(&study, &drop).unwrap();
    let assembled = assemble(scan_folder(&drop).unwrap())
        .remove(0)
        .result
        .unwrap();
    let ids = lesion_ids(&study.seg);
    let lesions = *ids.data().iter().max().unwrap();
    assert!(
        lesions >= 2,
        "seed 4 should have several lesions, has {lesions}"
    );
    let path = dir.path().join("lesions.seg.dcm");
    assert!(write_seg(&assembled.pet, &ids, &path).unwrap());

    let (report, problems) = common::dciodvfy_problems(&path);
    assert!(
        problems.is_empty(),
        "dciodvfy errors or warnings:\n{report}"
    );
    assert!(
        report.contains("Segmentation"),
        "dciodvfy did not recognise a SEG:\n{report}"
    );

    for oracle in ["dicom_seg_oracle.py", "dicom_seg_highdicom.py"] {
        let out = dir.path().join("labels.u32");
        run_oracle(oracle, &[&path, &drop, &out]);
        let back: Vec<u32> = std::fs::read(&out)
            .unwrap()
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(back.len(), ids.data().len(), "{oracle}");
        assert!(
            back == ids.data(),
            "{oracle}: the label map differs from the one written"
        );
    }
    // One frame per (segment, slice holding it).
    let obj = dicom_object::open_file(&path).unwrap();
    let frames: usize = obj
        .element(dicom_dictionary_std::tags::NUMBER_OF_FRAMES)
        .unwrap()
        .to_int()
        .unwrap();
    let [nx, ny, nz] = ids.shape();
    let expected: usize = (1..=lesions)
        .map(|n| {
            (0..nz)
                .filter(|k| ids.data()[k * nx * ny..(k + 1) * nx * ny].contains(&n))
                .count()
        })
        .sum();
    assert_eq!(frames, expected);
}

#[test]
fn empty_mask_writes_no_seg() {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    let study = synth::generate(&SynthOptions {
        seed: 7,
        size: Size::Small,
    });
    tracerd::synth::dicom::write_dicom(&study, &drop).unwrap();
    let assembled = assemble(scan_folder(&drop).unwrap())
        .remove(0)
        .result
        .unwrap();
    let empty = Volume::filled(study.seg.geometry().clone(), 0u32).unwrap();
    let path = dir.path().join("lesions.seg.dcm");
    assert!(!write_seg(&assembled.pet, &empty, &path).unwrap());
    assert!(!path.exists());
}
