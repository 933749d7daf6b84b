//! Load: N small studies (default 50) dropped into the inbox at once, all published by one
//! `tracerd run`; wall time, throughput, and the daemon's peak memory against a bound set by
//! its queue sizes.
//!
//! At most `ingest_workers + queue_length + 3` studies are in memory at once (one per ingest
//! worker, the loaded queue, the one in inference, the outcome channel of one, the one being
//! published); every other claimed study waits on disk in `work/`. So the peak with that many
//! studies dropped at once — queues full, every stage busy at the same time — is the bound:
//! dropping N more must not raise the peak beyond it (10 % allowance for allocator variance).
//! A daemon that held queued studies in memory, or leaked per study, would blow through it.
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

    let notify = NotifySocket::new();
    let mut child = spool.spawn(&[("NOTIFY_SOCKET", &notify.path)]);
    let pid = child.id().to_string();
    notify.wait_for("READY=1", Duration::from_secs(120));
    let ready_mib = common::peak_rss_mib_of(&pid);

    let drop_study = |name: &str, seed: u64| {
        let staged = spool.dir("staging").join(name);
        daemon::copy_tree(&spool.dir("templates").join(seed.to_string()), &staged);
        staged
    };
    // Drops `count` studies at once and waits for them; returns the wall time.
    let mut dropped = 0;
    let mut drop_batch = |prefix: &str, count: usize| {
        let staged: Vec<_> = (0..count)
            .map(|i| {
                let name = format!("{prefix}-{i:03}");
                let dir = drop_study(&name, seeds[i % seeds.len()]);
                (name, dir)
            })
            .collect();
        let t = Instant::now();
        for (name, dir) in &staged {
            fs::rename(dir, spool.dir("inbox").join(name)).unwrap();
        }
        dropped += count;
        wait_until(&spool, Duration::from_secs(60 * 60), prefix, || {
            spool.entries("archive").len() + spool.entries("failed").len() == dropped
        });
        t.elapsed().as_secs_f64()
    };

    let one_study_s = drop_batch("one", 1);
    let one_mib = common::peak_rss_mib_of(&pid);
    let in_memory = settings.ingest_workers + settings.queue_length + 3;
    drop_batch("full", in_memory);
    let full_mib = common::peak_rss_mib_of(&pid);
    let wall = drop_batch("load", n);
    let peak_mib = common::peak_rss_mib_of(&pid);
    let rss_mib = common::rss_mib_of(&pid);
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), Some(0));

    let failed = spool.entries("failed").len();
    let published = spool.entries("outbox").len();
    let bound = full_mib * 1.10;
    println!(
        "daemon_load: {n} small studies dropped at once (ingest_workers {}, queue_length {}, \
         so at most {in_memory} studies in memory)",
        settings.ingest_workers, settings.queue_length
    );
    println!("  one study alone:  {one_study_s:.1} s from drop to archived (settle 1 s)");
    println!(
        "  {n} studies:       {wall:.1} s, {:.2} s/study, {:.1} studies/min; {failed} failed",
        wall / n as f64,
        n as f64 * 60.0 / wall
    );
    println!(
        "  peak RSS:         ready {ready_mib:.0} MiB; one study {one_mib:.0} MiB; {in_memory} at once \
         {full_mib:.0} MiB; {n} at once {peak_mib:.0} MiB (RSS at the end {rss_mib:.0} MiB)"
    );
    println!(
        "  bound:            1.10 × {full_mib:.0} = {bound:.0} MiB → {}",
        if peak_mib <= bound {
            "within"
        } else {
            "EXCEEDED"
        }
    );
    assert_eq!(failed, 0, "{}", spool.log());
    assert_eq!(published, dropped_total(n, in_memory));
    assert!(
        peak_mib <= bound,
        "peak {peak_mib:.0} MiB above the bound {bound:.0} MiB"
    );
}

/// Studies published in all: one, a full set of queues, then the load.
fn dropped_total(n: usize, in_memory: usize) -> usize {
    1 + in_memory + n
}
