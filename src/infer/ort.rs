//! The ONNX Runtime engine (`ort-cuda`, `ort-cpu`) through the `ort` crate, loaded dynamically.
//!
//! The library is opened explicitly with `ort::init_from`, which returns an error for a missing,
//! broken or too-old library (implicit loading through `ORT_DYLIB_PATH` panics instead). Where it
//! comes from, in order:
//!
//! 1. `inference.ort_library` from the config. When an operator names a library, that is the
//!    library: if it does not load, ort is unavailable (with the reason) rather than silently
//!    replaced by some other copy found on the machine.
//! 2. `ORT_DYLIB_PATH`.
//! 3. The package's own library folder: `<exe>/../lib/tracerd/` and `/usr/lib/tracerd/`.
//! 4. A pip-installed `onnxruntime` or `onnxruntime-gpu`: `onnxruntime/capi/libonnxruntime.so*`
//!    under `$VIRTUAL_ENV`, `./.venv`, `~/.local`, `/usr/local/lib` and `/usr/lib`.
//!
//! ONNX Runtime allows one library and one environment per process, ever (even after both are
//! dropped), so the first runtime that loads is kept in a process-wide slot and shared; asking
//! for a different library later is an error that says a restart is needed.
//!
//! `ort-cuda` registers the CUDA execution provider with `error_on_failure`, so a CPU-only build
//! or a missing GPU is a load error that sends the model to the next engine, never a silent run on
//! the CPU under the CUDA label.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, ArrayViewD};
use ort::ep;
use ort::session::Session as OrtSession;
use ort::value::TensorRef;

use super::{InferError, Provenance, Session};
use crate::config::Engine;

/// A loaded ONNX Runtime library.
pub struct OrtRuntime {
    environment: ort::environment::Environment,
    pub library: PathBuf,
    pub version: String,
}

impl fmt::Display for OrtRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "onnxruntime {} ({})",
            self.version,
            self.library.display()
        )
    }
}

/// The runtime this process loaded, if any (see the module header).
static LOADED: Mutex<Option<Arc<OrtRuntime>>> = Mutex::new(None);

impl OrtRuntime {
    /// Finds and loads the library (see the module header for the search order), or returns the
    /// one this process already loaded.
    pub fn discover(configured: Option<&Path>) -> Result<Arc<OrtRuntime>, String> {
        let mut loaded = LOADED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(rt) = loaded.as_ref() {
            return match configured {
                Some(path) if !same_file(path, &rt.library) => Err(format!(
                    "inference.ort_library {}: this process already runs {rt}; restart tracerd \
                     to switch libraries",
                    path.display()
                )),
                _ => Ok(rt.clone()),
            };
        }
        let rt = Arc::new(OrtRuntime::find_and_load(configured)?);
        *loaded = Some(rt.clone());
        Ok(rt)
    }

    fn find_and_load(configured: Option<&Path>) -> Result<OrtRuntime, String> {
        if let Some(path) = configured {
            return OrtRuntime::load_library(path)
                .map_err(|e| format!("inference.ort_library {}: {e}", path.display()));
        }
        let candidates = candidate_libraries();
        if candidates.is_empty() {
            return Err(
                "no libonnxruntime found (set inference.ort_library or ORT_DYLIB_PATH, \
                        or pip install onnxruntime)"
                    .into(),
            );
        }
        let mut reasons = Vec::new();
        for path in candidates {
            match OrtRuntime::load_library(&path) {
                Ok(rt) => return Ok(rt),
                Err(e) => reasons.push(format!("{}: {e}", path.display())),
            }
        }
        Err(reasons.join("; "))
    }

    fn load_library(path: &Path) -> Result<OrtRuntime, String> {
        if !path.is_file() {
            return Err("no such file".into());
        }
        let builder = ort::init_from(path).map_err(|e| e.to_string())?;
        let environment = builder
            .with_name("tracerd")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(OrtRuntime {
            environment,
            library: path.to_path_buf(),
            version: version_from_build_info(ort::info())
                .or_else(|| version_from_file_name(path))
                .unwrap_or_else(|| "unknown version".into()),
        })
    }

    /// Loads a model on the GPU (`cuda`) or the CPU.
    pub fn load(&self, model: &Path, cuda: bool) -> Result<OrtModel, String> {
        let mut builder = OrtSession::builder(&self.environment).map_err(|e| e.to_string())?;
        let device = if cuda {
            if !<ep::CUDA as ep::ExecutionProvider>::is_available().unwrap_or(false) {
                return Err(format!(
                    "this onnxruntime build has no CUDA execution provider ({self})"
                ));
            }
            builder = builder
                .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| format!("CUDA execution provider failed: {e}"))?;
            "CUDAExecutionProvider"
        } else {
            "CPUExecutionProvider"
        };
        let (mut builder, options) =
            configure(builder).map_err(|e| format!("session options: {e}"))?;
        let session = builder
            .commit_from_file(model)
            .map_err(|e| format!("cannot load {}: {e}", model.display()))?;
        Ok(OrtModel {
            session,
            model: model.to_path_buf(),
            provenance: Provenance {
                engine: if cuda {
                    Engine::OrtCuda
                } else {
                    Engine::OrtCpu
                },
                device: device.into(),
                runtime: format!("{self}; {options}"),
            },
        })
    }
}

