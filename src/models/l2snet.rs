//! L2SNet: the lesion mask from PET/CT (DESIGN §4), pre- and post-processing around the two
//! networks of `models/l2snet/`.
//!
//! 1. The body box of the PET is laid out as the model grid (`grid`: the card's
//!    `target_spacing_mm`); PET (SUV) and CT (HU) are resampled onto it, clipped and scaled as the
//!    card's `[preprocessing]` says.
//! 2. Every coronal slice of the model-grid PET goes through `loc2d`, as many per call as the
//!    engine asks for (`Session::items_per_call`, as for `seg3d`'s windows); the probabilities
//!    stacked back into a volume are the *location cue*.
//! 3. `seg3d` slides a window of the card's patch size over the 2-channel volume with the
//!    configured overlap; overlapping windows are blended with Gaussian importance weights
//!    (σ = patch/8, as nnU-Net), or uniformly if the card says so.
//!
//!    Both networks run only where the body is (a [`Region`]: model-grid PET above the card's
//!    `body_suv`): a coronal slice or a window without a body voxel is skipped and reads 0.
//!    With the card's `[seg3d] cue_gate`, `seg3d` runs only the windows holding a voxel where the
//!    location cue exceeds the gate: the 2D network finds the places, the 3D network draws them
//!    (`docs/models.md`, the cued windows). A cued voxel still gets every window that holds it,
//!    so its probability is the whole-volume one. `[inference] seg3d_windows = "body"` runs every
//!    body window.
//! 4. Cue and probability go back onto the native PET grid (trilinear), where the adaptive
//!    threshold (paper §3.4) applies: a voxel the cue calls lesion (cue > 0.5) is kept from a
//!    probability of 0.1 up, any other from the card's `raised_threshold` (0.5 as shipped; the
//!    paper's "and vice versa" would be 0.9, `docs/models.md`). With the card's `edge_threshold`
//!    the lowered threshold only decides which lesions exist: a lesion (18-connected component)
//!    that reaches `edge_threshold` somewhere is cut back to its voxels above it, one that does
//!    not keeps its extent (`delineate`).
//! 5. Connected components (18-connectivity) and their statistics, on the native grid.
//!
//! Everything runs in the models' layout (`Volume::to_canonical_lps`): the data vector, i
//! fastest, *is* the `[z][y][x]` array the cards describe.
//! `models/training/pipeline.py` is the reference implementation; `tests/library/pipeline_parity.rs`
//! holds the two side by side.

use std::time::Instant;

use ndarray::{Array4, Array5, ArrayViewD, Ix4, Ix5};
use serde::{Deserialize, Serialize};

use super::card::{CardError, ModelCard, ModelFile};
use super::grid::{GridSpec, ModelGrid, NoBody};
use super::{RunError, Timings, clip_scale};
use crate::config::Seg3dWindows;
use crate::infer::Session;
use crate::volume::{Geometry, Volume};

/// How overlapping sliding-window predictions are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Blending {
    /// Every window voxel weighs the same.
    Uniform,
    /// Weight `g(z)·g(y)·g(x)`, `g(i) = exp(-(i - (p-1)/2)² / 2σ²)`, `σ = p · sigma_fraction`.
    Gaussian { sigma_fraction: f64 },
}

/// Every number the pipeline uses, read from the card (plus the configurable overlap).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub pet_clip_suv: [f32; 2],
    pub ct_clip_hu: [f32; 2],
    /// CT value for PET voxels outside the CT.
    pub ct_outside_hu: f32,
    /// Coronal slices are zero-padded to multiples of this.
    pub pad_multiple: usize,
    /// `seg3d` window, `[z, y, x]`.
    pub patch_zyx: [usize; 3],
    /// Fraction of a window shared with its neighbour, in `[0, 1)`.
    pub overlap: f64,
    /// `seg3d` runs only on windows where the location cue exceeds this somewhere (the card's
    /// `[seg3d] cue_gate`, unless `[inference] seg3d_windows = "body"`); `None`: every body window.
    pub cue_gate: Option<f32>,
    pub blending: Blending,
    /// The cue above which a voxel counts as located by the 2D network.
    pub cue_threshold: f32,
    /// Probability threshold where the cue locates a lesion.
    pub lowered_threshold: f32,
    /// Probability threshold everywhere else.
    pub raised_threshold: f32,
    /// Where a found lesion's edge lies, if the card says ([`delineate`]); `None`: the adaptive
    /// mask as it is.
    pub edge_threshold: Option<f32>,
    /// Where the networks run (the card's `[model_grid]`).
    pub grid: GridSpec,
}

#[derive(Deserialize)]
struct CardPreprocessing {
    pet_clip_suv: [f32; 2],
    ct_clip_hu: [f32; 2],
    ct_outside_hu: f32,
}

#[derive(Deserialize)]
struct CardLoc2d {
    pad_multiple: usize,
}

#[derive(Deserialize)]
struct CardSeg3d {
    patch_zyx: [usize; 3],
    overlap: f64,
    blending: String,
    gaussian_sigma_fraction: Option<f64>,
    cue_gate: Option<f32>,
}

#[derive(Deserialize)]
struct CardPost {
    cue_threshold: f32,
    lowered_threshold: f32,
    raised_threshold: f32,
    edge_threshold: Option<f32>,
}

