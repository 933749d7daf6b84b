//! One study through the whole pipeline: ingest → models → outbox. `tracerd process` calls
//! [`Processor::process`] once; the daemon calls it for every claimed study.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::Digest;

use crate::config::{Config, Destination, Limits, NiftiKey, Scope};
use crate::fsio;
use crate::infer::Engines;
use crate::io::{dicom, nifti};
use crate::models::l2snet::{self, Ct, LesionSummary};
use crate::models::two_be_three::Scores;
use crate::models::{ModelUse, Models, Timings};
use crate::outbox::{self, Backend, OrAbsent, ResultDoc, ScoresOut};
use crate::report;
use crate::study::{self, Source, Stage, Study, StudyError};
use crate::volume::{FromF64, Geometry, Interpolation, Volume};

/// What the models found in one study, on the study's own PET grid.
#[derive(Debug)]
pub struct Findings {
    /// Absent, with the reason, for a study outside what 2Be3-Net [WS] learned
    /// ([`TwoBeThree::out_of_scope`](crate::models::two_be_three::TwoBeThree::out_of_scope)).
    pub scores: OrAbsent<Scores>,
    /// `None` without a CT (the 3D model needs both channels).
    pub lesions: Option<FoundLesions>,
    pub timings: Timings,
    pub warnings: Vec<String>,
}

/// The lesions L2SNet found, on the study's own PET grid.
#[derive(Debug)]
pub struct FoundLesions {
    /// 0/1.
    pub mask: Volume<u8>,
    /// 0 background, *n* the voxels of `summary.items[n - 1]`.
    pub ids: Volume<u32>,
    pub summary: LesionSummary,
    /// How many `seg3d` windows ran, of those holding a body voxel.
    pub seg3d_windows: l2snet::Windows,
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
    limits: Limits,
    scope: Scope,
}

/// What `result.json` says about the models: captured once per study, so that publishing
/// can happen on another thread than inference.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub uses: Vec<ModelUse>,
    pub statuses: Vec<String>,
}

impl ModelInfo {
    /// The engine and device, as `result.json`'s `backend`.
    pub fn backend(&self) -> Backend {
        Backend::of(&self.uses)
    }
}

/// True for I/O errors writing the outbox that are the outbox's, not the study's: a full disk
/// or quota, a read-only, vanished or inaccessible outbox, a busy or stale network share.
/// They pass once an operator fixes the outbox, so the study is retried, not failed.
pub fn is_outbox_problem(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        StorageFull
            | QuotaExceeded
            | ResourceBusy
            | ReadOnlyFilesystem
            | PermissionDenied
            | NotFound
            | NotADirectory
            | StaleNetworkFileHandle
            | TimedOut
            | Interrupted
    )
}

