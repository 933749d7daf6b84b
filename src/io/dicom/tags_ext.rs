//! Small typed accessors over a dicom-rs object: trimmed strings, numbers, multi-valued numbers
//! and private elements found through their private creator. Absent and empty are the same
//! (`None`), as DICOM type-2 attributes may be present but empty.
//!
//! Lookups go through `get`, never `element`/`element_opt`: dicom-object builds an error for
//! a missing element that captures a full backtrace (under a global lock), which made the
//! header scan spend most of its time unwinding stacks (measured: a third of `tracerd convert`).

use dicom_core::Tag;
use dicom_core::header::HasLength;
use dicom_object::InMemDicomObject;

pub(crate) fn string(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let s = e.to_str().ok()?;
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

pub(crate) fn strings(obj: &InMemDicomObject, tag: Tag) -> Vec<String> {
    match obj.get(tag) {
        Some(e) => e
            .to_multi_str()
            .map(|v| {
                v.iter()
                    .flat_map(|s| s.split('\\'))
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A number, or `Err(text)` when present but not a finite number.
pub(crate) fn number(obj: &InMemDicomObject, tag: Tag) -> Result<Option<f64>, String> {
    let Some(e) = obj.get(tag) else {
        return Ok(None);
    };
    if e.is_empty() {
        return Ok(None);
    }
    match e.to_float64() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(e.to_str().map(|s| s.into_owned()).unwrap_or_default()),
    }
}

/// Several numbers, or `Err(text)` when present but any of them is not a finite number.
pub(crate) fn numbers_strict(obj: &InMemDicomObject, tag: Tag) -> Result<Option<Vec<f64>>, String> {
    let Some(e) = obj.get(tag) else {
        return Ok(None);
    };
    if e.is_empty() {
        return Ok(None);
    }
    match e.to_multi_float64() {
        Ok(v) if !v.is_empty() && v.iter().all(|x| x.is_finite()) => Ok(Some(v)),
        _ => Err(e.to_str().map(|s| s.into_owned()).unwrap_or_default()),
    }
}

pub(crate) fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    let e = obj.get(tag)?;
    e.to_int::<i64>().ok()
}

/// The first item of a sequence.
pub(crate) fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)?.items()?.first()
}

/// No element of `group` reserves a private block: (gggg,0010) to (gggg,00FF) are all absent.
pub(crate) fn lacks_private_creator(obj: &InMemDicomObject, group: u16) -> bool {
    (0x10u16..=0xFF).all(|b| obj.get(Tag(group, b)).is_none())
}

/// The text of private element (group, xx) reserved by `creator`, whatever its VR (implicit-VR
/// files carry private elements as UN bytes). When no creator at all reserves a block of the
/// group, the conventional first block (gggg,10xx) is read (writers that drop the creator
/// element keep the block; the caller records that it fell back).
pub(crate) fn private_text(
    obj: &InMemDicomObject,
    group: u16,
    creator: &str,
    element: u8,
) -> Option<String> {
    let reserved = (0x10u16..=0xFF).find(|&b| {
        obj.get(Tag(group, b))
            .and_then(|e| e.to_bytes().ok().map(|b| ascii_trim(&b)))
            .is_some_and(|s| s.eq_ignore_ascii_case(creator))
    });
    let block = match reserved {
        Some(b) => b,
        None if lacks_private_creator(obj, group) => 0x10,
        None => return None,
    };
    let e = obj.get(Tag(group, (block << 8) | element as u16))?;
    let text = match e.to_str() {
        Ok(s) if e.vr() != dicom_core::VR::UN => s.trim().to_string(),
        _ => ascii_trim(&e.to_bytes().ok()?),
    };
    (!text.is_empty()).then_some(text)
}

fn ascii_trim(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string()
}