impl Params {
    /// Reads the card; `overlap` replaces the card's default when given; with
    /// [`Seg3dWindows::Body`] the card's `cue_gate` is dropped (every body window runs).
    pub fn from_card(
        card: &ModelCard,
        overlap: Option<f64>,
        windows: Seg3dWindows,
    ) -> Result<Params, CardError> {
        let pre: CardPreprocessing = card.section("preprocessing")?;
        let loc: CardLoc2d = card.section("loc2d")?;
        let seg: CardSeg3d = card.section("seg3d")?;
        let post: CardPost = card.section("postprocessing")?;
        let grid: GridSpec = card.section("model_grid")?;
        let invalid = |message: String| CardError::Invalid {
            path: card.dir.join(super::card::CARD_FILE),
            message,
        };
        let blending = blending(&seg).map_err(invalid)?;
        let params = Params {
            pet_clip_suv: pre.pet_clip_suv,
            ct_clip_hu: pre.ct_clip_hu,
            ct_outside_hu: pre.ct_outside_hu,
            pad_multiple: loc.pad_multiple,
            patch_zyx: seg.patch_zyx,
            overlap: overlap.unwrap_or(seg.overlap),
            cue_gate: seg.cue_gate.filter(|_| windows == Seg3dWindows::Cued),
            blending,
            cue_threshold: post.cue_threshold,
            lowered_threshold: post.lowered_threshold,
            raised_threshold: post.raised_threshold,
            edge_threshold: post.edge_threshold,
            grid,
        };
        params.check().map_err(invalid)?;
        Ok(params)
    }

    /// Every value in its range: the reason when one is not.
    fn check(&self) -> Result<(), String> {
        self.grid.check()?;
        if !(0.0..1.0).contains(&self.overlap) {
            return Err(format!(
                "sliding-window overlap {} is outside [0, 1)",
                self.overlap
            ));
        }
        if self.pad_multiple == 0 || self.patch_zyx.contains(&0) {
            return Err("pad_multiple and patch_zyx must be positive".into());
        }
        let thresholds = [
            self.cue_threshold,
            self.lowered_threshold,
            self.raised_threshold,
        ];
        if !thresholds.iter().all(|t| (0.0..=1.0).contains(t))
            || self.lowered_threshold > self.raised_threshold
        {
            return Err(format!(
                "[postprocessing] needs thresholds in [0, 1] with lowered_threshold <= \
                 raised_threshold, got cue {}, lowered {}, raised {}",
                self.cue_threshold, self.lowered_threshold, self.raised_threshold
            ));
        }
        if let Some(gate) = self.cue_gate.filter(|g| !(0.0..1.0).contains(g)) {
            return Err(format!("[seg3d] cue_gate {gate} is outside [0, 1)"));
        }
        if let Some(edge) = self.edge_threshold.filter(|e| !(0.0..=1.0).contains(e)) {
            return Err(format!(
                "[postprocessing] edge_threshold {edge} is outside [0, 1]"
            ));
        }
        for [lo, hi] in [self.pet_clip_suv, self.ct_clip_hu] {
            if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
                return Err(format!("clip range [{lo}, {hi}] is empty"));
            }
        }
        Ok(())
    }
}

/// The card's `[seg3d] blending` of overlapping windows.
fn blending(seg: &CardSeg3d) -> Result<Blending, String> {
    match (seg.blending.as_str(), seg.gaussian_sigma_fraction) {
        ("uniform", _) => Ok(Blending::Uniform),
        ("gaussian", Some(f)) if f > 0.0 => Ok(Blending::Gaussian { sigma_fraction: f }),
        ("gaussian", _) => {
            Err("[seg3d] blending \"gaussian\" needs gaussian_sigma_fraction > 0".into())
        }
        (other, _) => Err(format!(
            "[seg3d] blending {other:?} is not \"gaussian\" or \"uniform\""
        )),
    }
}

/// The paper's post-processing (§3.4): 1 where the probability exceeds the lowered threshold
/// inside the location cue, or the raised threshold outside it.
fn adaptive_threshold(probability: &[f32], cue: &[f32], p: &Params) -> Vec<u8> {
    probability
        .iter()
        .zip(cue)
        .map(|(&prob, &c)| {
            let threshold = if c > p.cue_threshold {
                p.lowered_threshold
            } else {
                p.raised_threshold
            };
            u8::from(prob > threshold)
        })
        .collect()
}

/// The lowered threshold finds lesions, `edge` says where they end: every 18-connected component
/// of `mask` holding a voxel whose probability exceeds `edge` is cut back to those voxels; the
/// others (found only through the location cue) keep their extent. The lowered threshold alone
/// draws a lesion's edge where the probability has fallen to 0.1, a shell of up to one model
/// voxel outside the 0.5 edge (`docs/models.md`, the adaptive threshold).
fn delineate(mask: &mut Volume<u8>, probability: &[f32], edge: f32) {
    let (labels, count) = label_components(mask);
    let mut reaches = vec![false; count + 1];
    for (&l, &p) in labels.iter().zip(probability) {
        if l != 0 && p > edge {
            reaches[l as usize] = true;
        }
    }
    let voxels = mask.data_mut().iter_mut().zip(&labels).zip(probability);
    for ((m, &l), &p) in voxels {
        if reaches[l as usize] && p <= edge {
            *m = 0;
        }
    }
}

