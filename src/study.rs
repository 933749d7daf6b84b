//! Ingest: a study folder (NIfTI files or a DICOM drop) → [`Study`], PET in SUV and CT in HU,
//! validated so that nothing downstream sees a NaN, an empty volume or a PET the models cannot
//! be laid out for.
//!
//! NIfTI folders follow DESIGN §3: `SUV.nii.gz` or `PET.nii.gz` (already SUV), optional
//! `CT.nii.gz` or `CTres.nii.gz` (HU); `SEG.nii.gz` and anything else is left alone. Any other
//! folder is read as a DICOM drop (`io::dicom`).

use std::path::{Path, PathBuf};

use serde::Serialize;

pub mod scope;

use crate::config::{Limits, Scope};
use crate::io::dicom::{self, SeriesStack};
use crate::io::nifti;
use crate::volume::Volume;

/// PET file names, in order of preference.
pub const PET_NAMES: [&str; 4] = ["SUV.nii.gz", "PET.nii.gz", "SUV.nii", "PET.nii"];
/// CT file names, in order of preference.
pub const CT_NAMES: [&str; 4] = ["CT.nii.gz", "CTres.nii.gz", "CT.nii", "CTres.nii"];

/// Smallest PET extent per axis, in voxels, that the models are run on.
pub const MIN_PET_VOXELS: usize = 8;

/// Voxel spacing, mm, that a PET or CT of a patient can have: thin CT slices to thick PET
/// slices, with room on both sides; anything outside is a broken header, not a scanner.
pub const PLAUSIBLE_SPACING_MM: [f64; 2] = [0.1, 20.0];
/// SUV a PET can hold: slightly negative reconstruction noise to far above any bladder; values
/// outside are counts, activity or corrupt scaling, never SUV.
pub const PLAUSIBLE_SUV: [f32; 2] = [-100.0, 1000.0];
/// Hounsfield units a CT can hold (air −1000, dense metal a few 10 000).
pub const PLAUSIBLE_HU: [f32; 2] = [-10_000.0, 100_000.0];

/// Which processing step failed; `error.json`'s `"stage"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading and validating the input.
    Ingest,
    /// A study the models were not made for (another tracer, a SPECT image stored as PET).
    Scope,
    /// Loading the models.
    Models,
    /// Running them.
    Inference,
    /// Writing the outbox.
    Publish,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Ingest => "ingest",
            Stage::Scope => "scope",
            Stage::Models => "models",
            Stage::Inference => "inference",
            Stage::Publish => "publish",
        })
    }
}

/// Why a study could not be processed: one line, no patient identifier, and a hint for the
/// person who reads `failed/`.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("{stage}: {error}")]
pub struct StudyError {
    pub stage: Stage,
    pub error: String,
    pub hint: String,
    /// The cause is expected to pass (a full disk, a busy GPU): the daemon retries the study
    /// later instead of failing it.
    #[serde(skip)]
    pub transient: bool,
}

impl StudyError {
    /// Control characters in `error` (a file name from the input can hold newlines or terminal
    /// escapes) are escaped, so the error is one printable line wherever it is shown.
    pub fn new(stage: Stage, error: impl Into<String>, hint: impl Into<String>) -> StudyError {
        StudyError {
            stage,
            error: printable(&error.into()),
            hint: hint.into(),
            transient: false,
        }
    }

    /// Marks the error as one that should pass by itself.
    pub fn transient(mut self) -> StudyError {
        self.transient = true;
        self
    }

    /// Names files relative to the study folder `dir`: the folder's own name may carry a
    /// patient's name (scanner exports often do), and it says nothing the reader lacks.
    fn relative_to(mut self, dir: &Path) -> StudyError {
        let dir = dir.display().to_string();
        self.error = self
            .error
            .replace(&format!("{dir}/"), "")
            .replace(&dir, "the study folder");
        self
    }

    fn ingest(error: impl Into<String>, hint: impl Into<String>) -> StudyError {
        StudyError::new(Stage::Ingest, error, hint)
    }
}

/// Where a study came from.
#[derive(Debug)]
pub enum Source {
    Nifti,
    /// The PET series (for the DICOM SEG) and the conversion record.
    Dicom {
        pet_series: Box<SeriesStack>,
        report: Box<dicom::ConversionReport>,
    },
}

