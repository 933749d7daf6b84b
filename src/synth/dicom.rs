//! `tracerd synth --format dicom`: a synthetic study as the files a scanner would export.
//!
//! * **PET**: PET Image Storage, one file per slice, Units BQML, DecayCorrection START,
//!   CorrectedImage ATTN\DECY\…, signed 16-bit stored values with a **per-slice**
//!   RescaleSlope (each slice's maximum maps to 32767), a realistic weight, dose, half-life and
//!   injection/series/acquisition times. The activity written is the synthetic SUV divided by
//!   the SUVbw factor those tags imply, so converting back gives the NIfTI SUV of the same seed
//!   to within the int16 quantisation (≤ 1.6e-5 of each slice's maximum).
//! * **CT**: CT Image Storage, stored = HU + 1024 (unsigned), RescaleIntercept −1024, slope 1:
//!   exact for the integer HU the generator makes.
//! * Both share one FrameOfReferenceUID. UIDs are `2.25.` + a 128-bit hash of the seed and the
//!   item, so the same seed gives the same files.
//! * Layout: `DICOM/<x>/<y>/IM<hash>` — nested and in no meaningful order — plus a stray
//!   non-DICOM `DICOM/README.txt`, and `labels.json` beside `DICOM/`.
//!
//! The patient is `SYNTHETIC^SEED<n>`: no real identifier, and never logged like any other.

use std::io;
use std::path::{Path, PathBuf};

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use rayon::prelude::*;

use super::SyntheticStudy;
use crate::fsio;
use crate::io::dicom::assemble::{CT_IMAGE_STORAGE, PET_IMAGE_STORAGE};
use crate::io::dicom::write::{ds, write_part10};
use crate::io::dicom::{DicomError, DicomErrorKind, Stage};
use crate::volume::Volume;

/// F-18 half-life (s) as scanners write it.
pub const F18_HALF_LIFE_S: f64 = 6586.2;

/// The SUV-relevant header values a synthetic PET carries (chosen from the seed).
#[derive(Debug, Clone, PartialEq)]
pub struct SynthPetTags {
    pub weight_kg: f64,
    pub dose_bq: f64,
    /// Seconds after midnight.
    pub injection_s: u32,
    pub series_s: u32,
    pub study_date: &'static str,
}

impl SynthPetTags {
    pub fn for_seed(seed: u64) -> Self {
        let h = mix(seed, 0x5355_565f_5441_4753);
        let weight_kg = 55.0 + (h % 50) as f64 + 0.5 * ((h >> 8) % 2) as f64;
        let dose_bq = (250 + (h >> 16) % 200) as f64 * 1e6;
        let injection_s = 8 * 3600 + ((h >> 32) % 7200) as u32;
        let uptake = 50 * 60 + ((h >> 48) % 1200) as u32;
        SynthPetTags {
            weight_kg,
            dose_bq,
            injection_s,
            series_s: injection_s + uptake,
            study_date: "20240315",
        }
    }

    /// SUVbw factor these tags imply (DESIGN §6, START): W[g] / (D·2^(−Δt/T½)).
    pub fn suv_factor(&self) -> f64 {
        let dt = (self.series_s - self.injection_s) as f64;
        self.weight_kg * 1000.0 / (self.dose_bq * 2f64.powf(-dt / F18_HALF_LIFE_S))
    }
}

fn tm(s: u32) -> String {
    format!("{:02}{:02}{:02}", s / 3600, (s / 60) % 60, s % 60)
}

fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `2.25.<128-bit decimal>` from the seed, a role and an index.
pub fn synth_uid(seed: u64, role: u64, index: u64) -> String {
    let hi = mix(mix(seed, role), index);
    let lo = mix(hi, 0x0055_4944);
    format!("2.25.{}", ((hi as u128) << 64 | lo as u128) >> 1)
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) {
    obj.put(DataElement::new(tag, vr, value.into()));
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    put(obj, tag, vr, value);
}

/// Study-level elements shared by every file of the study.
struct Common {
    seed: u64,
    study_uid: String,
    frame_of_reference_uid: String,
    tags: SynthPetTags,
}

