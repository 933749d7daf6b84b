//! Geometry (and voxels) against dcm2niix (Debian package `dcm2niix`, installed by `.ci/run`):
//! the same synthetic DICOM files converted by both tools must give affines equal to 1e-3 mm,
//! equal CT voxels and PET activity equal to 1e-5 of each slice's maximum (compared in nibabel by
//! tests/oracle/dicom_dcm2niix_oracle.py), for the axial study and for the same study rotated to an
//! oblique orientation.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::run_oracle;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, open_file};
use nalgebra::{Matrix3, Rotation3, Vector3};
use tracerd::io::dicom;
use tracerd::synth::{self, Size, SynthOptions};

#[test]
fn geometry_and_voxels_match_dcm2niix() {
    compare_with_dcm2niix(None);
}

/// The same study rotated 12° about (1, 1, 0.3): an oblique acquisition, where a wrong sign or
/// axis order in the affine cannot hide behind an identity direction.
#[test]
fn oblique_geometry_matches_dcm2niix() {
    let r = Rotation3::from_axis_angle(
        &nalgebra::Unit::new_normalize(Vector3::new(1.0, 1.0, 0.3)),
        12f64.to_radians(),
    );
    compare_with_dcm2niix(Some(*r.matrix()));
}

/// Rewrites every image of `dir` with orientation and position rotated by `r` about the origin.
fn rotate_all(dir: &Path, r: &Matrix3<f64>) {
    for p in common::files_below(dir) {
        let Ok(file) = open_file(&p) else { continue };
        let class = file.meta().media_storage_sop_class_uid().to_string();
        let inst = file.meta().media_storage_sop_instance_uid().to_string();
        let mut obj = file.into_inner();
        let v = |o: &InMemDicomObject, t| o.element(t).unwrap().to_multi_float64().unwrap();
        let iop = v(&obj, tags::IMAGE_ORIENTATION_PATIENT);
        let ipp = v(&obj, tags::IMAGE_POSITION_PATIENT);
        let row = r * Vector3::new(iop[0], iop[1], iop[2]);
        let col = r * Vector3::new(iop[3], iop[4], iop[5]);
        let pos = r * Vector3::new(ipp[0], ipp[1], ipp[2]);
        let ds = dicom::write::ds;
        let text = |x: &[f64]| x.iter().map(|&a| ds(a)).collect::<Vec<_>>().join("\\");
        for (tag, value) in [
            (
                tags::IMAGE_ORIENTATION_PATIENT,
                text(&[row.x, row.y, row.z, col.x, col.y, col.z]),
            ),
            (tags::IMAGE_POSITION_PATIENT, text(&[pos.x, pos.y, pos.z])),
        ] {
            obj.put(DataElement::new(tag, VR::DS, PrimitiveValue::from(value)));
        }
        dicom::write::write_part10(&p, obj, &class, &inst).unwrap();
    }
}

fn compare_with_dcm2niix(rotation: Option<Matrix3<f64>>) {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    let study = synth::generate(&SynthOptions {
        seed: 5,
        size: Size::Small,
    });
    tracerd::synth::dicom::write_dicom(&study, &drop).unwrap();
    if let Some(r) = rotation {
        rotate_all(&drop.join("DICOM"), &r);
    }
    let out = dir.path().join("out");
    let results = dicom::convert(&drop, &out, &Default::default()).unwrap();
    let report = results[0].result.as_ref().unwrap();
    if let Some(r) = rotation {
        // The rotation reached the geometry: direction columns are r's columns.
        for c in 0..3 {
            for row in 0..3 {
                let d = (report.pet.direction[c][row] - r[(row, c)]).abs();
                assert!(d < 1e-6, "direction[{c}][{row}] off by {d}");
            }
        }
    }
    let d2n = dir.path().join("d2n");
    std::fs::create_dir_all(&d2n).unwrap();
    let o = Command::new("dcm2niix")
        .args(["-b", "n", "-z", "n", "-f", "%s", "-o"])
        .arg(&d2n)
        .arg(drop.join("DICOM"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run dcm2niix ({e}); install the Debian package or run `bash .ci/run`")
        });
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let factor = format!("{:.17e}", report.suv.suv_factor);
    run_oracle(
        "dicom_dcm2niix_oracle.py",
        &[
            &d2n,
            &out.join("pet_suv.nii.gz"),
            &out.join("ct.nii.gz"),
            Path::new(&factor),
        ],
    );
}
