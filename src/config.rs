//! The configuration tree: one TOML file, every key optional, defaults embedded here.
//!
//! Unknown keys are an error (a misspelt key silently ignored is how a console ends up watching
//! the wrong folder). [`Config::validate`] reports every semantic problem at once. Relative paths
//! in a config file are resolved against the directory that holds the file, so a config can be
//! moved together with its folders. The configuration reference in `docs/operations.md` is written
//! from the doc comments below; keep the two in step.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub paths: Paths,
    pub watch: Watch,
    pub daemon: Daemon,
    pub inference: Inference,
    pub limits: Limits,
    pub outbox: Outbox,
    pub scope: Scope,
    pub metrics: Metrics,
    pub dicom_listener: DicomListener,
    pub delivery: Delivery,
}

/// The DICOM listener of `tracerd run` (C-STORE SCP, C-ECHO): studies sent over the network
/// land in the inbox like a drop and go through the same completeness rules
/// (`docs/operations.md`, "Receiving studies over DICOM").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomListener {
    /// Listen for associations. Default: false.
    pub enabled: bool,
    /// Address and port. Default: `0.0.0.0:11112` (11112 is the IANA DICOM port that needs no
    /// privilege; port 104 would need `CAP_NET_BIND_SERVICE`).
    pub listen: String,
    /// This node's AE title; associations calling another title are refused. Default:
    /// `TRACERD`.
    pub ae_title: String,
    /// Calling AE titles allowed to send (the scanners); any other is refused at association.
    /// `["*"]` accepts any. Must not be empty when the listener is enabled.
    pub allowed_calling_ae_titles: Vec<String>,
    /// Transfer syntaxes accepted, by UID. Default: those the reader decodes losslessly:
    /// Implicit and Explicit VR Little Endian, Deflated Explicit VR Little Endian, RLE
    /// Lossless, JPEG Lossless (processes 14 and 14 SV1) and JPEG 2000 Lossless.
    pub transfer_syntaxes: Vec<String>,
    /// Associations served at once, 1 to 64; a connection beyond it is closed at once.
    /// Default: 8.
    pub max_associations: usize,
}

/// The transfer syntaxes the listener accepts by default (see [`DicomListener`]).
pub const LISTENER_TRANSFER_SYNTAXES: [&str; 7] = [
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.90",
];

impl Default for DicomListener {
    fn default() -> Self {
        DicomListener {
            enabled: false,
            listen: "0.0.0.0:11112".into(),
            ae_title: "TRACERD".into(),
            allowed_calling_ae_titles: Vec::new(),
            transfer_syntaxes: LISTENER_TRANSFER_SYNTAXES.map(String::from).to_vec(),
            max_associations: 8,
        }
    }
}

/// Delivery of each published study's DICOM results (SEG, SR, Secondary Capture) to PACS or
/// other nodes, with a durable record in `result.json` (`docs/operations.md`, "Delivering
/// results").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Where results go; none by default. Each is tried on its own: one that is down delays
    /// nothing else.
    pub destinations: Vec<Destination>,
    /// First wait after a failed try, in seconds; doubled after each further failure.
    /// Default: 30.
    pub retry_initial_seconds: f64,
    /// Longest wait between tries, in seconds. Default: 1800.
    pub retry_max_seconds: f64,
    /// Tries per study and destination before giving up (state `failed` in `result.json`,
    /// an error in the log), 1 to 1000. Default: 100 (about two days at the defaults).
    pub max_attempts: u32,
    /// Seconds to wait for a connection, an association or an answer. Default: 30.
    pub timeout_seconds: f64,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            destinations: Vec::new(),
            retry_initial_seconds: 30.0,
            retry_max_seconds: 1800.0,
            max_attempts: 100,
            timeout_seconds: 30.0,
        }
    }
}

