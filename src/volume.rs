//! Volumes on a physical grid: `Volume<T>`, its `Geometry`, voxel↔world transforms and resampling.
//!
//! # World convention
//!
//! Every `Geometry` in tracerd lives in **DICOM patient coordinates (LPS)**, in millimetres:
//! +x towards the patient's left, +y towards posterior, +z towards the head. This is the frame
//! scanners write (ImagePositionPatient, ImageOrientationPatient) and the one ITK uses, so DICOM
//! geometry enters unchanged. NIfTI stores RAS (+x right→left flipped, +y posterior→anterior
//! flipped); the conversion is a sign flip of the first two world rows and happens in exactly one
//! place, [`Geometry::to_nifti_affine`] / [`Geometry::from_nifti_affine`], used only by
//! `io::nifti`. Nothing else in the code base sees RAS.
//!
//! # Layout
//!
//! `data` is stored with the first index fastest (`i + nx·(j + ny·k)`), the NIfTI and DICOM
//! order, so files map onto memory without transposition. Voxel (i, j, k) has its *centre* at
//! `origin + direction · diag(spacing) · (i, j, k)`; the voxel is the box of ±½ voxel around it.
//!
//! No I/O happens here.

use nalgebra::{Matrix3, Matrix4, Vector3};
use rayon::prelude::*;

/// Error for a geometry that cannot describe a voxel grid.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GeometryError {
    #[error("shape {0:?} has an empty axis")]
    EmptyShape([usize; 3]),
    #[error("voxel spacing {0:?} mm must be finite and positive on every axis")]
    BadSpacing([f64; 3]),
    #[error("origin {0:?} is not finite")]
    BadOrigin([f64; 3]),
    #[error("direction matrix is not finite or is singular (axes are parallel or zero)")]
    SingularDirection,
    #[error("data holds {got} voxels but the shape {shape:?} needs {expected}")]
    DataLength {
        shape: [usize; 3],
        expected: usize,
        got: usize,
    },
}

/// The physical grid of a volume: how many voxels, how big, where and which way.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    /// Voxels along i, j, k.
    pub shape: [usize; 3],
    /// Distance between voxel centres along i, j, k, in mm (always positive).
    pub spacing: Vector3<f64>,
    /// World (LPS, mm) position of the centre of voxel (0, 0, 0).
    pub origin: Vector3<f64>,
    /// Columns are the unit world directions of the i, j and k axes. Usually a rotation; a sheared
    /// NIfTI sform is kept exactly, with unit-length but non-orthogonal columns.
    pub direction: Matrix3<f64>,
}

impl Geometry {
    /// A grid aligned with the LPS axes (identity direction), the usual axial acquisition.
    pub fn axial(shape: [usize; 3], spacing: [f64; 3], origin: [f64; 3]) -> Self {
        Geometry {
            shape,
            spacing: Vector3::from(spacing),
            origin: Vector3::from(origin),
            direction: Matrix3::identity(),
        }
    }

    /// Checks that the grid is usable: non-empty, finite positive spacing, invertible direction.
    pub fn validate(&self) -> Result<(), GeometryError> {
        if self.shape.contains(&0) {
            return Err(GeometryError::EmptyShape(self.shape));
        }
        if !self.spacing.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err(GeometryError::BadSpacing(self.spacing.into()));
        }
        if !self.origin.iter().all(|o| o.is_finite()) {
            return Err(GeometryError::BadOrigin(self.origin.into()));
        }
        let det = self.direction.determinant();
        if !det.is_finite() || det.abs() < 1e-6 {
            return Err(GeometryError::SingularDirection);
        }
        Ok(())
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a grid without voxels (never true for a validated geometry).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Volume of one voxel in millilitres (mm³ / 1000), from the spacing and any shear.
    pub fn voxel_volume_ml(&self) -> f64 {
        self.index_to_world_linear().determinant().abs() / 1000.0
    }

