//! 2Be3-Net: risk scores (loco-regional recurrence, distant metastasis, overall survival) from
//! the PET volume (DESIGN §4), pre-processing around the networks of `models/two_be_three/`.
//!
//! The PET's body box is laid out as the model grid (`grid`: the card's `target_spacing_mm`); K
//! transverse slices of it, evenly spaced over the body's axial extent (the [WS] variant), SUV
//! clipped and scaled, each centre-cropped (or zero-padded) to `crop × crop` around the body box's
//! centre; the network turns grey into three channels itself. Every number comes from the card. `models/training/pipeline.py` (`risk`) is
//! the reference implementation.
//!
//! The [H&N] variant on the card needs the head-and-neck region (clavicles to skull base) in
//! millimetres; tracerd has no landmark detector to find it in an unlabelled study, so the
//! daemon runs [WS], the variant that sees the whole body (its held-out AUCs are in the card).
//! [`slice_indices`] takes any range so a site that provides the region can run [H&N].

use std::time::Instant;

use ndarray::{Array4, s};
use serde::{Deserialize, Serialize};

use super::card::{CardError, ModelCard, ModelFile};
use super::grid::{GridSpec, ModelGrid};
use super::{RunError, Timings, clip_scale};
use crate::infer::Session;
use crate::volume::Volume;

/// Every number the pipeline uses, read from the card.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub pet_clip_suv: [f32; 2],
    /// Slices per study (66 in the paper).
    pub k: usize,
    /// Side of the square centre crop (90 in the paper).
    pub crop: usize,
    /// Each selected slice is the maximum over its slab ([`slab_half_width`]) rather than one
    /// slice (the card's `slab = "max"`; absent in cards of single-slice models).
    pub slab_max: bool,
    /// Where the network runs (the card's `[model_grid]`).
    pub grid: GridSpec,
    /// The shortest body, head to foot in mm, that [WS] scores (the card's `[slices]
    /// ws_min_body_length_mm`; no minimum in cards without it).
    pub min_body_length_mm: Option<f64>,
}

#[derive(Deserialize)]
struct CardPreprocessing {
    pet_clip_suv: [f32; 2],
    #[serde(rename = "K")]
    k: usize,
    crop: usize,
    #[serde(default)]
    slab: Option<String>,
}

#[derive(Deserialize)]
struct CardSlices {
    #[serde(default)]
    ws_min_body_length_mm: Option<f64>,
}

impl Params {
    pub fn from_card(card: &ModelCard) -> Result<Params, CardError> {
        let pre: CardPreprocessing = card.section("preprocessing")?;
        if pre.k < 2
            || pre.crop == 0
            || pre.slab.as_deref().is_some_and(|s| s != "max")
            || pre.pet_clip_suv[0].partial_cmp(&pre.pet_clip_suv[1])
                != Some(std::cmp::Ordering::Less)
        {
            return Err(CardError::Invalid {
                path: card.dir.join(super::card::CARD_FILE),
                message: "[preprocessing] needs K >= 2, crop > 0, a non-empty clip range and slab \
                          absent or \"max\""
                    .into(),
            });
        }
        let invalid = |message| CardError::Invalid {
            path: card.dir.join(super::card::CARD_FILE),
            message,
        };
        let grid: GridSpec = card.section("model_grid")?;
        grid.check().map_err(invalid)?;
        let slices: CardSlices = card.section("slices")?;
        if slices
            .ws_min_body_length_mm
            .is_some_and(|l| !(l.is_finite() && l >= 0.0))
        {
            return Err(invalid(
                "[slices] ws_min_body_length_mm must be a length in mm".into(),
            ));
        }
        Ok(Params {
            pet_clip_suv: pre.pet_clip_suv,
            k: pre.k,
            crop: pre.crop,
            slab_max: pre.slab.is_some(),
            grid,
            min_body_length_mm: slices.ws_min_body_length_mm,
        })
    }
}

/// The three scores of `result.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    /// Loco-regional recurrence.
    pub lr: f64,
    /// Distant metastasis.
    pub dm: f64,
    /// Overall survival (death event).
    pub os: f64,
}

/// `k` ordered slice indices evenly spaced over the fractional index range `[lo, hi]`:
/// `k_i = ⌊lo + i·(hi - lo)/(k - 1) + ½⌋`, clamped to `[0, nz - 1]`. [WS] uses `[0, nz - 1]`.
pub fn slice_indices(nz: usize, k: usize, [lo, hi]: [f64; 2]) -> Vec<usize> {
    let last = nz.saturating_sub(1) as f64;
    (0..k)
        .map(|i| {
            let v = (lo + (i as f64 * (hi - lo)) / (k - 1) as f64 + 0.5).floor();
            v.clamp(0.0, last) as usize
        })
        .collect()
}

