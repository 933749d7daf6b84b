//! `tracerd run` as systemd and a scanner see it: the sd_notify protocol and the watchdog, a
//! study arriving slowly, bad studies beside good ones, and SIGHUP.

use crate::common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{
    NotifySocket, Settings, Spool, checksums, copy_tree, serial, signal, wait_exit, wait_until,
    write_study,
};

const MINUTE: Duration = Duration::from_secs(60);

fn published(spool: &Spool, key: &str) -> bool {
    spool.dir("outbox").join(key).join("result.json").is_file()
}

#[test]
fn sd_notify_ready_status_watchdog_stopping_and_a_stalled_stage_stops_the_pings() {
    let _serial = serial();
    let spool = Spool::new(&Settings {
        stall_seconds: 2.0,
        stop_timeout_seconds: 2.0,
        ..Settings::default()
    });
    let notify = NotifySocket::new();
    // Ping every 100 ms (half of WATCHDOG_USEC).
    let mut child = spool
        .command(&[("NOTIFY_SOCKET", &notify.path)])
        .env("WATCHDOG_USEC", "200000")
        .env("TRACERD_TEST_HANG", "ingest:stuck")
        .spawn()
        .unwrap();
    spool.adopt(&child);

    let before_ready = notify.wait_for("READY=1", MINUTE);
    assert!(
        !before_ready.iter().any(|l| l == "WATCHDOG=1"),
        "watchdog pinged before READY: {before_ready:?}"
    );
    let after = notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    let status = before_ready
        .iter()
        .chain(&after)
        .find(|l| l.starts_with("STATUS="))
        .expect("a STATUS= line between READY=1 and the first WATCHDOG=1")
        .clone();
    assert!(
        status.contains("idle; 0 queued, 0 done, 0 failed") && status.contains("engine "),
        "{status}"
    );
    notify.wait_for("WATCHDOG=1", Duration::from_secs(2));

    // A study on which ingest blocks for good (TRACERD_TEST_HANG, as a hung share would).
    let stuck = spool.dir("inbox").join("stuck");
    write_study(&stuck, 41);
    fs::write(stuck.join(".complete"), "").unwrap();

    // The pings go on until the stage has been busy for stall_seconds, then stop for good.
    let dropped = Instant::now();
    let mut last_ping = dropped;
    while dropped.elapsed() < Duration::from_secs(8) {
        if let Some(lines) = notify.recv(Duration::from_millis(200))
            && lines.iter().any(|l| l == "WATCHDOG=1")
        {
            last_ping = Instant::now();
        }
    }
    let quiet = last_ping.elapsed();
    assert!(
        quiet >= Duration::from_secs(4),
        "the watchdog was still pinged {:?} ago with ingest stalled\n{}",
        quiet,
        spool.log()
    );
    assert!(
        spool.log().contains("stage stalled on one study"),
        "{}",
        spool.log()
    );

    signal(&child, "TERM");
    notify.wait_for("STOPPING=1", Duration::from_secs(5));
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
    // The stuck study is still queued; its interrupted attempt was taken back.
    assert_eq!(spool.entries("work"), ["stuck"]);
    assert!(spool.entries("failed").is_empty());
}

