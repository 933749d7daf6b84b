//! Benchmark: one clinical-size synthetic study end to end through `tracerd process`'s code path
//! (ingest, both models, publish) on ort-cpu (and on ort-cpu with every body window of seg3d,
//! `seg3d_windows = "body"`, the whole-volume result) and on tract, and the Python peer
//! (`benches/peer/peer.py`: the same job in nibabel, numpy, scipy, onnxruntime, on the fp32 ONNX
//! files, where tracerd's default precision runs loc2d, seg3d and 2Be3-Net [WS] in INT8 on
//! ort-cpu) on the same study in the same run. Wall time, peak RSS and per-stage times; the ratios
//! the inference issue sets goals for; and the seg3d stage's achieved rate against the dense
//! matrix-multiply rate onnxruntime reaches on this machine in the same run at the precision the
//! stage ran (`benches/peer/flops.py`: fp32, or u8 × s8 for an INT8 seg3d).
//!
//! One command: `bash benches/pipeline.sh` (sets up the Python peer's packages in `.venv`, then
//! runs `cargo bench --bench pipeline`). Arguments after `--`: `small` for a quick run,
//! `no-tract` to skip the slowest engine. Each run is a child process of this binary so that its
//! peak resident memory (VmHWM) is its own.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tracerd::config::Seg3dWindows;
use tracerd::config::{Config, Engine};
use tracerd::models::card::ModelCard;
use tracerd::models::l2snet::Params;
use tracerd::process::{self, Processor};
use tracerd::synth::{self, Size, SynthOptions};