/// `result.json`'s `"inputs"`: file names or series UIDs, never patient identifiers.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum Inputs {
    Nifti {
        pet: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        ct: Option<String>,
    },
    Dicom {
        study_instance_uid: String,
        pet_series_instance_uid: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        ct_series_instance_uid: Option<String>,
        pet_slices: usize,
    },
}

/// A study in memory, ready for the models.
#[derive(Debug)]
pub struct Study {
    pub key: String,
    /// SUVbw.
    pub pet: Volume<f32>,
    /// HU, on its own grid, as read; `process::prepare` takes it out (onto the model grid)
    /// before inference.
    pub ct: Option<Volume<f32>>,
    pub inputs: Inputs,
    pub source: Source,
    pub warnings: Vec<String>,
}

/// Reads the study in `dir`. `key` names it in the outbox (`outbox/<key>/`); for a DICOM drop
/// the StudyInstanceUID/SeriesInstanceUID hash replaces it, as DESIGN §3 asks.
///
/// `limits` bounds the voxels of each volume and the decoded size of the study; both are
/// checked from the headers before anything is allocated.
///
/// `scope` says which tracers beside 18F-FDG a DICOM study may carry ([`scope::check`]); a
/// study outside it fails with stage `scope` before any pixel is decoded.
pub fn load(dir: &Path, key: &str, limits: &Limits, scope: &Scope) -> Result<Study, StudyError> {
    if !dir.is_dir() {
        return Err(StudyError::ingest(
            format!("{} is not a folder", dir.display()),
            "give the folder that holds the study's files",
        ));
    }
    let loaded = match first_existing(dir, &PET_NAMES) {
        Some(pet) => load_nifti(dir, &pet, key, limits),
        None => load_dicom(dir, limits, scope),
    };
    loaded.map_err(|e| e.relative_to(dir))
}

fn too_large(error: String) -> StudyError {
    StudyError::ingest(
        error,
        "check the export (a damaged header declares absurd sizes); raise [limits] in the \
         config if the study is genuine",
    )
}

/// Input files must be the study's own regular files: a FIFO would block the reader forever,
/// and a link leading out of the study folder would make tracerd read a file no one dropped.
/// A link to another file inside the study folder is fine (DICOM scanning skips links).
fn own_regular_file(dir: &Path, path: &Path) -> Result<(), StudyError> {
    let name = file_name(path);
    let unreadable = |e: std::io::Error| {
        StudyError::ingest(
            format!("{name}: cannot read: {e}"),
            "check the file's permissions and that it still exists",
        )
    };
    let mut meta = std::fs::symlink_metadata(path).map_err(unreadable)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::canonicalize(path).map_err(unreadable)?;
        let root = std::fs::canonicalize(dir).map_err(unreadable)?;
        if !target.starts_with(&root) {
            return Err(StudyError::ingest(
                format!("{name} is a link to a file outside the study folder"),
                "tracerd reads only the files dropped with the study: copy the file itself",
            ));
        }
        meta = std::fs::metadata(&target).map_err(unreadable)?;
    }
    if !meta.is_file() {
        return Err(StudyError::ingest(
            format!("{name} is not a regular file (a FIFO, socket or device)"),
            "drop the image file itself",
        ));
    }
    Ok(())
}

