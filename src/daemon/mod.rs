//! `tracerd run`: the daemon. This module wires the stages together and supervises them;
//! [`scanner`] claims studies, [`stages`] ingests, analyses and publishes them, [`reload`]
//! applies SIGHUP, [`journal`] owns the study folders, [`watch`] decides completeness and
//! [`service`] talks to systemd.
//!
//! ```text
//! scanner ──Job──▶ ingest ×N ──Loaded──▶ inference ──Outcome──▶ publisher
//!   ▲  (inbox → work/)        (bounded)   (one per device)        │ outbox/, archive/ or failed/
//!   └──────────── transient errors: the Job again, after a back-off ┘
//! ```
//!
//! - The **scanner** rescans the inbox on a timer and sooner on an inotify hint, decides
//!   completeness ([`watch::Tracker`]) and claims complete studies into `work/`
//!   ([`Journal::claim`]); claimed studies wait in its queue, in order, and are handed on as
//!   the ingest channel has room.
//! - **Ingest** workers load and check a study ([`study::load`]); the study then waits in a
//!   bounded channel (`daemon.queue_length`) for the **inference** worker, which owns the
//!   model sessions. The channel bounds are the backpressure and the memory bound.
//! - The **publisher** writes the outbox ([`process::publish`]) and moves the inputs to
//!   `archive/`, or moves a failed study to `failed/` with `error.json`. Transient errors (a
//!   full disk, a busy GPU) send the study back to the scanner to be tried again later.
//!
//! Every stage reports when it starts and ends a unit of work ([`StageClock`]); the main
//! thread pings the systemd watchdog only while no stage has been busy with one study for
//! longer than `daemon.stall_seconds`. Stopping closes the source: the scanner stops, no new
//! study is started, studies already started are finished within `daemon.stop_timeout_seconds`
//! and the rest stay queued in `work/` for the next start.

mod guard;
pub mod journal;
mod reload;
mod scanner;
pub mod service;
mod stages;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, select};

use crate::config::{Config, ConfigError};
use crate::process::{Processor, Published};
use crate::study::StudyError;
use journal::{Claimed, Journal};
use scanner::Scanner;
use service::{Notifier, Signal};
use stages::{Job, Loaded, Outcome, infer, ingest, publish};

/// How `run` was asked to behave beyond the configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The file SIGHUP reloads (`None`: the embedded defaults, nothing to reload).
    pub config_path: Option<PathBuf>,
    /// Stop on its own once this many studies were published or failed (`run --demo`).
    pub exit_after: Option<u64>,
}

/// What a run did, for its last log line (and the demo).
#[derive(Debug, Default)]
pub struct Summary {
    pub done: u64,
    pub failed: u64,
    /// The last study published.
    pub last_published: Option<Published>,
}

/// Errors that stop the daemon (systemd restarts it); a study's own errors never do.
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("study folders: {0}")]
    Journal(std::io::Error),
    #[error("{0}")]
    Models(StudyError),
    #[error("cannot start: {0}")]
    Start(std::io::Error),
    #[error(
        "the {0} thread ended unexpectedly (a bug in tracerd; see the log); exiting so that systemd restarts the daemon"
    )]
    StageEnded(String),
}

/// One stage's record of what it is doing, read by the watchdog.
#[derive(Debug)]
pub struct StageClock {
    name: String,
    busy: Mutex<Option<(Instant, String)>>,
}

/// Marks a stage busy until dropped.
struct Busy<'a>(&'a StageClock);

impl StageClock {
    fn new(name: impl Into<String>) -> Arc<StageClock> {
        Arc::new(StageClock {
            name: name.into(),
            busy: Mutex::new(None),
        })
    }