    /// Linear index of voxel (i, j, k) in `Volume::data`.
    #[inline]
    pub fn linear_index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.shape[0] * (j + self.shape[1] * k)
    }

    /// The 3×3 part of the index→world map: `direction · diag(spacing)`.
    pub fn index_to_world_linear(&self) -> Matrix3<f64> {
        self.direction * Matrix3::from_diagonal(&self.spacing)
    }

    /// World (LPS, mm) position of a continuous voxel index.
    pub fn index_to_world(&self, ijk: Vector3<f64>) -> Vector3<f64> {
        self.origin + self.index_to_world_linear() * ijk
    }

    /// Continuous voxel index of a world (LPS, mm) position. `None` only for a singular geometry.
    pub fn world_to_index(&self, world: Vector3<f64>) -> Option<Vector3<f64>> {
        self.index_to_world_linear()
            .try_inverse()
            .map(|inv| inv * (world - self.origin))
    }

    /// The 4×4 voxel-index → LPS world affine.
    pub fn affine_lps(&self) -> Matrix4<f64> {
        let mut m = Matrix4::identity();
        m.fixed_view_mut::<3, 3>(0, 0)
            .copy_from(&self.index_to_world_linear());
        m.fixed_view_mut::<3, 1>(0, 3).copy_from(&self.origin);
        m
    }

    /// The 4×4 voxel-index → RAS world affine that NIfTI's sform stores.
    pub fn to_nifti_affine(&self) -> Matrix4<f64> {
        lps_ras_flip() * self.affine_lps()
    }

    /// Rebuilds a geometry from a NIfTI (RAS) affine. Spacing is the length of each affine column;
    /// direction is the normalised column.
    pub fn from_nifti_affine(shape: [usize; 3], ras: &Matrix4<f64>) -> Result<Self, GeometryError> {
        let lps = lps_ras_flip() * ras;
        let linear = lps.fixed_view::<3, 3>(0, 0).into_owned();
        let spacing = Vector3::new(
            linear.column(0).norm(),
            linear.column(1).norm(),
            linear.column(2).norm(),
        );
        if !spacing.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err(GeometryError::BadSpacing(spacing.into()));
        }
        let direction = Matrix3::from_columns(&[
            linear.column(0) / spacing[0],
            linear.column(1) / spacing[1],
            linear.column(2) / spacing[2],
        ]);
        let geometry = Geometry {
            shape,
            spacing,
            origin: lps.fixed_view::<3, 1>(0, 3).into_owned(),
            direction,
        };
        geometry.validate()?;
        Ok(geometry)
    }

    /// Fraction of `target`'s voxel centres that lie inside this grid's voxel boxes: how much
    /// of `target` a volume on this grid covers.
    pub fn coverage_of(&self, target: &Geometry) -> f64 {
        let map = IndexMap::between(target, self);
        let [tx, ty, tz] = target.shape;
        let inside_count: usize = (0..tz)
            .into_par_iter()
            .map(|k| {
                let mut count = 0;
                for j in 0..ty {
                    let row_start = map.apply(0.0, j as f64, k as f64);
                    for i in 0..tx {
                        count +=
                            usize::from(inside(row_start + map.step_i * i as f64, self.shape, 0.5));
                    }
                }
                count
            })
            .sum();
        inside_count as f64 / target.len() as f64
    }

    /// World positions of the 8 corner voxel centres; handy for extents and overlap checks.
    pub fn corner_centres(&self) -> [Vector3<f64>; 8] {
        let [nx, ny, nz] = self.shape.map(|n| n.saturating_sub(1) as f64);
        let mut out = [Vector3::zeros(); 8];
        for (c, corner) in out.iter_mut().enumerate() {
            let ijk = Vector3::new(
                if c & 1 == 0 { 0.0 } else { nx },
                if c & 2 == 0 { 0.0 } else { ny },
                if c & 4 == 0 { 0.0 } else { nz },
            );
            *corner = self.index_to_world(ijk);
        }
        out
    }
}

/// diag(-1, -1, 1, 1): LPS ↔ RAS (its own inverse).
fn lps_ras_flip() -> Matrix4<f64> {
    Matrix4::from_diagonal(&nalgebra::Vector4::new(-1.0, -1.0, 1.0, 1.0))
}

/// A scalar field sampled on a `Geometry`.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    geometry: Geometry,
    data: Vec<T>,
}

impl<T> Volume<T> {
    /// Wraps `data` (first index fastest) on `geometry`, checking that both agree.
    pub fn new(geometry: Geometry, data: Vec<T>) -> Result<Self, GeometryError> {
        geometry.validate()?;
        if data.len() != geometry.len() {
            return Err(GeometryError::DataLength {
                shape: geometry.shape,
                expected: geometry.len(),
                got: data.len(),
            });
        }
        Ok(Volume { geometry, data })
    }

