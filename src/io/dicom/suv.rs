//! SUVbw factors of a PET series, exactly as DESIGN §6 (QIBA) says, with a record of every
//! quantity and the tag it came from (`conversion.json`'s `"suv"`).
//!
//! SUV of a voxel = (stored · RescaleSlope + RescaleIntercept) of its slice × the slice's factor.
//!
//! * Units BQML: factor = W / D_ref, W the weight in g, D_ref the injected dose decay-corrected
//!   to the image's reference time (START: series reference time; ADMIN: the dose as is; NONE:
//!   each slice corrected to its own frame from AcquisitionTime and ActualFrameDuration).
//! * GML: the images are SUVbw already (factor 1).
//! * CNTS (Philips): the SUV scale factor (7053,1000) when non-zero, else the activity
//!   concentration scale factor (7053,1009) × the BQML factor.
//! * Anything else (CPS, PROP, …) is rejected: there is no defensible conversion.
//!
//! `CorrectedImage` must hold ATTN, and DECY unless DecayCorrection is NONE (an image that is not
//! decay-corrected cannot list DECY; §6's "must contain DECY" read for the corrected cases).
//!
//! Reference time: SeriesDate/Time unless it is after the earliest AcquisitionDate/Time (some
//! scanners rewrite the series time on reconstruction), then GE's private post-injection
//! date-time (0009,100D) (an error when present but unreadable), else QIBA's scan start
//! back-computed from FrameReferenceTime, else the earliest AcquisitionDate/Time. Injection: the
//! RadiopharmaceuticalStartDateTime, else StartTime on the series date, moved one day back when
//! that lands after the reference time (injection before midnight, scan after). A dose below
//! 1e5 is taken as MBq (no FDG dose is under 100 kBq; MBq values are around 4e2). Missing
//! weight, dose or half-life is an error naming the tag: never guessed.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::Serialize;

use super::strict::{BadTag, Strict, Temporal};
use super::tags_ext as t;
use super::{DicomError, DicomErrorKind, Stage};

const GE_CREATOR: &str = "GEMS_PETD_01";
const PHILIPS_CREATOR: &str = "Philips PET Private Group";
const PHILIPS_FALLBACK: &str = "Philips scale factors read from (7053,1000)/(7053,1009): \
    no private creator (7053,0010) reserves that block; taken as Philips PET Private Group's";
/// Doses below this are in MBq.
const MBQ_THRESHOLD: f64 = 1e5;

/// The SUV-relevant header values of one PET instance (patient identifiers are never read).
#[derive(Debug, Clone, PartialEq)]
pub struct SuvTags {
    pub units: Option<String>,
    pub decay_correction: Option<String>,
    pub corrected_image: Vec<String>,
    /// PatientWeight as stored; `Err` holds unparsable text.
    pub patient_weight: Result<Option<f64>, String>,
    pub series_date: Option<String>,
    pub series_time: Option<String>,
    pub acquisition_date: Option<String>,
    pub acquisition_time: Option<String>,
    pub actual_frame_duration_ms: Option<f64>,
    /// FrameReferenceTime (0054,1300), ms: the frame's average-count time after the scan start.
    pub frame_reference_time_ms: Option<f64>,
    /// SUVType (0054,1006) for Units GML and CM2ML (BW when absent).
    pub suv_type: Option<String>,
    /// PatientSex (0010,0040) and PatientSize (0010,1020, m): only for SUV types other than BW.
    pub patient_sex: Option<String>,
    pub patient_size_m: Result<Option<f64>, String>,
    pub radiopharmaceutical_start_datetime: Option<String>,
    pub radiopharmaceutical_start_time: Option<String>,
    pub radionuclide_total_dose: Result<Option<f64>, String>,
    pub radionuclide_half_life: Result<Option<f64>, String>,
    pub ge_post_injection_datetime: Option<String>,
    pub philips_suv_scale: Option<f64>,
    pub philips_activity_scale: Option<f64>,
    /// The Philips factors were read from block (7053,10xx) although no private creator
    /// (7053,0010) reserves it.
    pub philips_without_creator: bool,
}

impl SuvTags {
    /// Reads the values from a PET header.
    /// The values of one data set; unusable numbers and times are dropped silently (use
    /// [`SuvTags::read`] to collect them).
    pub fn from_object(obj: &InMemDicomObject) -> Self {
        Self::read(obj, &mut Vec::new())
    }

