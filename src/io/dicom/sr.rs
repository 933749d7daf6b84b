//! `lesions.sr.dcm`: the lesion measurements as a DICOM Enhanced SR following TID 1500
//! "Measurement Report", the way dcmqi and highdicom write it, so 3D Slicer's
//! QuantitativeReporting and OHIF show them beside the SEG.
//!
//! The tree: Imaging Measurement Report (TID 1500) with language, a device observer (tracerd)
//! and the procedure reported (PET/CT FDG whole body); under Imaging Measurements one
//! Measurement Group (TID 1411, volumetric ROI) per lesion, holding its Tracking Identifier
//! ("Lesion n") and Tracking UID (the same as the SEG segment's), the finding (SCT Neoplasm),
//! the Referenced Segment (segment *n* of `lesions.seg.dcm`), the source series (the PET), and
//! four measurements with UCUM units: Volume (SCT 118565006, ml), SUVbw (DCM 126401,
//! g/ml{SUVbw}) with derivation Maximum and Mean, and Total Lesion Glycolysis (DCM 126033,
//! g{SUVbw}: SUVbw × ml). The values are `result.json`'s, rounded the same way.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::DicomError;
use super::assemble::SeriesStack;
use super::seg::{SEGMENTATION_STORAGE, seg_uids, tracking_uid};
use super::write::{Derived, IMPLEMENTATION_CLASS_UID, SeriesInfo, code, ds, item, seq, text};
use crate::models::l2snet::{Lesion, LesionSummary};

/// Enhanced SR Storage.
pub const ENHANCED_SR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.88.22";

const SERIES: SeriesInfo = SeriesInfo {
    sop_class: ENHANCED_SR_STORAGE,
    modality: "SR",
    role: 2,
    series_number: 903,
    description: "tracerd lesion measurements",
    frame_of_reference: false,
};

/// Writes the measurement report of `lesions` (numbered as the SEG's segments) to `path`.
pub fn write_sr(pet: &SeriesStack, lesions: &LesionSummary, path: &Path) -> Result<(), DicomError> {
    let mut d = Derived::start(pet, &SERIES)?;
    let (seg_uid, seg_series) = seg_uids(&pet.series_uid);
    for e in [
        text(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"),
        text(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"),
        seq(tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, vec![]),
        seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]),
    ] {
        d.obj.put(e);
    }
    d.obj.put(evidence(&d, &seg_uid, &seg_series));
    let groups = lesions
        .items
        .iter()
        .map(|l| measurement_group(pet, l, &seg_uid))
        .collect();
    let root = report(groups);
    for e in root.into_iter() {
        d.obj.put(e);
    }
    d.write(ENHANCED_SR_STORAGE, path)
}

/// Current Requested Procedure Evidence: the SEG the groups reference and the source PET.
fn evidence(d: &Derived, seg_uid: &str, seg_series: &str) -> DataElement<InMemDicomObject> {
    let sop = |class: &str, instance: &str| {
        item(vec![
            text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
            text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance),
        ])
    };
    let pet_sops = (0..d.pet.slices.len())
        .map(|k| d.pet_reference(k))
        .collect();
    seq(
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![item(vec![
            text(tags::STUDY_INSTANCE_UID, VR::UI, &d.study_uid()),
            seq(
                tags::REFERENCED_SERIES_SEQUENCE,
                vec![
                    item(vec![
                        text(tags::SERIES_INSTANCE_UID, VR::UI, seg_series),
                        seq(
                            tags::REFERENCED_SOP_SEQUENCE,
                            vec![sop(SEGMENTATION_STORAGE, seg_uid)],
                        ),
                    ]),
                    item(vec![
                        text(tags::SERIES_INSTANCE_UID, VR::UI, &d.pet.series_uid),
                        seq(tags::REFERENCED_SOP_SEQUENCE, pet_sops),
                    ]),
                ],
            ),
        ])],
    )
}

/// A content item: relationship, value type, concept name, and the value's elements.
fn content(
    relationship: &str,
    value_type: &str,
    concept: InMemDicomObject,
    value: Vec<DataElement<InMemDicomObject>>,
) -> InMemDicomObject {
    let mut elements = Vec::with_capacity(value.len() + 3);
    if !relationship.is_empty() {
        elements.push(text(tags::RELATIONSHIP_TYPE, VR::CS, relationship));
    }
    elements.push(text(tags::VALUE_TYPE, VR::CS, value_type));
    elements.push(seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![concept]));
    elements.extend(value);
    item(elements)
}

fn coded(
    relationship: &str,
    concept: InMemDicomObject,
    value: InMemDicomObject,
) -> InMemDicomObject {
    content(
        relationship,
        "CODE",
        concept,
        vec![seq(tags::CONCEPT_CODE_SEQUENCE, vec![value])],
    )
}

fn uidref(relationship: &str, concept: InMemDicomObject, uid: &str) -> InMemDicomObject {
    content(
        relationship,
        "UIDREF",
        concept,
        vec![text(tags::UID, VR::UI, uid)],
    )
}

