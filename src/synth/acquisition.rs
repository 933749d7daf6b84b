//! Grids and clinical acquisitions: the small size's fixed grids and, for the clinical size, the
//! patient, scanner and protocol drawn per seed ([`ClinicalPlan`]).

use super::*;

/// LPS z of the top PET slice centre; the vertex sits just below it.
pub(super) const FOV_TOP_Z: f64 = 30.0;

pub(super) fn centred(n: usize, spacing: f64) -> f64 {
    -(n as f64 - 1.0) * spacing / 2.0
}

/// PET and CT grids of the small size. The CT's origin is offset by a fraction of a voxel in
/// every axis so that nothing downstream can get away with assuming the grids share voxel centres.
/// (A clinical study's grids come from its [`ClinicalPlan`].)
pub(super) fn small_grids() -> (Geometry, Geometry) {
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

/// Seed tag of the acquisition draws (patient habitus, scanner, protocol), kept apart from the
/// anatomy's generator so that the small size's draws are untouched by them.
pub(super) const TAG_ACQUISITION: u64 = 0x4143_515f_4745_4f4d;

/// One PET reconstruction a scanner family offers: matrix, in-plane pixel and the slice
/// spacings it is used with.
pub(super) struct Reconstruction {
    pub(super) matrix: usize,
    pub(super) pixel_mm: f64,
    pub(super) slices_mm: &'static [f64],
}

/// Scanner families and the PET grids they write (vendor data sheets and public studies).
pub(super) const SCANNERS: [(&str, &[Reconstruction]); 5] = [
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
pub(super) const CT_SLICES_MM: [f64; 9] = [1.0, 2.0, 2.5, 3.0, 3.0, 3.75, 3.75, 5.0, 5.0];

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
pub(super) struct ClinicalPlan {
    pub(super) acquisition: Acquisition,
    pub(super) pet: Geometry,
    pub(super) ct: Geometry,
    pub(super) body: Body,
    /// Body-frame depth (mm below the vertex) where the legs end: mid-thigh or the soles.
    pub(super) legs_to: f64,
    pub(super) bladder_scale: f64,
    pub(super) bladder_suv: f64,
    pub(super) myocardium_suv: f64,
}

/// Scale and placement of the body frame, and the outline's girth and fat layer.
#[derive(Debug, Clone)]
pub(super) struct Body {
    pub(super) sxy: f64,
    pub(super) sy: f64,
    pub(super) sz: f64,
    /// FOV top minus the vertex, mm (negative: the vertex lies above the field of view).
    pub(super) margin: f64,
    pub(super) ox: f64,
    pub(super) oy: f64,
    pub(super) girth: f64,
    pub(super) fat: f64,
}

impl Body {
    /// The small size's child-sized body; the draw order is that of every earlier version.
    pub(super) fn small(rng: &mut ChaCha8Rng) -> Body {
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
pub(super) const SOLE_T: f64 = 1720.0;

impl ClinicalPlan {
    /// Draws a patient and a scanner protocol: weight 45–150 kg, height 1.50–1.95 m, arms up or
    /// down, vertex or skull base to mid-thigh or feet, one of [`SCANNERS`]' PET grids, a 512²
    /// CT of 500–700 mm with its own slices, origin and extent.
    pub(super) fn draw(seed: u64) -> ClinicalPlan {
        let rng = &mut sub_rng(seed, TAG_ACQUISITION, 0);
        // The order of the draws is the generator's: same seed, same bytes.
        let p = Patient::draw(rng);
        let (family, pet) = pet_grid(rng, p.margin + p.sz * p.legs_to);
        let ct = ct_grid(rng, &pet);
        let myocardium_suppressed = rng.random_bool(0.35);
        let myocardium_suv = if myocardium_suppressed {
            uni(rng, 1.5, 2.5)
        } else {
            log_uni(rng, 3.0, 12.0)
        };
        let body = Body {
            sxy: p.sxy,
            sy: p.sxy * jit(rng, 0.03),
            sz: p.sz,
            margin: p.margin,
            ox: uni(rng, -30.0, 30.0),
            oy: uni(rng, -20.0, 40.0),
            girth: p.girth,
            fat: p.fat,
        };
        ClinicalPlan {
            acquisition: Acquisition {
                scanner: family.to_string(),
                weight_kg: round_dp(p.weight_kg, 1),
                height_m: round_dp(p.height_m, 2),
                arms: p.arms,
                from: p.from,
                to: p.to,
                psf_fwhm_mm: round_dp(uni(rng, 5.0, 7.5), 2),
                myocardium_suppressed,
            },
            pet,
            ct,
            body,
            legs_to: p.legs_to,
            bladder_scale: uni(rng, 0.55, 1.7),
            bladder_suv: log_uni(rng, 5.0, 60.0),
            myocardium_suv,
        }
    }
}

/// The patient's habitus and the axial range of the scan.
struct Patient {
    height_m: f64,
    weight_kg: f64,
    /// Body-frame scales, lateral and axial.
    sxy: f64,
    sz: f64,
    girth: f64,
    fat: f64,
    arms: Arms,
    from: AxialStart,
    to: AxialEnd,
    /// FOV top minus the vertex, mm ([`Body::margin`]).
    margin: f64,
    /// Body-frame depth where the field of view ends ([`ClinicalPlan::legs_to`]).
    legs_to: f64,
}

impl Patient {
    fn draw(rng: &mut ChaCha8Rng) -> Patient {
        let height_m = (1.72 + 0.09 * normal(rng)).clamp(1.50, 1.95);
        let bmi = log_uni(rng, 17.0, 45.0);
        let weight_kg = (bmi * height_m * height_m).clamp(45.0, 150.0);
        let bmi = weight_kg / (height_m * height_m);
        let sxy = (height_m / 1.75).sqrt() * jit(rng, 0.04);
        let sz = 0.98 * height_m / 1.75;
        let girth = (bmi / 24.0).sqrt().clamp(0.85, 1.4) * jit(rng, 0.03);
        let fat = (8.0 + 110.0 * (girth - 0.88)).clamp(6.0, 65.0) * jit(rng, 0.15);
        let arms = match rng.random_bool(0.7) {
            true => Arms::Up,
            false => Arms::Down,
        };
        let from = match rng.random_bool(0.7) {
            true => AxialStart::Vertex,
            false => AxialStart::SkullBase,
        };
        let to = match rng.random_bool(0.8) {
            true => AxialEnd::MidThigh,
            false => AxialEnd::Feet,
        };
        let margin = match from {
            AxialStart::Vertex => uni(rng, 10.0, 40.0),
            AxialStart::SkullBase => -sz * uni(rng, 150.0, 190.0),
        };
        let legs_to = match to {
            AxialEnd::MidThigh => uni(rng, 960.0, 1100.0),
            AxialEnd::Feet => SOLE_T + uni(rng, 5.0, 30.0),
        };
        Patient {
            height_m,
            weight_kg,
            sxy,
            sz,
            girth,
            fat,
            arms,
            from,
            to,
            margin,
            legs_to,
        }
    }
}

/// One of [`SCANNERS`]' reconstructions, its PET grid covering `extent` mm below the field of
/// view's top.
fn pet_grid(rng: &mut ChaCha8Rng, extent: f64) -> (&'static str, Geometry) {
    let (family, recons) = SCANNERS[rng.random_range(0..SCANNERS.len())];
    let recon = &recons[rng.random_range(0..recons.len())];
    let slice = pick(rng, recon.slices_mm);
    let nz = (extent / slice).ceil() as usize + 1;
    let n = recon.matrix;
    let pet = Geometry::axial(
        [n, n, nz],
        [recon.pixel_mm, recon.pixel_mm, slice],
        [
            centred(n, recon.pixel_mm),
            centred(n, recon.pixel_mm),
            FOV_TOP_Z - (nz as f64 - 1.0) * slice,
        ],
    );
    (family, pet)
}

/// The CT's own grid around `pet`: 512² over 500–700 mm, its own slices, reaching up to 15 mm
/// beyond the PET at each end, its centre off by up to half a voxel.
fn ct_grid(rng: &mut ChaCha8Rng, pet: &Geometry) -> Geometry {
    let ct_xy = uni(rng, 500.0, 700.0) / 512.0;
    let ct_slice = pick(rng, &CT_SLICES_MM);
    let (below, above) = (uni(rng, 0.0, 15.0), uni(rng, 0.0, 15.0));
    let pet_length = (pet.shape[2] - 1) as f64 * pet.spacing.z;
    let ct_nz = ((pet_length + below + above) / ct_slice).ceil() as usize + 1;
    Geometry::axial(
        [512, 512, ct_nz],
        [ct_xy, ct_xy, ct_slice],
        [
            centred(512, ct_xy) + uni(rng, -0.5, 0.5) * ct_xy,
            centred(512, ct_xy) + uni(rng, -0.5, 0.5) * ct_xy,
            pet.origin.z - below,
        ],
    )
}

/// Body-frame knots `[T, X, Y, rX, rY]` of one arm (`side` ±1), outside the outline of a torso
/// of `girth`: beside the head when raised, beside the trunk when down.
pub(super) fn arm(side: f64, arms: Arms, girth: f64) -> Vec<[f64; 5]> {
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
pub(super) fn leg(side: f64) -> Vec<[f64; 5]> {
    let mut knots = thigh(side).to_vec();
    knots.extend([
        [1330.0, 90.0 * side, 5.0, 52.0, 56.0],
        [1450.0, 88.0 * side, 10.0, 48.0, 52.0],
        [1660.0, 85.0 * side, 5.0, 28.0, 30.0],
        [SOLE_T, 85.0 * side, -25.0, 32.0, 55.0],
    ]);
    knots
}
