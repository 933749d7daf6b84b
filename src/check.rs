//! `tracerd check`: what an operator (or systemd's `ExecStartPre`) needs to know before the
//! daemon starts — is the config valid, are the folders usable and on one filesystem, do the
//! model files match their cards' hashes, and which engine loads each of them.
//!
//! Each finding is one line; the report fails when any finding is an error.

use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::fsio::TEMP_PREFIX;
use crate::infer::Engines;
use crate::models::card::ModelCard;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Error,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

/// Everything `tracerd check` found.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, level: Level, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            message: message.into(),
        });
    }

    /// True when nothing is an error.
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.level != Level::Error)
    }

    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.level == Level::Error)
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let tag = match finding.level {
                Level::Ok => "ok   ",
                Level::Warn => "warn ",
                Level::Error => "ERROR",
            };
            writeln!(f, "{tag} {}", finding.message)?;
        }
        Ok(())
    }
}

/// Checks a loaded config against the filesystem.
pub fn check(config: &Config) -> Report {
    let mut report = Report::default();
    match config.validate() {
        Ok(()) => report.push(Level::Ok, "configuration is valid"),
        Err(ConfigError::Invalid(problems)) => {
            for p in problems {
                report.push(Level::Error, p);
            }
        }
        Err(other) => report.push(Level::Error, other.to_string()),
    }

    let mut devices: Vec<(&str, u64)> = Vec::new();
    for (name, dir) in config.paths.study_dirs() {
        if dir.as_os_str().is_empty() {
            continue;
        }
        match study_dir_state(dir) {
            DirState::Usable(dev) => {
                report.push(
                    Level::Ok,
                    format!("paths.{name} {} is writable", dir.display()),
                );
                devices.push((name, dev));
            }
            DirState::WillCreate { ancestor, dev } => {
                report.push(
                    Level::Warn,
                    format!(
                        "paths.{name} {} does not exist yet; it will be created (under {})",
                        dir.display(),
                        ancestor.display()
                    ),
                );
                devices.push((name, dev));
            }
            DirState::Unusable(why) => report.push(
                Level::Error,
                format!("paths.{name} {}: {why}", dir.display()),
            ),
        }
    }
    if let Some((first, dev)) = devices.first() {
        for (name, other) in &devices[1..] {
            if other != dev {
                report.push(
                    Level::Error,
                    format!(
                        "paths.{name} is on a different filesystem from paths.{first}; studies move \
                         by rename, which needs one filesystem"
                    ),
                );
            }
        }
    }

    check_models(config, &mut report);
    check_network(config, &mut report);
    report
}

/// The DICOM listener's settings, and whether each delivery destination answers (C-ECHO, or
/// a DICOMweb query). A destination that does not answer is a warning: the daemon keeps its
/// results and retries, so it must not keep the daemon from starting.
fn check_network(config: &Config, report: &mut Report) {
    let l = &config.dicom_listener;
    if l.enabled {
        let callers = l.allowed_calling_ae_titles.join(", ");
        report.push(
            Level::Ok,
            format!(
                "dicom_listener: AE title {} on {}, accepting from {callers}",
                l.ae_title, l.listen
            ),
        );
        if l.allowed_calling_ae_titles.iter().any(|c| c == "*") {
            report.push(
                Level::Warn,
                "dicom_listener accepts any calling AE title (\"*\")",
            );
        }
    }
    let timeout = config.delivery.timeout_seconds.min(10.0);
    for d in &config.delivery.destinations {
        match crate::net::deliver::check(d, &l.ae_title, timeout) {
            Ok(what) => report.push(Level::Ok, format!("delivery to {}: {what}", d.name)),
            Err(why) => report.push(
                Level::Warn,
                format!(
                    "delivery to {}: {why}; results wait and are retried",
                    d.name
                ),
            ),
        }
    }
}

/// Cards, hashes, and the engine each model file loads on (the configured order, as the daemon
/// would choose).
fn check_models(config: &Config, report: &mut Report) {
    let models = &config.paths.models;
    if !models.is_dir() {
        report.push(
            Level::Warn,
            format!("paths.models {} does not exist", models.display()),
        );
        return;
    }
    let cards = match ModelCard::load_all(models) {
        Ok(cards) => cards,
        Err(e) => return report.push(Level::Error, e.to_string()),
    };
    if cards.is_empty() {
        report.push(
            Level::Warn,
            format!("paths.models {} holds no model cards", models.display()),
        );
        return;
    }
    let engines = Engines::new(&config.inference);
    match engines.ort_runtime() {
        Ok(rt) => report.push(Level::Ok, format!("ONNX Runtime: {rt}")),
        Err(why) => report.push(Level::Warn, format!("ONNX Runtime unavailable: {why}")),
    }
    for card in cards {
        if let Err(e) = card.verify() {
            report.push(Level::Error, e.to_string());
            continue;
        }
        for file in &card.files {
            let path = card.path_of(file);
            match engines.load(&path) {
                Ok(session) => report.push(
                    Level::Ok,
                    format!(
                        "model {} {} ({}, {}): {}",
                        card.name,
                        file.role,
                        file.precision,
                        file.path,
                        session.provenance()
                    ),
                ),
                Err(e) => report.push(Level::Error, e.to_string()),
            }
        }
    }
}