/// Sliding-window starts along an axis of length `n` for windows of `p`: steps of
/// `⌊p·(1-overlap)⌋` (at least 1) and a last window flush with the end; one window at 0 when the
/// axis is not longer than the window (the volume is zero-padded to `p`).
pub fn window_starts(n: usize, p: usize, overlap: f64) -> Vec<usize> {
    if n <= p {
        return vec![0];
    }
    let step = ((p as f64 * (1.0 - overlap)) as usize).max(1);
    let mut starts: Vec<usize> = (0..=n - p).step_by(step).collect();
    if starts.last() != Some(&(n - p)) {
        starts.push(n - p);
    }
    starts
}

/// Importance weight of every voxel of a `[z, y, x]` window, z slowest.
pub fn window_weights(patch: [usize; 3], blending: Blending) -> Vec<f32> {
    let profile = |p: usize| -> Vec<f32> {
        match blending {
            Blending::Uniform => vec![1.0; p],
            Blending::Gaussian { sigma_fraction } => {
                let sigma = p as f64 * sigma_fraction;
                let centre = (p as f64 - 1.0) / 2.0;
                (0..p)
                    .map(|i| {
                        let d = i as f64 - centre;
                        (-(d * d) / (2.0 * sigma * sigma)).exp() as f32
                    })
                    .collect()
            }
        }
    };
    let [gz, gy, gx] = patch.map(profile);
    let mut w = Vec::with_capacity(patch.iter().product());
    for &a in &gz {
        for &b in &gy {
            for &c in &gx {
                w.push(a * b * c);
            }
        }
    }
    w
}

/// A lesion: one 18-connected component of the mask.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lesion {
    /// 1-based, largest lesion first.
    pub id: usize,
    pub voxels: usize,
    pub volume_ml: f64,
    pub suv_max: f64,
    pub suv_mean: f64,
    /// Total lesion glycolysis of this lesion: SUVmean × volume (ml).
    pub tlg: f64,
    /// Centre of mass of the lesion's voxels, LPS world millimetres.
    pub centroid_mm: [f64; 3],
}

/// The study-level lesion figures of `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LesionSummary {
    pub count: usize,
    /// Metabolic tumour volume: all lesion voxels, ml.
    pub mtv_ml: f64,
    /// Total lesion glycolysis: Σ SUV × voxel volume over lesion voxels (ml).
    pub tlg: f64,
    /// Highest SUV inside any lesion; 0 without lesions.
    pub suv_max: f64,
    pub items: Vec<Lesion>,
}

/// What L2SNet found, on the canonical PET grid.
#[derive(Debug, Clone)]
pub struct Segmentation {
    pub cue: Volume<f32>,
    pub probability: Volume<f32>,
    /// 0/1, adaptive threshold.
    pub mask: Volume<u8>,
    /// The mask's lesions numbered by [`lesion_ids`].
    pub ids: Volume<u32>,
    pub lesions: LesionSummary,
    pub windows: Windows,
}

/// The CT as [`L2sNet::segment`] takes it.
#[derive(Debug)]
pub enum Ct {
    /// HU on the CT's own grid: resampled onto the model grid in `segment`, then dropped.
    Native(Volume<f32>),
    /// HU already on the model grid of the study's PET, made before inference by
    /// [`Params::ct_on_model_grid`] (the daemon's ingest stage does it, so that a study waiting for
    /// inference holds 20 MB of CT instead of 0.4 GiB), with the parameters it was made with.
    OnModelGrid { hu: Volume<f32>, made_with: Params },
}

impl Params {
    /// The `seg3d` windows to run: those holding a body voxel and, with a cue gate, a voxel
    /// where the location cue (`[z][y][x]` on the model grid) exceeds it.
    pub fn seg3d_windows(&self, body: &Region, cue: &[f32]) -> WindowPlan {
        let patch = self.patch_zyx;
        let mut starts = body.windows(patch, self.overlap);
        let in_body = starts.len();
        if let Some(gate) = self.cue_gate {
            let cued = Region::new(cue, gate, body.shape);
            starts.retain(|&start| cued.window(start, patch));
        }
        WindowPlan {
            starts,
            body: in_body,
        }
    }

    /// The CT (HU, any grid) on the model grid over the body of `pet` (SUV, canonical layout),
    /// exactly as `segment` resamples a native CT.
    pub fn ct_on_model_grid(&self, pet: &Volume<f32>, ct: &Volume<f32>) -> Result<Ct, NoBody> {
        let grid = ModelGrid::over_body(pet, &self.grid)?;
        Ok(Ct::OnModelGrid {
            hu: grid.ct(ct, self.ct_outside_hu),
            made_with: self.clone(),
        })
    }
}

/// The loaded model: both networks and the card's parameters.
pub struct L2sNet {
    pub params: Params,
    loc2d: Box<dyn Session>,
    seg3d: Box<dyn Session>,
    loc2d_file: ModelFile,
    seg3d_file: ModelFile,
}

impl L2sNet {
    pub fn new(
        params: Params,
        loc2d: (ModelFile, Box<dyn Session>),
        seg3d: (ModelFile, Box<dyn Session>),
    ) -> L2sNet {
        L2sNet {
            params,
            loc2d_file: loc2d.0,
            loc2d: loc2d.1,
            seg3d_file: seg3d.0,
            seg3d: seg3d.1,
        }
    }

    pub fn sessions(&self) -> [(&ModelFile, &dyn Session); 2] {
        [
            (&self.loc2d_file, self.loc2d.as_ref()),
            (&self.seg3d_file, self.seg3d.as_ref()),
        ]
    }

