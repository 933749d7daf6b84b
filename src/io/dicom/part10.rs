//! Reading a file as DICOM Part 10 bytes, once, in the shapes real writers produce: a regular
//! Part 10 file; one whose File Meta Information lacks its group length (0002,0000); and a bare
//! data set with neither preamble nor file meta (what some PACS exports and older tools write).
//! The last two are completed in memory (the input file is never changed), so that the preflight
//! and the parser see one layout.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_object::file::ReadPreamble;

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// Explicit-VR value representations with a 4-byte length (PS3.5 7.1.2).
const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];
/// Every other explicit VR (2-byte length).
const SHORT_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

/// A file's first bytes as Part 10, completed as the module says.
pub(crate) struct Part10 {
    pub bytes: Vec<u8>,
    /// The file's length, counted like `bytes` (with what was added).
    pub len: usize,
    /// Bytes added before the data set (a group length, or a whole file meta group): a
    /// position in the data set of `bytes` is this much further than in the file.
    pub added: usize,
}

/// A DICOM file read once, from one handle, as Part 10 bytes: `None` when it is not DICOM
/// (neither the `DICM` marker nor a bare data set; only its first 132 bytes were read), else
/// its first `max` bytes (completed as the module says) and its length counted the same way.
pub(crate) fn read_part10(path: &Path, max: usize) -> std::io::Result<Option<Part10>> {
    let f = File::open(path)?;
    let len = f.metadata()?.len() as usize;
    let mut bytes = Vec::with_capacity(132);
    (&f).take(132).read_to_end(&mut bytes)?;
    let marked = bytes.len() == 132 && &bytes[128..132] == b"DICM";
    let bare = if marked {
        None
    } else {
        bare_syntax(&bytes, len)
    };
    if !marked && bare.is_none() {
        return Ok(None);
    }
    bytes.reserve(len.min(max).saturating_sub(132));
    (&f).take(max.saturating_sub(132) as u64)
        .read_to_end(&mut bytes)?;
    let read = bytes.len();
    let bytes = match bare {
        Some(ts) => with_file_meta(&bytes, ts),
        None => with_meta_group_length(bytes),
    };
    let added = bytes.len() - read;
    Ok(Some(Part10 {
        bytes,
        len: len + added,
        added,
    }))
}

/// Undefined length (sequences, items, encapsulated Pixel Data).
const UNDEFINED: u32 = u32::MAX;

/// One element header at `pos`: (group, element), value length, header length.
fn header(bytes: &[u8], pos: usize, explicit: bool) -> Option<((u16, u16), u32, usize)> {
    let b = bytes.get(pos..pos + 8)?;
    let tag = (
        u16::from_le_bytes([b[0], b[1]]),
        u16::from_le_bytes([b[2], b[3]]),
    );
    let vr = [b[4], b[5]];
    if tag.0 == 0xFFFE || !explicit {
        return Some((tag, u32::from_le_bytes(b[4..8].try_into().ok()?), 8));
    }
    if LONG_VRS.contains(&&vr) {
        let len = bytes.get(pos + 8..pos + 12)?;
        return Some((tag, u32::from_le_bytes(len.try_into().ok()?), 12));
    }
    Some((tag, u16::from_le_bytes([b[6], b[7]]) as u32, 8))
}

/// Elements from `pos` until the delimiter `end` (an item's or a sequence's, or none at the
/// top level); returns the position after it, or, at the top level, stops at Pixel Data and
/// returns the start of its value with its header.
fn walk(bytes: &[u8], mut pos: usize, explicit: bool, end: Option<(u16, u16)>) -> Option<Walked> {
    while pos < bytes.len() {
        let (tag, len, head) = header(bytes, pos, explicit)?;
        pos += head;
        if Some(tag) == end {
            return Some(Walked::End(pos));
        }
        if end.is_none() && tag == (0x7FE0, 0x0010) {
            return Some(Walked::PixelData { at: pos, len });
        }
        pos = if len != UNDEFINED {
            pos.checked_add(len as usize)?
        } else if tag == (0xFFFE, 0xE000) {
            walk(bytes, pos, explicit, Some((0xFFFE, 0xE00D)))?.end()?
        } else {
            walk(bytes, pos, explicit, Some((0xFFFE, 0xE0DD)))?.end()?
        };
    }
    None
}

