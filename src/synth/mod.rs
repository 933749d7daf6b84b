//! Synthetic whole-body FDG PET/CT studies (`tracerd synth`): the deterministic, seeded phantom
//! generator that is the only data for the demo, the tests, the benchmarks and model training.
//!
//! # How a study is built
//!
//! 1. **Anatomy.** Organs are defined in an adult *body frame* (X towards the patient's left,
//!    Y posterior, T millimetres below the skull vertex) and mapped into LPS world millimetres
//!    by a per-study scale and offset, so the small size is a squat child-sized body and the
//!    clinical size an adult, with the same topology. Every structure is an axis-aligned
//!    ellipsoid or an elliptic *profile* (ellipse parameters interpolated along z), optionally
//!    hollow (a wall) or clipped in y. Shapes are painted in order, later ones overriding earlier
//!    ones, which is how shells (fat over muscle, skull around brain, cortex around marrow) arise.
//!    Painting works one plane at a time by filling row spans, so the cost per voxel is a byte
//!    store per overlapping shape, not a point-in-shape test.
//! 2. **Lesions** are planned from a disease model drawn from the seed, then placed by rejection
//!    sampling against point queries of the same anatomy (fully inside the host tissue, apart
//!    from each other, never inside a hot organ, some deliberately a few mm from one).
//! 3. **PET**: tissue SUVs averaged over 2×2×2 sub-samples per voxel, a smooth multiplicative
//!    texture, lesions blended by their 4×4×4 sub-sampled coverage, Poisson-like noise, a
//!    separable Gaussian PSF, clamp at 0. **CT**: tissue HU on the finer CT grid, lesion HU by
//!    host, Gaussian-like noise, rounded to integer HU. **SEG**: PET voxels whose centre lies in
//!    a lesion (at least the voxel holding the centre).
//! 4. **Outcome labels** are deterministic functions of the lesion list plus a little seeded
//!    label noise; `labels.json` states the rules.
//! 5. **DICOM** ([`dicom`], `--format dicom`): the study as the files a scanner exports, written
//!    with the shared DICOM writing helpers of `io::dicom::write`.
//!
//! # Clinical acquisitions
//!
//! A clinical study first draws its acquisition from a generator of its own ([`ClinicalPlan`],
//! so the small size's draws are untouched): the patient's height, weight (girth and fat layer
//! from the BMI), arms up or down, the axial field of view (vertex or skull base to mid-thigh or
//! feet), a scanner family's PET reconstruction grid, a 512² CT on its own slices, origin and
//! extent, the point-spread FWHM, and the physiology that differs between patients (myocardial
//! uptake on or suppressed, bladder size and uptake). The PET blur is applied per axis, so
//! anisotropic voxels get the same millimetre resolution in every direction.
//!
//! # Determinism
//!
//! Study-level draws come from one `ChaCha8Rng` seeded with the seed, consumed in a fixed order.
//! Per-voxel noise comes from a separate generator per (volume, slice), so rayon may schedule
//! slices in any order; no parallel floating-point reduction exists. Identical options therefore
//! give identical volumes and identical files.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nalgebra::{Matrix3, Quaternion, UnitQuaternion, Vector3};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::fsio;
use crate::io::nifti::{self, NiftiError};
use crate::volume::{Geometry, Volume};

/// Value of `labels.json`'s `"schema"`.
pub const SCHEMA: &str = "tracerd.synth/1";
/// Bumped whenever the same options would produce different data.
pub const GENERATOR_VERSION: u32 = 2;
const NOTE: &str = "synthetic phantom, not patient data";

mod acquisition;
mod anatomy;
pub mod dicom;
mod images;
mod labels;
mod lesions;
mod random;
mod shapes;
#[cfg(test)]
mod tests;

use acquisition::*;
pub use acquisition::{Acquisition, Arms, AxialEnd, AxialStart};
use anatomy::*;
use images::*;
use labels::*;
use lesions::*;
use random::*;
use shapes::*;

// ------------------------------------------------------------------------------------------------
// Public API
// ------------------------------------------------------------------------------------------------

/// How big a study to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// PET 64×64×96 at 4 mm, CT 128×128×96 at 2×2×4 mm; a child-sized body. Tests and demo.
    Small,
    /// An adult drawn per seed (45–150 kg, arms up or down, vertex or skull base to mid-thigh
    /// or feet) on one scanner family's grids: PET 128–440² at 1.65–5.47 mm, slices 1.65–5 mm;
    /// CT 512² at 0.98–1.37 mm, slices 1–5 mm, its own origin and extent. Training, evaluation,
    /// the demo and the benchmarks.
    Clinical,
}

