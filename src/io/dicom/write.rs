//! Building and writing DICOM data sets, shared by every writer: the lesion SEG ([`super::seg`]),
//! the overview Secondary Capture ([`super::sc`]), the measurement report ([`super::sr`]) and the
//! synthetic exporter ([`crate::synth::dicom`]).
//!
//! * element helpers ([`text`], [`us`], [`seq`], [`item`], [`code`]) and the DS formatter [`ds`];
//! * UIDs derived from the source series and a role ([`derived_uid`]), so a re-run of the same
//!   study writes the same instances, which a PACS then replaces instead of duplicating;
//! * the modules every derived object shares ([`Derived`]): Patient, General Study and Frame of
//!   Reference copied element by element from the source PET (never looked at or logged), a new
//!   General Series, General Equipment, and the references back to the source PET series;
//! * Part-10 output ([`write_part10`]): file meta, Explicit VR Little Endian, written atomically.

use std::io;
use std::path::Path;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};

use super::assemble::{PET_IMAGE_STORAGE, SeriesStack};
use super::{DicomError, DicomErrorKind, Stage};
use crate::fsio;

/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// tracerd's implementation class UID (a 2.25 UUID-derived root).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.90183226271406385402735102934137640221";
const IMPLEMENTATION_VERSION: &str = "TRACERD_0_1";

/// Elements copied from the source PET (Patient, General Study and, for image objects whose IOD
/// has it, Frame of Reference modules).
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

/// Type 2 elements of the copied modules, written empty when the source lacks them.
const EMPTY_IF_ABSENT: [(Tag, VR); 10] = [
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::PATIENT_BIRTH_DATE, VR::DA),
    (tags::PATIENT_SEX, VR::CS),
    (tags::STUDY_DATE, VR::DA),
    (tags::STUDY_TIME, VR::TM),
    (tags::STUDY_ID, VR::SH),
    (tags::ACCESSION_NUMBER, VR::SH),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    (tags::POSITION_REFERENCE_INDICATOR, VR::LO),
];