/// The first of `names` present in `dir` as anything but a folder: a name that is there but
/// cannot be read is reported as unreadable, not silently taken for a missing file.
fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.symlink_metadata().is_ok_and(|m| !m.is_dir()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn load_nifti(
    dir: &Path,
    pet_path: &Path,
    key: &str,
    limits: &Limits,
) -> Result<Study, StudyError> {
    let mut warnings = vec![
        "NIfTI input carries no tracer information: taken as 18F-FDG (the models' scope)".into(),
    ];
    let present: Vec<&str> = PET_NAMES
        .iter()
        .copied()
        .filter(|n| first_existing(dir, &[n]).is_some())
        .collect();
    if present.len() > 1 {
        warnings.push(format!(
            "several PET files ({}); used {}",
            present.join(", "),
            present[0]
        ));
    }
    let nifti_error = |e: nifti::NiftiError| {
        StudyError::ingest(
            one_line(&e.to_string()),
            "re-export the study; the file is damaged or not a 3D NIfTI volume",
        )
    };
    let study_voxels = limits.max_study_mib * (1 << 20) / 4;
    own_regular_file(dir, pet_path)?;
    let pet = nifti::read_f32_within(pet_path, limits.max_voxels_per_volume.min(study_voxels))
        .map_err(nifti_error)?;
    check_pet(&pet, &file_name(pet_path))?;
    let ct_path = first_existing(dir, &CT_NAMES);
    let ct = match &ct_path {
        Some(p) => {
            own_regular_file(dir, p)?;
            let left = study_voxels.saturating_sub(pet.data().len() as u64);
            let ct = nifti::read_f32_within(p, limits.max_voxels_per_volume.min(left))
                .map_err(nifti_error)?;
            check_ct(&ct, &file_name(p))?;
            Some(ct)
        }
        None => None,
    };
    let study = Study {
        key: key.to_string(),
        pet,
        ct,
        inputs: Inputs::Nifti {
            pet: file_name(pet_path),
            ct: ct_path.as_deref().map(file_name),
        },
        source: Source::Nifti,
        warnings,
    };
    check_overlap(study)
}

/// The scope rule on the PET series' first image: refusals fail the study (stage `scope`),
/// warnings go to `result.json`.
fn check_scope(pet: &SeriesStack, scope: &Scope) -> Result<Vec<String>, StudyError> {
    let tags = pet.slices[0].tracer.clone().unwrap_or_default();
    let verdict = scope::check(&tags, scope);
    if verdict.refusals.is_empty() {
        return Ok(verdict.warnings);
    }
    Err(StudyError::new(
        Stage::Scope,
        format!(
            "{}: not an 18F-FDG PET: {}",
            pet.subject(),
            verdict.refusals.join("; ")
        ),
        "tracerd's models are for 18F-FDG PET only; this study was not processed",
    ))
}

fn load_dicom(dir: &Path, limits: &Limits, scope: &Scope) -> Result<Study, StudyError> {
    let dicom_error =
        |e: dicom::DicomError| StudyError::ingest(one_line(&e.to_string()), e.reason().to_string());
    let scan = dicom::scan_folder(dir).map_err(dicom_error)?;
    if scan.instances.is_empty() {
        return Err(StudyError::ingest(
            match scan.unreadable.first() {
                Some((p, why)) => format!(
                    "no PET: no SUV.nii.gz or PET.nii.gz, and no readable DICOM file ({}: {})",
                    p.display(),
                    one_line(why)
                ),
                None => "no PET: the folder holds no SUV.nii.gz, PET.nii.gz or DICOM file".into(),
            },
            "a study folder needs SUV.nii.gz (or PET.nii.gz) and optionally CT.nii.gz, or the \
             DICOM files of a PET/CT study",
        ));
    }
    let ignored = scan.ignored.clone();
    let mut outcomes = dicom::assemble(scan);
    if outcomes.len() != 1 {
        let keys: Vec<&str> = outcomes.iter().map(|o| o.key.as_str()).collect();
        return Err(StudyError::ingest(
            format!(
                "the folder holds {} PET studies ({}); one study per folder",
                outcomes.len(),
                keys.join(", ")
            ),
            "split the drop into one folder per study (tracerd convert shows the keys)",
        ));
    }
    let assembled = outcomes.remove(0).result.map_err(dicom_error)?;
    let scope_warnings = check_scope(&assembled.pet, scope)?;
    assembled
        .check_size(limits)
        .map_err(|e| too_large(one_line(&e.to_string())))?;
    let loaded = dicom::load_study(&assembled, &ignored).map_err(dicom_error)?;
    check_pet(&loaded.pet, "PET series")?;
    if let Some(ct) = &loaded.ct {
        check_ct(ct, "CT series")?;
    }
    let study = Study {
        key: loaded.key.clone(),
        inputs: Inputs::Dicom {
            study_instance_uid: assembled.study_uid.clone(),
            pet_series_instance_uid: assembled.pet.series_uid.clone(),
            ct_series_instance_uid: assembled.ct.as_ref().map(|c| c.series_uid.clone()),
            pet_slices: assembled.pet.slices.len(),
        },
        warnings: [loaded.report.warnings.clone(), scope_warnings].concat(),
        pet: loaded.pet,
        ct: loaded.ct,
        source: Source::Dicom {
            pet_series: Box::new(assembled.pet),
            report: Box::new(loaded.report),
        },
    };
    check_overlap(study)
}

/// Every voxel finite and within `range` (`unit` names it), every spacing plausible.
fn check_values(
    volume: &Volume<f32>,
    what: &str,
    range: [f32; 2],
    unit: &str,
) -> Result<(), StudyError> {
    let bad = volume.data().iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(StudyError::ingest(
            format!(
                "{what} holds {bad} NaN or infinite voxel{}",
                if bad == 1 { "" } else { "s" }
            ),
            "the export is corrupt; re-export the series from the scanner",
        ));
    }
    let sp = volume.geometry().spacing;
    let [lo, hi] = PLAUSIBLE_SPACING_MM;
    if sp.iter().any(|s| !(lo..=hi).contains(s)) {
        return Err(StudyError::ingest(
            format!(
                "{what} has voxels of {:.3e}×{:.3e}×{:.3e} mm, outside the {lo}–{hi} mm of any scanner",
                sp.x, sp.y, sp.z
            ),
            "the header's voxel size is broken; re-export the series",
        ));
    }
    let (min, max) = volume
        .data()
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if min < range[0] || max > range[1] {
        return Err(StudyError::ingest(
            format!(
                "{what} holds values from {min:.3e} to {max:.3e} {unit}, outside the plausible \
                 {} to {} {unit}",
                range[0], range[1]
            ),
            "the image is not in the units expected (or its scaling is corrupt); export SUV for \
             the PET and HU for the CT",
        ));
    }
    Ok(())
}

