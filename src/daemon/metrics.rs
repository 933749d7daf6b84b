//! The metrics endpoint: `GET /metrics` on `[metrics] listen` (loopback by default), in the
//! Prometheus text format (0.0.4), which every Prometheus scrapes and `promtool check metrics`
//! lints.
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `tracerd_studies_total{outcome}` | counter | studies `published`, `failed` (moved to `failed/`) and `retried` (a transient error sent them back to the queue) |
//! | `tracerd_studies_queued` | gauge | studies in `work/`: waiting or being processed |
//! | `tracerd_stage_duration_seconds{stage}` | histogram | per study: `ingest`, `inference`, `publish`, and `total` (claimed to published) |
//! | `tracerd_model_info{model,version,role,file,precision,engine,device}` | gauge (1) | what each network runs as; replaced on reload |
//! | `tracerd_free_bytes` | gauge | free space on the filesystem of `paths.work` (read at each scrape) |
//! | `tracerd_last_success_timestamp_seconds` | gauge | Unix time of the last publication (0: none yet) |
//! | `tracerd_build_info{version}` | gauge (1) | the running tracerd |
//! | `tracerd_dicom_instances_total{outcome}` | counter | instances the DICOM listener `stored` or `refused` |
//! | `tracerd_deliveries_total{destination,outcome}` | counter | delivery tries per destination: `delivered`, `retrying` (failed, will retry), `given_up` |
//! | `tracerd_deliveries_pending` | gauge | study × destination deliveries waiting or being tried |
//!
//! The server is tiny_http on its own thread, answering one request at a time: a scrape reads
//! a few atomics, so it never waits on a study.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, exponential_buckets,
};

use crate::models::ModelUse;

/// What became of a study, as `tracerd_studies_total`'s `outcome`.
#[derive(Debug, Clone, Copy)]
pub enum StudyOutcome {
    Published,
    Failed,
    Retried,
}

/// A stage of `tracerd_stage_duration_seconds`.
#[derive(Debug, Clone, Copy)]
pub enum StageName {
    Ingest,
    Inference,
    Publish,
    Total,
}

const MODEL_LABELS: [&str; 7] = [
    "model",
    "version",
    "role",
    "file",
    "precision",
    "engine",
    "device",
];

/// The daemon's metrics; every stage updates them, the endpoint encodes them.
pub struct Metrics {
    registry: Registry,
    studies: IntCounterVec,
    stages: HistogramVec,
    queued: IntGauge,
    free_bytes: IntGauge,
    last_success: Gauge,
    models: IntGaugeVec,
    instances: IntCounterVec,
    deliveries: IntCounterVec,
    pending: IntGauge,
}

