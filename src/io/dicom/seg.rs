//! `lesions.seg.dcm`: the lesion mask as a binary DICOM Segmentation that references the source
//! PET instances frame by frame.
//!
//! One frame per PET slice that holds lesion voxels (slices without lesions are skipped, which
//! is allowed and what viewers expect); each frame carries its own PlanePositionSequence (the
//! PET slice's ImagePositionPatient), a DerivationImageSequence pointing at that slice's
//! SOPInstanceUID, and DimensionIndexValues (segment, slice position) so a viewer places it on
//! the right slice. One segment, coded as SCT 49755003 "Morphologically Altered Structure" /
//! SCT 108369006 "Neoplasm". An empty mask writes no file.
//!
//! The Patient and Study modules are copied element by element from the first source PET file
//! so the SEG files under the right patient; the values are never looked at or logged.

use std::path::Path;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use super::assemble::SeriesStack;
use super::synth_export::{ds, write_part10};
use super::{DicomError, DicomErrorKind, Stage};
use crate::volume::Volume;

/// Segmentation Storage.
pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// Elements copied from the source PET (Patient, General Study, Frame of Reference modules).
const COPIED: [Tag; 14] = [
    tags::SPECIFIC_CHARACTER_SET,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::FRAME_OF_REFERENCE_UID,
    tags::POSITION_REFERENCE_INDICATOR,
    tags::PATIENT_AGE,
];

