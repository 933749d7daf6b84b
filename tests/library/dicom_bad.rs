//! Bad DICOM gives a specific, typed reason naming the file or the series, and a bad study does
//! not affect a good one in the same drop: a truncated file, a file without PixelData, an
//! unsupported transfer syntax, a PET without PatientWeight, Units CPS; and geometry rejections
//! (a missing slice, an incomplete series by ImageIndex, a duplicate slice kept by
//! AcquisitionNumber).

use crate::common;

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::open_file;
use tracerd::io::dicom::write::write_part10;
use tracerd::io::dicom::{self, Stage};
use tracerd::synth::dicom as synth_dicom;
use tracerd::synth::{self, Size, SynthOptions};

/// A drop with two synthetic studies; returns (drop, PET files of the first study, sorted).
fn make_drop(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let drop = dir.join("drop");
    for seed in [21u64, 22] {
        let study = synth::generate(&SynthOptions {
            seed,
            size: Size::Small,
        });
        synth_dicom::write_dicom(&study, &drop.join(format!("s{seed}"))).unwrap();
    }
    let pet = common::pet_files(&drop.join("s21"));
    (drop, pet)
}

use common::rewrite_dicom as rewrite;

/// Converts the drop; asserts exactly one study failed with `reason` at `stage` (message
/// containing `needle`) and the other converted.
fn expect_failure(drop: &Path, out: &Path, stage: Stage, reason: &str, needle: &str) -> String {
    let results = dicom::convert(drop, out, &Default::default()).unwrap();
    assert_eq!(results.len(), 2, "two studies expected");
    let (bad, good): (Vec<_>, Vec<_>) = results.iter().partition(|r| r.result.is_err());
    assert_eq!(bad.len(), 1, "exactly one failure expected");
    assert_eq!(good.len(), 1);
    assert!(
        good[0].dir.join("pet_suv.nii.gz").exists(),
        "the good study must convert"
    );
    let e = bad[0].result.as_ref().unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.reason(), reason, "{msg}");
    assert_eq!(e.stage, stage, "{msg}");
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    assert!(!msg.contains("SYNTHETIC"), "{msg}");
    msg
}

#[test]
fn truncated_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, pet) = make_drop(dir.path());
    let victim = &pet[5];
    let len = std::fs::metadata(victim).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap();
    f.set_len(len - 3000).unwrap();
    let rel = victim.strip_prefix(&drop).unwrap().display().to_string();
    expect_failure(
        &drop,
        &dir.path().join("out"),
        Stage::Pixels,
        "unreadable",
        &rel,
    );
}

#[test]
fn missing_pixel_data() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, pet) = make_drop(dir.path());
    rewrite(&pet[3], |o| {
        o.remove_element(tags::PIXEL_DATA);
    });
    expect_failure(
        &drop,
        &dir.path().join("out"),
        Stage::Pixels,
        "missing_pixel_data",
        "PixelData (7FE0,0010) missing",
    );
}

#[test]
fn unsupported_transfer_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, pet) = make_drop(dir.path());
    // JPEG-LS lossless: the data set is readable (explicit VR little endian) but tracerd
    // carries no JPEG-LS decoder (the one dicom-pixeldata offers needs the CharLS C++ library).
    let file = open_file(&pet[2]).unwrap();
    let mut meta = file.meta().clone();
    meta.transfer_syntax = "1.2.840.10008.1.2.4.80\0".into();
    let obj = file.into_inner();
    let file = obj.with_exact_meta(meta);
    file.write_to_file(&pet[2]).unwrap();
    expect_failure(
        &drop,
        &dir.path().join("out"),
        Stage::Pixels,
        "unsupported_transfer_syntax",
        "1.2.840.10008.1.2.4.80",
    );
}

#[test]
fn missing_patient_weight() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, pet) = make_drop(dir.path());
    for p in &pet {
        rewrite(p, |o| {
            o.remove_element(tags::PATIENT_WEIGHT);
        });
    }
    let msg = expect_failure(
        &drop,
        &dir.path().join("out"),
        Stage::Suv,
        "missing_tag",
        "PatientWeight (0010,1030) missing: cannot compute SUVbw",
    );
    assert!(msg.starts_with("PT series "), "{msg}");
}

#[test]
fn units_cps_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, pet) = make_drop(dir.path());
    for p in &pet {
        rewrite(p, |o| {
            o.put(DataElement::new(
                tags::UNITS,
                VR::CS,
                PrimitiveValue::from("CPS"),
            ));
        });
    }
    expect_failure(
        &drop,
        &dir.path().join("out"),
        Stage::Suv,
        "unsupported_units",
        "Units (0054,1001) is \"CPS\"",
    );
}

