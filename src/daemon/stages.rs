//! The stages a claimed study passes: ingest (load and check), inference (the models) and
//! publish (outbox, archive or failed/).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select};

use super::guard::{fault, guarded};
use super::journal::Claimed;
use super::metrics::{StageName, StudyOutcome};
use super::{Shared, StageClock, lock};
use crate::config::{Config, Destination};
use crate::models::l2snet::Ct;
use crate::outbox::OrAbsent;
use crate::process::{self, Findings, ModelInfo, Processor, Published};
use crate::study::{self, Stage, Study, StudyError};

/// A claimed study on its way through the stages.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) study: Claimed,
    pub(super) queued_at: Instant,
    pub(super) retries: u32,
}

impl Job {
    /// The job again, due after a back-off that grows with each retry.
    pub(super) fn retry_later(self) -> (Instant, Job) {
        let due = Instant::now() + backoff(self.retries);
        let retries = self.retries + 1;
        (due, Job { retries, ..self })
    }
}

/// A study read and made ready for inference (`process::prepare`: its CT on the model grid).
pub(super) struct Loaded {
    job: Job,
    study: Study,
    ct: Option<Ct>,
    ingest_ms: f64,
}

pub(super) enum Outcome {
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

pub(super) fn ingest(
    shared: &Shared,
    clock: &StageClock,
    jobs: Receiver<Job>,
    loaded: Sender<Loaded>,
    outcomes: Sender<Outcome>,
    retries: Sender<(Instant, Job)>,
) {
    fault::maybe_kill_thread("ingest");
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
            guarded(Stage::Ingest, &job.study.name, || {
                let key = process::key_from_name(
                    &job.study.name,
                    shared.settings(|c| c.outbox.nifti_key),
                );
                let (limits, scope) = shared.settings(|c| (c.limits, c.scope.clone()));
                let study = study::load(&job.study.dir, &key, &limits, &scope)?;
                Ok(process::prepare(study, &shared.l2snet_params()))
            })
            .map(|s| (s, t.elapsed().as_secs_f64() * 1e3))
        };
        let sent = match study {
            Ok(((study, ct), ingest_ms)) => {
                let took = Duration::from_secs_f64(ingest_ms / 1e3);
                shared.metrics.stage(StageName::Ingest, took);
                tracing::info!(entry = %job.study.entry, key = %process::key_for_log(&study.key), ms = ingest_ms.round(), "ingested");
                loaded
                    .send(Loaded {
                        job,
                        study,
                        ct,
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

pub(super) fn infer(
    shared: &Shared,
    clock: &StageClock,
    mut processor: Processor,
    loaded: Receiver<Loaded>,
    control: Receiver<Box<Config>>,
    outcomes: Sender<Outcome>,
) {
    fault::maybe_kill_thread("inference");
    let mut control = Some(control);
    let reload = |processor: &mut Processor, config: &Config| match Processor::new(config) {
        Ok(p) => {
            *processor = p;
            *shared.l2snet.write().unwrap_or_else(|e| e.into_inner()) =
                processor.l2snet_params().clone();
            shared.metrics.set_models(&processor.model_info().uses);
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
                let Ok(Loaded { job, study, ct, ingest_ms }) = msg else { return };
                let outcome = {
                    let _busy = clock.busy(&job.study.entry);
                    let t = Instant::now();
                    let analysed = guarded(Stage::Inference, &job.study.name, || processor.analyse(&study, ct));
                    shared.metrics.stage(StageName::Inference, t.elapsed());
                    match analysed {
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

pub(super) fn publish(
    shared: &Shared,
    clock: &StageClock,
    outcomes: Receiver<Outcome>,
    retries: Sender<(Instant, Job)>,
) {
    fault::maybe_kill_thread("publish");
    let publisher = Publisher {
        shared,
        clock,
        retries,
        outbox: shared.journal.paths().outbox.clone(),
        destinations: shared.settings(|c| c.delivery.destinations.clone()),
    };
    for outcome in outcomes {
        match outcome {
            Outcome::Analysed {
                job,
                study,
                findings,
                ingest_ms,
                models,
            } => publisher.analysed(job, &study, *findings, ingest_ms, &models),
            Outcome::Failed { job, error } => publisher.settle(job, error),
        }
    }
}

/// What the publish stage needs for every study.
struct Publisher<'a> {
    shared: &'a Shared,
    clock: &'a StageClock,
    retries: Sender<(Instant, Job)>,
    outbox: PathBuf,
    destinations: Vec<Destination>,
}

impl Publisher<'_> {
    /// Publishes an analysed study, or settles why it could not be.
    fn analysed(
        &self,
        job: Job,
        study: &Study,
        findings: Findings,
        ingest_ms: f64,
        models: &ModelInfo,
    ) {
        let published = {
            let _busy = self.clock.busy(&job.study.entry);
            self.publish_and_archive(&job, study, findings, ingest_ms, models)
        };
        if let Err(error) = published {
            self.settle(job, error);
        }
    }

    /// Writes the study's results to the outbox and moves its inputs out of `work/`.
    fn publish_and_archive(
        &self,
        job: &Job,
        study: &Study,
        findings: Findings,
        ingest_ms: f64,
        models: &ModelInfo,
    ) -> Result<(), StudyError> {
        let t = Instant::now();
        let lesions = findings.lesions.as_ref().map(|f| f.summary.count);
        let published = guarded(Stage::Publish, &job.study.name, || {
            process::publish(
                study,
                findings,
                models,
                &self.outbox,
                ingest_ms,
                &self.destinations,
            )
        })?;
        self.shared.journal.finish(&job.study).map_err(|e| {
            StudyError::new(
                study::Stage::Publish,
                format!("published, but cannot move the inputs out of work/: {e}"),
                "check the permissions of paths.work and paths.archive",
            )
            .transient()
        })?;
        self.record(job, published, lesions, t);
        Ok(())
    }

    /// Logs, counts and announces a study that is in the outbox and archived.
    fn record(&self, job: &Job, published: Published, lesions: Option<usize>, t: Instant) {
        let shared = self.shared;
        let latency = job.queued_at.elapsed();
        let scores = match &published.result.scores {
            OrAbsent::Present(s) => Some(s.scores),
            OrAbsent::Absent { .. } => None,
        };
        tracing::info!(
            entry = %job.study.entry,
            key = %process::key_for_log(&published.key),
            lesions,
            lr = scores.map(|s| s.lr),
            dm = scores.map(|s| s.dm),
            os = scores.map(|s| s.os),
            engine = %published.result.backend.engine,
            latency_s = latency.as_secs_f64(),
            "published"
        );
        shared.forget(&job.study.name);
        if let Some(deliverer) = &shared.deliverer {
            deliverer.published(&published.key);
        }
        shared.metrics.stage(StageName::Publish, t.elapsed());
        shared.metrics.stage(StageName::Total, latency);
        shared.metrics.study(StudyOutcome::Published);
        let mut c = lock(&shared.counters);
        if c.outbox_problem.take().is_some() {
            tracing::info!("results can be written again; claiming studies");
        }
        c.done += 1;
        c.queued = c.queued.saturating_sub(1);
        c.last_latency = Some(latency);
        c.last_published = Some(published);
    }

    /// A study that could not be published: forgotten when its folder vanished, retried after a
    /// back-off when the error is transient, otherwise moved to `failed/` with its reason.
    fn settle(&self, job: Job, error: StudyError) {
        let _busy = self.clock.busy(&job.study.entry);
        let (shared, retries) = (self.shared, &self.retries);
        lock(&shared.started).remove(&job.study.name);
        if vanished(shared, &job) {
            return;
        }
        if error.transient {
            if error.stage == Stage::Publish {
                outbox_problem(shared, &error);
            }
            let _ = shared.journal.cancel_attempt(&job.study);
            tracing::warn!(entry = %job.study.entry, %error, retry_in_s = backoff(job.retries).as_secs(), "transient error; the study will be tried again");
            shared.metrics.study(StudyOutcome::Retried);
            let _ = retries.send(job.retry_later());
            return;
        }
        match shared.journal.fail(&job.study, &error) {
            Ok(_) => {
                shared.forget(&job.study.name);
                tracing::warn!(entry = %job.study.entry, stage = %error.stage, error = %error.error, "study failed; inputs and error.json are in failed/");
                shared.metrics.study(StudyOutcome::Failed);
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

/// A study whose folder is gone from `work/` (removed by hand while it was processed) is said
/// once and forgotten: nothing is left to retry, move or count.
fn vanished(shared: &Shared, job: &Job) -> bool {
    if job.study.dir.symlink_metadata().is_ok() {
        return false;
    }
    tracing::warn!(entry = %job.study.entry, "the study's folder vanished from work/ while it was processed; forgotten");
    let _ = shared.journal.forget(&job.study);
    shared.forget(&job.study.name);
    let mut c = lock(&shared.counters);
    c.queued = c.queued.saturating_sub(1);
    true
}

/// Results cannot be written for a reason that is not the study's: pause claiming (said once)
/// until a study is published again.
fn outbox_problem(shared: &Shared, error: &StudyError) {
    let mut c = lock(&shared.counters);
    if c.outbox_problem.is_none() {
        tracing::warn!(error = %error.error, "cannot write results; not claiming new studies until one is published");
    }
    c.outbox_problem = Some(format!("cannot write results ({})", error.error));
}

/// 5 s, 10 s, 20 s, … up to 5 minutes.
fn backoff(retries: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << retries.min(6)).min(300))
}
