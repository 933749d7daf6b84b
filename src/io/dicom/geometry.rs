//! Slice stacking: the voxel grid of a single-frame series from ImagePositionPatient and
//! ImageOrientationPatient, in LPS as they are written (see `volume.rs`).
//!
//! Slices are sorted by their position along the normal `row × column`. The slice spacing is
//! taken from the positions, never from SliceThickness. Two slices at one position keep the
//! higher AcquisitionNumber (then InstanceNumber) with a warning. Rejected, with the positions
//! named: a gap (a step over 1.5× the median step: missing slices), a slice more than 5 % of
//! the spacing (at least 0.02 mm) off the uniform grid through the end slices (non-uniform
//! spacing; smaller jitter, as rounded positions give, is a warning), slices whose positions drift
//! sideways off the normal (gantry tilt, which needs resampling tracerd does not do), and
//! orientation, size or pixel spacing differing between slices.
//!
//! The grid: i along the row direction (PixelSpacing[1]), j along the column direction
//! (PixelSpacing[0]), k along the normal; the origin is the first sorted slice's position.

use nalgebra::{Matrix3, Vector3};

use super::scan::Instance;
use super::{DicomError, DicomErrorKind, Stage};
use crate::volume::Geometry;

/// A sorted, checked stack: `order[k]` is the index (into the given slice list) of slice k.
#[derive(Debug, Clone)]
pub struct Stack {
    pub geometry: Geometry,
    pub order: Vec<usize>,
    /// Indices of the slices dropped as duplicates.
    pub dropped: Vec<usize>,
    pub warnings: Vec<String>,
}

fn fail(subject: &str, msg: String) -> DicomError {
    DicomError::new(Stage::Geometry, subject, DicomErrorKind::Geometry(msg))
}

/// Largest deviation of a slice from the uniform grid through the first and last positions
/// that is accepted, as a share of the spacing (never below [`JITTER_MIN_MM`]). Scanners
/// write rounded positions (a GE series steps 3.19, 3.27 and 3.29 mm, every slice within
/// 0.04 mm of a uniform 3.27 mm grid); dcm2niix reads those as one grid, and so does tracerd.
pub const JITTER_SHARE: f64 = 0.05;
pub const JITTER_MIN_MM: f64 = 0.02;

/// Checks sorted slice positions `d` (mm along the normal) against a uniform grid: a step over
/// 1.5× the median is missing slices; a slice further than the jitter tolerance from the grid
/// through the end positions is non-uniform spacing. Jitter within it is a warning naming the
/// largest deviation. Returns the grid's spacing.
fn check_spacing(d: &[f64], subject: &str, warnings: &mut Vec<String>) -> Result<f64, DicomError> {
    let steps: Vec<f64> = d.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    if let Some(k) = steps.iter().position(|s| *s > 1.5 * median) {
        return Err(fail(
            subject,
            format!(
                "missing slice(s): {:.3} mm between positions {:.3} and {:.3} mm where the \
                 spacing is {median:.3} mm",
                steps[k],
                d[k],
                d[k + 1]
            ),
        ));
    }
    let n = d.len();
    let spacing = (d[n - 1] - d[0]) / (n - 1) as f64;
    let (k, dev) = d
        .iter()
        .enumerate()
        .map(|(k, x)| (k, x - (d[0] + k as f64 * spacing)))
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .unwrap();
    let tol = (JITTER_SHARE * spacing).max(JITTER_MIN_MM);
    if dev.abs() > tol {
        return Err(fail(
            subject,
            format!(
                "non-uniform slice spacing: the slice at {:.3} mm lies {:.3} mm off the uniform \
                 {spacing:.3} mm grid (tolerance {tol:.3} mm); steps range {:.3} to {:.3} mm",
                d[k],
                dev.abs(),
                sorted[0],
                sorted[sorted.len() - 1]
            ),
        ));
    }
    if dev.abs() > 1e-3 {
        warnings.push(format!(
            "slice positions jitter around a uniform {spacing:.4} mm grid: largest deviation \
             {:.3} mm (tolerance {tol:.3} mm)",
            dev.abs()
        ));
    }
    Ok(spacing)
}

