//! DICOM in and out: reading a drop of PET/CT files into SUV and HU volumes, and writing DICOM
//! (the synthetic study, the lesion SEG).
//!
//! # Stages (one module each)
//!
//! 1. [`scan`] walks a folder in any nesting and order, parses every file's header (not its
//!    pixels), and keeps non-DICOM files aside as `ignored`.
//! 2. [`assemble`] groups instances by Study/Series Instance UID, picks for every study the
//!    attenuation-corrected PET series and the CT of the same frame of reference, and sorts each
//!    series into a [`geometry`]-checked stack of slices.
//! 3. [`suv`] computes the SUVbw factor of every PET slice (QIBA, DESIGN §6) and records where
//!    each quantity came from.
//! 4. [`pixels`] decodes the pixel data (dicom-pixeldata) with each slice's own rescale.
//! 5. [`convert`] ties them together for `tracerd convert` and writes `pet_suv.nii.gz`,
//!    `ct.nii.gz` and `conversion.json`.
//!
//! Writers, all built on [`write`] (UIDs, the shared modules, Part-10 output): [`seg`] (the
//! lesions as a DICOM Segmentation, one segment each), [`sr`] (their measurements as a TID 1500
//! report), [`sc`] (the overview picture as a Secondary Capture); [`crate::synth::dicom`] writes the
//! synthetic study as DICOM files with the same helpers. [`complete`] holds the DICOM completeness rule for the watcher.
//!
//! # Patient identifiers
//!
//! No code in this module reads the values of PatientName, PatientID or PatientBirthDate, so
//! they cannot reach a log line, an error, a file name or `conversion.json` (the SEG writer
//! and the SC and SR writers copy the Patient module's elements unseen ([`write::Derived`]), as
//! the results must file under the same patient). Errors name files by their path relative to the drop folder and series by a
//! shortened UID.

pub mod assemble;
pub mod complete;
pub mod convert;
pub mod geometry;
mod part10;
pub mod pixels;
pub mod sc;
pub mod scan;
pub mod seg;
pub mod sr;
pub mod strict;
pub mod suv;
mod tags_ext;
pub mod tracer;
pub mod write;

use std::fmt;
use std::path::PathBuf;

pub use assemble::{AssembledStudy, SeriesStack, assemble};
pub use convert::{ConversionReport, convert, convert_study, load_study};
pub use scan::{Instance, ScanResult, scan_folder};

/// Which processing step failed; becomes `error.json`'s `"stage"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the folder or a file header.
    Scan,
    /// Grouping files into studies and choosing series.
    Assemble,
    /// Slice positions and orientation.
    Geometry,
    /// Decoding pixel data.
    Pixels,
    /// SUV factors from the PET header.
    Suv,
    /// Writing outputs.
    Write,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Scan => "scan",
            Stage::Assemble => "assemble",
            Stage::Geometry => "geometry",
            Stage::Pixels => "pixels",
            Stage::Suv => "suv",
            Stage::Write => "write",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, precisely enough for a person to act on it.