fn s(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn item(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    item(vec![
        s(tags::CODE_VALUE, VR::SH, value),
        s(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        s(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// A UID under 2.25 derived from the source series and a role, so a re-run writes the same SEG.
fn derived_uid(source: &str, role: u64) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in source.bytes().chain(role.to_le_bytes()) {
        h ^= b as u128;
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
    }
    format!("2.25.{}", h >> 1)
}

/// Writes `path` when `mask` (on `pet`'s grid) has lesion voxels; returns whether it did.
pub fn write_seg(pet: &SeriesStack, mask: &Volume<u8>, path: &Path) -> Result<bool, DicomError> {
    let err = |kind| DicomError::new(Stage::Write, path.display().to_string(), kind);
    let off = (mask.geometry().affine_lps() - pet.geometry.affine_lps())
        .abs()
        .max();
    if mask.shape() != pet.geometry.shape || off > 1e-3 {
        return Err(err(DicomErrorKind::Write(format!(
            "the mask (shape {:?}) is not on the PET grid (shape {:?}, affines {off:.2e} mm apart)",
            mask.shape(),
            pet.geometry.shape
        ))));
    }
    let [nx, ny, nz] = mask.shape();
    let plane = nx * ny;
    let frames: Vec<usize> = (0..nz)
        .filter(|&k| {
            mask.data()[k * plane..(k + 1) * plane]
                .iter()
                .any(|&v| v != 0)
        })
        .collect();
    if frames.is_empty() {
        return Ok(false);
    }
    let first = &pet.slices[0];
    let source = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(&first.path)
        .map_err(|e| {
            DicomError::new(
                Stage::Write,
                first.rel.display().to_string(),
                DicomErrorKind::Unreadable(e.to_string()),
            )
        })?;
    let mut obj = InMemDicomObject::new_empty();
    for tag in COPIED {
        if let Ok(Some(e)) = source.element_opt(tag) {
            obj.put(e.clone());
        }
    }
    for tag in [
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        tags::PATIENT_BIRTH_DATE,
        tags::PATIENT_SEX,
    ] {
        if obj.element_opt(tag).ok().flatten().is_none() {
            let vr = match tag {
                tags::PATIENT_NAME => VR::PN,
                tags::PATIENT_BIRTH_DATE => VR::DA,
                tags::PATIENT_SEX => VR::CS,
                _ => VR::LO,
            };
            obj.put(s(tag, vr, ""));
        }
    }
    for (tag, vr) in [
        (tags::STUDY_DATE, VR::DA),
        (tags::STUDY_TIME, VR::TM),
        (tags::STUDY_ID, VR::SH),
        (tags::ACCESSION_NUMBER, VR::SH),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
        (tags::POSITION_REFERENCE_INDICATOR, VR::LO),
    ] {
        if obj.element_opt(tag).ok().flatten().is_none() {
            obj.put(s(tag, vr, ""));
        }
    }
    let sop_uid = derived_uid(&pet.series_uid, 1);
    let series_uid = derived_uid(&pet.series_uid, 2);
    let dim_uid = derived_uid(&pet.series_uid, 3);
    let g = &pet.geometry;
    let (r, c) = (g.direction.column(0), g.direction.column(1));
    let iop = [r[0], r[1], r[2], c[0], c[1], c[2]].map(ds).join("\\");
    let date = source
        .element_opt(tags::STUDY_DATE)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "19700101".into());
    let pet_sop_class = if first.sop_class_uid.is_empty() {
        super::assemble::PET_IMAGE_STORAGE.to_string()
    } else {
        first.sop_class_uid.clone()
    };

    for e in [
        s(tags::SOP_CLASS_UID, VR::UI, SEGMENTATION_STORAGE),
        s(tags::SOP_INSTANCE_UID, VR::UI, &sop_uid),
        s(tags::MODALITY, VR::CS, "SEG"),
        s(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid),
        s(tags::SERIES_NUMBER, VR::IS, "901"),
        s(tags::SERIES_DESCRIPTION, VR::LO, "tracerd lesions"),
        s(tags::INSTANCE_NUMBER, VR::IS, "1"),
        s(tags::CONTENT_DATE, VR::DA, &date),
        s(tags::CONTENT_TIME, VR::TM, "000000"),
        s(tags::SERIES_DATE, VR::DA, &date),
        s(tags::SERIES_TIME, VR::TM, "000000"),
        s(tags::MANUFACTURER, VR::LO, "tracerd"),
        s(tags::MANUFACTURER_MODEL_NAME, VR::LO, "tracerd"),
        s(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"),
        s(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION")),
        s(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY"),
        s(tags::CONTENT_LABEL, VR::CS, "LESIONS"),
        s(
            tags::CONTENT_DESCRIPTION,
            VR::LO,
            "FDG-avid lesions (automatic)",
        ),
        s(tags::CONTENT_CREATOR_NAME, VR::PN, "tracerd^"),
        s(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        s(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        s(tags::SAMPLES_PER_PIXEL, VR::US, "1"),
        s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        s(tags::NUMBER_OF_FRAMES, VR::IS, &frames.len().to_string()),
    ] {
        obj.put(e);
    }
    for (tag, v) in [
        (tags::ROWS, ny as u16),
        (tags::COLUMNS, nx as u16),
        (tags::BITS_ALLOCATED, 1),
        (tags::BITS_STORED, 1),
        (tags::HIGH_BIT, 0),
        (tags::PIXEL_REPRESENTATION, 0),
        (tags::SAMPLES_PER_PIXEL, 1),
    ] {
        obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    }
    obj.put(seq(
        tags::SEGMENT_SEQUENCE,
        vec![item(vec![
            DataElement::new(tags::SEGMENT_NUMBER, VR::US, PrimitiveValue::from(1u16)),
            s(tags::SEGMENT_LABEL, VR::LO, "Lesion"),
            s(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
            s(tags::SEGMENT_ALGORITHM_NAME, VR::LO, "tracerd L2SNet"),
            seq(
                tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                vec![code("49755003", "SCT", "Morphologically Altered Structure")],
            ),
            seq(
                tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
                vec![code("108369006", "SCT", "Neoplasm")],
            ),
        ])],
    ));
    obj.put(seq(
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![item(vec![s(
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            &dim_uid,
        )])],
    ));
    let dim = |pointer: Tag, group: Tag, label: &str| {
        item(vec![
            s(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid),
            DataElement::new(
                tags::DIMENSION_INDEX_POINTER,
                VR::AT,
                PrimitiveValue::from(pointer),
            ),
            DataElement::new(
                tags::FUNCTIONAL_GROUP_POINTER,
                VR::AT,
                PrimitiveValue::from(group),
            ),
            s(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    obj.put(seq(
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dim(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "ReferencedSegmentNumber",
            ),
            dim(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "ImagePositionPatient",
            ),
        ],
    ));
    obj.put(seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![item(vec![
            seq(
                tags::PIXEL_MEASURES_SEQUENCE,
                vec![item(vec![
                    s(
                        tags::PIXEL_SPACING,
                        VR::DS,
                        &format!("{}\\{}", ds(g.spacing[1]), ds(g.spacing[0])),
                    ),
                    s(tags::SLICE_THICKNESS, VR::DS, &ds(g.spacing[2])),
                    s(tags::SPACING_BETWEEN_SLICES, VR::DS, &ds(g.spacing[2])),
                ])],
            ),
            seq(
                tags::PLANE_ORIENTATION_SEQUENCE,
                vec![item(vec![s(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &iop)])],
            ),
        ])],
    ));
    let mut per_frame = Vec::with_capacity(frames.len());
    let mut bits = vec![0u8; (frames.len() * plane).div_ceil(8)];
    for (f, &k) in frames.iter().enumerate() {
        let src = &pet.slices[k];
        let p = g.index_to_world(nalgebra::Vector3::new(0.0, 0.0, k as f64));
        per_frame.push(item(vec![
            seq(
                tags::DERIVATION_IMAGE_SEQUENCE,
                vec![item(vec![
                    seq(
                        tags::SOURCE_IMAGE_SEQUENCE,
                        vec![item(vec![
                            s(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &pet_sop_class),
                            s(
                                tags::REFERENCED_SOP_INSTANCE_UID,
                                VR::UI,
                                &src.sop_instance_uid,
                            ),
                            seq(
                                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                                vec![code(
                                    "121322",
                                    "DCM",
                                    "Source image for image processing operation",
                                )],
                            ),
                        ])],
                    ),
                    seq(
                        tags::DERIVATION_CODE_SEQUENCE,
                        vec![code("113076", "DCM", "Segmentation")],
                    ),
                ])],
            ),
            seq(
                tags::FRAME_CONTENT_SEQUENCE,
                vec![item(vec![DataElement::new(
                    tags::DIMENSION_INDEX_VALUES,
                    VR::UL,
                    PrimitiveValue::U32([1u32, (k + 1) as u32].as_slice().into()),
                )])],
            ),
            seq(
                tags::PLANE_POSITION_SEQUENCE,
                vec![item(vec![s(
                    tags::IMAGE_POSITION_PATIENT,
                    VR::DS,
                    &format!("{}\\{}\\{}", ds(p.x), ds(p.y), ds(p.z)),
                )])],
            ),
            seq(
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                vec![item(vec![DataElement::new(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    VR::US,
                    PrimitiveValue::from(1u16),
                )])],
            ),
        ]));
        // Bits packed little-end first, frames back to back (PS3.5 8.1.1).
        let slice = &mask.data()[k * plane..(k + 1) * plane];
        for (i, &v) in slice.iter().enumerate() {
            if v != 0 {
                let b = f * plane + i;
                bits[b / 8] |= 1 << (b % 8);
            }
        }
    }
    obj.put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame));
    let refs: Vec<InMemDicomObject> = pet
        .slices
        .iter()
        .map(|i| {
            item(vec![
                s(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &pet_sop_class),
                s(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    &i.sop_instance_uid,
                ),
            ])
        })
        .collect();
    obj.put(seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![item(vec![
            s(tags::SERIES_INSTANCE_UID, VR::UI, &pet.series_uid),
            seq(tags::REFERENCED_INSTANCE_SEQUENCE, refs),
        ])],
    ));
    if bits.len() % 2 == 1 {
        bits.push(0);
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(bits),
    ));
    write_part10(path, obj, SEGMENTATION_STORAGE, &sop_uid)
        .map_err(|e| err(DicomErrorKind::WriteFile(e)))?;
    Ok(true)
}