/// True for engine errors that a later try may not hit (GPU memory held by another process).
fn is_transient_run(e: &crate::models::RunError) -> bool {
    if matches!(e, crate::models::RunError::Stale) {
        return true;
    }
    let text = e.to_string().to_ascii_lowercase();
    [
        "out of memory",
        "failed to allocate",
        "cuda_error_out_of_memory",
        "device busy",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// Takes the study's native CT onto L2SNet's model grid (`params`: the loaded card's, from
/// [`Processor::l2snet_params`]). Engine-free CPU work: the daemon's ingest stage does it while
/// another study is in inference, so a study waiting for the models no longer holds its native
/// CT. Where it cannot be done (an oblique PET, no body) the CT stays native and inference says
/// why, as without this step.
pub fn prepare(mut study: Study, params: &l2snet::Params) -> (Study, Option<Ct>) {
    let ct = study.ct.take().map(|ct| {
        let on_grid = study
            .pet
            .to_canonical_lps()
            .and_then(|pet| params.ct_on_model_grid(&pet, &ct).ok());
        match on_grid {
            Some(ready) => ready,
            None => Ct::Native(ct),
        }
    });
    (study, ct)
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
        Ok(Processor {
            models,
            limits: config.limits,
            scope: config.scope.clone(),
        })
    }

    /// The models as `result.json` reports them.
    pub fn model_info(&self) -> ModelInfo {
        ModelInfo {
            uses: self.models.uses(),
            statuses: self.models.statuses(),
        }
    }

    /// L2SNet's parameters, for [`prepare`].
    pub fn l2snet_params(&self) -> &l2snet::Params {
        &self.models.l2snet.params
    }

    /// Runs both models on a loaded study whose CT, if any, [`prepare`] took out as `ct`.
    pub fn analyse(&mut self, study: &Study, ct: Option<Ct>) -> Result<Findings, StudyError> {
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
            let error = StudyError::new(
                Stage::Inference,
                e.to_string(),
                "see the log; if an engine failed, `tracerd check` shows the others",
            );
            if is_transient_run(&e) {
                error.transient()
            } else {
                error
            }
        };
        let scores = match self.models.two_be_three.out_of_scope(&pet) {
            Some(reason) => {
                warnings.push(format!("no risk scores: {reason}"));
                OrAbsent::Absent { reason }
            }
            None => OrAbsent::Present(
                self.models
                    .two_be_three
                    .scores(&pet, &mut timings)
                    .map_err(failed)?,
            ),
        };
        let lesions = match ct {
            Some(ct) => {
                let seg = self
                    .models
                    .l2snet
                    .segment(&pet, ct, &mut timings)
                    .map_err(failed)?;
                let t = Instant::now();
                let found = FoundLesions {
                    mask: on_grid(seg.mask, study.pet.geometry()),
                    ids: on_grid(seg.ids, study.pet.geometry()),
                    summary: seg.lesions,
                    seg3d_windows: seg.windows,
                };
                timings.add("layout", t);
                Some(found)
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
        let study = study::load(input, key, &self.limits, &self.scope)?;
        self.process_study(study, t.elapsed().as_secs_f64() * 1e3, outbox_dir)
    }

    /// Runs the models on a loaded study and publishes it; `ingest_ms` is how long loading took.
    /// Preparing the CT ([`prepare`]) counts as ingest, as in the daemon, where the ingest stage
    /// does it.
    pub fn process_study(
        &mut self,
        study: Study,
        ingest_ms: f64,
        outbox_dir: &Path,
    ) -> Result<Published, StudyError> {
        let started = Instant::now();
        for w in &study.warnings {
            tracing::warn!(key = %key_for_log(&study.key), warning = %study::printable(w), "study");
        }
        let t = Instant::now();
        let (study, ct) = prepare(study, self.l2snet_params());
        let ingest_ms = ingest_ms + t.elapsed().as_secs_f64() * 1e3;
        let findings = self.analyse(&study, ct)?;
        let published = publish(
            &study,
            findings,
            &self.model_info(),
            outbox_dir,
            ingest_ms,
            &[],
        )?;
        tracing::info!(
            key = %key_for_log(&published.key),
            engine = %published.result.backend.engine,
            ms = ingest_ms + started.elapsed().as_secs_f64() * 1e3,
            "published"
        );
        Ok(published)
    }
}

/// `v` on `grid`, which holds the same voxel centres in another order: nearest neighbour is an
/// exact re-index.
fn on_grid<T: Copy + Send + Sync + Into<f64> + FromF64 + Default>(
    v: Volume<T>,
    grid: &Geometry,
) -> Volume<T> {
    if v.geometry() == grid {
        v
    } else {
        v.resample(grid, Interpolation::Nearest, T::default())
    }
}

/// Publishes `outbox/<key>/` for a study and what the models found in it: `result.json`,
/// the mask, and a DICOM SEG for DICOM input. A full, read-only or missing outbox is a transient
/// error ([`is_outbox_problem`]).
pub fn publish(
    study: &Study,
    findings: Findings,
    models: &ModelInfo,
    outbox_dir: &Path,
    ingest_ms: f64,
    destinations: &[Destination],
) -> Result<Published, StudyError> {
    outbox::check_key(&study.key)
        .map_err(|e| StudyError::new(Stage::Ingest, e, "rename the study folder"))?;
    let mut result = result_doc(study, &findings, models);
    result.delivery = crate::net::record::initial(destinations, &result.outputs);
    write_outbox(study, findings, models, outbox_dir, ingest_ms, result).map_err(|e| {
        let error = StudyError::new(
            Stage::Publish,
            format!("cannot write {}: {e}", outbox_dir.display()),
            "check the outbox's free space and permissions; the study can be re-run",
        );
        if is_outbox_problem(&e) {
            error.transient()
        } else {
            error
        }
    })
}

fn write_outbox(
    study: &Study,
    findings: Findings,
    models: &ModelInfo,
    outbox_dir: &Path,
    ingest_ms: f64,
    mut result: ResultDoc,
) -> Result<Published, std::io::Error> {
    let t = Instant::now();
    let dir = outbox::publish(outbox_dir, &study.key, |dir| -> std::io::Result<()> {
        fsio::injected_full_disk()?;
        write_files(dir, study, &findings, models, &result.outputs)?;
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

/// `result.json` before publication: which files will be written, and why others are not.
fn result_doc(study: &Study, findings: &Findings, models: &ModelInfo) -> ResultDoc {
    let mut warnings = study.warnings.clone();
    warnings.extend(findings.warnings.iter().cloned());
    let dicom = matches!(study.source, Source::Dicom { .. });
    let mut outputs = vec![
        outbox::RESULT_FILE.to_string(),
        outbox::OVERVIEW_FILE.into(),
    ];
    let lesions = match &findings.lesions {
        Some(found) => {
            outputs.push(outbox::MASK_FILE.into());
            if dicom && found.summary.count > 0 {
                outputs.push(outbox::SEG_FILE.into());
                outputs.push(outbox::SR_FILE.into());
            } else if dicom {
                warnings.push("no lesions, so no DICOM SEG or SR was written".into());
            }
            OrAbsent::Present(found.summary.clone())
        }
        None => OrAbsent::Absent {
            reason: "no CT in the study; the lesion model needs PET and CT".into(),
        },
    };
    if dicom {
        outputs.push(outbox::OVERVIEW_SC_FILE.into());
    }
    ResultDoc {
        schema: outbox::SCHEMA,
        key: study.key.clone(),
        tracerd_version: env!("CARGO_PKG_VERSION"),
        inputs: study.inputs.clone(),
        scores: match &findings.scores {
            OrAbsent::Present(scores) => OrAbsent::Present(ScoresOut {
                scores: *scores,
                variant: "ws",
            }),
            OrAbsent::Absent { reason } => OrAbsent::Absent {
                reason: reason.clone(),
            },
        },
        lesions,
        outputs,
        backend: models.backend(),
        models: models.uses.clone(),
        timings_ms: findings.timings.clone(),
        model_status: models.statuses.clone(),
        warnings,
        delivery: None,
    }
}

/// Writes every file `outputs` names except `result.json` into the temporary folder `dir`.
fn write_files(
    dir: &Path,
    study: &Study,
    findings: &Findings,
    models: &ModelInfo,
    outputs: &[String],
) -> std::io::Result<()> {
    let wants = |name: &str| outputs.iter().any(|o| o == name);
    if let Some(found) = &findings.lesions {
        nifti::write_u8(&dir.join(outbox::MASK_FILE), &found.mask).map_err(fsio::keep_kind)?;
    }
    let picture = report::render(&report::Overview {
        key: &study.key,
        pet: &study.pet,
        lesions: findings.lesions.as_ref().map(|f| (&f.ids, &f.summary)),
        scores: match &findings.scores {
            OrAbsent::Present(scores) => Some(scores),
            OrAbsent::Absent { .. } => None,
        },
        models: &models.uses,
        statuses: &models.statuses,
    });
    std::fs::write(dir.join(outbox::OVERVIEW_FILE), picture.png())?;
    let Source::Dicom { pet_series, .. } = &study.source else {
        return Ok(());
    };
    if let (true, Some(found)) = (wants(outbox::SEG_FILE), &findings.lesions) {
        dicom::seg::write_seg(pet_series, &found.ids, &dir.join(outbox::SEG_FILE))
            .map_err(fsio::keep_kind)?;
        dicom::sr::write_sr(pet_series, &found.summary, &dir.join(outbox::SR_FILE))
            .map_err(fsio::keep_kind)?;
    }
    dicom::sc::write_sc(
        pet_series,
        &picture.image,
        &dir.join(outbox::OVERVIEW_SC_FILE),
    )
    .map_err(fsio::keep_kind)
}

/// The study key `tracerd process` derives from an input folder's name ([`key_from_name`]).
pub fn key_from_folder(input: &Path, policy: NiftiKey) -> String {
    let name = input
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "study".into());
    key_from_name(&name, policy)
}

/// A folder name made into a study key (the config's `outbox.nifti_key`): the name itself when
/// the policy allows it and it is already a safe key that cannot be mistaken for a hash key,
/// else `n-` + 16 hex digits of its SHA-256. Two different names never give one key.
pub fn key_from_name(name: &str, policy: NiftiKey) -> String {
    let usable =
        policy == NiftiKey::FolderName && outbox::check_key(name).is_ok() && !is_hash_key(name);
    if usable {
        return name.to_string();
    }
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("n-{hex}")
}

/// Keys tracerd makes from hashes: a DICOM study's 16 hex digits, a NIfTI folder's `n-` + 16.
pub fn is_hash_key(key: &str) -> bool {
    let hex16 = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    hex16(key) || key.strip_prefix("n-").is_some_and(hex16)
}

/// The key as the log may show it: a hash key as is; a folder name never (it may be a
/// patient's; the log names the study by its entry hash).
pub fn key_for_log(key: &str) -> &str {
    if is_hash_key(key) {
        key
    } else {
        "(folder name)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16 row 7: folders `a b` and `a_b` got one key, and the second result silently
    /// replaced the first.
    #[test]
    fn different_names_never_share_a_key() {
        let f = |n| key_from_name(n, NiftiKey::FolderName);
        assert_eq!(f("a_b"), "a_b");
        assert!(f("a b").starts_with("n-") && f("a b") != f("a_b"));
        // Names shaped like hash keys are hashed too, so no folder can take another's key.
        let dicom_like = "0123456789abcdef";
        assert_ne!(f(dicom_like), dicom_like);
        let hashed = f("a b");
        assert_ne!(f(&hashed), hashed);
        assert!(key_from_name("a_b", NiftiKey::Hash).starts_with("n-"));
    }

    /// Issue 16 row 8: a folder named `DOE^JOHN_12345` was in the log, the outbox folder name and
    /// result.json.
    #[test]
    fn a_folder_name_that_is_not_a_safe_key_is_hashed_and_never_logged() {
        let key = key_from_name("DOE^JOHN_12345", NiftiKey::FolderName);
        assert!(is_hash_key(&key) && !key.contains("DOE"), "{key}");
        assert_eq!(key_for_log("DOE_JOHN_12345"), "(folder name)");
        assert_eq!(key_for_log(&key), key);
    }

    /// Issue 16 row 9: a file named with a newline and ANSI escapes forged a log line.
    #[test]
    fn control_characters_in_errors_are_escaped() {
        let e = StudyError::new(
            Stage::Ingest,
            "PET\n2026 ERROR forged\u{1b}[31m.nii.gz: bad",
            "x",
        );
        assert!(!e.error.chars().any(char::is_control), "{:?}", e.error);
        assert!(
            e.error.contains("\\n") && e.error.contains("\\u{1b}"),
            "{}",
            e.error
        );
    }
}
