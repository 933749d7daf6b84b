//! The scope rule: tracerd's models were made for 18F-FDG PET. A DICOM study whose headers say
//! otherwise (another radionuclide, another 18F radiopharmaceutical not allowed in the config, or
//! a gamma-camera image stored as PET) is refused with what was found; missing tracer information
//! is a warning, never a refusal.
//!
//! Evidence, each read as stored ([`TracerTags`]):
//! - the radionuclide: RadionuclideCodeSequence (0054,0300), Radionuclide (0018,0030) and
//!   RadionuclideHalfLife (0018,1075) (18F: 6586.2 s, within 1 %); any of them naming another
//!   nuclide refuses the study;
//! - the radiopharmaceutical: Radiopharmaceutical (0018,0031) and its code (0054,0304); FDG by
//!   name (FDG, fluorodeoxyglucose, fludeoxyglucose) or code (SRT C-B1031, SNOMED CT 35321007);
//! - the device: CollimatorType (0018,1181) other than NONE or RING (a PET scanner has none),
//!   or "SPECT" in the SeriesDescription.

use crate::config::Scope;
use crate::io::dicom::tracer::TracerTags;

/// Half-life of 18F, seconds (DDEP: 109.77 min), and the tolerance on a stored value.
pub const F18_HALF_LIFE_S: f64 = 6586.2;
const HALF_LIFE_TOLERANCE: f64 = 0.01;

/// Nuclides a nuclear-medicine department uses, for naming a half-life (seconds, DDEP/NUBASE).
const HALF_LIVES: [(&str, f64); 14] = [
    ("15O", 122.24),
    ("82Rb", 76.4),
    ("13N", 597.9),
    ("11C", 1221.8),
    ("68Ga", 4062.6),
    ("18F", F18_HALF_LIFE_S),
    ("99mTc", 21_624.1),
    ("64Cu", 45_721.1),
    ("90Y", 230_549.8),
    ("111In", 242_332.0),
    ("89Zr", 282_276.0),
    ("124I", 360_806.4),
    ("177Lu", 574_300.8),
    ("131I", 692_928.0),
];

/// Element names and symbols of the nuclides above other than fluorine, for recognising a
/// radionuclide written as text ("177 Lutetium", "Ga-68").
const OTHER_ELEMENTS: [(&str, &str); 13] = [
    ("OXYGEN", "O"),
    ("RUBIDIUM", "RB"),
    ("NITROGEN", "N"),
    ("CARBON", "C"),
    ("GALLIUM", "GA"),
    ("TECHNETIUM", "TC"),
    ("COPPER", "CU"),
    ("YTTRIUM", "Y"),
    ("INDIUM", "IN"),
    ("ZIRCONIUM", "ZR"),
    ("IODINE", "I"),
    ("LUTETIUM", "LU"),
    ("THALLIUM", "TL"),
];

/// What a text says about the nuclide.
#[derive(Debug, PartialEq)]
enum Nuclide {
    F18,
    Other,
    Unclear,
}

fn letters_digits(s: &str) -> (String, String) {
    let up = s.to_ascii_uppercase();
    let letters = up.chars().filter(char::is_ascii_alphabetic).collect();
    let digits = up.chars().filter(char::is_ascii_digit).collect();
    (letters, digits)
}

fn nuclide_of_text(s: &str) -> Nuclide {
    let (letters, digits) = letters_digits(s);
    let letters = letters.trim_start_matches('M').to_string(); // 99m Tc written "99mTc"
    // "^18^Fluorine", "F-18", "18F", and Siemens' "F^18^[^18^Fluorine]".
    if digits.contains("18") && (letters.starts_with('F') || letters.contains("FLUOR")) {
        return Nuclide::F18;
    }
    let other = OTHER_ELEMENTS
        .iter()
        .any(|(name, symbol)| letters.contains(name) || (!digits.is_empty() && letters == *symbol));
    if other {
        Nuclide::Other
    } else {
        Nuclide::Unclear
    }
}

/// The nuclide a half-life belongs to, when it is one of [`HALF_LIVES`].
fn nuclide_of_half_life(h: f64) -> Option<&'static str> {
    HALF_LIVES
        .iter()
        .find(|(_, t)| (h - t).abs() <= HALF_LIFE_TOLERANCE * t)
        .map(|(n, _)| *n)
}

/// Findings that put the study out of scope, and warnings.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    pub refusals: Vec<String>,
    pub warnings: Vec<String>,
}

