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
// Outcome rules
// ------------------------------------------------------------------------------------------------

/// `lr` when the neck lesions together exceed this volume…
const LR_NECK_VOLUME_ML: f64 = 6.0;
/// …or any neck lesion is hotter than this.
const LR_NECK_SUV: f64 = 10.0;
/// `os` when total lesion glycolysis (Σ volume_ml × SUV) exceeds this…
const OS_TLG: f64 = 40.0;
/// …or there are at least this many lesions.
const OS_MIN_LESIONS: usize = 4;
/// Probability that label noise inverts each outcome.
const LABEL_FLIP_RATE: f64 = 0.02;

fn derive_outcomes(lesions: &[Lesion]) -> Outcomes {
    let neck = lesions.iter().filter(|l| l.site.is_head_neck());
    let neck_volume: f64 = neck.clone().map(|l| l.volume_ml).sum();
    let neck_suv = neck.clone().map(|l| l.suv_peak).fold(0.0, f64::max);
    let lr = neck.count() > 0 && (neck_volume > LR_NECK_VOLUME_ML || neck_suv > LR_NECK_SUV);
    let dm = lesions.iter().any(|l| !l.site.is_head_neck());
    let tlg: f64 = lesions.iter().map(|l| l.volume_ml * l.suv_peak).sum();
    let os = tlg > OS_TLG || lesions.len() >= OS_MIN_LESIONS;
    Outcomes {
        lr: lr as u8,
        dm: dm as u8,
        os: os as u8,
    }
}

fn derivation() -> Derivation {
    let noise = format!(
        "; then inverted with probability {LABEL_FLIP_RATE} by seeded label noise (see \"flipped\")"
    );
    Derivation {
        lr: format!(
            "1 if there is at least one neck_node lesion and (sum of neck_node volume_ml > \
             {LR_NECK_VOLUME_ML} or max neck_node suv_peak > {LR_NECK_SUV}), else 0{noise}"
        ),
        dm: format!("1 if any lesion has a site other than neck_node, else 0{noise}"),
        os: format!(
            "1 if total lesion glycolysis sum(volume_ml * suv_peak) > {OS_TLG} or the study has \
             at least {OS_MIN_LESIONS} lesions, else 0{noise}"
        ),
    }
}

// ------------------------------------------------------------------------------------------------
// Random numbers
// ------------------------------------------------------------------------------------------------

/// Tags for the per-slice and label-noise generators, so no two streams coincide.
const TAG_PET_NOISE: u64 = 0x5045_545f_4e4f_4953;
const TAG_CT_NOISE: u64 = 0x4354_5f4e_4f49_5345;
const TAG_LABEL_NOISE: u64 = 0x4c41_4245_4c5f_4e53;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator for one (purpose, slice) of one seed, independent of every other.
fn sub_rng(seed: u64, tag: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ splitmix64(tag)));
    rng.set_stream(stream);
    rng
}