    /// Runs the whole model. `pet` (SUV) must be in the canonical layout. A native `ct` is
    /// resampled here, then dropped: a clinical CT (0.4 GiB as float32) would otherwise be held
    /// through inference, the largest single thing in memory. A CT made ready on the model grid
    /// with other parameters (the models were reloaded meanwhile) is [`RunError::Stale`].
    pub fn segment(
        &mut self,
        pet: &Volume<f32>,
        ct: Ct,
        timings: &mut Timings,
    ) -> Result<Segmentation, RunError> {
        let t = Instant::now();
        let grid = ModelGrid::over_body(pet, &self.params.grid)
            .map_err(|e| RunError::Input(e.to_string()))?;
        let model = grid.geometry.clone();
        let pet_m = grid.pet(pet);
        let body = Region::new(pet_m.data(), self.params.grid.body_suv, model.shape);
        let pet_n = normalise(pet_m.data(), self.params.pet_clip_suv);
        drop(pet_m);
        let ct_m = match ct {
            Ct::Native(ct) => grid.ct(&ct, self.params.ct_outside_hu),
            Ct::OnModelGrid { hu, made_with } if made_with == self.params => hu,
            Ct::OnModelGrid { .. } => return Err(RunError::Stale),
        };
        debug_assert_eq!(ct_m.geometry(), &model);
        let ct_n = normalise(ct_m.data(), self.params.ct_clip_hu);
        drop(ct_m);
        timings.add("l2snet_preprocess", t);

        let t = Instant::now();
        let cue = self.location_cue(&pet_n, &body)?;
        timings.add("l2snet_loc2d", t);

        let t = Instant::now();
        let plan = self.params.seg3d_windows(&body, &cue);
        let windows = plan.counts();
        tracing::debug!(run = windows.run, body = windows.body, "seg3d windows");
        let probability = self.sliding_window(&pet_n, &ct_n, model.shape, &plan.starts)?;
        drop((pet_n, ct_n));
        timings.add("l2snet_seg3d", t);

        let t = Instant::now();
        let on_model = |v: Vec<f32>| Volume::new(model.clone(), v).expect("model-grid sized");
        let cue = grid.to_native(&on_model(cue));
        let probability = grid.to_native(&on_model(probability));
        let mask = adaptive_threshold(probability.data(), cue.data(), &self.params);
        let mut mask = Volume::new(pet.geometry().clone(), mask).expect("same shape as the PET");
        if let Some(edge) = self.params.edge_threshold {
            delineate(&mut mask, probability.data(), edge);
        }
        let ids = lesion_ids(&mask);
        let lesions = lesion_summary(&ids, pet);
        timings.add("l2snet_postprocess", t);
        Ok(Segmentation {
            cue,
            probability,
            mask,
            ids,
            lesions,
            windows,
        })
    }

    /// Every coronal slice of the normalised PET that holds a body voxel through `loc2d`;
    /// `[z][y][x]` probabilities, 0 on the slices of air.
    pub fn location_cue(&mut self, pet_n: &[f32], body: &Region) -> Result<Vec<f32>, RunError> {
        let [nx, ny, nz] = body.shape;
        let m = self.params.pad_multiple;
        let (zp, xp) = (nz.div_ceil(m) * m, nx.div_ceil(m) * m);
        let mut cue = vec![0f32; pet_n.len()];
        let slices: Vec<usize> = (0..ny).filter(|&j| body.coronal(j)).collect();
        for chunk in slices.chunks(self.loc2d.items_per_call()) {
            let count = chunk.len();
            let mut batch = Array4::<f32>::zeros((count, 1, zp, xp));
            for (b, &j) in chunk.iter().enumerate() {
                for z in 0..nz {
                    let src = &pet_n[(z * ny + j) * nx..][..nx];
                    batch
                        .slice_mut(ndarray::s![b, 0, z, ..nx])
                        .as_slice_mut()
                        .expect("contiguous row")
                        .copy_from_slice(src);
                }
            }
            let out = run_one(self.loc2d.as_mut(), batch.view().into_dyn())?;
            let out = out
                .into_dimensionality::<Ix4>()
                .ok()
                .filter(|o| o.shape() == [count, 1, zp, xp])
                .ok_or_else(|| RunError::Output {
                    model: self.loc2d_file.path.clone(),
                    expected: format!("[{count}, 1, {zp}, {xp}]"),
                })?;
            for (b, &j) in chunk.iter().enumerate() {
                for z in 0..nz {
                    let row = out.slice(ndarray::s![b, 0, z, ..nx]);
                    let dst = &mut cue[(z * ny + j) * nx..][..nx];
                    for (d, s) in dst.iter_mut().zip(row.iter()) {
                        *d = *s;
                    }
                }
            }
        }
        Ok(cue)
    }

