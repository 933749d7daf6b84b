//! `tracerd run`: the stages, their threads and channels, shutdown and reload.
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

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, never, select};

use crate::config::{Config, ConfigError};
use crate::journal::{Claimed, Journal};
use crate::outbox::OrAbsent;
use crate::process::{self, Findings, ModelInfo, Processor, Published};
use crate::service::{self, Notifier, Signal};
use crate::study::{self, Study, StudyError};
use crate::watch::{self, InboxWatcher, Tracker};

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
}

/// A claimed study on its way through the stages.
#[derive(Debug)]
struct Job {
    study: Claimed,
    queued_at: Instant,
    retries: u32,
}

impl Job {
    /// The job again, due after a back-off that grows with each retry.
    fn retry_later(self) -> (Instant, Job) {
        let due = Instant::now() + backoff(self.retries);
        let retries = self.retries + 1;
        (due, Job { retries, ..self })
    }
}

struct Loaded {
    job: Job,
    study: Study,
    ingest_ms: f64,
}

enum Outcome {
    Analysed {
        job: Job,
        study: Box<Study>,
        findings: Box<Findings>,
        ingest_ms: f64,
        models: ModelInfo,
    },
    Failed {
        job: Job,
        error: StudyError,
    },
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
    counters: Mutex<Counters>,
}