#[test]
fn a_study_copied_slowly_is_processed_once_after_its_last_byte() {
    let _serial = serial();
    let spool = Spool::new(&Settings {
        settle_seconds: 3.0,
        rescan_seconds: 0.3,
        ..Settings::default()
    });
    let source = spool.dir("source");
    write_study(&source, 21);
    let before = checksums(&source);

    let notify = NotifySocket::new();
    let mut child = spool.spawn(&[("NOTIFY_SOCKET", &notify.path)]);
    notify.wait_for("READY=1", MINUTE);

    // Chunks of 64 KiB with pauses of 0.8 s (< settle 3 s); each chunk opens the file anew,
    // so a premature claim (the folder renamed away) would make the copy fail.
    let dest = spool.dir("inbox").join("slow");
    fs::create_dir(&dest).unwrap();
    let mut chunks = 0;
    let mut last_byte = Instant::now();
    for name in before.keys() {
        let bytes = fs::read(source.join(name)).unwrap();
        for chunk in bytes
            .chunks(64 * 1024)
            .chain(bytes.is_empty().then_some(&[][..]))
        {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dest.join(name))
                .expect("the study was claimed before its last byte");
            f.write_all(chunk).unwrap();
            drop(f);
            last_byte = Instant::now();
            chunks += 1;
            std::thread::sleep(Duration::from_millis(800));
        }
    }
    assert!(chunks >= 6, "only {chunks} chunks");

    wait_until(&spool, MINUTE, "slow study published", || {
        published(&spool, "slow")
    });
    assert!(last_byte.elapsed() >= Duration::from_secs(3));
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, MINUTE), Some(0));

    assert_eq!(spool.entries("outbox"), ["slow"]);
    assert_eq!(spool.entries("archive"), ["slow"]);
    assert!(spool.entries("failed").is_empty() && spool.entries("inbox").is_empty());
    assert_eq!(checksums(&spool.dir("archive/slow")), before);
    assert_eq!(spool.log().matches("claimed a complete study").count(), 1);
}

/// Rewrites a gzipped NIfTI-1 header's dims to make a 4D volume of the same byte count.
fn make_4d(src: &Path, dest: &Path) {
    use std::io::Read;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(src).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let dim = |raw: &[u8], i: usize| i16::from_le_bytes([raw[40 + 2 * i], raw[41 + 2 * i]]);
    assert_eq!(dim(&raw, 0), 3);
    let nz = dim(&raw, 3);
    assert_eq!(nz % 2, 0);
    for (i, v) in [(0, 4i16), (3, nz / 2), (4, 2)] {
        raw[40 + 2 * i..42 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
    let mut gz =
        flate2::write::GzEncoder::new(fs::File::create(dest).unwrap(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    gz.finish().unwrap();
}

#[test]
fn bad_studies_end_in_failed_with_a_reason_and_the_good_one_beside_them_is_published() {
    let _serial = serial();
    let spool = Spool::new(&Settings::default());
    let template = spool.dir("template");
    write_study(&template, 31);
    let inbox = spool.dir("inbox");
    let stage = spool.dir("staging");
    let study = |name: &str| {
        let dir = stage.join(name);
        copy_tree(&template, &dir);
        dir
    };

    let d = study("zero-byte");
    fs::write(d.join("SUV.nii.gz"), "").unwrap();
    let d = study("truncated");
    let bytes = fs::read(d.join("SUV.nii.gz")).unwrap();
    fs::write(d.join("SUV.nii.gz"), &bytes[..bytes.len() / 2]).unwrap();
    let d = study("four-d");
    make_4d(&template.join("SUV.nii.gz"), &d.join("SUV.nii.gz"));
    let d = study("nans");
    let mut pet = tracerd::io::nifti::read_f32(&template.join("SUV.nii.gz")).unwrap();
    pet.data_mut()[1234] = f32::NAN;
    tracerd::io::nifti::write_f32(&d.join("SUV.nii.gz"), &pet).unwrap();
    let d = study("no-pet");
    fs::remove_file(d.join("SUV.nii.gz")).unwrap();
    let d = study("unreadable");
    fs::set_permissions(d.join("SUV.nii.gz"), fs::Permissions::from_mode(0o000)).unwrap();
    study("good");

    let expected = [
        ("zero-byte", "SUV.nii.gz"),
        ("truncated", "SUV.nii.gz"),
        ("four-d", "4"),
        ("nans", "NaN"),
        ("no-pet", "no PET"),
        ("unreadable", "ermission denied"),
    ];
    let sums: Vec<_> = expected
        .iter()
        .map(|(name, _)| checksums_or_modes(&stage.join(name)))
        .collect();
    for name in expected.iter().map(|(n, _)| *n).chain(["good"]) {
        fs::rename(stage.join(name), inbox.join(name)).unwrap();
    }

    // Root reads any file, so the daemon runs as an unprivileged user when the test is root:
    // from copies of the binary and the models inside the spool, so that it does not depend on
    // the permissions of the folders above the checkout.
    let mut cmd = spool.command(&[]);
    if rustix::process::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        let binary = spool.dir("tracerd");
        fs::copy(env!("CARGO_BIN_EXE_tracerd"), &binary).unwrap();
        for model in ["l2snet", "two_be_three"] {
            copy_tree(
                &tracerd::config::default_models_dir().join(model),
                &spool.dir("models").join(model),
            );
        }
        let config = fs::read_to_string(&spool.config)
            .unwrap()
            .replace("[paths]\n", "[paths]\nmodels = \"models\"\n");
        fs::write(&spool.config, config).unwrap();
        chown_tree(spool.root.path(), 65534);
        let mut as_nobody = std::process::Command::new(&binary);
        as_nobody.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => as_nobody.env(k, v),
                None => as_nobody.env_remove(k),
            };
        }
        let log = || {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(spool.log_path())
                .unwrap()
        };
        as_nobody.stdout(log()).stderr(log()).uid(65534).gid(65534);
        cmd = as_nobody;
    }
    let mut child = cmd.spawn().unwrap();
    spool.adopt(&child);
    wait_until(&spool, 3 * MINUTE, "six failed and one published", || {
        spool.entries("failed").len() == 6 && published(&spool, "good")
    });
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, MINUTE), Some(0));

    assert_eq!(spool.entries("outbox"), ["good"]);
    assert_eq!(spool.entries("archive"), ["good"]);
    for ((name, needle), before) in expected.iter().zip(sums) {
        let dir = spool.dir("failed").join(name);
        let text = fs::read_to_string(dir.join("error.json"))
            .unwrap_or_else(|e| panic!("{name}: error.json: {e}"));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let error = json["error"].as_str().unwrap();
        assert_eq!(json["stage"], "ingest", "{name}: {text}");
        assert!(!error.contains('\n'), "{name}: not one line: {error}");
        let root = spool.root.path().to_string_lossy();
        assert!(
            !error.contains(&*root),
            "{name}: names the study's path: {error}"
        );
        assert!(error.contains(needle), "{name}: {error:?} lacks {needle:?}");
        assert!(!json["hint"].as_str().unwrap().is_empty());
        fs::remove_file(dir.join("error.json")).unwrap();
        assert_eq!(checksums_or_modes(&dir), before, "{name}: inputs changed");
        println!("{name:>10}: {error}");
    }
}

