//! Crash safety of the filesystem journal: `kill -9` the daemon at random moments while it
//! processes studies, 20 times. After every kill each study is in exactly one place (inbox,
//! work, or archive with its result in the outbox), no result is duplicated, its bytes are
//! unchanged; after every restart the debris of the kill is gone; in the end every study is
//! published exactly once.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use common::daemon::{
    NotifySocket, Settings, Spool, checksums, serial, signal, wait_exit, wait_until, write_study,
};
use rand::{RngExt, SeedableRng};

const STUDIES: [&str; 3] = ["c1", "c2", "c3"];
const KILLS: usize = 20;

#[test]
fn kill_9_twenty_times_loses_nothing_and_publishes_each_study_once() {
    let _serial = serial();
    let spool = Spool::new(&Settings {
        settle_seconds: 0.5,
        rescan_seconds: 0.2,
        // Every kill interrupts a study; this test is about the journal, not the give-up rule.
        max_attempts: 1000,
        queue_length: 2,
        ..Settings::default()
    });
    let mut originals = BTreeMap::new();
    for (i, key) in STUDIES.iter().enumerate() {
        let dir = spool.dir("inbox").join(key);
        write_study(&dir, 50 + i as u64);
        originals.insert(key.to_string(), checksums(&dir));
    }

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261122);
    let mut debris_seen = 0;
    let mut published_during_kills = 0;
    let mut redropped = std::collections::BTreeSet::new();
    let mut kills_after_ready = 0;
    let mut previous_debris = Vec::new();
    for round in 0..KILLS {
        let notify = NotifySocket::new();
        let mut child = spool.spawn(&[("NOTIFY_SOCKET", &notify.path)]);
        let delay = Duration::from_millis(rng.random_range(300..10_000));
        let started = Instant::now();
        let ready = notify
            .recv(delay)
            .is_some_and(|l| l.iter().any(|l| l == "READY=1"));
        if ready {
            // Recovery ran before READY: the previous kill's debris is gone.
            for path in &previous_debris {
                assert!(
                    !std::path::Path::new(path).exists(),
                    "round {round}: {path:?} survived a restart"
                );
            }
            kills_after_ready += 1;
        }
        if let Some(left) = delay.checked_sub(started.elapsed()) {
            std::thread::sleep(left);
        }
        child.kill().unwrap();
        child.wait().unwrap();

        previous_debris = spool.temporaries();
        debris_seen += previous_debris.len();
        check_invariants(&spool, &originals, &redropped, round);
        // Published studies are dropped again, so that every round has work and re-runs
        // replace their outbox entries under fire too.
        for key in spool.entries("archive") {
            fs::rename(
                spool.dir("archive").join(&key),
                spool.dir("inbox").join(&key),
            )
            .unwrap();
            redropped.insert(key);
            published_during_kills += 1;
        }
    }

    // A last, undisturbed run finishes the job.
    let notify = NotifySocket::new();
    let mut child = spool.spawn(&[("NOTIFY_SOCKET", &notify.path)]);
    notify.wait_for("READY=1", Duration::from_secs(60));
    wait_until(
        &spool,
        Duration::from_secs(180),
        "every study published",
        || spool.entries("archive").len() == STUDIES.len(),
    );
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), Some(0));
    check_invariants(&spool, &originals, &redropped, KILLS);
    assert_eq!(spool.entries("outbox"), STUDIES);
    assert_eq!(spool.entries("archive"), STUDIES);
    assert!(spool.entries("work").is_empty() && spool.entries("inbox").is_empty());
    assert!(spool.temporaries().is_empty());
    for key in STUDIES {
        let r: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(spool.dir("outbox").join(key).join("result.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(r["key"], key);
    }
    let published = spool
        .log()
        .lines()
        .filter(|l| l.contains("stages: published"))
        .count();
    println!(
        "{KILLS} kills ({kills_after_ready} after READY), {published_during_kills} studies published \
         between kills, {debris_seen} temporaries left by kills and removed on restart, \
         {published} publish log lines",
    );
}

/// Each study is in exactly one of inbox/, work/, archive/; an archived study has a result, a
/// study never claimed has none (unless it was dropped again after publishing); nothing failed; no result is duplicated; the inputs' bytes are unchanged.
fn check_invariants(
    spool: &Spool,
    originals: &BTreeMap<String, BTreeMap<String, String>>,
    redropped: &std::collections::BTreeSet<String>,
    round: usize,
) {
    let inbox = spool.entries("inbox");
    let work = spool.studies("work");
    let archive = spool.entries("archive");
    let outbox = spool.studies("outbox");
    assert!(
        spool.entries("failed").is_empty(),
        "round {round}: failed/ {:?}\n{}",
        spool.entries("failed"),
        spool.log()
    );
    for (key, sums) in originals {
        let places: Vec<&str> = [("inbox", &inbox), ("work", &work), ("archive", &archive)]
            .iter()
            .filter(|(_, names)| names.contains(key))
            .map(|(place, _)| *place)
            .collect();
        assert_eq!(places.len(), 1, "round {round}: {key} is in {places:?}");
        let place = places[0];
        if place == "archive" {
            assert!(
                outbox.contains(key),
                "round {round}: {key} archived without a result"
            );
        }
        if place == "inbox" && !redropped.contains(key) {
            assert!(
                !outbox.contains(key),
                "round {round}: {key} has a result but was never claimed"
            );
        }
        let dir = spool.dir(place).join(key);
        let mut now = checksums(&dir);
        now.retain(|name, _| !name.starts_with(common::daemon::TEMP_PREFIX));
        assert_eq!(
            &now, sums,
            "round {round}: {key}'s files changed in {place}/"
        );
    }
    for name in archive.iter().chain(&outbox).chain(&work) {
        assert!(
            originals.contains_key(name),
            "round {round}: unexpected {name}"
        );
    }
}

/// The narrowest crash window, made on purpose: the result was published and the daemon died
/// before moving the inputs out of `work/` (with a half-written result of another run left
/// beside it). At the next start the study is processed again, its outbox entry is replaced
/// (not duplicated), and the debris is gone.
#[test]
fn a_crash_between_publishing_and_archiving_reruns_and_replaces() {
    let _serial = serial();
    let spool = Spool::new(&Settings::default());
    let study = spool.dir("work").join("w1");
    write_study(&study, 91);
    let before = checksums(&study);
    let stale = spool.dir("outbox").join("w1");
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("result.json"), "{\"stale\": true}").unwrap();
    let debris = spool
        .dir("outbox")
        .join(format!("{}1-0-w1", common::daemon::TEMP_PREFIX));
    fs::create_dir_all(&debris).unwrap();
    fs::write(debris.join("result.json"), "{\"half\"").unwrap();

    let notify = NotifySocket::new();
    let mut child = spool.spawn(&[("NOTIFY_SOCKET", &notify.path)]);
    notify.wait_for("READY=1", Duration::from_secs(60));
    assert!(!debris.exists(), "recovery leaves the half-written result");
    wait_until(&spool, Duration::from_secs(120), "w1 archived", || {
        spool.entries("archive") == ["w1"]
    });
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), Some(0));

    assert_eq!(spool.entries("outbox"), ["w1"]);
    let r: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(stale.join("result.json")).unwrap()).unwrap();
    assert_eq!(r["schema"], "tracerd.result/1");
    assert_eq!(r["key"], "w1");
    assert_eq!(checksums(&spool.dir("archive/w1")), before);
    assert!(spool.entries("work").is_empty() && spool.temporaries().is_empty());
}