/// Builds the grid of `slices` (one series). `subject` names the series in errors.
pub fn stack(slices: &[&Instance], subject: &str) -> Result<Stack, DicomError> {
    let first = *slices
        .first()
        .ok_or_else(|| fail(subject, "series has no image".into()))?;
    check_slices(slices, subject)?;
    let ps = first.pixel_spacing.expect("checked");
    let [row, col, normal] = orientation(first.image_orientation.expect("checked"), subject)?;
    let positions: Vec<Vector3<f64>> = slices
        .iter()
        .map(|s| Vector3::from(s.image_position.expect("checked")))
        .collect();
    let pos = |i: usize| positions[i];
    let mut idx: Vec<usize> = (0..slices.len()).collect();
    idx.sort_by(|&a, &b| normal.dot(&pos(a)).total_cmp(&normal.dot(&pos(b))));
    let mut warnings = Vec::new();
    let (order, dropped) = deduplicate(slices, &positions, &idx, normal, &mut warnings);
    if order.len() < 2 {
        return Err(fail(
            subject,
            "a volume needs at least two slice positions".into(),
        ));
    }
    let d: Vec<f64> = order.iter().map(|&i| normal.dot(&pos(i))).collect();
    let spacing_k = check_spacing(&d, subject, &mut warnings)?;
    check_tilt(
        pos(*order.last().expect("two or more")) - pos(order[0]),
        normal,
        subject,
    )?;
    let geometry = Geometry {
        shape: [first.columns as usize, first.rows as usize, order.len()],
        spacing: Vector3::new(ps[1], ps[0], spacing_k),
        origin: pos(order[0]),
        direction: Matrix3::from_columns(&[row, col, normal]),
    };
    geometry
        .validate()
        .map_err(|e| fail(subject, e.to_string()))?;
    Ok(Stack {
        geometry,
        order,
        dropped,
        warnings,
    })
}

/// Every slice is single-frame and has the geometry tags; orientation, pixel spacing and matrix
/// are the first slice's.
fn check_slices(slices: &[&Instance], subject: &str) -> Result<(), DicomError> {
    let bad = |i: &Instance, what: &str| fail(subject, format!("{}: {what}", i.rel.display()));
    for s in slices {
        if s.number_of_frames > 1 {
            let what = format!(
                "multi-frame image ({} frames); tracerd reads single-frame series",
                s.number_of_frames
            );
            return Err(bad(s, &what));
        }
        let missing = [
            (
                s.image_position.is_none(),
                "ImagePositionPatient (0020,0032)",
            ),
            (
                s.image_orientation.is_none(),
                "ImageOrientationPatient (0020,0037)",
            ),
            (s.pixel_spacing.is_none(), "PixelSpacing (0028,0030)"),
            (
                s.rows == 0 || s.columns == 0,
                "Rows/Columns (0028,0010)/(0028,0011)",
            ),
        ];
        if let Some((_, tag)) = missing.iter().find(|(absent, _)| *absent) {
            return Err(bad(s, &format!("{tag} missing")));
        }
    }
    let first = slices[0];
    let (iop, ps) = (
        first.image_orientation.unwrap(),
        first.pixel_spacing.unwrap(),
    );
    for s in slices {
        let (o, p) = (s.image_orientation.unwrap(), s.pixel_spacing.unwrap());
        if o.iter().zip(&iop).any(|(a, b)| (a - b).abs() > 1e-4) {
            return Err(bad(s, "ImageOrientationPatient differs between slices"));
        }
        if (p[0] - ps[0]).abs() > 1e-4 || (p[1] - ps[1]).abs() > 1e-4 {
            return Err(bad(s, "PixelSpacing differs between slices"));
        }
        if s.rows != first.rows || s.columns != first.columns {
            return Err(bad(s, "Rows/Columns differ between slices"));
        }
    }
    Ok(())
}

/// Row, column and slice normal (row × column) of ImageOrientationPatient, which must hold two
/// orthogonal unit vectors.
fn orientation(iop: [f64; 6], subject: &str) -> Result<[Vector3<f64>; 3], DicomError> {
    let row = Vector3::new(iop[0], iop[1], iop[2]);
    let col = Vector3::new(iop[3], iop[4], iop[5]);
    if (row.norm() - 1.0).abs() > 1e-3
        || (col.norm() - 1.0).abs() > 1e-3
        || row.dot(&col).abs() > 1e-3
    {
        return Err(fail(
            subject,
            format!("ImageOrientationPatient {iop:?} is not two orthogonal unit vectors"),
        ));
    }
    let (row, col) = (row.normalize(), col.normalize());
    Ok([row, col, row.cross(&col)])
}