/// One place results are sent to: a DICOM node (`protocol = "c-store"`, with `address` and
/// `ae_title`) or a DICOMweb server (`protocol = "stow-rs"`, with `url`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// A short name for logs and `result.json` (1-64 of `A-Z a-z 0-9 - _ .`), unique.
    pub name: String,
    pub protocol: Protocol,
    /// C-STORE: `host:port` of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// C-STORE: the node's AE title (the called AE title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ae_title: Option<String>,
    /// C-STORE: the calling AE title tracerd uses; absent: `dicom_listener.ae_title`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calling_ae_title: Option<String>,
    /// STOW-RS: the DICOMweb service's base URL (`http://…` or `https://…`); instances are
    /// POSTed to `<url>/studies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// STOW-RS: HTTP Basic user name, with `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// STOW-RS: a file holding the HTTP Basic password (its first line), readable by the
    /// service only; the password never appears in the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Which results to send: any of `seg`, `sr`, `sc`. Default: all three. A study without
    /// lesions has no SEG; NIfTI studies have no DICOM results and send nothing.
    #[serde(default = "all_dicom_results")]
    pub send: Vec<DicomResult>,
}

fn all_dicom_results() -> Vec<DicomResult> {
    vec![DicomResult::Seg, DicomResult::Sr, DicomResult::Sc]
}

/// How a destination is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    CStore,
    StowRs,
}

/// One of the DICOM results in a published study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DicomResult {
    Seg,
    Sr,
    Sc,
}

/// The Prometheus endpoint of `tracerd run` (`GET /metrics`, OpenMetrics text; the metrics are
/// listed in `docs/operations.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Serve the endpoint. Default: true.
    pub enabled: bool,
    /// Address and port to listen on. Default: `127.0.0.1:9417`, loopback only; a port of 0
    /// takes a free one (logged). Expose it beyond the machine only behind the site's firewall:
    /// the endpoint has no authentication.
    pub listen: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            enabled: true,
            listen: "127.0.0.1:9417".into(),
        }
    }
}

/// What the models were made for: 18F-FDG PET. A DICOM study of another radionuclide, or a
/// gamma-camera image stored as PET, is always refused (stage `scope` in `failed/`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scope {
    /// Other 18F radiopharmaceuticals to process anyway, as the scanner names them in
    /// Radiopharmaceutical (0018,0031) (compared without case, spaces or punctuation, e.g.
    /// "PSMA-1007"). Default: none. The models were trained and validated on 18F-FDG only;
    /// a study processed this way carries a warning in `result.json`.
    pub allowed_18f_tracers: Vec<String>,
}

/// Where studies live. All five study folders must be on one filesystem: studies move between
/// them by `rename(2)`, which is atomic only within a filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// Drop folder the scanner exports into; each top-level entry is one study.
    pub inbox: PathBuf,
    /// Studies being processed (claimed from the inbox by rename).
    pub work: PathBuf,
    /// Published results, one folder per study, each appearing in one rename.
    pub outbox: PathBuf,
    /// Studies that could not be processed: the untouched inputs plus `error.json`.
    pub failed: PathBuf,
    /// Inputs of published studies.
    pub archive: PathBuf,
    /// Model files and their `model.toml` cards.
    pub models: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        let state = Path::new("/var/lib/tracerd");
        Paths {
            inbox: state.join("inbox"),
            work: state.join("work"),
            outbox: state.join("outbox"),
            failed: state.join("failed"),
            archive: state.join("archive"),
            models: default_models_dir(),
        }
    }
}

/// Where the packaged models are installed.
pub const PACKAGED_MODELS: &str = "/usr/share/tracerd/models";

/// The default `paths.models`: the packaged folder; failing that, `share/tracerd/models` beside
/// the binary's `bin/` (a tarball install), then the `models/` folder of the source checkout the
/// binary was built from (so `cargo run` works in a clone). The first that exists wins; with none,
/// the packaged path, which `tracerd check` then reports as missing.
pub fn default_models_dir() -> PathBuf {
    let beside_binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("share/tracerd/models")));
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    [
        Some(PathBuf::from(PACKAGED_MODELS)),
        beside_binary,
        Some(checkout),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_dir())
    .unwrap_or_else(|| PathBuf::from(PACKAGED_MODELS))
}

/// How the inbox is watched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Watch {
    /// Quiet period in seconds: a study counts as complete once none of its files has changed
    /// (size or modification time) for this long. Must be > 0 and at most one day. A study
    /// that holds a file named `.complete` at its top level counts as complete at once.
    pub settle_seconds: f64,
    /// How often the inbox is rescanned, in seconds. File-system events only make the next
    /// rescan come sooner; the rescan is what decides. Must be > 0 and at most 3600.
    pub rescan_seconds: f64,
    /// Free space, in MiB, that must remain on the study folders' filesystem: below it no new
    /// study is claimed (the daemon says so in its status and log) until space is freed.
    pub min_free_mib: u64,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            settle_seconds: 30.0,
            rescan_seconds: 10.0,
            min_free_mib: 2048,
        }
    }
}