#[derive(Debug, thiserror::Error)]
pub enum DicomErrorKind {
    #[error("cannot read: {0}")]
    Io(#[source] std::io::Error),
    #[error("not a readable DICOM file: {0}")]
    Unreadable(String),
    #[error("{name} {tag} missing: {purpose}")]
    MissingTag {
        name: &'static str,
        tag: &'static str,
        purpose: &'static str,
    },
    #[error("{name} {tag} has an unusable value {value:?}: {why}")]
    BadValue {
        name: &'static str,
        tag: &'static str,
        value: String,
        why: String,
    },
    #[error("PixelData (7FE0,0010) missing")]
    MissingPixelData,
    #[error("transfer syntax {uid} ({name}) is not supported")]
    UnsupportedTransferSyntax { uid: String, name: String },
    #[error("pixel data cannot be decoded: {0}")]
    PixelDecode(String),
    #[error("Units (0054,1001) is {0:?}: tracerd converts BQML, GML and Philips CNTS only")]
    UnsupportedUnits(String),
    #[error("CorrectedImage (0028,0051) is {0:?}: {1}")]
    NotCorrected(String, &'static str),
    #[error("no attenuation-corrected PET series (Modality PT, CorrectedImage with ATTN) found")]
    NoPetSeries,
    #[error("{0}")]
    Geometry(String),
    #[error("{0}")]
    Timing(String),
    #[error("{0}")]
    Write(String),
    #[error("cannot write: {0}")]
    WriteFile(#[source] std::io::Error),
    #[error("{0}")]
    TooLarge(String),
}

impl DicomErrorKind {
    /// A short machine-readable reason (e.g. for tests and `error.json` consumers).
    pub fn reason(&self) -> &'static str {
        match self {
            DicomErrorKind::Io(_) => "io",
            DicomErrorKind::Unreadable(_) => "unreadable",
            DicomErrorKind::MissingTag { .. } => "missing_tag",
            DicomErrorKind::BadValue { .. } => "bad_value",
            DicomErrorKind::MissingPixelData => "missing_pixel_data",
            DicomErrorKind::UnsupportedTransferSyntax { .. } => "unsupported_transfer_syntax",
            DicomErrorKind::PixelDecode(_) => "pixel_decode",
            DicomErrorKind::UnsupportedUnits(_) => "unsupported_units",
            DicomErrorKind::NotCorrected(..) => "not_corrected",
            DicomErrorKind::NoPetSeries => "no_pet_series",
            DicomErrorKind::Geometry(_) => "geometry",
            DicomErrorKind::Timing(_) => "timing",
            DicomErrorKind::Write(_) | DicomErrorKind::WriteFile(_) => "write",
            DicomErrorKind::TooLarge(_) => "too_large",
        }
    }
}

/// A DICOM study could not be read or converted. One line: `<stage>: <subject>: <what>`, where
/// the subject is a file (relative path), a series (shortened UID) or a folder.
#[derive(Debug, thiserror::Error)]
#[error("{subject}: {kind}")]
pub struct DicomError {
    pub stage: Stage,
    pub subject: String,
    #[source]
    pub kind: DicomErrorKind,
}

impl DicomError {
    pub fn new(stage: Stage, subject: impl Into<String>, kind: DicomErrorKind) -> Self {
        DicomError {
            stage,
            subject: subject.into(),
            kind,
        }
    }

    /// Same as `kind.reason()`.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }
}

/// "PET series 1.2.840…4711": a UID shortened to its first and last digits, enough to find the
/// series again without flooding a log line.
pub fn short_uid(uid: &str) -> String {
    // By characters, not bytes: a malformed UID may hold non-ASCII text, and slicing it at a
    // byte offset inside a character would panic.
    let chars: Vec<char> = uid.chars().collect();
    if chars.len() <= 16 {
        uid.to_string()
    } else {
        let head: String = chars[..6].iter().collect();
        let tail: String = chars[chars.len() - 6..].iter().collect();
        format!("{head}…{tail}")
    }
}

/// The subject string for a series in errors.
pub(crate) fn series_subject(modality: &str, uid: &str) -> String {
    format!("{modality} series {}", short_uid(uid))
}

/// A stable, non-identifying study key: 16 hex digits of FNV-1a 64 over the StudyInstanceUID
/// and the PET SeriesInstanceUID (DESIGN §3). Stable across platforms and releases (unlike
/// `std`'s hasher), so a re-run replaces the same outbox folder.
pub fn study_key(study_uid: &str, pet_series_uid: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in study_uid
        .bytes()
        .chain(std::iter::once(0u8))
        .chain(pet_series_uid.bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Files of a drop that are not DICOM, relative to the drop folder.
pub type IgnoredFiles = Vec<PathBuf>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        let a = study_key("1.2.3", "1.2.3.4");
        assert_eq!(a, study_key("1.2.3", "1.2.3.4"));
        assert_ne!(a, study_key("1.2.3", "1.2.3.5"));
        assert_ne!(study_key("1.2", "3.1.2.3.4"), study_key("1.2.3", "1.2.3.4"));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn short_uids_keep_both_ends() {
        assert_eq!(short_uid("1.2.3"), "1.2.3");
        assert_eq!(
            short_uid("1.2.840.113619.2.55.3.604688119.1234"),
            "1.2.84…9.1234"
        );
    }

    /// Issue 16, row 1: a Series Instance UID with a non-ASCII character panicked the ingest
    /// thread (a byte slice inside a character) and left a zombie daemon.
    #[test]
    fn short_uids_of_non_ascii_text_do_not_panic() {
        assert_eq!(short_uid("1.2.ä40.113619.2.55.3.6046"), "1.2.ä4…3.6046");
        assert_eq!(short_uid("ééééééééééééééééé"), "éééééé…éééééé");
    }
}