    /// The values of one data set, strictly: every number, date or time present but unusable
    /// is pushed to `bad` (stage `suv`).
    pub fn read(obj: &InMemDicomObject, bad: &mut Vec<BadTag>) -> Self {
        let rp_tags = RpTags::read(obj, bad);
        let mut s = Strict {
            obj,
            stage: Stage::Suv,
            bad,
        };
        let upper = |tag| t::string(obj, tag).map(|s| s.to_ascii_uppercase());
        let philips_without_creator = t::lacks_private_creator(obj, 0x7053)
            && t::string(obj, dicom_core::Tag(0x7053, 0x1000)).is_some();
        SuvTags {
            units: upper(tags::UNITS),
            decay_correction: upper(tags::DECAY_CORRECTION),
            corrected_image: t::strings(obj, tags::CORRECTED_IMAGE)
                .into_iter()
                .map(|s| s.to_ascii_uppercase())
                .collect(),
            patient_weight: s.result(tags::PATIENT_WEIGHT, ("PatientWeight", "(0010,1030)")),
            series_date: s.temporal(
                tags::SERIES_DATE,
                ("SeriesDate", "(0008,0021)"),
                Temporal::Da,
            ),
            series_time: s.temporal(
                tags::SERIES_TIME,
                ("SeriesTime", "(0008,0031)"),
                Temporal::Tm,
            ),
            acquisition_date: s.temporal(
                tags::ACQUISITION_DATE,
                ("AcquisitionDate", "(0008,0022)"),
                Temporal::Da,
            ),
            acquisition_time: s.temporal(
                tags::ACQUISITION_TIME,
                ("AcquisitionTime", "(0008,0032)"),
                Temporal::Tm,
            ),
            actual_frame_duration_ms: s.number(
                tags::ACTUAL_FRAME_DURATION,
                ("ActualFrameDuration", "(0018,1242)"),
            ),
            frame_reference_time_ms: s.number(
                tags::FRAME_REFERENCE_TIME,
                ("FrameReferenceTime", "(0054,1300)"),
            ),
            suv_type: upper(tags::SUV_TYPE),
            patient_sex: upper(tags::PATIENT_SEX),
            // Used only for SUVType other than BW, where `required` names it when unusable:
            // a stray text here must not fail the usual body-weight conversion.
            patient_size_m: t::number(obj, tags::PATIENT_SIZE),
            radiopharmaceutical_start_datetime: rp_tags.start_datetime,
            radiopharmaceutical_start_time: rp_tags.start_time,
            radionuclide_total_dose: rp_tags.dose,
            radionuclide_half_life: rp_tags.half_life,
            ge_post_injection_datetime: t::private_text(obj, 0x0009, GE_CREATOR, 0x0D),
            philips_suv_scale: s.private_number(
                (0x7053, PHILIPS_CREATOR, 0x00),
                ("SUVScaleFactor", "(7053,1000)"),
            ),
            philips_activity_scale: s.private_number(
                (0x7053, PHILIPS_CREATOR, 0x09),
                ("ActivityConcentrationScaleFactor", "(7053,1009)"),
            ),
            philips_without_creator,
        }
    }
}

/// What the first item of RadiopharmaceuticalInformationSequence holds.
struct RpTags {
    dose: Result<Option<f64>, String>,
    half_life: Result<Option<f64>, String>,
    start_datetime: Option<String>,
    start_time: Option<String>,
}

impl RpTags {
    /// The item's values, strictly (unusable ones pushed to `bad`); all absent without an item.
    fn read(obj: &InMemDicomObject, bad: &mut Vec<BadTag>) -> Self {
        let Some(item) = t::first_item(obj, tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE) else {
            return RpTags {
                dose: Ok(None),
                half_life: Ok(None),
                start_datetime: None,
                start_time: None,
            };
        };
        let mut r = Strict {
            obj: item,
            stage: Stage::Suv,
            bad,
        };
        RpTags {
            dose: r.result(
                tags::RADIONUCLIDE_TOTAL_DOSE,
                ("RadionuclideTotalDose", "(0018,1074)"),
            ),
            half_life: r.result(
                tags::RADIONUCLIDE_HALF_LIFE,
                ("RadionuclideHalfLife", "(0018,1075)"),
            ),
            start_datetime: r.temporal(
                tags::RADIOPHARMACEUTICAL_START_DATE_TIME,
                ("RadiopharmaceuticalStartDateTime", "(0018,1078)"),
                Temporal::Dt,
            ),
            start_time: r.temporal(
                tags::RADIOPHARMACEUTICAL_START_TIME,
                ("RadiopharmaceuticalStartTime", "(0018,1072)"),
                Temporal::Tm,
            ),
        }
    }
}

/// A value and the tag (or rule) it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub source: String,
}

fn sourced<T>(value: T, source: impl Into<String>) -> Sourced<T> {
    Sourced {
        value,
        source: source.into(),
    }
}

/// How the SUV factors were derived (`conversion.json`'s `"suv"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuvRecord {
    /// `bqml`, `gml` or `philips_cnts_suv_scale` / `philips_cnts_activity_scale`.
    pub method: String,
    pub units: Sourced<String>,
    pub decay_correction: Option<Sourced<String>>,
    pub corrected_image: Sourced<Vec<String>>,
    pub weight_g: Option<Sourced<f64>>,
    pub injected_dose_bq: Option<Sourced<f64>>,
    pub half_life_s: Option<Sourced<f64>>,
    pub injection_time: Option<Sourced<String>>,
    pub reference_time: Option<Sourced<String>>,
    /// Seconds from injection to the reference time (START).
    pub decay_time_s: Option<f64>,
    /// The dose decayed to the reference time (START) or as injected (ADMIN), Bq.
    pub decayed_dose_bq: Option<f64>,
    pub philips_scale_factor: Option<Sourced<f64>>,
    /// Factor of the first slice and the range over all slices (equal unless DecayCorrection
    /// is NONE).
    pub suv_factor: f64,
    pub suv_factor_min: f64,
    pub suv_factor_max: f64,
    pub notes: Vec<String>,
}