/// How results are named in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outbox {
    /// The key (`outbox/<key>/`, `result.json`'s `key`) of a NIfTI study. `"folder-name"`: the
    /// study folder's name when it is already a safe key (1-128 of `A-Z a-z 0-9 - _ .`, not
    /// starting with `.`, not shaped like a hash key), else `n-` + 16 hex digits of its SHA-256.
    /// `"hash"`: always the hash, for sites whose exports name folders after patients. DICOM
    /// studies are always keyed by a hash of their UIDs. The log never shows a folder name.
    pub nifti_key: NiftiKey,
}

/// See [`Outbox::nifti_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NiftiKey {
    #[default]
    FolderName,
    Hash,
}

/// How large one study may be. Checked from the file headers (NIfTI dimensions, DICOM Rows ×
/// Columns × slices) before any voxel is allocated or decompressed, so a damaged or hostile
/// header cannot exhaust the console's memory; a study over a limit fails with the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Voxels in one volume (PET or CT), at least 1 000 000. The default, 400 000 000, holds a
    /// 512 × 512 CT of 1500 slices (1 mm over 1.5 m).
    pub max_voxels_per_volume: u64,
    /// Memory for one study's decoded volumes (PET and CT as 32-bit floats), in MiB, at least
    /// 64. Each study in the daemon's queue can hold this much (`daemon.queue_length`).
    pub max_study_mib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_voxels_per_volume: 400_000_000,
            max_study_mib: 4096,
        }
    }
}

/// The daemon's stages, queues and limits (`tracerd run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Daemon {
    /// Threads reading and checking studies (DICOM parsing, SUV, NIfTI decoding), 1 to 16.
    pub ingest_workers: usize,
    /// Studies loaded into memory and waiting for inference, 1 to 16. With the ingest workers
    /// this bounds memory: at most `ingest_workers + queue_length + 3` studies are in memory.
    pub queue_length: usize,
    /// What happens to a study's input files once its result is published: `archive` (moved
    /// to `paths.archive`) or `delete`.
    pub inputs_after_publish: AfterPublish,
    /// On SIGTERM, how long to wait, in seconds, for the studies being processed to finish
    /// before exiting anyway (unfinished studies stay queued in `paths.work`).
    pub stop_timeout_seconds: f64,
    /// A stage busy with one study for longer than this, in seconds, counts as stalled: the
    /// systemd watchdog is no longer pinged, so systemd restarts the service.
    pub stall_seconds: f64,
    /// A study whose processing was interrupted (crash, kill, watchdog restart) this many
    /// times is moved to `paths.failed` instead of being tried again, 1 to 1000.
    pub max_attempts: u32,
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            ingest_workers: 2,
            queue_length: 2,
            inputs_after_publish: AfterPublish::Archive,
            stop_timeout_seconds: 60.0,
            stall_seconds: 900.0,
            max_attempts: 3,
        }
    }
}

/// What to do with inputs after publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterPublish {
    Archive,
    Delete,
}

/// The inference engines tracerd may use, in order of preference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inference {
    /// Engines to try, best first, per model: `ort-cuda` (ONNX Runtime on the GPU), `ort-cpu`
    /// (ONNX Runtime on the CPU), `tract` (built in, always available).
    pub engines: Vec<Engine>,
    /// Path to `libonnxruntime.so`; when absent, tracerd looks in `ORT_DYLIB_PATH`, its own
    /// library directory and a pip-installed `onnxruntime`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ort_library: Option<PathBuf>,
    /// Fraction of each L2SNet sliding window shared with its neighbour, in `[0, 0.9]`; absent:
    /// the model card's value (0.5). Lower is faster and slightly less smooth at window seams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlap: Option<f64>,
    /// Which file of each network runs. `"auto"`: per engine, the file the model card marks
    /// for it (`auto_engines`), which its generator sets only where the file's measured
    /// accuracy cost is within the card's acceptance bounds (as shipped: L2SNet's loc2d and
    /// 2Be3-Net's [WS] INT8 files on ort-cpu), else fp32. `"fp32"`: always fp32.
    pub precision: Precision,
    /// Which L2SNet `seg3d` windows run. `"cued"`: only those holding a voxel where the location
    /// cue exceeds the model card's `[seg3d] cue_gate` (every body window when the card has
    /// none); `"body"`: every window that holds a body voxel (the whole-volume pass, about
    /// three times the `seg3d` time on clinical studies).
    pub seg3d_windows: Seg3dWindows,
}