    /// `seg3d` over the windows at `starts` (`[z, y, x]`) of a model grid of `shape`
    /// (`[x, y, z]`); blended `[z][y][x]` probabilities, 0 where no window ran. With every
    /// window holding a body voxel, a body voxel gets what the whole-volume pass gives (it lies
    /// only in windows that hold it).
    pub fn sliding_window(
        &mut self,
        pet_n: &[f32],
        ct_n: &[f32],
        shape: [usize; 3],
        starts: &[[usize; 3]],
    ) -> Result<Vec<f32>, RunError> {
        let [nx, ny, nz] = shape;
        let [pz, py, px] = self.params.patch_zyx;
        let weights = window_weights(self.params.patch_zyx, self.params.blending);
        let mut acc = vec![0f32; pet_n.len()];
        let mut wsum = vec![0f32; pet_n.len()];
        for chunk in starts.chunks(self.seg3d.items_per_call()) {
            let mut batch = Array5::<f32>::zeros((chunk.len(), 2, pz, py, px));
            for (b, &[z0, y0, x0]) in chunk.iter().enumerate() {
                let w = px.min(nx - x0);
                for dz in 0..pz.min(nz - z0) {
                    for dy in 0..py.min(ny - y0) {
                        let src = ((z0 + dz) * ny + y0 + dy) * nx + x0;
                        for (c, channel) in [pet_n, ct_n].into_iter().enumerate() {
                            batch
                                .slice_mut(ndarray::s![b, c, dz, dy, ..w])
                                .as_slice_mut()
                                .expect("contiguous row")
                                .copy_from_slice(&channel[src..src + w]);
                        }
                    }
                }
            }
            let out = run_one(self.seg3d.as_mut(), batch.view().into_dyn())?;
            let out = out
                .into_dimensionality::<Ix5>()
                .ok()
                .filter(|o| o.shape() == [chunk.len(), 1, pz, py, px])
                .ok_or_else(|| RunError::Output {
                    model: self.seg3d_file.path.clone(),
                    expected: format!("[{}, 1, {pz}, {py}, {px}]", chunk.len()),
                })?;
            for (b, &[z0, y0, x0]) in chunk.iter().enumerate() {
                let w = px.min(nx - x0);
                let prob = out.slice(ndarray::s![b, 0, .., .., ..]);
                let prob = prob.as_slice().expect("standard layout");
                for dz in 0..pz.min(nz - z0) {
                    for dy in 0..py.min(ny - y0) {
                        let dst = ((z0 + dz) * ny + y0 + dy) * nx + x0;
                        let src = (dz * py + dy) * px;
                        let (p, wt) = (&prob[src..src + w], &weights[src..src + w]);
                        for i in 0..w {
                            acc[dst + i] += wt[i] * p[i];
                            wsum[dst + i] += wt[i];
                        }
                    }
                }
            }
        }
        for (a, &w) in acc.iter_mut().zip(&wsum) {
            *a = if w > 0.0 { *a / w } else { 0.0 };
        }
        Ok(acc)
    }
}

/// The `seg3d` windows [`Params::seg3d_windows`] picked.
pub struct WindowPlan {
    /// `[z, y, x]` starts of the windows to run.
    pub starts: Vec<[usize; 3]>,
    /// How many windows hold a body voxel (all of them run without a cue gate).
    pub body: usize,
}

impl WindowPlan {
    pub fn counts(&self) -> Windows {
        Windows {
            run: self.starts.len(),
            body: self.body,
        }
    }
}

/// How many `seg3d` windows ran on a study, of those holding a body voxel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub run: usize,
    pub body: usize,
}

/// Voxels of a model-grid map above a threshold, asked per coronal slice and per window: the
/// body (PET above the card's `body_suv`), where both networks run, and the cued region
/// (location cue above the card's `cue_gate`), where `seg3d` runs.
pub struct Region {
    voxels: Vec<bool>,
    /// `[x, y, z]`, as `Geometry::shape`.
    shape: [usize; 3],
}

impl Region {
    /// The voxels of `map` (`[z][y][x]`, `shape` `[x, y, z]`) above `threshold`.
    pub fn new(map: &[f32], threshold: f32, shape: [usize; 3]) -> Region {
        Region {
            voxels: map.iter().map(|&v| v > threshold).collect(),
            shape,
        }
    }

    /// Whether coronal slice `j` holds a voxel of the region.
    pub fn coronal(&self, j: usize) -> bool {
        let [nx, ny, nz] = self.shape;
        (0..nz).any(|z| self.voxels[(z * ny + j) * nx..][..nx].contains(&true))
    }

    /// The starts (`[z, y, x]`) of the sliding windows of `patch`, `overlap` apart, that hold a
    /// voxel of the region (of the body: the windows `seg3d` may run on).
    pub fn windows(&self, patch: [usize; 3], overlap: f64) -> Vec<[usize; 3]> {
        let [nx, ny, nz] = self.shape;
        let [pz, py, px] = patch;
        let mut windows = Vec::new();
        for &z in &window_starts(nz.max(pz), pz, overlap) {
            for &y in &window_starts(ny.max(py), py, overlap) {
                for &x in &window_starts(nx.max(px), px, overlap) {
                    if self.window([z, y, x], patch) {
                        windows.push([z, y, x]);
                    }
                }
            }
        }
        windows
    }

    /// Whether the window at `start` (`[z, y, x]`, clipped to the volume) holds a voxel of the
    /// region.
    pub fn window(&self, start: [usize; 3], patch: [usize; 3]) -> bool {
        let [nx, ny, nz] = self.shape;
        let [z0, y0, x0] = start;
        let w = patch[2].min(nx - x0);
        (z0..nz.min(z0 + patch[0])).any(|z| {
            (y0..ny.min(y0 + patch[1]))
                .any(|y| self.voxels[(z * ny + y) * nx + x0..][..w].contains(&true))
        })
    }
}

fn normalise(values: &[f32], range: [f32; 2]) -> Vec<f32> {
    values.iter().map(|&v| clip_scale(v, range)).collect()
}

