//! Helpers shared by the integration tests: the Python oracle interpreter and small file tools.
#![allow(dead_code)] // each test binary uses a different subset

pub mod daemon;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python interpreter that has the oracle packages: `TRACERD_PYTHON`, else the repo's
/// `.venv` (made by `.ci/run`), else `python3` on the PATH.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACERD_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// Runs `tests/oracle/<script>` with `args`; panics with the script's stderr on failure, and
/// with set-up instructions when the interpreter or its packages are missing.
pub fn run_oracle(script: &str, args: &[&Path]) {
    let py = python();
    let out = Command::new(&py)
        .arg(repo_root().join("tests/oracle").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; run `bash .ci/run` once or set TRACERD_PYTHON",
                py.display()
            )
        });
    if !out.status.success() {
        panic!(
            "oracle {script} failed ({}); run `bash .ci/run` once to create .venv with the \
             oracle packages, or set TRACERD_PYTHON.\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Reads a little-endian float32 file written by an oracle.
pub fn read_f32_file(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Reads a JSON file written by an oracle.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A 4×4 matrix from a JSON list of rows.
pub fn matrix4(value: &serde_json::Value) -> nalgebra::Matrix4<f64> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(value.clone()).expect("4x4 list");
    nalgebra::Matrix4::from_fn(|r, c| rows[r][c])
}

/// The ONNX Runtime library the tests use: `ORT_DYLIB_PATH`, else the one pip installed into the
/// repo's `.venv` (by `.ci/run`). Panics with set-up instructions when there is none.
pub fn ort_library() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let lib = repo_root().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries.filter_map(Result::ok).find_map(|python| {
            let capi = python.path().join("site-packages/onnxruntime/capi");
            std::fs::read_dir(capi)
                .ok()?
                .filter_map(Result::ok)
                .find_map(|f| {
                    let name = f.file_name().into_string().ok()?;
                    name.starts_with("libonnxruntime.so.").then(|| f.path())
                })
        })
    });
    found.unwrap_or_else(|| {
        panic!("no libonnxruntime: run `bash .ci/run` once (it pip-installs onnxruntime into .venv) or set ORT_DYLIB_PATH")
    })
}

/// Every file below `root` (any depth), sorted.
pub fn files_below(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The PET (Modality PT) DICOM files below `root`, sorted.
pub fn pet_files(root: &Path) -> Vec<PathBuf> {
    files_below(root)
        .into_iter()
        .filter(|p| {
            dicom_object::open_file(p).is_ok_and(|o| {
                o.element(dicom_dictionary_std::tags::MODALITY)
                    .is_ok_and(|e| e.to_str().is_ok_and(|m| m == "PT"))
            })
        })
        .collect()
}

/// Rewrites the DICOM file `path` after `edit` (same SOP class and instance in the meta).
pub fn rewrite_dicom(path: &Path, edit: impl FnOnce(&mut dicom_object::InMemDicomObject)) {
    let file = dicom_object::open_file(path).unwrap();
    let meta = file.meta().clone();
    let mut obj = file.into_inner();
    edit(&mut obj);
    let class = meta.media_storage_sop_class_uid().to_string();
    let inst = meta.media_storage_sop_instance_uid().to_string();
    tracerd::io::dicom::write::write_part10(path, obj, &class, &inst).unwrap();
}

/// Dice coefficient of two 0/1 masks of the same size (the library's, with a length check).
pub fn dice(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "masks of different sizes");
    tracerd::models::l2snet::dice(a, b)
}

/// `dciodvfy`'s report on a DICOM file (Debian dicom3tools), printed for the test log, and its
/// lines starting with `Error` or `Warning`.
pub fn dciodvfy_problems(path: &Path) -> (String, Vec<String>) {
    let o = Command::new("dciodvfy")
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run dciodvfy ({e}); install dicom3tools or run `bash .ci/run`")
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    println!("dciodvfy {}:\n{report}", path.display());
    let problems = report
        .lines()
        .filter(|l| l.starts_with("Error") || l.starts_with("Warning"))
        .map(str::to_string)
        .collect();
    (report, problems)
}