enum Walked {
    End(usize),
    PixelData { at: usize, len: u32 },
}

impl Walked {
    fn end(self) -> Option<usize> {
        match self {
            Walked::End(pos) => Some(pos),
            Walked::PixelData { .. } => None,
        }
    }
}

/// Where the value of the top-level Pixel Data (7FE0,0010) starts in Part 10 `bytes` and how
/// long it is, for a data set in Explicit or Implicit VR Little Endian: `None` when it is
/// absent, encapsulated (undefined length), or the headers cannot be followed. Pixel Data
/// nested in a sequence (an icon image) is skipped with its sequence.
pub(crate) fn pixel_data_span(bytes: &[u8], explicit: bool) -> Option<(usize, usize)> {
    let group = u32::from_le_bytes(bytes.get(140..144)?.try_into().ok()?) as usize;
    if bytes.get(128..136)? != b"DICM\x02\x00\x00\x00" {
        return None;
    }
    match walk(bytes, 144usize.checked_add(group)?, explicit, None)? {
        Walked::PixelData { at, len } if len != UNDEFINED => Some((at, len as usize)),
        _ => None,
    }
}

/// The transfer syntax of a bare data set (no preamble, no file meta), when `head` starts like
/// one: an element of group 0008 (the first group of every image) with an explicit VR, or
/// with an implicit-VR length that fits the file.
fn bare_syntax(head: &[u8], file_len: usize) -> Option<&'static str> {
    if head.len() < 8 || head[..2] != [0x08, 0x00] {
        return None;
    }
    let vr = [head[4], head[5]];
    if SHORT_VRS.contains(&&vr) || LONG_VRS.contains(&&vr) {
        return Some(EXPLICIT_VR_LE);
    }
    let implicit_len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
    (implicit_len <= file_len.saturating_sub(8)).then_some(IMPLICIT_VR_LE)
}

/// A bare data set behind a zero preamble, `DICM` and a file meta group naming `ts` (the SOP
/// class and instance UIDs are left empty: tracerd reads them from the data set).
fn with_file_meta(dataset: &[u8], ts: &str) -> Vec<u8> {
    let ui = |element: u8, value: &str| {
        let mut v = value.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        let mut e = vec![0x02, 0x00, element, 0x00, b'U', b'I'];
        e.extend_from_slice(&(v.len() as u16).to_le_bytes());
        e.extend_from_slice(&v);
        e
    };
    let elements = [ui(0x02, ""), ui(0x03, ""), ui(0x10, ts)].concat();
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&[2, 0, 0, 0, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(elements.len() as u32).to_le_bytes());
    out.extend_from_slice(&elements);
    out.extend_from_slice(dataset);
    out
}

/// A file meta group without its group length (0002,0000) gets one computed from its elements,
/// in memory: pydicom, dcm2niix and DCMTK read such files (a public SUV reference set is written
/// this way), the DICOM parser tracerd uses does not. The meta group is always explicit VR
/// little endian (PS3.10 7.1). Other files are returned as they are.
pub(crate) fn with_meta_group_length(bytes: Vec<u8>) -> Vec<u8> {
    let at = |p: usize| bytes.get(p..p + 2).map(|b| [b[0], b[1]]);
    if at(132) != Some([2, 0]) || at(134) == Some([0, 0]) {
        return bytes;
    }
    let mut pos = 132;
    while at(pos) == Some([2, 0]) && pos + 8 <= bytes.len() {
        let vr = [bytes[pos + 4], bytes[pos + 5]];
        let (len, header) = if LONG_VRS.contains(&&vr) {
            match bytes.get(pos + 8..pos + 12) {
                Some(b) => (u32::from_le_bytes(b.try_into().unwrap()) as usize, 12),
                None => return bytes,
            }
        } else {
            (
                u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]]) as usize,
                8,
            )
        };
        pos = pos.saturating_add(header).saturating_add(len);
    }
    let group_length = (pos - 132) as u32;
    let mut out = Vec::with_capacity(bytes.len() + 12);
    out.extend_from_slice(&bytes[..132]);
    out.extend_from_slice(&[2, 0, 0, 0, b'U', b'L', 4, 0]);
    out.extend_from_slice(&group_length.to_le_bytes());
    out.extend_from_slice(&bytes[132..]);
    out
}