impl Common {
    fn fill(&self, obj: &mut InMemDicomObject) {
        let name = format!("SYNTHETIC^SEED{}", self.seed);
        put_str(obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
        put_str(obj, tags::PATIENT_NAME, VR::PN, &name);
        put_str(
            obj,
            tags::PATIENT_ID,
            VR::LO,
            &format!("SYNTH{}", self.seed),
        );
        put_str(obj, tags::PATIENT_BIRTH_DATE, VR::DA, "");
        put_str(obj, tags::PATIENT_SEX, VR::CS, "O");
        put_str(obj, tags::STUDY_INSTANCE_UID, VR::UI, &self.study_uid);
        put_str(obj, tags::STUDY_DATE, VR::DA, self.tags.study_date);
        put_str(obj, tags::STUDY_TIME, VR::TM, &tm(self.tags.injection_s));
        put_str(obj, tags::STUDY_ID, VR::SH, "SYNTH");
        put_str(obj, tags::ACCESSION_NUMBER, VR::SH, "");
        put_str(obj, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
        put_str(
            obj,
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &self.frame_of_reference_uid,
        );
        put_str(obj, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
        put_str(obj, tags::MANUFACTURER, VR::LO, "tracerd synthetic");
        put_str(obj, tags::PATIENT_POSITION, VR::CS, "HFS");
        put_str(obj, tags::SERIES_DATE, VR::DA, self.tags.study_date);
        put_str(obj, tags::ACQUISITION_DATE, VR::DA, self.tags.study_date);
        put_str(obj, tags::CONTENT_DATE, VR::DA, self.tags.study_date);
    }
}

/// Geometry elements of slice k of `vol` (axial LPS grid).
fn fill_plane(obj: &mut InMemDicomObject, vol: &Volume<f32>, k: usize) {
    let g = vol.geometry();
    let p = g.index_to_world(nalgebra::Vector3::new(0.0, 0.0, k as f64));
    let (r, c) = (g.direction.column(0), g.direction.column(1));
    put_str(
        obj,
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        &format!("{}\\{}\\{}", ds(p.x), ds(p.y), ds(p.z)),
    );
    put_str(
        obj,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        &[r[0], r[1], r[2], c[0], c[1], c[2]].map(ds).join("\\"),
    );
    put_str(
        obj,
        tags::PIXEL_SPACING,
        VR::DS,
        &format!("{}\\{}", ds(g.spacing[1]), ds(g.spacing[0])),
    );
    put_str(obj, tags::SLICE_THICKNESS, VR::DS, &ds(g.spacing[2]));
    put_str(obj, tags::SLICE_LOCATION, VR::DS, &ds(p.z));
    put(obj, tags::ROWS, VR::US, g.shape[1] as u16);
    put(obj, tags::COLUMNS, VR::US, g.shape[0] as u16);
    put(obj, tags::SAMPLES_PER_PIXEL, VR::US, 1u16);
    put_str(obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
}

/// Where the synthetic DICOM went.
#[derive(Debug, Clone)]
pub struct DicomSynthSummary {
    pub dicom_dir: PathBuf,
    pub pet_files: usize,
    pub ct_files: usize,
    pub study_uid: String,
    pub pet_series_uid: String,
    pub ct_series_uid: String,
    pub suv_factor: f64,
}

/// A file name from a hash, in a two-level folder: `DICOM/3/a/IM3A7F01C2`.
fn scattered(dir: &Path, seed: u64, role: u64, index: u64) -> PathBuf {
    let h = mix(mix(seed, role ^ 0x4c41_594f_5554), index);
    dir.join(format!("{:x}", h & 0xf))
        .join(format!("{:x}", (h >> 4) & 0xf))
        .join(format!("IM{:08X}", (h >> 8) as u32))
}

const ROLE_STUDY: u64 = 1;
const ROLE_FOR: u64 = 2;
const ROLE_PET_SERIES: u64 = 3;
const ROLE_CT_SERIES: u64 = 4;
const ROLE_PET_SOP: u64 = 5;
const ROLE_CT_SOP: u64 = 6;

/// Writes the study as DICOM under `out/DICOM/` (plus `labels.json` in `out`).
pub fn write_dicom(study: &SyntheticStudy, out: &Path) -> Result<DicomSynthSummary, DicomError> {
    let seed = study.labels.seed;
    let dicom_dir = out.join("DICOM");
    std::fs::create_dir_all(&dicom_dir).map_err(|e| write_error(&dicom_dir, e))?;
    let common = Common {
        seed,
        study_uid: synth_uid(seed, ROLE_STUDY, 0),
        frame_of_reference_uid: synth_uid(seed, ROLE_FOR, 0),
        tags: SynthPetTags::for_seed(seed),
    };
    let pet_series = synth_uid(seed, ROLE_PET_SERIES, 0);
    let ct_series = synth_uid(seed, ROLE_CT_SERIES, 0);
    let [.., nz] = study.pet.shape();
    (0..nz).into_par_iter().try_for_each(|k| {
        let (obj, sop) = pet_slice(&common, &pet_series, &study.pet, k);
        let path = scattered(&dicom_dir, seed, ROLE_PET_SOP, k as u64);
        write_part10(&path, obj, PET_IMAGE_STORAGE, &sop).map_err(|e| write_error(&path, e))
    })?;
    let [.., cz] = study.ct.shape();
    (0..cz).into_par_iter().try_for_each(|k| {
        let (obj, sop) = ct_slice(&common, &ct_series, &study.ct, k);
        let path = scattered(&dicom_dir, seed, ROLE_CT_SOP, k as u64);
        write_part10(&path, obj, CT_IMAGE_STORAGE, &sop).map_err(|e| write_error(&path, e))
    })?;
    write_side_files(study, out, &dicom_dir)?;
    Ok(DicomSynthSummary {
        dicom_dir,
        pet_files: nz,
        ct_files: cz,
        suv_factor: common.tags.suv_factor(),
        study_uid: common.study_uid,
        pet_series_uid: pet_series,
        ct_series_uid: ct_series,
    })
}

fn write_error(path: &Path, e: io::Error) -> DicomError {
    DicomError::new(
        Stage::Write,
        path.display().to_string(),
        DicomErrorKind::Write(e.to_string()),
    )
}

/// PET slice `k` as a scanner writes it: activity in Bq/ml stored as int16 with the slice's own
/// RescaleSlope, decay-corrected to the series start; returns the object and its SOP UID.
fn pet_slice(
    common: &Common,
    series: &str,
    pet: &Volume<f32>,
    k: usize,
) -> (InMemDicomObject, String) {
    let [nx, ny, nz] = pet.shape();
    let t = &common.tags;
    let (slope, stored) = pet_pixels(&pet.data()[k * nx * ny..][..nx * ny], t.suv_factor());
    let sop = synth_uid(common.seed, ROLE_PET_SOP, k as u64);
    let id = identity(
        PET_IMAGE_STORAGE,
        &sop,
        "PT",
        series,
        "2",
        "PET WB AC (synthetic)",
    );
    let header = id.into_iter().chain([
        (tags::SERIES_TIME, VR::TM, tm(t.series_s)),
        (tags::ACQUISITION_TIME, VR::TM, tm(t.series_s + 5)),
        (tags::CONTENT_TIME, VR::TM, tm(t.series_s + 5)),
        (tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY".into()),
        (tags::INSTANCE_NUMBER, VR::IS, (nz - k).to_string()),
        (tags::ACQUISITION_NUMBER, VR::IS, "1".into()),
        (tags::RESCALE_SLOPE, VR::DS, slope),
        (tags::RESCALE_INTERCEPT, VR::DS, "0".into()),
        (tags::RESCALE_TYPE, VR::LO, "BQML".into()),
        (tags::UNITS, VR::CS, "BQML".into()),
        (tags::DECAY_CORRECTION, VR::CS, "START".into()),
        (
            tags::CORRECTED_IMAGE,
            VR::CS,
            "NORM\\DTIM\\ATTN\\SCAT\\DECY\\RAN".into(),
        ),
        (tags::SERIES_TYPE, VR::CS, "WHOLE BODY\\IMAGE".into()),
        (tags::COUNTS_SOURCE, VR::CS, "EMISSION".into()),
        (tags::RANDOMS_CORRECTION_METHOD, VR::CS, "DLYD".into()),
        (tags::ATTENUATION_CORRECTION_METHOD, VR::LO, "CT".into()),
        (tags::RECONSTRUCTION_METHOD, VR::LO, "OSEM".into()),
        (tags::PATIENT_WEIGHT, VR::DS, ds(t.weight_kg)),
        (tags::ACTUAL_FRAME_DURATION, VR::IS, "120000".into()),
        (tags::FRAME_REFERENCE_TIME, VR::DS, "0".into()),
        (tags::DECAY_FACTOR, VR::DS, "1".into()),
    ]);
    let mut obj = image(common, header, pet, k, stored, [16, 1]);
    put(&mut obj, tags::NUMBER_OF_SLICES, VR::US, nz as u16);
    put(&mut obj, tags::IMAGE_INDEX, VR::US, (k + 1) as u16);
    obj.put(DataElement::new(
        tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![radiopharmaceutical(t)]),
    ));
    (obj, sop)
}

/// A PET slice's SUVs as Bq/ml in int16 (two's complement in u16 words) with the slice's own
/// RescaleSlope, written as text first so that the stored values use the slope a reader parses.
fn pet_pixels(suv: &[f32], suv_factor: f64) -> (String, Vec<u16>) {
    let bqml: Vec<f64> = suv.iter().map(|&s| s as f64 / suv_factor).collect();
    let max = bqml.iter().cloned().fold(0.0, f64::max);
    let slope_text = ds(if max > 0.0 { max / 32767.0 } else { 1.0 });
    let slope: f64 = slope_text.parse().expect("ds() writes a number");
    let stored = bqml
        .iter()
        .map(|v| ((v / slope).round().clamp(-32768.0, 32767.0) as i16) as u16)
        .collect();
    (slope_text, stored)
}

/// SOP class and instance, modality, series UID, number and description of one image.
fn identity(
    sop_class: &str,
    sop: &str,
    modality: &str,
    series: &str,
    number: &str,
    description: &str,
) -> [(Tag, VR, String); 6] {
    [
        (tags::SOP_CLASS_UID, VR::UI, sop_class.into()),
        (tags::SOP_INSTANCE_UID, VR::UI, sop.into()),
        (tags::MODALITY, VR::CS, modality.into()),
        (tags::SERIES_INSTANCE_UID, VR::UI, series.into()),
        (tags::SERIES_NUMBER, VR::IS, number.into()),
        (tags::SERIES_DESCRIPTION, VR::LO, description.into()),
    ]
}

/// One image: the study's common tags, `header`, the plane of slice `k` of `vol`, and the
/// `stored` 16-bit words with `[bits_stored, pixel_representation]`.
fn image(
    common: &Common,
    header: impl IntoIterator<Item = (Tag, VR, String)>,
    vol: &Volume<f32>,
    k: usize,
    stored: Vec<u16>,
    [bits_stored, representation]: [u16; 2],
) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    common.fill(&mut obj);
    for (tag, vr, value) in header {
        put_str(&mut obj, tag, vr, &value);
    }
    fill_plane(&mut obj, vol, k);
    put(&mut obj, tags::BITS_ALLOCATED, VR::US, 16u16);
    put(&mut obj, tags::BITS_STORED, VR::US, bits_stored);
    put(&mut obj, tags::HIGH_BIT, VR::US, bits_stored - 1);
    put(&mut obj, tags::PIXEL_REPRESENTATION, VR::US, representation);
    put(
        &mut obj,
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(stored.into()),
    );
    obj
}

/// The Radiopharmaceutical Information Sequence item: 18F-FDG, injection time and dose.
fn radiopharmaceutical(t: &SynthPetTags) -> InMemDicomObject {
    let mut rp = InMemDicomObject::new_empty();
    for (tag, vr, value) in [
        (
            tags::RADIOPHARMACEUTICAL,
            VR::LO,
            "Fluorodeoxyglucose".into(),
        ),
        (
            tags::RADIOPHARMACEUTICAL_START_TIME,
            VR::TM,
            tm(t.injection_s),
        ),
        (
            tags::RADIOPHARMACEUTICAL_START_DATE_TIME,
            VR::DT,
            format!("{}{}", t.study_date, tm(t.injection_s)),
        ),
        (tags::RADIONUCLIDE_TOTAL_DOSE, VR::DS, ds(t.dose_bq)),
        (tags::RADIONUCLIDE_HALF_LIFE, VR::DS, ds(F18_HALF_LIFE_S)),
        (tags::RADIONUCLIDE_POSITRON_FRACTION, VR::DS, "0.97".into()),
    ] {
        put_str(&mut rp, tag, vr, &value);
    }
    rp
}

/// CT slice `k`: HU + 1024 in 12 bits, RescaleIntercept -1024; returns the object and its SOP UID.
fn ct_slice(
    common: &Common,
    series: &str,
    ct: &Volume<f32>,
    k: usize,
) -> (InMemDicomObject, String) {
    let [cx, cy, _] = ct.shape();
    let stored: Vec<u16> = ct.data()[k * cx * cy..][..cx * cy]
        .iter()
        .map(|&hu| (hu.round() + 1024.0).clamp(0.0, 4095.0) as u16)
        .collect();
    let sop = synth_uid(common.seed, ROLE_CT_SOP, k as u64);
    let time = tm(common.tags.series_s - 120);
    let id = identity(
        CT_IMAGE_STORAGE,
        &sop,
        "CT",
        series,
        "1",
        "CT WB (synthetic)",
    );
    let header = id.into_iter().chain([
        (tags::SERIES_TIME, VR::TM, time.clone()),
        (tags::ACQUISITION_TIME, VR::TM, time.clone()),
        (tags::CONTENT_TIME, VR::TM, time),
        (tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL".into()),
        (tags::INSTANCE_NUMBER, VR::IS, (k + 1).to_string()),
        (tags::ACQUISITION_NUMBER, VR::IS, "1".into()),
        (tags::RESCALE_SLOPE, VR::DS, "1".into()),
        (tags::RESCALE_INTERCEPT, VR::DS, "-1024".into()),
        (tags::RESCALE_TYPE, VR::LO, "HU".into()),
        (tags::KVP, VR::DS, "120".into()),
    ]);
    (image(common, header, ct, k, stored, [12, 0]), sop)
}

/// The stray non-DICOM file of a real export folder, and the ground truth beside `DICOM/`.
fn write_side_files(
    study: &SyntheticStudy,
    out: &Path,
    dicom_dir: &Path,
) -> Result<(), DicomError> {
    let readme = dicom_dir.join("README.txt");
    fsio::write_bytes_atomic(
        &readme,
        b"Synthetic PET/CT study written by tracerd synth --format dicom; not patient data.\n",
    )
    .map_err(|e| write_error(&readme, e))?;
    let mut json = serde_json::to_vec_pretty(&study.labels)
        .map_err(|e| write_error(out, io::Error::other(e)))?;
    json.push(b'\n');
    let labels = out.join("labels.json");
    fsio::write_bytes_atomic(&labels, &json).map_err(|e| write_error(&labels, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_fits_sixteen_characters_and_round_trips() {
        for v in [
            1.0,
            0.000123456789012345,
            6586.2,
            370e6,
            -1024.0,
            1.0 / 3.0,
            12345.678901234,
        ] {
            let s = ds(v);
            assert!(s.len() <= 16, "{s}");
            let back: f64 = s.parse().unwrap();
            assert!((back / v - 1.0).abs() < 1e-9, "{v} → {s}");
        }
    }

    #[test]
    fn uids_are_valid_and_distinct() {
        let a = synth_uid(7, 1, 0);
        assert!(a.len() <= 64 && a.starts_with("2.25."));
        assert!(a[5..].bytes().all(|b| b.is_ascii_digit()) && !a[5..].starts_with('0'));
        assert_ne!(a, synth_uid(7, 1, 1));
        assert_eq!(a, synth_uid(7, 1, 0));
    }
}