    /// A volume filled with one value.
    pub fn filled(geometry: Geometry, value: T) -> Result<Self, GeometryError>
    where
        T: Clone,
    {
        let data = vec![value; geometry.len()];
        Volume::new(geometry, data)
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    pub fn shape(&self) -> [usize; 3] {
        self.geometry.shape
    }

    pub fn data(&self) -> &[T] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// Value of voxel (i, j, k). Panics when out of range, like slice indexing.
    #[inline]
    pub fn at(&self, i: usize, j: usize, k: usize) -> &T {
        &self.data[self.geometry.linear_index(i, j, k)]
    }

    /// Same grid, each voxel mapped through `f`.
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> Volume<U> {
        Volume {
            geometry: self.geometry.clone(),
            data: self.data.iter().map(f).collect(),
        }
    }
}

impl<T: Copy> Volume<T> {
    /// The same voxels re-indexed so that i, j and k run along +x, +y and +z (LPS: towards the
    /// patient's left, posterior, head) — the layout the models are trained on — by permuting and
    /// flipping axes, never interpolating. Each voxel keeps its world position. `None` when the
    /// grid is so oblique that two voxel axes are closest to the same world axis.
    pub fn to_canonical_lps(&self) -> Option<Volume<T>> {
        let g = &self.geometry;
        // For each world axis w: the voxel axis most aligned with it, and whether it runs backwards.
        let mut source = [(0usize, false); 3];
        for (w, slot) in source.iter_mut().enumerate() {
            let a = (0..3).max_by(|&a, &b| {
                g.direction[(w, a)]
                    .abs()
                    .total_cmp(&g.direction[(w, b)].abs())
            })?;
            *slot = (a, g.direction[(w, a)] < 0.0);
        }
        let mut used = [false; 3];
        for &(a, _) in &source {
            if std::mem::replace(&mut used[a], true) {
                return None;
            }
        }
        let shape = source.map(|(a, _)| g.shape[a]);
        let mut origin_index = Vector3::zeros();
        for &(a, flip) in &source {
            if flip {
                origin_index[a] = (g.shape[a] - 1) as f64;
            }
        }
        let geometry = Geometry {
            shape,
            spacing: Vector3::from(source.map(|(a, _)| g.spacing[a])),
            origin: g.index_to_world(origin_index),
            direction: Matrix3::from_columns(&source.map(|(a, flip)| {
                let column = g.direction.column(a).into_owned();
                if flip { -column } else { column }
            })),
        };
        let mut data = Vec::with_capacity(self.data.len());
        let mut old = [0usize; 3];
        for k in 0..shape[2] {
            for j in 0..shape[1] {
                for i in 0..shape[0] {
                    for (w, &n) in [i, j, k].iter().enumerate() {
                        let (a, flip) = source[w];
                        old[a] = if flip { g.shape[a] - 1 - n } else { n };
                    }
                    data.push(*self.at(old[0], old[1], old[2]));
                }
            }
        }
        Some(Volume { geometry, data })
    }
}

/// How to read a source volume between voxel centres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// Trilinear, for images (SUV, HU, probabilities).
    Linear,
    /// Trilinear, but only between the outermost voxel *centres*: points in the outer half voxel
    /// get the fill value. This is how the models' training code resampled CT onto the PET grid
    /// (model card `ct_resampling`), so the L2SNet pipeline must do the same.
    LinearWithinCentres,
    /// Nearest voxel, for label maps and masks; never invents a label.
    Nearest,
}