impl Size {
    pub fn as_str(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Clinical => "clinical",
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A study size name that is neither `small` nor `clinical`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown study size {0:?}: expected \"small\" or \"clinical\"")]
pub struct ParseSizeError(pub String);

impl FromStr for Size {
    type Err = ParseSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "small" => Ok(Size::Small),
            "clinical" => Ok(Size::Clinical),
            _ => Err(ParseSizeError(s.to_string())),
        }
    }
}

/// Everything that determines a synthetic study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthOptions {
    pub seed: u64,
    pub size: Size,
}

/// One generated study: images on their own grids, the ground truth and the labels.
#[derive(Debug, Clone)]
pub struct SyntheticStudy {
    /// PET in SUVbw.
    pub pet: Volume<f32>,
    /// CT in integer-valued Hounsfield units, on a finer grid than the PET.
    pub ct: Volume<f32>,
    /// Lesion mask (0/1) on the PET grid.
    pub seg: Volume<u8>,
    pub labels: Labels,
}

/// Contents of `labels.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    /// Always [`SCHEMA`].
    pub schema: String,
    pub generator_version: u32,
    pub seed: u64,
    pub size: Size,
    /// Which disease pattern the lesions follow (`none` for a lesion-free study).
    pub disease_model: DiseaseModel,
    pub pet: GridSummary,
    pub ct: GridSummary,
    /// LPS z range `[low, high]` in mm from the clavicles up to the skull base: the region the
    /// head-and-neck model variant samples slices from.
    pub head_neck_region_mm: [f64; 2],
    pub lesions: Vec<Lesion>,
    pub outcomes: Outcomes,
    /// The rules behind `outcomes`, in words, with thresholds and the label-noise rate.
    pub derivation: Derivation,
    /// Outcome names (`"lr"`, `"dm"`, `"os"`) whose value label noise inverted.
    pub flipped: Vec<String>,
    /// Patient habitus and scanner of a clinical study (absent for the small size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquisition: Option<Acquisition>,
    pub note: String,
}

/// Where a grid sits, as written to `labels.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridSummary {
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub origin_mm: [f64; 3],
}

impl GridSummary {
    fn of(g: &Geometry) -> Self {
        GridSummary {
            shape: g.shape,
            spacing_mm: g.spacing.into(),
            origin_mm: g.origin.into(),
        }
    }
}

/// One ground-truth lesion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lesion {
    /// 1-based; the order lesions were placed in.
    pub id: u32,
    pub site: Site,
    /// Ellipsoid centre, LPS mm.
    pub centre_mm: [f64; 3],
    /// Semi-axes in mm (the ellipsoid is randomly oriented).
    pub radii_mm: [f64; 3],
    /// The uniform true uptake of the lesion, SUVbw, before partial volume, blur and noise.
    pub suv_peak: f64,
    /// Voxels of this lesion in SEG.
    pub voxels: u64,
    /// True ellipsoid volume, ml.
    pub volume_ml: f64,
    /// A hot organ within 10 mm of the lesion surface, if any.
    pub near_hot_organ: Option<HotOrgan>,
}

/// Anatomical site of a lesion; also decides its host tissue and CT appearance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    NeckNode,
    AxillaryNode,
    MediastinalNode,
    AbdominalNode,
    Lung,
    Liver,
    Bone,
}

impl Site {
    /// Head-and-neck sites count towards `lr`; every other site is a distant one (`dm`).
    pub fn is_head_neck(self) -> bool {
        matches!(self, Site::NeckNode)
    }
}

/// Organs with high physiological FDG uptake, which lesions must never lie inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HotOrgan {
    Brain,
    Heart,
    Kidney,
    Bladder,
}

/// The disease pattern a study's lesions were drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiseaseModel {
    None,
    HeadAndNeck,
    Lung,
    Lymphoma,
}

/// Binary outcome labels (0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Loco-regional recurrence.
    pub lr: u8,
    /// Distant metastasis.
    pub dm: u8,
    /// Death event.
    pub os: u8,
}

/// Human-readable outcome rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Derivation {
    pub lr: String,
    pub dm: String,
    pub os: String,
}

/// A study could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    Nifti(#[from] NiftiError),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode labels.json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Builds the study `options` describe. Pure and deterministic; uses rayon for the slices.
pub fn generate(options: &SynthOptions) -> SyntheticStudy {
    build(options).0
}

