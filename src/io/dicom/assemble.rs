//! From a scanned folder to studies: instances grouped by StudyInstanceUID and
//! SeriesInstanceUID; per study, every attenuation-corrected PET series becomes one unit of work
//! (its key hashes the study and that series' UID), paired with the CT of the same frame of
//! reference that is axial, not a localizer and covers the most length along its normal.
//!
//! PET series that are not attenuation-corrected (NAC), derived MIPs or secondary captures are
//! skipped; a study that has no usable PET is an error of its own, other studies unaffected.

use std::collections::BTreeMap;

use super::complete::{Completeness, pet_series_completeness};
use super::geometry::{Stack, stack};
use super::scan::{Instance, ScanResult};
use super::{DicomError, DicomErrorKind, Stage, series_subject, study_key};
use crate::config::Limits;
use crate::volume::Geometry;

/// PET Image Storage and CT Image Storage: the classic single-frame SOP classes tracerd reads.
pub const PET_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.128";
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// One series sorted into a volume.
#[derive(Debug, Clone)]
pub struct SeriesStack {
    pub series_uid: String,
    pub modality: String,
    /// Instances in slice order (k = 0, 1, …); duplicates removed.
    pub slices: Vec<Instance>,
    pub geometry: Geometry,
    pub warnings: Vec<String>,
}

impl SeriesStack {
    /// "PT series 1.2.84…123456", for errors and logs.
    pub fn subject(&self) -> String {
        series_subject(&self.modality, &self.series_uid)
    }
}

/// A PET series (and its CT) ready for pixel loading.
#[derive(Debug, Clone)]
pub struct AssembledStudy {
    pub key: String,
    pub study_uid: String,
    pub pet: SeriesStack,
    pub ct: Option<SeriesStack>,
    pub warnings: Vec<String>,
}

impl AssembledStudy {
    /// Refuses a study whose headers (Rows × Columns × slices) exceed `limits`, before any
    /// pixel is decoded: a damaged or hostile header cannot exhaust the console's memory.
    pub fn check_size(&self, limits: &Limits) -> Result<(), DicomError> {
        let series = std::iter::once(&self.pet).chain(self.ct.as_ref());
        let mut total = 0u64;
        for s in series {
            let [x, y, z] = s.geometry.shape;
            let voxels = (x as u64) * (y as u64) * (z as u64);
            total += voxels;
            if voxels > limits.max_voxels_per_volume {
                return Err(too_large(
                    s.subject(),
                    format!(
                        "declares {voxels} voxels ({x}×{y}×{z}), more than \
                         limits.max_voxels_per_volume = {}",
                        limits.max_voxels_per_volume
                    ),
                ));
            }
        }
        let mib = total * 4 / (1 << 20);
        if mib > limits.max_study_mib {
            return Err(too_large(
                format!("study {}", self.key),
                format!(
                    "its volumes need {mib} MiB decoded, more than limits.max_study_mib = {}",
                    limits.max_study_mib
                ),
            ));
        }
        Ok(())
    }
}

fn too_large(subject: String, what: String) -> DicomError {
    DicomError::new(Stage::Assemble, subject, DicomErrorKind::TooLarge(what))
}

/// The outcome for one key of a drop.
#[derive(Debug)]
pub struct StudyOutcome {
    pub key: String,
    pub result: Result<AssembledStudy, DicomError>,
}

fn is_usable_pet(i: &Instance) -> bool {
    let desc = i
        .series_description
        .as_deref()
        .unwrap_or("")
        .to_ascii_uppercase();
    i.modality == "PT"
        && i.sop_class_uid == PET_IMAGE_STORAGE
        && i.suv
            .as_ref()
            .is_some_and(|s| s.corrected_image.iter().any(|c| c == "ATTN"))
        && !i.image_type.iter().any(|t| t == "MIP" || t == "PROJECTION")
        && !desc.contains("MIP")
        && !desc.contains("NAC")
}

/// An axial CT image, or a CT image whose orientation is present but unusable (picked, so that
/// its series fails naming the tag rather than the study silently losing its CT).
fn is_axial_ct(i: &Instance) -> bool {
    let Some(o) = i.image_orientation else {
        return i.modality == "CT" && i.bad_tags.iter().any(|b| b.tag == "(0020,0037)");
    };
    let n =
        nalgebra::Vector3::new(o[0], o[1], o[2]).cross(&nalgebra::Vector3::new(o[3], o[4], o[5]));
    i.modality == "CT"
        && i.sop_class_uid == CT_IMAGE_STORAGE
        && !i.image_type.iter().any(|t| t == "LOCALIZER")
        && n.norm() > 0.5
        && (n.z / n.norm()).abs() > 0.9
}