/// See [`Inference::seg3d_windows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seg3dWindows {
    #[default]
    Cued,
    Body,
}

/// See [`Inference::precision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Auto,
    Fp32,
}

impl Default for Inference {
    fn default() -> Self {
        Inference {
            engines: vec![Engine::OrtCuda, Engine::OrtCpu, Engine::Tract],
            ort_library: None,
            overlap: None,
            precision: Precision::Auto,
            seg3d_windows: Seg3dWindows::Cued,
        }
    }
}

/// One inference engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    OrtCuda,
    OrtCpu,
    Tract,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::OrtCuda => "ort-cuda",
            Engine::OrtCpu => "ort-cpu",
            Engine::Tract => "tract",
        })
    }
}

/// A config that could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}", invalid_message(.0))]
    Invalid(Vec<String>),
}

fn invalid_message(problems: &[String]) -> String {
    format!(
        "invalid configuration ({} problem{}): {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.join("; ")
    )
}

impl Config {
    /// Loads `path` (defaults for every absent key), or the embedded defaults when `None`.
    /// Relative paths are resolved against the file's directory. Does not validate.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        config.paths.resolve_relative_to(base);
        for d in &mut config.delivery.destinations {
            if let Some(p) = d.password_file.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// Parses TOML text; the error is a one-line message naming the key and line.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {message}")
                }
                None => message,
            }
        })
    }

    /// The effective configuration as TOML, for logs and `tracerd check`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Checks every rule that needs no filesystem access and reports all violations together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.paths.validate(&mut problems);
        self.watch.validate(&mut problems);
        self.daemon.validate(&mut problems);
        self.limits.validate(&mut problems);
        self.inference.validate(&mut problems);
        if self.metrics.enabled && self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "metrics.listen is {:?}; it must be an address and port such as \"127.0.0.1:9417\"",
                self.metrics.listen
            ));
        }
        self.dicom_listener.validate(&mut problems);
        self.delivery.validate(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// `name is value; it must be > 0 and at most max` unless `value` is finite and in (0, max].
fn check_seconds(problems: &mut Vec<String>, name: &str, value: f64, max: f64) {
    if !(value.is_finite() && value > 0.0 && value <= max) {
        problems.push(format!(
            "{name} is {value}; it must be > 0 and at most {max}"
        ));
    }
}

/// `name is value; it must be lo to hi` unless `value` is in `lo..=hi`.
fn check_count(problems: &mut Vec<String>, name: &str, value: usize, lo: usize, hi: usize) {
    if !(lo..=hi).contains(&value) {
        problems.push(format!("{name} is {value}; it must be {lo} to {hi}"));
    }
}

impl Watch {
    fn validate(&self, problems: &mut Vec<String>) {
        check_seconds(
            problems,
            "watch.settle_seconds",
            self.settle_seconds,
            86_400.0,
        );
        check_seconds(
            problems,
            "watch.rescan_seconds",
            self.rescan_seconds,
            3600.0,
        );
    }
}

impl Daemon {
    fn validate(&self, problems: &mut Vec<String>) {
        check_count(
            problems,
            "daemon.ingest_workers",
            self.ingest_workers,
            1,
            16,
        );
        check_count(problems, "daemon.queue_length", self.queue_length, 1, 16);
        check_seconds(
            problems,
            "daemon.stop_timeout_seconds",
            self.stop_timeout_seconds,
            86_400.0,
        );
        check_seconds(
            problems,
            "daemon.stall_seconds",
            self.stall_seconds,
            86_400.0,
        );
        check_count(
            problems,
            "daemon.max_attempts",
            self.max_attempts as usize,
            1,
            1000,
        );
    }
}

impl Limits {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.max_voxels_per_volume < 1_000_000 {
            problems.push(format!(
                "limits.max_voxels_per_volume is {}; it must be at least 1000000",
                self.max_voxels_per_volume
            ));
        }
        if self.max_study_mib < 64 {
            problems.push(format!(
                "limits.max_study_mib is {}; it must be at least 64",
                self.max_study_mib
            ));
        }
    }
}

