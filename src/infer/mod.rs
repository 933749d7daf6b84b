//! Inference engines behind one trait, chosen once per model.
//!
//! [`Engines`] is built from the `[inference]` config. It finds ONNX Runtime (once per process,
//! see [`ort`]) and, for each model file, tries the configured engines in order — `ort-cuda`,
//! `ort-cpu`, `tract` by default — keeping the first that loads. Every engine that was skipped
//! leaves its reason in the log and in [`LoadError`], and the one that ran is recorded as a
//! [`Provenance`] that goes into every `result.json`: silent fallbacks are the classic complaint
//! against ONNX Runtime deployments, so there are none here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD};

use crate::config::{self, Engine};

pub mod ort;
pub mod tract;

/// Which engine and device actually ran a model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Provenance {
    /// `ort-cuda`, `ort-cpu` or `tract`.
    pub engine: Engine,
    /// The execution provider or device: `CUDAExecutionProvider`, `CPUExecutionProvider`,
    /// `tract-cpu`.
    pub device: String,
    /// Library and version, e.g. `onnxruntime 1.31.1 (/path/libonnxruntime.so)`.
    pub runtime: String,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {} [{}]", self.engine, self.device, self.runtime)
    }
}

/// A loaded model, ready to run. Inputs and outputs are float32 tensors in the order the model
/// declares them.
pub trait Session: Send {
    fn provenance(&self) -> &Provenance;
    /// How many items (windows, slices) a pipeline should put in one `run` along a free batch
    /// axis: the fewest that keep this engine's cores busy, since a larger batch only holds more
    /// activations at once.
    fn items_per_call(&self) -> usize {
        1
    }
    fn run(&mut self, inputs: &[ArrayViewD<'_, f32>]) -> Result<Vec<ArrayD<f32>>, InferError>;
}

/// A model ran but failed (shape mismatch, device error…).
#[derive(Debug, thiserror::Error)]
#[error("{engine} failed to run {}: {message}", model.display())]
pub struct InferError {
    pub engine: Engine,
    pub model: PathBuf,
    pub message: String,
}

/// No configured engine could load a model; lists every engine's reason.
#[derive(Debug, thiserror::Error)]
#[error("no engine could load {}: {}", model.display(), format_attempts(attempts))]
pub struct LoadError {
    pub model: PathBuf,
    pub attempts: Vec<(Engine, String)>,
}

fn format_attempts(attempts: &[(Engine, String)]) -> String {
    if attempts.is_empty() {
        return "no engines configured".into();
    }
    attempts
        .iter()
        .map(|(e, why)| format!("{e}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The configured engines, with ONNX Runtime discovered once.
pub struct Engines {
    order: Vec<Engine>,
    ort: Result<Arc<ort::OrtRuntime>, String>,
    /// Skip reasons already logged as warnings: the same reason for the next model (no CUDA
    /// provider, say) is logged at debug level only.
    warned: std::sync::Mutex<std::collections::HashSet<(Engine, String)>>,
}

impl Engines {
    /// Discovers ONNX Runtime if any `ort-*` engine is configured (logging what it found or why
    /// not). Never fails: an engine that cannot work is skipped at load time with its reason.
    pub fn new(config: &config::Inference) -> Engines {
        let wants_ort = config
            .engines
            .iter()
            .any(|e| matches!(e, Engine::OrtCuda | Engine::OrtCpu));
        let ort = if wants_ort {
            let found = ort::OrtRuntime::discover(config.ort_library.as_deref());
            match &found {
                Ok(rt) => tracing::info!(runtime = %rt, "ONNX Runtime loaded"),
                Err(why) => {
                    tracing::warn!(reason = %why, "ONNX Runtime unavailable; ort engines skipped")
                }
            }
            found
        } else {
            Err("no ort engine configured".into())
        };
        Engines {
            order: config.engines.clone(),
            ort,
            warned: Default::default(),
        }
    }

    /// The ONNX Runtime in use, or why there is none.
    pub fn ort_runtime(&self) -> Result<&ort::OrtRuntime, &str> {
        self.ort.as_deref().map_err(String::as_str)
    }

    /// Loads `model` with the first configured engine that accepts it.
    pub fn load(&self, model: &Path) -> Result<Box<dyn Session>, LoadError> {
        self.load_each(|_| model.to_path_buf())
    }

    /// Loads, with the first configured engine that accepts it, the file `model_for` gives for
    /// that engine (a network can have a file per precision, and each engine its own).
    pub fn load_each(
        &self,
        model_for: impl Fn(Engine) -> std::path::PathBuf,
    ) -> Result<Box<dyn Session>, LoadError> {
        let mut attempts = Vec::new();
        let mut model = std::path::PathBuf::new();
        for &engine in &self.order {
            model = model_for(engine);
            let model = model.as_path();
            let loaded = match engine {
                Engine::OrtCuda | Engine::OrtCpu => match &self.ort {
                    Ok(rt) => rt
                        .load(model, engine == Engine::OrtCuda)
                        .map(|s| Box::new(s) as Box<dyn Session>),
                    Err(why) => Err(why.clone()),
                },
                Engine::Tract => {
                    tract::TractSession::load(model).map(|s| Box::new(s) as Box<dyn Session>)
                }
            };
            match loaded {
                Ok(session) => {
                    tracing::info!(
                        model = %model.display(),
                        engine = %session.provenance(),
                        skipped = attempts.len(),
                        "model loaded"
                    );
                    return Ok(session);
                }
                Err(why) => {
                    let first = self
                        .warned
                        .lock()
                        .map(|mut w| w.insert((engine, why.clone())))
                        .unwrap_or(true);
                    if first {
                        tracing::warn!(model = %model.display(), %engine, reason = %why, "engine skipped (said once per reason)");
                    } else {
                        tracing::debug!(model = %model.display(), %engine, reason = %why, "engine skipped");
                    }
                    attempts.push((engine, why));
                }
            }
        }
        Err(LoadError {
            model: model.to_path_buf(),
            attempts,
        })
    }
}
