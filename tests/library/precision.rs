//! `[inference] precision`: which file of each network runs on which engine. `auto` runs the
//! INT8 files the cards mark for an engine (`auto_engines`: as shipped L2SNet's loc2d and seg3d
//! and 2Be3-Net's [WS], on ort-cpu) and fp32 everywhere else; `fp32` always runs fp32. What ran is what `result.json`
//! reports (`Models::uses`).

use crate::common;

use tracerd::config::{Engine, Inference, Precision};
use tracerd::infer::Engines;
use tracerd::models::Models;

/// (role, precision, file) of each network, as `result.json` would list them.
fn ran(engine: Engine, precision: Precision) -> Vec<(String, String, String)> {
    let inference = Inference {
        engines: vec![engine],
        ort_library: Some(common::ort_library()),
        precision,
        ..Inference::default()
    };
    let engines = Engines::new(&inference);
    let models = Models::load(&common::repo_root().join("models"), &engines, &inference).unwrap();
    models
        .uses()
        .into_iter()
        .map(|u| {
            assert_eq!(u.engine, engine.to_string());
            (u.role, u.precision, u.file)
        })
        .collect()
}

fn precisions(v: &[(String, String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(r, p, _)| (r.as_str(), p.as_str())).collect()
}

#[test]
fn auto_runs_the_int8_files_the_cards_mark_on_ort_cpu_and_fp32_elsewhere() {
    let auto_cpu = ran(Engine::OrtCpu, Precision::Auto);
    assert_eq!(
        precisions(&auto_cpu),
        [("loc2d", "int8"), ("seg3d", "int8"), ("ws", "int8")]
    );
    assert!(
        auto_cpu
            .iter()
            .all(|(_, p, f)| f.contains(&format!(".{p}.")))
    );
    let fp32_cpu = ran(Engine::OrtCpu, Precision::Fp32);
    assert_eq!(
        precisions(&fp32_cpu),
        [("loc2d", "fp32"), ("seg3d", "fp32"), ("ws", "fp32")]
    );
    let auto_tract = ran(Engine::Tract, Precision::Auto);
    assert_eq!(
        precisions(&auto_tract),
        [("loc2d", "fp32"), ("seg3d", "fp32"), ("ws", "fp32")]
    );
}