impl<T> Volume<T>
where
    T: Copy + Send + Sync + Into<f64>,
{
    /// Resamples this volume onto `target`: every target voxel centre is mapped into this volume's
    /// index space through the world (so different spacings, origins, directions and extents are
    /// all handled) and read with `interpolation`.
    ///
    /// A target point is *inside* when it lies within this volume's voxel boxes, i.e. within half
    /// a voxel of the outermost centres. Points outside get `fill`. For linear interpolation the
    /// outermost half voxel repeats the edge value (there is nothing beyond to blend with), so
    /// resampling onto the same box loses no border.
    pub fn resample(&self, target: &Geometry, interpolation: Interpolation, fill: T) -> Volume<T>
    where
        T: FromF64,
    {
        let map = IndexMap::between(target, &self.geometry);
        let [tx, ty, _] = target.shape;
        let plane = tx * ty;
        let mut data = vec![fill; target.len()];
        data.par_chunks_mut(plane.max(1))
            .enumerate()
            .for_each(|(k, slice)| {
                for j in 0..ty {
                    let row_start = map.apply(0.0, j as f64, k as f64);
                    for i in 0..tx {
                        let p = row_start + map.step_i * i as f64;
                        if let Some(v) = self.sample(p, interpolation) {
                            slice[i + tx * j] = v;
                        }
                    }
                }
            });
        Volume {
            geometry: target.clone(),
            data,
        }
    }

    /// Value at a continuous index, or `None` outside the voxel boxes.
    fn sample(&self, p: Vector3<f64>, interpolation: Interpolation) -> Option<T>
    where
        T: FromF64,
    {
        let n = self.geometry.shape;
        let margin = match interpolation {
            Interpolation::LinearWithinCentres => 0.0,
            _ => 0.5,
        };
        if !inside(p, n, margin) {
            return None;
        }
        match interpolation {
            Interpolation::Nearest => {
                let idx = |a: usize| (p[a].round().max(0.0) as usize).min(n[a] - 1);
                Some(*self.at(idx(0), idx(1), idx(2)))
            }
            Interpolation::Linear | Interpolation::LinearWithinCentres => {
                let mut lo = [0usize; 3];
                let mut hi = [0usize; 3];
                let mut t = [0f64; 3];
                for a in 0..3 {
                    let c = p[a].clamp(0.0, (n[a] - 1) as f64);
                    let f = c.floor();
                    lo[a] = f as usize;
                    hi[a] = (lo[a] + 1).min(n[a] - 1);
                    t[a] = c - f;
                }
                let v = |i: usize, j: usize, k: usize| -> f64 { (*self.at(i, j, k)).into() };
                let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
                let c00 = lerp(v(lo[0], lo[1], lo[2]), v(hi[0], lo[1], lo[2]), t[0]);
                let c10 = lerp(v(lo[0], hi[1], lo[2]), v(hi[0], hi[1], lo[2]), t[0]);
                let c01 = lerp(v(lo[0], lo[1], hi[2]), v(hi[0], lo[1], hi[2]), t[0]);
                let c11 = lerp(v(lo[0], hi[1], hi[2]), v(hi[0], hi[1], hi[2]), t[0]);
                let c0 = lerp(c00, c10, t[1]);
                let c1 = lerp(c01, c11, t[1]);
                Some(T::from_f64(lerp(c0, c1, t[2])))
            }
        }
    }
}

/// Whether continuous index `p` lies within `margin` voxels of the outermost voxel centres of a
/// grid of `shape` (0.5: inside the voxel boxes), with a tiny tolerance so that grids sharing a
/// boundary do not lose a row to rounding.
fn inside(p: Vector3<f64>, shape: [usize; 3], margin: f64) -> bool {
    const EPS: f64 = 1e-6;
    (0..3).all(|a| p[a] >= -margin - EPS && p[a] <= (shape[a] - 1) as f64 + margin + EPS)
}

/// Conversion back from the f64 that interpolation computes in.
pub trait FromF64 {
    fn from_f64(v: f64) -> Self;
}

impl FromF64 for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl FromF64 for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

impl FromF64 for u8 {
    /// Rounds and saturates: linear interpolation of a uint8 image stays in range.
    fn from_f64(v: f64) -> Self {
        v.round().clamp(0.0, 255.0) as u8
    }
}

impl FromF64 for u32 {
    /// Rounds and saturates (label volumes are resampled with nearest neighbour).
    fn from_f64(v: f64) -> Self {
        v.round().clamp(0.0, u32::MAX as f64) as u32
    }
}

impl FromF64 for i16 {
    fn from_f64(v: f64) -> Self {
        v.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16
    }
}

/// Affine map from target voxel indices to source voxel indices, with the step along i
/// precomputed so the inner loop is one vector addition.
struct IndexMap {
    linear: Matrix3<f64>,
    offset: Vector3<f64>,
    step_i: Vector3<f64>,
}