/// Applies the scope rule to the first image of a PET series.
pub fn check(t: &TracerTags, scope: &Scope) -> Verdict {
    let mut v = Verdict::default();
    device(t, &mut v);
    let f18 = radionuclide(t, &mut v);
    if v.refusals.is_empty() {
        radiopharmaceutical(t, scope, f18, &mut v);
    }
    v
}

fn device(t: &TracerTags, v: &mut Verdict) {
    if let Some(c) = t.collimator_type.as_deref()
        && c != "NONE"
        && c != "RING"
    {
        v.refusals.push(format!(
            "CollimatorType (0018,1181) is {c:?}: a gamma-camera (SPECT) image stored as PET"
        ));
    } else if let Some(d) = &t.series_description
        && d.to_ascii_uppercase().contains("SPECT")
    {
        v.refusals.push(format!(
            "SeriesDescription (0008,103E) {d:?} names a SPECT image stored as PET"
        ));
    }
}

/// Refuses another nuclide; `true` when the headers positively say 18F.
fn radionuclide(t: &TracerTags, v: &mut Verdict) -> bool {
    let mut texts = Vec::new();
    let mut f18 = false;
    if let Some(c) = &t.radionuclide_code {
        if F18_CODES.contains(&c.value.as_str()) {
            f18 = true;
        }
        let text = if c.meaning.is_empty() {
            &c.value
        } else {
            &c.meaning
        };
        texts.push((text.clone(), "RadionuclideCodeSequence (0054,0300)"));
    }
    if let Some(r) = &t.radionuclide {
        texts.push((r.clone(), "Radionuclide (0018,0030)"));
    }
    for (text, tag) in &texts {
        match nuclide_of_text(text) {
            Nuclide::F18 => f18 = true,
            Nuclide::Other => v.refusals.push(format!("{tag} is {text:?}, not 18F")),
            Nuclide::Unclear => v.warnings.push(format!(
                "{tag} {text:?} does not name a radionuclide tracerd knows"
            )),
        }
    }
    if let Some(h) = t.half_life_s {
        match nuclide_of_half_life(h) {
            Some("18F") => f18 = true,
            Some(n) => v.refusals.push(format!(
                "RadionuclideHalfLife (0018,1075) is {h} s, the half-life of {n}, not 18F \
                 ({F18_HALF_LIFE_S} s)"
            )),
            None => v.refusals.push(format!(
                "RadionuclideHalfLife (0018,1075) is {h} s, not 18F's {F18_HALF_LIFE_S} s"
            )),
        }
    }
    if texts.is_empty() && t.half_life_s.is_none() {
        v.warnings
            .push("the radionuclide is not stated: taken as 18F".into());
    }
    f18
}

/// 18F in SNOMED (SNOMED-RT / SRT C-111A1, SNOMED CT 77004003).
const F18_CODES: [&str; 2] = ["C-111A1", "77004003"];
const FDG_NAMES: [&str; 4] = [
    "FDG",
    "FLUORODEOXYGLUCOSE",
    "FLUDEOXYGLUCOSE",
    "DEOXYGLUCOSE",
];
const FDG_CODES: [&str; 2] = ["C-B1031", "35321007"];
/// Radiopharmaceutical texts that name no tracer (the nuclide alone, or a placeholder).
const NO_TRACER: [&str; 5] = ["", "F", "FLUORINE", "UNKNOWN", "NONE"];