/// Half-width, in slices, of the slab each of `k` slices evenly spaced over `[lo, hi]` stands
/// for: `⌊(hi - lo) / (k - 1) / 2⌋`, so the slabs cover the range with no slice skipped (an
/// adult's body spans about 450 slices of the 4 mm model grid; 66 single slices would see
/// every 7th and miss most lesions). 0 when the range holds fewer than 2k slices.
pub fn slab_half_width(k: usize, [lo, hi]: [f64; 2]) -> usize {
    ((hi - lo) / (k - 1) as f64 / 2.0).floor().max(0.0) as usize
}

/// Source and destination ranges of a centre crop (or zero-pad) of an axis of `n` to `size`.
fn crop_ranges(n: usize, size: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    if n >= size {
        let a = (n - size) / 2;
        (a..a + size, 0..size)
    } else {
        let a = (size - n) / 2;
        (0..n, a..a + n)
    }
}

/// The network input `[1, K, crop, crop]` for a PET (SUV) in the canonical layout.
pub fn input(pet: &Volume<f32>, params: &Params) -> Array4<f32> {
    let [nx, ny, nz] = pet.shape();
    let range = [0.0, (nz - 1) as f64];
    let ks = slice_indices(nz, params.k, range);
    let h = if params.slab_max {
        slab_half_width(params.k, range)
    } else {
        0
    };
    let (src_y, dst_y) = crop_ranges(ny, params.crop);
    let (src_x, dst_x) = crop_ranges(nx, params.crop);
    let mut out = Array4::<f32>::zeros((1, params.k, params.crop, params.crop));
    let data = pet.data();
    let mut slab = vec![f32::NEG_INFINITY; nx];
    for (slot, &k) in ks.iter().enumerate() {
        for (y, dy) in src_y.clone().zip(dst_y.clone()) {
            slab.fill(f32::NEG_INFINITY);
            for z in k.saturating_sub(h)..=(k + h).min(nz - 1) {
                let row = &data[(z * ny + y) * nx..][..nx];
                for (m, &v) in slab.iter_mut().zip(row) {
                    *m = m.max(v);
                }
            }
            let mut dst = out.slice_mut(s![0, slot, dy, dst_x.clone()]);
            for (d, &v) in dst.iter_mut().zip(&slab[src_x.clone()]) {
                *d = clip_scale(v, params.pet_clip_suv);
            }
        }
    }
    out
}

/// Why [WS] does not score `pet` (SUV, canonical), if it does not: a body shorter head to foot
/// than the card's minimum (one region, a limb, a child-sized phantom) is outside the whole-body
/// scans the network learned from, and its scores would mean nothing. A PET with no body is left
/// to [`TwoBeThree::scores`], which says so.
pub fn out_of_scope(pet: &Volume<f32>, params: &Params) -> Option<String> {
    let min = params.min_body_length_mm?;
    let length = ModelGrid::over_body(pet, &params.grid)
        .ok()?
        .body_length_mm();
    (length < min).then(|| {
        format!(
            "the PET shows {length:.0} mm of body head to foot; 2Be3-Net [WS] scores whole-body \
             scans of at least {min:.0} mm (skull base to mid-thigh)"
        )
    })
}

/// The loaded [WS] network and the card's parameters.
pub struct TwoBeThree {
    pub params: Params,
    session: Box<dyn Session>,
    file: ModelFile,
}

impl TwoBeThree {
    pub fn new(params: Params, file: ModelFile, session: Box<dyn Session>) -> TwoBeThree {
        TwoBeThree {
            params,
            session,
            file,
        }
    }

    pub fn session(&self) -> (&ModelFile, &dyn Session) {
        (&self.file, self.session.as_ref())
    }

    /// Why [WS] does not score `pet`, if it does not ([`out_of_scope`]).
    pub fn out_of_scope(&self, pet: &Volume<f32>) -> Option<String> {
        out_of_scope(pet, &self.params)
    }

