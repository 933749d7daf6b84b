//! Delivery of published results to each configured destination (`[delivery]`).
//!
//! One thread per destination, so that one that is down (or slow to time out) delays no
//! other. A worker learns of a study when it is published, and at start finds every study in
//! the outbox whose record still has it pending (a restart resumes where it stopped). Each
//! try sends the files not yet confirmed; each confirmation is written to the record at once,
//! so nothing confirmed is sent again. A failed try is retried after a back-off
//! (`retry_initial_seconds`, doubling, at most `retry_max_seconds`) up to `max_attempts`
//! tries, then the destination is marked `failed` for that study and an error is logged.
//! Processing never waits for delivery.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select};

use super::record::{self, DestinationState, State, StudyDir};
use super::scu::{self, Instance, Peer};
use super::stow::{self, Service};
use crate::config::{Delivery, Destination, Protocol};
use crate::daemon::metrics::{DeliveryOutcome, Metrics};
use crate::process::key_for_log;

/// The delivery workers.
pub struct Deliverer {
    workers: Mutex<Vec<(Sender<String>, JoinHandle<()>)>>,
    stop: Mutex<Option<Sender<()>>>,
    pending: Arc<AtomicUsize>,
}

impl Deliverer {
    /// Starts one worker per destination; `calling` is the AE title used where a C-STORE
    /// destination names none.
    pub fn start(
        config: &Delivery,
        calling: &str,
        outbox: &Path,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Deliverer> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let pending = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for destination in &config.destinations {
            let (tx, rx) = crossbeam_channel::unbounded();
            let worker = Worker {
                target: Target::new(destination, calling, config.timeout_seconds)?,
                name: destination.name.clone(),
                policy: Policy::of(config),
                outbox: outbox.to_path_buf(),
                due: BTreeSet::new(),
                pending: pending.clone(),
                metrics: metrics.clone(),
            };
            let stop = stop_rx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("deliver-{}", destination.name))
                .spawn(move || worker.run(rx, stop))?;
            workers.push((tx, handle));
        }
        Ok(Deliverer {
            workers: Mutex::new(workers),
            stop: Mutex::new(Some(stop_tx)),
            pending,
        })
    }

    /// A study was published: each destination looks at its record.
    pub fn published(&self, key: &str) {
        for (tx, _) in lock(&self.workers).iter() {
            let _ = tx.send(key.to_string());
        }
    }

    /// Deliveries (study × destination) waiting or being tried.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Stops the workers (a try in progress finishes first; what is pending stays in the
    /// records for the next start).
    pub fn stop(&self) {
        drop(lock(&self.stop).take());
        let workers: Vec<_> = lock(&self.workers).drain(..).collect();
        for (tx, handle) in workers {
            drop(tx);
            let _ = handle.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How tries are spaced and when to give up.
#[derive(Debug, Clone, Copy)]
struct Policy {
    initial: Duration,
    max: Duration,
    max_attempts: u32,
}

impl Policy {
    fn of(c: &Delivery) -> Policy {
        Policy {
            initial: Duration::from_secs_f64(c.retry_initial_seconds),
            max: Duration::from_secs_f64(c.retry_max_seconds),
            max_attempts: c.max_attempts,
        }
    }

    /// The wait after the `attempts`-th failed try.
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// A destination, ready to send to.
enum Target {
    Dimse(Peer),
    Web(Service),
}

impl Target {
    fn new(d: &Destination, calling: &str, timeout_s: f64) -> std::io::Result<Target> {
        let timeout = Duration::from_secs_f64(timeout_s);
        Ok(match d.protocol {
            Protocol::CStore => Target::Dimse(Peer {
                address: d.address.clone().unwrap_or_default(),
                called: d.ae_title.clone().unwrap_or_default(),
                calling: d
                    .calling_ae_title
                    .clone()
                    .unwrap_or_else(|| calling.to_string()),
                timeout,
            }),
            Protocol::StowRs => Target::Web(Service {
                url: d.url.clone().unwrap_or_default(),
                basic: basic_auth(d)?,
                timeout,
            }),
        })
    }

    /// Sends `names` from `dir`, calling `confirmed` for each file the destination confirms.
    fn send(
        &self,
        dir: &StudyDir,
        names: &[String],
        mut confirmed: impl FnMut(&str),
    ) -> Result<(), String> {
        let read = |n: &String| dir.read(n).map_err(|e| format!("{n}: {e}"));
        match self {
            Target::Dimse(peer) => {
                let instances = names
                    .iter()
                    .map(|n| Instance::from_part10(n, &read(n)?))
                    .collect::<Result<Vec<_>, String>>()?;
                scu::store(peer, &instances, |i| confirmed(&i.name))
            }
            Target::Web(service) => names.iter().try_for_each(|n| {
                stow::store(service, n, &read(n)?)?;
                confirmed(n);
                Ok(())
            }),
        }
    }

    /// Whether the destination answers (`tracerd check`).
    pub fn check(&self) -> Result<String, String> {
        match self {
            Target::Dimse(peer) => {
                scu::echo(peer)?;
                Ok(format!(
                    "answers C-ECHO ({} at {})",
                    peer.called, peer.address
                ))
            }
            Target::Web(service) => {
                let code = stow::check(service)?;
                Ok(format!("answers HTTP {code} ({})", service.url))
            }
        }
    }
}

/// Whether `destination` answers: C-ECHO, or a DICOMweb query.
pub fn check(destination: &Destination, calling: &str, timeout_s: f64) -> Result<String, String> {
    Target::new(destination, calling, timeout_s)
        .map_err(|e| e.to_string())?
        .check()
}

fn basic_auth(d: &Destination) -> std::io::Result<Option<(String, String)>> {
    let (Some(user), Some(file)) = (&d.username, &d.password_file) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        std::io::Error::new(e.kind(), format!("password_file {}: {e}", file.display()))
    })?;
    let password = text.lines().next().unwrap_or_default().to_string();
    Ok(Some((user.clone(), password)))
}

/// One destination's worker.
struct Worker {
    target: Target,
    name: String,
    policy: Policy,
    outbox: PathBuf,
    /// Studies to try, by when.
    due: BTreeSet<(Instant, String)>,
    pending: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn run(mut self, published: Receiver<String>, stop: Receiver<()>) {
        self.resume();
        loop {
            while let Some((when, key)) = self.due.first().cloned() {
                if when > Instant::now() {
                    break;
                }
                self.due.remove(&(when, key.clone()));
                self.pending.fetch_sub(1, Ordering::SeqCst);
                self.attempt(&key);
            }
            let timer = self
                .due
                .first()
                .map_or_else(never, |(when, _)| crossbeam_channel::at(*when));
            select! {
                recv(stop) -> _ => return,
                recv(published) -> key => match key {
                    Ok(key) => self.schedule(key, Instant::now()),
                    Err(_) => return,
                },
                recv(timer) -> _ => {},
            }
        }
    }

    fn schedule(&mut self, key: String, when: Instant) {
        if let Some(existing) = self.due.iter().find(|(_, k)| *k == key).cloned() {
            self.due.remove(&existing);
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
        self.due.insert((when, key));
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// At start: every study whose record has this destination pending, due when its record
    /// says (at once if that has passed).
    fn resume(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.outbox) else {
            return;
        };
        for entry in entries.flatten() {
            let key = entry.file_name().to_string_lossy().into_owned();
            if key.starts_with('.') {
                continue;
            }
            let Some(state) = StudyDir::open(&self.outbox, &key)
                .and_then(|d| d.record())
                .ok()
                .flatten()
                .and_then(|r| r.destinations.into_iter().find(|d| d.name == self.name))
            else {
                continue;
            };
            if state.state == State::Pending {
                let when = state
                    .next_attempt
                    .as_deref()
                    .map_or_else(Instant::now, due_at);
                self.schedule(key, when);
            }
        }
    }

    /// One try for one study.
    fn attempt(&mut self, key: &str) {
        let dir = match StudyDir::open(&self.outbox, key) {
            Ok(d) => d,
            Err(_) => return, // the result was removed
        };
        let record = match dir.record() {
            Ok(r) => r,
            Err(error) => {
                let key = key_for_log(key);
                tracing::error!(destination = %self.name, %key, %error, "cannot read the delivery record in result.json; not delivered");
                return;
            }
        };
        let Some(entry) =
            record.and_then(|r| r.destinations.into_iter().find(|d| d.name == self.name))
        else {
            return;
        };
        if entry.state != State::Pending {
            return;
        }
        let names: Vec<String> = entry
            .files
            .iter()
            .filter(|f| f.delivered_at.is_none())
            .map(|f| f.file.clone())
            .collect();
        let sent = self.target.send(&dir, &names, |file| {
            let _ = dir.update(&self.name, |e| {
                if let Some(f) = e.files.iter_mut().find(|f| f.file == file) {
                    f.delivered_at = Some(record::now_rfc3339());
                }
            });
        });
        self.settle(key, &dir, sent);
    }

    /// Records the outcome of a try, logs it, and schedules the next one if any.
    fn settle(&mut self, key: &str, dir: &StudyDir, sent: Result<(), String>) {
        let policy = self.policy;
        let mut retry = None;
        let written = dir.update(&self.name, |e| {
            e.attempts += 1;
            outcome(e, &sent, &policy, &mut retry);
        });
        let study = key_for_log(key);
        if let Ok(Some(e)) = &written {
            let outcome = match e.state {
                State::Delivered => DeliveryOutcome::Delivered,
                State::Failed => DeliveryOutcome::GivenUp,
                _ => DeliveryOutcome::Retrying,
            };
            self.metrics.delivery(&self.name, outcome);
        }
        match (&written, &sent) {
            (Ok(Some(e)), Ok(())) => {
                tracing::info!(destination = %self.name, key = %study, files = e.files.len(), attempts = e.attempts, "results delivered")
            }
            (Ok(Some(e)), Err(error)) if e.state == State::Failed => {
                tracing::error!(destination = %self.name, key = %study, attempts = e.attempts, %error, "delivery given up; see result.json")
            }
            (Ok(Some(e)), Err(error)) => {
                tracing::warn!(destination = %self.name, key = %study, attempts = e.attempts, retry_in_s = retry.map_or(0, |d: Duration| d.as_secs()), %error, "delivery failed; will retry")
            }
            (Ok(None), _) => {}
            (Err(error), _) => {
                tracing::error!(destination = %self.name, key = %study, %error, "cannot update the delivery record; will retry");
                retry = Some(policy.initial);
            }
        }
        if let Some(wait) = retry {
            self.schedule(key.to_string(), Instant::now() + wait);
        }
    }
}

/// The record after a try: delivered, pending with the next try's time, or failed.
fn outcome(
    e: &mut DestinationState,
    sent: &Result<(), String>,
    policy: &Policy,
    retry: &mut Option<Duration>,
) {
    match sent {
        Ok(()) => {
            e.state = State::Delivered;
            e.last_error = None;
            e.next_attempt = None;
        }
        Err(error) => {
            e.last_error = Some(error.clone());
            if e.attempts >= policy.max_attempts {
                e.state = State::Failed;
                e.next_attempt = None;
            } else {
                let wait = policy.backoff(e.attempts);
                let at = chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                e.next_attempt = Some(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                *retry = Some(wait);
            }
        }
    }
}

/// The instant an RFC 3339 time falls on (now, if it has passed or does not parse).
fn due_at(text: &str) -> Instant {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) else {
        return Instant::now();
    };
    let wait = (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    Instant::now() + wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_maximum() {
        let p = Policy {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(1800),
            max_attempts: 5,
        };
        let waits: Vec<u64> = (1..=8).map(|a| p.backoff(a).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1800, 1800]);
        let mut e = DestinationState {
            name: "pacs".into(),
            protocol: Protocol::CStore,
            state: State::Pending,
            attempts: 5,
            last_error: None,
            next_attempt: None,
            files: vec![],
        };
        let mut retry = None;
        outcome(&mut e, &Err("down".into()), &p, &mut retry);
        assert_eq!((e.state, retry), (State::Failed, None));
        e.attempts = 2;
        e.state = State::Pending;
        outcome(&mut e, &Err("down".into()), &p, &mut retry);
        assert_eq!(
            (e.state, retry),
            (State::Pending, Some(Duration::from_secs(60)))
        );
        let due = due_at(e.next_attempt.as_deref().unwrap());
        assert!(due > Instant::now() + Duration::from_secs(55));
        outcome(&mut e, &Ok(()), &p, &mut retry);
        assert_eq!((e.state, e.last_error.as_deref()), (State::Delivered, None));
    }
}
