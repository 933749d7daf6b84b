//! Load: N small studies (default 50) dropped into the inbox at once, all published by one
//! `tracerd run`; wall time, throughput, and the daemon's peak memory against a bound derived
//! from its queue sizes.
//!
//! The bound: the peak after processing one study alone (models, engine arenas, one study's
//! working set) plus, for every study that the queues allow in memory at once
//! (`ingest_workers + queue_length + 1` besides the one in inference), the size of a loaded
//! study (PET + CT as float32, and the CT resampled to the PET grid) twice over. If queued
//! studies leaked or piled up in memory, 50 of them would blow through it.
//!
//! `cargo bench --bench daemon_load [-- N]`; the binary is `target/release/tracerd`.

mod common;
#[path = "../tests/common/daemon.rs"]
mod daemon;

use std::fs;
use std::time::{Duration, Instant};

use daemon::{NotifySocket, Settings, Spool, signal, wait_exit, wait_until, write_study};

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let settings = Settings {
        ingest_workers: 2,
        queue_length: 2,
        ..Settings::default()
    };
    let spool = Spool::new(&settings);
    let seeds = [61u64, 62, 63, 64, 65];
    for seed in seeds {
        write_study(&spool.dir("templates").join(seed.to_string()), seed);
    }
    let study_mib = {
        let t = spool.dir("templates").join("61");
        let pet = tracerd::io::nifti::read_f32(&t.join("SUV.nii.gz")).unwrap();
        let ct = tracerd::io::nifti::read_f32(&t.join("CT.nii.gz")).unwrap();
        (pet.data().len() * 2 + ct.data().len()) as f64 * 4.0 / (1024.0 * 1024.0)
    };

    let notify = NotifySocket::new();
    let mut child = spool.spawn(&[("NOTIFY_SOCKET", &notify.path)]);
    let pid = child.id().to_string();
    notify.wait_for("READY=1", Duration::from_secs(120));
    let ready_mib = common::peak_rss_mib_of(&pid);

    // One study alone: the working set of a single study.
    let drop_study = |name: &str, seed: u64| {
        let staged = spool.dir("staging").join(name);
        daemon::copy_tree(&spool.dir("templates").join(seed.to_string()), &staged);
        staged
    };
    let first = drop_study("warm-up", seeds[0]);
    let t = Instant::now();
    fs::rename(&first, spool.dir("inbox").join("warm-up")).unwrap();
    wait_until(
        &spool,
        Duration::from_secs(300),
        "warm-up published",
        || spool.entries("archive").len() == 1,
    );
    let one_study_s = t.elapsed().as_secs_f64();
    let one_mib = common::peak_rss_mib_of(&pid);

    // N at once.
    let staged: Vec<_> = (0..n)
        .map(|i| {
            (
                format!("load-{i:03}"),
                drop_study(&format!("load-{i:03}"), seeds[i % seeds.len()]),
            )
        })
        .collect();
    let t = Instant::now();
    for (name, dir) in &staged {
        fs::rename(dir, spool.dir("inbox").join(name)).unwrap();
    }
    wait_until(
        &spool,
        Duration::from_secs(60 * 60),
        "all published",
        || spool.entries("archive").len() + spool.entries("failed").len() == n + 1,
    );
    let wall = t.elapsed().as_secs_f64();
    let peak_mib = common::peak_rss_mib_of(&pid);
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), Some(0));

    let failed = spool.entries("failed").len();
    let published = spool.entries("outbox").len();
    let in_memory = settings.ingest_workers + settings.queue_length + 1;
    let bound = one_mib + in_memory as f64 * study_mib * 2.0;
    println!(
        "daemon_load: {n} small studies dropped at once (ingest_workers {}, queue_length {})",
        settings.ingest_workers, settings.queue_length
    );
    println!("  one study alone:   {one_study_s:.1} s from drop to archived (settle 1 s)");
    println!(
        "  {n} studies:        {wall:.1} s, {:.2} s/study, {:.1} studies/min; {published} published (+ warm-up), {failed} failed",
        wall / n as f64,
        n as f64 * 60.0 / wall
    );
    println!(
        "  peak RSS:          ready {ready_mib:.0} MiB, after one study {one_mib:.0} MiB, after {n} {peak_mib:.0} MiB"
    );
    println!(
        "  bound:             {one_mib:.0} + {in_memory} × 2 × {study_mib:.1} MiB = {bound:.0} MiB → {}",
        if peak_mib <= bound {
            "within"
        } else {
            "EXCEEDED"
        }
    );
    assert_eq!(failed, 0, "{}", spool.log());
    assert_eq!(published, n + 1);
    assert!(
        peak_mib <= bound,
        "peak {peak_mib:.0} MiB above the bound {bound:.0} MiB"
    );
}