fn run_one(
    session: &mut dyn Session,
    input: ArrayViewD<'_, f32>,
) -> Result<ndarray::ArrayD<f32>, RunError> {
    let mut outputs = session.run(&[input])?;
    if outputs.is_empty() {
        return Err(RunError::Input("the model returned no output".into()));
    }
    Ok(outputs.swap_remove(0))
}

/// The 18 neighbours of a voxel: offsets in {-1, 0, 1}³ sharing a face or an edge.
const NEIGHBOURS_18: [[isize; 3]; 18] = {
    let mut out = [[0isize; 3]; 18];
    let mut n = 0;
    let mut dz = -1;
    while dz <= 1 {
        let mut dy = -1;
        while dy <= 1 {
            let mut dx = -1;
            while dx <= 1 {
                let nonzero = (dz != 0) as i32 + (dy != 0) as i32 + (dx != 0) as i32;
                if nonzero == 1 || nonzero == 2 {
                    out[n] = [dx, dy, dz];
                    n += 1;
                }
                dx += 1;
            }
            dy += 1;
        }
        dz += 1;
    }
    out
};

/// Labels the 18-connected components of a 0/1 mask: 0 background, 1.. components in the order
/// their first voxel appears (i fastest). Returns the labels and the component count.
pub fn label_components(mask: &Volume<u8>) -> (Vec<u32>, usize) {
    let [nx, ny, nz] = mask.shape();
    let data = mask.data();
    let mut labels = vec![0u32; data.len()];
    let mut count = 0u32;
    let mut stack = Vec::new();
    for start in 0..data.len() {
        if data[start] == 0 || labels[start] != 0 {
            continue;
        }
        count += 1;
        labels[start] = count;
        stack.push(start);
        while let Some(v) = stack.pop() {
            let (i, j, k) = (v % nx, (v / nx) % ny, v / (nx * ny));
            for [di, dj, dk] in NEIGHBOURS_18 {
                let (Some(a), Some(b), Some(c)) = (
                    i.checked_add_signed(di).filter(|&a| a < nx),
                    j.checked_add_signed(dj).filter(|&b| b < ny),
                    k.checked_add_signed(dk).filter(|&c| c < nz),
                ) else {
                    continue;
                };
                let n = a + nx * (b + ny * c);
                if data[n] != 0 && labels[n] == 0 {
                    labels[n] = count;
                    stack.push(n);
                }
            }
        }
    }
    (labels, count as usize)
}

/// The lesions of a 0/1 mask as a label volume on the same grid: 0 background, *n* the voxels
/// of lesion *n* of [`lesion_summary`] (18-connected components, largest first, ties in scan
/// order). The SEG's segments, the overview's outlines and the SR's groups all number lesions
/// by it.
pub fn lesion_ids(mask: &Volume<u8>) -> Volume<u32> {
    let (labels, count) = label_components(mask);
    let mut sizes = vec![0usize; count];
    for &l in labels.iter().filter(|&&l| l != 0) {
        sizes[l as usize - 1] += 1;
    }
    let mut order: Vec<usize> = (0..count).collect();
    // Stable: equal sizes keep the order their first voxel appears in.
    order.sort_by_key(|&c| std::cmp::Reverse(sizes[c]));
    let mut rank = vec![0u32; count];
    for (r, &c) in order.iter().enumerate() {
        rank[c] = r as u32 + 1;
    }
    let ids = labels
        .iter()
        .map(|&l| if l == 0 { 0 } else { rank[l as usize - 1] })
        .collect();
    Volume::new(mask.geometry().clone(), ids).expect("same grid as the mask")
}

/// Per-lesion and study-level figures of lesions ([`lesion_ids`]) over a PET (SUV) on the same
/// grid.
pub fn lesion_summary(ids: &Volume<u32>, pet: &Volume<f32>) -> LesionSummary {
    let geometry: &Geometry = ids.geometry();
    let [nx, ny, _] = geometry.shape;
    let voxel_ml = geometry.voxel_volume_ml();
    let count = ids.data().iter().copied().max().unwrap_or(0) as usize;
    #[derive(Clone, Default)]
    struct Acc {
        voxels: usize,
        suv_sum: f64,
        suv_max: f64,
        index_sum: [f64; 3],
    }
    let mut acc = vec![
        Acc {
            suv_max: f64::NEG_INFINITY,
            ..Acc::default()
        };
        count
    ];
    for (v, (&id, &suv)) in ids.data().iter().zip(pet.data()).enumerate() {
        if id == 0 {
            continue;
        }
        let a = &mut acc[id as usize - 1];
        let suv = f64::from(suv);
        a.voxels += 1;
        a.suv_sum += suv;
        a.suv_max = a.suv_max.max(suv);
        let ijk = [v % nx, (v / nx) % ny, v / (nx * ny)];
        for (s, i) in a.index_sum.iter_mut().zip(ijk) {
            *s += i as f64;
        }
    }
    let items: Vec<Lesion> = acc
        .into_iter()
        .enumerate()
        .map(|(n, a)| {
            let voxels = a.voxels as f64;
            let centre =
                geometry.index_to_world(nalgebra::Vector3::from(a.index_sum.map(|s| s / voxels)));
            Lesion {
                id: n + 1,
                voxels: a.voxels,
                volume_ml: voxels * voxel_ml,
                suv_max: a.suv_max,
                suv_mean: a.suv_sum / voxels,
                tlg: a.suv_sum * voxel_ml,
                centroid_mm: [centre.x, centre.y, centre.z],
            }
        })
        .collect();
    summarise(items)
}

