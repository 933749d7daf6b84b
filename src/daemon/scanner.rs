//! The scanner: rescans the inbox, decides completeness and claims complete studies into
//! `work/`; claimed studies wait in its queue and are handed to ingest as it has room.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select};

use super::journal::{self, Claimed};
use super::stages::Job;
use super::watch::{self, InboxWatcher, Tracker};
use super::{Shared, StageClock, lock};

pub(super) struct Scanner {
    pub(super) shared: Arc<Shared>,
    pub(super) clock: Arc<StageClock>,
    pub(super) jobs: Sender<Job>,
    pub(super) retries: Receiver<(Instant, Job)>,
    pub(super) stop: Receiver<()>,
    pub(super) scanned: Option<Sender<()>>,
    pub(super) pending: VecDeque<Job>,
    /// Complete entries that could not be claimed (permissions), and when to try again.
    pub(super) claim_failed: HashMap<String, Instant>,
}

/// How long an entry that could not be claimed is left alone.
const CLAIM_RETRY: Duration = Duration::from_secs(60);

impl Scanner {
    /// The scanner stage; the `requeued` studies (recovered from the journal) go first.
    pub(super) fn new(
        shared: Arc<Shared>,
        clock: Arc<StageClock>,
        jobs: Sender<Job>,
        retries: Receiver<(Instant, Job)>,
        stop: Receiver<()>,
        scanned: Sender<()>,
        requeued: Vec<Claimed>,
    ) -> Scanner {
        let pending = requeued
            .into_iter()
            .map(|study| Job {
                study,
                queued_at: Instant::now(),
                retries: 0,
            })
            .collect();
        Scanner {
            shared,
            clock,
            jobs,
            retries,
            stop,
            scanned: Some(scanned),
            pending,
            claim_failed: HashMap::new(),
        }
    }