/// The factors of every slice (in the order given) and their record.
#[derive(Debug, Clone)]
pub struct SuvConversion {
    pub factors: Vec<f64>,
    pub record: SuvRecord,
}

fn missing(name: &'static str, tag: &'static str, purpose: &'static str) -> DicomErrorKind {
    DicomErrorKind::MissingTag { name, tag, purpose }
}

/// SUVbw factors for the slices of one PET series. `subject` names the series in errors.
pub fn compute(slices: &[&SuvTags], subject: &str) -> Result<SuvConversion, DicomError> {
    compute_inner(slices).map_err(|kind| DicomError::new(Stage::Suv, subject, kind))
}

fn compute_inner(slices: &[&SuvTags]) -> Result<SuvConversion, DicomErrorKind> {
    let first = *slices
        .first()
        .ok_or_else(|| DicomErrorKind::Geometry("PET series without slices".into()))?;
    let units = first.units.clone().ok_or_else(|| {
        missing(
            "Units",
            "(0054,1001)",
            "cannot tell what the pixel values measure",
        )
    })?;
    let has = |w: &str| first.corrected_image.iter().any(|c| c == w);
    let corrected_text = || first.corrected_image.join("\\");
    if !has("ATTN") {
        return Err(DicomErrorKind::NotCorrected(
            corrected_text(),
            "the image is not attenuation-corrected (no ATTN)",
        ));
    }
    let mut record = SuvRecord::of(first, &units);
    let mut notes = Vec::new();
    let factors: Vec<f64> = match units.as_str() {
        "GML" | "CM2ML" => {
            let (factor, how) = suv_type_factor(first, &units)?;
            record.method = units.to_ascii_lowercase();
            notes.push(how);
            vec![factor; slices.len()]
        }
        "BQML" => {
            record.method = "bqml".into();
            bqml_factors(slices, &mut record, &mut notes)?
        }
        "CNTS" => cnts_factors(slices, &mut record, &mut notes)?,
        _ => return Err(DicomErrorKind::UnsupportedUnits(units)),
    };
    let decay_none = first.decay_correction.as_deref() == Some("NONE");
    if units != "GML" && units != "CM2ML" && !decay_none && !has("DECY") {
        return Err(DicomErrorKind::NotCorrected(
            corrected_text(),
            "DecayCorrection says corrected but CorrectedImage lacks DECY",
        ));
    }
    record.notes = notes;
    finish(factors, record)
}

impl SuvRecord {
    /// The record of a series whose first slice is `first`: the tags every method reports,
    /// nothing derived yet.
    fn of(first: &SuvTags, units: &str) -> Self {
        SuvRecord {
            method: String::new(),
            units: sourced(units.to_string(), "Units (0054,1001)"),
            decay_correction: first
                .decay_correction
                .clone()
                .map(|d| sourced(d, "DecayCorrection (0054,1102)")),
            corrected_image: sourced(first.corrected_image.clone(), "CorrectedImage (0028,0051)"),
            weight_g: None,
            injected_dose_bq: None,
            half_life_s: None,
            injection_time: None,
            reference_time: None,
            decay_time_s: None,
            decayed_dose_bq: None,
            philips_scale_factor: None,
            suv_factor: 0.0,
            suv_factor_min: 0.0,
            suv_factor_max: 0.0,
            notes: Vec::new(),
        }
    }
}

/// Philips Units CNTS: the SUV scale factor (7053,1000) when present, else the activity
/// concentration scale factor (7053,1009) times the BQML factors.
fn cnts_factors(
    slices: &[&SuvTags],
    record: &mut SuvRecord,
    notes: &mut Vec<String>,
) -> Result<Vec<f64>, DicomErrorKind> {
    let first = slices[0];
    if first.philips_without_creator {
        notes.push(PHILIPS_FALLBACK.into());
        tracing::warn!("{PHILIPS_FALLBACK}");
    }
    if let Some(s) = first.philips_suv_scale {
        record.method = "philips_cnts_suv_scale".into();
        record.philips_scale_factor = Some(sourced(
            s,
            "SUVScaleFactor (7053,1000) [Philips PET Private Group]",
        ));
        return Ok(vec![s; slices.len()]);
    }
    let Some(a) = first.philips_activity_scale else {
        return Err(missing(
            "SUVScaleFactor",
            "(7053,1000)",
            "Units CNTS need the Philips SUV scale factor or activity concentration \
             scale factor (7053,1009)",
        ));
    };
    record.method = "philips_cnts_activity_scale".into();
    record.philips_scale_factor = Some(sourced(
        a,
        "ActivityConcentrationScaleFactor (7053,1009) [Philips PET Private Group]",
    ));
    notes.push("CNTS × (7053,1009) gives Bq/ml; then as BQML".into());
    let bqml = bqml_factors(slices, record, notes)?;
    Ok(bqml.into_iter().map(|f| f * a).collect())
}

