//! The model grid: where on a study the networks run.
//!
//! A study arrives on its scanner's grid (1.6–5.5 mm in-plane, 1.5–5 mm slices, a field of view
//! much wider than the patient), but each network was trained at one voxel spacing. So, as
//! nnU-Net does:
//!
//! 1. **Body box.** On the native (canonical) PET grid, a plane — an index along one axis —
//!    belongs to the body when its voxels above the card's `body_suv` cover at least
//!    `body_min_area_mm2`. The box runs from the first to the last such plane on each axis,
//!    widened by `body_margin_mm` and clipped to the volume. Stray hot voxels in the air do not
//!    stretch it (a plane needs an area, not a voxel); nothing outside it is ever computed.
//! 2. **Model grid.** Spacing `target_spacing_mm`, `n = max(1, round(box length / spacing))`
//!    voxels per axis, centred on the box, same directions as the native grid.
//! 3. PET and CT are resampled onto it (trilinear; CT between voxel centres, as trained).
//! 4. The networks' cue and probability go back onto the native PET grid (trilinear, 0 outside
//!    the model grid), where they are thresholded and measured, so every reported volume is in
//!    the scanner's own voxels.
//!
//! `models/training/grid.py` is the reference implementation of the same steps.

use std::ops::Range;

use nalgebra::Vector3;
use serde::Deserialize;

use crate::volume::{Geometry, Interpolation, Volume};

/// The card's `[model_grid]`: the spacing the networks were trained at and the body rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSpec {
    /// x, y, z, mm.
    pub target_spacing_mm: [f64; 3],
    /// SUV above which a voxel counts as body.
    pub body_suv: f32,
    /// A plane with less body area than this (mm²) is air.
    pub body_min_area_mm2: f64,
    /// Margin around the body box, mm.
    pub body_margin_mm: f64,
}

impl GridSpec {
    /// Every value finite and positive (the SUV threshold non-negative).
    pub fn check(&self) -> Result<(), String> {
        let ok = self
            .target_spacing_mm
            .iter()
            .all(|s| s.is_finite() && *s > 0.0)
            && self.body_suv.is_finite()
            && self.body_suv >= 0.0
            && self.body_min_area_mm2.is_finite()
            && self.body_min_area_mm2 >= 0.0
            && self.body_margin_mm.is_finite()
            && self.body_margin_mm >= 0.0;
        ok.then_some(())
            .ok_or_else(|| format!("[model_grid] has a non-finite or negative value: {self:?}"))
    }
}

/// The PET shows no body: no plane on some axis has enough voxels above the body SUV.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "no body in the PET: no {axis} plane has {min_area_mm2} mm² above SUV {body_suv} \
     (an empty or non-SUV image?)"
)]
pub struct NoBody {
    pub axis: char,
    pub body_suv: f32,
    pub min_area_mm2: f64,
}

/// The model grid of one study and the way back to its native PET grid.
#[derive(Debug, Clone)]
pub struct ModelGrid {
    /// The native (canonical) PET grid.
    pub native: Geometry,
    /// Native voxel index ranges of the body box.
    pub body: [Range<usize>; 3],
    /// The grid the networks run on.
    pub geometry: Geometry,
}

impl ModelGrid {
    /// Finds the body on `pet` (SUV, canonical) and lays the model grid over it.
    pub fn over_body(pet: &Volume<f32>, spec: &GridSpec) -> Result<ModelGrid, NoBody> {
        let native = pet.geometry().clone();
        let body = body_box(pet, spec)?;
        let mut shape = [0usize; 3];
        let mut centre = Vector3::zeros();
        for a in 0..3 {
            let (sp, t) = (native.spacing[a], spec.target_spacing_mm[a]);
            let length = body[a].len() as f64 * sp;
            shape[a] = ((length / t + 0.5).floor() as usize).max(1);
            let mid = (body[a].start + body[a].end - 1) as f64 / 2.0;
            centre[a] = mid - (shape[a] - 1) as f64 / 2.0 * (t / sp);
        }
        let geometry = Geometry {
            shape,
            spacing: Vector3::from(spec.target_spacing_mm),
            origin: native.index_to_world(centre),
            direction: native.direction,
        };
        Ok(ModelGrid {
            native,
            body,
            geometry,
        })
    }

    /// The PET (SUV) on the model grid: trilinear, edge voxels repeated within half a voxel.
    pub fn pet(&self, pet: &Volume<f32>) -> Volume<f32> {
        pet.resample(&self.geometry, Interpolation::Linear, 0.0)
    }

    /// The CT (HU, any grid) on the model grid: trilinear between voxel centres, `outside_hu`
    /// elsewhere (the card's `ct_resampling`).
    pub fn ct(&self, ct: &Volume<f32>, outside_hu: f32) -> Volume<f32> {
        ct.resample(
            &self.geometry,
            Interpolation::LinearWithinCentres,
            outside_hu,
        )
    }

    /// A map on the model grid (probabilities, cue) back on the native PET grid; 0 outside.
    pub fn to_native(&self, map: &Volume<f32>) -> Volume<f32> {
        map.resample(&self.native, Interpolation::Linear, 0.0)
    }