impl Inference {
    fn validate(&self, problems: &mut Vec<String>) {
        if let Some(overlap) = self.overlap
            && !(0.0..=0.9).contains(&overlap)
        {
            problems.push(format!(
                "inference.overlap is {overlap}; it must be between 0 and 0.9"
            ));
        }
        if self.engines.is_empty() {
            problems.push("inference.engines is empty; list at least \"tract\"".into());
        }
        for (i, engine) in self.engines.iter().enumerate() {
            if self.engines[..i].contains(engine) {
                problems.push(format!("inference.engines lists \"{engine}\" twice"));
            }
        }
        if let Some(lib) = &self.ort_library
            && lib.as_os_str().is_empty()
        {
            problems.push("inference.ort_library is empty; remove the key to search".into());
        }
    }
}

/// A DICOM AE title: 1-16 characters of the default repertoire, no backslash, not all spaces.
fn ae_title_problem(key: &str, title: &str) -> Option<String> {
    let ok = !title.trim().is_empty()
        && title.len() <= 16
        && title.chars().all(|c| (' '..='~').contains(&c) && c != '\\');
    (!ok).then(|| format!("{key} is {title:?}; an AE title is 1-16 printable ASCII characters"))
}

impl DicomListener {
    fn validate(&self, problems: &mut Vec<String>) {
        if !self.enabled {
            return;
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "dicom_listener.listen is {:?}; it must be an address and port such as \"0.0.0.0:11112\"",
                self.listen
            ));
        }
        problems.extend(ae_title_problem("dicom_listener.ae_title", &self.ae_title));
        if self.allowed_calling_ae_titles.is_empty() {
            problems.push(
                "dicom_listener.allowed_calling_ae_titles is empty; list the senders' AE titles, or [\"*\"] to accept any".into(),
            );
        }
        for t in self.allowed_calling_ae_titles.iter().filter(|t| *t != "*") {
            problems.extend(ae_title_problem(
                "dicom_listener.allowed_calling_ae_titles",
                t,
            ));
        }
        use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
        let registry = dicom_transfer_syntax_registry::TransferSyntaxRegistry;
        for ts in &self.transfer_syntaxes {
            if registry.get(ts).is_none_or(|t| t.is_unsupported()) {
                problems.push(format!(
                    "dicom_listener.transfer_syntaxes lists {ts:?}, which tracerd cannot read"
                ));
            }
        }
        if self.transfer_syntaxes.is_empty() {
            problems.push("dicom_listener.transfer_syntaxes is empty".into());
        }
        check_count(
            problems,
            "dicom_listener.max_associations",
            self.max_associations,
            1,
            64,
        );
    }
}

impl Delivery {
    fn validate(&self, problems: &mut Vec<String>) {
        for (name, value) in [
            ("delivery.retry_initial_seconds", self.retry_initial_seconds),
            ("delivery.retry_max_seconds", self.retry_max_seconds),
            ("delivery.timeout_seconds", self.timeout_seconds),
        ] {
            check_seconds(problems, name, value, 86_400.0);
        }
        check_count(
            problems,
            "delivery.max_attempts",
            self.max_attempts as usize,
            1,
            1000,
        );
        for (i, d) in self.destinations.iter().enumerate() {
            let key = format!("delivery.destinations[{i}]");
            if self.destinations[..i].iter().any(|o| o.name == d.name) {
                problems.push(format!("{key}: the name {:?} is used twice", d.name));
            }
            d.validate(&key, problems);
        }
    }
}