/// Every factor must be a positive number; the record gets the first and the range.
fn finish(factors: Vec<f64>, mut record: SuvRecord) -> Result<SuvConversion, DicomErrorKind> {
    if let Some(bad) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
        return Err(DicomErrorKind::Timing(format!(
            "SUV factor {bad} is not a positive number"
        )));
    }
    record.suv_factor = factors[0];
    record.suv_factor_min = factors.iter().cloned().fold(f64::INFINITY, f64::min);
    record.suv_factor_max = factors.iter().cloned().fold(0.0, f64::max);
    Ok(SuvConversion { factors, record })
}

fn required(
    v: &Result<Option<f64>, String>,
    name: &'static str,
    tag: &'static str,
    purpose: &'static str,
) -> Result<f64, DicomErrorKind> {
    match v {
        Ok(Some(x)) if *x > 0.0 => Ok(*x),
        Ok(Some(x)) => Err(DicomErrorKind::BadValue {
            name,
            tag,
            value: x.to_string(),
            why: "must be positive".into(),
        }),
        Ok(None) => Err(missing(name, tag, purpose)),
        Err(text) => Err(DicomErrorKind::BadValue {
            name,
            tag,
            value: text.clone(),
            why: "not a number".into(),
        }),
    }
}

/// The factor from an image already normalised (Units GML or CM2ML) to SUVbw, by its SUVType
/// (0054,1006): SUVbw = SUVx × W / X, with X the body weight (BW: 1), lean body mass (James
/// with 128, or Janmahasatian) or body surface area (Du Bois, in cm², for CM2ML). Ideal body
/// weight has no standard formula and is refused naming the tag.
const TO_BW: &str = "needed to convert this SUVType (0054,1006) to SUVbw";

fn suv_type_factor(first: &SuvTags, units: &str) -> Result<(f64, String), DicomErrorKind> {
    let suv_type = first.suv_type.clone().unwrap_or_else(|| match units {
        "CM2ML" => "BSA".into(),
        _ => "BW".into(),
    });
    let refuse = |why: &str| DicomErrorKind::BadValue {
        name: "SUVType",
        tag: "(0054,1006)",
        value: suv_type.clone(),
        why: why.into(),
    };
    if !convertible(units, &suv_type).map_err(|why| refuse(&why))? {
        return Ok((
            1.0,
            "Units GML, SUVType BW: the values are SUVbw already".into(),
        ));
    }
    let w = required(&first.patient_weight, "PatientWeight", "(0010,1030)", TO_BW)?;
    let w = if w > 1000.0 { w / 1000.0 } else { w };
    let h = required(&first.patient_size_m, "PatientSize", "(0010,1020)", TO_BW)?;
    let h = if h > 3.0 { h / 100.0 } else { h };
    let male = || match first.patient_sex.as_deref() {
        Some("M") => Ok(true),
        Some("F") => Ok(false),
        _ => Err(DicomErrorKind::BadValue {
            name: "PatientSex",
            tag: "(0010,0040)",
            value: first.patient_sex.clone().unwrap_or_default(),
            why: format!("SUVType {suv_type} needs M or F"),
        }),
    };
    let (x, formula) = normaliser(&suv_type, w, h, male)?;
    if !(x.is_finite() && x > 0.0) {
        return Err(refuse(&format!(
            "{formula} gives {x} for W {w} kg, H {h} m"
        )));
    }
    Ok((
        w / x,
        format!(
            "Units {units}, SUVType {suv_type}: SUVbw = value × W / X, {formula}; W {w} kg, H {h} \
             m, X {x:.4}"
        ),
    ))
}

/// Whether values of `units` normalised by `suv_type` need converting to SUVbw (false: they are
/// SUVbw already), or why tracerd cannot.
fn convertible(units: &str, suv_type: &str) -> Result<bool, String> {
    match (units, suv_type) {
        ("GML", "BW") => Ok(false),
        ("GML", "LBM" | "LBMJAMES128" | "LBMJANMA") | ("CM2ML", "BSA") => Ok(true),
        ("GML", "BSA") | ("CM2ML", _) => Err(format!("does not go with Units {units}")),
        _ => Err(
            "tracerd converts SUVType BW, LBM/LBMJAMES128, LBMJANMA (Units GML) and BSA \
             (Units CM2ML) to SUVbw; other normalisations have no standard formula"
                .into(),
        ),
    }
}

/// X of SUVbw = SUVx × W / X for `suv_type` (BSA in cm² per g of weight, LBM in kg), weight `w`
/// kg and height `h` m, and the formula in words; `male` is asked only by the sex-specific ones.
fn normaliser(
    suv_type: &str,
    w: f64,
    h: f64,
    male: impl Fn() -> Result<bool, DicomErrorKind>,
) -> Result<(f64, &'static str), DicomErrorKind> {
    Ok(match suv_type {
        "BSA" => (
            0.007184 * w.powf(0.425) * (h * 100.0).powf(0.725) * 1e4 / 1000.0,
            "BSA (Du Bois) = 0.007184 W^0.425 H^0.725 m², as cm² per g of weight",
        ),
        "LBMJANMA" => {
            let bmi = w / (h * h);
            let lbm = match male()? {
                true => 9270.0 * w / (6680.0 + 216.0 * bmi),
                false => 9270.0 * w / (8780.0 + 244.0 * bmi),
            };
            (
                lbm,
                "LBM (Janmahasatian) = 9270 W / (6680 + 216 BMI) male, / (8780 + 244 BMI) female",
            )
        }
        _ => {
            let r = (w / (h * 100.0)).powi(2);
            let lbm = match male()? {
                true => 1.10 * w - 128.0 * r,
                false => 1.07 * w - 148.0 * r,
            };
            (
                lbm,
                "LBM (James, 128) = 1.10 W − 128 (W/H)² male, 1.07 W − 148 (W/H)² female",
            )
        }
    })
}

