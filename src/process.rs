//! One study through the whole pipeline: ingest → models → outbox. `tracerd process` calls
//! [`Processor::process`] once; the daemon calls it for every claimed study.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::Config;
use crate::infer::Engines;
use crate::io::{dicom, nifti};
use crate::models::l2snet::LesionSummary;
use crate::models::two_be_three::Scores;
use crate::models::{Models, Timings};
use crate::outbox::{self, Backend, OrAbsent, ResultDoc, ScoresOut};
use crate::study::{self, Source, Stage, Study, StudyError};
use crate::volume::{Interpolation, Volume};

/// What the models found in one study, on the study's own PET grid.
#[derive(Debug)]
pub struct Findings {
    pub scores: Scores,
    /// `None` without a CT (the 3D model needs both channels).
    pub lesions: Option<(Volume<u8>, LesionSummary)>,
    pub timings: Timings,
    pub warnings: Vec<String>,
}

/// A published study.
#[derive(Debug)]
pub struct Published {
    pub key: String,
    pub dir: PathBuf,
    pub result: ResultDoc,
}

/// The loaded models, reused for every study.
pub struct Processor {
    models: Models,
}

impl Processor {
    /// Finds the engines and loads both models (hashes verified).
    pub fn new(config: &Config) -> Result<Processor, StudyError> {
        let engines = Engines::new(&config.inference);
        let models =
            Models::load(&config.paths.models, &engines, &config.inference).map_err(|e| {
                StudyError::new(
                    Stage::Models,
                    e.to_string(),
                    "run `tracerd check` to see which model file or engine is at fault",
                )
            })?;
        for status in models.statuses() {
            tracing::info!(model = %status, "model loaded");
        }
        Ok(Processor { models })
    }

    /// Runs both models on a loaded study.
    pub fn analyse(&mut self, study: &Study) -> Result<Findings, StudyError> {
        let mut timings = Timings::default();
        let mut warnings = Vec::new();
        let t = Instant::now();
        let pet = study.pet.to_canonical_lps().ok_or_else(|| {
            StudyError::new(
                Stage::Ingest,
                "the PET is oblique: no voxel axis is aligned with each patient axis",
                "reconstruct the PET on an axial grid",
            )
        })?;
        timings.add("layout", t);
        let failed = |e: crate::models::RunError| {
            StudyError::new(
                Stage::Inference,
                e.to_string(),
                "see the log; if an engine failed, `tracerd check` shows the others",
            )
        };
        let scores = self
            .models
            .two_be_three
            .scores(&pet, &mut timings)
            .map_err(failed)?;
        let lesions = match &study.ct {
            Some(ct) => {
                let seg = self
                    .models
                    .l2snet
                    .segment(&pet, ct, &mut timings)
                    .map_err(failed)?;
                let t = Instant::now();
                let mask = if seg.mask.geometry() == study.pet.geometry() {
                    seg.mask
                } else {
                    // Same voxel centres, other order: nearest neighbour is an exact re-index.
                    seg.mask
                        .resample(study.pet.geometry(), Interpolation::Nearest, 0)
                };
                timings.add("layout", t);
                Some((mask, seg.lesions))
            }
            None => {
                warnings.push(
                    "no CT: lesion segmentation needs PET and CT, so only risk scores are reported"
                        .to_string(),
                );
                None
            }
        };
        Ok(Findings {
            scores,
            lesions,
            timings,
            warnings,
        })
    }

    /// Reads the study in `input`, runs the models and publishes `outbox/<key>/`. `key` is used
    /// for NIfTI folders; a DICOM drop is keyed by its UIDs' hash. `input` is only read.
    pub fn process(
        &mut self,
        input: &Path,
        key: &str,
        outbox_dir: &Path,
    ) -> Result<Published, StudyError> {
        let t = Instant::now();
        let study = study::load(input, key)?;
        self.process_study(&study, t.elapsed().as_secs_f64() * 1e3, outbox_dir)
    }

