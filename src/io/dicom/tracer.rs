//! What a PET image says about its tracer and the device that made it: the radionuclide (code
//! and half-life), the radiopharmaceutical (name and code) and the collimator. Read here as
//! stored; [`crate::study`] decides whether the models were made for it (the scope rule).

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::Serialize;

use super::tags_ext as t;

/// Radionuclide (0018,0030): retired from the standard, still written by scanners.
const RADIONUCLIDE: dicom_core::Tag = dicom_core::Tag(0x0018, 0x0030);

/// A coded concept: CodeValue, CodingSchemeDesignator, CodeMeaning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Code {
    pub value: String,
    pub scheme: String,
    pub meaning: String,
}

/// The tracer and device tags of one PET instance (absent ones `None`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TracerTags {
    /// RadionuclideCodeSequence (0054,0300) in the first radiopharmaceutical item.
    pub radionuclide_code: Option<Code>,
    /// Radionuclide (0018,0030), retired but still written.
    pub radionuclide: Option<String>,
    /// RadionuclideHalfLife (0018,1075), seconds (when a finite number).
    pub half_life_s: Option<f64>,
    /// Radiopharmaceutical (0018,0031).
    pub radiopharmaceutical: Option<String>,
    /// RadiopharmaceuticalCodeSequence (0054,0304).
    pub radiopharmaceutical_code: Option<Code>,
    /// CollimatorType (0018,1181): NONE or RING on a PET scanner; PARA, FANB, CONE, PINH… on a
    /// gamma camera.
    pub collimator_type: Option<String>,
    pub series_description: Option<String>,
}

impl TracerTags {
    pub fn read(obj: &InMemDicomObject) -> Self {
        let rp = t::first_item(obj, tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE);
        let rp_string = |tag| rp.and_then(|o| t::string(o, tag));
        let code = |tag| rp.and_then(|o| t::first_item(o, tag)).and_then(code_of);
        TracerTags {
            radionuclide_code: code(tags::RADIONUCLIDE_CODE_SEQUENCE),
            radionuclide: rp_string(RADIONUCLIDE),
            half_life_s: rp.and_then(|o| t::number(o, tags::RADIONUCLIDE_HALF_LIFE).ok().flatten()),
            radiopharmaceutical: rp_string(tags::RADIOPHARMACEUTICAL),
            radiopharmaceutical_code: code(tags::RADIOPHARMACEUTICAL_CODE_SEQUENCE),
            collimator_type: t::string(obj, tags::COLLIMATOR_TYPE).map(|s| s.to_ascii_uppercase()),
            series_description: t::string(obj, tags::SERIES_DESCRIPTION),
        }
    }
}

fn code_of(item: &InMemDicomObject) -> Option<Code> {
    let value = t::string(item, tags::CODE_VALUE).unwrap_or_default();
    let meaning = t::string(item, tags::CODE_MEANING).unwrap_or_default();
    (!value.is_empty() || !meaning.is_empty()).then(|| Code {
        value,
        scheme: t::string(item, tags::CODING_SCHEME_DESIGNATOR).unwrap_or_default(),
        meaning,
    })
}