    pub(super) fn run(mut self) {
        super::guard::fault::maybe_kill_thread("scanner");
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
            self.release_due(&mut waiting, now);
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
            if !self.dispatch() {
                return;
            }
            let timeout = self
                .wake_at(next_scan, &tracker, &waiting)
                .saturating_duration_since(Instant::now());
            select! {
                recv(self.stop) -> _ => return,
                recv(hint_rx) -> _ => {
                    // Let a burst of events settle into one scan.
                    next_scan = next_scan.min(Instant::now() + Duration::from_millis(250));
                },
                recv(self.retries) -> msg => if let Ok(retry) = msg {
                    self.shared.job_returned();
                    waiting.push(retry);
                },
                default(timeout) => {},
            }
            if self.shared.stopping() {
                return;
            }
        }
    }

    /// Retries that are due go to the front of the queue: they were claimed first.
    fn release_due(&mut self, waiting: &mut Vec<(Instant, Job)>, now: Instant) {
        waiting.sort_by_key(|(due, _)| *due);
        while waiting.first().is_some_and(|(due, _)| *due <= now) {
            let (_, job) = waiting.remove(0);
            self.pending.push_front(job);
        }
    }

    /// Hands queued studies to ingest while its channel has room and dispatching is allowed;
    /// false once ingest is gone (the daemon is stopping).
    fn dispatch(&mut self) -> bool {
        while self.shared.may_dispatch()
            && let Some(job) = self.pending.pop_front()
        {
            match self.jobs.try_send(job) {
                Ok(()) => {
                    self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
                }
                Err(TrySendError::Full(job)) => {
                    self.pending.push_front(job);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        true
    }

    /// When to look again with no event: the next scan, a study's settle deadline or a due
    /// retry, whichever comes first, and soon while studies wait for room in ingest.
    fn wake_at(
        &self,
        next_scan: Instant,
        tracker: &Tracker,
        waiting: &[(Instant, Job)],
    ) -> Instant {
        let mut wake = next_scan;
        if let Some(d) = tracker.next_deadline() {
            wake = wake.min(d);
        }
        if let Some((due, _)) = waiting.first() {
            wake = wake.min(*due);
        }
        if !self.pending.is_empty() {
            // The ingest channel is full, or a suspect runs alone; look again shortly.
            wake = wake.min(Instant::now() + Duration::from_millis(200));
        }
        wake
    }

    fn settle(&self) -> Duration {
        self.shared
            .settings(|c| Duration::from_secs_f64(c.watch.settle_seconds))
    }

    fn rescan(&self) -> Duration {
        self.shared
            .settings(|c| Duration::from_secs_f64(c.watch.rescan_seconds))
    }

    /// Whether new studies may be claimed now: not while results cannot be written (probed
    /// here, so claiming resumes even with no study waiting to be published) nor while free
    /// space is below the floor. Each pause and its end is logged once.
    fn claiming_allowed(&self) -> bool {
        if lock(&self.shared.counters).outbox_problem.is_some() {
            // Said by the publisher; cleared by the next study it publishes, or here once a
            // probe file can be written, so claiming resumes even with no study waiting.
            if outbox_writable(&self.shared.journal.paths().outbox).is_err() {
                return false;
            }
            if lock(&self.shared.counters).outbox_problem.take().is_some() {
                tracing::info!("results can be written again; claiming studies");
            }
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
                return false;
            }
            Ok(_) => {
                if lock(&self.shared.counters).paused.take().is_some() {
                    tracing::info!("disk space is above the floor again; claiming studies");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read free disk space"),
        }
        true
    }

    fn scan(&mut self, inbox: &std::path::Path, tracker: &mut Tracker) {
        let scan = match watch::scan(inbox) {
            Ok(s) => s,
            Err(error) => {
                tracing::error!(%error, inbox = %inbox.display(), "cannot scan the inbox");
                return;
            }
        };
        let complete = tracker.update(Instant::now(), &scan.entries, |entry| {
            let complete = watch::dicom_study_complete(&inbox.join(&entry.source));
            if complete {
                tracing::info!(
                    entry = %journal::entry_id(&entry.name),
                    "DICOM study complete (PET by ImageIndex, CT over its extent); not waiting for the settle time"
                );
            }
            complete
        });
        if !self.claiming_allowed() || complete.is_empty() {
            return;
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
            if let Some(entry) = scan.entries.iter().find(|e| e.name == name) {
                self.claim(&entry.source, name, now);
            }
        }
    }

    /// Claims one complete study into `work/` and queues it; a claim that fails is said once and
    /// tried again every minute until it works or the entry goes.
    fn claim(&mut self, source: &std::ffi::OsStr, name: String, now: Instant) {
        match self.shared.journal.claim_as(source, &name) {
            Ok(study) => {
                self.claim_failed.remove(&name);
                if source.to_str().is_none() {
                    tracing::warn!(entry = %study.entry, "the study's inbox name is not UTF-8; it is processed as {name}");
                }
                tracing::info!(entry = %study.entry, "claimed a complete study");
                lock(&self.shared.counters).queued += 1;
                self.pending.push_back(Job {
                    study,
                    queued_at: Instant::now(),
                    retries: 0,
                });
            }
            Err(error) => {
                if self
                    .claim_failed
                    .insert(name.clone(), now + CLAIM_RETRY)
                    .is_none()
                {
                    tracing::warn!(
                        entry = %journal::entry_id(&name),
                        %error,
                        "cannot claim a study; it stays in the inbox (retried every minute)"
                    );
                }
            }
        }
    }
}

/// Writes, syncs and removes a small temporary file in the outbox: whether results can be
/// written there again.
fn outbox_writable(outbox: &std::path::Path) -> std::io::Result<()> {
    crate::fsio::injected_full_disk()?;
    let probe = crate::fsio::temp_path_for(&outbox.join("probe"));
    let written =
        std::fs::write(&probe, [0u8; 4096]).and_then(|()| std::fs::File::open(&probe)?.sync_all());
    let _ = std::fs::remove_file(&probe);
    written
}
