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
pub mod metrics;
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
use crate::models::l2snet;
use crate::net::deliver::Deliverer;
use crate::net::listener::Listener;
use crate::process::{Processor, Published};
use crate::study::StudyError;
use journal::{Claimed, Journal};
use metrics::{Endpoint, Metrics};
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
    metrics: Arc<Metrics>,
    /// Sends published results to the `[delivery]` destinations (none configured: `None`).
    deliverer: Option<Deliverer>,
    /// The loaded L2SNet card's parameters, with which ingest makes studies ready for inference
    /// (`process::prepare`); the inference stage replaces them when it reloads the models.
    l2snet: RwLock<l2snet::Params>,
}

impl Shared {
    fn settings<T>(&self, f: impl FnOnce(&Config) -> T) -> T {
        f(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The L2SNet parameters of the models loaded now.
    fn l2snet_params(&self) -> l2snet::Params {
        self.l2snet
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        let deliveries = self
            .deliverer
            .as_ref()
            .map(|d| format!("; {} deliveries pending", d.pending()))
            .unwrap_or_default();
        format!(
            "{state}; {} queued, {} done, {} failed{last}{deliveries}; engine {}",
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
    let recovery = recover(&journal)?;
    let processor = Processor::new(&config).map_err(FatalError::Models)?;
    let metrics = Arc::new(Metrics::new());
    let deliverer = start_deliverer(&config, &metrics)?;
    let shared = Arc::new(Shared::new(
        journal, config, &recovery, &processor, metrics, deliverer,
    ));
    let endpoint = start_metrics(&shared);
    let mut stages = Stages::spawn(&shared, processor, recovery.requeued)?;
    let listener = match start_listener(&shared) {
        Ok(listener) => listener,
        Err(e) => {
            shut_down(&shared, stages, &mut notifier);
            return Err(e);
        }
    };
    let supervised = supervise(&shared, &mut stages, &options, &signals, &mut notifier);
    if let Some(listener) = listener {
        listener.stop();
    }
    let summary = supervised.map(|()| shut_down(&shared, stages, &mut notifier));
    if let Some(deliverer) = &shared.deliverer {
        deliverer.stop();
    }
    if let Some(endpoint) = endpoint {
        endpoint.stop();
    }
    summary
}

/// Starts one delivery worker per `[delivery]` destination; they resume what the outbox's
/// records still have pending.
fn start_deliverer(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<Deliverer>, FatalError> {
    let delivery = &config.delivery;
    if delivery.destinations.is_empty() {
        return Ok(None);
    }
    let deliverer = Deliverer::start(
        delivery,
        &config.dicom_listener.ae_title,
        &config.paths.outbox,
        metrics.clone(),
    )
    .map_err(FatalError::Start)?;
    let names: Vec<&str> = delivery
        .destinations
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    tracing::info!(destinations = %names.join(", "), pending = deliverer.pending(), "delivering results");
    Ok(Some(deliverer))
}

/// Starts the DICOM listener when `[dicom_listener] enabled`. Unlike metrics, a listener that
/// cannot listen stops the daemon: on a site that sends studies over DICOM it is the input.
fn start_listener(shared: &Arc<Shared>) -> Result<Option<Listener>, FatalError> {
    let (config, inbox, min_free) = shared.settings(|c| {
        (
            c.dicom_listener.clone(),
            c.paths.inbox.clone(),
            c.watch.min_free_mib,
        )
    });
    if !config.enabled {
        return Ok(None);
    }
    let s = shared.clone();
    let settle = move || s.settings(|c| Duration::from_secs_f64(c.watch.settle_seconds));
    let metrics = shared.metrics.clone();
    let listener = Listener::start(&config, &inbox, min_free, metrics, settle).map_err(|e| {
        FatalError::Start(std::io::Error::new(
            e.kind(),
            format!("cannot listen for DICOM on {}: {e}", config.listen),
        ))
    })?;
    tracing::info!(address = %listener.address, ae_title = %config.ae_title, "DICOM listener ready (C-STORE, C-ECHO)");
    Ok(Some(listener))
}

/// Starts the metrics endpoint when `[metrics] enabled`. A port that cannot be bound is logged
/// and the daemon goes on without metrics: monitoring must not stop the studies.
fn start_metrics(shared: &Arc<Shared>) -> Option<Endpoint> {
    let m = shared.settings(|c| c.metrics.clone());
    if !m.enabled {
        return None;
    }
    let s = shared.clone();
    let refresh = move |metrics: &Metrics| {
        metrics.set_queued(lock(&s.counters).queued);
        if let Some(d) = &s.deliverer {
            metrics.set_deliveries_pending(d.pending());
        }
        if let Ok(bytes) = s.journal.free_bytes() {
            metrics.set_free_bytes(bytes);
        }
    };
    match metrics::serve(&m.listen, shared.metrics.clone(), refresh) {
        Ok(endpoint) => {
            tracing::info!(address = %endpoint.address, "metrics endpoint listening (GET /metrics)");
            Some(endpoint)
        }
        Err(error) => {
            tracing::error!(listen = %m.listen, %error, "cannot serve metrics; running without them");
            None
        }
    }
}

/// Start-up recovery of the study folders ([`Journal::recover`]), logged.
fn recover(journal: &Journal) -> Result<journal::Recovery, FatalError> {
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
    Ok(recovery)
}

impl Shared {
    fn new(
        journal: Journal,
        config: Config,
        recovery: &journal::Recovery,
        processor: &Processor,
        metrics: Arc<Metrics>,
        deliverer: Option<Deliverer>,
    ) -> Shared {
        let backend = processor.model_info().backend();
        metrics.set_models(&processor.model_info().uses);
        for _ in &recovery.gave_up {
            metrics.study(metrics::StudyOutcome::Failed);
        }
        Shared {
            l2snet: RwLock::new(processor.l2snet_params().clone()),
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
            metrics,
            deliverer,
        }
    }
}

/// The stage threads and the supervisor's ends of their channels.
struct Stages {
    /// Scanner, ingest workers and inference.
    threads: Vec<JoinHandle<()>>,
    /// The last stage: when it has finished, every study in hand has been dealt with.
    publisher: JoinHandle<()>,
    clocks: Vec<Arc<StageClock>>,
    /// Dropped to stop the scanner.
    stop: Option<crossbeam_channel::Sender<()>>,
    /// New configurations for the inference stage (SIGHUP).
    control: Option<crossbeam_channel::Sender<Box<Config>>>,
    /// Closed (or sent on) once the scanner has scanned the inbox for the first time.
    scanned: crossbeam_channel::Receiver<()>,
}

impl Stages {
    /// Wires scanner → ingest ×N → inference → publisher with bounded channels (the
    /// backpressure and the memory bound) and starts them; `requeued` studies go first.
    fn spawn(
        shared: &Arc<Shared>,
        processor: Processor,
        requeued: Vec<Claimed>,
    ) -> Result<Stages, FatalError> {
        let daemon = shared.settings(|c| c.daemon.clone());
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (job_tx, job_rx) = bounded::<Job>(daemon.ingest_workers);
        let (loaded_tx, loaded_rx) = bounded::<Loaded>(daemon.queue_length);
        let (outcome_tx, outcome_rx) = bounded::<Outcome>(1);
        let (retry_tx, retry_rx) = crossbeam_channel::unbounded::<(Instant, Job)>();
        let (control_tx, control_rx) = crossbeam_channel::unbounded::<Box<Config>>();
        let (scanned_tx, scanned_rx) = bounded::<()>(1);
        let mut clocks = Vec::new();
        let mut clock = |name: String| {
            let c = StageClock::new(name);
            clocks.push(c.clone());
            c
        };
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(FatalError::Start)
        };
        let mut threads = Vec::new();
        let scanner = Scanner::new(
            shared.clone(),
            clock("scanner".into()),
            job_tx,
            retry_rx,
            stop_rx,
            scanned_tx,
            requeued,
        );
        threads.push(spawn("scanner".into(), Box::new(move || scanner.run()))?);
        for i in 0..daemon.ingest_workers {
            let clock = clock(format!("ingest-{i}"));
            let (shared, jobs, loaded) = (shared.clone(), job_rx.clone(), loaded_tx.clone());
            let (outcomes, retries) = (outcome_tx.clone(), retry_tx.clone());
            threads.push(spawn(
                format!("ingest-{i}"),
                Box::new(move || ingest(&shared, &clock, jobs, loaded, outcomes, retries)),
            )?);
        }
        let (inference_clock, shared_i) = (clock("inference".into()), shared.clone());
        threads.push(spawn(
            "inference".into(),
            Box::new(move || {
                infer(
                    &shared_i,
                    &inference_clock,
                    processor,
                    loaded_rx,
                    control_rx,
                    outcome_tx,
                )
            }),
        )?);
        let (publisher_clock, shared_p) = (clock("publisher".into()), shared.clone());
        let publisher = spawn(
            "publisher".into(),
            Box::new(move || publish(&shared_p, &publisher_clock, outcome_rx, retry_tx)),
        )?;
        Ok(Stages {
            threads,
            publisher,
            clocks,
            stop: Some(stop_tx),
            control: Some(control_tx),
            scanned: scanned_rx,
        })
    }
}

/// The supervisor: signals, READY after the first scan, STATUS, the watchdog (pinged only
/// while no stage is stalled), and a stage thread that ends unexpectedly. Returns when a stop
/// is asked for.
fn supervise(
    shared: &Shared,
    stages: &mut Stages,
    options: &RunOptions,
    signals: &crossbeam_channel::Receiver<Signal>,
    notifier: &mut Notifier,
) -> Result<(), FatalError> {
    let mut watchdog = Watchdog::new();
    let mut ready = false;
    loop {
        let mut stop_requested = false;
        select! {
            recv(signals) -> signal => match signal {
                Ok(Signal::Reload) => {
                    let control = stages.control.as_ref().expect("open until the stop");
                    reload::reload(shared, options, control, notifier)
                }
                Ok(Signal::Stop) | Err(_) => stop_requested = true,
            },
            recv(stages.scanned) -> msg => {
                if msg.is_err() {
                    // The scanner has stopped and dropped its sender: a disconnected channel is
                    // always ready, so stop selecting on it (it would spin a core while idle).
                    stages.scanned = never();
                }
                if !ready {
                    ready = true;
                    notifier.ready();
                    tracing::info!(status = %shared.status(), "ready");
                }
            },
            default(watchdog.tick) => {},
        }
        if let Some(n) = options.exit_after {
            let c = lock(&shared.counters);
            stop_requested |= c.done + c.failed >= n;
        }
        if stop_requested {
            return Ok(());
        }
        if let Some(stage) = ended_stage(stages.threads.iter().chain([&stages.publisher])) {
            tracing::error!(thread = %stage, "a stage thread ended unexpectedly; no longer pinging the watchdog; exiting");
            return Err(FatalError::StageEnded(stage));
        }
        notifier.status(&shared.status());
        if ready {
            watchdog.check(shared, &stages.clocks, notifier);
        }
    }
}

/// The systemd watchdog: pinged at its interval while no stage has been busy with one study
/// for longer than `daemon.stall_seconds`; a stall is logged once, and its end.
struct Watchdog {
    interval: Option<Duration>,
    tick: Duration,
    last_ping: Instant,
    stalled_reported: bool,
}

impl Watchdog {
    fn new() -> Watchdog {
        let interval = Notifier::watchdog_interval();
        let tick = interval
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        Watchdog {
            interval,
            tick,
            last_ping: Instant::now() - tick * 10,
            stalled_reported: false,
        }
    }

    fn check(&mut self, shared: &Shared, clocks: &[Arc<StageClock>], notifier: &Notifier) {
        let now = Instant::now();
        let limit = shared.settings(|c| Duration::from_secs_f64(c.daemon.stall_seconds));
        let stalled: Vec<_> = clocks
            .iter()
            .filter_map(|c| c.stalled(now, limit).map(|s| (c.name.clone(), s)))
            .collect();
        if stalled.is_empty() {
            if self.stalled_reported {
                tracing::info!("every stage is making progress again");
                self.stalled_reported = false;
            }
            if let Some(interval) = self.interval
                && now.duration_since(self.last_ping) >= interval
            {
                notifier.watchdog();
                self.last_ping = now;
            }
        } else if !self.stalled_reported {
            for (stage, (busy, entry)) in &stalled {
                tracing::error!(
                    stage = %stage,
                    entry = %entry,
                    busy_s = busy.as_secs(),
                    "stage stalled on one study; no longer pinging the watchdog"
                );
            }
            self.stalled_reported = true;
        }
    }
}

/// Stop: close the source, let started studies finish up to `daemon.stop_timeout_seconds`;
/// studies still in hand then stay queued in `work/` (their attempt taken back).
fn shut_down(shared: &Shared, mut stages: Stages, notifier: &mut Notifier) -> Summary {
    shared.stopping.store(true, Ordering::SeqCst);
    notifier.stopping();
    notifier.status(&shared.status());
    tracing::info!("stopping: no new studies are started");
    drop(stages.stop.take());
    drop(stages.control.take());
    let deadline = Instant::now()
        + shared.settings(|c| Duration::from_secs_f64(c.daemon.stop_timeout_seconds));
    while !stages.publisher.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let unfinished: Vec<Claimed> = lock(&shared.started).drain().map(|(_, c)| c).collect();
    for study in &unfinished {
        // Interrupted by us, not by the study: this attempt does not count.
        let _ = shared.journal.cancel_attempt(study);
        tracing::warn!(entry = %study.entry, "still processing at the stop deadline; stays queued in work/");
    }
    if stages.publisher.is_finished() {
        let _ = stages.publisher.join();
        for t in stages.threads {
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
    Summary {
        done: c.done,
        failed: c.failed,
        last_published: c.last_published.take(),
    }
}

/// The name of a stage thread that has ended; while the daemon is not stopping, none may.
fn ended_stage<'a>(mut threads: impl Iterator<Item = &'a JoinHandle<()>>) -> Option<String> {
    threads
        .find(|t| t.is_finished())
        .map(|t| t.thread().name().unwrap_or("unnamed").to_string())
}
