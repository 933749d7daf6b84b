//! Burst: N clinical-geometry studies (default 10) dropped into the inbox of one `tracerd run`
//! at once, with the daemon's default queues (`ingest_workers = 2`, `queue_length = 2`) on
//! ort-cpu. Reports studies per hour, the daemon's peak memory, and how much of ingest the
//! stages hid behind inference.
//!
//! Each study's `result.json` says how long its ingest, inference and publish took. Run one
//! after another, the studies would take the sum of all three; the stages overlap, so the burst
//! takes less. The difference, as a share of the summed ingest time, is the ingest hidden behind
//! inference (100 % when only the first study's ingest shows).
//!
//! `cargo bench --bench burst [-- N]`; the binary is `target/release/tracerd`. About half a
//! minute per study on a 2-core machine (docs/benchmarks.md).

mod common;
#[path = "../tests/common/daemon.rs"]
mod daemon;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use daemon::{NotifySocket, Settings, Spool, signal, wait_exit, wait_until};
use tracerd::synth::{Size, SynthOptions, generate, write_nifti};

/// Held-out clinical seeds (never trained on); the burst cycles through them.
const SEEDS: [u64; 5] = [100000, 100001, 100002, 100003, 100004];

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let settings = Settings {
        ingest_workers: 2,
        queue_length: 2,
        engines: r#"["ort-cpu"]"#,
        stall_seconds: 3600.0,
        ..Settings::default()
    };
    let spool = Spool::new(&settings);
    for seed in SEEDS {
        let study = generate(&SynthOptions {
            seed,
            size: Size::Clinical,
        });
        write_nifti(&study, &spool.dir("templates").join(seed.to_string())).unwrap();
    }
    let notify = NotifySocket::new();
    let mut child = spool.spawn(&[("NOTIFY_SOCKET", &notify.path)]);
    let pid = child.id().to_string();
    notify.wait_for("READY=1", Duration::from_secs(120));

    let staged: Vec<String> = (0..n).map(|i| format!("burst-{i:03}")).collect();
    for (i, name) in staged.iter().enumerate() {
        let template = spool
            .dir("templates")
            .join(SEEDS[i % SEEDS.len()].to_string());
        daemon::copy_tree(&template, &spool.dir("staging").join(name));
    }
    let t = Instant::now();
    for name in &staged {
        fs::rename(
            spool.dir("staging").join(name),
            spool.dir("inbox").join(name),
        )
        .unwrap();
    }
    wait_until(&spool, Duration::from_secs(4 * 60 * 60), "burst", || {
        spool.entries("archive").len() + spool.entries("failed").len() == n
    });
    let wall = t.elapsed().as_secs_f64();
    let peak_mib = common::peak_rss_mib_of(&pid);
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(120)), Some(0));
    assert!(spool.entries("failed").is_empty(), "{}", spool.log());

    let stages = StageSums::of(&spool.dir("outbox"), &staged);
    report(n, wall, peak_mib, &stages);
}

/// Stage times summed over the burst's studies, seconds, from their `result.json`.
#[derive(Default)]
struct StageSums {
    ingest: f64,
    inference: f64,
    publish: f64,
}

impl StageSums {
    fn of(outbox: &Path, names: &[String]) -> StageSums {
        let mut sums = StageSums::default();
        for name in names {
            let text = fs::read_to_string(outbox.join(name).join("result.json")).unwrap();
            let result: serde_json::Value = serde_json::from_str(&text).unwrap();
            let timings = result["timings_ms"].as_object().expect("timings_ms");
            for (stage, ms) in timings {
                let s = ms.as_f64().unwrap_or(0.0) / 1e3;
                match stage.as_str() {
                    "ingest" => sums.ingest += s,
                    "write" => sums.publish += s,
                    _ => sums.inference += s,
                }
            }
        }
        sums
    }
}

fn report(n: usize, wall: f64, peak_mib: f64, s: &StageSums) {
    let serial = s.ingest + s.inference + s.publish;
    let hidden = ((serial - wall) / s.ingest).clamp(0.0, 1.0);
    println!(
        "burst: {n} clinical studies dropped at once (ingest_workers 2, queue_length 2, ort-cpu)"
    );
    println!(
        "  wall {wall:.1} s: {:.1} s/study, {:.0} studies/hour; daemon peak RSS {peak_mib:.0} MiB",
        wall / n as f64,
        n as f64 * 3600.0 / wall
    );
    println!(
        "  summed over the studies: ingest {:.1} s, inference {:.1} s, publish {:.1} s \
         (one after another: {serial:.1} s)",
        s.ingest, s.inference, s.publish
    );
    println!(
        "  ingest hidden behind inference: {:.0} % ((serial - wall) / ingest)",
        hidden * 100.0
    );
}
