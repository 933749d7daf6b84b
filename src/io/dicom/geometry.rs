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
    let missing =
        |i: &Instance, what: &str| fail(subject, format!("{}: {what} missing", i.rel.display()));
    for s in slices {
        if s.number_of_frames > 1 {
            return Err(fail(
                subject,
                format!(
                    "{}: multi-frame image ({} frames); tracerd reads single-frame series",
                    s.rel.display(),
                    s.number_of_frames
                ),
            ));
        }
        if s.image_position.is_none() {
            return Err(missing(s, "ImagePositionPatient (0020,0032)"));
        }
        if s.image_orientation.is_none() {
            return Err(missing(s, "ImageOrientationPatient (0020,0037)"));
        }
        if s.pixel_spacing.is_none() {
            return Err(missing(s, "PixelSpacing (0028,0030)"));
        }
        if s.rows == 0 || s.columns == 0 {
            return Err(missing(s, "Rows/Columns (0028,0010)/(0028,0011)"));
        }
    }
    let iop = first.image_orientation.unwrap();
    let ps = first.pixel_spacing.unwrap();
    for s in slices {
        let o = s.image_orientation.unwrap();
        if o.iter().zip(&iop).any(|(a, b)| (a - b).abs() > 1e-4) {
            return Err(fail(
                subject,
                format!(
                    "{}: ImageOrientationPatient differs between slices",
                    s.rel.display()
                ),
            ));
        }
        let p = s.pixel_spacing.unwrap();
        if (p[0] - ps[0]).abs() > 1e-4 || (p[1] - ps[1]).abs() > 1e-4 {
            return Err(fail(
                subject,
                format!("{}: PixelSpacing differs between slices", s.rel.display()),
            ));
        }
        if s.rows != first.rows || s.columns != first.columns {
            return Err(fail(
                subject,
                format!("{}: Rows/Columns differ between slices", s.rel.display()),
            ));
        }
    }
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
    let normal = row.cross(&col);

    let pos = |i: usize| Vector3::from(slices[i].image_position.unwrap());
    let mut idx: Vec<usize> = (0..slices.len()).collect();
    idx.sort_by(|&a, &b| normal.dot(&pos(a)).total_cmp(&normal.dot(&pos(b))));

    // Duplicates: one position, several images.
    let mut warnings = Vec::new();
    let mut dropped = Vec::new();
    let mut order: Vec<usize> = Vec::with_capacity(idx.len());
    for &i in &idx {
        if let Some(&last) = order.last()
            && (pos(i) - pos(last)).norm() < 1e-3
        {
            let rank = |x: usize| {
                (
                    slices[x].acquisition_number.unwrap_or(i64::MIN),
                    slices[x].instance_number.unwrap_or(i64::MIN),
                )
            };
            let (keep, drop) = if rank(i) > rank(last) {
                (i, last)
            } else {
                (last, i)
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
            *order.last_mut().unwrap() = keep;
            continue;
        }
        order.push(i);
    }
    if order.len() < 2 {
        return Err(fail(
            subject,
            "a volume needs at least two slice positions".into(),
        ));
    }
    let d: Vec<f64> = order.iter().map(|&i| normal.dot(&pos(i))).collect();
    let spacing_k = check_spacing(&d, subject, &mut warnings)?;
    // Gantry tilt: positions must advance along the normal only.
    let span = pos(*order.last().unwrap()) - pos(order[0]);
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

#[cfg(test)]
mod tests {
    use super::*;

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