    /// Head-to-foot length of the body box (its margin included), mm.
    pub fn body_length_mm(&self) -> f64 {
        self.body[2].len() as f64 * self.native.spacing[2]
    }

    /// Share of the native field of view outside the body box.
    pub fn removed_fraction(&self) -> f64 {
        let kept: usize = self.body.iter().map(|r| r.len()).product();
        1.0 - kept as f64 / self.native.len() as f64
    }
}

/// Inclusive-exclusive native index ranges of the body box (module docs, step 1).
fn body_box(pet: &Volume<f32>, spec: &GridSpec) -> Result<[Range<usize>; 3], NoBody> {
    let g = pet.geometry();
    let [nx, ny, nz] = g.shape;
    let mut counts = [vec![0usize; nx], vec![0usize; ny], vec![0usize; nz]];
    for (v, &suv) in pet.data().iter().enumerate() {
        if suv > spec.body_suv {
            counts[0][v % nx] += 1;
            counts[1][(v / nx) % ny] += 1;
            counts[2][v / (nx * ny)] += 1;
        }
    }
    let sp = g.spacing;
    let plane_area = [sp.y * sp.z, sp.x * sp.z, sp.x * sp.y];
    let mut body: [Range<usize>; 3] = [0..0, 0..0, 0..0];
    for a in 0..3 {
        let is_body = |c: &usize| *c as f64 * plane_area[a] >= spec.body_min_area_mm2;
        let (Some(first), Some(last)) = (
            counts[a].iter().position(is_body),
            counts[a].iter().rposition(is_body),
        ) else {
            return Err(NoBody {
                axis: ['x', 'y', 'z'][a],
                body_suv: spec.body_suv,
                min_area_mm2: spec.body_min_area_mm2,
            });
        };
        let margin = (spec.body_margin_mm / sp[a] - 1e-6).ceil() as usize;
        body[a] = first.saturating_sub(margin)..(last + margin + 1).min(g.shape[a]);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GridSpec {
        GridSpec {
            target_spacing_mm: [4.0, 4.0, 4.0],
            body_suv: 0.15,
            body_min_area_mm2: 100.0,
            body_margin_mm: 20.0,
        }
    }

    /// A 2 mm grid with a uniform block of SUV 1 in voxels `lo..hi` on every axis.
    fn block(shape: [usize; 3], lo: [usize; 3], hi: [usize; 3]) -> Volume<f32> {
        let g = Geometry::axial(shape, [2.0, 2.0, 2.0], [-50.0, -40.0, -300.0]);
        let mut v = Volume::filled(g, 0.0f32).unwrap();
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                for i in lo[0]..hi[0] {
                    let idx = v.geometry().linear_index(i, j, k);
                    v.data_mut()[idx] = 1.0;
                }
            }
        }
        v
    }

    #[test]
    fn the_box_holds_the_body_plus_margin_and_ignores_stray_voxels() {
        let mut pet = block([100, 80, 60], [30, 20, 10], [70, 50, 50]);
        // A hot voxel in the air: one voxel is 4 mm², far below 100 mm² of body per plane.
        let far = pet.geometry().linear_index(2, 2, 2);
        pet.data_mut()[far] = 50.0;
        let grid = ModelGrid::over_body(&pet, &spec()).unwrap();
        // 20 mm margin = 10 voxels of 2 mm, clipped at the volume's edge on z.
        assert_eq!(grid.body, [20..80, 10..60, 0..60]);
        // 60 voxels of 2 mm = 120 mm → 30 model voxels of 4 mm, centred on the box.
        assert_eq!(grid.geometry.shape, [30, 25, 30]);
        let box_centre_x = -50.0 + (20.0 + 79.0) / 2.0 * 2.0;
        let model_centre_x = grid.geometry.origin.x + 29.0 / 2.0 * 4.0;
        assert!((box_centre_x - model_centre_x).abs() < 1e-9);
        assert!((grid.removed_fraction() - (1.0 - 60.0 * 50.0 * 60.0 / 480000.0)).abs() < 1e-12);
    }

    #[test]
    fn an_empty_image_has_no_body() {
        let pet = block([10, 10, 10], [0, 0, 0], [0, 0, 0]);
        let err = ModelGrid::over_body(&pet, &spec()).unwrap_err();
        assert_eq!(err.axis, 'x');
        assert!(err.to_string().starts_with("no body in the PET"), "{err}");
    }

    #[test]
    fn maps_go_to_the_model_grid_and_back() {
        let pet = block([100, 80, 60], [30, 20, 10], [70, 50, 50]);
        let grid = ModelGrid::over_body(&pet, &spec()).unwrap();
        let on_model = grid.pet(&pet);
        let back = grid.to_native(&on_model);
        // Inside the block, away from its faces, the value survives the round trip exactly.
        assert_eq!(*back.at(50, 35, 30), 1.0);
        // Outside the body box the way back gives 0.
        assert_eq!(*back.at(5, 35, 30), 0.0);
        // The block's volume is kept (trilinear both ways, threshold 0.5).
        let voxels = back.data().iter().filter(|v| **v > 0.5).count();
        let truth = 40 * 30 * 40;
        assert!(
            (voxels as f64 / truth as f64 - 1.0).abs() < 0.05,
            "{voxels} vs {truth}"
        );
    }
}
