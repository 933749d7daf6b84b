//! Series selection and geometry checks on a synthetic drop with distractors: a NAC copy of the
//! PET, a CT localizer and a wider CT in another frame of reference must not be chosen; a tilted
//! PET (positions drifting sideways) is rejected; slices written in any order and nesting give the
//! same volume.

use crate::common;

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, open_file};
use tracerd::io::dicom::write::write_part10;
use tracerd::io::dicom::{self, Stage};
use tracerd::synth::dicom as synth_dicom;
use tracerd::synth::{self, Size, SynthOptions};

/// The image files (named IM…) of a synthetic DICOM drop.
fn files(root: &Path) -> Vec<PathBuf> {
    common::files_below(root)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("IM"))
        .collect()
}

fn modality(p: &Path) -> String {
    open_file(p)
        .unwrap()
        .element(tags::MODALITY)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

fn put(o: &mut InMemDicomObject, tag: dicom_core::Tag, vr: VR, v: &str) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

/// Copies every file of `modality` into `dest` as a new series, edited by `edit(k, obj)`.
fn copy_series(
    src: &[PathBuf],
    modality_: &str,
    dest: &Path,
    series_uid: &str,
    edit: impl Fn(usize, &mut InMemDicomObject),
) {
    for (k, p) in src.iter().filter(|p| modality(p) == modality_).enumerate() {
        let file = open_file(p).unwrap();
        let class = file.meta().media_storage_sop_class_uid().to_string();
        let mut obj = file.into_inner();
        let uid = format!("{series_uid}.{k}");
        put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &uid);
        put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, series_uid);
        edit(k, &mut obj);
        write_part10(&dest.join(format!("IM{k}")), obj, &class, &uid).unwrap();
    }
}

fn drop_with_study(dir: &Path) -> (PathBuf, Vec<PathBuf>, synth::SyntheticStudy) {
    let drop = dir.join("drop");
    let study = synth::generate(&SynthOptions {
        seed: 9,
        size: Size::Small,
    });
    synth_dicom::write_dicom(&study, &drop).unwrap();
    let f = files(&drop);
    (drop, f, study)
}

#[test]
fn distractor_series_are_not_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, f, study) = drop_with_study(dir.path());
    let ct_uid = open_file(f.iter().find(|p| modality(p) == "CT").unwrap())
        .unwrap()
        .element(tags::SERIES_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    copy_series(&f, "PT", &drop.join("nac"), "2.25.77", |_, o| {
        put(o, tags::CORRECTED_IMAGE, VR::CS, "NORM\\DECY");
        put(o, tags::SERIES_DESCRIPTION, VR::LO, "PET NAC");
    });
    copy_series(&f, "CT", &drop.join("loc"), "2.25.78", |_, o| {
        put(o, tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\LOCALIZER");
    });
    // Wider (spacing doubled) but in another frame of reference.
    copy_series(&f, "CT", &drop.join("other"), "2.25.79", |k, o| {
        put(o, tags::FRAME_OF_REFERENCE_UID, VR::UI, "2.25.80");
        put(
            o,
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            &format!("0\\0\\{}", 8 * k),
        );
    });
    let out = dir.path().join("out");
    let results = dicom::convert(&drop, &out, &Default::default()).unwrap();
    assert_eq!(
        results.len(),
        1,
        "the NAC series is not a second unit of work"
    );
    let report = results[0].result.as_ref().unwrap();
    assert_eq!(report.ct.as_ref().unwrap().series_instance_uid, ct_uid);
    assert_eq!(report.pet.slices, study.pet.shape()[2]);
}

#[test]
fn gantry_tilt_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, f, _) = drop_with_study(dir.path());
    let tilted = dir.path().join("tilted");
    // Every slice shifted along y in proportion to its z: a tilted gantry.
    copy_series(&f, "PT", &tilted, "2.25.81", |_, o| {
        let p = o
            .element(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .to_multi_float64()
            .unwrap();
        let y = p[1] + 0.1 * p[2];
        put(
            o,
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            &format!("{}\\{}\\{}", p[0], y, p[2]),
        );
    });
    let e = dicom::convert(&tilted, &dir.path().join("out"), &Default::default())
        .unwrap()
        .remove(0)
        .result
        .unwrap_err();
    assert_eq!(e.stage, Stage::Geometry);
    assert!(e.to_string().contains("gantry tilt"), "{e}");
}

/// Issue 15: files as other writers make them. A third of the drop's images lose their File
/// Meta Information group length (0002,0000), a third lose preamble and file meta altogether
/// (bare data sets); the drop converts to exactly the volumes of the untouched one.
#[test]
fn meta_without_group_length_and_bare_data_sets_convert_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, images, _) = drop_with_study(dir.path());
    let reference = dir.path().join("reference");
    let r = dicom::convert(&drop, &reference, &Default::default()).unwrap();
    assert!(r[0].result.is_ok());
    for (n, p) in images.iter().enumerate() {
        let bytes = std::fs::read(p).unwrap();
        let meta_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
        let edited = match n % 3 {
            0 => [&bytes[..132], &bytes[144..]].concat(),
            1 => bytes[144 + meta_len..].to_vec(),
            _ => continue,
        };
        std::fs::write(p, edited).unwrap();
    }
    let out = dir.path().join("edited");
    let r = dicom::convert(&drop, &out, &Default::default()).unwrap();
    let report = r[0].result.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ct.is_some());
    for name in ["pet_suv.nii.gz", "ct.nii.gz"] {
        let a = tracerd::io::nifti::read_f32(&reference.join(name)).unwrap();
        let b = tracerd::io::nifti::read_f32(&out.join(name)).unwrap();
        assert_eq!(a.geometry(), b.geometry(), "{name}");
        assert!(a.data() == b.data(), "{name}: voxels differ");
    }
}