    /// Runs the models on a loaded study and publishes it; `ingest_ms` is how long loading took.
    pub fn process_study(
        &mut self,
        study: &Study,
        ingest_ms: f64,
        outbox_dir: &Path,
    ) -> Result<Published, StudyError> {
        let started = Instant::now();
        outbox::check_key(&study.key)
            .map_err(|e| StudyError::new(Stage::Ingest, e, "rename the study folder"))?;
        for w in &study.warnings {
            tracing::warn!(key = %study.key, warning = %w, "study");
        }
        let mut findings = self.analyse(study)?;
        let published = self
            .publish(study, &mut findings, outbox_dir, ingest_ms)
            .map_err(|e| {
                StudyError::new(
                    Stage::Publish,
                    format!("cannot write {}: {e}", outbox_dir.display()),
                    "check the outbox's free space and permissions; the study can be re-run",
                )
            })?;
        tracing::info!(
            key = %published.key,
            lesions = findings.lesions.as_ref().map(|(_, s)| s.count),
            lr = findings.scores.lr,
            dm = findings.scores.dm,
            os = findings.scores.os,
            engine = %published.result.backend.engine,
            ms = ingest_ms + started.elapsed().as_secs_f64() * 1e3,
            "published"
        );
        Ok(published)
    }

    fn publish(
        &self,
        study: &Study,
        findings: &mut Findings,
        outbox_dir: &Path,
        ingest_ms: f64,
    ) -> Result<Published, std::io::Error> {
        let mut warnings = study.warnings.clone();
        warnings.extend(findings.warnings.iter().cloned());
        let mut outputs = vec![outbox::RESULT_FILE.to_string()];
        let lesions = match &findings.lesions {
            Some((_, summary)) => {
                outputs.push(outbox::MASK_FILE.into());
                OrAbsent::Present(summary.clone())
            }
            None => OrAbsent::Absent {
                reason: "no CT in the study; the lesion model needs PET and CT".into(),
            },
        };
        let dicom_seg = match (&study.source, &findings.lesions) {
            (Source::Dicom { pet_series, .. }, Some((_, summary))) => {
                if summary.count > 0 {
                    outputs.push(outbox::SEG_FILE.into());
                } else {
                    warnings.push("no lesions, so no DICOM SEG was written".into());
                }
                Some(pet_series)
            }
            _ => None,
        };
        let models = self.models.uses();
        let mut result = ResultDoc {
            schema: outbox::SCHEMA,
            key: study.key.clone(),
            tracerd_version: env!("CARGO_PKG_VERSION"),
            inputs: study.inputs.clone(),
            scores: OrAbsent::Present(ScoresOut {
                scores: findings.scores,
                variant: "ws",
            }),
            lesions,
            outputs,
            backend: Backend::of(&models),
            models,
            timings_ms: findings.timings.clone(),
            model_status: self.models.statuses(),
            warnings,
        };
        let t = Instant::now();
        let dir = outbox::publish(outbox_dir, &study.key, |dir| -> std::io::Result<()> {
            if let Some((mask, _)) = &findings.lesions {
                nifti::write_u8(&dir.join(outbox::MASK_FILE), mask)
                    .map_err(std::io::Error::other)?;
                if let Some(pet_series) = dicom_seg {
                    dicom::seg::write_seg(pet_series, mask, &dir.join(outbox::SEG_FILE))
                        .map_err(std::io::Error::other)?;
                }
            }
            let mut ms = result.timings_ms.clone();
            ms.insert("ingest", ingest_ms);
            ms.insert("write", t.elapsed().as_secs_f64() * 1e3);
            result.timings_ms = ms;
            let mut json = serde_json::to_vec_pretty(&result).map_err(std::io::Error::other)?;
            json.push(b'\n');
            std::fs::write(dir.join(outbox::RESULT_FILE), json)
        })?;
        Ok(Published {
            key: study.key.clone(),
            dir,
            result,
        })
    }
}

/// The study key `tracerd process` derives from an input folder's name: its characters outside
/// `A-Z a-z 0-9 - _ .` become `_` (a leading `.` too).
pub fn key_from_folder(input: &Path) -> String {
    let name = input
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "study".into());
    let mut key: String = name
        .chars()
        .map(|c| if outbox::is_key_char(c) { c } else { '_' })
        .take(128)
        .collect();
    if key.starts_with('.') {
        key.replace_range(0..1, "_");
    }
    key
}