    /// Scores for a PET (SUV) in the canonical layout.
    pub fn scores(&mut self, pet: &Volume<f32>, timings: &mut Timings) -> Result<Scores, RunError> {
        let t = Instant::now();
        let grid = ModelGrid::over_body(pet, &self.params.grid)
            .map_err(|e| RunError::Input(e.to_string()))?;
        let x = input(&grid.pet(pet), &self.params);
        timings.add("two_be_three_preprocess", t);
        let t = Instant::now();
        let out = self.session.run(&[x.view().into_dyn()])?;
        timings.add("two_be_three", t);
        let risk = out
            .first()
            .filter(|o| o.shape() == [1, 3])
            .ok_or_else(|| RunError::Output {
                model: self.file.path.clone(),
                expected: "[1, 3]".into(),
            })?;
        let v: Vec<f64> = risk.iter().map(|&p| f64::from(p)).collect();
        if v.iter().any(|p| !(0.0..=1.0).contains(p)) {
            return Err(RunError::Input(format!(
                "{} returned scores outside [0, 1]: {v:?}",
                self.file.path
            )));
        }
        Ok(Scores {
            lr: v[0],
            dm: v[1],
            os: v[2],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn slices_are_evenly_spaced_and_ordered() {
        let ks = slice_indices(96, 66, [0.0, 95.0]);
        assert_eq!(ks.len(), 66);
        assert_eq!((ks[0], ks[65]), (0, 95));
        assert!(ks.windows(2).all(|w| w[0] < w[1]));
        // Fewer slices than K repeat, still ordered.
        let few = slice_indices(10, 66, [0.0, 9.0]);
        assert!(few.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!((few[0], few[65]), (0, 9));
        // A region beyond the scan is clamped.
        assert!(slice_indices(10, 5, [-3.0, 20.0]).iter().all(|&k| k <= 9));
    }

    /// Card parameters with the shipped clip range and model grid.
    fn params(k: usize, crop: usize, slab_max: bool) -> Params {
        Params {
            pet_clip_suv: [0.0, 15.0],
            k,
            crop,
            slab_max,
            grid: GridSpec {
                target_spacing_mm: [4.0; 3],
                body_suv: 0.15,
                body_min_area_mm2: 100.0,
                body_margin_mm: 20.0,
            },
            min_body_length_mm: Some(600.0),
        }
    }

    /// A uniform body of SUV 1 filling a 40 × 40 × `nz` grid of 4 mm voxels below air planes.
    fn body_of(nz: usize) -> Volume<f32> {
        let g = Geometry::axial([40, 40, nz + 20], [4.0; 3], [0.0; 3]);
        let plane = 40 * 40;
        let data = (0..(nz + 20) * plane)
            .map(|v| {
                if (10..nz + 10).contains(&(v / plane)) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        Volume::new(g, data).unwrap()
    }

    #[test]
    fn bodies_shorter_than_the_cards_minimum_are_not_scored() {
        let mut p = params(66, 90, true);
        // 140 planes of 4 mm: 560 mm of body, 600 mm with the 20 mm margins: scored.
        assert_eq!(out_of_scope(&body_of(140), &p), None);
        // 130 planes: 520 + 40 = 560 mm, shorter than 600.
        let reason = out_of_scope(&body_of(130), &p).expect("too short");
        assert!(
            reason.contains("560 mm of body") && reason.contains("at least 600 mm"),
            "{reason}"
        );
        // Cards without the minimum score everything, as before.
        p.min_body_length_mm = None;
        assert_eq!(out_of_scope(&body_of(130), &p), None);
        // No body at all is for scores() to report.
        p.min_body_length_mm = Some(600.0);
        assert_eq!(out_of_scope(&body_of(0), &p), None);
    }

    #[test]
    fn centre_crop_and_pad_follow_the_card_rule() {
        assert_eq!(crop_ranges(100, 90), (5..95, 0..90));
        assert_eq!(crop_ranges(101, 90), (5..95, 0..90));
        assert_eq!(crop_ranges(64, 90), (0..64, 13..77));
        assert_eq!(crop_ranges(90, 90), (0..90, 0..90));
    }

    #[test]
    fn input_normalises_and_places_each_slice() {
        // 4×3×2 volume, SUV = (100k + 10j + i) / 8, so the top slice reaches above the clip.
        let g = Geometry::axial([4, 3, 2], [4.0; 3], [0.0; 3]);
        let data = (0..24)
            .map(|v| ((v / 12) * 100 + ((v / 4) % 3) * 10 + v % 4) as f32 / 8.0)
            .collect();
        let pet = Volume::new(g, data).unwrap();
        let p = params(2, 6, false);
        let x = input(&pet, &p);
        assert_eq!(x.shape(), [1, 2, 6, 6]);
        // y (3) is placed at offset 1, x (4) at offset 1; slot 0 is k = 0, slot 1 is k = 1.
        assert_eq!(x[[0, 0, 0, 0]], 0.0); // padding
        assert_eq!(x[[0, 0, 1, 1]], 0.0); // SUV 0
        assert_eq!(x[[0, 0, 2, 3]], 1.5 / 15.0); // j = 1, i = 2
        assert_eq!(x[[0, 1, 1, 1]], 12.5 / 15.0); // k = 1
        assert_eq!(x[[0, 1, 3, 4]], 1.0); // SUV 15.375, clipped
        assert_eq!(x[[0, 1, 5, 5]], 0.0); // padding
    }

    #[test]
    fn each_slice_is_the_maximum_over_its_slab() {
        // 1×1×9 volume with one hot voxel at z = 3; K = 3 slices at z = 0, 4, 8.
        assert_eq!(slab_half_width(3, [0.0, 8.0]), 2);
        assert_eq!(slab_half_width(66, [0.0, 95.0]), 0); // the small phantom: single slices
        assert_eq!(slab_half_width(66, [0.0, 449.0]), 3); // an adult on the 4 mm grid
        let g = Geometry::axial([1, 1, 9], [4.0; 3], [0.0; 3]);
        let mut data = vec![0.0f32; 9];
        data[3] = 7.5;
        let pet = Volume::new(g, data).unwrap();
        let mut p = params(3, 1, true);
        let x = input(&pet, &p);
        assert_eq!(x.iter().copied().collect::<Vec<_>>(), [0.0, 0.5, 0.0]);
        p.slab_max = false;
        assert_eq!(
            input(&pet, &p).iter().sum::<f32>(),
            0.0,
            "single slices miss it"
        );
    }
}