/// Checksums of readable files, and the mode of unreadable ones (the test may not read them).
fn checksums_or_modes(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in common::daemon::walk(dir) {
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        let name = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if mode & 0o444 == 0 {
            out.push((name, format!("mode {mode:o}")));
        } else if p.is_file() {
            out.push((name, common::daemon::sha256_file(&p)));
        }
    }
    out
}

fn chown_tree(dir: &Path, id: u32) {
    std::os::unix::fs::lchown(dir, Some(id), Some(id)).unwrap();
    for p in common::daemon::walk(dir) {
        std::os::unix::fs::lchown(&p, Some(id), Some(id)).unwrap();
    }
}

#[test]
fn sighup_reloads_engines_without_dropping_queued_studies() {
    let _serial = serial();
    let spool = Spool::new(&Settings {
        queue_length: 2,
        ..Settings::default()
    });
    let notify = NotifySocket::new();
    let mut child = spool.spawn(&[("NOTIFY_SOCKET", &notify.path)]);
    notify.wait_for("READY=1", MINUTE);
    for (name, seed) in [("h1", 41), ("h2", 42), ("h3", 43)] {
        let staged = spool.dir(&format!(".{name}"));
        write_study(&staged, seed);
        fs::write(staged.join(".complete"), "").unwrap();
        fs::rename(&staged, spool.dir("inbox").join(name)).unwrap();
    }
    wait_until(&spool, MINUTE, "all three claimed", || {
        spool.entries("inbox").is_empty()
    });
    // Switch to tract only while the three are queued or in flight.
    let text = fs::read_to_string(&spool.config).unwrap().replace(
        r#"engines = ["ort-cpu", "tract"]"#,
        r#"engines = ["tract"]"#,
    );
    fs::write(&spool.config, text).unwrap();
    signal(&child, "HUP");
    notify.wait_for("RELOADING=1", Duration::from_secs(5));
    wait_until(&spool, 3 * MINUTE, "three published", || {
        ["h1", "h2", "h3"].iter().all(|k| published(&spool, k))
    });
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, MINUTE), Some(0));
    assert!(spool.entries("failed").is_empty());
    assert_eq!(spool.entries("archive"), ["h1", "h2", "h3"]);
    let engine = |k: &str| {
        let r: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(spool.dir("outbox").join(k).join("result.json")).unwrap(),
        )
        .unwrap();
        r["backend"]["engine"].as_str().unwrap().to_string()
    };
    // The last study to be published ran after the reload.
    assert_eq!(engine("h3"), "tract", "{}", spool.log());
    assert!(spool.log().contains("models reloaded"), "{}", spool.log());
}