/// The session options, set on purpose (measured with `benches/ort_options.py` on the shipped
/// networks at the batch shapes tracerd runs, 2 CPUs, onnxruntime 1.31.1; docs/models.md):
/// sequential execution (parallel mode was 2.2–2.4× slower: the graphs are chains), intra-op
/// threads = the CPUs available (one thread was 1.8× slower), every graph optimisation (level
/// "all"; basic and extended were within noise or slower), memory pattern and CPU arena on
/// (arena off was 3–8 % slower). Returns the builder and a one-line description for the log.
fn configure(
    builder: ort::session::builder::SessionBuilder,
) -> ort::Result<(ort::session::builder::SessionBuilder, String)> {
    use ort::session::builder::GraphOptimizationLevel;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let builder = builder
        .with_parallel_execution(false)?
        .with_intra_threads(threads)?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_memory_pattern(true)?;
    Ok((
        builder,
        format!("{threads} intra-op threads, sequential, all graph optimisations"),
    ))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Release builds' `ort::info()` reads like `ORT Build Info: git-branch=rel-1.31.1, …`; the PyPI
/// wheels say `git-branch=HEAD`.
fn version_from_build_info(info: &str) -> Option<String> {
    info.split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|part| part.strip_prefix("git-branch=rel-"))
        .map(str::to_string)
}

/// `libonnxruntime.so.1.31.1` → `1.31.1`.
fn version_from_file_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let version = name.strip_prefix("libonnxruntime.so.")?;
    version
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .then(|| version.to_string())
}

/// Library files to try, in the documented order, without duplicates.
fn candidate_libraries() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if p.is_file() && !out.contains(&p) {
            out.push(p);
        }
    };
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        push(PathBuf::from(p));
    }
    let mut package_dirs = vec![PathBuf::from("/usr/lib/tracerd")];
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        package_dirs.insert(0, exe_dir.join("../lib/tracerd"));
    }
    for dir in package_dirs {
        for lib in libraries_in(&dir) {
            push(lib);
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        roots.push(PathBuf::from(venv).join("lib"));
    }
    roots.push(PathBuf::from(".venv/lib"));
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home).join(".local/lib"));
    }
    roots.push(PathBuf::from("/usr/local/lib"));
    roots.push(PathBuf::from("/usr/lib"));
    for root in roots {
        for python in sorted_entries(&root, |n| n.starts_with("python3")) {
            for packages in ["site-packages", "dist-packages"] {
                for lib in libraries_in(&python.join(packages).join("onnxruntime/capi")) {
                    push(lib);
                }
            }
        }
    }
    out
}

/// `libonnxruntime.so*` files in `dir`, the most specific version first.
fn libraries_in(dir: &Path) -> Vec<PathBuf> {
    let mut libs = sorted_entries(dir, |n| n.starts_with("libonnxruntime.so"));
    libs.reverse();
    libs
}

fn sorted_entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(&keep))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// A model loaded in ONNX Runtime.
pub struct OrtModel {
    session: OrtSession,
    model: PathBuf,
    provenance: Provenance,
}

impl Session for OrtModel {
    fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// On the CPU one item: onnxruntime spreads each operator over its intra-op threads, so a
    /// larger batch is no faster and its arena keeps the larger activations (L2SNet 0.5.1 on the
    /// clinical benchmark study: tracerd's peak 811 MiB at 4 coronal slices and 4 windows per
    /// call, 663 MiB at one window, 530 MiB at one of each). On CUDA 4, the batch tracerd has always
    /// used there (a GPU wants batches; not measured, no GPU here).
    fn items_per_call(&self) -> usize {
        if self.provenance.engine == Engine::OrtCuda {
            4
        } else {
            1
        }
    }

    fn run(&mut self, inputs: &[ArrayViewD<'_, f32>]) -> Result<Vec<ArrayD<f32>>, InferError> {
        let fail = |message: String| InferError {
            engine: self.provenance.engine,
            model: self.model.clone(),
            message,
        };
        let mut values = Vec::with_capacity(inputs.len());
        for (outlet, input) in self.session.inputs().iter().zip(inputs) {
            let tensor =
                TensorRef::from_array_view(input.view()).map_err(|e| fail(e.to_string()))?;
            values.push((
                std::borrow::Cow::Owned(outlet.name().to_string()),
                ort::session::SessionInputValue::from(tensor),
            ));
        }
        if values.len() != inputs.len() || inputs.len() != self.session.inputs().len() {
            return Err(fail(format!(
                "model takes {} input(s), given {}",
                self.session.inputs().len(),
                inputs.len()
            )));
        }
        let outputs = self.session.run(values).map_err(|e| fail(e.to_string()))?;
        outputs
            .iter()
            .map(|(_, value)| {
                value
                    .try_extract_array::<f32>()
                    .map(|a| a.to_owned())
                    .map_err(|e| fail(e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_the_build_info() {
        let info = "ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc, build type=Release";
        assert_eq!(version_from_build_info(info).as_deref(), Some("1.31.1"));
        assert_eq!(version_from_build_info("git-branch=HEAD, x"), None);
        let lib = Path::new("/x/capi/libonnxruntime.so.1.31.1");
        assert_eq!(version_from_file_name(lib).as_deref(), Some("1.31.1"));
        assert_eq!(
            version_from_file_name(Path::new("/x/libonnxruntime.so")),
            None
        );
    }

    #[test]
    fn a_configured_library_that_does_not_exist_is_a_reason_not_a_panic() {
        let err = OrtRuntime::discover(Some(Path::new("/nonexistent/libonnxruntime.so")))
            .err()
            .expect("must fail");
        assert!(
            err.contains("/nonexistent/libonnxruntime.so: no such file"),
            "{err}"
        );
    }
}
