//! Tags that feed SUV or geometry, read strictly. A value that is present but unusable (not a
//! finite number, the wrong number of values, a zero RescaleSlope, a date or time that does not
//! parse) is never replaced by a default: it becomes a [`BadTag`] of its file, and the series
//! that uses the file fails with a one-line error naming the tag and the file. Absent stays
//! absent (`None`): whether a missing value matters is decided where it is used.

use std::path::Path;

use dicom_core::Tag;
use dicom_object::InMemDicomObject;

use super::tags_ext as t;
use super::{DicomError, DicomErrorKind, Stage};

/// A tag of one file whose value cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub struct BadTag {
    /// Where the value would have been used (`error.json`'s stage).
    pub stage: Stage,
    pub name: &'static str,
    pub tag: &'static str,
    pub value: String,
    pub why: String,
}

impl BadTag {
    /// The error for the file at `rel` (relative to the drop folder).
    pub fn error(&self, rel: &Path) -> DicomError {
        DicomError::new(
            self.stage,
            rel.display().to_string(),
            DicomErrorKind::BadValue {
                name: self.name,
                tag: self.tag,
                value: self.value.clone(),
                why: self.why.clone(),
            },
        )
    }
}

/// A tag's keyword and `(gggg,eeee)`, as errors print them.
pub(crate) type Named = (&'static str, &'static str);

/// DICOM date and time value representations.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Temporal {
    Da,
    Tm,
    Dt,
}

/// Reads from one data set and collects what is unusable.
pub(crate) struct Strict<'a> {
    pub obj: &'a InMemDicomObject,
    pub stage: Stage,
    pub bad: &'a mut Vec<BadTag>,
}