#[test]
fn missing_slice_is_a_geometry_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, pet) = make_drop(dir.path());
    // Remove a slice from the middle of the stack (by position, not by file name order).
    let z = |p: &PathBuf| {
        open_file(p)
            .unwrap()
            .element(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .to_multi_float64()
            .unwrap()[2]
    };
    let mut by_z: Vec<_> = pet.iter().map(|p| (z(p), p.clone())).collect();
    by_z.sort_by(|a, b| a.0.total_cmp(&b.0));
    std::fs::remove_file(&by_z[40].1).unwrap();
    // Without NumberOfSlices the completeness rule cannot speak; the spacing check must.
    for (_, p) in by_z.iter().filter(|(_, p)| p.exists()) {
        rewrite(p, |o| {
            o.remove_element(tags::NUMBER_OF_SLICES);
        });
    }
    expect_failure(
        &drop,
        &dir.path().join("out"),
        Stage::Geometry,
        "geometry",
        "missing slice(s)",
    );
}

#[test]
fn duplicate_slice_keeps_the_higher_acquisition_number() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, pet) = make_drop(dir.path());
    // A copy of one slice, re-acquired (AcquisitionNumber 2) with its values doubled.
    let file = open_file(&pet[7]).unwrap();
    let meta = file.meta().clone();
    let mut obj = file.into_inner();
    let uid = format!("{}.9", meta.media_storage_sop_instance_uid());
    obj.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(uid.as_str()),
    ));
    obj.put(DataElement::new(
        tags::ACQUISITION_NUMBER,
        VR::IS,
        PrimitiveValue::from("2"),
    ));
    let slope: f64 = obj
        .element(tags::RESCALE_SLOPE)
        .unwrap()
        .to_float64()
        .unwrap();
    obj.put(DataElement::new(
        tags::RESCALE_SLOPE,
        VR::DS,
        PrimitiveValue::from(dicom::write::ds(slope * 2.0)),
    ));
    write_part10(
        &drop.join("s21/dup.dcm"),
        obj,
        meta.media_storage_sop_class_uid(),
        &uid,
    )
    .unwrap();
    let out = dir.path().join("out");
    let results = dicom::convert(&drop, &out, &Default::default()).unwrap();
    assert!(results.iter().all(|r| r.result.is_ok()));
    let r = results
        .iter()
        .find(|r| {
            r.result
                .as_ref()
                .unwrap()
                .warnings
                .iter()
                .any(|w| w.contains("dup.dcm"))
        })
        .expect("a warning naming the kept duplicate");
    let report = r.result.as_ref().unwrap();
    assert_eq!(report.pet.slices, 96);
    let w = report
        .warnings
        .iter()
        .find(|w| w.contains("two images"))
        .unwrap();
    assert!(w.contains("kept s21/dup.dcm"), "{w}");
}

#[test]
fn incomplete_pet_series_by_image_index() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, pet) = make_drop(dir.path());
    // The top slice (ImageIndex 96) never arrived: the spacing of the rest is fine.
    let top = pet
        .iter()
        .find(|p| {
            open_file(p)
                .unwrap()
                .element(tags::IMAGE_INDEX)
                .unwrap()
                .to_int::<u32>()
                .unwrap()
                == 96
        })
        .unwrap();
    std::fs::remove_file(top).unwrap();
    expect_failure(
        &drop,
        &dir.path().join("out"),
        Stage::Assemble,
        "geometry",
        "incomplete: 95 of NumberOfSlices (0054,0081) = 96 images; ImageIndex (0054,1330) missing: [96]",
    );
}

/// Issue 16 row 2: Rows = Columns = 65535 in a PET series made the reader allocate 1.6 TB and
/// abort the daemon. The headers are checked against `[limits]` before any pixel is decoded.
#[test]
fn a_series_declaring_65535_by_65535_pixels_is_refused_before_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, pet) = make_drop(dir.path());
    for f in &pet {
        rewrite(f, |o| {
            o.put(DataElement::new(
                tags::ROWS,
                VR::US,
                PrimitiveValue::from(65535u16),
            ));
            o.put(DataElement::new(
                tags::COLUMNS,
                VR::US,
                PrimitiveValue::from(65535u16),
            ));
        });
    }
    let limits = tracerd::config::Limits::default();
    let e = tracerd::study::load(&drop.join("s21"), "k", &limits, &Default::default()).unwrap_err();
    assert!(
        e.error.contains("65535×65535") && e.error.contains("limits.max_voxels_per_volume"),
        "{e}"
    );
    assert!(!e.error.contains('\n'));
}