/// Issue 16 acceptance: 30 studies dropped at once, one of them poison (it aborts the whole
/// process whenever inference reaches it, as an allocation failure or the OOM killer would;
/// injected with `TRACERD_TEST_ABORT`, debug builds only), and five `kill -9` at random
/// moments, the daemon restarted after each exit as systemd would. Every valid study is
/// published exactly once, only the poison study is in `failed/` (having crashed alone
/// `max_attempts` times), and every input byte is where it should be.
///
/// About 5 minutes on a 2-core machine, so it runs on demand rather than in CI:
/// `cargo test --test processes burst -- --ignored --nocapture` (docs/benchmarks.md).
#[test]
#[ignore = "a 5-minute robustness run; cargo test --test processes burst -- --ignored"]
fn a_burst_of_30_with_five_kills_and_a_poison_study_fails_only_the_poison() {
    let _serial = serial();
    let spool = Spool::new(&Settings {
        settle_seconds: 0.5,
        rescan_seconds: 0.2,
        ingest_workers: 2,
        queue_length: 2,
        ..Settings::default()
    });
    let template = spool.dir("template");
    write_study(&template, 60);
    let names: Vec<String> = (1..30)
        .map(|i| format!("b{i:02}"))
        .chain(["poison".to_string()])
        .collect();
    for name in &names {
        common::daemon::copy_tree(&template, &spool.dir("inbox").join(name));
    }
    let originals = checksums(&template);
    let goods: Vec<String> = names.iter().filter(|n| *n != "poison").cloned().collect();
    let done = || spool.entries("failed") == ["poison"] && spool.studies("outbox") == goods;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261201);
    let (mut kills, mut crashes, mut starts) = (0, 0, 0);
    let t0 = Instant::now();
    loop {
        starts += 1;
        assert!(starts <= 40, "no end after 40 starts\n{}", spool.log());
        let mut child = spool.spawn(&[("TRACERD_TEST_ABORT", "inference:poison".as_ref())]);
        let kill_at = (kills < 5)
            .then(|| Instant::now() + Duration::from_millis(rng.random_range(1000..8000)));
        let deadline = Instant::now() + Duration::from_secs(300);
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(!status.success(), "{}", spool.log());
                crashes += 1;
                break false;
            }
            if done() {
                signal(&child, "TERM");
                assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), Some(0));
                break true;
            }
            if kill_at.is_some_and(|t| Instant::now() >= t) {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                break false;
            }
            assert!(Instant::now() < deadline, "stuck\n{}", spool.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        if finished {
            break;
        }
    }
    assert_eq!(kills, 5);
    assert_eq!(spool.studies("archive"), goods);
    assert!(spool.studies("inbox").is_empty() && spool.studies("work").is_empty());
    for good in &goods {
        assert_eq!(
            checksums(&spool.dir("archive").join(good)),
            originals,
            "{good}"
        );
    }
    let poison = spool.dir("failed").join("poison");
    let error = common::read_json(&poison.join("error.json"));
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("interrupted 3 times"),
        "{error}"
    );
    fs::remove_file(poison.join("error.json")).unwrap();
    assert_eq!(checksums(&poison), originals);
    let published = spool.log().matches("stages: published").count();
    assert_eq!(published, goods.len(), "each good study published once");
    println!(
        "30 studies, {kills} kill -9, {crashes} poison crashes, {starts} starts, {:.0} s",
        t0.elapsed().as_secs_f64()
    );
}
