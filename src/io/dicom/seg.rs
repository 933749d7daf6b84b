//! `lesions.seg.dcm`: the lesions as a binary DICOM Segmentation, one segment per lesion, that
//! references the source PET instances frame by frame.
//!
//! Segment *n* is lesion *n* of `result.json` (its `id`), labelled `Lesion n`, coded as SCT
//! 49755003 "Morphologically Altered Structure" / SCT 108369006 "Neoplasm", with a TrackingID
//! and TrackingUID that the measurement report ([`super::sr`]) repeats. One frame per (segment,
//! PET slice) that holds the segment's voxels, ordered by segment then slice; each frame carries
//! its PlanePositionSequence (the PET slice's ImagePositionPatient), a DerivationImageSequence
//! naming that slice's SOPInstanceUID with SpatialLocationsPreserved YES (the frame is the
//! slice's own grid, so a reader may index frames by source instance), and DimensionIndexValues
//! (segment, slice). An empty mask writes no file.
//!
//! The Patient and Study modules come from the source PET via [`super::write::Derived`].

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::assemble::SeriesStack;
use super::write::{Derived, SeriesInfo, code, ds, item, seq, text, us};
use super::{DicomError, DicomErrorKind, Stage};
use crate::volume::Volume;

/// Segmentation Storage.
pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";

const SERIES: SeriesInfo = SeriesInfo {
    sop_class: SEGMENTATION_STORAGE,
    modality: "SEG",
    role: 0,
    series_number: 901,
    description: "tracerd lesions",
    frame_of_reference: true,
};

/// The SOP Instance and Series Instance UIDs of the SEG derived from `pet_series_uid` (the SR
/// references them).
pub fn seg_uids(pet_series_uid: &str) -> (String, String) {
    (
        super::write::instance_uid(pet_series_uid, SERIES.role),
        super::write::series_uid(pet_series_uid, SERIES.role),
    )
}

/// The segment's TrackingUID: derived from the source series, so the SR can name it too.
pub fn tracking_uid(pet_series_uid: &str, segment: usize) -> String {
    super::write::derived_uid(pet_series_uid, 0x5E6_0000 + segment as u64)
}

/// Writes `path` when `lesions` (on `pet`'s grid; 0 background, *n* lesion *n*) holds any
/// lesion; returns whether it did.
pub fn write_seg(
    pet: &SeriesStack,
    lesions: &Volume<u32>,
    path: &Path,
) -> Result<bool, DicomError> {
    check_grid(pet, lesions, path)?;
    let frames = frames_of(lesions);
    if frames.is_empty() {
        return Ok(false);
    }
    let segments = lesions.data().iter().copied().max().unwrap_or(0) as usize;
    let mut d = Derived::start(pet, &SERIES)?;
    put_image_modules(&mut d, lesions, frames.len());
    d.obj.put(seq(
        tags::SEGMENT_SEQUENCE,
        (1..=segments).map(|n| segment_item(pet, n)).collect(),
    ));
    put_dimensions(&mut d);
    put_shared_groups(&mut d);
    let per_frame = frames.iter().map(|&(n, k)| frame_item(&d, n, k)).collect();
    d.obj
        .put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame));
    d.obj.put(seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![d.referenced_series()],
    ));
    d.obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pack_bits(lesions, &frames)),
    ));
    d.write(SEGMENTATION_STORAGE, path)?;
    Ok(true)
}

fn check_grid(pet: &SeriesStack, lesions: &Volume<u32>, path: &Path) -> Result<(), DicomError> {
    let off = (lesions.geometry().affine_lps() - pet.geometry.affine_lps())
        .abs()
        .max();
    if lesions.shape() == pet.geometry.shape && off <= 1e-3 {
        return Ok(());
    }
    Err(DicomError::new(
        Stage::Write,
        path.display().to_string(),
        DicomErrorKind::Write(format!(
            "the mask (shape {:?}) is not on the PET grid (shape {:?}, affines {off:.2e} mm apart)",
            lesions.shape(),
            pet.geometry.shape
        )),
    ))
}

/// (segment, slice) of every frame: each slice where the segment has voxels, by segment.
fn frames_of(lesions: &Volume<u32>) -> Vec<(usize, usize)> {
    let [nx, ny, nz] = lesions.shape();
    let plane = nx * ny;
    let mut present = std::collections::BTreeSet::new();
    for k in 0..nz {
        for &v in &lesions.data()[k * plane..(k + 1) * plane] {
            if v != 0 {
                present.insert((v as usize, k));
            }
        }
    }
    present.into_iter().collect()
}

