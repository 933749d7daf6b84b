//! `overview.sc.dcm`: the overview picture as a DICOM Secondary Capture, so every PACS viewer
//! shows it beside the study.
//!
//! Same patient, study and frame of reference as the source PET ([`super::write::Derived`]), its
//! own series (number 902, modality OT), RGB 8-bit pixels, ConversionType WSD, and references to
//! every source PET instance (Source Image Sequence and the Common Instance Reference module).
//! The picture carries no patient identifier, so BurnedInAnnotation is NO.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use image::RgbImage;

use super::DicomError;
use super::assemble::SeriesStack;
use super::write::{Derived, SeriesInfo, code, seq, text, us};

/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.7";

const SERIES: SeriesInfo = SeriesInfo {
    sop_class: SECONDARY_CAPTURE_STORAGE,
    modality: "OT",
    role: 1,
    series_number: 902,
    description: "tracerd overview",
    frame_of_reference: false,
};

/// Writes `picture` to `path` as a Secondary Capture derived from `pet`.
pub fn write_sc(pet: &SeriesStack, picture: &RgbImage, path: &Path) -> Result<(), DicomError> {
    let mut d = Derived::start(pet, &SERIES)?;
    for e in [
        text(tags::CONVERSION_TYPE, VR::CS, "WSD"),
        text(tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY"),
        text(tags::PATIENT_ORIENTATION, VR::CS, ""),
        // An unpaired body part, so Laterality (type 2C for paired parts) is absent.
        text(tags::BODY_PART_EXAMINED, VR::CS, "WHOLEBODY"),
        text(
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            "Coronal and sagittal maximum intensity projections of the PET (SUV) with the \
             lesions found by tracerd outlined and numbered",
        ),
        text(tags::BURNED_IN_ANNOTATION, VR::CS, "NO"),
        text(tags::RECOGNIZABLE_VISUAL_FEATURES, VR::CS, "NO"),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
        us(tags::SAMPLES_PER_PIXEL, 3),
        us(tags::PLANAR_CONFIGURATION, 0),
        us(tags::ROWS, picture.height() as u16),
        us(tags::COLUMNS, picture.width() as u16),
        us(tags::BITS_ALLOCATED, 8),
        us(tags::BITS_STORED, 8),
        us(tags::HIGH_BIT, 7),
        us(tags::PIXEL_REPRESENTATION, 0),
    ] {
        d.obj.put(e);
    }
    let sources = (0..pet.slices.len())
        .map(|k| {
            let mut r = d.pet_reference(k);
            r.put(seq(
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code(
                    "121322",
                    "DCM",
                    "Source image for image processing operation",
                )],
            ));
            r
        })
        .collect();
    d.obj.put(seq(tags::SOURCE_IMAGE_SEQUENCE, sources));
    d.obj.put(seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![d.referenced_series()],
    ));
    let mut pixels = picture.as_raw().clone();
    if pixels.len() % 2 == 1 {
        pixels.push(0);
    }
    d.obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pixels),
    ));
    d.write(SECONDARY_CAPTURE_STORAGE, path)
}