/// The slices in `idx` (sorted along the normal; `positions` are their ImagePositionPatient)
/// with one image per position: of two at one
/// position the higher (AcquisitionNumber, InstanceNumber) is kept, with a warning. Returns the
/// kept order and the dropped slices.
fn deduplicate(
    slices: &[&Instance],
    positions: &[Vector3<f64>],
    idx: &[usize],
    normal: Vector3<f64>,
    warnings: &mut Vec<String>,
) -> (Vec<usize>, Vec<usize>) {
    let pos = |i: usize| positions[i];
    let rank = |x: usize| {
        (
            slices[x].acquisition_number.unwrap_or(i64::MIN),
            slices[x].instance_number.unwrap_or(i64::MIN),
        )
    };
    let mut dropped = Vec::new();
    let mut order: Vec<usize> = Vec::with_capacity(idx.len());
    for &i in idx {
        let Some(last) = order
            .last_mut()
            .filter(|l| (pos(i) - pos(**l)).norm() < 1e-3)
        else {
            order.push(i);
            continue;
        };
        let (keep, drop) = if rank(i) > rank(*last) {
            (i, *last)
        } else {
            (*last, i)
        };
        warnings.push(format!(
            "two images at position {:.3} mm along the normal: kept {} (AcquisitionNumber \
             {:?}), dropped {}",
            normal.dot(&pos(i)),
            slices[keep].rel.display(),
            slices[keep].acquisition_number,
            slices[drop].rel.display()
        ));
        dropped.push(drop);
        *last = keep;
    }
    (order, dropped)
}