    fn busy(&self, entry: &str) -> Busy<'_> {
        *lock(&self.busy) = Some((Instant::now(), entry.to_string()));
        Busy(self)
    }

    /// How long the stage has been busy with one study, and which, if longer than `limit`.
    fn stalled(&self, now: Instant, limit: Duration) -> Option<(Duration, String)> {
        let busy = lock(&self.busy);
        let (since, entry) = busy.as_ref()?;
        let d = now.duration_since(*since);
        (d > limit).then(|| (d, entry.clone()))
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *lock(&self.0.busy) = None;
    }
}

/// A poisoned lock means another thread panicked while holding it; the counters it guards
/// are still meaningful, so go on rather than take the daemon down with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
struct Counters {
    /// Studies in `work/`: queued or being processed.
    queued: usize,
    done: u64,
    failed: u64,
    last_latency: Option<Duration>,
    last_published: Option<Published>,
    /// Why claiming is paused (free space below the floor).
    paused: Option<String>,
    /// Why results cannot be written (a full, read-only or missing outbox): claiming is paused
    /// until a study is published again.
    outbox_problem: Option<String>,
    engine: String,
}

/// State every stage sees.
struct Shared {
    journal: Journal,
    /// The configuration; SIGHUP replaces the parts that can change while running.
    config: RwLock<Config>,
    stopping: AtomicBool,
    /// Studies whose processing has begun (their attempt is counted), by work name.
    started: Mutex<HashMap<String, Claimed>>,
    /// Studies that were in memory at an unclean stop, by work name: while any is left, one
    /// study at a time is in the stages (see [`journal`]).
    suspects: Mutex<HashSet<String>>,
    /// Jobs handed to ingest and not yet back (published, failed or returned for a retry).
    in_flight: AtomicUsize,
    counters: Mutex<Counters>,
}