#[test]
fn below_the_free_space_floor_nothing_is_claimed_and_the_status_says_why() {
    let _serial = serial();
    let spool = Spool::new(&Settings {
        // More than any disk has.
        min_free_mib: 1 << 40,
        ..Settings::default()
    });
    let notify = NotifySocket::new();
    let mut child = spool.spawn(&[("NOTIFY_SOCKET", &notify.path)]);
    notify.wait_for("READY=1", MINUTE);
    let dir = spool.dir("inbox").join("waiting");
    write_study(&dir, 71);
    fs::write(dir.join(".complete"), "").unwrap();
    let lines = notify.wait_for_prefix("STATUS=paused: ", Duration::from_secs(10));
    let status = lines.last().unwrap();
    assert!(
        status.contains("MiB free, below the 1099511627776 MiB floor"),
        "{status}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(spool.entries("inbox"), ["waiting"]);
    assert!(spool.entries("work").is_empty());
    assert!(
        spool
            .log()
            .contains("low disk space: not claiming new studies")
    );
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, MINUTE), Some(0));
    assert_eq!(checksums(&spool.dir("inbox/waiting")).len(), 5);
}

/// Regression: sd_notify datagrams were sent from the main thread, which blocked once the
/// socket's queue was full, and then SIGTERM was never handled.
#[test]
fn a_manager_that_does_not_read_notifications_cannot_keep_the_daemon_from_stopping() {
    let _serial = serial();
    let spool = Spool::new(&Settings::default());
    let notify = NotifySocket::new();
    let mut child = spool.spawn(&[("NOTIFY_SOCKET", &notify.path)]);
    notify.wait_for("READY=1", MINUTE);
    // Each SIGHUP sends RELOADING=1 and READY=1; nobody reads them.
    for _ in 0..30 {
        signal(&child, "HUP");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), Some(0));
    assert!(spool.log().contains("stopped"), "{}", spool.log());
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Issue 16, row 4: an idle daemon with an empty inbox spun a whole core (the supervisor kept
/// selecting on the scanner's disconnected channel). Over 5 s idle it now uses a few ticks; the
/// bound (a tenth of a core) is far from both.
#[test]
fn an_idle_daemon_uses_no_cpu() {
    let _serial = serial();
    let spool = Spool::new(&Settings::default());
    let notify = NotifySocket::new();
    let mut child = spool
        .command(&[("NOTIFY_SOCKET", &notify.path)])
        .spawn()
        .unwrap();
    spool.adopt(&child);
    notify.wait_for("READY=1", MINUTE);
    // Let start-up (model loading, the first scan) finish.
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_ticks(child.id());
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let used = cpu_ticks(child.id()) - before;
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let share = used as f64 / ticks_per_s / started.elapsed().as_secs_f64();
    signal(&child, "TERM");
    wait_exit(&mut child, MINUTE);
    assert!(
        share < 0.1,
        "idle daemon used {:.0} % of a core",
        share * 100.0
    );
}

/// Issue 16 row 1: a panic while a study is being worked on fails that study alone (the place
/// in the log, never the message, which can quote input), and a stage thread that ends anyway
/// ends the daemon so that systemd restarts it. Panics are injected with `TRACERD_TEST_PANIC`,
/// which only debug builds read.
#[test]
fn a_panic_fails_only_its_study_and_a_dead_stage_thread_ends_the_daemon() {
    let _serial = serial();
    let spool = Spool::new(&Settings::default());
    let stage = spool.dir("staging");
    write_study(&stage.join("poison"), 31);
    copy_tree(&stage.join("poison"), &stage.join("good"));
    let before = checksums(&stage.join("poison"));
    for name in ["poison", "good"] {
        fs::rename(stage.join(name), spool.dir("inbox").join(name)).unwrap();
    }
    let mut child = spool
        .command(&[])
        .env("TRACERD_TEST_PANIC", "inference:poison")
        .spawn()
        .unwrap();
    spool.adopt(&child);
    wait_until(&spool, 3 * MINUTE, "poison failed, good published", || {
        spool.entries("failed") == ["poison"] && published(&spool, "good")
    });
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, MINUTE), Some(0), "{}", spool.log());
    let failed = spool.dir("failed").join("poison");
    let json = common::read_json(&failed.join("error.json"));
    assert_eq!(json["stage"], "inference");
    let error = json["error"].as_str().unwrap();
    assert!(
        error.starts_with("internal error: tracerd panicked at src/"),
        "{error}"
    );
    fs::remove_file(failed.join("error.json")).unwrap();
    assert_eq!(checksums(&failed), before, "inputs changed");
    let log = spool.log();
    assert!(log.contains("internal error: tracerd panicked"), "{log}");
    assert!(
        !log.contains("injected by"),
        "the panic message is not logged: {log}"
    );

    let spool = Spool::new(&Settings::default());
    let mut child = spool
        .command(&[])
        .env("TRACERD_TEST_PANIC", "thread:publish")
        .spawn()
        .unwrap();
    spool.adopt(&child);
    assert_eq!(wait_exit(&mut child, MINUTE), Some(1), "{}", spool.log());
    assert!(
        spool
            .log()
            .contains("the publisher thread ended unexpectedly"),
        "{}",
        spool.log()
    );
}