fn check_ct(ct: &Volume<f32>, what: &str) -> Result<(), StudyError> {
    check_values(ct, what, PLAUSIBLE_HU, "HU")
}

fn check_pet(pet: &Volume<f32>, what: &str) -> Result<(), StudyError> {
    check_values(pet, what, PLAUSIBLE_SUV, "SUV")?;
    let [x, y, z] = pet.shape();
    if pet.shape().iter().any(|&n| n < MIN_PET_VOXELS) {
        return Err(StudyError::ingest(
            format!(
                "{what} is {x}×{y}×{z} voxels; the models need at least {MIN_PET_VOXELS} on every axis"
            ),
            "this is not a whole-body PET volume",
        ));
    }
    Ok(())
}

/// A CT that does not cover the PET cannot feed the 3D model: dropped with a warning if it
/// misses it entirely, kept with a warning if it covers less than 90 %.
fn check_overlap(mut study: Study) -> Result<Study, StudyError> {
    let Some(ct) = &study.ct else {
        return Ok(study);
    };
    let coverage = ct.geometry().coverage_of(study.pet.geometry());
    if coverage == 0.0 {
        study
            .warnings
            .push("the CT does not overlap the PET; it is ignored".into());
        study.ct = None;
    } else if coverage < 0.9 {
        study.warnings.push(format!(
            "the CT covers {:.0} % of the PET volume; PET voxels outside it see air",
            coverage * 100.0
        ));
    }
    Ok(study)
}

fn one_line(s: &str) -> String {
    s.lines().collect::<Vec<_>>().join(" ")
}