impl Shared {
    fn settings<T>(&self, f: impl FnOnce(&Config) -> T) -> T {
        f(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Whether the scanner may hand another study to the stages: always, except while
    /// suspects are left and one study is already in them.
    fn may_dispatch(&self) -> bool {
        lock(&self.suspects).is_empty() || self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// A study is done with (published or failed): no longer in memory, no longer a suspect.
    fn forget(&self, name: &str) {
        lock(&self.started).remove(name);
        lock(&self.suspects).remove(name);
        self.job_returned();
    }

    /// A job has left the stages (published, failed, or back to the scanner for a retry).
    fn job_returned(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    fn status(&self) -> String {
        let c = lock(&self.counters);
        let state = if self.stopping() {
            "stopping".to_string()
        } else if let Some(why) = c.outbox_problem.as_ref().or(c.paused.as_ref()) {
            format!("paused: {why}")
        } else if c.queued > 0 {
            "processing".to_string()
        } else {
            "idle".to_string()
        };
        let last = c
            .last_latency
            .map(|d| format!("; last study {:.1} s", d.as_secs_f64()))
            .unwrap_or_default();
        format!(
            "{state}; {} queued, {} done, {} failed{last}; engine {}",
            c.queued, c.done, c.failed, c.engine
        )
    }
}

/// Runs the daemon until SIGTERM/SIGINT (or `options.exit_after` studies); see the module
/// documentation.
pub fn run(config: Config, options: RunOptions) -> Result<Summary, FatalError> {
    config.validate()?;
    guard::install_hook();
    let signals = service::signals().map_err(FatalError::Start)?;
    let mut notifier = Notifier::new();
    tracing::info!(
        config = %options.config_path.as_deref().map_or("(embedded defaults)".into(), |p| p.display().to_string()),
        inbox = %config.paths.inbox.display(),
        outbox = %config.paths.outbox.display(),
        "tracerd {} starting", env!("CARGO_PKG_VERSION")
    );
    tracing::debug!(config = %config.to_toml(), "effective configuration");

    let journal = Journal::open(&config).map_err(FatalError::Journal)?;
    let _lock = journal.lock().map_err(FatalError::Journal)?;
    let recovery = journal.recover().map_err(FatalError::Journal)?;
    for study in &recovery.gave_up {
        tracing::error!(entry = %study.entry, "study interrupted too often; moved to failed/");
    }
    if !recovery.requeued.is_empty() || recovery.temporaries > 0 {
        tracing::info!(
            requeued = recovery.requeued.len(),
            temporaries_removed = recovery.temporaries,
            failures_completed = recovery.finished_failures,
            "recovered the study folders"
        );
    }
    if !recovery.suspects.is_empty() {
        tracing::warn!(
            studies = recovery.suspects.len(),
            "studies were in memory when tracerd last stopped uncleanly; processing them one at a time"
        );
    }
    let processor = Processor::new(&config).map_err(FatalError::Models)?;
    let backend = processor.model_info().backend();
    let daemon = config.daemon.clone();
    let shared = Arc::new(Shared {
        journal,
        config: RwLock::new(config),
        stopping: AtomicBool::new(false),
        started: Mutex::new(HashMap::new()),
        suspects: Mutex::new(recovery.suspects.iter().cloned().collect()),
        in_flight: AtomicUsize::new(0),
        counters: Mutex::new(Counters {
            queued: recovery.requeued.len(),
            failed: recovery.gave_up.len() as u64,
            engine: format!("{} on {}", backend.engine, backend.device),
            ..Counters::default()
        }),
    });

    let (stop_tx, stop_rx) = bounded::<()>(0);
    let (job_tx, job_rx) = bounded::<Job>(daemon.ingest_workers);
    let (loaded_tx, loaded_rx) = bounded::<Loaded>(daemon.queue_length);
    let (outcome_tx, outcome_rx) = bounded::<Outcome>(1);
    let (retry_tx, retry_rx) = crossbeam_channel::unbounded::<(Instant, Job)>();
    let (control_tx, control_rx) = crossbeam_channel::unbounded::<Box<Config>>();
    let (scanned_tx, mut scanned_rx) = bounded::<()>(1);

    let mut clocks = Vec::new();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name)
            .spawn(f)
            .map_err(FatalError::Start)
    };

    let clock = StageClock::new("scanner");
    clocks.push(clock.clone());
    let scanner = Scanner {
        shared: shared.clone(),
        clock,
        jobs: job_tx,
        retries: retry_rx,
        stop: stop_rx.clone(),
        scanned: Some(scanned_tx),
        claim_failed: HashMap::new(),
        pending: recovery
            .requeued
            .into_iter()
            .map(|study| Job {
                study,
                queued_at: Instant::now(),
                retries: 0,
            })
            .collect(),
    };
    threads.push(spawn("scanner".into(), Box::new(move || scanner.run()))?);

    for i in 0..daemon.ingest_workers {
        let clock = StageClock::new(format!("ingest-{i}"));
        clocks.push(clock.clone());
        let (shared, jobs, loaded, outcomes, retries) = (
            shared.clone(),
            job_rx.clone(),
            loaded_tx.clone(),
            outcome_tx.clone(),
            retry_tx.clone(),
        );
        threads.push(spawn(
            format!("ingest-{i}"),
            Box::new(move || ingest(&shared, &clock, jobs, loaded, outcomes, retries)),
        )?);
    }
    drop((job_rx, loaded_tx));

    let clock = StageClock::new("inference");
    clocks.push(clock.clone());
    {
        let (shared, outcomes) = (shared.clone(), outcome_tx.clone());
        threads.push(spawn(
            "inference".into(),
            Box::new(move || infer(&shared, &clock, processor, loaded_rx, control_rx, outcomes)),
        )?);
    }
    drop(outcome_tx);

    let clock = StageClock::new("publisher");
    clocks.push(clock.clone());
    let publisher = {
        let shared = shared.clone();
        spawn(
            "publisher".into(),
            Box::new(move || publish(&shared, &clock, outcome_rx, retry_tx)),
        )?
    };

    // Supervise: signals, READY after the first scan, STATUS, the watchdog.
    let watchdog = Notifier::watchdog_interval();
    let tick = watchdog
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    let mut ready = false;
    let mut stalled_reported = false;
    let mut stop_tx = Some(stop_tx);
    let mut stop_requested = false;
    let mut last_ping = Instant::now() - tick * 10;
    loop {
        select! {
            recv(signals) -> signal => match signal {
                Ok(Signal::Stop) => stop_requested = true,
                Ok(Signal::Reload) => reload::reload(&shared, &options, &control_tx, &notifier),
                Err(_) => stop_requested = true,
            },
            recv(scanned_rx) -> msg => {
                if msg.is_err() {
                    // The scanner has stopped and dropped its sender: a disconnected channel is
                    // always ready, so stop selecting on it (it would spin a core while idle).
                    scanned_rx = never();
                }
                if !ready {
                    ready = true;
                    notifier.ready();
                    tracing::info!(status = %shared.status(), "ready");
                }
            },
            default(tick) => {},
        }
        if let Some(n) = options.exit_after {
            let c = lock(&shared.counters);
            if c.done + c.failed >= n {
                stop_requested = true;
            }
        }
        if stop_requested {
            break;
        }
        if let Some(stage) = ended_stage(threads.iter().chain([&publisher])) {
            tracing::error!(thread = %stage, "a stage thread ended unexpectedly; no longer pinging the watchdog; exiting");
            return Err(FatalError::StageEnded(stage));
        }
        notifier.status(&shared.status());
        let now = Instant::now();
        let stall_limit = shared.settings(|c| Duration::from_secs_f64(c.daemon.stall_seconds));
        let stalled: Vec<_> = clocks
            .iter()
            .filter_map(|c| c.stalled(now, stall_limit).map(|s| (c.name.clone(), s)))
            .collect();
        if stalled.is_empty() {
            if stalled_reported {
                tracing::info!("every stage is making progress again");
                stalled_reported = false;
            }
            if let Some(interval) = watchdog
                && ready
                && now.duration_since(last_ping) >= interval
            {
                notifier.watchdog();
                last_ping = now;
            }
        } else if !stalled_reported {
            for (stage, (busy, entry)) in &stalled {
                tracing::error!(
                    stage = %stage,
                    entry = %entry,
                    busy_s = busy.as_secs(),
                    "stage stalled on one study; no longer pinging the watchdog"
                );
            }
            stalled_reported = true;
        }
    }

    // Stop: close the source, let started studies finish, up to the deadline.
    shared.stopping.store(true, Ordering::SeqCst);
    notifier.stopping();
    notifier.status(&shared.status());
    tracing::info!("stopping: no new studies are started");
    drop(stop_tx.take());
    drop(control_tx);
    let deadline = Instant::now()
        + shared.settings(|c| Duration::from_secs_f64(c.daemon.stop_timeout_seconds));
    while !publisher.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let unfinished: Vec<Claimed> = lock(&shared.started).drain().map(|(_, c)| c).collect();
    for study in &unfinished {
        // Interrupted by us, not by the study: this attempt does not count.
        let _ = shared.journal.cancel_attempt(study);
        tracing::warn!(entry = %study.entry, "still processing at the stop deadline; stays queued in work/");
    }
    if publisher.is_finished() {
        let _ = publisher.join();
        for t in threads {
            let _ = t.join();
        }
    }
    let mut c = lock(&shared.counters);
    tracing::info!(
        done = c.done,
        failed = c.failed,
        queued = c.queued,
        "stopped"
    );
    Ok(Summary {
        done: c.done,
        failed: c.failed,
        last_published: c.last_published.take(),
    })
}

/// The name of a stage thread that has ended; while the daemon is not stopping, none may.
fn ended_stage<'a>(mut threads: impl Iterator<Item = &'a JoinHandle<()>>) -> Option<String> {
    threads
        .find(|t| t.is_finished())
        .map(|t| t.thread().name().unwrap_or("unnamed").to_string())
}