/// Issue 16 row 2: a study that aborts the whole process (an allocation failure, the OOM
/// killer) while others are in memory beside it. Restarted as systemd would, the daemon
/// retries the studies that were in memory one at a time: only the culprit, crashing alone,
/// uses up its attempts; every other study is published exactly once.
#[test]
fn after_a_crash_only_the_study_that_crashes_alone_is_failed() {
    let _serial = serial();
    let spool = Spool::new(&Settings {
        ingest_workers: 2,
        queue_length: 2,
        max_attempts: 2,
        ..Settings::default()
    });
    let stage = spool.dir("staging");
    write_study(&stage.join("a-poison"), 31);
    let goods = ["b-good", "c-good", "d-good"];
    for name in goods {
        copy_tree(&stage.join("a-poison"), &stage.join(name));
    }
    for name in ["a-poison"].iter().chain(&goods) {
        fs::rename(stage.join(name), spool.dir("inbox").join(name)).unwrap();
    }
    let resolved =
        || spool.entries("failed") == ["a-poison"] && goods.iter().all(|g| published(&spool, g));
    let mut crashes = 0;
    for _start in 0..8 {
        let mut child = spool
            .command(&[])
            .env("TRACERD_TEST_ABORT", "inference:a-poison")
            .spawn()
            .unwrap();
        spool.adopt(&child);
        let deadline = Instant::now() + 3 * MINUTE;
        let crashed = loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(!status.success(), "{}", spool.log());
                break true;
            }
            if resolved() {
                signal(&child, "TERM");
                assert_eq!(wait_exit(&mut child, MINUTE), Some(0), "{}", spool.log());
                break false;
            }
            assert!(Instant::now() < deadline, "{}", spool.log());
            std::thread::sleep(Duration::from_millis(100));
        };
        if !crashed {
            break;
        }
        crashes += 1;
    }
    assert!(resolved(), "{}", spool.log());
    assert!(
        (2..=3).contains(&crashes),
        "{crashes} crashes\n{}",
        spool.log()
    );
    assert_eq!(spool.entries("outbox"), goods, "each published once");
    assert_eq!(spool.entries("archive"), goods);
    let json = common::read_json(&spool.dir("failed").join("a-poison").join("error.json"));
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("interrupted 2 times"),
        "{json}"
    );
    assert!(spool.log().contains("processing them one at a time"));
}