fn normalized(s: &str) -> String {
    s.to_ascii_uppercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

fn radiopharmaceutical(t: &TracerTags, scope: &Scope, f18: bool, v: &mut Verdict) {
    let code = t.radiopharmaceutical_code.as_ref();
    if code.is_some_and(|c| FDG_CODES.contains(&c.value.as_str())) {
        return;
    }
    let named = [
        (
            t.radiopharmaceutical.as_deref(),
            "Radiopharmaceutical (0018,0031)",
        ),
        (
            code.map(|c| c.meaning.as_str()),
            "RadiopharmaceuticalCodeSequence (0054,0304)",
        ),
    ];
    for (text, tag) in named {
        let Some(text) = text else { continue };
        let n = normalized(text);
        if FDG_NAMES.iter().any(|f| n.contains(f)) {
            return;
        }
        let (letters, _) = letters_digits(text);
        if NO_TRACER.contains(&letters.as_str()) {
            continue;
        }
        if scope.allowed_18f_tracers.iter().any(|a| normalized(a) == n) && f18 {
            v.warnings.push(format!(
                "{tag} {text:?}: an 18F tracer allowed by [scope] allowed_18f_tracers; the \
                 models were trained and validated on 18F-FDG only"
            ));
            return;
        }
        v.refusals.push(format!(
            "{tag} is {text:?}: the models are for 18F-FDG (other 18F tracers can be allowed \
             in [scope] allowed_18f_tracers)"
        ));
        return;
    }
    v.warnings
        .push("the radiopharmaceutical is not stated: taken as 18F-FDG".into());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::dicom::tracer::Code;

    fn fdg() -> TracerTags {
        TracerTags {
            radionuclide_code: Some(Code {
                value: "C-111A1".into(),
                scheme: "SRT".into(),
                meaning: "^18^Fluorine".into(),
            }),
            half_life_s: Some(6586.2),
            radiopharmaceutical: Some("Fluorodeoxyglucose".into()),
            collimator_type: Some("NONE".into()),
            ..Default::default()
        }
    }

    fn verdict(t: &TracerTags) -> Verdict {
        check(t, &Scope::default())
    }

    #[test]
    fn fdg_goes_on_without_a_word() {
        assert_eq!(verdict(&fdg()), Verdict::default());
        // The code meaning a Siemens scanner writes (public QIN-HEADNECK series).
        let siemens = TracerTags {
            radionuclide_code: Some(Code {
                value: "C-111A1".into(),
                scheme: "SNM3".into(),
                meaning: "F^18^[^18^Fluorine]".into(),
            }),
            ..fdg()
        };
        assert_eq!(verdict(&siemens), Verdict::default());
        for name in ["FDG", "18F-FDG", "F-18 FDG", "Fludeoxyglucose F18"] {
            let t = TracerTags {
                radiopharmaceutical: Some(name.into()),
                ..fdg()
            };
            assert_eq!(verdict(&t), Verdict::default(), "{name}");
        }
    }

    /// The Lu-177 SPECT of issue 15 (a Siemens gamma camera's image stored as PT, BQML).
    #[test]
    fn a_lu177_spect_stored_as_pet_is_refused_naming_what_was_found() {
        let t = TracerTags {
            radionuclide_code: Some(Code {
                value: "C-101ED".into(),
                scheme: "99SDM".into(),
                meaning: "177 Lutetium".into(),
            }),
            half_life_s: Some(574_300.0),
            collimator_type: Some("PARA".into()),
            series_description: Some("C2S1D0 [xSPECT48iNOFILT - AC ]".into()),
            ..Default::default()
        };
        let v = verdict(&t);
        assert_eq!(v.refusals.len(), 3, "{v:?}");
        assert!(v.refusals[0].contains("\"PARA\""));
        assert!(v.refusals[1].contains("\"177 Lutetium\""));
        assert!(v.refusals[2].contains("the half-life of 177Lu"));
    }

    #[test]
    fn other_nuclides_and_18f_tracers_are_refused_unless_allowed() {
        let ga = TracerTags {
            half_life_s: Some(4062.6),
            radiopharmaceutical: Some("Ga-68 PSMA-11".into()),
            ..Default::default()
        };
        assert!(verdict(&ga).refusals[0].contains("68Ga"));
        let psma = TracerTags {
            radiopharmaceutical: Some("PSMA-1007".into()),
            ..fdg()
        };
        let v = verdict(&psma);
        assert!(v.refusals[0].contains("\"PSMA-1007\""), "{v:?}");
        let allowed = Scope {
            allowed_18f_tracers: vec!["psma 1007".into()],
        };
        let v = check(&psma, &allowed);
        assert!(
            v.refusals.is_empty() && v.warnings[0].contains("allowed"),
            "{v:?}"
        );
        let spect_desc = TracerTags {
            series_description: Some("SPECT AC".into()),
            collimator_type: None,
            ..fdg()
        };
        assert_eq!(verdict(&spect_desc).refusals.len(), 1);
    }

    #[test]
    fn missing_tracer_information_is_a_warning() {
        let v = verdict(&TracerTags::default());
        assert!(v.refusals.is_empty());
        assert_eq!(v.warnings.len(), 2, "{v:?}");
        let nuclide_only = TracerTags {
            radiopharmaceutical: Some("F18".into()),
            ..fdg()
        };
        let v = verdict(&nuclide_only);
        assert!(v.refusals.is_empty() && v.warnings[0].contains("not stated"));
    }
}