enum DirState {
    Usable(u64),
    WillCreate { ancestor: PathBuf, dev: u64 },
    Unusable(String),
}

fn study_dir_state(dir: &Path) -> DirState {
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => DirState::Unusable("exists but is not a folder".into()),
        Ok(meta) => match probe_writable(dir) {
            Ok(()) => DirState::Usable(meta.dev()),
            Err(e) => DirState::Unusable(format!("not writable ({e})")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some(ancestor) = dir.ancestors().skip(1).find(|a| a.exists()) else {
                return DirState::Unusable("no existing parent folder".into());
            };
            match fs::metadata(ancestor) {
                Ok(meta) if meta.is_dir() => match probe_writable(ancestor) {
                    Ok(()) => DirState::WillCreate {
                        ancestor: ancestor.to_path_buf(),
                        dev: meta.dev(),
                    },
                    Err(e) => DirState::Unusable(format!(
                        "missing, and {} is not writable ({e})",
                        ancestor.display()
                    )),
                },
                _ => DirState::Unusable(format!("{} is not a folder", ancestor.display())),
            }
        }
        Err(e) => DirState::Unusable(e.to_string()),
    }
}

/// Creates and removes a temporary file: the only reliable writability test (permissions, ACLs,
/// read-only mounts and systemd's `ProtectSystem` all show up here).
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!("{TEMP_PREFIX}check-{}", std::process::id()));
    fs::File::create(&probe)?;
    fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(root: &Path) -> Config {
        let mut c = Config::default();
        c.paths.inbox = root.join("inbox");
        c.paths.work = root.join("work");
        c.paths.outbox = root.join("outbox");
        c.paths.failed = root.join("failed");
        c.paths.archive = root.join("archive");
        c.paths.models = root.join("models");
        c
    }

    #[test]
    fn missing_folders_are_warnings_and_present_ones_pass() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let report = check(&config);
        assert!(report.passed(), "{report}");
        assert!(report.to_string().contains("will be created"));
        for (_, d) in config.paths.study_dirs() {
            fs::create_dir(d).unwrap();
        }
        let report = check(&config);
        assert!(report.passed(), "{report}");
        assert!(!report.to_string().contains("will be created"), "{report}");
        assert_eq!(fs::read_dir(dir.path().join("inbox")).unwrap().count(), 0);
    }

    #[test]
    fn a_file_in_place_of_a_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        fs::write(&config.paths.outbox, b"").unwrap();
        let report = check(&config);
        assert!(!report.passed());
        assert!(
            report.to_string().contains("exists but is not a folder"),
            "{report}"
        );
    }

    #[test]
    fn invalid_config_is_reported_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path());
        config.paths.work = config.paths.inbox.join("w");
        config.watch.settle_seconds = 0.0;
        let report = check(&config);
        assert_eq!(report.errors(), 2, "{report}");
    }

    #[test]
    fn model_files_are_hashed_and_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path());
        config.inference.engines = vec![crate::config::Engine::Tract];
        let model_dir = config.paths.models.join("toy");
        fs::create_dir_all(&model_dir).unwrap();
        fs::write(model_dir.join("net.onnx"), b"not onnx").unwrap();
        let sha = crate::models::card::sha256_file(&model_dir.join("net.onnx")).unwrap();
        let card = format!(
            "schema = \"tracerd.model-card/1\"\nname = \"toy\"\nversion = \"1\"\nstatus = \"test\"\n\
             [[files]]\nrole = \"net\"\npath = \"net.onnx\"\nprecision = \"fp32\"\nsha256 = \"{sha}\"\n\
             input_name = \"x\"\ninput_shape = [1]\noutput_name = \"y\"\noutput_shape = [1]\n"
        );
        fs::write(model_dir.join("model.toml"), &card).unwrap();
        let report = check(&config);
        assert!(!report.passed());
        assert!(
            report.to_string().contains("ERROR no engine could load"),
            "{report}"
        );
        fs::write(model_dir.join("model.toml"), card.replace(&sha, "00")).unwrap();
        let report = check(&config);
        assert!(report.to_string().contains("sha256 is"), "{report}");
    }
}