impl IndexMap {
    fn between(target: &Geometry, source: &Geometry) -> Self {
        let src_inv = source
            .index_to_world_linear()
            .try_inverse()
            .expect("a validated geometry has an invertible direction");
        let linear = src_inv * target.index_to_world_linear();
        let offset = src_inv * (target.origin - source.origin);
        IndexMap {
            step_i: linear.column(0).into_owned(),
            linear,
            offset,
        }
    }

    fn apply(&self, i: f64, j: f64, k: f64) -> Vector3<f64> {
        self.offset + self.linear * Vector3::new(i, j, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Rotation3;

    fn oblique() -> Geometry {
        Geometry {
            shape: [7, 5, 4],
            spacing: Vector3::new(1.5, 2.0, 3.0),
            origin: Vector3::new(-10.0, 4.0, 25.0),
            direction: *Rotation3::from_euler_angles(0.1, -0.2, 0.3).matrix(),
        }
    }

    #[test]
    fn world_and_index_round_trip() {
        let g = oblique();
        let ijk = Vector3::new(1.25, 3.5, 2.0);
        let back = g.world_to_index(g.index_to_world(ijk)).unwrap();
        assert!((back - ijk).norm() < 1e-12);
    }

    #[test]
    fn nifti_affine_flips_x_and_y_only() {
        let g = Geometry::axial([2, 2, 2], [2.0, 3.0, 4.0], [10.0, 20.0, 30.0]);
        let ras = g.to_nifti_affine();
        assert_eq!(ras[(0, 0)], -2.0);
        assert_eq!(ras[(1, 1)], -3.0);
        assert_eq!(ras[(2, 2)], 4.0);
        assert_eq!(ras[(0, 3)], -10.0);
        assert_eq!(ras[(1, 3)], -20.0);
        assert_eq!(ras[(2, 3)], 30.0);
        let back = Geometry::from_nifti_affine(g.shape, &ras).unwrap();
        assert!((back.affine_lps() - g.affine_lps()).abs().max() < 1e-12);
    }

    #[test]
    fn oblique_affine_round_trips() {
        let g = oblique();
        let back = Geometry::from_nifti_affine(g.shape, &g.to_nifti_affine()).unwrap();
        assert!((back.affine_lps() - g.affine_lps()).abs().max() < 1e-12);
        assert!((g.voxel_volume_ml() - 1.5 * 2.0 * 3.0 / 1000.0).abs() < 1e-15);
    }

    #[test]
    fn invalid_geometries_are_rejected() {
        let mut g = Geometry::axial([2, 2, 2], [1.0, 1.0, 1.0], [0.0; 3]);
        g.spacing[1] = 0.0;
        assert!(matches!(g.validate(), Err(GeometryError::BadSpacing(_))));
        g.spacing[1] = f64::NAN;
        assert!(matches!(g.validate(), Err(GeometryError::BadSpacing(_))));
        let mut g = Geometry::axial([2, 0, 2], [1.0; 3], [0.0; 3]);
        assert_eq!(g.validate(), Err(GeometryError::EmptyShape([2, 0, 2])));
        g.shape = [2, 2, 2];
        g.direction = Matrix3::from_columns(&[Vector3::x(), Vector3::x(), Vector3::z()]);
        assert_eq!(g.validate(), Err(GeometryError::SingularDirection));
        let err = Volume::new(
            Geometry::axial([2, 2, 2], [1.0; 3], [0.0; 3]),
            vec![0f32; 7],
        );
        assert!(matches!(err, Err(GeometryError::DataLength { got: 7, .. })));
    }

    /// A linear function of world position is reproduced exactly by trilinear interpolation, so a
    /// ramp resampled onto any grid inside the source must equal the ramp evaluated there.
    #[test]
    fn linear_ramp_is_exact_on_a_shifted_rescaled_rotated_grid() {
        let ramp = |w: Vector3<f64>| 3.0 + 0.5 * w.x - 0.25 * w.y + 0.125 * w.z;
        let src_geom = Geometry::axial([40, 36, 30], [2.0, 2.5, 3.0], [-40.0, -45.0, -45.0]);
        let mut data = Vec::with_capacity(src_geom.len());
        for k in 0..30 {
            for j in 0..36 {
                for i in 0..40 {
                    data.push(ramp(
                        src_geom.index_to_world(Vector3::new(i as f64, j as f64, k as f64)),
                    ) as f32);
                }
            }
        }
        let src = Volume::new(src_geom, data).unwrap();
        // Finer, shifted by a non-integer amount, slightly rotated, wholly inside the source.
        let target = Geometry {
            shape: [25, 20, 18],
            spacing: Vector3::new(1.3, 1.7, 2.1),
            origin: Vector3::new(-17.3, -19.1, -16.7),
            direction: *Rotation3::from_euler_angles(0.05, 0.03, -0.08).matrix(),
        };
        let out = src.resample(&target, Interpolation::Linear, f32::NAN);
        let mut worst = 0f64;
        for k in 0..18 {
            for j in 0..20 {
                for i in 0..25 {
                    let w = target.index_to_world(Vector3::new(i as f64, j as f64, k as f64));
                    let got = *out.at(i, j, k) as f64;
                    worst = worst.max((got - ramp(w)).abs());
                }
            }
        }
        assert!(worst < 1e-4, "worst error {worst}");
    }

    #[test]
    fn outside_points_get_the_fill_value() {
        let src = Volume::filled(Geometry::axial([4, 4, 4], [1.0; 3], [0.0; 3]), 5.0f32).unwrap();
        let target = Geometry::axial([8, 1, 1], [1.0; 3], [-2.0, 0.0, 0.0]);
        let out = src.resample(&target, Interpolation::Linear, -1.0);
        // x = -2, -1 are outside (box starts at -0.5); 0..=3 inside; 4, 5 outside.
        assert_eq!(out.data(), &[-1.0, -1.0, 5.0, 5.0, 5.0, 5.0, -1.0, -1.0]);
    }

    fn blob_mask(g: &Geometry) -> Volume<u8> {
        let mut data = vec![0u8; g.len()];
        for k in 0..g.shape[2] {
            for j in 0..g.shape[1] {
                for i in 0..g.shape[0] {
                    let inside =
                        (i as i64 - 5).pow(2) + (j as i64 - 6).pow(2) + (k as i64 - 4).pow(2) <= 9
                            || (i == 1 && j == 1 && k == 1);
                    data[g.linear_index(i, j, k)] = if inside { 1 + (i % 2) as u8 } else { 0 };
                }
            }
        }
        Volume::new(g.clone(), data).unwrap()
    }

    #[test]
    fn mask_survives_a_round_trip_through_a_finer_grid() {
        let coarse = Geometry::axial([12, 13, 9], [4.0, 4.0, 4.0], [-20.0, -24.0, 100.0]);
        let mask = blob_mask(&coarse);
        for factor in [2.0f64, 3.0] {
            // Finer grid covering the same voxel boxes: first fine centre half a fine voxel in
            // from the coarse box corner.
            let fine_spacing = 4.0 / factor;
            let shift = -2.0 + fine_spacing / 2.0;
            let fine = Geometry::axial(
                coarse.shape.map(|n| n * factor as usize),
                [fine_spacing; 3],
                (coarse.origin + Vector3::repeat(shift)).into(),
            );
            let up = mask.resample(&fine, Interpolation::Nearest, 0);
            let fine_count = up.data().iter().filter(|&&v| v > 0).count();
            let coarse_count = mask.data().iter().filter(|&&v| v > 0).count();
            assert_eq!(fine_count, coarse_count * (factor as usize).pow(3));
            let back = up.resample(&coarse, Interpolation::Nearest, 0);
            assert_eq!(back.data(), mask.data(), "factor {factor}");
        }
    }

    #[test]
    fn nearest_never_invents_labels() {
        let g = Geometry::axial([12, 13, 9], [4.0; 3], [0.0; 3]);
        let mask = blob_mask(&g);
        let other = Geometry {
            shape: [20, 20, 15],
            spacing: Vector3::new(2.7, 2.9, 2.3),
            origin: Vector3::new(1.0, -2.0, 3.0),
            direction: *Rotation3::from_euler_angles(0.2, 0.1, 0.3).matrix(),
        };
        let out = mask.resample(&other, Interpolation::Nearest, 0);
        assert!(out.data().iter().all(|v| [0, 1, 2].contains(v)));
        assert!(out.data().contains(&1) && out.data().contains(&2));
    }

    #[test]
    fn canonical_reorientation_keeps_every_voxel_in_place() {
        // Voxel axes: i runs towards the feet, j towards the right, k towards anterior.
        let g = Geometry {
            shape: [5, 4, 3],
            spacing: Vector3::new(3.0, 2.0, 1.5),
            origin: Vector3::new(10.0, -20.0, 30.0),
            direction: Matrix3::from_columns(&[-Vector3::z(), -Vector3::x(), -Vector3::y()]),
        };
        let v = Volume::new(g.clone(), (0..g.len() as u32).collect()).unwrap();
        let c = v.to_canonical_lps().unwrap();
        let cg = c.geometry();
        assert_eq!(cg.direction, Matrix3::identity());
        assert_eq!(cg.shape, [4, 3, 5]);
        assert_eq!(cg.spacing, Vector3::new(2.0, 1.5, 3.0));
        for k in 0..3 {
            for j in 0..4 {
                for i in 0..5 {
                    let w = g.index_to_world(Vector3::new(i as f64, j as f64, k as f64));
                    let ci = cg.world_to_index(w).unwrap().map(|x| x.round() as usize);
                    assert!((cg.index_to_world(ci.map(|x| x as f64)) - w).norm() < 1e-9);
                    assert_eq!(c.at(ci[0], ci[1], ci[2]), v.at(i, j, k));
                }
            }
        }
        // Already canonical: unchanged.
        assert_eq!(c.to_canonical_lps().unwrap(), c);
    }

    #[test]
    fn hopelessly_oblique_grids_are_refused() {
        // The i axis runs at 45° between x and y and is the closest voxel axis to both.
        let mut g = Geometry::axial([2, 2, 2], [1.0; 3], [0.0; 3]);
        g.direction = Matrix3::from_columns(&[
            Vector3::new(1.0, 1.0, 0.0).normalize(),
            Vector3::new(0.0, 0.1, 0.995).normalize(),
            Vector3::new(0.6, -0.2, 0.77).normalize(),
        ]);
        g.validate().unwrap();
        let v = Volume::filled(g, 0u8).unwrap();
        assert!(v.to_canonical_lps().is_none());
    }

    #[test]
    fn identity_resample_is_a_copy() {
        let g = oblique();
        let data: Vec<f32> = (0..g.len()).map(|v| (v as f32).sin()).collect();
        let v = Volume::new(g.clone(), data).unwrap();
        let out = v.resample(&g, Interpolation::Linear, f32::NAN);
        for (a, b) in out.data().iter().zip(v.data()) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn within_centres_fills_the_outer_half_voxel() {
        // Source: 4 voxels of 2 mm along x (centres 0, 2, 4, 6 mm), value = x in mm.
        let src = Geometry::axial([4, 1, 1], [2.0, 1.0, 1.0], [0.0; 3]);
        let v = Volume::new(src, vec![0.0f32, 2.0, 4.0, 6.0]).unwrap();
        // Target centres at -0.5, 0.5, ..., 6.5 mm.
        let dst = Geometry::axial([8, 1, 1], [1.0; 3], [-0.5, 0.0, 0.0]);
        let strict = v.resample(&dst, Interpolation::LinearWithinCentres, -1.0);
        let boxes = v.resample(&dst, Interpolation::Linear, -1.0);
        assert_eq!(strict.data(), [-1.0, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, -1.0]);
        assert_eq!(boxes.data(), [0.0, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.0]);
    }

    #[test]
    fn coverage_counts_target_centres_inside_the_voxel_boxes() {
        // Source covers x in [-1, 7] mm; target centres at -0.5 .. 6.5 and beyond.
        let src = Geometry::axial([4, 1, 1], [2.0, 1.0, 1.0], [0.0; 3]);
        let dst = Geometry::axial([10, 1, 1], [1.0; 3], [-0.5, 0.0, 0.0]);
        assert_eq!(src.coverage_of(&dst), 0.8); // centres -0.5 .. 6.5 inside, 7.5 and 8.5 not
        assert_eq!(src.coverage_of(&src), 1.0);
        let far = Geometry::axial([4, 1, 1], [1.0; 3], [100.0, 0.0, 0.0]);
        assert_eq!(src.coverage_of(&far), 0.0);
    }
}