/// `s` with every control character escaped (`\n`, `\u{1b}`, …): text that came from input
/// (file names, DICOM values) cannot forge log lines or drive a terminal.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::nifti;
    use crate::volume::Geometry;

    fn study_with(spacing: f64, suv: f32) -> Result<Study, StudyError> {
        let dir = tempfile::tempdir().unwrap();
        let g = Geometry::axial([10, 10, 10], [spacing; 3], [0.0; 3]);
        let mut data = vec![1.0f32; g.len()];
        data[555] = suv;
        nifti::write_f32(
            &dir.path().join("SUV.nii.gz"),
            &Volume::new(g, data).unwrap(),
        )
        .unwrap();
        load(dir.path(), "k", &Limits::default(), &Scope::default())
    }

    /// Issue 16 row 3: a small `.nii.gz` whose header claims 1024×1024×512 float32 took 10.8
    /// GB and minutes of inference on zeros. The header is checked against the limits before
    /// anything is decompressed: the file here holds only a header, so a reader that did not
    /// check first would report it truncated instead.
    #[test]
    fn a_header_over_the_limits_is_refused_before_decompression() {
        let dir = tempfile::tempdir().unwrap();
        let g = Geometry::axial([4, 4, 4], [2.0; 3], [0.0; 3]);
        let plain = dir.path().join("x.nii");
        nifti::write_f32(&plain, &Volume::new(g, vec![1.0; 64]).unwrap()).unwrap();
        let mut bytes = std::fs::read(&plain).unwrap();
        for (i, d) in [1024u16, 1024, 512].iter().enumerate() {
            bytes[42 + 2 * i..44 + 2 * i].copy_from_slice(&d.to_le_bytes());
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &bytes[..352]).unwrap();
        std::fs::write(dir.path().join("SUV.nii.gz"), gz.finish().unwrap()).unwrap();
        let e = load(dir.path(), "k", &Limits::default(), &Scope::default()).unwrap_err();
        assert!(
            e.error.contains("536870912 voxels (1024×1024×512)") && e.error.contains("[limits]"),
            "{e}"
        );
        let small = Limits {
            max_study_mib: 64,
            ..Limits::default()
        };
        std::fs::remove_file(dir.path().join("SUV.nii.gz")).unwrap();
        let g = Geometry::axial([256, 256, 300], [2.0; 3], [0.0; 3]);
        let pet = Volume::new(g, vec![1.0; 256 * 256 * 300]).unwrap();
        nifti::write_f32(&dir.path().join("SUV.nii.gz"), &pet).unwrap();
        let e = load(dir.path(), "k", &small, &Scope::default()).unwrap_err();
        assert!(e.error.contains("more than the 16777216"), "{e}");
    }

    /// Issue 16, row 14: a NIfTI with 1e36 mm voxels and SUV 3e38 was published with an MTV of
    /// 7e109 ml. Both are ingest errors now, each one line naming what is wrong.
    #[test]
    fn implausible_voxel_sizes_and_suvs_are_ingest_errors() {
        assert!(study_with(4.0, 12.0).is_ok());
        let e = study_with(1e36, 12.0).unwrap_err();
        assert_eq!(e.stage, Stage::Ingest);
        assert!(e.error.contains("voxels of 1.000e36"), "{}", e.error);
        let e = study_with(4.0, 3e38).unwrap_err();
        assert!(
            e.error.contains("values from") && e.error.contains("SUV"),
            "{}",
            e.error
        );
        assert!(!e.error.contains('\n'));
    }

    /// Issue 16 row 13: `SUV.nii.gz` as a FIFO hung an ingest worker until the stop timeout;
    /// as a link out of the inbox, its target was read.
    #[test]
    fn only_the_studys_own_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let g = Geometry::axial([10, 10, 10], [2.0; 3], [0.0; 3]);
        let pet = Volume::new(g, vec![1.0f32; 1000]).unwrap();
        nifti::write_f32(&outside.path().join("elsewhere.nii.gz"), &pet).unwrap();
        let suv = dir.path().join("SUV.nii.gz");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&suv)
                .status()
                .unwrap()
                .success()
        );
        let e = load(dir.path(), "k", &Limits::default(), &Scope::default()).unwrap_err();
        assert!(e.error.contains("not a regular file"), "{e}");
        std::fs::remove_file(&suv).unwrap();
        std::os::unix::fs::symlink(outside.path().join("elsewhere.nii.gz"), &suv).unwrap();
        let e = load(dir.path(), "k", &Limits::default(), &Scope::default()).unwrap_err();
        assert!(e.error.contains("outside the study folder"), "{e}");
        assert!(!e.error.contains("elsewhere"), "{e}");
        // A link inside the folder is followed.
        std::fs::remove_file(&suv).unwrap();
        nifti::write_f32(&dir.path().join("pet-data.nii.gz"), &pet).unwrap();
        std::os::unix::fs::symlink("pet-data.nii.gz", &suv).unwrap();
        load(dir.path(), "k", &Limits::default(), &Scope::default()).unwrap();
    }
}