/// `tracerd convert` applies `[limits]` as the daemon does (issue 16): a series over
/// `max_voxels_per_volume` fails before its pixels are decoded and writes nothing.
#[test]
fn convert_refuses_a_series_over_the_limits_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, _) = make_drop(dir.path());
    let out = dir.path().join("out");
    let limits = tracerd::config::Limits {
        max_voxels_per_volume: 1000,
        ..Default::default()
    };
    let results = dicom::convert(&drop, &out, &limits).unwrap();
    assert!(!results.is_empty());
    for r in &results {
        let e = r.result.as_ref().unwrap_err();
        assert_eq!((e.reason(), e.stage), ("too_large", Stage::Assemble), "{e}");
        assert!(
            e.to_string()
                .contains("limits.max_voxels_per_volume = 1000"),
            "{e}"
        );
        assert!(!r.dir.join("pet_suv.nii.gz").exists());
    }
}

/// Issue 15: garbage in a numeric or time tag that feeds geometry, pixels or SUV is a one-line
/// error naming the tag and the file, never a default (an unparseable RescaleSlope used to
/// become 1.0 and publish a wrong SUV). One PET slice of the first study is damaged per case.
#[test]
fn garbage_in_a_tag_that_feeds_suv_or_geometry_names_the_tag_and_the_file() {
    use dicom_core::value::DataSetSequence;
    let rp_tag = tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE;
    let cases: [(&str, dicom_core::Tag, VR, &str, Stage); 10] = [
        (
            "RescaleSlope (0028,1053)",
            tags::RESCALE_SLOPE,
            VR::DS,
            "abc",
            Stage::Pixels,
        ),
        (
            "RescaleSlope (0028,1053)",
            tags::RESCALE_SLOPE,
            VR::DS,
            "NaN",
            Stage::Pixels,
        ),
        (
            "RescaleSlope (0028,1053)",
            tags::RESCALE_SLOPE,
            VR::DS,
            "0",
            Stage::Pixels,
        ),
        (
            "RescaleIntercept (0028,1052)",
            tags::RESCALE_INTERCEPT,
            VR::DS,
            "1e999",
            Stage::Pixels,
        ),
        (
            "ImagePositionPatient (0020,0032)",
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            "1\\x\\3",
            Stage::Geometry,
        ),
        (
            "PixelSpacing (0028,0030)",
            tags::PIXEL_SPACING,
            VR::DS,
            "4.0",
            Stage::Geometry,
        ),
        (
            "PatientWeight (0010,1030)",
            tags::PATIENT_WEIGHT,
            VR::DS,
            "seventy",
            Stage::Suv,
        ),
        (
            "AcquisitionTime (0008,0032)",
            tags::ACQUISITION_TIME,
            VR::TM,
            "noon",
            Stage::Suv,
        ),
        (
            "ActualFrameDuration (0018,1242)",
            tags::ACTUAL_FRAME_DURATION,
            VR::IS,
            "2 min",
            Stage::Suv,
        ),
        (
            "RadionuclideHalfLife (0018,1075)",
            tags::RADIONUCLIDE_HALF_LIFE,
            VR::DS,
            "-inf",
            Stage::Suv,
        ),
    ];
    for (needle, tag, vr, value, stage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (drop, pet) = make_drop(dir.path());
        let victim = &pet[7];
        rewrite(victim, |o| {
            let element = DataElement::new(tag, vr, PrimitiveValue::from(value));
            if tag == tags::RADIONUCLIDE_HALF_LIFE {
                let mut rp = o.element(rp_tag).unwrap().items().unwrap()[0].clone();
                rp.put(element);
                o.put(DataElement::new(
                    rp_tag,
                    VR::SQ,
                    DataSetSequence::from(vec![rp]),
                ));
            } else {
                o.put(element);
            }
        });
        let rel = victim.strip_prefix(&drop).unwrap().display().to_string();
        let msg = expect_failure(&drop, &dir.path().join("out"), stage, "bad_value", needle);
        assert!(
            msg.starts_with(&rel),
            "{value}: the file comes first: {msg}"
        );
        assert!(msg.contains(&format!("{value:?}")), "{value}: {msg}");
    }
}
