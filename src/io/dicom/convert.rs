//! `tracerd convert`: a DICOM drop → `pet_suv.nii.gz` (SUVbw, float32), `ct.nii.gz` (HU, on the
//! CT's own grid) and `conversion.json` (every SUV quantity and the tag it came from, the series
//! used, the files ignored, the warnings). One PET series: written into the output folder; a
//! drop with several: one sub-folder per study key.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::assemble::{AssembledStudy, SeriesStack, StudyOutcome, assemble};
use super::pixels::load_volume;
use super::scan::scan_folder;
use super::suv::{self, SuvRecord, SuvTags};
use super::{DicomError, DicomErrorKind, Stage};
use crate::config::Limits;
use crate::fsio;
use crate::io::nifti;
use crate::volume::Volume;

/// Value of `conversion.json`'s `"schema"`.
pub const SCHEMA: &str = "tracerd.conversion/1";

/// Where a series sits, for `conversion.json`.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesSummary {
    pub series_instance_uid: String,
    pub slices: usize,
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
    /// LPS, centre of the first voxel.
    pub origin_mm: [f64; 3],
    /// Columns: the i, j, k directions (LPS).
    pub direction: [[f64; 3]; 3],
    pub rescale_slope_range: [f64; 2],
    pub rescale_intercept_range: [f64; 2],
    pub rescale_source: &'static str,
}

impl SeriesSummary {
    fn of(s: &SeriesStack) -> Self {
        let g = &s.geometry;
        let range = |f: &dyn Fn(&super::Instance) -> f64| {
            let v: Vec<f64> = s.slices.iter().map(f).collect();
            [
                v.iter().cloned().fold(f64::INFINITY, f64::min),
                v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            ]
        };
        SeriesSummary {
            series_instance_uid: s.series_uid.clone(),
            slices: s.slices.len(),
            shape: g.shape,
            spacing_mm: g.spacing.into(),
            origin_mm: g.origin.into(),
            direction: [0, 1, 2].map(|c| [0, 1, 2].map(|r| g.direction[(r, c)])),
            rescale_slope_range: range(&|i| i.rescale_slope),
            rescale_intercept_range: range(&|i| i.rescale_intercept),
            rescale_source: "per slice: RescaleSlope (0028,1053), RescaleIntercept (0028,1052)",
        }
    }
}

/// Contents of `conversion.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ConversionReport {
    pub schema: &'static str,
    pub key: String,
    pub pet: SeriesSummary,
    pub suv: SuvRecord,
    pub ct: Option<SeriesSummary>,
    /// Drop files that are not DICOM (relative paths).
    pub ignored_files: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// A converted study in memory: PET in SUVbw, CT in HU on its own grid.
#[derive(Debug, Clone)]
pub struct LoadedStudy {
    pub key: String,
    pub pet: Volume<f32>,
    pub ct: Option<Volume<f32>>,
    pub report: ConversionReport,
}

/// Decodes an assembled study: SUV factors, PET and CT pixels.
pub fn load_study(study: &AssembledStudy, ignored: &[PathBuf]) -> Result<LoadedStudy, DicomError> {
    let subject = study.pet.subject();
    let tags: Vec<&SuvTags> = study
        .pet
        .slices
        .iter()
        .map(|i| {
            i.suv.as_ref().ok_or_else(|| {
                DicomError::new(
                    Stage::Suv,
                    i.rel.display().to_string(),
                    DicomErrorKind::Unreadable("PET header without SUV attributes".into()),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let conversion = suv::compute(&tags, &subject)?;
    let pet = load_volume(&study.pet, Some(&conversion.factors))?;
    let ct = study
        .ct
        .as_ref()
        .map(|ct| load_volume(ct, None))
        .transpose()?;
    let report = ConversionReport {
        schema: SCHEMA,
        key: study.key.clone(),
        pet: SeriesSummary::of(&study.pet),
        suv: conversion.record,
        ct: study.ct.as_ref().map(SeriesSummary::of),
        ignored_files: ignored.to_vec(),
        warnings: study.warnings.clone(),
    };
    Ok(LoadedStudy {
        key: study.key.clone(),
        pet,
        ct,
        report,
    })
}

/// Writes `pet_suv.nii.gz`, `ct.nii.gz` (when there is a CT) and `conversion.json` into `dir`.
pub fn convert_study(study: &LoadedStudy, dir: &Path) -> Result<(), DicomError> {
    let err = |e: String| {
        DicomError::new(
            Stage::Write,
            dir.display().to_string(),
            DicomErrorKind::Write(e),
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    nifti::write_f32(&dir.join("pet_suv.nii.gz"), &study.pet).map_err(|e| err(e.to_string()))?;
    if let Some(ct) = &study.ct {
        nifti::write_f32(&dir.join("ct.nii.gz"), ct).map_err(|e| err(e.to_string()))?;
    }
    let mut json = serde_json::to_vec_pretty(&study.report).map_err(|e| err(e.to_string()))?;
    json.push(b'\n');
    fsio::write_bytes_atomic(&dir.join("conversion.json"), &json).map_err(|e| err(e.to_string()))
}

/// One key's outcome of `convert`.
#[derive(Debug)]
pub struct Converted {
    pub key: String,
    /// Where the files went.
    pub dir: PathBuf,
    pub result: Result<ConversionReport, DicomError>,
}

/// Scans `input`, converts every study into `out` (directly for a single study, else into
/// `out/<key>/`). A folder that cannot be read is an `Err`; a study that fails is reported in
/// its `Converted` and does not affect the others. A study whose headers exceed `limits` fails
/// before any pixel is decoded, as in the daemon.
pub fn convert(input: &Path, out: &Path, limits: &Limits) -> Result<Vec<Converted>, DicomError> {
    let scan = scan_folder(input)?;
    let ignored = scan.ignored.clone();
    if scan.instances.is_empty() {
        let why = match scan.unreadable.first() {
            Some((p, why)) => format!("no readable DICOM file ({}: {why})", p.display()),
            None => "no DICOM file".into(),
        };
        return Err(DicomError::new(
            Stage::Scan,
            input.display().to_string(),
            DicomErrorKind::Unreadable(why),
        ));
    }
    let outcomes: Vec<StudyOutcome> = assemble(scan);
    let single = outcomes.len() == 1;
    let mut done = Vec::new();
    for o in outcomes {
        let dir = if single {
            out.to_path_buf()
        } else {
            out.join(&o.key)
        };
        let result = o.result.and_then(|study| {
            study.check_size(limits)?;
            let loaded = load_study(&study, &ignored)?;
            for w in &loaded.report.warnings {
                tracing::warn!(key = %loaded.key, warning = %crate::study::printable(w), "DICOM conversion");
            }
            convert_study(&loaded, &dir)?;
            Ok(loaded.report)
        });
        done.push(Converted {
            key: o.key,
            dir,
            result,
        });
    }
    Ok(done)
}