fn put_image_modules(d: &mut Derived, lesions: &Volume<u32>, frames: usize) {
    let [nx, ny, _] = lesions.shape();
    for e in [
        text(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY"),
        text(tags::CONTENT_LABEL, VR::CS, "LESIONS"),
        text(
            tags::CONTENT_DESCRIPTION,
            VR::LO,
            "FDG-avid lesions (automatic)",
        ),
        text(tags::CONTENT_CREATOR_NAME, VR::PN, "tracerd^"),
        text(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        text(tags::NUMBER_OF_FRAMES, VR::IS, &frames.to_string()),
        us(tags::ROWS, ny as u16),
        us(tags::COLUMNS, nx as u16),
        us(tags::BITS_ALLOCATED, 1),
        us(tags::BITS_STORED, 1),
        us(tags::HIGH_BIT, 0),
        us(tags::PIXEL_REPRESENTATION, 0),
        us(tags::SAMPLES_PER_PIXEL, 1),
    ] {
        d.obj.put(e);
    }
}

fn segment_item(pet: &SeriesStack, n: usize) -> InMemDicomObject {
    item(vec![
        us(tags::SEGMENT_NUMBER, n as u16),
        text(tags::SEGMENT_LABEL, VR::LO, &format!("Lesion {n}")),
        text(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
        text(tags::SEGMENT_ALGORITHM_NAME, VR::LO, "tracerd L2SNet"),
        text(tags::TRACKING_ID, VR::UT, &format!("Lesion {n}")),
        text(
            tags::TRACKING_UID,
            VR::UI,
            &tracking_uid(&pet.series_uid, n),
        ),
        seq(
            tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
            vec![code("49755003", "SCT", "Morphologically Altered Structure")],
        ),
        seq(
            tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
            vec![code("108369006", "SCT", "Neoplasm")],
        ),
    ])
}

fn put_dimensions(d: &mut Derived) {
    let dim_uid = d.uid(3);
    d.obj.put(seq(
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![item(vec![text(
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            &dim_uid,
        )])],
    ));
    let dim = |pointer, group, label: &str| {
        item(vec![
            text(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid),
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
            text(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    d.obj.put(seq(
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
}

fn put_shared_groups(d: &mut Derived) {
    let g = &d.pet.geometry;
    let (r, c) = (g.direction.column(0), g.direction.column(1));
    let iop = [r[0], r[1], r[2], c[0], c[1], c[2]].map(ds).join("\\");
    let spacing = format!("{}\\{}", ds(g.spacing[1]), ds(g.spacing[0]));
    let measures = item(vec![
        text(tags::PIXEL_SPACING, VR::DS, &spacing),
        text(tags::SLICE_THICKNESS, VR::DS, &ds(g.spacing[2])),
        text(tags::SPACING_BETWEEN_SLICES, VR::DS, &ds(g.spacing[2])),
    ]);
    let orientation = item(vec![text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &iop)]);
    d.obj.put(seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![item(vec![
            seq(tags::PIXEL_MEASURES_SEQUENCE, vec![measures]),
            seq(tags::PLANE_ORIENTATION_SEQUENCE, vec![orientation]),
        ])],
    ));
}

fn frame_item(d: &Derived, segment: usize, k: usize) -> InMemDicomObject {
    let p = d
        .pet
        .geometry
        .index_to_world(nalgebra::Vector3::new(0.0, 0.0, k as f64));
    let mut source = d.pet_reference(k);
    source.put(seq(
        tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
        vec![code(
            "121322",
            "DCM",
            "Source image for image processing operation",
        )],
    ));
    source.put(text(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"));
    let derivation = item(vec![
        seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source]),
        seq(
            tags::DERIVATION_CODE_SEQUENCE,
            vec![code("113076", "DCM", "Segmentation")],
        ),
    ]);
    let index = [segment as u32, (k + 1) as u32];
    let position = format!("{}\\{}\\{}", ds(p.x), ds(p.y), ds(p.z));
    item(vec![
        seq(tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]),
        seq(
            tags::FRAME_CONTENT_SEQUENCE,
            vec![item(vec![DataElement::new(
                tags::DIMENSION_INDEX_VALUES,
                VR::UL,
                PrimitiveValue::U32(index.as_slice().into()),
            )])],
        ),
        seq(
            tags::PLANE_POSITION_SEQUENCE,
            vec![item(vec![text(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &position,
            )])],
        ),
        seq(
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            vec![item(vec![us(
                tags::REFERENCED_SEGMENT_NUMBER,
                segment as u16,
            )])],
        ),
    ])
}

/// The frames' bits, little-end first, frames back to back (PS3.5 8.1.1), padded to even length.
fn pack_bits(lesions: &Volume<u32>, frames: &[(usize, usize)]) -> Vec<u8> {
    let [nx, ny, _] = lesions.shape();
    let plane = nx * ny;
    let mut bits = vec![0u8; (frames.len() * plane).div_ceil(8)];
    for (f, &(segment, k)) in frames.iter().enumerate() {
        let slice = &lesions.data()[k * plane..(k + 1) * plane];
        for (i, &v) in slice.iter().enumerate() {
            if v as usize == segment {
                let b = f * plane + i;
                bits[b / 8] |= 1 << (b % 8);
            }
        }
    }
    if bits.len() % 2 == 1 {
        bits.push(0);
    }
    bits
}