/// A text element (any string VR).
pub fn text(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

/// A US element.
pub fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

/// A sequence of items.
pub fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// One sequence item.
pub fn item(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

/// A code sequence item (Code Value, Coding Scheme Designator, Code Meaning).
pub fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    item(vec![
        text(tags::CODE_VALUE, VR::SH, value),
        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        text(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// A DS string of at most 16 characters holding `v` to ~10 significant digits.
pub fn ds(v: f64) -> String {
    let plain = format!("{v}");
    if plain.len() <= 16 {
        return plain;
    }
    for digits in (1..=10).rev() {
        let s = format!("{v:.digits$E}");
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.0}")
}

/// A UID under 2.25 derived from the source series and a role, so a re-run writes the same
/// instance (an FNV-1a-style 128-bit hash; not secret, only stable and collision-poor).
pub fn derived_uid(source: &str, role: u64) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in source.bytes().chain(role.to_le_bytes()) {
        h ^= b as u128;
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
    }
    format!("2.25.{}", h >> 1)
}

/// The file meta group tracerd writes: SOP class and instance, transfer syntax `ts`, and
/// tracerd as the implementation.
pub fn file_meta(
    sop_class: &str,
    sop_instance: &str,
    ts: &str,
) -> io::Result<dicom_object::FileMetaTable> {
    FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(ts)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION)
        .build()
        .map_err(io::Error::other)
}

/// Writes `obj` with a file meta group, atomically.
pub fn write_part10(
    path: &Path,
    obj: InMemDicomObject,
    sop_class: &str,
    sop_instance: &str,
) -> io::Result<()> {
    let meta = file_meta(sop_class, sop_instance, EXPLICIT_VR_LE)?;
    let file = obj.with_exact_meta(meta);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    fsio::write_atomic(path, |tmp| file.write_to_file(tmp).map_err(fsio::keep_kind))
}

/// What a new series derived from a source PET series says about itself.
pub struct SeriesInfo<'a> {
    pub sop_class: &'a str,
    pub modality: &'a str,
    /// Distinguishes the derived objects of one source series in their UIDs: 0 SEG, 1 SC, 2 SR.
    pub role: u64,
    pub series_number: u32,
    pub description: &'a str,
    /// Whether the IOD has the Frame of Reference module (SEG yes; SC and SR no).
    pub frame_of_reference: bool,
}

/// The SOP Instance UID of the object with `role` derived from `source_series` (0 SEG, 1 SC, 2 SR).
pub fn instance_uid(source_series: &str, role: u64) -> String {
    derived_uid(source_series, role * 16 + 1)
}

/// The Series Instance UID of the object with `role` derived from `source_series`.
pub fn series_uid(source_series: &str, role: u64) -> String {
    derived_uid(source_series, role * 16 + 2)
}

/// A data set under construction for an object derived from a source PET series: the copied
/// Patient/Study/Frame of Reference modules, a new series, and General Equipment.
pub struct Derived<'a> {
    pub obj: InMemDicomObject,
    pub pet: &'a SeriesStack,
    pub sop_uid: String,
    pub series_uid: String,
    /// The source's StudyDate (19700101 when absent), used for the new series and content.
    pub date: String,
    /// The source PET's SOP Class UID, for references.
    pub pet_sop_class: String,
    /// [`SeriesInfo::role`].
    role: u64,
}

impl<'a> Derived<'a> {
    /// Starts the data set: reads the first source PET file's header for the copied modules.
    pub fn start(pet: &'a SeriesStack, info: &SeriesInfo) -> Result<Self, DicomError> {
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
        let frame_tags = [
            tags::FRAME_OF_REFERENCE_UID,
            tags::POSITION_REFERENCE_INDICATOR,
        ];
        for tag in COPIED {
            if !info.frame_of_reference && frame_tags.contains(&tag) {
                continue;
            }
            if let Some(e) = source.get(tag) {
                obj.put(e.clone());
            }
        }
        for (tag, vr) in EMPTY_IF_ABSENT {
            let skip = !info.frame_of_reference && frame_tags.contains(&tag);
            if !skip && obj.get(tag).is_none() {
                obj.put(text(tag, vr, ""));
            }
        }
        let date = source
            .get(tags::STUDY_DATE)
            .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "19700101".into());
        let pet_sop_class = if first.sop_class_uid.is_empty() {
            PET_IMAGE_STORAGE.to_string()
        } else {
            first.sop_class_uid.clone()
        };
        let mut derived = Derived {
            obj,
            pet,
            sop_uid: instance_uid(&pet.series_uid, info.role),
            series_uid: series_uid(&pet.series_uid, info.role),
            date,
            pet_sop_class,
            role: info.role,
        };
        derived.put_series(info);
        Ok(derived)
    }

    /// A further UID of this object (dimension organisation, a referenced segment…).
    pub fn uid(&self, n: u64) -> String {
        derived_uid(&self.pet.series_uid, self.role * 16 + n)
    }

    fn put_series(&mut self, info: &SeriesInfo) {
        for e in [
            text(tags::SOP_CLASS_UID, VR::UI, info.sop_class),
            text(tags::SOP_INSTANCE_UID, VR::UI, &self.sop_uid),
            text(tags::MODALITY, VR::CS, info.modality),
            text(tags::SERIES_INSTANCE_UID, VR::UI, &self.series_uid),
            text(tags::SERIES_NUMBER, VR::IS, &info.series_number.to_string()),
            text(tags::SERIES_DESCRIPTION, VR::LO, info.description),
            text(tags::INSTANCE_NUMBER, VR::IS, "1"),
            text(tags::CONTENT_DATE, VR::DA, &self.date),
            text(tags::CONTENT_TIME, VR::TM, "000000"),
            text(tags::SERIES_DATE, VR::DA, &self.date),
            text(tags::SERIES_TIME, VR::TM, "000000"),
            text(tags::MANUFACTURER, VR::LO, "tracerd"),
            text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "tracerd"),
            text(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"),
            text(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION")),
        ] {
            self.obj.put(e);
        }
    }

    /// A reference to one source PET slice (SOP class and instance).
    pub fn pet_reference(&self, k: usize) -> InMemDicomObject {
        item(vec![
            text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &self.pet_sop_class),
            text(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &self.pet.slices[k].sop_instance_uid,
            ),
        ])
    }

    /// One item naming the source PET series and every one of its instances (the Referenced
    /// Series Sequence of the SEG, the Common Instance Reference module of SC and SR).
    pub fn referenced_series(&self) -> InMemDicomObject {
        let refs = (0..self.pet.slices.len())
            .map(|k| self.pet_reference(k))
            .collect();
        item(vec![
            text(tags::SERIES_INSTANCE_UID, VR::UI, &self.pet.series_uid),
            seq(tags::REFERENCED_INSTANCE_SEQUENCE, refs),
        ])
    }

    /// The source study's StudyInstanceUID (copied into this data set).
    pub fn study_uid(&self) -> String {
        self.obj
            .get(tags::STUDY_INSTANCE_UID)
            .and_then(|e| {
                e.to_str()
                    .ok()
                    .map(|s| s.trim_end_matches('\0').trim().to_string())
            })
            .unwrap_or_default()
    }

    /// Writes the finished data set to `path`.
    pub fn write(self, sop_class: &str, path: &Path) -> Result<(), DicomError> {
        write_part10(path, self.obj, sop_class, &self.sop_uid).map_err(|e| {
            DicomError::new(
                Stage::Write,
                path.display().to_string(),
                DicomErrorKind::WriteFile(e),
            )
        })
    }
}
