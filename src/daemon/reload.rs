//! SIGHUP: what a reload may change while the daemon runs.

use crossbeam_channel::Sender;

use super::service::Notifier;
use super::{RunOptions, Shared};
use crate::config::Config;

/// SIGHUP: re-read the config file; apply what can change while running (watch settings,
/// stall and stop limits, engines and models); say what needs a restart.
pub(super) fn reload(
    shared: &Shared,
    options: &RunOptions,
    control: &Sender<Box<Config>>,
    n: &Notifier,
) {
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
            if new.dicom_listener != current.dicom_listener {
                tracing::warn!("SIGHUP: [dicom_listener] changes take effect at the next restart");
                new.dicom_listener = current.dicom_listener.clone();
            }
            if new.delivery != current.delivery {
                tracing::warn!("SIGHUP: [delivery] changes take effect at the next restart");
                new.delivery = current.delivery.clone();
            }
            if new.metrics != current.metrics {
                tracing::warn!("SIGHUP: [metrics] changes take effect at the next restart");
                new.metrics = current.metrics.clone();
            }
            *current = new.clone();
            drop(current);
            let _ = control.send(Box::new(new));
            tracing::info!("SIGHUP: configuration reloaded; models reload before the next study");
        }
    }
    n.ready();
}
