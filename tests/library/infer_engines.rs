//! The inference engines against onnxruntime's Python API as the oracle: tract and ort (CPU)
//! reproduce its outputs on small models built from the operators tracerd's models use, with
//! fixed batch, several batch sizes and free spatial sizes.

use crate::common;

use std::path::Path;

use common::{ort_library, read_f32_file, read_json, run_oracle};
use ndarray::{ArrayD, IxDyn};
use tracerd::config::{Engine, Inference};
use tracerd::infer::Engines;

/// tract accumulates in a different order than onnxruntime; 1e-4 absolute on outputs in [0, 1]
/// (sigmoid) is the tolerance the design card states for ort vs tract.
const TRACT_TOL: f32 = 1e-4;
/// The same library as the oracle, through the C API: only threading may reorder sums.
const ORT_TOL: f32 = 1e-5;

fn engines(order: &[Engine]) -> Engines {
    Engines::new(&Inference {
        engines: order.to_vec(),
        ort_library: Some(ort_library()),
        ..Inference::default()
    })
}

fn cases(dir: &Path) -> Vec<(String, serde_json::Value)> {
    run_oracle("onnx_oracle.py", &[Path::new("make"), dir]);
    let mut cases: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let case = name.strip_suffix(".json")?.to_string();
            let info = read_json(&dir.join(&name));
            Some((case, info))
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(cases.len(), 5, "oracle cases: {cases:?}");
    cases
}

fn check_engine(order: &[Engine], expected_engine: Engine, tol: f32) {
    let dir = tempfile::tempdir().unwrap();
    let engines = engines(order);
    for (case, info) in cases(dir.path()) {
        let shape = |k: &str| -> Vec<usize> { serde_json::from_value(info[k].clone()).unwrap() };
        let input = ArrayD::from_shape_vec(
            IxDyn(&shape("input_shape")),
            read_f32_file(&dir.path().join(format!("{case}.in.f32"))),
        )
        .unwrap();
        let expected = read_f32_file(&dir.path().join(format!("{case}.out.f32")));
        let model = dir.path().join(info["model"].as_str().unwrap());
        let mut session = engines
            .load(&model)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(session.provenance().engine, expected_engine, "{case}");
        // Twice: the second run exercises cached plans / warm sessions.
        for _ in 0..2 {
            let out = session
                .run(&[input.view()])
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].shape(), &shape("output_shape")[..], "{case}");
            let worst = out[0]
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= tol,
                "{case} on {expected_engine}: max |diff| {worst} > {tol}"
            );
        }
    }
}

#[test]
fn tract_reproduces_onnxruntime() {
    check_engine(&[Engine::Tract], Engine::Tract, TRACT_TOL);
}

#[test]
fn ort_cpu_reproduces_onnxruntime() {
    check_engine(&[Engine::OrtCpu], Engine::OrtCpu, ORT_TOL);
}

/// On a machine without a GPU build of onnxruntime, `ort-cuda` must be skipped with its reason
/// and the model must land on the next engine, never run on the CPU under the CUDA label.
#[test]
fn cuda_without_a_gpu_build_falls_to_the_next_engine_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    cases(dir.path());
    let engines = engines(&[Engine::OrtCuda, Engine::OrtCpu]);
    let session = engines.load(&dir.path().join("head.onnx")).unwrap();
    assert_eq!(session.provenance().engine, Engine::OrtCpu);
    assert_eq!(session.provenance().device, "CPUExecutionProvider");
    let only_cuda = self::engines(&[Engine::OrtCuda]);
    let err = only_cuda
        .load(&dir.path().join("head.onnx"))
        .err()
        .expect("no CUDA here");
    assert!(err.to_string().contains("ort-cuda: "), "{err}");
}

#[test]
fn a_broken_model_file_is_a_load_error_from_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"not a protobuf").unwrap();
    let engines = engines(&[Engine::OrtCpu, Engine::Tract]);
    let err = engines.load(&bad).err().expect("must fail").to_string();
    assert!(
        err.contains("ort-cpu: cannot load") && err.contains("tract: cannot load"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn wrong_input_shape_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    cases(dir.path());
    for order in [[Engine::Tract], [Engine::OrtCpu]] {
        let mut s = engines(&order)
            .load(&dir.path().join("unet3d.onnx"))
            .unwrap();
        let wrong = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 8, 8, 8]));
        let err = s.run(&[wrong.view()]).expect_err("must fail");
        assert_eq!(err.engine, order[0]);
    }
}