fn container(
    relationship: &str,
    concept: InMemDicomObject,
    template: Option<&str>,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut value = vec![text(tags::CONTINUITY_OF_CONTENT, VR::CS, "CONTINUOUS")];
    if let Some(id) = template {
        value.push(seq(
            tags::CONTENT_TEMPLATE_SEQUENCE,
            vec![item(vec![
                text(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
                text(tags::TEMPLATE_IDENTIFIER, VR::CS, id),
            ])],
        ));
    }
    value.push(seq(tags::CONTENT_SEQUENCE, children));
    content(relationship, "CONTAINER", concept, value)
}

/// A NUM item with its unit and, for SUVbw, the derivation (maximum, mean).
fn num(
    concept: InMemDicomObject,
    value: f64,
    unit: InMemDicomObject,
    derivation: Option<InMemDicomObject>,
) -> InMemDicomObject {
    let measured = item(vec![
        seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![unit]),
        DataElement::new(
            tags::FLOATING_POINT_VALUE,
            VR::FD,
            PrimitiveValue::from(value),
        ),
        text(tags::NUMERIC_VALUE, VR::DS, &ds(value)),
    ]);
    let mut elements = vec![seq(tags::MEASURED_VALUE_SEQUENCE, vec![measured])];
    if let Some(d) = derivation {
        let modifier = coded("HAS CONCEPT MOD", code("121401", "DCM", "Derivation"), d);
        elements.push(seq(tags::CONTENT_SEQUENCE, vec![modifier]));
    }
    content("CONTAINS", "NUM", concept, elements)
}

/// The TID 1411 group of one lesion.
fn measurement_group(pet: &SeriesStack, l: &Lesion, seg_uid: &str) -> InMemDicomObject {
    let mut children = vec![
        content(
            "HAS OBS CONTEXT",
            "TEXT",
            code("112039", "DCM", "Tracking Identifier"),
            vec![text(tags::TEXT_VALUE, VR::UT, &format!("Lesion {}", l.id))],
        ),
        uidref(
            "HAS OBS CONTEXT",
            code("112040", "DCM", "Tracking Unique Identifier"),
            &tracking_uid(&pet.series_uid, l.id),
        ),
        coded(
            "CONTAINS",
            code("121071", "DCM", "Finding"),
            code("108369006", "SCT", "Neoplasm"),
        ),
    ];
    children.extend(measurements(l));
    children.push(referenced_segment(l, seg_uid));
    children.push(uidref(
        "CONTAINS",
        code("121232", "DCM", "Source series for segmentation"),
        &pet.series_uid,
    ));
    container(
        "CONTAINS",
        code("125007", "DCM", "Measurement Group"),
        Some("1411"),
        children,
    )
}

/// The lesion's volume, SUVmax, SUVmean and TLG as NUM content items.
fn measurements(l: &Lesion) -> [InMemDicomObject; 4] {
    let suv = || code("126401", "DCM", "SUVbw");
    let suv_unit = || {
        code(
            "g/ml{SUVbw}",
            "UCUM",
            "Standardized Uptake Value body weight",
        )
    };
    [
        num(
            code("118565006", "SCT", "Volume"),
            l.volume_ml,
            code("ml", "UCUM", "milliliter"),
            None,
        ),
        num(
            suv(),
            l.suv_max,
            suv_unit(),
            Some(code("56851009", "SCT", "Maximum")),
        ),
        num(
            suv(),
            l.suv_mean,
            suv_unit(),
            Some(code("373098007", "SCT", "Mean")),
        ),
        num(
            code("126033", "DCM", "Total Lesion Glycolysis"),
            l.tlg,
            code("g{SUVbw}", "UCUM", "gram (SUVbw times milliliter)"),
            None,
        ),
    ]
}

/// The lesion's segment in the SEG (ReferencedSOPSequence with its segment number).
fn referenced_segment(l: &Lesion, seg_uid: &str) -> InMemDicomObject {
    content(
        "CONTAINS",
        "IMAGE",
        code("121191", "DCM", "Referenced Segment"),
        vec![seq(
            tags::REFERENCED_SOP_SEQUENCE,
            vec![item(vec![
                text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, SEGMENTATION_STORAGE),
                text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, seg_uid),
                super::write::us(tags::REFERENCED_SEGMENT_NUMBER, l.id as u16),
            ])],
        )],
    )
}

/// The document's root content item (TID 1500) over the lesions' groups.
fn report(groups: Vec<InMemDicomObject>) -> InMemDicomObject {
    let children = vec![
        coded(
            "HAS CONCEPT MOD",
            code("121049", "DCM", "Language of Content Item and Descendants"),
            code("en-US", "RFC5646", "English (United States)"),
        ),
        coded(
            "HAS OBS CONTEXT",
            code("121005", "DCM", "Observer Type"),
            code("121007", "DCM", "Device"),
        ),
        uidref(
            "HAS OBS CONTEXT",
            code("121012", "DCM", "Device Observer UID"),
            IMPLEMENTATION_CLASS_UID,
        ),
        content(
            "HAS OBS CONTEXT",
            "TEXT",
            code("121013", "DCM", "Device Observer Name"),
            vec![text(tags::TEXT_VALUE, VR::UT, "tracerd")],
        ),
        coded(
            "HAS CONCEPT MOD",
            code("121058", "DCM", "Procedure reported"),
            code("443271005", "SCT", "PET/CT FDG imaging of whole body"),
        ),
        container(
            "CONTAINS",
            code("126010", "DCM", "Imaging Measurements"),
            None,
            groups,
        ),
    ];
    container(
        "",
        code("126000", "DCM", "Imaging Measurement Report"),
        Some("1500"),
        children,
    )
}