impl Strict<'_> {
    fn flag(&mut self, (name, tag): Named, value: String, why: impl Into<String>) {
        self.bad.push(BadTag {
            stage: self.stage,
            name,
            tag,
            value,
            why: why.into(),
        });
    }

    /// One number; `Err(text)` (also recorded) when present but not a finite number.
    pub fn result(&mut self, tag: Tag, named: Named) -> Result<Option<f64>, String> {
        let v = t::number(self.obj, tag);
        if let Err(text) = &v {
            self.flag(named, text.clone(), "not a finite number");
        }
        v
    }

    /// One number, `None` when absent or unusable (recorded).
    pub fn number(&mut self, tag: Tag, named: Named) -> Option<f64> {
        self.result(tag, named).ok().flatten()
    }

    /// Exactly `N` finite numbers.
    pub fn array<const N: usize>(&mut self, tag: Tag, named: Named) -> Option<[f64; N]> {
        match t::numbers_strict(self.obj, tag) {
            Ok(None) => None,
            Ok(Some(v)) if v.len() == N => v.try_into().ok(),
            Ok(Some(v)) => {
                let text = t::string(self.obj, tag).unwrap_or_default();
                self.flag(named, text, format!("{} values, {N} expected", v.len()));
                None
            }
            Err(text) => {
                self.flag(named, text, "not finite numbers");
                None
            }
        }
    }

    /// A DA, TM or DT string that must parse (returned as stored).
    pub fn temporal(&mut self, tag: Tag, named: Named, vr: Temporal) -> Option<String> {
        let s = t::string(self.obj, tag)?;
        let parsed = match vr {
            Temporal::Da => super::suv::parse_da(&s),
            Temporal::Tm => super::suv::parse_tm(&s),
            Temporal::Dt => super::suv::parse_dt(&s),
        };
        if parsed.is_none() {
            let what = match vr {
                Temporal::Da => "not a DICOM date (YYYYMMDD)",
                Temporal::Tm => "not a DICOM time (HHMMSS.FFFFFF)",
                Temporal::Dt => "not a DICOM date-time (YYYYMMDDHHMMSS)",
            };
            self.flag(named, s.clone(), what);
        }
        Some(s)
    }

    /// A private element's number (found through its creator), `None` when absent, zero or
    /// unusable (recorded).
    pub fn private_number(
        &mut self,
        (group, creator, element): (u16, &str, u8),
        named: Named,
    ) -> Option<f64> {
        let text = t::private_text(self.obj, group, creator, element)?;
        match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => (v != 0.0).then_some(v),
            _ => {
                self.flag(named, text, "not a finite number");
                None
            }
        }
    }

    /// RescaleSlope: a finite, non-zero number (a zero slope erases the image).
    pub fn slope(&mut self, tag: Tag, named: Named) -> Option<f64> {
        let v = self.number(tag, named)?;
        if v == 0.0 {
            self.flag(named, "0".into(), "a zero slope erases the image");
            return None;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;

    fn obj_with(tag: Tag, vr: VR, value: &str) -> InMemDicomObject {
        // As a file read gives it: backslash-separated values as several strings.
        let values = value.split('\\').map(String::from).collect();
        InMemDicomObject::from_element_iter([DataElement::new(
            tag,
            vr,
            PrimitiveValue::Strs(values),
        )])
    }

    fn read<T>(obj: &InMemDicomObject, f: impl FnOnce(&mut Strict) -> T) -> (T, Vec<BadTag>) {
        let mut bad = Vec::new();
        let mut s = Strict {
            obj,
            stage: Stage::Pixels,
            bad: &mut bad,
        };
        let v = f(&mut s);
        (v, bad)
    }

    const SLOPE: Named = ("RescaleSlope", "(0028,1053)");

    #[test]
    fn garbage_numbers_are_recorded_never_defaulted() {
        for (text, why) in [
            ("abc", "not a finite number"),
            ("NaN", "not a finite number"),
            ("inf", "not a finite number"),
            ("0", "a zero slope erases the image"),
        ] {
            let obj = obj_with(tags::RESCALE_SLOPE, VR::DS, text);
            let (v, bad) = read(&obj, |s| s.slope(tags::RESCALE_SLOPE, SLOPE));
            assert_eq!(v, None, "{text}");
            assert_eq!(bad.len(), 1, "{text}");
            assert_eq!((bad[0].name, bad[0].why.as_str()), ("RescaleSlope", why));
        }
        let obj = obj_with(tags::RESCALE_SLOPE, VR::DS, "2.5");
        assert_eq!(
            read(&obj, |s| s.slope(tags::RESCALE_SLOPE, SLOPE)),
            (Some(2.5), vec![])
        );
        let empty = InMemDicomObject::new_empty();
        assert_eq!(
            read(&empty, |s| s.slope(tags::RESCALE_SLOPE, SLOPE)),
            (None, vec![])
        );
    }

    #[test]
    fn arrays_need_their_count_and_times_must_parse() {
        let named = ("ImagePositionPatient", "(0020,0032)");
        let tag = tags::IMAGE_POSITION_PATIENT;
        let obj = obj_with(tag, VR::DS, "1\\2");
        let (v, bad) = read(&obj, |s| s.array::<3>(tag, named));
        assert_eq!((v, bad[0].why.as_str()), (None, "2 values, 3 expected"));
        let obj = obj_with(tag, VR::DS, "1\\x\\3");
        assert_eq!(read(&obj, |s| s.array::<3>(tag, named)).1.len(), 1);
        let obj = obj_with(tag, VR::DS, "1\\-2.5\\3e2");
        assert_eq!(
            read(&obj, |s| s.array::<3>(tag, named)),
            (Some([1.0, -2.5, 300.0]), vec![])
        );
        let tm = ("AcquisitionTime", "(0008,0032)");
        let obj = obj_with(tags::ACQUISITION_TIME, VR::TM, "noon");
        let (_, bad) = read(&obj, |s| {
            s.temporal(tags::ACQUISITION_TIME, tm, Temporal::Tm)
        });
        assert_eq!(bad[0].value, "noon");
    }
}