fn sorted_stack(slices: Vec<Instance>, modality: &str) -> Result<SeriesStack, DicomError> {
    let series_uid = slices[0].series_uid.clone();
    let subject = series_subject(modality, &series_uid);
    // A tag that feeds geometry, pixels or SUV present with an unusable value: never a default.
    if let Some((i, bad)) = slices
        .iter()
        .find_map(|i| i.bad_tags.first().map(|b| (i, b)))
    {
        return Err(bad.error(&i.rel));
    }
    let refs: Vec<&Instance> = slices.iter().collect();
    // A PET series that says how many slices it has must have them all (missing end slices
    // would otherwise pass the spacing check).
    if modality == "PT"
        && let Completeness::Incomplete {
            expected,
            present,
            first_missing,
        } = pet_series_completeness(&refs)
    {
        return Err(DicomError::new(
            Stage::Assemble,
            subject,
            DicomErrorKind::Geometry(format!(
                "incomplete: {present} of NumberOfSlices (0054,0081) = {expected} images; \
                 ImageIndex (0054,1330) missing: {first_missing:?}"
            )),
        ));
    }
    let Stack {
        geometry,
        order,
        warnings,
        ..
    } = stack(&refs, &subject)?;
    let mut slot: Vec<Option<Instance>> = slices.into_iter().map(Some).collect();
    let slices = order.iter().map(|&i| slot[i].take().unwrap()).collect();
    Ok(SeriesStack {
        series_uid,
        modality: modality.to_string(),
        slices,
        geometry,
        warnings,
    })
}

/// Length covered along the slice normal (for choosing the CT), mm.
fn coverage(slices: &[&Instance]) -> f64 {
    let Some(o) = slices.iter().find_map(|i| i.image_orientation) else {
        return 0.0;
    };
    let n =
        nalgebra::Vector3::new(o[0], o[1], o[2]).cross(&nalgebra::Vector3::new(o[3], o[4], o[5]));
    let d: Vec<f64> = slices
        .iter()
        .filter_map(|i| i.image_position)
        .map(|p| n.dot(&nalgebra::Vector3::from(p)))
        .collect();
    let lo = d.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = d.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if d.is_empty() { 0.0 } else { hi - lo }
}

/// study → series → instances.
type Studies = BTreeMap<String, BTreeMap<String, Vec<Instance>>>;

/// Groups the scan into studies and assembles each; one outcome per key, in key order.
pub fn assemble(scan: ScanResult) -> Vec<StudyOutcome> {
    let mut studies = Studies::new();
    for i in scan.instances {
        studies
            .entry(i.study_uid.clone())
            .or_default()
            .entry(i.series_uid.clone())
            .or_default()
            .push(i);
    }
    let mut drop_warnings = Vec::new();
    if !scan.ignored.is_empty() {
        drop_warnings.push(format!("{} non-DICOM file(s) ignored", scan.ignored.len()));
    }
    for (p, why) in &scan.unreadable {
        drop_warnings.push(format!("{}: unreadable DICOM: {why}", p.display()));
    }
    let mut out = Vec::new();
    for (study_uid, series) in studies {
        let pets: Vec<&String> = series
            .iter()
            .filter(|(_, v)| v.iter().all(is_usable_pet))
            .map(|(k, _)| k)
            .collect();
        if pets.is_empty() {
            out.push(StudyOutcome {
                key: study_key(&study_uid, ""),
                result: Err(DicomError::new(
                    Stage::Assemble,
                    format!("study {}", super::short_uid(&study_uid)),
                    DicomErrorKind::NoPetSeries,
                )),
            });
            continue;
        }
        for pet_uid in pets {
            let result = pair(&study_uid, &series, pet_uid, &drop_warnings);
            out.push(StudyOutcome {
                key: study_key(&study_uid, pet_uid),
                result,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// One PET series of a study with its CT: same frame of reference (or, without one on the PET,
/// same study), axial, not a localizer, widest coverage; ties broken by the series UID for
/// determinism. Without such a CT the study is PET only, with a warning.
fn pair(
    study_uid: &str,
    series: &BTreeMap<String, Vec<Instance>>,
    pet_uid: &str,
    drop_warnings: &[String],
) -> Result<AssembledStudy, DicomError> {
    let pet_slices = &series[pet_uid];
    let for_uid = &pet_slices[0].frame_of_reference_uid;
    let ct_uid = series
        .iter()
        .filter(|(_, v)| {
            v.iter().all(is_axial_ct)
                && (for_uid.is_none() || &v[0].frame_of_reference_uid == for_uid)
        })
        .map(|(k, v)| (coverage(&v.iter().collect::<Vec<_>>()), k))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(a.1)))
        .map(|(_, k)| k);
    let pet = sorted_stack(pet_slices.clone(), "PT")?;
    let mut warnings = drop_warnings.to_vec();
    let ct = match ct_uid {
        Some(uid) => Some(sorted_stack(series[uid].clone(), "CT")?),
        None => {
            warnings.push("no axial CT with the PET's frame of reference: PET only".into());
            None
        }
    };
    warnings.extend(pet.warnings.iter().cloned());
    if let Some(ct) = &ct {
        warnings.extend(ct.warnings.iter().cloned());
    }
    Ok(AssembledStudy {
        key: study_key(study_uid, pet_uid),
        study_uid: study_uid.to_string(),
        pet,
        ct,
        warnings,
    })
}