/// A daemon whose outbox writes fail as on a full disk while the returned marker file exists
/// (`TRACERD_TEST_FULL_MARKER`, debug builds), with study `name` dropped into its inbox.
fn daemon_with_a_full_outbox(
    name: &str,
) -> (Spool, std::path::PathBuf, NotifySocket, std::process::Child) {
    let spool = Spool::new(&Settings::default());
    let marker = spool.dir("disk-full");
    fs::write(&marker, "").unwrap();
    write_study(&spool.dir("staging").join(name), 31);
    fs::rename(
        spool.dir("staging").join(name),
        spool.dir("inbox").join(name),
    )
    .unwrap();
    let notify = NotifySocket::new();
    let child = spool
        .command(&[
            ("NOTIFY_SOCKET", &notify.path),
            ("TRACERD_TEST_FULL_MARKER", &marker),
        ])
        .spawn()
        .unwrap();
    spool.adopt(&child);
    (spool, marker, notify, child)
}

/// Issue 16 row 5: a full disk while results are written failed the study for good. Now the
/// study waits and is retried, claiming pauses (STATUS says why), and once space is back the
/// study is published and claiming resumes; nothing reaches failed/. The full disk is injected
/// (debug builds) with `TRACERD_TEST_FULL_MARKER`: while that file exists, outbox writes fail
/// with `StorageFull`.
#[test]
fn a_full_outbox_pauses_claiming_and_retries_instead_of_failing() {
    let _serial = serial();
    let (spool, marker, notify, mut child) = daemon_with_a_full_outbox("s1");
    let seen = notify.wait_for_prefix("STATUS=paused: cannot write results", 3 * MINUTE);
    assert!(seen.iter().any(|l| l.contains("No space left")), "{seen:?}");
    // A second study arriving now is not claimed while the outbox is full.
    write_study(&spool.dir("staging").join("s2"), 32);
    fs::rename(
        spool.dir("staging").join("s2"),
        spool.dir("inbox").join("s2"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(spool.entries("inbox"), ["s2"], "{}", spool.log());
    assert!(spool.entries("failed").is_empty());
    fs::remove_file(&marker).unwrap();
    // The retry back-off is 5 s, then 10 s.
    wait_until(&spool, 2 * MINUTE, "both published", || {
        published(&spool, "s1") && published(&spool, "s2")
    });
    assert!(spool.entries("failed").is_empty());
    assert!(spool.log().contains("results can be written again"));
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, MINUTE), Some(0));
}