/// QIBA's scan start when SeriesTime is after the acquisition: the earliest frame's
/// AcquisitionDate/Time, minus its FrameReferenceTime (the time from the scan start to the
/// frame's average count rate), plus the average-count time within the frame,
/// 1/λ · ln(λT / (1 − e^(−λT))) for a frame of ActualFrameDuration T. `None` without those tags.
fn back_computed_start(
    slices: &[&SuvTags],
    acq_times: &[Option<f64>],
    series_date: Option<&str>,
    half_life: f64,
) -> Option<(f64, Sourced<String>)> {
    let (k, acquired) = acq_times
        .iter()
        .enumerate()
        .filter_map(|(k, a)| a.map(|a| (k, a)))
        .min_by(|x, y| x.1.total_cmp(&y.1))?;
    let s = slices[k];
    let reference = s.frame_reference_time_ms.filter(|v| *v > 0.0)? / 1000.0;
    let duration = s.actual_frame_duration_ms.filter(|v| *v > 0.0)? / 1000.0;
    let lambda = std::f64::consts::LN_2 / half_life;
    let x = lambda * duration;
    let average = (x / (1.0 - (-x).exp())).ln() / lambda;
    let text = format!(
        "{} {} − {reference} s + {average:.3} s",
        s.acquisition_date.as_deref().or(series_date).unwrap_or(""),
        s.acquisition_time.as_deref().unwrap_or("")
    );
    let source = "earliest AcquisitionDate/Time (0008,0022)/(0008,0032) − FrameReferenceTime \
                  (0054,1300) + average-count time within ActualFrameDuration (0018,1242) \
                  (QIBA); SeriesTime is after the acquisition";
    Some((acquired - reference + average, sourced(text, source)))
}

/// Factors W / D(t) for Bq/ml images.
fn bqml_factors(
    slices: &[&SuvTags],
    record: &mut SuvRecord,
    notes: &mut Vec<String>,
) -> Result<Vec<f64>, DicomErrorKind> {
    let first = slices[0];
    let weight_g = body_weight_g(first, record, notes)?;
    let dose = injected_dose_bq(first, record, notes)?;
    let decay = first.decay_correction.clone().ok_or_else(|| {
        missing(
            "DecayCorrection",
            "(0054,1102)",
            "cannot tell when the activity was decay-corrected to",
        )
    })?;
    if decay == "ADMIN" {
        record.decayed_dose_bq = Some(dose);
        notes.push("DecayCorrection ADMIN: images corrected to injection, dose used as is".into());
        return Ok(vec![weight_g / dose; slices.len()]);
    }
    if decay != "START" && decay != "NONE" {
        return Err(DicomErrorKind::BadValue {
            name: "DecayCorrection",
            tag: "(0054,1102)",
            value: decay,
            why: "expected START, ADMIN or NONE".into(),
        });
    }
    let half_life = required(
        &first.radionuclide_half_life,
        "RadionuclideHalfLife",
        "(0018,1075)",
        "cannot decay-correct the dose",
    )?;
    record.half_life_s = Some(sourced(
        half_life,
        "RadionuclideHalfLife (0018,1075) in RadiopharmaceuticalInformationSequence (0054,0016)",
    ));
    let times = SeriesTimes::read(slices)?;
    if decay == "NONE" {
        let per_frame = frame_decay_factors(&times, half_life, record, notes)?;
        return Ok(per_frame.into_iter().map(|f| weight_g / dose * f).collect());
    }
    let decayed = dose_at_start(&times, dose, half_life, record)?;
    Ok(vec![weight_g / decayed; slices.len()])
}

/// PatientWeight in grams (a value over 1000 is taken as grams already, with a note).
fn body_weight_g(
    first: &SuvTags,
    record: &mut SuvRecord,
    notes: &mut Vec<String>,
) -> Result<f64, DicomErrorKind> {
    let weight = required(
        &first.patient_weight,
        "PatientWeight",
        "(0010,1030)",
        "cannot compute SUVbw",
    )?;
    let weight_g = if weight > 1000.0 {
        notes.push(format!(
            "PatientWeight {weight} > 1000: taken as grams already"
        ));
        weight
    } else {
        weight * 1000.0
    };
    record.weight_g = Some(sourced(weight_g, "PatientWeight (0010,1030), kg × 1000"));
    Ok(weight_g)
}