/// Totals from the exact values, then everything rounded for `result.json`.
fn summarise(mut items: Vec<Lesion>) -> LesionSummary {
    // Folded from +0.0: an empty f64 `sum()` is -0.0, which would print as "-0.00".
    let mtv_ml = round(items.iter().fold(0.0, |a, l| a + l.volume_ml), 4);
    let tlg = round(items.iter().fold(0.0, |a, l| a + l.tlg), 4);
    let suv_max = round(items.iter().map(|l| l.suv_max).fold(0.0, f64::max), 4);
    for l in &mut items {
        l.volume_ml = round(l.volume_ml, 4);
        l.suv_max = round(l.suv_max, 4);
        l.suv_mean = round(l.suv_mean, 4);
        l.tlg = round(l.tlg, 4);
        l.centroid_mm = l.centroid_mm.map(|c| round(c, 2));
    }
    LesionSummary {
        count: items.len(),
        mtv_ml,
        tlg,
        suv_max,
        items,
    }
}

/// Dice coefficient of two 0/1 masks on the same grid, 2|A∩B| / (|A| + |B|) (autoPET); 1 when
/// both are empty.
pub fn dice(a: &[u8], b: &[u8]) -> f64 {
    let (mut both, mut total) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        both += usize::from(x != 0 && y != 0);
        total += usize::from(x != 0) + usize::from(y != 0);
    }
    if total == 0 {
        1.0
    } else {
        2.0 * both as f64 / total as f64
    }
}