/// What became of a delivery try, as `tracerd_deliveries_total`'s `outcome`.
#[derive(Debug, Clone, Copy)]
pub enum DeliveryOutcome {
    Delivered,
    Retrying,
    GivenUp,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("a valid name");
        // 50 ms to about 27 minutes, doubling.
        let buckets = exponential_buckets(0.05, 2.0, 16).expect("valid buckets");
        let m = Metrics {
            registry: Registry::new(),
            studies: IntCounterVec::new(
                Opts::new("tracerd_studies_total", "Studies by what became of them"),
                &["outcome"],
            )
            .expect("a valid name"),
            stages: HistogramVec::new(
                HistogramOpts::new(
                    "tracerd_stage_duration_seconds",
                    "Time one study spent in a stage",
                )
                .buckets(buckets),
                &["stage"],
            )
            .expect("a valid name"),
            queued: gauge(
                "tracerd_studies_queued",
                "Studies in work/: waiting or being processed",
            ),
            free_bytes: gauge(
                "tracerd_free_bytes",
                "Free space on the filesystem of paths.work",
            ),
            last_success: Gauge::new(
                "tracerd_last_success_timestamp_seconds",
                "Unix time of the last publication",
            )
            .expect("a valid name"),
            models: IntGaugeVec::new(
                Opts::new(
                    "tracerd_model_info",
                    "The networks loaded: file, precision, engine",
                ),
                &MODEL_LABELS,
            )
            .expect("a valid name"),
            instances: IntCounterVec::new(
                Opts::new(
                    "tracerd_dicom_instances_total",
                    "Instances the DICOM listener stored or refused",
                ),
                &["outcome"],
            )
            .expect("a valid name"),
            deliveries: IntCounterVec::new(
                Opts::new(
                    "tracerd_deliveries_total",
                    "Delivery tries per destination, by outcome",
                ),
                &["destination", "outcome"],
            )
            .expect("a valid name"),
            pending: gauge(
                "tracerd_deliveries_pending",
                "Deliveries (study x destination) waiting or being tried",
            ),
        };
        for outcome in ["published", "failed", "retried"] {
            // Present from the start at 0, so a rate over the first study is defined.
            m.studies.with_label_values(&[outcome]);
        }
        m.register()
    }

    fn register(self) -> Metrics {
        let build = IntGaugeVec::new(
            Opts::new("tracerd_build_info", "The running tracerd"),
            &["version"],
        )
        .expect("a valid name");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let r = &self.registry;
        let all: [Box<dyn prometheus::core::Collector>; 10] = [
            Box::new(self.instances.clone()),
            Box::new(self.deliveries.clone()),
            Box::new(self.pending.clone()),
            Box::new(self.studies.clone()),
            Box::new(self.queued.clone()),
            Box::new(self.stages.clone()),
            Box::new(self.models.clone()),
            Box::new(self.free_bytes.clone()),
            Box::new(self.last_success.clone()),
            Box::new(build),
        ];
        for c in all {
            r.register(c).expect("each metric registered once");
        }
        self
    }

    pub fn study(&self, outcome: StudyOutcome) {
        let label = match outcome {
            StudyOutcome::Published => "published",
            StudyOutcome::Failed => "failed",
            StudyOutcome::Retried => "retried",
        };
        self.studies.with_label_values(&[label]).inc();
        if let StudyOutcome::Published = outcome {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.last_success.set(now.as_secs_f64());
        }
    }

    pub fn stage(&self, stage: StageName, took: Duration) {
        let stage = format!("{stage:?}").to_lowercase();
        self.stages
            .with_label_values(&[stage.as_str()])
            .observe(took.as_secs_f64());
    }

    pub fn set_queued(&self, queued: usize) {
        self.queued.set(queued.min(i64::MAX as usize) as i64);
    }

    /// An instance received by the DICOM listener: stored, or refused.
    pub fn instance(&self, stored: bool) {
        let outcome = if stored { "stored" } else { "refused" };
        self.instances.with_label_values(&[outcome]).inc();
    }

    /// A delivery try to `destination` ended.
    pub fn delivery(&self, destination: &str, outcome: DeliveryOutcome) {
        let outcome = match outcome {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retrying => "retrying",
            DeliveryOutcome::GivenUp => "given_up",
        };
        self.deliveries
            .with_label_values(&[destination, outcome])
            .inc();
    }

    pub fn set_deliveries_pending(&self, pending: usize) {
        self.pending.set(pending.min(i64::MAX as usize) as i64);
    }

    pub fn set_free_bytes(&self, bytes: u64) {
        self.free_bytes.set(bytes.min(i64::MAX as u64) as i64);
    }

    /// Replaces the model series with `uses` (at start and after a reload).
    pub fn set_models(&self, uses: &[ModelUse]) {
        self.models.reset();
        for u in uses {
            let values = [
                &u.name,
                &u.version,
                &u.role,
                &u.file,
                &u.precision,
                &u.engine,
                &u.device,
            ]
            .map(String::as_str);
            self.models.with_label_values(&values).set(1);
        }
    }

    /// The text of every metric.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("writing into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The running endpoint; [`Endpoint::stop`] ends it.
pub struct Endpoint {
    server: Arc<tiny_http::Server>,
    thread: JoinHandle<()>,
    pub address: String,
}

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` on `listen`; `refresh` runs before each scrape (free space).
pub fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    refresh: impl Fn(&Metrics) + Send + 'static,
) -> io::Result<Endpoint> {
    let server = Arc::new(tiny_http::Server::http(listen).map_err(io::Error::other)?);
    let address = server
        .server_addr()
        .to_ip()
        .map_or_else(|| listen.to_string(), |a| a.to_string());
    let s = server.clone();
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for request in s.incoming_requests() {
                let response = if request.url() == "/metrics" {
                    refresh(&metrics);
                    let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                        .expect("a valid header");
                    tiny_http::Response::from_string(metrics.encode()).with_header(header)
                } else {
                    tiny_http::Response::from_string("not found; try /metrics\n")
                        .with_status_code(404)
                };
                let _ = request.respond(response);
            }
        })?;
    Ok(Endpoint {
        server,
        thread,
        address,
    })
}

impl Endpoint {
    pub fn stop(self) {
        self.server.unblock();
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_holds_every_metric_and_counts_what_happened() {
        let m = Metrics::new();
        m.study(StudyOutcome::Published);
        m.study(StudyOutcome::Retried);
        m.stage(StageName::Inference, Duration::from_millis(1500));
        m.set_queued(3);
        let text = m.encode();
        assert!(
            text.contains("tracerd_studies_total{outcome=\"published\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tracerd_studies_total{outcome=\"failed\"} 0"),
            "{text}"
        );
        assert!(text.contains("tracerd_studies_queued 3"), "{text}");
        assert!(
            text.contains("tracerd_stage_duration_seconds_count{stage=\"inference\"} 1"),
            "{text}"
        );
        assert!(text.contains("tracerd_build_info{version="), "{text}");
        m.instance(true);
        m.delivery("pacs", DeliveryOutcome::Retrying);
        m.set_deliveries_pending(2);
        let text = m.encode();
        assert!(
            text.contains("tracerd_dicom_instances_total{outcome=\"stored\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tracerd_deliveries_total{destination=\"pacs\",outcome=\"retrying\"} 1"),
            "{text}"
        );
        assert!(text.contains("tracerd_deliveries_pending 2"), "{text}");
    }
}