/// Parses Part 10 bytes (preamble, meta group, data set), up to Pixel Data when
/// `headers_only`.
pub(crate) fn parse_part10(
    bytes: &[u8],
    headers_only: bool,
) -> Result<dicom_object::DefaultDicomObject, String> {
    let options = OpenFileOptions::new().read_preamble(ReadPreamble::Always);
    let options = if headers_only {
        options.read_until(tags::PIXEL_DATA)
    } else {
        options
    };
    options.from_reader(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small PET-like data set, as dicom-rs writes it with file meta.
    fn part10(ts: &str) -> Vec<u8> {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.3")),
            DataElement::new(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("1.2.3.4"),
            ),
            DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("PT")),
            DataElement::new(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("2.5")),
        ]);
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(ts)
            .media_storage_sop_class_uid("1.2.3")
            .media_storage_sop_instance_uid("1.2.3.4");
        let mut out = Vec::new();
        obj.with_meta(meta).unwrap().write_all(&mut out).unwrap();
        out
    }

    fn slope(bytes: &[u8]) -> f64 {
        let obj = parse_part10(bytes, true).unwrap();
        obj.element(tags::RESCALE_SLOPE)
            .unwrap()
            .to_float64()
            .unwrap()
    }

    /// The meta group length sits right after `DICM`: 12 bytes.
    fn without_group_length(bytes: &[u8]) -> Vec<u8> {
        [&bytes[..132], &bytes[144..]].concat()
    }

    #[test]
    fn the_top_level_pixel_data_is_found_past_an_icon_image_in_any_sequence_layout() {
        use dicom_core::value::DataSetSequence;
        use dicom_core::{DataElement, Length, PrimitiveValue, VR};
        use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
        let icon = InMemDicomObject::from_element_iter([
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(2u16)),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(vec![7u8; 8])),
        ]);
        for (ts, undefined) in [
            (EXPLICIT_VR_LE, true),
            (EXPLICIT_VR_LE, false),
            (IMPLICIT_VR_LE, true),
            (IMPLICIT_VR_LE, false),
        ] {
            let length = if undefined {
                Length::UNDEFINED
            } else {
                Length::defined(0)
            };
            let seq = DataSetSequence::new(vec![icon.clone()], length);
            let pixels: Vec<u8> = (0..32u8).collect();
            let obj = InMemDicomObject::from_element_iter([
                DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("PT")),
                DataElement::new(tags::ICON_IMAGE_SEQUENCE, VR::SQ, seq),
                DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OW,
                    PrimitiveValue::from(pixels.clone()),
                ),
            ]);
            let meta = FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .media_storage_sop_class_uid("1.2.3")
                .media_storage_sop_instance_uid("1.2.3.4");
            let mut bytes = Vec::new();
            obj.with_meta(meta).unwrap().write_all(&mut bytes).unwrap();
            let (at, len) = pixel_data_span(&bytes, ts == EXPLICIT_VR_LE).unwrap();
            assert_eq!(
                &bytes[at..at + len],
                &pixels[..],
                "{ts} undefined={undefined}"
            );
        }
    }

    #[test]
    fn a_meta_group_without_its_length_is_completed() {
        let full = part10(EXPLICIT_VR_LE);
        let stripped = without_group_length(&full);
        assert!(
            parse_part10(&stripped, true).is_err(),
            "dicom-rs needs the length"
        );
        assert_eq!(with_meta_group_length(stripped), full);
        assert_eq!(with_meta_group_length(full.clone()), full);
    }

    #[test]
    fn bare_data_sets_in_either_little_endian_syntax_are_read() {
        for ts in [EXPLICIT_VR_LE, IMPLICIT_VR_LE] {
            let full = part10(ts);
            let meta_end = 144 + u32::from_le_bytes(full[140..144].try_into().unwrap()) as usize;
            let bare = &full[meta_end..];
            assert_eq!(bare_syntax(bare, bare.len()), Some(ts));
            assert_eq!(slope(&with_file_meta(bare, ts)), 2.5, "{ts}");
        }
        assert_eq!(bare_syntax(b"%PDF-1.7 not dicom", 18), None);
        assert_eq!(
            bare_syntax(&[8, 0, 5, 0, 0xff, 0xff, 0xff, 0x7f], 100),
            None
        );
    }
}