/// Writes `SUV.nii.gz`, `CT.nii.gz`, `SEG.nii.gz` and `labels.json` into `out_dir`, creating it
/// if needed. Each file is written atomically.
pub fn write_nifti(study: &SyntheticStudy, out_dir: &Path) -> Result<(), SynthError> {
    std::fs::create_dir_all(out_dir).map_err(|source| SynthError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    nifti::write_f32(&out_dir.join("SUV.nii.gz"), &study.pet)?;
    nifti::write_f32(&out_dir.join("CT.nii.gz"), &study.ct)?;
    nifti::write_u8(&out_dir.join("SEG.nii.gz"), &study.seg)?;
    let mut json = serde_json::to_vec_pretty(&study.labels)?;
    json.push(b'\n');
    let path = out_dir.join("labels.json");
    fsio::write_bytes_atomic(&path, &json).map_err(|source| SynthError::Io { path, source })
}

// ------------------------------------------------------------------------------------------------
// Assembly
// ------------------------------------------------------------------------------------------------

/// The study plus the exact lesion geometry (for tests).
fn build(options: &SynthOptions) -> (SyntheticStudy, Vec<PlacedLesion>) {
    build_on(options, None)
}

/// The study `options` describe with its PET rendered on `pet_spacing` (mm, x y z) instead of
/// the scanner grid it drew: same patient, lesions, CT and field of view (the drawn grid's box),
/// only the PET and SEG voxels differ. For checking that results do not depend on the grid.
pub fn generate_with_pet_spacing(options: &SynthOptions, pet_spacing: [f64; 3]) -> SyntheticStudy {
    let drawn = match options.size {
        Size::Small => small_grids().0,
        Size::Clinical => ClinicalPlan::draw(options.seed).pet,
    };
    let mut shape = [0usize; 3];
    let mut origin = [0f64; 3];
    for a in 0..3 {
        let length = drawn.shape[a] as f64 * drawn.spacing[a];
        shape[a] = ((length / pet_spacing[a]).round() as usize).max(1);
        let centre = drawn.origin[a] + (drawn.shape[a] - 1) as f64 * drawn.spacing[a] / 2.0;
        origin[a] = centre - (shape[a] - 1) as f64 * pet_spacing[a] / 2.0;
    }
    build_on(options, Some(Geometry::axial(shape, pet_spacing, origin))).0
}

/// [`build`], with the PET and SEG rendered on `render` when given (the anatomy, the lesions and
/// every draw still follow the drawn grid).
fn build_on(
    options: &SynthOptions,
    render: Option<Geometry>,
) -> (SyntheticStudy, Vec<PlacedLesion>) {
    let seed = options.seed;
    let plan = (options.size == Size::Clinical).then(|| ClinicalPlan::draw(seed));
    let (drawn_g, ct_g) = plan
        .as_ref()
        .map_or_else(small_grids, |p| (p.pet.clone(), p.ct.clone()));
    let pet_g = render.unwrap_or_else(|| drawn_g.clone());
    // One stream for the whole patient, drawn in this order: anatomy, lesions, PET physics, CT.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let anatomy = build_anatomy(&drawn_g, &mut rng, plan.as_ref());
    let (model, lesions) = place_lesions(&mut rng, &anatomy, &drawn_g, options.size);
    let physics = pet_physics(&mut rng, &anatomy, plan.as_ref(), [&drawn_g, &pet_g]);
    let ct_noise = uni(&mut rng, 10.0, 20.0) as f32;

    let pet = make_pet(&anatomy, &lesions, &pet_g, &physics, seed);
    let ct = make_ct(&anatomy, &lesions, &ct_g, ct_noise, seed);
    let mut seg = vec![0u8; pet_g.len()];
    let counts = make_seg(&lesions, &pet_g, &mut seg);
    let lesion_labels = lesion_labels(&lesions, &counts);
    let (outcomes, flipped) = noisy_outcomes(&lesion_labels, seed);
    let labels = Labels {
        schema: SCHEMA.to_string(),
        generator_version: GENERATOR_VERSION,
        seed,
        size: options.size,
        disease_model: model,
        pet: GridSummary::of(&pet_g),
        ct: GridSummary::of(&ct_g),
        head_neck_region_mm: anatomy.head_neck_z.map(|z| round_dp(z, 2)),
        lesions: lesion_labels,
        outcomes,
        derivation: derivation(),
        flipped,
        acquisition: plan.map(|p| p.acquisition),
        note: NOTE.to_string(),
    };
    tracing::debug!(
        seed,
        size = %options.size,
        lesions = labels.lesions.len(),
        "synthetic study generated"
    );
    // The grids are fixed above and every buffer is sized from them, so these cannot fail.
    let volume = |g: &Geometry, d| Volume::new(g.clone(), d).expect("buffer sized from its grid");
    let study = SyntheticStudy {
        pet: volume(&pet_g, pet),
        ct: volume(&ct_g, ct),
        seg: Volume::new(pet_g.clone(), seg).expect("buffer sized from its grid"),
        labels,
    };
    (study, lesions)
}

/// The disease model and its lesions, placed in the anatomy and given their uptake.
fn place_lesions(
    rng: &mut ChaCha8Rng,
    anatomy: &Anatomy,
    pet: &Geometry,
    size: Size,
) -> (DiseaseModel, Vec<PlacedLesion>) {
    let (model, requests) = plan_lesions(rng);
    let placer = Placer {
        anatomy,
        pet,
        dirs: probe_directions(),
        max_radius: match size {
            Size::Small => 15.0,
            Size::Clinical => 25.0,
        },
    };
    let mut lesions: Vec<PlacedLesion> = Vec::new();
    for request in requests {
        if let Some(l) = placer.place(rng, request, &lesions) {
            lesions.push(l);
        }
    }
    if model != DiseaseModel::None && lesions.is_empty() {
        // Every site failed (very unlikely): fall back to a small lesion where one always fits.
        for site in [Site::Liver, Site::Lung, Site::NeckNode] {
            let request = Request {
                site,
                radius: (3.0, 5.0),
                near: None,
            };
            if let Some(l) = placer.place(rng, request, &lesions) {
                lesions.push(l);
                break;
            }
        }
    }
    for l in &mut lesions {
        lesion_values(rng, &anatomy.tables, l);
    }
    (model, lesions)
}

/// Blur, texture and noise of the PET rendered on `[drawn, rendered]` grids: liver SNR after the
/// PSF of 8–15, whatever the blur.
fn pet_physics(
    rng: &mut ChaCha8Rng,
    anatomy: &Anatomy,
    plan: Option<&ClinicalPlan>,
    [drawn_g, pet_g]: [&Geometry; 2],
) -> PetPhysics {
    let fwhm = uni(rng, 6.0, 7.0);
    // The small size on its own grid keeps the isotropic kernel and noise formula it always had
    // (same bytes); everything else blurs per axis.
    let (kernels, blur_sd_factor) = match (plan, pet_g == drawn_g) {
        (None, true) => {
            let kernel = gaussian_kernel(fwhm, pet_g.spacing.x);
            let sd = kernel
                .iter()
                .map(|w| (*w as f64).powi(2))
                .sum::<f64>()
                .powf(1.5);
            ([kernel.clone(), kernel.clone(), kernel], sd)
        }
        (planned, _) => {
            let fwhm = planned.map_or(fwhm, |p| p.acquisition.psf_fwhm_mm);
            let kernels: [Vec<f32>; 3] =
                std::array::from_fn(|a| gaussian_kernel(fwhm, pet_g.spacing[a]));
            let sd = kernels
                .iter()
                .map(|k| k.iter().map(|w| (*w as f64).powi(2)).sum::<f64>().sqrt())
                .product::<f64>();
            (kernels, sd)
        }
    };
    let snr = uni(rng, 8.0, 15.0);
    let liver = anatomy.tables.suv[tissue::LIVER as usize] as f64;
    PetPhysics {
        texture: Texture::new(rng, drawn_g, 20.0),
        texture_amplitude: uni(rng, 0.05, 0.09) as f32,
        noise_k: liver / (snr * blur_sd_factor).powi(2),
        kernels,
    }
}

/// The labels of the placed lesions with their voxel counts on the PET grid.
fn lesion_labels(lesions: &[PlacedLesion], counts: &[u64]) -> Vec<Lesion> {
    lesions
        .iter()
        .zip(counts)
        .enumerate()
        .map(|(n, (l, &voxels))| Lesion {
            id: n as u32 + 1,
            site: l.site,
            centre_mm: l.shape.c.into(),
            radii_mm: l.shape.r.into(),
            suv_peak: l.suv,
            voxels,
            volume_ml: round_dp(l.shape.volume_ml(), 3),
            near_hot_organ: l.near,
        })
        .collect()
}

/// The outcomes the lesions imply, each inverted with probability [`LABEL_FLIP_RATE`] by the
/// seed's label noise; returns them and the names of those inverted.
fn noisy_outcomes(lesions: &[Lesion], seed: u64) -> (Outcomes, Vec<String>) {
    let mut outcomes = derive_outcomes(lesions);
    let mut flipped = Vec::new();
    let mut label_rng = sub_rng(seed, TAG_LABEL_NOISE, 0);
    for (name, value) in [
        ("lr", &mut outcomes.lr),
        ("dm", &mut outcomes.dm),
        ("os", &mut outcomes.os),
    ] {
        if label_rng.random_bool(LABEL_FLIP_RATE) {
            *value = 1 - *value;
            flipped.push(name.to_string());
        }
    }
    (outcomes, flipped)
}