impl Destination {
    fn validate(&self, key: &str, problems: &mut Vec<String>) {
        let name_ok = (1..=64).contains(&self.name.len())
            && !self.name.starts_with('.')
            && self.name.chars().all(crate::outbox::is_key_char);
        if !name_ok {
            problems.push(format!(
                "{key}.name is {:?}; it must be 1-64 of A-Z a-z 0-9 - _ .",
                self.name
            ));
        }
        if self.send.is_empty() {
            problems.push(format!("{key}.send is empty; list seg, sr and/or sc"));
        }
        match self.protocol {
            Protocol::CStore => {
                let address_ok = self.address.as_deref().is_some_and(|a| {
                    a.rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                });
                if !address_ok {
                    problems.push(format!(
                        "{key}.address must be host:port for protocol \"c-store\""
                    ));
                }
                match &self.ae_title {
                    Some(t) => problems.extend(ae_title_problem(&format!("{key}.ae_title"), t)),
                    None => problems.push(format!(
                        "{key}.ae_title (the node's AE title) is needed for protocol \"c-store\""
                    )),
                }
                if let Some(t) = &self.calling_ae_title {
                    problems.extend(ae_title_problem(&format!("{key}.calling_ae_title"), t));
                }
            }
            Protocol::StowRs => {
                let url_ok = self
                    .url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"));
                if !url_ok {
                    problems.push(format!(
                        "{key}.url must be an http:// or https:// URL for protocol \"stow-rs\""
                    ));
                }
                if self.username.is_some() != self.password_file.is_some() {
                    problems.push(format!("{key}: username and password_file go together"));
                }
            }
        }
    }
}

impl Paths {
    /// No folder is empty; no two study folders are the same or one inside the other.
    fn validate(&self, problems: &mut Vec<String>) {
        let study_dirs = self.study_dirs();
        for (name, path) in study_dirs.iter().chain([("models", &self.models)].iter()) {
            if path.as_os_str().is_empty() {
                problems.push(format!("paths.{name} is empty"));
            }
        }
        for (a, (name_a, path_a)) in study_dirs.iter().enumerate() {
            for (name_b, path_b) in &study_dirs[a + 1..] {
                let (pa, pb) = (normalise(path_a), normalise(path_b));
                if pa.as_os_str().is_empty() || pb.as_os_str().is_empty() {
                    continue;
                }
                if pa == pb {
                    problems.push(format!(
                        "paths.{name_a} and paths.{name_b} are the same folder ({})",
                        pa.display()
                    ));
                } else if pa.starts_with(&pb) {
                    problems.push(format!("paths.{name_a} is inside paths.{name_b}"));
                } else if pb.starts_with(&pa) {
                    problems.push(format!("paths.{name_b} is inside paths.{name_a}"));
                }
            }
        }
    }