impl Shared {
    fn settings<T>(&self, f: impl FnOnce(&Config) -> T) -> T {
        f(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn status(&self) -> String {
        let c = lock(&self.counters);
        let state = if self.stopping() {
            "stopping".to_string()
        } else if let Some(why) = &c.paused {
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
    let processor = Processor::new(&config).map_err(FatalError::Models)?;
    let backend = processor.model_info().backend();
    let daemon = config.daemon.clone();
    let shared = Arc::new(Shared {
        journal,
        config: RwLock::new(config),
        stopping: AtomicBool::new(false),
        started: Mutex::new(HashMap::new()),
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
                Ok(Signal::Reload) => reload(&shared, &options, &control_tx, &notifier),
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

/// SIGHUP: re-read the config file; apply what can change while running (watch settings,
/// stall and stop limits, engines and models); say what needs a restart.
fn reload(shared: &Shared, options: &RunOptions, control: &Sender<Box<Config>>, n: &Notifier) {
    let Some(path) = &options.config_path else {
        tracing::info!("SIGHUP: running on embedded defaults, nothing to reload");
        return;
    };
    n.reloading();
    let new = Config::load(Some(path)).and_then(|c| c.validate().map(|()| c));
    match new {
        Err(error) => {
            tracing::error!(%error, "SIGHUP: configuration not reloaded; keeping the running one")
        }
        Ok(mut new) => {
            let mut current = shared.config.write().unwrap_or_else(|e| e.into_inner());
            if new.paths != current.paths {
                tracing::warn!("SIGHUP: [paths] changes take effect at the next restart");
                new.paths = current.paths.clone();
            }
            if (
                new.daemon.ingest_workers,
                new.daemon.queue_length,
                new.daemon.inputs_after_publish,
            ) != (
                current.daemon.ingest_workers,
                current.daemon.queue_length,
                current.daemon.inputs_after_publish,
            ) {
                tracing::warn!(
                    "SIGHUP: daemon.ingest_workers, queue_length and inputs_after_publish take effect at the next restart"
                );
                new.daemon.ingest_workers = current.daemon.ingest_workers;
                new.daemon.queue_length = current.daemon.queue_length;
                new.daemon.inputs_after_publish = current.daemon.inputs_after_publish;
            }
            *current = new.clone();
            drop(current);
            let _ = control.send(Box::new(new));
            tracing::info!("SIGHUP: configuration reloaded; models reload before the next study");
        }
    }
    n.ready();
}

struct Scanner {
    shared: Arc<Shared>,
    clock: Arc<StageClock>,
    jobs: Sender<Job>,
    retries: Receiver<(Instant, Job)>,
    stop: Receiver<()>,
    scanned: Option<Sender<()>>,
    pending: VecDeque<Job>,
    /// Complete entries that could not be claimed (permissions), and when to try again.
    claim_failed: HashMap<String, Instant>,
}

/// How long an entry that could not be claimed is left alone.
const CLAIM_RETRY: Duration = Duration::from_secs(60);

impl Scanner {
    fn run(mut self) {
        let inbox = self.shared.journal.paths().inbox.clone();
        let (hint_tx, hint_rx) = bounded::<()>(1);
        let _watcher = match InboxWatcher::start(&inbox, hint_tx) {
            Ok(w) => Some(w),
            Err(error) => {
                tracing::warn!(%error, "no file-system events for the inbox; relying on the periodic rescan");
                None
            }
        };
        let mut tracker = Tracker::new(self.settle());
        let mut waiting: Vec<(Instant, Job)> = Vec::new();
        let mut next_scan = Instant::now();
        loop {
            let now = Instant::now();
            // Retries that are due go to the front: they were claimed first.
            waiting.sort_by_key(|(due, _)| *due);
            while waiting.first().is_some_and(|(due, _)| *due <= now) {
                let (_, job) = waiting.remove(0);
                self.pending.push_front(job);
            }
            if now >= next_scan {
                let clock = self.clock.clone();
                let _busy = clock.busy("inbox scan");
                tracker.set_settle(self.settle());
                self.scan(&inbox, &mut tracker);
                next_scan = now + self.rescan();
                if let Some(tx) = self.scanned.take() {
                    let _ = tx.send(());
                }
            }
            while let Some(job) = self.pending.pop_front() {
                match self.jobs.try_send(job) {
                    Ok(()) => {}
                    Err(TrySendError::Full(job)) => {
                        self.pending.push_front(job);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
            let mut wake = next_scan;
            if let Some(d) = tracker.next_deadline() {
                wake = wake.min(d);
            }
            if let Some((due, _)) = waiting.first() {
                wake = wake.min(*due);
            }
            if !self.pending.is_empty() {
                // The ingest channel is full; look again shortly.
                wake = wake.min(Instant::now() + Duration::from_millis(200));
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            select! {
                recv(self.stop) -> _ => return,
                recv(hint_rx) -> _ => {
                    // Let a burst of events settle into one scan.
                    next_scan = next_scan.min(Instant::now() + Duration::from_millis(250));
                },
                recv(self.retries) -> msg => if let Ok(retry) = msg { waiting.push(retry) },
                default(timeout) => {},
            }
            if self.shared.stopping() {
                return;
            }
        }
    }

    fn settle(&self) -> Duration {
        self.shared
            .settings(|c| Duration::from_secs_f64(c.watch.settle_seconds))
    }

    fn rescan(&self) -> Duration {
        self.shared
            .settings(|c| Duration::from_secs_f64(c.watch.rescan_seconds))
    }

    fn scan(&mut self, inbox: &std::path::Path, tracker: &mut Tracker) {
        let scan = match watch::scan(inbox) {
            Ok(s) => s,
            Err(error) => {
                tracing::error!(%error, inbox = %inbox.display(), "cannot scan the inbox");
                return;
            }
        };
        if scan.odd_names > 0 {
            tracing::warn!(
                entries = scan.odd_names,
                "inbox entries with names that are not UTF-8 are left alone"
            );
        }
        let complete = tracker.update(Instant::now(), &scan.entries, |entry| {
            let complete = watch::dicom_pet_complete(&inbox.join(&entry.name));
            if complete {
                tracing::info!(
                    entry = %crate::journal::entry_id(&entry.name),
                    "DICOM PET series complete by ImageIndex; not waiting for the settle time"
                );
            }
            complete
        });
        if complete.is_empty() {
            return;
        }
        let floor = self.shared.settings(|c| c.watch.min_free_mib);
        match self.shared.journal.free_mib() {
            Ok(free) if free < floor => {
                let why = format!("{free} MiB free, below the {floor} MiB floor");
                if lock(&self.shared.counters).paused.replace(why).is_none() {
                    tracing::warn!(
                        free_mib = free,
                        floor_mib = floor,
                        "low disk space: not claiming new studies"
                    );
                }
                return;
            }
            Ok(_) => {
                if lock(&self.shared.counters).paused.take().is_some() {
                    tracing::info!("disk space is above the floor again; claiming studies");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read free disk space"),
        }
        let now = Instant::now();
        self.claim_failed
            .retain(|name, _| scan.entries.iter().any(|e| &e.name == name));
        for name in complete {
            if self
                .claim_failed
                .get(&name)
                .is_some_and(|&retry| retry > now)
            {
                continue;
            }
            match self.shared.journal.claim(&name) {
                Ok(study) => {
                    self.claim_failed.remove(&name);
                    tracing::info!(entry = %study.entry, "claimed a complete study");
                    lock(&self.shared.counters).queued += 1;
                    self.pending.push_back(Job {
                        study,
                        queued_at: Instant::now(),
                        retries: 0,
                    });
                }
                Err(error) => {
                    // Said once; tried again every minute until it works or the entry goes.
                    if self
                        .claim_failed
                        .insert(name.clone(), now + CLAIM_RETRY)
                        .is_none()
                    {
                        tracing::warn!(
                            entry = %crate::journal::entry_id(&name),
                            %error,
                            "cannot claim a study; it stays in the inbox (retried every minute)"
                        );
                    }
                }
            }
        }
    }
}

fn ingest(
    shared: &Shared,
    clock: &StageClock,
    jobs: Receiver<Job>,
    loaded: Sender<Loaded>,
    outcomes: Sender<Outcome>,
    retries: Sender<(Instant, Job)>,
) {
    for job in jobs {
        if shared.stopping() {
            continue; // stays queued in work/ for the next start
        }
        let study = {
            let _busy = clock.busy(&job.study.entry);
            match shared.journal.begin_attempt(&job.study) {
                Ok(attempt) => {
                    if attempt > 1 {
                        tracing::warn!(entry = %job.study.entry, attempt, "trying a study again after an interruption");
                    }
                    lock(&shared.started).insert(job.study.name.clone(), job.study.clone());
                }
                Err(error) => {
                    tracing::warn!(entry = %job.study.entry, %error, "cannot record the attempt; will retry");
                    let _ = retries.send(job.retry_later());
                    continue;
                }
            }
            let t = Instant::now();
            let key = process::key_from_name(&job.study.name);
            study::load(&job.study.dir, &key).map(|s| (s, t.elapsed().as_secs_f64() * 1e3))
        };
        let sent = match study {
            Ok((study, ingest_ms)) => {
                tracing::info!(entry = %job.study.entry, key = %study.key, ms = ingest_ms.round(), "ingested");
                loaded
                    .send(Loaded {
                        job,
                        study,
                        ingest_ms,
                    })
                    .is_ok()
            }
            Err(error) => outcomes.send(Outcome::Failed { job, error }).is_ok(),
        };
        if !sent {
            return;
        }
    }
}

fn infer(
    shared: &Shared,
    clock: &StageClock,
    mut processor: Processor,
    loaded: Receiver<Loaded>,
    control: Receiver<Box<Config>>,
    outcomes: Sender<Outcome>,
) {
    let mut control = Some(control);
    let reload = |processor: &mut Processor, config: &Config| match Processor::new(config) {
        Ok(p) => {
            *processor = p;
            let b = processor.model_info().backend();
            lock(&shared.counters).engine = format!("{} on {}", b.engine, b.device);
            tracing::info!(engine = %b.engine, device = %b.device, "models reloaded");
        }
        Err(error) => tracing::error!(%error, "models not reloaded; keeping the loaded ones"),
    };
    loop {
        // A reload requested while studies wait applies to the next of them.
        while let Some(Ok(config)) = control.as_ref().map(|c| c.try_recv()) {
            reload(&mut processor, &config);
        }
        let no_control = never();
        select! {
            recv(control.as_ref().unwrap_or(&no_control)) -> msg => match msg {
                Ok(config) => reload(&mut processor, &config),
                Err(_) => control = None,
            },
            recv(loaded) -> msg => {
                let Ok(Loaded { job, study, ingest_ms }) = msg else { return };
                let outcome = {
                    let _busy = clock.busy(&job.study.entry);
                    match processor.analyse(&study) {
                        Ok(findings) => Outcome::Analysed {
                            job,
                            study: Box::new(study),
                            findings: Box::new(findings),
                            ingest_ms,
                            models: processor.model_info(),
                        },
                        Err(error) => Outcome::Failed { job, error },
                    }
                };
                if outcomes.send(outcome).is_err() {
                    return;
                }
            },
        }
    }
}

fn publish(
    shared: &Shared,
    clock: &StageClock,
    outcomes: Receiver<Outcome>,
    retries: Sender<(Instant, Job)>,
) {
    let outbox = shared.journal.paths().outbox.clone();
    for outcome in outcomes {
        let (job, error) = match outcome {
            Outcome::Analysed {
                job,
                study,
                findings,
                ingest_ms,
                models,
            } => {
                let _busy = clock.busy(&job.study.entry);
                let lesions = findings.lesions.as_ref().map(|(_, s)| s.count);
                match process::publish(&study, *findings, &models, &outbox, ingest_ms) {
                    Ok(published) => match shared.journal.finish(&job.study) {
                        Ok(_) => {
                            let latency = job.queued_at.elapsed();
                            let scores = match &published.result.scores {
                                OrAbsent::Present(s) => Some(s.scores),
                                OrAbsent::Absent { .. } => None,
                            };
                            tracing::info!(
                                entry = %job.study.entry,
                                key = %published.key,
                                lesions,
                                lr = scores.map(|s| s.lr),
                                dm = scores.map(|s| s.dm),
                                os = scores.map(|s| s.os),
                                engine = %published.result.backend.engine,
                                latency_s = latency.as_secs_f64(),
                                "published"
                            );
                            lock(&shared.started).remove(&job.study.name);
                            let mut c = lock(&shared.counters);
                            c.done += 1;
                            c.queued = c.queued.saturating_sub(1);
                            c.last_latency = Some(latency);
                            c.last_published = Some(published);
                            continue;
                        }
                        Err(e) => (
                            job,
                            StudyError::new(
                                study::Stage::Publish,
                                format!("published, but cannot move the inputs out of work/: {e}"),
                                "check the permissions of paths.work and paths.archive",
                            )
                            .transient(),
                        ),
                    },
                    Err(error) => (job, error),
                }
            }
            Outcome::Failed { job, error } => (job, error),
        };
        let _busy = clock.busy(&job.study.entry);
        lock(&shared.started).remove(&job.study.name);
        if error.transient {
            let _ = shared.journal.cancel_attempt(&job.study);
            tracing::warn!(entry = %job.study.entry, %error, retry_in_s = backoff(job.retries).as_secs(), "transient error; the study will be tried again");
            let _ = retries.send(job.retry_later());
            continue;
        }
        match shared.journal.fail(&job.study, &error) {
            Ok(_) => {
                tracing::warn!(entry = %job.study.entry, stage = %error.stage, error = %error.error, "study failed; inputs and error.json are in failed/");
                let mut c = lock(&shared.counters);
                c.failed += 1;
                c.queued = c.queued.saturating_sub(1);
            }
            Err(e) => {
                tracing::error!(entry = %job.study.entry, error = %e, "cannot move a failed study to failed/; will retry");
                let _ = retries.send(job.retry_later());
            }
        }
    }
}

/// 5 s, 10 s, 20 s, … up to 5 minutes.
fn backoff(retries: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << retries.min(6)).min(300))
}