/// Gantry tilt: from the first to the last slice, positions must advance along the normal only.
fn check_tilt(span: Vector3<f64>, normal: Vector3<f64>, subject: &str) -> Result<(), DicomError> {
    let along = span.dot(&normal);
    let sideways = (span - normal * along).norm();
    if sideways > 1e-3 * along.abs().max(1.0) + 1e-3 {
        let angle = sideways.atan2(along).to_degrees();
        return Err(fail(
            subject,
            format!(
                "slice positions drift {sideways:.2} mm off the slice normal (gantry tilt \
                 {angle:.2}°); tilted series are not supported"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Slice `k` of an axial 4×3 series at 2 mm.
    fn slice(k: usize) -> Instance {
        Instance {
            rel: PathBuf::from(format!("IM{k}")),
            rows: 3,
            columns: 4,
            pixel_spacing: Some([1.5, 1.5]),
            image_position: Some([0.0, 0.0, 2.0 * k as f64]),
            image_orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            ..Instance::for_tests()
        }
    }

    /// Makes one slice of a good series bad.
    type Spoil = fn(&mut Instance);

    fn stack_error(slices: &[Instance]) -> String {
        let refs: Vec<&Instance> = slices.iter().collect();
        stack(&refs, "PT series 1").unwrap_err().to_string()
    }

    #[test]
    fn each_missing_geometry_tag_is_named_with_its_file() {
        let cases: [(Spoil, &str); 5] = [
            (
                |s| s.image_position = None,
                "ImagePositionPatient (0020,0032) missing",
            ),
            (
                |s| s.image_orientation = None,
                "ImageOrientationPatient (0020,0037) missing",
            ),
            (
                |s| s.pixel_spacing = None,
                "PixelSpacing (0028,0030) missing",
            ),
            (
                |s| s.rows = 0,
                "Rows/Columns (0028,0010)/(0028,0011) missing",
            ),
            (|s| s.number_of_frames = 3, "multi-frame image (3 frames)"),
        ];
        for (spoil, reason) in cases {
            let mut slices: Vec<Instance> = (0..3).map(slice).collect();
            spoil(&mut slices[1]);
            let e = stack_error(&slices);
            assert!(e.contains(&format!("IM1: {reason}")), "{e}");
        }
    }

    #[test]
    fn slices_must_agree_on_orientation_spacing_and_matrix() {
        let cases: [(Spoil, &str); 3] = [
            (
                |s| s.image_orientation = Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]),
                "ImageOrientationPatient differs",
            ),
            (
                |s| s.pixel_spacing = Some([1.5, 2.0]),
                "PixelSpacing differs",
            ),
            (|s| s.columns = 5, "Rows/Columns differ"),
        ];
        for (spoil, reason) in cases {
            let mut slices: Vec<Instance> = (0..3).map(slice).collect();
            spoil(&mut slices[2]);
            let e = stack_error(&slices);
            assert!(e.contains(&format!("IM2: {reason}")), "{e}");
        }
    }

    #[test]
    fn orientation_needs_two_orthogonal_unit_vectors() {
        let [row, col, normal] = orientation([0.0, 1.0, 0.0, 0.0, 0.0, -1.0], "s").unwrap();
        assert_eq!(normal, row.cross(&col));
        assert_eq!(normal, Vector3::new(-1.0, 0.0, 0.0));
        for bad in [
            [1.0, 0.0, 0.0, 0.6, 0.8, 0.0],
            [2.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        ] {
            let e = orientation(bad, "s").unwrap_err().to_string();
            assert!(e.contains("not two orthogonal unit vectors"), "{e}");
        }
    }

    #[test]
    fn a_stack_orders_slices_along_the_normal_and_keeps_one_per_position() {
        let mut slices: Vec<Instance> = [2, 0, 1].into_iter().map(slice).collect();
        slices.push(Instance {
            acquisition_number: Some(2),
            rel: PathBuf::from("IM1b"),
            ..slice(1)
        });
        let refs: Vec<&Instance> = slices.iter().collect();
        let st = stack(&refs, "PT series 1").unwrap();
        assert_eq!(st.order, [1, 3, 0]);
        assert_eq!(st.dropped, [2]);
        assert!(st.warnings[0].contains("kept IM1b"), "{:?}", st.warnings);
        assert_eq!(st.geometry.shape, [4, 3, 3]);
        assert_eq!(st.geometry.spacing, Vector3::new(1.5, 1.5, 2.0));
    }

    fn check(d: &[f64]) -> Result<Vec<String>, String> {
        let mut w = Vec::new();
        check_spacing(d, "PT series 1", &mut w)
            .map(|_| w)
            .map_err(|e| e.to_string())
    }

    /// Issue 15: a real GE series writes rounded positions (steps of 3.19, 3.27 and 3.29 mm,
    /// each slice within 0.04 mm of a uniform grid); it was rejected as non-uniform.
    #[test]
    fn positions_jittering_around_a_uniform_grid_are_one_grid_with_a_warning() {
        let jitter = [0.0, -0.04, 0.02, 0.0, 0.04, -0.02];
        let d: Vec<f64> = (0..90)
            .map(|k| -452.89 + 3.27 * k as f64 + jitter[k % 6] * (k % 89 != 0) as u8 as f64)
            .collect();
        let w = check(&d).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("largest deviation 0.040 mm"), "{w:?}");
        let exact: Vec<f64> = (0..90).map(|k| 2.0 * k as f64).collect();
        assert_eq!(check(&exact).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn real_gaps_and_two_spacings_are_still_rejected() {
        let mut gap: Vec<f64> = (0..40).map(|k| 3.27 * k as f64).collect();
        gap.remove(20);
        assert!(check(&gap).unwrap_err().contains("missing slice(s)"));
        // Two reconstructions joined: 3.27 mm, then 3.0 mm.
        let two: Vec<f64> = (0..40)
            .map(|k| 3.27 * k.min(20) as f64 + 3.0 * (k.max(20) - 20) as f64)
            .collect();
        let e = check(&two).unwrap_err();
        assert!(e.contains("non-uniform slice spacing"), "{e}");
        // One slice 0.3 mm out of place (9 % of the spacing).
        let mut shifted: Vec<f64> = (0..40).map(|k| 3.27 * k as f64).collect();
        shifted[17] += 0.3;
        assert!(check(&shifted).unwrap_err().contains("lies 0.300 mm off"));
    }
}