/// Uniform in `[lo, hi)`, or `lo` for an empty range (never panics).
fn uni(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

fn log_uni(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    uni(rng, lo.ln(), hi.ln()).exp()
}

/// A factor `1 ± a`.
fn jit(rng: &mut ChaCha8Rng, a: f64) -> f64 {
    1.0 + uni(rng, -a, a)
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

/// Approximately standard normal from one 64-bit draw: the sum of four 16-bit uniforms
/// (Irwin–Hall). Tails stop at ±3.5σ, which is irrelevant for image noise, and it is several
/// times cheaper than an exact sampler on the 78 M CT voxels.
#[inline]
fn fast_normal(bits: u64) -> f32 {
    let s = (bits & 0xffff) + ((bits >> 16) & 0xffff) + ((bits >> 32) & 0xffff) + (bits >> 48);
    (s as f32 - 131_070.0) * (1.0 / 37_837.23)
}

fn random_rotation(rng: &mut ChaCha8Rng) -> Matrix3<f64> {
    let q = Quaternion::new(normal(rng), normal(rng), normal(rng), normal(rng));
    if q.norm() < 1e-9 {
        return Matrix3::identity();
    }
    *UnitQuaternion::from_quaternion(q)
        .to_rotation_matrix()
        .matrix()
}

/// `v` rounded to `decimals` places; dividing by the power of ten (rather than multiplying by
/// a step like 2) yields the double nearest the decimal, so JSON shows `11.74`, not
/// `11.740000000000002`.
fn round_dp(v: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    (v * m).round() / m
}

// ------------------------------------------------------------------------------------------------
// Grids
// ------------------------------------------------------------------------------------------------

/// LPS z of the top PET slice centre; the vertex sits just below it.
const FOV_TOP_Z: f64 = 30.0;

fn centred(n: usize, spacing: f64) -> f64 {
    -(n as f64 - 1.0) * spacing / 2.0
}

/// PET and CT grids of the small size. The CT's origin is offset by a fraction of a voxel in
/// every axis so that nothing downstream can get away with assuming the grids share voxel centres.
/// (A clinical study's grids come from its [`ClinicalPlan`].)
fn small_grids() -> (Geometry, Geometry) {
    let (pet_n, ct_n, ct_xy) = ([64, 64, 96], [128, 128, 96], 2.0);
    let pet_z0 = FOV_TOP_Z - (pet_n[2] as f64 - 1.0) * 4.0;
    let pet = Geometry::axial(
        pet_n,
        [4.0, 4.0, 4.0],
        [centred(pet_n[0], 4.0), centred(pet_n[1], 4.0), pet_z0],
    );
    let ct = Geometry::axial(
        ct_n,
        [ct_xy, ct_xy, 4.0],
        [
            centred(ct_n[0], ct_xy) + 0.9,
            centred(ct_n[1], ct_xy) - 1.1,
            pet_z0 + 2.0,
        ],
    );
    (pet, ct)
}

/// Indices `i` in `0..n` whose centres `x0 + i·dx` lie in `[a, b]`.
fn index_span(a: f64, b: f64, x0: f64, dx: f64, n: usize) -> Option<Range<usize>> {
    // Written so that a NaN bound also yields `None`.
    if a.is_nan() || b.is_nan() || b < a || n == 0 {
        return None;
    }
    let lo = ((a - x0) / dx).ceil();
    let hi = ((b - x0) / dx).floor();
    if hi < 0.0 || lo > (n - 1) as f64 || lo > hi {
        return None;
    }
    let lo = lo.max(0.0) as usize;
    let hi = (hi as usize).min(n - 1);
    Some(lo..hi + 1)
}

/// A plane of sample points: `nx × ny` centres at `(x0 + i·dx, y0 + j·dy)`.
struct Plane {
    x0: f64,
    y0: f64,
    dx: f64,
    dy: f64,
    nx: usize,
    ny: usize,
}

impl Plane {
    fn of(g: &Geometry, subdivide: usize) -> Plane {
        let d = subdivide as f64;
        Plane {
            x0: g.origin.x - g.spacing.x / 2.0 + g.spacing.x / (2.0 * d),
            y0: g.origin.y - g.spacing.y / 2.0 + g.spacing.y / (2.0 * d),
            dx: g.spacing.x / d,
            dy: g.spacing.y / d,
            nx: g.shape[0] * subdivide,
            ny: g.shape[1] * subdivide,
        }
    }

    fn fill(&self, row: &mut [u8], a: f64, b: f64, tissue: u8) {
        if let Some(r) = index_span(a, b, self.x0, self.dx, self.nx) {
            row[r].fill(tissue);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Clinical acquisitions
// ------------------------------------------------------------------------------------------------

/// Seed tag of the acquisition draws (patient habitus, scanner, protocol), kept apart from the
/// anatomy's generator so that the small size's draws are untouched by them.
const TAG_ACQUISITION: u64 = 0x4143_515f_4745_4f4d;

/// One PET reconstruction a scanner family offers: matrix, in-plane pixel and the slice
/// spacings it is used with.
struct Reconstruction {
    matrix: usize,
    pixel_mm: f64,
    slices_mm: &'static [f64],
}

/// Scanner families and the PET grids they write (vendor data sheets and public studies).
const SCANNERS: [(&str, &[Reconstruction]); 5] = [
    (
        "siemens-biograph-mct",
        &[
            Reconstruction {
                matrix: 200,
                pixel_mm: 4.0728,
                slices_mm: &[2.027, 3.0, 5.0],
            },
            Reconstruction {
                matrix: 400,
                pixel_mm: 2.0364,
                slices_mm: &[2.027, 3.0],
            },
        ],
    ),
    (
        "siemens-biograph-vision",
        &[
            Reconstruction {
                matrix: 440,
                pixel_mm: 1.65,
                slices_mm: &[1.65, 2.0],
            },
            Reconstruction {
                matrix: 220,
                pixel_mm: 3.3,
                slices_mm: &[3.0],
            },
        ],
    ),
    (
        "ge-discovery",
        &[
            Reconstruction {
                matrix: 128,
                pixel_mm: 5.47,
                slices_mm: &[3.27],
            },
            Reconstruction {
                matrix: 192,
                pixel_mm: 3.646,
                slices_mm: &[3.27, 2.79],
            },
            Reconstruction {
                matrix: 256,
                pixel_mm: 2.734,
                slices_mm: &[2.79, 3.27],
            },
        ],
    ),
    (
        "philips-vereos",
        &[
            Reconstruction {
                matrix: 144,
                pixel_mm: 4.0,
                slices_mm: &[4.0],
            },
            Reconstruction {
                matrix: 288,
                pixel_mm: 2.0,
                slices_mm: &[2.0],
            },
        ],
    ),
    (
        "canon-cartesion",
        &[Reconstruction {
            matrix: 336,
            pixel_mm: 2.04,
            slices_mm: &[2.0, 4.0],
        }],
    ),
];

/// CT slice spacings of the attenuation / low-dose CT of a PET/CT (thin ones are rarer).
const CT_SLICES_MM: [f64; 9] = [1.0, 2.0, 2.5, 3.0, 3.0, 3.75, 3.75, 5.0, 5.0];

/// How one clinical study was acquired: the patient's habitus, the scanner and its grids, as
/// written to `labels.json` (`acquisition`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acquisition {
    /// Scanner family whose PET grid the study is written on.
    pub scanner: String,
    pub weight_kg: f64,
    pub height_m: f64,
    pub arms: Arms,
    /// Where the axial field of view starts and ends.
    pub from: AxialStart,
    pub to: AxialEnd,
    /// Reconstructed PET resolution (Gaussian point-spread FWHM), mm.
    pub psf_fwhm_mm: f64,
    /// Myocardial uptake suppressed (fasting, diet) or physiological.
    pub myocardium_suppressed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arms {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AxialStart {
    Vertex,
    SkullBase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AxialEnd {
    MidThigh,
    Feet,
}

/// Everything a clinical study draws before its anatomy: the body's size and placement, the
/// scanner's grids and the physiology that varies between patients.
#[derive(Debug, Clone)]
struct ClinicalPlan {
    acquisition: Acquisition,
    pet: Geometry,
    ct: Geometry,
    body: Body,
    /// Body-frame depth (mm below the vertex) where the legs end: mid-thigh or the soles.
    legs_to: f64,
    bladder_scale: f64,
    bladder_suv: f64,
    myocardium_suv: f64,
}

/// Scale and placement of the body frame, and the outline's girth and fat layer.
#[derive(Debug, Clone)]
struct Body {
    sxy: f64,
    sy: f64,
    sz: f64,
    /// FOV top minus the vertex, mm (negative: the vertex lies above the field of view).
    margin: f64,
    ox: f64,
    oy: f64,
    girth: f64,
    fat: f64,
}

impl Body {
    /// The small size's child-sized body; the draw order is that of every earlier version.
    fn small(rng: &mut ChaCha8Rng) -> Body {
        let sxy = 0.45 * jit(rng, 0.04);
        let sz = 0.31 * jit(rng, 0.03);
        let margin = uni(rng, 8.0, 14.0);
        let ox = uni(rng, -5.0, 5.0) * sxy;
        let oy = uni(rng, -5.0, 5.0) * sxy;
        let sy = sxy * jit(rng, 0.03);
        let girth = uni(rng, 0.93, 1.08);
        let fat = 3.0 + 5.0 * ((girth - 0.93) / 0.15 * 0.7 + uni(rng, 0.0, 0.3));
        Body {
            sxy,
            sy,
            sz,
            margin,
            ox,
            oy,
            girth,
            fat,
        }
    }
}

/// Body-frame depth of the vertex-to-sole length of the reference adult (1.75 m).
const SOLE_T: f64 = 1720.0;

impl ClinicalPlan {
    /// Draws a patient and a scanner protocol: weight 45–150 kg, height 1.50–1.95 m, arms up or
    /// down, vertex or skull base to mid-thigh or feet, one of [`SCANNERS`]' PET grids, a 512²
    /// CT of 500–700 mm with its own slices, origin and extent.
    fn draw(seed: u64) -> ClinicalPlan {
        let rng = &mut sub_rng(seed, TAG_ACQUISITION, 0);
        let height_m = (1.72 + 0.09 * normal(rng)).clamp(1.50, 1.95);
        let bmi = log_uni(rng, 17.0, 45.0);
        let weight_kg = (bmi * height_m * height_m).clamp(45.0, 150.0);
        let bmi = weight_kg / (height_m * height_m);
        let sxy = (height_m / 1.75).sqrt() * jit(rng, 0.04);
        let sz = 0.98 * height_m / 1.75;
        let girth = (bmi / 24.0).sqrt().clamp(0.85, 1.4) * jit(rng, 0.03);
        let fat = (8.0 + 110.0 * (girth - 0.88)).clamp(6.0, 65.0) * jit(rng, 0.15);
        let arms = if rng.random_bool(0.7) {
            Arms::Up
        } else {
            Arms::Down
        };
        let from = if rng.random_bool(0.7) {
            AxialStart::Vertex
        } else {
            AxialStart::SkullBase
        };
        let to = if rng.random_bool(0.8) {
            AxialEnd::MidThigh
        } else {
            AxialEnd::Feet
        };
        let margin = match from {
            AxialStart::Vertex => uni(rng, 10.0, 40.0),
            AxialStart::SkullBase => -sz * uni(rng, 150.0, 190.0),
        };
        let legs_to = match to {
            AxialEnd::MidThigh => uni(rng, 960.0, 1100.0),
            AxialEnd::Feet => SOLE_T + uni(rng, 5.0, 30.0),
        };
        let (family, recons) = SCANNERS[rng.random_range(0..SCANNERS.len())];
        let recon = &recons[rng.random_range(0..recons.len())];
        let slice = pick(rng, recon.slices_mm);
        let extent = margin + sz * legs_to;
        let nz = (extent / slice).ceil() as usize + 1;
        let n = recon.matrix;
        let pet_z0 = FOV_TOP_Z - (nz as f64 - 1.0) * slice;
        let pet = Geometry::axial(
            [n, n, nz],
            [recon.pixel_mm, recon.pixel_mm, slice],
            [
                centred(n, recon.pixel_mm),
                centred(n, recon.pixel_mm),
                pet_z0,
            ],
        );
        let ct_xy = uni(rng, 500.0, 700.0) / 512.0;
        let ct_slice = pick(rng, &CT_SLICES_MM);
        let (below, above) = (uni(rng, 0.0, 15.0), uni(rng, 0.0, 15.0));
        let pet_length = (nz - 1) as f64 * slice;
        let ct_nz = ((pet_length + below + above) / ct_slice).ceil() as usize + 1;
        let ct = Geometry::axial(
            [512, 512, ct_nz],
            [ct_xy, ct_xy, ct_slice],
            [
                centred(512, ct_xy) + uni(rng, -0.5, 0.5) * ct_xy,
                centred(512, ct_xy) + uni(rng, -0.5, 0.5) * ct_xy,
                pet_z0 - below,
            ],
        );
        let myocardium_suppressed = rng.random_bool(0.35);
        let myocardium_suv = if myocardium_suppressed {
            uni(rng, 1.5, 2.5)
        } else {
            log_uni(rng, 3.0, 12.0)
        };
        let body = Body {
            sxy,
            sy: sxy * jit(rng, 0.03),
            sz,
            margin,
            ox: uni(rng, -30.0, 30.0),
            oy: uni(rng, -20.0, 40.0),
            girth,
            fat,
        };
        ClinicalPlan {
            acquisition: Acquisition {
                scanner: family.to_string(),
                weight_kg: round_dp(weight_kg, 1),
                height_m: round_dp(height_m, 2),
                arms,
                from,
                to,
                psf_fwhm_mm: round_dp(uni(rng, 5.0, 7.5), 2),
                myocardium_suppressed,
            },
            pet,
            ct,
            body,
            legs_to,
            bladder_scale: uni(rng, 0.55, 1.7),
            bladder_suv: log_uni(rng, 5.0, 60.0),
            myocardium_suv,
        }
    }
}

/// Body-frame knots `[T, X, Y, rX, rY]` of one arm (`side` ±1), outside the outline of a torso
/// of `girth`: beside the head when raised, beside the trunk when down.
fn arm(side: f64, arms: Arms, girth: f64) -> Vec<[f64; 5]> {
    let g = girth.powf(0.8);
    match arms {
        Arms::Up => {
            let x = 75.0 + 25.0 + 40.0 * g;
            vec![
                [-320.0, x * side, 10.0, 30.0 * g, 32.0 * g],
                [-120.0, x * side, 5.0, 36.0 * g, 38.0 * g],
                [120.0, (x + 10.0) * side, 5.0, 42.0 * g, 44.0 * g],
                [270.0, (140.0 * girth) * side, 5.0, 46.0 * g, 48.0 * g],
            ]
        }
        Arms::Down => {
            let x = 190.0 * girth + 18.0 + 44.0 * g;
            vec![
                [285.0, (x - 25.0) * side, 5.0, 44.0 * g, 46.0 * g],
                [330.0, x * side, 5.0, 44.0 * g, 46.0 * g],
                [580.0, x * side, 8.0, 36.0 * g, 38.0 * g],
                [820.0, (x - 5.0) * side, -5.0, 28.0 * g, 26.0 * g],
                [930.0, (x - 8.0) * side, -10.0, 22.0, 34.0],
            ]
        }
    }
}

/// Body-frame knots of one leg from the hip to the sole (the thigh of the small size continued).
fn leg(side: f64) -> Vec<[f64; 5]> {
    let mut knots = thigh(side).to_vec();
    knots.extend([
        [1330.0, 90.0 * side, 5.0, 52.0, 56.0],
        [1450.0, 88.0 * side, 10.0, 48.0, 52.0],
        [1660.0, 85.0 * side, 5.0, 28.0, 30.0],
        [SOLE_T, 85.0 * side, -25.0, 32.0, 55.0],
    ]);
    knots
}

// ------------------------------------------------------------------------------------------------
// Shapes
// ------------------------------------------------------------------------------------------------

/// Tissue labels of the phantom; index into [`Tables`].
mod tissue {
    pub const AIR: u8 = 0;
    pub const FAT: u8 = 1;
    pub const SOFT: u8 = 2;
    pub const BRAIN: u8 = 3;
    pub const SKULL: u8 = 4;
    pub const SALIVARY: u8 = 5;
    pub const TONSIL: u8 = 6;
    pub const LUNG: u8 = 7;
    pub const MYOCARDIUM: u8 = 8;
    pub const BLOOD: u8 = 9;
    pub const LIVER: u8 = 10;
    pub const SPLEEN: u8 = 11;
    pub const KIDNEY: u8 = 12;
    pub const BLADDER: u8 = 13;
    pub const CORTEX: u8 = 14;
    pub const MARROW: u8 = 15;
    pub const AIRWAY: u8 = 16;
    /// First of `MAX_BOWEL` labels, one per bowel segment, so each has its own uptake.
    pub const BOWEL: u8 = 17;
    pub const MAX_BOWEL: u8 = 6;
    pub const COUNT: usize = (BOWEL + MAX_BOWEL) as usize;
}

/// An ellipse in an axial plane.
#[derive(Debug, Clone, Copy)]
struct Section {
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
}

impl Section {
    fn lerp(a: &Section, b: &Section, t: f64) -> Section {
        let l = |p: f64, q: f64| p + (q - p) * t;
        Section {
            cx: l(a.cx, b.cx),
            cy: l(a.cy, b.cy),
            rx: l(a.rx, b.rx),
            ry: l(a.ry, b.ry),
        }
    }
}

#[derive(Debug, Clone)]
enum Form {
    Ellipsoid {
        c: Vector3<f64>,
        r: Vector3<f64>,
    },
    /// Sections at increasing z, linearly interpolated in between.
    Profile(Vec<(f64, Section)>),
}

#[derive(Debug, Clone)]
struct Shape {
    tissue: u8,
    form: Form,
    /// Hollow: only a wall this thick (mm, in-plane) inside the outline.
    wall: Option<f64>,
    /// Only the part with `y` in this range.
    y_clip: (f64, f64),
    z_lo: f64,
    z_hi: f64,
}

impl Shape {
    fn ellipsoid(tissue: u8, c: Vector3<f64>, r: Vector3<f64>) -> Shape {
        let r = r.map(|v| v.max(0.1));
        Shape {
            tissue,
            z_lo: c.z - r.z,
            z_hi: c.z + r.z,
            form: Form::Ellipsoid { c, r },
            wall: None,
            y_clip: (f64::NEG_INFINITY, f64::INFINITY),
        }
    }

    fn profile(tissue: u8, mut knots: Vec<(f64, Section)>) -> Shape {
        knots.sort_by(|a, b| a.0.total_cmp(&b.0));
        let z_lo = knots.first().map_or(0.0, |k| k.0);
        let z_hi = knots.last().map_or(-1.0, |k| k.0);
        Shape {
            tissue,
            form: Form::Profile(knots),
            wall: None,
            y_clip: (f64::NEG_INFINITY, f64::INFINITY),
            z_lo,
            z_hi,
        }
    }

    fn with_wall(mut self, wall: f64) -> Shape {
        self.wall = Some(wall);
        self
    }

    fn with_y_clip(mut self, lo: f64, hi: f64) -> Shape {
        self.y_clip = (lo, hi);
        self
    }

    fn section(&self, z: f64) -> Option<Section> {
        if z.is_nan() || z < self.z_lo || z > self.z_hi {
            return None;
        }
        let s = match &self.form {
            Form::Ellipsoid { c, r } => {
                let t = (z - c.z) / r.z;
                let s2 = 1.0 - t * t;
                if s2 <= 0.0 {
                    return None;
                }
                let s = s2.sqrt();
                Section {
                    cx: c.x,
                    cy: c.y,
                    rx: r.x * s,
                    ry: r.y * s,
                }
            }
            Form::Profile(knots) => {
                let idx = knots.partition_point(|(kz, _)| *kz <= z);
                match (knots.get(idx.wrapping_sub(1)), knots.get(idx)) {
                    (Some((z0, a)), Some((z1, b))) => {
                        let t = if z1 > z0 { (z - z0) / (z1 - z0) } else { 0.0 };
                        Section::lerp(a, b, t)
                    }
                    (Some((_, a)), None) => *a,
                    _ => return None,
                }
            }
        };
        (s.rx > 0.0 && s.ry > 0.0).then_some(s)
    }

    fn inner(&self, s: &Section) -> Option<(f64, f64)> {
        match self.wall {
            Some(w) if s.rx > w && s.ry > w => Some((s.rx - w, s.ry - w)),
            _ => None,
        }
    }

    fn contains(&self, p: &Vector3<f64>) -> bool {
        if p.y < self.y_clip.0 || p.y > self.y_clip.1 {
            return false;
        }
        let Some(s) = self.section(p.z) else {
            return false;
        };
        let (dx, dy) = ((p.x - s.cx) / s.rx, (p.y - s.cy) / s.ry);
        if dx * dx + dy * dy > 1.0 {
            return false;
        }
        match self.inner(&s) {
            Some((irx, iry)) => {
                let (ix, iy) = ((p.x - s.cx) / irx, (p.y - s.cy) / iry);
                ix * ix + iy * iy >= 1.0
            }
            None => true,
        }
    }

    /// Paints this shape's cross-section at `z` into `out` (row-major `plane`) by row spans.
    fn paint(&self, z: f64, plane: &Plane, out: &mut [u8]) {
        let Some(s) = self.section(z) else {
            return;
        };
        let y_lo = (s.cy - s.ry).max(self.y_clip.0);
        let y_hi = (s.cy + s.ry).min(self.y_clip.1);
        let Some(rows) = index_span(y_lo, y_hi, plane.y0, plane.dy, plane.ny) else {
            return;
        };
        let inner = self.inner(&s);
        for j in rows {
            let y = plane.y0 + j as f64 * plane.dy;
            let t = (y - s.cy) / s.ry;
            let half = s.rx * (1.0 - t * t).max(0.0).sqrt();
            let row = &mut out[j * plane.nx..(j + 1) * plane.nx];
            let inner_half = inner.and_then(|(irx, iry)| {
                let t = (y - s.cy) / iry;
                (t * t < 1.0).then(|| irx * (1.0 - t * t).sqrt())
            });
            match inner_half {
                None => plane.fill(row, s.cx - half, s.cx + half, self.tissue),
                Some(ih) => {
                    plane.fill(row, s.cx - half, s.cx - ih, self.tissue);
                    plane.fill(row, s.cx + ih, s.cx + half, self.tissue);
                }
            }
        }
    }

    fn bbox(&self) -> (Vector3<f64>, Vector3<f64>) {
        match &self.form {
            Form::Ellipsoid { c, r } => (c - r, c + r),
            Form::Profile(knots) => {
                let mut lo = Vector3::repeat(f64::INFINITY);
                let mut hi = Vector3::repeat(f64::NEG_INFINITY);
                for (z, s) in knots {
                    lo = lo.inf(&Vector3::new(s.cx - s.rx, s.cy - s.ry, *z));
                    hi = hi.sup(&Vector3::new(s.cx + s.rx, s.cy + s.ry, *z));
                }
                (lo, hi)
            }
        }
    }
}

/// An arbitrarily oriented ellipsoid (lesions).
#[derive(Debug, Clone)]
struct Ellipsoid {
    c: Vector3<f64>,
    r: Vector3<f64>,
    /// Columns are the semi-axis directions.
    rot: Matrix3<f64>,
}

impl Ellipsoid {
    /// Σ (local_i / r_i)²: ≤ 1 inside.
    #[inline]
    fn level(&self, p: &Vector3<f64>) -> f64 {
        let d = self.rot.tr_mul(&(p - self.c));
        (d.x / self.r.x).powi(2) + (d.y / self.r.y).powi(2) + (d.z / self.r.z).powi(2)
    }

    fn max_radius(&self) -> f64 {
        self.r.max()
    }

    /// Half extent of the axis-aligned bounding box.
    fn half_extent(&self) -> Vector3<f64> {
        Vector3::from_fn(|a, _| {
            (0..3)
                .map(|i| (self.rot[(a, i)] * self.r[i]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
    }

    /// Point on the ellipsoid grown by `inflate` mm (per semi-axis), in local direction `u`.
    fn point(&self, u: &Vector3<f64>, scale: f64, inflate: f64) -> Vector3<f64> {
        let local = (self.r * scale).add_scalar(inflate).component_mul(u);
        self.c + self.rot * local
    }

    /// Extent of the ellipsoid along the world unit vector `n`.
    fn support(&self, n: &Vector3<f64>) -> f64 {
        let l = self.rot.tr_mul(n);
        l.component_mul(&self.r).norm()
    }

    fn volume_ml(&self) -> f64 {
        4.0 / 3.0 * std::f64::consts::PI * self.r.x * self.r.y * self.r.z / 1000.0
    }
}

/// Index range of grid `g` along axis `a` covering `[lo, hi]` world mm (identity direction).
fn axis_range(g: &Geometry, a: usize, lo: f64, hi: f64) -> Option<Range<usize>> {
    index_span(lo, hi, g.origin[a], g.spacing[a], g.shape[a])
}

// ------------------------------------------------------------------------------------------------
// Anatomy
// ------------------------------------------------------------------------------------------------

/// Body frame → LPS world: X left, Y posterior, T mm below the vertex (adult proportions).
#[derive(Debug, Clone)]
struct Frame {
    ox: f64,
    oy: f64,
    zv: f64,
    sx: f64,
    sy: f64,
    sz: f64,
}

impl Frame {
    fn p(&self, x: f64, y: f64, t: f64) -> Vector3<f64> {
        Vector3::new(self.ox + self.sx * x, self.oy + self.sy * y, self.z(t))
    }
    fn r(&self, rx: f64, ry: f64, rt: f64) -> Vector3<f64> {
        Vector3::new(self.sx * rx, self.sy * ry, self.sz * rt)
    }
    fn z(&self, t: f64) -> f64 {
        self.zv - self.sz * t
    }
    fn y(&self, y: f64) -> f64 {
        self.oy + self.sy * y
    }
    /// Scale for thicknesses (walls, cortices).
    fn iso(&self) -> f64 {
        (self.sx * self.sy * self.sz).cbrt()
    }
    /// Body-frame knots `[T, X, Y, rX, rY]` → a world profile, radii scaled by `girth` and
    /// shrunk by `inset` mm.
    fn knots(&self, knots: &[[f64; 5]], girth: f64, inset: f64) -> Vec<(f64, Section)> {
        knots
            .iter()
            .map(|&[t, x, y, rx, ry]| {
                (
                    self.z(t),
                    Section {
                        cx: self.ox + self.sx * x,
                        cy: self.y(y),
                        rx: (self.sx * rx * girth - inset).max(0.5),
                        ry: (self.sy * ry * girth - inset).max(0.5),
                    },
                )
            })
            .collect()
    }
}

const NECK: [[f64; 5]; 3] = [
    [165.0, 0.0, 5.0, 62.0, 62.0],
    [215.0, 0.0, 8.0, 54.0, 58.0],
    [275.0, 0.0, 8.0, 62.0, 64.0],
];
const TORSO: [[f64; 5]; 10] = [
    [250.0, 0.0, 5.0, 58.0, 60.0],
    [272.0, 0.0, 5.0, 140.0, 82.0],
    [295.0, 0.0, 5.0, 190.0, 100.0],
    [330.0, 0.0, 5.0, 182.0, 112.0],
    [480.0, 0.0, 5.0, 170.0, 120.0],
    [600.0, 0.0, 0.0, 165.0, 115.0],
    [720.0, 0.0, 0.0, 175.0, 110.0],
    [820.0, 0.0, 0.0, 180.0, 105.0],
    [865.0, 0.0, 0.0, 165.0, 92.0],
    [885.0, 0.0, 5.0, 120.0, 70.0],
];
const SPINE: [[f64; 5]; 7] = [
    [190.0, 0.0, 18.0, 12.0, 11.0],
    [280.0, 0.0, 28.0, 15.0, 13.0],
    [400.0, 0.0, 42.0, 18.0, 16.0],
    [600.0, 0.0, 35.0, 22.0, 18.0],
    [700.0, 0.0, 28.0, 25.0, 20.0],
    [760.0, 0.0, 45.0, 30.0, 18.0],
    [810.0, 0.0, 62.0, 22.0, 11.0],
];

fn thigh(side: f64) -> [[f64; 5]; 3] {
    [
        [830.0, 90.0 * side, 0.0, 76.0, 85.0],
        [1000.0, 92.0 * side, 0.0, 70.0, 78.0],
        [1300.0, 92.0 * side, 0.0, 60.0, 68.0],
    ]
}

/// Interpolates body-frame knots at depth `t`.
fn knot_at(knots: &[[f64; 5]], t: f64) -> [f64; 5] {
    let i = knots
        .partition_point(|k| k[0] <= t)
        .clamp(1, knots.len() - 1);
    let (a, b) = (knots[i - 1], knots[i]);
    let u = ((t - a[0]) / (b[0] - a[0])).clamp(0.0, 1.0);
    std::array::from_fn(|n| a[n] + (b[n] - a[n]) * u)
}

/// Per-tissue values of one study.
#[derive(Debug, Clone)]
struct Tables {
    suv: [f32; tissue::COUNT],
    hu: [f32; tissue::COUNT],
    /// How strongly the multiplicative texture modulates each tissue (bowel is patchy).
    texture_gain: [f32; tissue::COUNT],
}

fn tables(rng: &mut ChaCha8Rng, bowel_segments: u8) -> Tables {
    use tissue::*;
    let mut suv = [0f32; COUNT];
    let mut hu = [0f32; COUNT];
    let mut set = |t: u8, s: f64, h: f64| {
        suv[t as usize] = s as f32;
        hu[t as usize] = h as f32;
    };
    set(AIR, 0.0, -1000.0);
    set(FAT, uni(rng, 0.25, 0.4), uni(rng, -110.0, -90.0));
    set(SOFT, uni(rng, 0.6, 0.9), uni(rng, 35.0, 48.0));
    set(BRAIN, uni(rng, 6.0, 10.0), uni(rng, 30.0, 38.0));
    set(SKULL, uni(rng, 0.3, 0.6), uni(rng, 900.0, 1150.0));
    set(SALIVARY, uni(rng, 2.0, 4.0), uni(rng, 10.0, 35.0));
    set(TONSIL, uni(rng, 2.0, 4.0), uni(rng, 40.0, 50.0));
    set(LUNG, uni(rng, 0.3, 0.5), uni(rng, -860.0, -760.0));
    set(MYOCARDIUM, log_uni(rng, 2.0, 9.0), uni(rng, 35.0, 45.0));
    set(BLOOD, uni(rng, 1.5, 2.2), uni(rng, 35.0, 45.0));
    let liver = uni(rng, 1.8, 2.8);
    set(LIVER, liver, uni(rng, 55.0, 65.0));
    set(SPLEEN, uni(rng, 1.5, 2.3).min(liver), uni(rng, 45.0, 52.0));
    set(KIDNEY, uni(rng, 3.0, 8.0), uni(rng, 28.0, 38.0));
    set(BLADDER, log_uni(rng, 8.0, 40.0), uni(rng, 5.0, 15.0));
    set(CORTEX, uni(rng, 0.4, 0.7), uni(rng, 650.0, 900.0));
    set(MARROW, uni(rng, 0.8, 1.3), uni(rng, 300.0, 420.0));
    set(AIRWAY, 0.0, -990.0);
    for b in 0..bowel_segments.min(MAX_BOWEL) {
        set(BOWEL + b, uni(rng, 1.5, 3.5), uni(rng, 10.0, 30.0));
    }
    let mut texture_gain = [1f32; COUNT];
    for g in &mut texture_gain[BOWEL as usize..] {
        *g = 4.0;
    }
    Tables {
        suv,
        hu,
        texture_gain,
    }
}

/// One hot organ's outline, for placing lesions deliberately next to it.
#[derive(Debug, Clone)]
struct HotOutline {
    organ: HotOrgan,
    c: Vector3<f64>,
    r: Vector3<f64>,
}

#[derive(Debug, Clone)]
struct Anatomy {
    frame: Frame,
    shapes: Vec<Shape>,
    tables: Tables,
    hot: Vec<HotOutline>,
    lungs: Vec<usize>,
    liver: usize,
    bones: Vec<usize>,
    /// `[low, high]` LPS z of the head-and-neck region.
    head_neck_z: [f64; 2],
}

impl Anatomy {
    fn tissue_at(&self, p: &Vector3<f64>) -> u8 {
        self.shapes
            .iter()
            .rev()
            .find(|s| s.contains(p))
            .map_or(tissue::AIR, |s| s.tissue)
    }

    fn paint(&self, z: f64, plane: &Plane, out: &mut [u8]) {
        out.fill(tissue::AIR);
        for s in &self.shapes {
            s.paint(z, plane, out);
        }
    }

    fn hot_organ_at(&self, p: &Vector3<f64>) -> Option<HotOrgan> {
        match self.tissue_at(p) {
            tissue::BRAIN => Some(HotOrgan::Brain),
            tissue::MYOCARDIUM => Some(HotOrgan::Heart),
            tissue::KIDNEY => Some(HotOrgan::Kidney),
            tissue::BLADDER => Some(HotOrgan::Bladder),
            _ => None,
        }
    }
}

fn build_anatomy(pet: &Geometry, rng: &mut ChaCha8Rng, plan: Option<&ClinicalPlan>) -> Anatomy {
    use tissue::*;
    let fov_top = pet.origin.z + (pet.shape[2] as f64 - 1.0) * pet.spacing.z;
    // Small: a squat child-sized body (axial scale below lateral) so vertex to mid-thigh fits
    // the 384 mm FOV; clinical: the adult the plan drew.
    let body = plan.map_or_else(|| Body::small(rng), |p| p.body.clone());
    let frame = Frame {
        ox: body.ox,
        oy: body.oy,
        zv: fov_top - body.margin,
        sx: body.sxy,
        sy: body.sy,
        sz: body.sz,
    };
    let f = &frame;
    let iso = f.iso();
    let (girth, fat) = (body.girth, body.fat);
    let mut shapes: Vec<Shape> = Vec::new();

    // Body outline: fat everywhere, then muscle/soft tissue inset by the fat layer.
    let head_c = f.p(0.0, uni(rng, -3.0, 3.0), 100.0);
    let head_r = f.r(75.0 * jit(rng, 0.04), 92.0 * jit(rng, 0.04), 100.0);
    let scalp = (3.0 * iso).max(1.5);
    for (t, inset) in [(FAT, 0.0), (SOFT, 1.0)] {
        shapes.push(Shape::ellipsoid(
            t,
            head_c,
            head_r.add_scalar(-scalp * inset),
        ));
        shapes.push(Shape::profile(t, f.knots(&NECK, girth, 0.5 * fat * inset)));
        shapes.push(Shape::profile(t, f.knots(&TORSO, girth, fat * inset)));
        for side in [-1.0, 1.0] {
            let leg = match plan {
                Some(p) if p.legs_to > 1300.0 => leg(side),
                _ => thigh(side).to_vec(),
            };
            shapes.push(Shape::profile(t, f.knots(&leg, girth, fat * inset)));
            if let Some(p) = plan {
                let arm = arm(side, p.acquisition.arms, girth);
                shapes.push(Shape::profile(t, f.knots(&arm, 1.0, 0.4 * fat * inset)));
            }
        }
    }

    // Skull, with the brain in its upper part and soft tissue (skull base, face) below.
    let skull_r = head_r.add_scalar(-scalp);
    let skull_th = (6.5 * iso).max(2.5);
    let inner_r = skull_r.add_scalar(-skull_th);
    shapes.push(Shape::ellipsoid(SKULL, head_c, skull_r));
    shapes.push(Shape::ellipsoid(SOFT, head_c, inner_r));
    let brain_c = head_c + Vector3::new(0.0, 0.0, 0.06 * inner_r.z);
    shapes.push(Shape::ellipsoid(BRAIN, brain_c, inner_r * 0.92));

    // Mandible: the anterior half of an elliptic ring.
    let mandible_y = f.y(-2.0);
    shapes.push(
        Shape::profile(
            CORTEX,
            f.knots(
                &[
                    [188.0, 0.0, -2.0, 44.0, 48.0],
                    [222.0, 0.0, -2.0, 42.0, 46.0],
                ],
                1.0,
                0.0,
            ),
        )
        .with_wall((6.0 * iso).max(2.0))
        .with_y_clip(f64::NEG_INFINITY, mandible_y),
    );
    // Salivary glands and tonsils: physiological uptake next to the neck nodes.
    for side in [-1.0, 1.0] {
        let j = uni(rng, -3.0, 3.0);
        shapes.push(Shape::ellipsoid(
            SALIVARY,
            f.p(40.0 * side + j, 5.0, 180.0),
            f.r(10.0, 15.0, 20.0) * jit(rng, 0.1),
        ));
        shapes.push(Shape::ellipsoid(
            SALIVARY,
            f.p(32.0 * side, -26.0 + j, 212.0),
            f.r(10.0, 11.0, 10.0) * jit(rng, 0.1),
        ));
        shapes.push(Shape::ellipsoid(
            TONSIL,
            f.p(13.0 * side, -8.0, 200.0 + j),
            f.r(7.0, 7.0, 11.0) * jit(rng, 0.15),
        ));
    }
    shapes.push(Shape::profile(
        AIRWAY,
        f.knots(
            &[
                [205.0, 0.0, -20.0, 8.0, 8.0],
                [330.0, 0.0, -12.0, 9.0, 9.0],
                [400.0, 0.0, -5.0, 8.0, 8.0],
            ],
            1.0,
            0.0,
        ),
    ));

    let mut lungs = Vec::new();
    for side in [-1.0, 1.0] {
        // The right lung (negative X) is a little larger.
        let big = if side < 0.0 { 1.04 } else { 0.98 };
        lungs.push(shapes.len());
        shapes.push(Shape::ellipsoid(
            LUNG,
            f.p(
                85.0 * side + uni(rng, -4.0, 4.0),
                10.0 + uni(rng, -4.0, 4.0),
                420.0 + uni(rng, -8.0, 8.0),
            ),
            f.r(62.0, 80.0, 130.0) * (big * jit(rng, 0.06)),
        ));
    }

    let heart_c = f.p(
        25.0 + uni(rng, -5.0, 5.0),
        -25.0 + uni(rng, -4.0, 4.0),
        475.0 + uni(rng, -10.0, 10.0),
    );
    let heart_r = f.r(58.0, 45.0, 55.0) * jit(rng, 0.07);
    shapes.push(Shape::ellipsoid(MYOCARDIUM, heart_c, heart_r));
    shapes.push(Shape::ellipsoid(
        BLOOD,
        heart_c,
        heart_r.add_scalar(-(10.0 * iso).max(3.0)),
    ));
    let mut hot = vec![HotOutline {
        organ: HotOrgan::Heart,
        c: heart_c,
        r: heart_r,
    }];
    shapes.push(Shape::profile(
        BLOOD,
        f.knots(
            &[
                [330.0, 28.0, 24.0, 11.0, 11.0],
                [560.0, 20.0, 15.0, 11.0, 11.0],
                [720.0, 8.0, 0.0, 9.0, 9.0],
            ],
            1.0,
            0.0,
        ),
    ));

    // Bowel: a few segments in the lower abdomen, each with its own uptake (distractors).
    let bowel_segments = rng.random_range(3..=tissue::MAX_BOWEL);
    for b in 0..bowel_segments {
        shapes.push(Shape::ellipsoid(
            BOWEL + b,
            f.p(
                uni(rng, -80.0, 80.0),
                uni(rng, -55.0, -10.0),
                uni(rng, 660.0, 770.0),
            ),
            f.r(
                uni(rng, 15.0, 25.0),
                uni(rng, 12.0, 18.0),
                uni(rng, 20.0, 35.0),
            ),
        ));
    }

    let liver = shapes.len();
    shapes.push(Shape::ellipsoid(
        LIVER,
        f.p(
            -55.0 + uni(rng, -5.0, 5.0),
            5.0 + uni(rng, -4.0, 4.0),
            565.0 + uni(rng, -10.0, 10.0),
        ),
        f.r(80.0, 78.0, 75.0) * jit(rng, 0.07),
    ));
    shapes.push(Shape::ellipsoid(
        SPLEEN,
        f.p(
            95.0,
            45.0 + uni(rng, -4.0, 4.0),
            560.0 + uni(rng, -10.0, 10.0),
        ),
        f.r(28.0, 42.0, 50.0) * jit(rng, 0.12),
    ));
    for (side, t) in [(-1.0, 640.0), (1.0, 630.0)] {
        let c = f.p(
            62.0 * side + uni(rng, -4.0, 4.0),
            55.0 + uni(rng, -4.0, 4.0),
            t + uni(rng, -10.0, 10.0),
        );
        let r = f.r(25.0, 28.0, 55.0) * jit(rng, 0.08);
        shapes.push(Shape::ellipsoid(KIDNEY, c, r));
        hot.push(HotOutline {
            organ: HotOrgan::Kidney,
            c,
            r,
        });
    }
    let bladder_c = f.p(uni(rng, -5.0, 5.0), -25.0, 815.0);
    let bladder_r =
        f.r(40.0, 35.0, 32.0) * uni(rng, 0.8, 1.2) * plan.map_or(1.0, |p| p.bladder_scale);
    shapes.push(Shape::ellipsoid(BLADDER, bladder_c, bladder_r));
    hot.push(HotOutline {
        organ: HotOrgan::Bladder,
        c: bladder_c,
        r: bladder_r,
    });
    hot.push(HotOutline {
        organ: HotOrgan::Brain,
        c: brain_c,
        r: inner_r * 0.92,
    });

    // Bones: cortex shells around marrow so bone lesions have a marrow host.
    let cortex = (2.5 * iso).max(1.0);
    let mut bones = Vec::new();
    shapes.push(Shape::profile(CORTEX, f.knots(&SPINE, 1.0, 0.0)));
    bones.push(shapes.len());
    shapes.push(Shape::profile(MARROW, f.knots(&SPINE, 1.0, cortex)));
    let spinous: Vec<[f64; 5]> = [290.0, 400.0, 600.0, 700.0, 760.0]
        .iter()
        .map(|&t| {
            let k = knot_at(&SPINE, t);
            [t, 0.0, k[2] + k[4] + 10.0, 6.0, 11.0]
        })
        .collect();
    shapes.push(Shape::profile(CORTEX, f.knots(&spinous, 1.0, 0.0)));
    for side in [-1.0, 1.0] {
        shapes.push(Shape::ellipsoid(
            CORTEX,
            f.p(78.0 * side, -25.0, 282.0),
            f.r(60.0, 8.0, 8.0),
        ));
        shapes.push(Shape::ellipsoid(
            CORTEX,
            f.p(95.0 * side, 55.0, 340.0),
            f.r(35.0, 7.0, 60.0),
        ));
    }
    // Ribs: thin elliptic rings just inside the chest wall, open anteriorly (cartilage).
    let rib_half = (4.5 * f.sz).max(2.5);
    for n in 0..9 {
        let t = 318.0 + 30.0 * n as f64;
        let [_, x, y, rx, ry] = knot_at(&TORSO, t);
        let s = Section {
            cx: f.ox + f.sx * x,
            cy: f.y(y),
            rx: f.sx * rx * girth - fat - 3.0 * iso,
            ry: f.sy * ry * girth - fat - 3.0 * iso,
        };
        let z = f.z(t);
        shapes.push(
            Shape::profile(CORTEX, vec![(z - rib_half, s), (z + rib_half, s)])
                .with_wall((7.0 * iso).max(2.0))
                .with_y_clip(s.cy - 0.55 * s.ry, f64::INFINITY),
        );
    }
    let mut bone_pair = |shapes: &mut Vec<Shape>, c: Vector3<f64>, r: Vector3<f64>| {
        shapes.push(Shape::ellipsoid(CORTEX, c, r));
        bones.push(shapes.len());
        shapes.push(Shape::ellipsoid(MARROW, c, r.add_scalar(-cortex)));
    };
    for side in [-1.0, 1.0] {
        bone_pair(
            &mut shapes,
            f.p(100.0 * side, 38.0, 735.0),
            f.r(16.0, 48.0, 55.0),
        );
        bone_pair(
            &mut shapes,
            f.p(88.0 * side, 8.0, 845.0),
            f.r(24.0, 24.0, 24.0),
        );
    }
    bone_pair(&mut shapes, f.p(0.0, -55.0, 855.0), f.r(42.0, 12.0, 14.0));
    for side in [-1.0, 1.0] {
        let femur = [
            [850.0, 88.0 * side, 8.0, 16.0, 16.0],
            [1000.0, 92.0 * side, 4.0, 14.0, 14.0],
            [1300.0, 90.0 * side, 0.0, 13.0, 13.0],
        ];
        shapes.push(Shape::profile(CORTEX, f.knots(&femur, 1.0, 0.0)));
        bones.push(shapes.len());
        shapes.push(Shape::profile(
            MARROW,
            f.knots(&femur, 1.0, (4.0 * iso).max(1.5)),
        ));
    }

    if let Some(p) = plan {
        limb_bones(&mut shapes, f, p, cortex);
    }

    let mut tables = tables(rng, bowel_segments);
    if let Some(p) = plan {
        tables.suv[MYOCARDIUM as usize] = p.myocardium_suv as f32;
        tables.suv[BLADDER as usize] = p.bladder_suv as f32;
    }
    let head_neck_z = [f.z(292.0), f.z(175.0)];
    Anatomy {
        frame,
        shapes,
        tables,
        hot,
        lungs,
        liver,
        bones,
        head_neck_z,
    }
}

/// Cortex and marrow along the arms and, for a field of view down to the feet, the shins. They
/// host no lesions (the disease models place none in the limbs).
fn limb_bones(shapes: &mut Vec<Shape>, f: &Frame, plan: &ClinicalPlan, cortex: f64) {
    use tissue::*;
    let mut bone = |knots: Vec<[f64; 5]>| {
        shapes.push(Shape::profile(CORTEX, f.knots(&knots, 1.0, 0.0)));
        shapes.push(Shape::profile(MARROW, f.knots(&knots, 1.0, cortex)));
    };
    for side in [-1.0, 1.0] {
        let arm = arm(side, plan.acquisition.arms, plan.body.girth);
        // From the elbow's side of the shoulder to the wrist: every knot but the ends.
        bone(
            arm[1..arm.len() - 1]
                .iter()
                .map(|&[t, x, y, _, _]| [t, x, y, 11.0, 11.0])
                .collect(),
        );
        if plan.legs_to > 1300.0 {
            bone(vec![
                [1320.0, 90.0 * side, 0.0, 17.0, 17.0],
                [1450.0, 88.0 * side, 3.0, 13.0, 13.0],
                [1640.0, 85.0 * side, 3.0, 11.0, 11.0],
            ]);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Lesions
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct PlacedLesion {
    site: Site,
    shape: Ellipsoid,
    suv: f64,
    hu: f64,
    near: Option<HotOrgan>,
}

#[derive(Debug, Clone, Copy)]
struct Request {
    site: Site,
    radius: (f64, f64),
    near: Option<HotOrgan>,
}

impl Site {
    fn host(self) -> &'static [u8] {
        match self {
            Site::Lung => &[tissue::LUNG],
            Site::Liver => &[tissue::LIVER],
            Site::Bone => &[tissue::MARROW, tissue::CORTEX],
            _ => &[tissue::SOFT],
        }
    }

    fn host_tissue(self) -> u8 {
        self.host()[0]
    }

    /// Hot organs a lesion at this site can sensibly sit next to.
    fn neighbours(self) -> &'static [HotOrgan] {
        match self {
            Site::Lung | Site::MediastinalNode => &[HotOrgan::Heart],
            Site::Liver | Site::AbdominalNode => &[HotOrgan::Kidney],
            Site::Bone => &[HotOrgan::Kidney, HotOrgan::Bladder],
            Site::NeckNode | Site::AxillaryNode => &[],
        }
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// Draws the disease model and the lesions it asks for (before placement).
fn plan_lesions(rng: &mut ChaCha8Rng) -> (DiseaseModel, Vec<Request>) {
    let req = |site, lo, hi| Request {
        site,
        radius: (lo, hi),
        near: None,
    };
    let u: f64 = rng.random();
    let model = if u < 0.28 {
        DiseaseModel::None
    } else if u < 0.68 {
        DiseaseModel::HeadAndNeck
    } else if u < 0.79 {
        DiseaseModel::Lung
    } else {
        DiseaseModel::Lymphoma
    };
    let mut reqs = Vec::new();
    let mets = |rng: &mut ChaCha8Rng, reqs: &mut Vec<Request>, max: u32, sites: &[Site]| {
        for _ in 0..rng.random_range(1..=max) {
            let site = pick(rng, sites);
            reqs.push(match site {
                Site::Lung => req(site, 4.0, 12.0),
                Site::Liver => req(site, 5.0, 20.0),
                _ => req(site, 4.0, 14.0),
            });
        }
    };
    match model {
        DiseaseModel::None => {}
        DiseaseModel::HeadAndNeck => {
            reqs.push(req(Site::NeckNode, 6.0, 25.0));
            for _ in 0..rng.random_range(0..=2) {
                reqs.push(req(Site::NeckNode, 4.0, 14.0));
            }
            if rng.random_bool(0.2) {
                mets(rng, &mut reqs, 4, &[Site::Lung, Site::Liver, Site::Bone]);
            }
        }
        DiseaseModel::Lung => {
            reqs.push(req(Site::Lung, 8.0, 25.0));
            if rng.random_bool(0.5) {
                for _ in 0..rng.random_range(1..=2) {
                    reqs.push(req(Site::MediastinalNode, 5.0, 15.0));
                }
            }
            if rng.random_bool(0.4) {
                mets(rng, &mut reqs, 3, &[Site::Liver, Site::Bone, Site::Lung]);
            }
        }
        DiseaseModel::Lymphoma => {
            if rng.random_bool(0.3) {
                for _ in 0..rng.random_range(1..=3) {
                    reqs.push(req(Site::NeckNode, 5.0, 18.0));
                }
            } else {
                let sites = [
                    Site::NeckNode,
                    Site::AxillaryNode,
                    Site::MediastinalNode,
                    Site::AbdominalNode,
                ];
                for _ in 0..rng.random_range(2..=6) {
                    reqs.push(req(pick(rng, &sites), 5.0, 20.0));
                }
            }
        }
    }
    for r in &mut reqs {
        // Some lesions at the resolution limit, some a few mm from a hot organ.
        if rng.random_bool(0.2) {
            r.radius = (3.0, 5.0);
        }
        let neighbours = r.site.neighbours();
        if !neighbours.is_empty() && rng.random_bool(0.3) {
            r.near = Some(pick(rng, neighbours));
        }
    }
    (model, reqs)
}

/// Unit directions for probing a lesion's surface: a Fibonacci sphere plus the six axes.
fn probe_directions() -> Vec<Vector3<f64>> {
    let n = 48;
    let mut dirs: Vec<Vector3<f64>> = (0..n)
        .map(|i| {
            let z = 1.0 - 2.0 * (i as f64 + 0.5) / n as f64;
            let r = (1.0 - z * z).max(0.0).sqrt();
            let phi = i as f64 * 2.399_963_229_728_653;
            Vector3::new(r * phi.cos(), r * phi.sin(), z)
        })
        .collect();
    for a in 0..3 {
        for s in [-1.0, 1.0] {
            let mut v = Vector3::zeros();
            v[a] = s;
            dirs.push(v);
        }
    }
    dirs
}

const MAX_ATTEMPTS: usize = 400;
/// Largest distance (mm) from a hot organ at which a lesion is reported as near it.
const NEAR_MM: f64 = 10.0;
/// Minimum surface-to-surface separation of two lesions, so masks never touch.
const LESION_SEPARATION_MM: f64 = 8.0;

struct Placer<'a> {
    anatomy: &'a Anatomy,
    pet: &'a Geometry,
    dirs: Vec<Vector3<f64>>,
    max_radius: f64,
}

impl Placer<'_> {
    fn place(
        &self,
        rng: &mut ChaCha8Rng,
        request: Request,
        placed: &[PlacedLesion],
    ) -> Option<PlacedLesion> {
        let first = self.try_place(rng, request, placed);
        if first.is_some() || request.near.is_none() {
            return first;
        }
        self.try_place(
            rng,
            Request {
                near: None,
                ..request
            },
            placed,
        )
    }

    fn try_place(
        &self,
        rng: &mut ChaCha8Rng,
        request: Request,
        placed: &[PlacedLesion],
    ) -> Option<PlacedLesion> {
        let hi = request.radius.1.min(self.max_radius);
        let lo = request.radius.0.min(hi);
        let mut radius = uni(rng, lo, hi);
        for attempt in 0..MAX_ATTEMPTS {
            // Shrink a lesion that does not fit its host rather than giving up on it.
            if attempt > 0 && attempt % 40 == 0 {
                radius = (radius * 0.85).max(3.0);
            }
            let r = Vector3::from_fn(|_, _| {
                round_dp((radius * uni(rng, 0.7, 1.3)).clamp(3.0, self.max_radius), 2)
            });
            let mut shape = Ellipsoid {
                c: Vector3::zeros(),
                r,
                rot: random_rotation(rng),
            };
            let centre = match request.near {
                Some(organ) => self.centre_near(rng, organ, &shape),
                None => self.centre_in_site(rng, request.site),
            };
            let Some(centre) = centre else {
                continue;
            };
            shape.c = centre.map(|v| round_dp(v, 2));
            if !self.fits(request.site, &shape, placed) {
                continue;
            }
            let near = self.nearest_hot(&shape);
            if let Some(wanted) = request.near {
                match near {
                    Some((organ, gap)) if organ == wanted && gap >= 3.0 => {}
                    _ => continue,
                }
            }
            return Some(PlacedLesion {
                site: request.site,
                shape,
                suv: 0.0,
                hu: 0.0,
                near: near.map(|(o, _)| o),
            });
        }
        None
    }

    fn centre_in_site(&self, rng: &mut ChaCha8Rng, site: Site) -> Option<Vector3<f64>> {
        let f = &self.anatomy.frame;
        let side = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let in_shape = |rng: &mut ChaCha8Rng, idx: usize| {
            let (lo, hi) = self.anatomy.shapes[idx].bbox();
            Vector3::from_fn(|a, _| uni(rng, lo[a], hi[a]))
        };
        Some(match site {
            Site::NeckNode => f.p(
                side * uni(rng, 20.0, 46.0),
                uni(rng, -32.0, 15.0),
                uni(rng, 198.0, 265.0),
            ),
            Site::AxillaryNode => f.p(
                side * uni(rng, 115.0, 168.0),
                uni(rng, -30.0, 45.0),
                uni(rng, 292.0, 350.0),
            ),
            Site::MediastinalNode => f.p(
                uni(rng, -30.0, 30.0),
                uni(rng, -45.0, 25.0),
                uni(rng, 320.0, 440.0),
            ),
            Site::AbdominalNode => f.p(
                uni(rng, -50.0, 50.0),
                uni(rng, -35.0, 20.0),
                uni(rng, 600.0, 770.0),
            ),
            Site::Lung => {
                let idx = pick(rng, &self.anatomy.lungs);
                in_shape(rng, idx)
            }
            Site::Liver => in_shape(rng, self.anatomy.liver),
            Site::Bone => {
                let idx = pick(rng, &self.anatomy.bones);
                in_shape(rng, idx)
            }
        })
    }

    /// A centre that puts the lesion roughly 4–10 mm outside a random point of the organ.
    fn centre_near(
        &self,
        rng: &mut ChaCha8Rng,
        organ: HotOrgan,
        shape: &Ellipsoid,
    ) -> Option<Vector3<f64>> {
        let candidates: Vec<&HotOutline> = self
            .anatomy
            .hot
            .iter()
            .filter(|h| h.organ == organ)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let h = candidates[rng.random_range(0..candidates.len())];
        let u = Vector3::new(normal(rng), normal(rng), normal(rng)).try_normalize(1e-9)?;
        let surface = h.c + h.r.component_mul(&u);
        let n = (surface - h.c)
            .component_div(&h.r.component_mul(&h.r))
            .try_normalize(1e-12)?;
        Some(surface + n * (uni(rng, 4.0, 10.0) + shape.support(&n)))
    }

    /// Inside the FOV and its region, apart from other lesions, and wholly in its host tissue.
    fn fits(&self, site: Site, shape: &Ellipsoid, placed: &[PlacedLesion]) -> bool {
        let half = shape.half_extent();
        let margin = 2.0 * self.pet.spacing.max();
        for a in 0..3 {
            let lo = self.pet.origin[a];
            let hi = lo + (self.pet.shape[a] as f64 - 1.0) * self.pet.spacing[a];
            if shape.c[a] - half[a] < lo + margin || shape.c[a] + half[a] > hi - margin {
                return false;
            }
        }
        let [hn_lo, hn_hi] = self.anatomy.head_neck_z;
        let in_head_neck = shape.c.z >= hn_lo && shape.c.z <= hn_hi;
        if site.is_head_neck() != in_head_neck {
            return false;
        }
        let apart = placed.iter().all(|p| {
            (p.shape.c - shape.c).norm()
                > p.shape.max_radius() + shape.max_radius() + LESION_SEPARATION_MM
        });
        if !apart {
            return false;
        }
        let host = site.host();
        let inside = |p: &Vector3<f64>| host.contains(&self.anatomy.tissue_at(p));
        inside(&shape.c)
            && self
                .dirs
                .iter()
                .all(|u| inside(&shape.point(u, 1.0, 1.5)) && inside(&shape.point(u, 0.5, 0.0)))
    }

    /// The closest hot organ within [`NEAR_MM`] of the surface, and its distance (1 mm steps).
    fn nearest_hot(&self, shape: &Ellipsoid) -> Option<(HotOrgan, f64)> {
        (0..=NEAR_MM as usize).find_map(|d| {
            let d = d as f64;
            self.dirs
                .iter()
                .find_map(|u| self.anatomy.hot_organ_at(&shape.point(u, 1.0, d)))
                .map(|o| (o, d))
        })
    }
}

/// True uptake and CT value of a placed lesion, from its host tissue.
fn lesion_values(rng: &mut ChaCha8Rng, tables: &Tables, l: &mut PlacedLesion) {
    let host = l.site.host_tissue();
    let background = tables.suv[host as usize] as f64;
    // Small lesions get a higher floor so that after partial volume they are still hot spots.
    let r_mean = l.shape.r.iter().product::<f64>().cbrt();
    let contrast = 1.6 + 1.4 * ((8.0 - r_mean) / 5.0).clamp(0.0, 1.0);
    let floor = (background * contrast).clamp(2.0, 14.0);
    l.suv = round_dp(floor + (15.0 - floor) * rng.random::<f64>().powf(1.3), 3);
    let host_hu = tables.hu[host as usize] as f64;
    l.hu = match l.site {
        Site::Lung => uni(rng, 20.0, 45.0),
        Site::Liver => host_hu - uni(rng, 20.0, 30.0),
        Site::Bone if rng.random_bool(0.5) => uni(rng, 60.0, 150.0),
        Site::Bone => uni(rng, 900.0, 1200.0),
        _ => uni(rng, 40.0, 50.0),
    };
}

// ------------------------------------------------------------------------------------------------
// Images
// ------------------------------------------------------------------------------------------------

/// Smooth random field (trilinear interpolation of a coarse Gaussian lattice) for PET texture.
struct Texture {
    origin: Vector3<f64>,
    step: f64,
    dims: [usize; 3],
    values: Vec<f32>,
}

impl Texture {
    fn new(rng: &mut ChaCha8Rng, g: &Geometry, step: f64) -> Texture {
        let origin = g.origin.add_scalar(-step);
        let dims: [usize; 3] = std::array::from_fn(|a| {
            ((g.shape[a] as f64 * g.spacing[a]) / step).ceil() as usize + 3
        });
        let values = (0..dims.iter().product::<usize>())
            .map(|_| normal(rng) as f32)
            .collect();
        Texture {
            origin,
            step,
            dims,
            values,
        }
    }

    fn sample(&self, x: f64, y: f64, z: f64) -> f32 {
        let p = [x, y, z];
        let mut i0 = [0usize; 3];
        let mut t = [0f32; 3];
        for a in 0..3 {
            let u = ((p[a] - self.origin[a]) / self.step).clamp(0.0, (self.dims[a] - 2) as f64);
            let f = u.floor();
            i0[a] = f as usize;
            t[a] = (u - f) as f32;
        }
        let at = |i: usize, j: usize, k: usize| {
            self.values[i0[0] + i + self.dims[0] * (i0[1] + j + self.dims[1] * (i0[2] + k))]
        };
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let c00 = lerp(at(0, 0, 0), at(1, 0, 0), t[0]);
        let c10 = lerp(at(0, 1, 0), at(1, 1, 0), t[0]);
        let c01 = lerp(at(0, 0, 1), at(1, 0, 1), t[0]);
        let c11 = lerp(at(0, 1, 1), at(1, 1, 1), t[0]);
        lerp(lerp(c00, c10, t[1]), lerp(c01, c11, t[1]), t[2])
    }
}

/// Study-level PET physics parameters.
struct PetPhysics {
    texture: Texture,
    texture_amplitude: f32,
    /// Variance per unit activity of the Poisson-like noise.
    noise_k: f64,
    /// Point-spread blur along x, y and z.
    kernels: [Vec<f32>; 3],
}

fn gaussian_kernel(fwhm_mm: f64, spacing_mm: f64) -> Vec<f32> {
    let sigma = fwhm_mm / (8.0 * 2f64.ln()).sqrt() / spacing_mm;
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let w: Vec<f64> = (-radius..=radius)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|v| (v / sum) as f32).collect()
}

/// Blurs `data` (shape `n`) along `axis` with `kernel`, replicating edge voxels.
fn blur_axis(data: &mut [f32], n: [usize; 3], axis: usize, kernel: &[f32]) {
    let r = (kernel.len() / 2) as isize;
    let plane = n[0] * n[1];
    if axis == 2 {
        let src = data.to_vec();
        data.par_chunks_mut(plane).enumerate().for_each(|(k, out)| {
            for (idx, o) in out.iter_mut().enumerate() {
                let mut acc = 0f32;
                for (d, w) in kernel.iter().enumerate() {
                    let kk = (k as isize + d as isize - r).clamp(0, n[2] as isize - 1) as usize;
                    acc += w * src[kk * plane + idx];
                }
                *o = acc;
            }
        });
        return;
    }
    data.par_chunks_mut(plane).for_each(|slice| {
        let src = slice.to_vec();
        let (len, stride) = if axis == 0 { (n[0], 1) } else { (n[1], n[0]) };
        let lines = plane / len;
        for line in 0..lines {
            let base = if axis == 0 { line * n[0] } else { line };
            for i in 0..len {
                let mut acc = 0f32;
                for (d, w) in kernel.iter().enumerate() {
                    let ii = (i as isize + d as isize - r).clamp(0, len as isize - 1) as usize;
                    acc += w * src[base + ii * stride];
                }
                slice[base + i * stride] = acc;
            }
        }
    });
}

/// Lesions whose bounding box meets the slab `[z_lo, z_hi]`.
fn lesions_in_slab(lesions: &[PlacedLesion], z_lo: f64, z_hi: f64) -> Vec<&PlacedLesion> {
    lesions
        .iter()
        .filter(|l| {
            let h = l.shape.half_extent().z;
            l.shape.c.z + h >= z_lo && l.shape.c.z - h <= z_hi
        })
        .collect()
}

fn make_pet(
    anatomy: &Anatomy,
    lesions: &[PlacedLesion],
    g: &Geometry,
    physics: &PetPhysics,
    seed: u64,
) -> Vec<f32> {
    let [nx, ny, _] = g.shape;
    let sp = g.spacing;
    let sub = Plane::of(g, 2);
    let tables = &anatomy.tables;
    let mut data = vec![0f32; g.len()];
    data.par_chunks_mut(nx * ny).enumerate().for_each_init(
        || (vec![tissue::AIR; sub.nx * sub.ny], vec![0f32; nx * ny]),
        |(labels, gained), (k, slice)| {
            let z = g.origin.z + k as f64 * sp.z;
            slice.fill(0.0);
            gained.fill(0.0);
            // 2×2×2 sub-samples per voxel: organ edges get partial-volume values.
            for dz in [-0.25 * sp.z, 0.25 * sp.z] {
                anatomy.paint(z + dz, &sub, labels);
                for j in 0..ny {
                    for i in 0..nx {
                        let mut s = 0f32;
                        let mut t = 0f32;
                        for (a, b) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            let l = labels[(2 * i + a) + sub.nx * (2 * j + b)] as usize;
                            s += tables.suv[l];
                            t += tables.suv[l] * tables.texture_gain[l];
                        }
                        slice[i + nx * j] += s;
                        gained[i + nx * j] += t;
                    }
                }
            }
            for j in 0..ny {
                let y = g.origin.y + j as f64 * sp.y;
                for i in 0..nx {
                    let idx = i + nx * j;
                    if gained[idx] == 0.0 {
                        continue;
                    }
                    let x = g.origin.x + i as f64 * sp.x;
                    let tex = physics.texture.sample(x, y, z) * physics.texture_amplitude;
                    slice[idx] = ((slice[idx] + tex * gained[idx]) / 8.0).max(0.0);
                }
            }
            for l in lesions_in_slab(lesions, z - sp.z, z + sp.z) {
                blend_lesion(l, g, k, slice);
            }
            let mut rng = sub_rng(seed, TAG_PET_NOISE, k as u64);
            for v in slice.iter_mut() {
                if *v > 0.0 {
                    let sd = (*v as f64 * physics.noise_k).sqrt();
                    *v += (normal(&mut rng) * sd) as f32;
                }
            }
        },
    );
    for (axis, kernel) in physics.kernels.iter().enumerate() {
        blur_axis(&mut data, g.shape, axis, kernel);
    }
    for v in &mut data {
        *v = v.max(0.0);
    }
    data
}

/// Replaces the activity of PET slice `k` by the lesion's uptake in proportion to how much of
/// each voxel it covers (4×4×4 sub-samples).
fn blend_lesion(l: &PlacedLesion, g: &Geometry, k: usize, slice: &mut [f32]) {
    const N: usize = 4;
    let sp = g.spacing;
    let z = g.origin.z + k as f64 * sp.z;
    let h = l.shape.half_extent();
    let reach = h + sp * 0.5;
    let (Some(ri), Some(rj)) = (
        axis_range(g, 0, l.shape.c.x - reach.x, l.shape.c.x + reach.x),
        axis_range(g, 1, l.shape.c.y - reach.y, l.shape.c.y + reach.y),
    ) else {
        return;
    };
    let offsets: Vec<f64> = (0..N).map(|s| (s as f64 + 0.5) / N as f64 - 0.5).collect();
    for j in rj {
        for i in ri.clone() {
            let centre = Vector3::new(
                g.origin.x + i as f64 * sp.x,
                g.origin.y + j as f64 * sp.y,
                z,
            );
            let mut inside = 0usize;
            for oz in &offsets {
                for oy in &offsets {
                    for ox in &offsets {
                        let p = centre + Vector3::new(ox * sp.x, oy * sp.y, oz * sp.z);
                        inside += (l.shape.level(&p) <= 1.0) as usize;
                    }
                }
            }
            if inside > 0 {
                let frac = inside as f32 / (N * N * N) as f32;
                let v = &mut slice[i + g.shape[0] * j];
                *v = *v * (1.0 - frac) + frac * l.suv as f32;
            }
        }
    }
}

fn make_ct(
    anatomy: &Anatomy,
    lesions: &[PlacedLesion],
    g: &Geometry,
    noise_sd: f32,
    seed: u64,
) -> Vec<f32> {
    let [nx, ny, _] = g.shape;
    let plane = Plane::of(g, 1);
    let hu = &anatomy.tables.hu;
    let mut data = vec![0f32; g.len()];
    data.par_chunks_mut(nx * ny).enumerate().for_each_init(
        || vec![tissue::AIR; nx * ny],
        |labels, (k, slice)| {
            let z = g.origin.z + k as f64 * g.spacing.z;
            anatomy.paint(z, &plane, labels);
            for (v, &l) in slice.iter_mut().zip(labels.iter()) {
                *v = hu[l as usize];
            }
            for l in lesions_in_slab(lesions, z, z) {
                let h = l.shape.half_extent();
                let (Some(ri), Some(rj)) = (
                    axis_range(g, 0, l.shape.c.x - h.x, l.shape.c.x + h.x),
                    axis_range(g, 1, l.shape.c.y - h.y, l.shape.c.y + h.y),
                ) else {
                    continue;
                };
                for j in rj {
                    let y = g.origin.y + j as f64 * g.spacing.y;
                    for i in ri.clone() {
                        let p = Vector3::new(g.origin.x + i as f64 * g.spacing.x, y, z);
                        if l.shape.level(&p) <= 1.0 {
                            slice[i + nx * j] = l.hu as f32;
                        }
                    }
                }
            }
            let mut rng = sub_rng(seed, TAG_CT_NOISE, k as u64);
            for v in slice.iter_mut() {
                let noisy = *v + noise_sd * fast_normal(rng.next_u64());
                *v = noisy.round().clamp(-1024.0, 3071.0);
            }
        },
    );
    data
}

/// Ground-truth mask: PET voxels whose centre lies inside a lesion; a lesion too small to
/// contain any centre gets the voxel holding its centre. Returns the voxel count per lesion.
fn make_seg(lesions: &[PlacedLesion], g: &Geometry, seg: &mut [u8]) -> Vec<u64> {
    let [nx, ny, nz] = g.shape;
    lesions
        .iter()
        .map(|l| {
            let h = l.shape.half_extent();
            let mut count = 0u64;
            let ranges = (
                axis_range(g, 0, l.shape.c.x - h.x, l.shape.c.x + h.x),
                axis_range(g, 1, l.shape.c.y - h.y, l.shape.c.y + h.y),
                axis_range(g, 2, l.shape.c.z - h.z, l.shape.c.z + h.z),
            );
            if let (Some(ri), Some(rj), Some(rk)) = ranges {
                for k in rk {
                    for j in rj.clone() {
                        for i in ri.clone() {
                            let p = g.index_to_world(Vector3::new(i as f64, j as f64, k as f64));
                            if l.shape.level(&p) <= 1.0 {
                                seg[g.linear_index(i, j, k)] = 1;
                                count += 1;
                            }
                        }
                    }
                }
            }
            if count == 0 {
                let idx = |a: usize, n: usize| {
                    (((l.shape.c[a] - g.origin[a]) / g.spacing[a])
                        .round()
                        .max(0.0) as usize)
                        .min(n - 1)
                };
                seg[g.linear_index(idx(0, nx), idx(1, ny), idx(2, nz))] = 1;
                count = 1;
            }
            count
        })
        .collect()
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
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let anatomy = build_anatomy(&drawn_g, &mut rng, plan.as_ref());

    let (model, requests) = plan_lesions(&mut rng);
    let placer = Placer {
        anatomy: &anatomy,
        pet: &drawn_g,
        dirs: probe_directions(),
        max_radius: match options.size {
            Size::Small => 15.0,
            Size::Clinical => 25.0,
        },
    };
    let mut lesions: Vec<PlacedLesion> = Vec::new();
    for request in requests {
        if let Some(l) = placer.place(&mut rng, request, &lesions) {
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
            if let Some(l) = placer.place(&mut rng, request, &lesions) {
                lesions.push(l);
                break;
            }
        }
    }
    for l in &mut lesions {
        lesion_values(&mut rng, &anatomy.tables, l);
    }

    // Noise level: liver SNR after the PSF of 8–15, whatever the blur.
    let fwhm = uni(&mut rng, 6.0, 7.0);
    // The small size on its own grid keeps the isotropic kernel and noise formula it always had
    // (same bytes); everything else blurs per axis.
    let (kernels, blur_sd_factor) = match (&plan, pet_g == drawn_g) {
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
            let fwhm = planned.as_ref().map_or(fwhm, |p| p.acquisition.psf_fwhm_mm);
            let kernels: [Vec<f32>; 3] =
                std::array::from_fn(|a| gaussian_kernel(fwhm, pet_g.spacing[a]));
            let sd = kernels
                .iter()
                .map(|k| k.iter().map(|w| (*w as f64).powi(2)).sum::<f64>().sqrt())
                .product::<f64>();
            (kernels, sd)
        }
    };
    let snr = uni(&mut rng, 8.0, 15.0);
    let liver = anatomy.tables.suv[tissue::LIVER as usize] as f64;
    let physics = PetPhysics {
        texture: Texture::new(&mut rng, &drawn_g, 20.0),
        texture_amplitude: uni(&mut rng, 0.05, 0.09) as f32,
        noise_k: liver / (snr * blur_sd_factor).powi(2),
        kernels,
    };
    let ct_noise = uni(&mut rng, 10.0, 20.0) as f32;

    let pet = make_pet(&anatomy, &lesions, &pet_g, &physics, seed);
    let ct = make_ct(&anatomy, &lesions, &ct_g, ct_noise, seed);
    let mut seg = vec![0u8; pet_g.len()];
    let counts = make_seg(&lesions, &pet_g, &mut seg);

    let lesion_labels: Vec<Lesion> = lesions
        .iter()
        .zip(&counts)
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
        .collect();
    let mut outcomes = derive_outcomes(&lesion_labels);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn small(seed: u64) -> SynthOptions {
        SynthOptions {
            seed,
            size: Size::Small,
        }
    }

    struct Sample {
        study: SyntheticStudy,
        lesions: Vec<PlacedLesion>,
    }

    /// Seeds 0..40, generated once for all voxel-level tests (CT dropped to save memory; it has
    /// its own test).
    fn corpus() -> &'static [Sample] {
        static CORPUS: OnceLock<Vec<Sample>> = OnceLock::new();
        CORPUS.get_or_init(|| {
            (0..40)
                .map(|seed| {
                    let (mut study, lesions) = build(&small(seed));
                    study.ct = Volume::filled(Geometry::axial([1, 1, 1], [1.0; 3], [0.0; 3]), 0.0)
                        .unwrap();
                    Sample { study, lesions }
                })
                .collect()
        })
    }

    /// Chebyshev dilation of a 0/1 mask by `r` voxels.
    fn dilate(mask: &[u8], n: [usize; 3], r: usize) -> Vec<u8> {
        let mut out = vec![0u8; mask.len()];
        for k in 0..n[2] {
            for j in 0..n[1] {
                for i in 0..n[0] {
                    if mask[i + n[0] * (j + n[1] * k)] == 0 {
                        continue;
                    }
                    for kk in k.saturating_sub(r)..(k + r + 1).min(n[2]) {
                        for jj in j.saturating_sub(r)..(j + r + 1).min(n[1]) {
                            for ii in i.saturating_sub(r)..(i + r + 1).min(n[0]) {
                                out[ii + n[0] * (jj + n[1] * kk)] = 1;
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn median(mut v: Vec<f32>) -> f32 {
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    }

    #[test]
    fn same_seed_same_study_and_different_seeds_differ() {
        let a = generate(&small(11));
        let b = generate(&small(11));
        assert_eq!(a.pet, b.pet);
        assert_eq!(a.ct, b.ct);
        assert_eq!(a.seg, b.seg);
        assert_eq!(a.labels, b.labels);
        let c = generate(&small(12));
        assert_ne!(a.pet.data(), c.pet.data());
        assert_ne!(a.ct.data(), c.ct.data());
        assert_ne!(a.labels, c.labels);
    }

    #[test]
    fn grids_match_the_sizes() {
        let s = &corpus()[0].study;
        assert_eq!(s.pet.shape(), [64, 64, 96]);
        assert_eq!(s.seg.geometry(), s.pet.geometry());
        assert_eq!(s.labels.ct.shape, [128, 128, 96]);
    }

    #[test]
    fn clinical_plans_cover_the_scanner_distribution() {
        let plans: Vec<ClinicalPlan> = (0..400).map(ClinicalPlan::draw).collect();
        let range = |f: &dyn Fn(&ClinicalPlan) -> f64| {
            let v: Vec<f64> = plans.iter().map(f).collect();
            (
                v.iter().cloned().fold(f64::INFINITY, f64::min),
                v.iter().cloned().fold(0.0, f64::max),
            )
        };
        let (lo, hi) = range(&|p| p.acquisition.weight_kg);
        assert!(
            lo <= 50.0 && hi >= 130.0 && lo >= 45.0 && hi <= 150.0,
            "weight {lo}..{hi}"
        );
        let (lo, hi) = range(&|p| p.pet.spacing.x);
        assert!(
            (1.6..1.7).contains(&lo) && hi <= 5.5 && hi > 5.4,
            "PET pixel {lo}..{hi}"
        );
        let (lo, hi) = range(&|p| p.pet.spacing.z);
        assert!(lo >= 1.5 && hi <= 5.0, "PET slices {lo}..{hi}");
        let (lo, hi) = range(&|p| p.pet.shape[0] as f64);
        assert!(lo >= 128.0 && hi <= 440.0, "PET matrix {lo}..{hi}");
        let (lo, hi) = range(&|p| p.ct.spacing.x);
        assert!(
            lo >= 500.0 / 512.0 && hi <= 700.0 / 512.0,
            "CT pixel {lo}..{hi}"
        );
        let (lo, hi) = range(&|p| p.ct.spacing.z);
        assert!(lo >= 1.0 && hi <= 5.0, "CT slices {lo}..{hi}");
        // Every family, both arm positions, both starts and both ends occur.
        for (family, _) in SCANNERS {
            assert!(
                plans.iter().any(|p| p.acquisition.scanner == family),
                "{family}"
            );
        }
        let a =
            |f: &dyn Fn(&Acquisition) -> bool| plans.iter().filter(|p| f(&p.acquisition)).count();
        assert!(a(&|q| q.arms == Arms::Up) > 200 && a(&|q| q.arms == Arms::Down) > 60);
        assert!(
            a(&|q| q.from == AxialStart::SkullBase) > 60 && a(&|q| q.to == AxialEnd::Feet) > 40
        );
        for p in &plans {
            // The CT covers the PET's axial extent, on its own origin.
            let pet_top = p.pet.origin.z + (p.pet.shape[2] - 1) as f64 * p.pet.spacing.z;
            let ct_top = p.ct.origin.z + (p.ct.shape[2] - 1) as f64 * p.ct.spacing.z;
            assert!(p.ct.origin.z <= p.pet.origin.z && ct_top >= pet_top - 1e-9);
            let extent = pet_top - p.pet.origin.z;
            assert!((600.0..2100.0).contains(&extent), "axial extent {extent}");
        }
    }

    #[test]
    fn lesions_have_mask_voxels_that_match_the_labels() {
        let corpus = corpus();
        let empty = corpus
            .iter()
            .filter(|s| s.study.labels.lesions.is_empty())
            .count();
        assert!(empty >= 4, "only {empty} of 40 studies without lesions");
        assert!(empty <= 20, "{empty} of 40 studies without lesions");
        for s in corpus {
            let labels = &s.study.labels;
            let seg = s.study.seg.data();
            let total: u64 = labels.lesions.iter().map(|l| l.voxels).sum();
            let marked = seg.iter().filter(|&&v| v == 1).count() as u64;
            assert_eq!(total, marked, "seed {}", labels.seed);
            assert!(seg.iter().all(|&v| v <= 1));
            for (l, placed) in labels.lesions.iter().zip(&s.lesions) {
                assert!(l.voxels >= 1, "seed {} lesion {}", labels.seed, l.id);
                let mut own = vec![0u8; seg.len()];
                let counts = make_seg(
                    std::slice::from_ref(placed),
                    s.study.seg.geometry(),
                    &mut own,
                );
                assert_eq!(counts[0], l.voxels);
                assert!(own.iter().zip(seg).all(|(o, s)| *o <= *s));
                assert!((3.0..=15.0).contains(&l.radii_mm.iter().cloned().fold(0.0, f64::max)));
                assert!((2.0..=15.0).contains(&l.suv_peak));
            }
        }
    }

    #[test]
    fn lesions_are_hotter_than_their_surroundings() {
        for s in corpus() {
            if s.lesions.is_empty() {
                continue;
            }
            let pet = s.study.pet.data();
            let seg = s.study.seg.data();
            let n = s.study.pet.shape();
            let ring = dilate(seg, n, 2);
            let mean = |sel: &dyn Fn(usize) -> bool| {
                let v: Vec<f64> = (0..pet.len())
                    .filter(|&i| sel(i))
                    .map(|i| pet[i] as f64)
                    .collect();
                v.iter().sum::<f64>() / v.len() as f64
            };
            let inside = mean(&|i| seg[i] == 1);
            let shell = mean(&|i| ring[i] == 1 && seg[i] == 0);
            let seed = s.study.labels.seed;
            assert!(inside > shell, "seed {seed}: inside {inside} shell {shell}");
            for (l, placed) in s.study.labels.lesions.iter().zip(&s.lesions) {
                let mut own = vec![0u8; seg.len()];
                make_seg(
                    std::slice::from_ref(placed),
                    s.study.seg.geometry(),
                    &mut own,
                );
                let own_ring = dilate(&own, n, 2);
                let max = (0..pet.len())
                    .filter(|&i| own[i] == 1)
                    .map(|i| pet[i])
                    .fold(0.0, f32::max);
                let shell: Vec<f32> = (0..pet.len())
                    .filter(|&i| own_ring[i] == 1 && seg[i] == 0)
                    .map(|i| pet[i])
                    .collect();
                let med = median(shell);
                assert!(
                    max > med,
                    "seed {seed} lesion {}: max {max} shell median {med}",
                    l.id
                );
            }
        }
    }

    #[test]
    fn lesions_sit_in_their_hosts_and_outside_hot_organs() {
        for seed in 0..40 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (pet, _) = small_grids();
            let anatomy = build_anatomy(&pet, &mut rng, None);
            let lesions = &corpus()[seed as usize].lesions;
            for l in lesions {
                assert!(l.site.host().contains(&anatomy.tissue_at(&l.shape.c)));
                for u in probe_directions() {
                    let p = l.shape.point(&u, 1.0, 0.0);
                    assert!(
                        anatomy.hot_organ_at(&p).is_none(),
                        "seed {seed}: {:?}",
                        l.site
                    );
                }
                let [lo, hi] = anatomy.head_neck_z;
                assert_eq!(l.site.is_head_neck(), (lo..=hi).contains(&l.shape.c.z));
            }
        }
    }

    #[test]
    fn outcomes_follow_the_rules_and_are_balanced() {
        let mut positive = [0usize; 3];
        let n = 60;
        for seed in 0..n {
            let labels = generate(&small(seed)).labels;
            let rules = derive_outcomes(&labels.lesions);
            let o = labels.outcomes;
            for (name, got, rule) in [
                ("lr", o.lr, rules.lr),
                ("dm", o.dm, rules.dm),
                ("os", o.os, rules.os),
            ] {
                let flipped = labels.flipped.iter().any(|f| f == name);
                assert_eq!(got == rule, !flipped, "seed {seed} {name}");
            }
            positive[0] += o.lr as usize;
            positive[1] += o.dm as usize;
            positive[2] += o.os as usize;
        }
        for (name, p) in ["lr", "dm", "os"].iter().zip(positive) {
            let rate = p as f64 / n as f64;
            assert!((0.1..=0.6).contains(&rate), "{name} prevalence {rate}");
        }
    }

    #[test]
    fn values_are_physical() {
        for s in corpus() {
            let pet = s.study.pet.data();
            assert!(pet.iter().all(|v| v.is_finite() && *v >= 0.0));
            for (p, m) in pet.iter().zip(s.study.seg.data()) {
                assert!(*m == 0 || *p > 0.0);
            }
        }
        for seed in [0, 5] {
            let s = generate(&small(seed));
            assert!(
                s.ct.data()
                    .iter()
                    .all(|v| (-1024.0..=3071.0).contains(v) && v.fract() == 0.0)
            );
        }
    }

    #[test]
    fn liver_noise_is_in_the_target_range() {
        // Liver SNR after blur is drawn from 8–15; texture adds a little, so allow 5–18.
        let seed = 3;
        let s = generate(&small(seed));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let anatomy = build_anatomy(s.pet.geometry(), &mut rng, None);
        let g = s.pet.geometry();
        let [nx, ny, nz] = g.shape;
        let mut v = Vec::new();
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let p = g.index_to_world(Vector3::new(i as f64, j as f64, k as f64));
                    let deep = [-8.0, 8.0].iter().all(|d| {
                        (0..3).all(|a| {
                            let mut q = p;
                            q[a] += d;
                            anatomy.tissue_at(&q) == tissue::LIVER
                        })
                    });
                    if deep && s.seg.data()[g.linear_index(i, j, k)] == 0 {
                        v.push(*s.pet.at(i, j, k) as f64);
                    }
                }
            }
        }
        assert!(v.len() > 20, "{} deep liver voxels", v.len());
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!((1.6..=3.0).contains(&mean), "liver mean {mean}");
        assert!(
            (5.0..=18.0).contains(&(mean / sd)),
            "liver SNR {}",
            mean / sd
        );
    }

    /// SHA-256 (first 16 hex digits) of a volume's voxel bytes.
    fn digest<T: bytemuck::Pod>(v: &Volume<T>) -> String {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(bytemuck::cast_slice::<T, u8>(v.data()));
        d.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Pins what the generator makes, so that refactoring it provably changes nothing: the voxels
    /// of a small study and of a clinical one (generator version 2).
    #[test]
    fn generated_voxels_are_pinned() {
        let pins = [
            (
                small(0),
                ["36d01dd2c33a8a10", "10dc0b5a1ff867d7", "5b7645de502b05da"],
            ),
            (
                SynthOptions {
                    seed: 0,
                    size: Size::Clinical,
                },
                ["c39f1fe5270ced22", "6840f9bce2322104", "d470e778636e3655"],
            ),
        ];
        for (options, [pet, ct, seg]) in pins {
            let s = generate(&options);
            let got = [digest(&s.pet), digest(&s.ct), digest(&s.seg)];
            eprintln!("{} seed {}: {got:?}", options.size, options.seed);
            assert_eq!(
                got,
                [pet, ct, seg],
                "{} seed {}",
                options.size,
                options.seed
            );
        }
    }

    #[test]
    fn write_nifti_round_trips_and_is_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let study = generate(&small(2));
        let a = dir.path().join("a");
        let b = dir.path().join("nested/b");
        write_nifti(&study, &a).unwrap();
        write_nifti(&generate(&small(2)), &b).unwrap();
        for name in ["SUV.nii.gz", "CT.nii.gz", "SEG.nii.gz", "labels.json"] {
            let x = std::fs::read(a.join(name)).unwrap();
            assert_eq!(x, std::fs::read(b.join(name)).unwrap(), "{name}");
        }
        for (name, vol) in [("SUV.nii.gz", &study.pet), ("CT.nii.gz", &study.ct)] {
            let back = nifti::read_f32(&a.join(name)).unwrap();
            assert_eq!(back.data(), vol.data(), "{name}");
            let d = (back.geometry().affine_lps() - vol.geometry().affine_lps())
                .abs()
                .max();
            assert!(d < 1e-4, "{name}: affine differs by {d}");
        }
        let seg = nifti::read_u8(&a.join("SEG.nii.gz")).unwrap();
        assert_eq!(seg.data(), study.seg.data());
        let text = std::fs::read_to_string(a.join("labels.json")).unwrap();
        assert!(text.ends_with("}\n"));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in [
            "schema",
            "generator_version",
            "seed",
            "size",
            "pet",
            "ct",
            "head_neck_region_mm",
            "lesions",
            "outcomes",
            "derivation",
            "flipped",
            "note",
        ] {
            assert!(json.get(key).is_some(), "labels.json lacks {key}");
        }
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(json["size"], "small");
        let back: Labels = serde_json::from_str(&text).unwrap();
        assert_eq!(back, study.labels);
    }

    #[test]
    fn size_parses_and_prints() {
        for size in [Size::Small, Size::Clinical] {
            assert_eq!(size.to_string().parse::<Size>(), Ok(size));
            assert_eq!(serde_json::to_string(&size).unwrap(), format!("\"{size}\""));
        }
        assert_eq!("Clinical".parse::<Size>(), Ok(Size::Clinical));
        assert!("huge".parse::<Size>().is_err());
    }
}