/// `v` to `digits` decimals: result.json reports ml and SUV to 1e-4, millimetres to 1e-2, which
/// is finer than any voxel and keeps the file readable.
fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            pet_clip_suv: [0.0, 15.0],
            ct_clip_hu: [-1000.0, 1000.0],
            ct_outside_hu: -1000.0,
            pad_multiple: 32,
            patch_zyx: [32, 32, 32],
            overlap: 0.5,
            cue_gate: None,
            blending: Blending::Uniform,
            cue_threshold: 0.5,
            lowered_threshold: 0.1,
            raised_threshold: 0.9,
            edge_threshold: None,
            grid: GridSpec {
                target_spacing_mm: [4.0; 3],
                body_suv: 0.15,
                body_min_area_mm2: 100.0,
                body_margin_mm: 20.0,
            },
        }
    }

    #[test]
    fn adaptive_threshold_lowers_inside_the_cue_and_raises_outside() {
        let params = params();
        let probability = [0.2, 0.05, 0.7, 0.95, 0.7];
        let cue = [0.6, 0.6, 0.4, 0.4, 0.5];
        assert_eq!(
            adaptive_threshold(&probability, &cue, &params),
            vec![1, 0, 0, 1, 0],
            "0.2 kept by the cue; 0.05 too low even there; 0.7 dropped without the cue \
             (and at a cue of exactly 0.5); 0.95 kept without it"
        );
    }

    #[test]
    fn window_starts_cover_the_axis_and_end_flush() {
        assert_eq!(window_starts(20, 32, 0.5), vec![0]);
        assert_eq!(window_starts(32, 32, 0.5), vec![0]);
        assert_eq!(window_starts(64, 32, 0.5), vec![0, 16, 32]);
        assert_eq!(window_starts(70, 32, 0.5), vec![0, 16, 32, 38]);
        assert_eq!(window_starts(40, 32, 0.0), vec![0, 8]);
        assert_eq!(window_starts(34, 32, 0.99), vec![0, 1, 2]);
    }

    #[test]
    fn gaussian_weights_peak_in_the_centre_and_are_symmetric() {
        let w = window_weights(
            [4, 6, 8],
            Blending::Gaussian {
                sigma_fraction: 0.125,
            },
        );
        assert_eq!(w.len(), 4 * 6 * 8);
        let at = |z: usize, y: usize, x: usize| w[(z * 6 + y) * 8 + x];
        // Mirror symmetry on every axis.
        assert_eq!(at(0, 0, 0), at(3, 5, 7));
        assert_eq!(at(1, 2, 3), at(2, 3, 4));
        // The four central voxels share the maximum, below 1 because (p-1)/2 is between voxels.
        let max = w.iter().cloned().fold(0.0, f32::max);
        assert_eq!(at(1, 2, 3), max);
        assert!(at(0, 2, 3) < max && at(1, 0, 3) < max && at(1, 2, 0) < max);
        // σ = p/8 = 1 voxel along x: one voxel further from the centre is exp(-(1.5² - 0.5²)/2).
        let ratio = at(1, 2, 2) / at(1, 2, 3);
        assert!((f64::from(ratio) - (-1.0f64).exp()).abs() < 1e-6, "{ratio}");
        assert!(
            window_weights([2, 2, 2], Blending::Uniform)
                .iter()
                .all(|&v| v == 1.0)
        );
    }

    #[test]
    fn delineate_cuts_lesions_reaching_the_edge_back_and_keeps_the_others() {
        let mut mask = mask_of([6, 1, 1], &[[0, 0, 0], [1, 0, 0], [3, 0, 0], [4, 0, 0]]);
        let probability = [0.3, 0.7, 0.9, 0.2, 0.3, 0.6];
        delineate(&mut mask, &probability, 0.5);
        assert_eq!(
            mask.data(),
            &[0, 1, 0, 1, 1, 0],
            "the first lesion reaches 0.5 and keeps only its voxel above it; the second never \
             does and keeps both; voxels outside the mask stay out whatever their probability"
        );
    }

    fn mask_of(shape: [usize; 3], on: &[[usize; 3]]) -> Volume<u8> {
        let g = Geometry::axial(shape, [2.0, 2.0, 4.0], [-10.0, 0.0, 100.0]);
        let mut data = vec![0u8; shape.iter().product()];
        for &[i, j, k] in on {
            data[i + shape[0] * (j + shape[1] * k)] = 1;
        }
        Volume::new(g, data).unwrap()
    }

    #[test]
    fn components_join_faces_and_edges_but_not_corners() {
        // Face neighbours, edge neighbours, a corner-only neighbour, and an isolated voxel.
        let mask = mask_of(
            [6, 6, 6],
            &[[0, 0, 0], [1, 0, 0], [2, 1, 0], [3, 2, 1], [5, 5, 5]],
        );
        let (labels, count) = label_components(&mask);
        assert_eq!(count, 3, "{labels:?}");
        let at = |i: usize, j: usize, k: usize| labels[i + 6 * (j + 6 * k)];
        assert_eq!(at(0, 0, 0), at(1, 0, 0));
        assert_eq!(at(1, 0, 0), at(2, 1, 0), "edge neighbours are 18-connected");
        assert_ne!(at(2, 1, 0), at(3, 2, 1), "corner neighbours are not");
        assert_ne!(at(5, 5, 5), at(0, 0, 0));
    }

    #[test]
    fn lesion_statistics() {
        let on = [[1, 1, 1], [2, 1, 1], [4, 4, 4]];
        let mask = mask_of([6, 6, 6], &on);
        let mut pet = Volume::filled(mask.geometry().clone(), 1.0f32).unwrap();
        let at = |i: usize, j: usize, k: usize| i + 6 * (j + 6 * k);
        pet.data_mut()[at(1, 1, 1)] = 4.0;
        pet.data_mut()[at(2, 1, 1)] = 6.0;
        pet.data_mut()[at(4, 4, 4)] = 9.0;
        let s = lesion_summary(&lesion_ids(&mask), &pet);
        let ml = 2.0 * 2.0 * 4.0 / 1000.0;
        assert_eq!(s.count, 2);
        assert!((s.mtv_ml - 3.0 * ml).abs() < 1e-12);
        assert!((s.tlg - 19.0 * ml).abs() < 1e-12);
        assert_eq!(s.suv_max, 9.0);
        let big = &s.items[0];
        assert_eq!(
            (big.id, big.voxels, big.suv_max, big.suv_mean),
            (1, 2, 6.0, 5.0)
        );
        // Centre of (1,1,1) and (2,1,1): i = 1.5 → x = -10 + 1.5·2.
        assert_eq!(big.centroid_mm, [-7.0, 2.0, 104.0]);
        assert_eq!(s.items[1].centroid_mm, [-2.0, 8.0, 116.0]);
        let empty = lesion_summary(&lesion_ids(&mask_of([6, 6, 6], &[])), &pet);
        assert_eq!((empty.count, empty.mtv_ml, empty.suv_max), (0, 0.0, 0.0));
    }

    #[test]
    fn body_finds_the_slices_and_windows_that_hold_a_body_voxel() {
        // shape [x, y, z] = [10, 6, 20]; one body voxel at x 7, y 2, z 15
        let [nx, ny, nz] = [10, 6, 20];
        let mut suv = vec![0.0f32; nx * ny * nz];
        suv[(15 * ny + 2) * nx + 7] = 1.0;
        suv[(3 * ny + 4) * nx + 1] = 0.15; // at the threshold: not body
        let body = Region::new(&suv, 0.15, [nx, ny, nz]);
        let slices: Vec<usize> = (0..ny).filter(|&j| body.coronal(j)).collect();
        assert_eq!(slices, [2]);
        let patch = [8, 4, 4];
        assert!(body.window([8, 0, 4], patch));
        assert!(
            body.window([12, 2, 7], patch),
            "clipped at the volume's x end"
        );
        assert!(!body.window([0, 0, 0], patch));
        assert!(!body.window([8, 3, 4], patch), "y 3..6 misses y 2");
        assert!(!body.window([16, 0, 4], patch), "z 16..20 misses z 15");
    }

    #[test]
    fn cued_windows_are_the_body_windows_where_the_cue_exceeds_the_gate() {
        // shape [x, y, z] = [8, 8, 16], patch 8³ at overlap 0.5: windows at z 0..8, 4..12, 8..16
        let [nx, ny, nz] = [8, 8, 16];
        let body = Region::new(&vec![1.0; nx * ny * nz], 0.15, [nx, ny, nz]);
        let mut cue = vec![0.0f32; nx * ny * nz];
        cue[(13 * ny + 3) * nx + 3] = 0.3; // z 13: only in the window at z 8
        cue[(2 * ny + 7) * nx] = 0.3; // z 2, x 0, y 7: only in the window at z 0
        cue[(6 * ny + 3) * nx + 3] = 0.05; // z 6: at the gate, not above it
        let mut params = Params {
            patch_zyx: [8, 8, 8],
            cue_gate: Some(0.05),
            ..params()
        };
        let plan = params.seg3d_windows(&body, &cue);
        assert_eq!((plan.starts, plan.body), (vec![[0, 0, 0], [8, 0, 0]], 3));
        params.cue_gate = None;
        let every = params.seg3d_windows(&body, &cue).starts;
        assert_eq!(every, [[0, 0, 0], [4, 0, 0], [8, 0, 0]]);
    }
}