/// RadionuclideTotalDose in Bq (a value under [`MBQ_THRESHOLD`] is taken as MBq, with a note).
fn injected_dose_bq(
    first: &SuvTags,
    record: &mut SuvRecord,
    notes: &mut Vec<String>,
) -> Result<f64, DicomErrorKind> {
    let dose_raw = required(
        &first.radionuclide_total_dose,
        "RadionuclideTotalDose",
        "(0018,1074)",
        "cannot compute SUVbw",
    )?;
    let dose = if dose_raw < MBQ_THRESHOLD {
        notes.push(format!(
            "RadionuclideTotalDose {dose_raw} < {MBQ_THRESHOLD:e}: taken as MBq"
        ));
        dose_raw * 1e6
    } else {
        dose_raw
    };
    record.injected_dose_bq = Some(sourced(
        dose,
        "RadionuclideTotalDose (0018,1074) in RadiopharmaceuticalInformationSequence (0054,0016)",
    ));
    Ok(dose)
}

/// The times of a series that decay correction needs, in seconds since 1970.
struct SeriesTimes<'a> {
    slices: &'a [&'a SuvTags],
    series_date: Option<&'a str>,
    /// Each slice's AcquisitionDate/Time (the SeriesDate when it has no date of its own).
    acquisitions: Vec<Option<f64>>,
    /// The earliest of them and its text.
    earliest: Option<(f64, String)>,
    /// SeriesDate + SeriesTime.
    series: Option<f64>,
}

impl<'a> SeriesTimes<'a> {
    fn read(slices: &'a [&'a SuvTags]) -> Result<Self, DicomErrorKind> {
        let first = slices[0];
        let series_date = first.series_date.as_deref();
        let mut earliest: Option<(f64, String)> = None;
        let mut acquisitions = Vec::with_capacity(slices.len());
        for s in slices {
            let date = s.acquisition_date.as_deref().or(series_date);
            let time = s.acquisition_time.as_deref();
            let at = match (date, time) {
                (Some(d), Some(tm)) => {
                    Some(date_time(d, tm).ok_or_else(|| DicomErrorKind::BadValue {
                        name: "AcquisitionTime",
                        tag: "(0008,0032)",
                        value: format!("{d} {tm}"),
                        why: "not a DICOM DA/TM".into(),
                    })?)
                }
                _ => None,
            };
            if let Some(a) = at
                && earliest.as_ref().is_none_or(|(e, _)| a < *e)
            {
                earliest = Some((a, format!("{} {}", date.unwrap_or(""), time.unwrap_or(""))));
            }
            acquisitions.push(at);
        }
        let series = match (series_date, first.series_time.as_deref()) {
            (Some(d), Some(tm)) => date_time(d, tm),
            _ => None,
        };
        Ok(SeriesTimes {
            slices,
            series_date,
            acquisitions,
            earliest,
            series,
        })
    }

    /// The injection: RadiopharmaceuticalStartDateTime, else StartTime on the SeriesDate (the
    /// day before when that would be after `reference`).
    fn injection(&self, reference: f64) -> Result<(f64, Sourced<String>), DicomErrorKind> {
        let first = self.slices[0];
        if let Some(dt) = first.radiopharmaceutical_start_datetime.as_deref()
            && let Some(v) = parse_dt(dt)
        {
            let source = "RadiopharmaceuticalStartDateTime (0018,1078)";
            return Ok((v, sourced(dt.to_string(), source)));
        }
        let tm = first
            .radiopharmaceutical_start_time
            .as_deref()
            .ok_or_else(|| {
                missing(
                    "RadiopharmaceuticalStartTime",
                    "(0018,1072)",
                    "cannot decay-correct the dose without the injection time",
                )
            })?;
        let date = self.series_date.ok_or_else(|| {
            missing(
                "SeriesDate",
                "(0008,0021)",
                "the injection time has no date of its own",
            )
        })?;
        let v = date_time(date, tm).ok_or_else(|| DicomErrorKind::BadValue {
            name: "RadiopharmaceuticalStartTime",
            tag: "(0018,1072)",
            value: tm.to_string(),
            why: "not a DICOM TM".into(),
        })?;
        Ok(if v > reference {
            let source = "RadiopharmaceuticalStartTime (0018,1072), injected before midnight";
            let text = format!("{tm} on the day before SeriesDate {date}");
            (v - 86_400.0, sourced(text, source))
        } else {
            let source = "RadiopharmaceuticalStartTime (0018,1072) + SeriesDate (0008,0021)";
            (v, sourced(format!("{tm} on SeriesDate {date}"), source))
        })
    }

    /// DecayCorrection START's reference time: SeriesDate/Time unless it is after the earliest
    /// acquisition (some scanners rewrite it on reconstruction or export); then GE's private
    /// post-injection time, QIBA's back-computed scan start, or the earliest acquisition.
    fn start_reference(&self, half_life: f64) -> Result<(f64, Sourced<String>), DicomErrorKind> {
        let first = self.slices[0];
        if let Some(s) = self.series
            && self.earliest.as_ref().is_none_or(|(e, _)| s <= *e)
        {
            let text = format!(
                "{} {}",
                self.series_date.unwrap_or(""),
                first.series_time.as_deref().unwrap_or("")
            );
            return Ok((
                s,
                sourced(text, "SeriesDate (0008,0021) + SeriesTime (0008,0031)"),
            ));
        }
        if let Some(ge) = first.ge_post_injection_datetime.as_deref()
            && self.series.is_some()
        {
            // Needed here, so unreadable is an error, not a silent fall-back to another time.
            let v = parse_dt(ge).ok_or_else(|| DicomErrorKind::BadValue {
                name: "GE post-injection date-time",
                tag: "(0009,100D)",
                value: ge.to_string(),
                why: "not a DICOM DT".into(),
            })?;
            let source = "GE private post-injection date-time (0009,100D) [GEMS_PETD_01]; \
                          SeriesTime is after AcquisitionTime";
            return Ok((v, sourced(ge.to_string(), source)));
        }
        if self.series.is_some()
            && let Some(back) =
                back_computed_start(self.slices, &self.acquisitions, self.series_date, half_life)
        {
            return Ok(back);
        }
        let (e, text) = self.earliest.clone().ok_or_else(|| {
            missing(
                "SeriesTime",
                "(0008,0031)",
                "no series or acquisition time to decay-correct the dose to",
            )
        })?;
        let why = if self.series.is_some() {
            "earliest AcquisitionDate/Time (0008,0022)/(0008,0032); SeriesTime is after it"
        } else {
            "earliest AcquisitionDate/Time (0008,0022)/(0008,0032); no SeriesTime"
        };
        Ok((e, sourced(text, why)))
    }
}

