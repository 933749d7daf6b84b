//! NIfTI I/O checked against nibabel: what tracerd writes nibabel reads with the same affine
//! (1e-5) and data, and what nibabel writes tracerd reads identically.

use crate::common;

use common::{matrix4, read_f32_file, read_json, run_oracle};
use nalgebra::{Rotation3, Vector3};
use tracerd::io::nifti;
use tracerd::{Geometry, Volume};

const AFFINE_TOL: f64 = 1e-5;

/// File name, how to write it, the values nibabel must see, nibabel's dtype name.
type Case<'a> = (&'a str, &'a dyn Fn(&std::path::Path), Vec<f32>, &'a str);

fn oblique_geometry() -> Geometry {
    Geometry {
        shape: [9, 7, 5],
        spacing: Vector3::new(4.0, 3.5, 2.0),
        origin: Vector3::new(-350.25, -120.0, 812.5),
        direction: *Rotation3::from_euler_angles(0.05, -0.15, 0.25).matrix(),
    }
}

#[test]
fn nibabel_reads_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let g = oblique_geometry();
    let suv = Volume::new(
        g.clone(),
        (0..g.len())
            .map(|v| (v as f32 * 0.731).sin() * 7.0 + 7.5)
            .collect(),
    )
    .unwrap();
    let mask = suv.map(|v| (*v > 9.0) as u8);
    let cases: [Case; 3] = [
        (
            "suv.nii.gz",
            &|p| nifti::write_f32(p, &suv).unwrap(),
            suv.data().to_vec(),
            "float32",
        ),
        (
            "suv.nii",
            &|p| nifti::write_f32(p, &suv).unwrap(),
            suv.data().to_vec(),
            "float32",
        ),
        (
            "mask.nii.gz",
            &|p| nifti::write_u8(p, &mask).unwrap(),
            mask.data().iter().map(|&v| v as f32).collect(),
            "uint8",
        ),
    ];
    // Independent of Geometry::to_nifti_affine: LPS → RAS negates the first two world rows.
    let lps_linear = g.direction * nalgebra::Matrix3::from_diagonal(&g.spacing);
    let expected_affine = nalgebra::Matrix4::from_fn(|r, c| {
        let sign = if r < 2 { -1.0 } else { 1.0 };
        match (r, c) {
            (3, 3) => 1.0,
            (3, _) => 0.0,
            (_, 3) => sign * g.origin[r],
            _ => sign * lps_linear[(r, c)],
        }
    });
    for (name, write, expected_data, dtype) in cases {
        let path = dir.path().join(name);
        write(&path);
        let out = dir.path().join(format!("{name}.described"));
        run_oracle(
            "nifti_oracle.py",
            &[std::path::Path::new("describe"), &path, &out],
        );
        let info = read_json(&out.with_extension("described.json"));
        assert_eq!(info["dtype"], dtype, "{name}");
        assert_eq!(info["sform_code"], 1, "{name}: sform code");
        assert_eq!(info["qform_code"], 1, "{name}: qform code");
        assert_eq!(info["units"][0], "mm", "{name}");
        for key in ["affine", "sform", "qform"] {
            let got = matrix4(&info[key]);
            let diff = (got - expected_affine).abs().max();
            assert!(diff < AFFINE_TOL, "{name}: nibabel {key} differs by {diff}");
        }
        let zooms: Vec<f64> = serde_json::from_value(info["zooms"].clone()).unwrap();
        for a in 0..3 {
            assert!(
                (zooms[a] - g.spacing[a]).abs() < 1e-6,
                "{name}: zooms {zooms:?}"
            );
        }
        let data = read_f32_file(&out.with_extension("described.f32"));
        assert_eq!(data, expected_data, "{name}: voxel values differ");
    }
}

#[test]
fn we_read_what_nibabel_writes() {
    let dir = tempfile::tempdir().unwrap();
    run_oracle(
        "nifti_oracle.py",
        &[std::path::Path::new("make"), dir.path()],
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 9, "oracle made only {names:?}");
    for name in names {
        let info = read_json(&dir.path().join(format!("{name}.json")));
        let file = dir.path().join(info["file"].as_str().unwrap());
        let vol = nifti::read_f32(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone()).unwrap();
        assert_eq!(&vol.shape()[..], &shape[..3], "{name}: shape");
        assert!(
            shape[3..].iter().all(|&s| s == 1),
            "{name}: oracle shape {shape:?}"
        );
        let want = matrix4(&info["affine"]);
        // World convention: tracerd's origin is LPS, nibabel's translation RAS.
        let o = vol.geometry().origin;
        let lps = Vector3::new(-want[(0, 3)], -want[(1, 3)], want[(2, 3)]);
        assert!(
            (o - lps).norm() < AFFINE_TOL,
            "{name}: LPS origin {o} vs {lps}"
        );
        let got = vol.geometry().to_nifti_affine();
        let diff = (got - want).abs().max();
        assert!(
            diff < AFFINE_TOL,
            "{name}: affine differs by {diff}\nours {got}\nnibabel {want}"
        );
        let expected = read_f32_file(&dir.path().join(format!("{name}.f32")));
        assert_eq!(expected.len(), vol.data().len(), "{name}");
        for (i, (a, b)) in vol.data().iter().zip(&expected).enumerate() {
            // nibabel scales in float64, the nifti crate in float32: one float32 rounding apart.
            let tol = 1e-6 * b.abs().max(1.0);
            assert!(
                (a - b).abs() <= tol,
                "{name}: voxel {i}: ours {a}, nibabel {b}"
            );
        }
    }
}