/// The study: a held-out seed (never trained on) with two lesions.
const SEED: u64 = 100000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        child(&args[1], Path::new(&args[2]));
        return;
    }
    let size = if args.iter().any(|a| a == "small") {
        Size::Small
    } else {
        Size::Clinical
    };
    let dir = std::env::temp_dir().join(format!("tracerd-bench-pipeline-{}", std::process::id()));
    let study = dir.join("study");
    let t = Instant::now();
    let generated = synth::generate(&SynthOptions { seed: SEED, size });
    synth::write_nifti(&generated, &study).expect("write the study");
    let shape = generated.pet.shape();
    drop(generated);
    println!(
        "pipeline benchmark: synthetic study seed {SEED}, {size}, PET {}×{}×{} (written in \
         {:.1} s); {} CPU(s); ONNX Runtime {}",
        shape[0],
        shape[1],
        shape[2],
        t.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        ort_library().display()
    );
    // ort-cpu-body: ort-cpu running every body window of seg3d (the whole-volume result the
    // cued windows are measured against).
    let mut engines = vec!["ort-cpu", "ort-cpu-body"];
    if !args.iter().any(|a| a == "no-tract") {
        engines.push("tract");
    }
    let mut rows = Vec::new();
    for engine in engines {
        let exe = std::env::current_exe().expect("own path");
        let out = Command::new(exe)
            .args(["child", engine])
            .arg(&dir)
            .env("RUST_LOG", "warn")
            .output()
            .expect("spawn child");
        if !out.status.success() {
            eprintln!("{engine} failed: {}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
        let row: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("child prints JSON");
        rows.push((format!("tracerd {engine}"), row));
    }
    let peer = Command::new(python())
        .arg(repo().join("benches/peer/peer.py"))
        .arg(&study)
        .arg(repo().join("models"))
        .arg(dir.join("peer-out"))
        .output()
        .expect("spawn the Python peer (run benches/pipeline.sh to set up .venv)");
    if !peer.status.success() {
        eprintln!(
            "Python peer failed (run benches/pipeline.sh to set up .venv): {}",
            String::from_utf8_lossy(&peer.stderr)
        );
        std::process::exit(1);
    }
    let peer: serde_json::Value = serde_json::from_slice(&peer.stdout).expect("peer JSON");
    rows.push(("python peer (ort-cpu)".into(), peer));

    println!(
        "\n{:<24} {:>8} {:>10} {:>8}  stages (ms)",
        "run", "wall s", "RSS MiB", "lesions"
    );
    for (name, r) in &rows {
        let stages = r["stages_ms"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {:.0}", v.as_f64().unwrap_or(f64::NAN)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        println!(
            "{name:<24} {:>8.1} {:>10.0} {:>8}  {stages}",
            r["wall_s"].as_f64().unwrap_or(f64::NAN),
            r["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
            r["lesions"]
        );
    }
    summary(&rows);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ratios the speed issue sets goals for, and the seg3d stage's arithmetic rate.
fn summary(rows: &[(String, serde_json::Value)]) {
    let get = |name: &str, key: &str| {
        rows.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, r)| r[key].as_f64())
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "n/a".into(),
    };
    let (ort, peer) = ("tracerd ort-cpu", "python peer (ort-cpu)");
    println!(
        "\ntracerd ort-cpu / peer: wall {} (goal <= 0.2), peak RSS {} (goal <= 0.5)",
        ratio(get(ort, "wall_s"), get(peer, "wall_s")),
        ratio(get(ort, "peak_rss_mib"), get(peer, "peak_rss_mib"))
    );
    println!(
        "tract / ort-cpu: wall {} (goal <= 2)",
        ratio(get("tracerd tract", "wall_s"), get(ort, "wall_s"))
    );
    let flops = seg3d_flops();
    let per_window = flops["seg3d_gflop_per_window"].as_f64().unwrap_or(f64::NAN);
    let matmul = |precision: &str| {
        let key = if precision == "int8" {
            "matmul_int8_gops"
        } else {
            "matmul_gflops"
        };
        flops[key].as_f64().unwrap_or(f64::NAN)
    };
    println!(
        "seg3d: {per_window:.2} GFLOP per window (Conv + ConvTranspose); onnxruntime dense \
         matmul 2048³ on this machine: fp32 {:.1} GFLOP/s, int8 (u8 x s8) {:.1} GOP/s",
        matmul("fp32"),
        matmul("int8")
    );
    for (name, r) in rows {
        let (Some(windows), Some(ms)) = (
            r["windows"].as_f64(),
            r["stages_ms"]["l2snet_seg3d"].as_f64(),
        ) else {
            continue;
        };
        let precision = r["seg3d_precision"].as_str().unwrap_or("fp32");
        let rate = windows * per_window / (ms / 1e3);
        println!(
            "  {name:<24} {windows:>5} windows in {:>6.1} s: {rate:>6.1} G(FL)OP/s, {:.0} % of the \
             {precision} matmul (goal >= 50 %)",
            ms / 1e3,
            100.0 * rate / matmul(precision)
        );
    }
}

/// `benches/peer/flops.py` on the shipped seg3d at the card's patch.
fn seg3d_flops() -> serde_json::Value {
    let params = l2snet_params();
    let file = repo().join("models/l2snet/seg3d.fp32.onnx");
    let out = Command::new(python())
        .arg(repo().join("benches/peer/flops.py"))
        .arg(&file)
        .args(params.patch_zyx.map(|n| n.to_string()))
        .output()
        .expect("spawn flops.py (run benches/pipeline.sh to set up .venv)");
    assert!(
        out.status.success(),
        "flops.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("flops.py prints JSON")
}

/// The shipped L2SNet card's inference parameters.
fn l2snet_params() -> Params {
    let card = ModelCard::load(&repo().join("models/l2snet")).expect("l2snet card");
    Params::from_card(&card, None, Seg3dWindows::Cued).expect("l2snet parameters")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    std::env::var_os("TRACERD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

/// `ORT_DYLIB_PATH`, else the wheel in `.venv`.
fn ort_library() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let lib = repo().join(".venv/lib");
    std::fs::read_dir(&lib)
        .ok()
        .and_then(|d| {
            d.filter_map(Result::ok).find_map(|py| {
                let p = py
                    .path()
                    .join("site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1");
                p.exists().then_some(p)
            })
        })
        .unwrap_or_else(|| PathBuf::from("libonnxruntime.so"))
}

/// One engine, in its own process: load the models, process the study, report as JSON.
fn child(engine: &str, dir: &Path) {
    let t = Instant::now();
    let mut config = Config::default();
    config.paths.models = repo().join("models");
    config.inference.engines = vec![match engine {
        "ort-cpu" | "ort-cpu-body" => Engine::OrtCpu,
        "tract" => Engine::Tract,
        other => panic!("unknown engine {other}"),
    }];
    config.inference.ort_library = Some(ort_library());
    if engine == "ort-cpu-body" {
        config.inference.seg3d_windows = Seg3dWindows::Body;
    }
    let mut processor = Processor::new(&config).expect("models load");
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let outbox = dir.join(format!("outbox-{engine}"));
    // `Processor::process`, step by step, to keep the seg3d window count.
    let ingest = Instant::now();
    let study = tracerd::study::load(&dir.join("study"), "study", &config.limits, &config.scope)
        .expect("the study loads");
    let (study, ct) = process::prepare(study, processor.l2snet_params());
    let ingest_ms = ingest.elapsed().as_secs_f64() * 1e3;
    let findings = processor.analyse(&study, ct).expect("the models run");
    let windows = findings.lesions.as_ref().map(|l| l.seg3d_windows);
    let info = processor.model_info();
    let seg3d_precision = info
        .uses
        .iter()
        .find(|u| u.role == "seg3d")
        .map(|u| u.precision.clone());
    let published =
        process::publish(&study, findings, &info, &outbox, ingest_ms, &[]).expect("publish");
    let r = &published.result;
    let mut stages = serde_json::to_value(&r.timings_ms).expect("timings");
    stages["load_models"] = load_ms.into();
    let lesions = match &r.lesions {
        tracerd::outbox::OrAbsent::Present(l) => l.count,
        tracerd::outbox::OrAbsent::Absent { .. } => 0,
    };
    let report = serde_json::json!({
        "wall_s": t.elapsed().as_secs_f64(),
        "peak_rss_mib": common::peak_rss_mib(),
        "stages_ms": stages,
        "lesions": lesions,
        "engine": r.backend.engine,
        "windows": windows.map(|w| w.run),
        "body_windows": windows.map(|w| w.body),
        "seg3d_precision": seg3d_precision,
    });
    println!("{report}");
}