/// DecayCorrection START: the dose decayed to the series' reference time, recorded.
fn dose_at_start(
    times: &SeriesTimes,
    dose: f64,
    half_life: f64,
    record: &mut SuvRecord,
) -> Result<f64, DicomErrorKind> {
    let (reference, ref_src) = times.start_reference(half_life)?;
    let (t_inj, inj_src) = times.injection(reference)?;
    let dt = reference - t_inj;
    if dt < 0.0 {
        return Err(DicomErrorKind::Timing(format!(
            "injection {} is after the reference time {}",
            inj_src.value, ref_src.value
        )));
    }
    record.injection_time = Some(inj_src);
    record.reference_time = Some(ref_src);
    record.decay_time_s = Some(dt);
    let decayed = dose * 2f64.powf(-dt / half_life);
    record.decayed_dose_bq = Some(decayed);
    Ok(decayed)
}

/// DecayCorrection NONE: per slice, 1 / (the dose's decay from injection to the frame start)
/// × the in-frame correction λT / (1 − e^(−λT)) (the value is the mean activity over the frame
/// that began at AcquisitionTime, ActualFrameDuration T long).
fn frame_decay_factors(
    times: &SeriesTimes,
    half_life: f64,
    record: &mut SuvRecord,
    notes: &mut Vec<String>,
) -> Result<Vec<f64>, DicomErrorKind> {
    let no_time = || missing("AcquisitionTime", "(0008,0032)", "DecayCorrection NONE");
    let reference = times.earliest.as_ref().map(|e| e.0).ok_or_else(no_time)?;
    let (t_inj, inj_src) = times.injection(reference)?;
    record.injection_time = Some(inj_src);
    notes.push(
        "DecayCorrection NONE: each slice decay-corrected from its AcquisitionTime and \
         ActualFrameDuration"
            .into(),
    );
    let lambda = std::f64::consts::LN_2 / half_life;
    let mut out = Vec::with_capacity(times.slices.len());
    for (s, at) in times.slices.iter().zip(&times.acquisitions) {
        let t0 = at.ok_or_else(no_time)?;
        let duration = s
            .actual_frame_duration_ms
            .filter(|d| *d > 0.0)
            .ok_or_else(|| {
                missing(
                    "ActualFrameDuration",
                    "(0018,1242)",
                    "DecayCorrection NONE needs each frame's duration",
                )
            })?
            / 1000.0;
        let dt = t0 - t_inj;
        if dt < 0.0 {
            return Err(DicomErrorKind::Timing(
                "acquisition starts before the injection".into(),
            ));
        }
        let x = lambda * duration;
        out.push(x / (1.0 - (-x).exp()) / (-lambda * dt).exp());
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------------
// DICOM dates and times → seconds since 1970-01-01 (the zone is ignored: every time in a series
// shares it).
// ------------------------------------------------------------------------------------------------

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// DA `YYYYMMDD` (also the old `YYYY.MM.DD`) → seconds at midnight.
pub fn parse_da(s: &str) -> Option<f64> {
    let digits: String = s
        .trim()
        .chars()
        .filter(|c| *c != '.' && *c != '-')
        .collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = digits[0..4].parse().ok()?;
    let m: i64 = digits[4..6].parse().ok()?;
    let d: i64 = digits[6..8].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d) as f64 * 86_400.0)
}

/// TM `HH[MM[SS[.FFFFFF]]]` (also the old `HH:MM:SS`) → seconds after midnight.
pub fn parse_tm(s: &str) -> Option<f64> {
    let s: String = s.trim().chars().filter(|c| *c != ':').collect();
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w.to_string(), f.to_string()),
        None => (s.clone(), String::new()),
    };
    if whole.is_empty()
        || whole.len() % 2 == 1
        || whole.len() > 6
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let part = |i: usize| -> f64 {
        whole
            .get(i..i + 2)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0.0)
    };
    let (h, m, sec) = (part(0), part(2), part(4));
    if h > 23.0 || m > 59.0 || sec > 60.0 {
        return None;
    }
    let f: f64 = if frac.is_empty() {
        0.0
    } else {
        format!("0.{frac}").parse().ok()?
    };
    Some(h * 3600.0 + m * 60.0 + sec + f)
}