    /// The five folders a study moves between, with their config key names.
    pub fn study_dirs(&self) -> [(&'static str, &PathBuf); 5] {
        [
            ("inbox", &self.inbox),
            ("work", &self.work),
            ("outbox", &self.outbox),
            ("failed", &self.failed),
            ("archive", &self.archive),
        ]
    }

    fn resolve_relative_to(&mut self, base: &Path) {
        for p in [
            &mut self.inbox,
            &mut self.work,
            &mut self.outbox,
            &mut self.failed,
            &mut self.archive,
            &mut self.models,
        ] {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
    }
}

/// Lexical normalisation (`a/./b/../c` → `a/c`) so that nesting checks are not fooled by
/// spelling; symbolic links are a filesystem question for `tracerd check`.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_file_means_defaults() {
        Config::default().validate().unwrap();
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn partial_files_keep_other_defaults() {
        let c = Config::from_toml("[watch]\nsettle_seconds = 5\n").unwrap();
        assert_eq!(c.watch.settle_seconds, 5.0);
        assert_eq!(c.paths, Paths::default());
        let c = Config::from_toml("[inference]\nengines = [\"tract\"]\n").unwrap();
        assert_eq!(c.inference.engines, vec![Engine::Tract]);
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line_number() {
        let err = Config::from_toml("[watch]\nsettle_secs = 5\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("settle_secs"),
            "{err}"
        );
        let err = Config::from_toml("[inference]\nengines = [\"cuda\"]\n").unwrap_err();
        assert!(err.contains("cuda"), "{err}");
        let err = Config::from_toml("[pathz]\n").unwrap_err();
        assert!(err.contains("pathz"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem_at_once() {
        let text = r#"
            [paths]
            inbox = "/data/in"
            work = "/data/in/work"
            outbox = "/data/out"
            failed = "/data/./out"
            [watch]
            settle_seconds = -1
            rescan_seconds = 0
            [daemon]
            ingest_workers = 0
            stall_seconds = inf
            max_attempts = 0
            [inference]
            engines = ["tract", "tract"]
            ort_library = ""
            overlap = 0.95
        "#;
        let err = Config::from_toml(text).unwrap().validate().unwrap_err();
        let ConfigError::Invalid(problems) = &err else {
            panic!("{err}")
        };
        let all = problems.join("\n");
        for expected in [
            "paths.work is inside paths.inbox",
            "paths.outbox and paths.failed are the same folder",
            "watch.settle_seconds is -1",
            "lists \"tract\" twice",
            "inference.ort_library is empty",
            "inference.overlap is 0.95",
            "watch.rescan_seconds is 0",
            "daemon.ingest_workers is 0",
            "daemon.stall_seconds is inf",
            "daemon.max_attempts is 0",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in {all}");
        }
        assert_eq!(problems.len(), 10, "{all}");
        assert!(
            err.to_string()
                .starts_with("invalid configuration (10 problems): ")
        );
    }

    #[test]
    fn network_sections_are_checked_when_used() {
        let text = r#"
[dicom_listener]
enabled = true
ae_title = "A TITLE LONGER THAN 16"
transfer_syntaxes = ["1.2.3"]

[[delivery.destinations]]
name = "pacs"
protocol = "c-store"
address = "pacs"

[[delivery.destinations]]
name = "pacs"
protocol = "stow-rs"
username = "u"
"#;
        let err = Config::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for expected in [
            "dicom_listener.ae_title",
            "allowed_calling_ae_titles is empty",
            "lists \"1.2.3\", which tracerd cannot read",
            "delivery.destinations[0].address must be host:port",
            "delivery.destinations[0].ae_title (the node's AE title) is needed",
            "delivery.destinations[1]: the name \"pacs\" is used twice",
            "delivery.destinations[1].url must be an http",
            "username and password_file go together",
        ] {
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let ok = "[dicom_listener]\nenabled = true\nallowed_calling_ae_titles = [\"*\"]\n\
                  [[delivery.destinations]]\nname = \"web\"\nprotocol = \"stow-rs\"\n\
                  url = \"https://pacs.example/dicom-web\"\n";
        let c = Config::from_toml(ok).unwrap();
        c.validate().unwrap();
        assert_eq!(c.delivery.destinations[0].send.len(), 3);
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tracerd.toml");
        std::fs::write(&file, "[paths]\ninbox = \"spool/in\"\n").unwrap();
        let c = Config::load(Some(&file)).unwrap();
        assert_eq!(c.paths.inbox, dir.path().join("spool/in"));
        assert_eq!(c.paths.outbox, Paths::default().outbox);
    }

    #[test]
    fn the_packaged_template_states_the_real_defaults() {
        // Uncomment every `#[section]` and `#key = value` line of the shipped template.
        let template = include_str!("../packaging/tracerd.toml");
        let uncommented: String = template
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix('#')?;
                let key = rest.split(['=', ' ']).next().unwrap_or("");
                let is_setting = rest.starts_with('[')
                    || (!key.is_empty()
                        && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        && rest.contains('='));
                is_setting.then(|| format!("{rest}\n"))
            })
            .collect();
        let mut parsed = Config::from_toml(&uncommented).unwrap();
        let mut expected = Config::default();
        // The template names the packaged models folder; the default is the first that exists.
        expected.paths.models = PACKAGED_MODELS.into();
        // The template shows where ONNX Runtime might be (the default searches for it) and
        // the card's overlap (the default defers to the card).
        assert_eq!(parsed.inference.overlap, Some(0.5));
        parsed.inference.ort_library = None;
        parsed.inference.overlap = None;
        // ... and one example destination (the default has none).
        let example: Vec<&str> = parsed
            .delivery
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(example, ["pacs"]);
        parsed.delivery.destinations.clear();
        assert_eq!(parsed, expected, "{uncommented}");
    }

    #[test]
    fn rendered_config_parses_back() {
        let mut c = Config::default();
        c.inference.ort_library = Some("/opt/ort/libonnxruntime.so".into());
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }
}
