//! A configured ONNX Runtime library that is missing or not a library sends every model to tract,
//! with the reason. Its own test binary: ort loads one library per process, and this must run in
//! a process where none is loaded yet.

mod common;

use std::path::Path;

use tracerd::config::{Engine, Inference};
use tracerd::infer::Engines;

#[test]
fn a_bogus_ort_library_falls_back_to_tract_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    common::run_oracle("onnx_oracle.py", &[Path::new("make"), dir.path()]);
    let garbage = dir.path().join("libonnxruntime.so");
    std::fs::write(&garbage, b"this is not a shared object").unwrap();
    for (library, needle) in [
        (dir.path().join("missing.so"), "no such file"),
        (garbage.clone(), "failed to load"),
    ] {
        let engines = Engines::new(&Inference {
            engines: vec![Engine::OrtCuda, Engine::OrtCpu, Engine::Tract],
            ort_library: Some(library.clone()),
            ..Inference::default()
        });
        let why = engines
            .ort_runtime()
            .err()
            .expect("ort must be unavailable");
        assert!(
            why.contains(needle) && why.contains(&*library.to_string_lossy()),
            "{why}"
        );
        let session = engines.load(&dir.path().join("head.onnx")).unwrap();
        assert_eq!(session.provenance().engine, Engine::Tract);
        assert_eq!(session.provenance().runtime, "tract 0.23.9");
        // Not a model at all: every engine's reason is listed, on one line.
        let err = engines
            .load(&garbage)
            .err()
            .expect("not a model")
            .to_string();
        for engine in ["ort-cuda: ", "ort-cpu: ", "tract: "] {
            assert!(err.contains(engine), "{err}");
        }
        assert!(!err.contains('\n'), "{err}");
    }
}