/// DA + TM → seconds.
pub fn date_time(da: &str, tm: &str) -> Option<f64> {
    Some(parse_da(da)? + parse_tm(tm)?)
}

/// DT `YYYYMMDDHHMMSS.FFFFFF[&ZZXX]` → seconds (time part optional; zone ignored).
pub fn parse_dt(s: &str) -> Option<f64> {
    let s = s.trim();
    let s = s.split(['+', '-']).next()?;
    if s.len() < 8 {
        return None;
    }
    let day = parse_da(&s[..8])?;
    let rest = &s[8..];
    if rest.is_empty() {
        return Some(day);
    }
    Some(day + parse_tm(rest)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> SuvTags {
        SuvTags {
            units: Some("BQML".into()),
            decay_correction: Some("START".into()),
            corrected_image: vec!["ATTN".into(), "DECY".into()],
            patient_weight: Ok(Some(80.0)),
            series_date: Some("20240102".into()),
            series_time: Some("100000".into()),
            acquisition_date: Some("20240102".into()),
            acquisition_time: Some("100500".into()),
            actual_frame_duration_ms: Some(120_000.0),
            frame_reference_time_ms: None,
            suv_type: None,
            patient_sex: None,
            patient_size_m: Ok(None),
            radiopharmaceutical_start_datetime: None,
            radiopharmaceutical_start_time: Some("090000".into()),
            radionuclide_total_dose: Ok(Some(370e6)),
            radionuclide_half_life: Ok(Some(6586.2)),
            ge_post_injection_datetime: None,
            philips_suv_scale: None,
            philips_activity_scale: None,
            philips_without_creator: false,
        }
    }

    #[test]
    fn dates_and_times_parse() {
        assert_eq!(parse_da("19700102"), Some(86_400.0));
        assert_eq!(parse_tm("010203.5"), Some(3723.5));
        assert_eq!(parse_tm("01:02:03"), Some(3723.0));
        assert_eq!(parse_tm("0102"), Some(3720.0));
        assert_eq!(parse_dt("19700102010203.5+0100"), Some(86_400.0 + 3723.5));
        assert!(parse_tm("25").is_none() && parse_da("2024011").is_none());
        // 2000 is a leap year.
        assert_eq!(
            parse_da("20000301").unwrap() - parse_da("20000228").unwrap(),
            2.0 * 86_400.0
        );
    }

    #[test]
    fn start_decays_the_dose_to_the_series_time() {
        let s = base();
        let c = compute(&[&s], "t").unwrap();
        let want = 80_000.0 / (370e6 * 2f64.powf(-3600.0 / 6586.2));
        assert!((c.factors[0] / want - 1.0).abs() < 1e-12);
        assert_eq!(c.record.decay_time_s, Some(3600.0));
    }

    #[test]
    fn series_time_after_the_scan_takes_ge_post_injection_time_and_refuses_it_unreadable() {
        let mut s = base();
        s.series_time = Some("110000".into());
        s.ge_post_injection_datetime = Some("20240102100000".into());
        let c = compute(&[&s], "t").unwrap();
        assert_eq!(c.record.decay_time_s, Some(3600.0));
        s.ge_post_injection_datetime = Some("2024-01-02 10h".into());
        let e = compute(&[&s], "t").unwrap_err().to_string();
        assert!(e.contains("(0009,100D)"), "{e}");
    }

    #[test]
    fn injection_before_midnight_and_mbq_dose() {
        let mut s = base();
        s.series_time = Some("003000".into());
        s.acquisition_time = Some("003100".into());
        s.radiopharmaceutical_start_time = Some("233000".into());
        s.radionuclide_total_dose = Ok(Some(370.0));
        let c = compute(&[&s], "t").unwrap();
        assert_eq!(c.record.decay_time_s, Some(3600.0));
        assert_eq!(c.record.injected_dose_bq.as_ref().unwrap().value, 370e6);
    }

    #[test]
    fn missing_weight_names_the_tag_and_cps_is_rejected() {
        let mut s = base();
        s.patient_weight = Ok(None);
        let e = compute(&[&s], "PET series 1.2").unwrap_err();
        assert_eq!(e.reason(), "missing_tag");
        assert!(e.to_string().contains("PatientWeight (0010,1030)"), "{e}");
        let mut s = base();
        s.units = Some("CPS".into());
        assert_eq!(
            compute(&[&s], "x").unwrap_err().reason(),
            "unsupported_units"
        );
        let mut s = base();
        s.corrected_image = vec!["DECY".into()];
        assert_eq!(compute(&[&s], "x").unwrap_err().reason(), "not_corrected");
    }

    #[test]
    fn decay_none_corrects_each_frame() {
        let mut a = base();
        a.decay_correction = Some("NONE".into());
        a.corrected_image = vec!["ATTN".into()];
        let mut b = a.clone();
        b.acquisition_time = Some("101000".into());
        let c = compute(&[&a, &b], "t").unwrap();
        let lambda = std::f64::consts::LN_2 / 6586.2;
        let ratio = c.factors[1] / c.factors[0];
        assert!((ratio - (lambda * 300.0).exp()).abs() < 1e-12);
    }
}