/// Issue 16 row 12: a study folder removed from `work/` while it was processed was published,
/// then "will retry" forever with attempts past `max_attempts`. Now it is said once and
/// forgotten. The study is held back by a full outbox (`TRACERD_TEST_FULL_MARKER`) while its
/// folder is removed.
#[test]
fn a_study_that_vanishes_from_work_is_logged_once_and_forgotten() {
    let _serial = serial();
    let (spool, marker, notify, mut child) = daemon_with_a_full_outbox("gone");
    notify.wait_for_prefix("STATUS=paused: cannot write results", 3 * MINUTE);
    fs::remove_dir_all(spool.dir("work").join("gone")).unwrap();
    fs::remove_file(&marker).unwrap();
    wait_until(&spool, MINUTE, "forgotten", || {
        spool.log().contains("vanished from work/")
    });
    notify.wait_for_prefix("STATUS=idle; 0 queued", 30 * Duration::from_secs(1));
    std::thread::sleep(Duration::from_secs(6));
    let log = spool.log();
    assert_eq!(log.matches("vanished from work/").count(), 1, "{log}");
    assert!(spool.entries("failed").is_empty() && spool.entries("outbox").is_empty());
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, MINUTE), Some(0));
}

/// `promtool check metrics` (Debian `prometheus`) on a scrape: its findings, empty when clean.
fn promtool(scrape: &str) -> String {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}); install prometheus or run `bash .ci/run`")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        findings.trim().to_string()
    } else {
        format!("exit {}: {findings}", out.status)
    }
}

/// The value of the series `name` (its full text before the value, labels included).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_are_scraped_while_a_study_is_processed_and_count_what_happened() {
    let _serial = serial();
    let spool = Spool::new(&Settings::default());
    let notify = NotifySocket::new();
    let mut child = spool.spawn(&[("NOTIFY_SOCKET", &notify.path)]);
    notify.wait_for("READY=1", MINUTE);
    let idle = spool.scrape();
    assert_eq!(promtool(&idle), "", "promtool on the idle scrape:\n{idle}");
    assert_eq!(sample(&idle, "tracerd_studies_queued"), Some(0.0), "{idle}");
    let staged = spool.dir(".m1");
    write_study(&staged, 41);
    fs::write(staged.join(".complete"), "").unwrap();
    // A broken study beside it: a failure to count.
    let broken = spool.dir(".m2");
    fs::create_dir_all(&broken).unwrap();
    fs::write(broken.join("SUV.nii.gz"), b"not a nifti").unwrap();
    fs::write(broken.join(".complete"), "").unwrap();
    fs::rename(&staged, spool.dir("inbox").join("m1")).unwrap();
    let mut during = String::new();
    wait_until(&spool, MINUTE, "a scrape with the study in work/", || {
        during = spool.scrape();
        sample(&during, "tracerd_studies_queued") == Some(1.0)
    });
    assert_eq!(
        promtool(&during),
        "",
        "promtool on a scrape during processing:\n{during}"
    );
    fs::rename(&broken, spool.dir("inbox").join("m2")).unwrap();
    wait_until(&spool, 3 * MINUTE, "m1 published, m2 failed", || {
        published(&spool, "m1") && spool.studies("failed") == ["m2"]
    });
    let after = spool.scrape();
    assert_eq!(promtool(&after), "", "promtool after processing:\n{after}");
    let counted = |outcome: &str| {
        sample(
            &after,
            &format!("tracerd_studies_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(counted("published"), Some(1.0), "{after}");
    assert_eq!(counted("failed"), Some(1.0), "{after}");
    assert_eq!(counted("retried"), Some(0.0), "{after}");
    assert_eq!(
        sample(&after, "tracerd_studies_queued"),
        Some(0.0),
        "{after}"
    );
    for stage in ["ingest", "inference", "publish", "total"] {
        let count = format!("tracerd_stage_duration_seconds_count{{stage=\"{stage}\"}}");
        assert!(
            sample(&after, &count).unwrap_or(0.0) >= 1.0,
            "{stage}: {after}"
        );
    }
    assert!(sample(&after, "tracerd_last_success_timestamp_seconds").unwrap() > 1.7e9);
    assert!(sample(&after, "tracerd_free_bytes").unwrap() > 0.0);
    assert_eq!(
        after
            .lines()
            .filter(|l| l.starts_with("tracerd_model_info{"))
            .count(),
        3,
        "one series per network: {after}"
    );
    assert!(after.contains("engine=\"ort-cpu\""), "{after}");
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, MINUTE), Some(0));
}
