//! The filesystem journal: where a study is on disk *is* its state.
//!
//! A study (a top-level entry of the inbox) is always in exactly one of `inbox/`, `work/`,
//! `outbox/`+`archive/` or `failed/`, and moves between them by `rename(2)` only, so a crash or
//! `kill -9` at any instant leaves it whole in one place. This module owns those moves and the
//! start-up recovery that makes the journal consistent again:
//!
//! - **claim**: `inbox/<name>` → `work/<name>` (a name already taken gets `-2`, `-3`, …; a
//!   top-level file is wrapped in a folder of its own name first);
//! - **archive** or **delete** after the result is published (deleting renames into a temporary
//!   name first, so a half-deleted study is never mistaken for a queued one);
//! - **fail**: `error.json` is staged in tracerd's state folder (`work/.tracerd-state/`, where
//!   no input can be), the study is renamed into `failed/`, then the file moves in under the
//!   first name the inputs do not use; tracerd never renames or deletes a file inside a study;
//! - **recover**: temporaries are removed from `work/` and `outbox/`, an interrupted `fail`
//!   is finished, and every study left in `work/` is queued again — unless it has been
//!   interrupted `max_attempts` times already (a study that crashes or hangs the daemon must
//!   not do so forever), in which case it is failed with that reason. Only a study that was
//!   alone in memory when the daemon died is blamed: when several were, none of their attempts
//!   counts and they become *suspects*, which the daemon retries one at a time until each is
//!   published or crashes alone.
//!
//! Attempts are counted in `work/.tracerd-state/`, one small file per study, named by a hash
//! of the study's name (no identifier from a folder name reaches a file name tracerd makes).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::{AfterPublish, Config, Paths};
use crate::fsio;
use crate::study::{Stage, StudyError};

/// The failure record written next to a failed study's inputs.
pub const ERROR_FILE: &str = "error.json";
/// Suffix of an error file staged in the state folder while its study moves to `failed/`.
const STAGED_ERROR_SUFFIX: &str = ".error.json";
/// The marker a sender may drop into a study folder to say it is complete.
pub const COMPLETE_MARKER: &str = ".complete";
/// Where attempt counters live, inside `paths.work`.
const STATE_DIR: &str = ".tracerd-state";

/// A study claimed into `work/`, waiting for or under processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Its folder name in `work/` (the inbox name, made unique).
    pub name: String,
    /// `work/<name>`.
    pub dir: PathBuf,
    /// A short hash of the name: how logs refer to the study until its key is known. Scanner
    /// export folders are often named after the patient, so the name itself is never logged.
    pub entry: String,
}

/// What start-up recovery found and did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Studies left in `work/`, queued again (oldest first).
    pub requeued: Vec<Claimed>,
    /// Studies interrupted too often, moved to `failed/`.
    pub gave_up: Vec<Claimed>,
    /// Requeued studies that were in memory at an unclean stop (now or before), by name:
    /// the daemon processes them one at a time, first, so that only the study that stops it
    /// uses up its attempts.
    pub suspects: Vec<String>,
    /// Temporary files and folders removed.
    pub temporaries: usize,
    /// Interrupted moves into `failed/` that were completed.
    pub finished_failures: usize,
}

/// A study's attempt record, one line in `work/.tracerd-state/<hash>`:
/// `<counted> <open> <suspect>` (an older daemon's plain `<counted>` still reads).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Attempts {
    /// Attempts begun and neither finished nor taken back.
    counted: u32,
    /// An attempt is under way (the study is in memory).
    open: bool,
    /// It was in memory at an unclean stop: it runs alone until it is published or failed.
    suspect: bool,
}

impl Attempts {
    fn parse(s: &str) -> Attempts {
        let mut f = s.split_whitespace();
        let counted = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut flag = || f.next() == Some("1");
        let (open, suspect) = (flag(), flag());
        Attempts {
            counted,
            open,
            suspect,
        }
    }
}

impl std::fmt::Display for Attempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} {} {}",
            self.counted, self.open as u8, self.suspect as u8
        )
    }
}

/// The study folders and the rules for moving studies between them.
#[derive(Debug, Clone)]
pub struct Journal {
    paths: Paths,
    after_publish: AfterPublish,
    max_attempts: u32,
}

/// The log name of an inbox entry: 8 hex digits of the SHA-256 of its name.
pub fn entry_id(name: &str) -> String {
    name_hash(name, 4)
}

/// The first `bytes` bytes of the SHA-256 of `name`, in hex (names that carry no identifier).
pub(crate) fn name_hash(name: &str, bytes: usize) -> String {
    Sha256::digest(name.as_bytes())[..bytes]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Journal {
    /// Creates the study folders that do not exist yet.
    pub fn open(config: &Config) -> io::Result<Journal> {
        let journal = Journal {
            paths: config.paths.clone(),
            after_publish: config.daemon.inputs_after_publish,
            max_attempts: config.daemon.max_attempts,
        };
        for (_, dir) in journal.paths.study_dirs() {
            fs::create_dir_all(dir)?;
        }
        fs::create_dir_all(journal.state_dir())?;
        Ok(journal)
    }

    /// Takes the lock that keeps a second daemon off these folders; held until the returned
    /// file is dropped (or the process ends, however it ends).
    pub fn lock(&self) -> io::Result<fs::File> {
        let path = self.state_dir().join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another tracerd is already running on {} (lock {})",
                    self.paths.work.display(),
                    path.display()
                ),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    fn state_dir(&self) -> PathBuf {
        self.paths.work.join(STATE_DIR)
    }

    fn attempts_file(&self, name: &str) -> PathBuf {
        self.state_dir().join(name_hash(name, 12))
    }

    /// How many times processing of `name` has started without finishing (and counted).
    pub fn attempts(&self, name: &str) -> u32 {
        self.record(name).counted
    }

    fn record(&self, name: &str) -> Attempts {
        fs::read_to_string(self.attempts_file(name))
            .map(|s| Attempts::parse(&s))
            .unwrap_or_default()
    }

    fn set_record(&self, name: &str, record: Attempts) -> io::Result<()> {
        let file = self.attempts_file(name);
        if record == Attempts::default() {
            return match fs::remove_file(&file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        fsio::write_bytes_atomic(&file, record.to_string().as_bytes())
    }

    fn set_attempts(&self, name: &str, n: u32) -> io::Result<()> {
        let record = Attempts {
            counted: n,
            ..self.record(name)
        };
        self.set_record(name, if n == 0 { Attempts::default() } else { record })
    }

    /// Records that processing of `study` starts now; returns the attempt number (1 first).
    pub fn begin_attempt(&self, study: &Claimed) -> io::Result<u32> {
        let mut r = self.record(&study.name);
        r.counted += 1;
        r.open = true;
        self.set_record(&study.name, r)?;
        Ok(r.counted)
    }

    /// Drops the attempt record of a study that is gone from `work/`.
    pub fn forget(&self, study: &Claimed) -> io::Result<()> {
        self.set_attempts(&study.name, 0)
    }

    /// Takes back an attempt the daemon itself interrupted (a graceful stop, a transient
    /// error), so that it does not count towards `max_attempts`.
    pub fn cancel_attempt(&self, study: &Claimed) -> io::Result<()> {
        let mut r = self.record(&study.name);
        r.counted = r.counted.saturating_sub(1);
        r.open = false;
        self.set_record(&study.name, r)
    }

    /// Attempts that were open when the daemon stopped uncleanly: with one study in memory it
    /// is blamed (its attempt counts); with several, no one is (their attempts are taken back).
    /// Either way they become suspects, retried one at a time until each is published or
    /// crashes alone.
    fn blame(&self, names: &[String]) -> io::Result<()> {
        let open: Vec<&String> = names.iter().filter(|n| self.record(n).open).collect();
        for name in &open {
            let mut r = self.record(name);
            if open.len() > 1 {
                r.counted = r.counted.saturating_sub(1);
            }
            r.open = false;
            r.suspect = true;
            self.set_record(name, r)?;
        }
        Ok(())
    }

    /// Moves the complete inbox entry `name` into `work/`.
    pub fn claim(&self, name: &str) -> io::Result<Claimed> {
        self.claim_as(OsStr::new(name), name)
    }

    /// Moves the inbox entry `source` into `work/` under `name` (a loose file keeps its own
    /// name inside its new folder): how an entry whose name is not UTF-8 is claimed.
    pub fn claim_as(&self, source_name: &OsStr, name: &str) -> io::Result<Claimed> {
        let source = self.paths.inbox.join(source_name);
        let name = if fs::symlink_metadata(&source)?.is_dir() {
            rename_unique(&source, &self.paths.work, name)?
        } else {
            // A loose file: give it a folder of its own, so that every study is a folder.
            let folder = create_unique_dir(&self.paths.work, name)?;
            let inside = self.paths.work.join(&folder).join(source_name);
            if let Err(e) = fs::rename(&source, &inside) {
                let _ = fs::remove_dir(self.paths.work.join(&folder));
                return Err(e);
            }
            fsio::sync_dir(&self.paths.work.join(&folder))?;
            folder
        };
        fsio::sync_dir(&self.paths.inbox)?;
        fsio::sync_dir(&self.paths.work)?;
        // A counter left by an earlier study of the same name must not be inherited.
        self.set_attempts(&name, 0)?;
        Ok(self.claimed(name))
    }

    fn claimed(&self, name: String) -> Claimed {
        Claimed {
            dir: self.paths.work.join(&name),
            entry: entry_id(&name),
            name,
        }
    }

    /// Disposes of a published study's inputs, per `inputs_after_publish`; returns where they
    /// went (`None`: deleted).
    pub fn finish(&self, study: &Claimed) -> io::Result<Option<PathBuf>> {
        let kept = match self.after_publish {
            AfterPublish::Archive => {
                let name = rename_unique(&study.dir, &self.paths.archive, &study.name)?;
                fsio::sync_dir(&self.paths.archive)?;
                Some(self.paths.archive.join(name))
            }
            AfterPublish::Delete => {
                let doomed = fsio::temp_path_for(&study.dir);
                fs::rename(&study.dir, &doomed)?;
                fs::remove_dir_all(&doomed)?;
                None
            }
        };
        fsio::sync_dir(&self.paths.work)?;
        self.set_attempts(&study.name, 0)?;
        Ok(kept)
    }

    /// Moves a study into `failed/` with `error.json`; returns its folder there.
    pub fn fail(&self, study: &Claimed, error: &StudyError) -> io::Result<PathBuf> {
        let mut json = serde_json::to_vec_pretty(error).map_err(io::Error::other)?;
        json.push(b'\n');
        // Staged in tracerd's own folder, where no input can be: never a name an input uses.
        let staged = self.staged_error_file(&study.name);
        fsio::write_bytes_atomic(&staged, &json)?;
        let name = rename_unique(&study.dir, &self.paths.failed, &study.name)?;
        fsio::sync_dir(&self.paths.failed)?;
        fsio::sync_dir(&self.paths.work)?;
        let dir = self.paths.failed.join(name);
        place_error_file(&staged, &dir)?;
        self.set_attempts(&study.name, 0)?;
        Ok(dir)
    }

    /// Where `fail` stages the error file of the study `name` before the study moves.
    fn staged_error_file(&self, name: &str) -> PathBuf {
        self.state_dir()
            .join(format!("{}{STAGED_ERROR_SUFFIX}", name_hash(name, 12)))
    }

    /// Finishes `fail`s a crash cut short: a staged error file whose study is still in
    /// `work/` is dropped (the study is processed again); one whose study reached `failed/`
    /// is put there. Returns how many were put in place.
    fn finish_failures(&self, in_work: &[String]) -> io::Result<usize> {
        let mut placed = 0;
        for entry in fs::read_dir(self.state_dir())? {
            let staged = entry?.path();
            let Some(hash) = staged
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(STAGED_ERROR_SUFFIX))
                .map(str::to_string)
            else {
                continue;
            };
            if in_work.iter().any(|n| name_hash(n, 12) == hash) {
                fs::remove_file(&staged)?;
            } else if let Some(dir) = self.failed_folder_of(&hash)? {
                place_error_file(&staged, &dir)?;
                placed += 1;
            } else {
                fs::remove_file(&staged)?;
            }
        }
        Ok(placed)
    }

    /// The folder in `failed/` of the study whose work name hashes to `hash` (`fail` names it
    /// `<name>`, or `<name>-N` when taken: an exact match is preferred).
    fn failed_folder_of(&self, hash: &str) -> io::Result<Option<PathBuf>> {
        let mut by_base = None;
        for entry in fs::read_dir(&self.paths.failed)? {
            let dir = entry?.path();
            let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let base = match name.rsplit_once('-') {
                Some((b, n)) if n.parse::<u32>().is_ok_and(|n| n >= 2) => b,
                _ => name,
            };
            if !dir.is_dir() {
                continue;
            }
            if name_hash(name, 12) == hash {
                return Ok(Some(dir));
            }
            if name_hash(base, 12) == hash {
                by_base = Some(dir);
            }
        }
        Ok(by_base)
    }

    /// Free space, in MiB, on the filesystem of `work/` (all study folders share it).
    pub fn free_mib(&self) -> io::Result<u64> {
        Ok(self.free_bytes()? / (1024 * 1024))
    }

    /// Bytes free to unprivileged users on the filesystem of `paths.work`.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.paths.work)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Makes the journal consistent after a crash; see the module documentation.
    pub fn recover(&self) -> io::Result<Recovery> {
        let mut recovery = Recovery {
            temporaries: fsio::remove_temporaries(&self.paths.outbox)?
                + fsio::remove_temporaries(&self.paths.work)?
                + fsio::remove_temporaries(&self.paths.archive)?,
            ..Recovery::default()
        };
        let mut queued = Vec::new();
        for entry in fs::read_dir(&self.paths.work)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let modified = entry.metadata()?.modified()?;
            queued.push((modified, name));
        }
        queued.sort();
        let names: Vec<String> = queued.into_iter().map(|(_, n)| n).collect();
        recovery.finished_failures = self.finish_failures(&names)?;
        // Counters of studies that are no longer in work/.
        let live: std::collections::HashSet<PathBuf> =
            names.iter().map(|n| self.attempts_file(n)).collect();
        for entry in fs::read_dir(self.state_dir())? {
            let path = entry?.path();
            if !live.contains(&path) && path.file_name() != Some(OsStr::new("lock")) {
                fs::remove_file(&path)?;
            }
        }
        self.blame(&names)?;
        for name in names {
            let study = self.claimed(name);
            let attempts = self.attempts(&study.name);
            if attempts >= self.max_attempts {
                let error = StudyError::new(
                    Stage::Ingest,
                    format!(
                        "processing was interrupted {attempts} time{} (crash, kill or watchdog \
                         restart); the study is not tried again",
                        if attempts == 1 { "" } else { "s" }
                    ),
                    "this study may be what stops tracerd: check the journal \
                     (journalctl -u tracerd) around the restarts, then move the folder back \
                     into the inbox to retry",
                );
                self.fail(&study, &error)?;
                recovery.gave_up.push(study);
            } else {
                if self.record(&study.name).suspect {
                    recovery.suspects.push(study.name.clone());
                }
                recovery.requeued.push(study);
            }
        }
        // Suspects first (the daemon runs them one at a time before anything else), those
        // blamed least first: a study interrupted alone goes behind the others, so that an
        // outside kill does not hit the same innocent study at every restart while the one
        // that really crashes the daemon keeps coming back to it.
        let suspects = &recovery.suspects;
        recovery
            .requeued
            .sort_by_key(|c| (!suspects.contains(&c.name), self.attempts(&c.name)));
        Ok(recovery)
    }
}

/// Moves the staged error file into the failed study's folder under the first name its own
/// files do not use: `error.json`, else `tracerd-error.json`, `tracerd-error-2.json`, … (an
/// input is never overwritten).
fn place_error_file(staged: &Path, dir: &Path) -> io::Result<()> {
    let free = [ERROR_FILE.to_string(), format!("tracerd-{ERROR_FILE}")]
        .into_iter()
        .chain((2..10_000).map(|i| format!("tracerd-error-{i}.json")))
        .find(|n| !dir.join(n).exists())
        .ok_or_else(|| io::Error::other("no free name for the error file"))?;
    fs::rename(staged, dir.join(free))?;
    fsio::sync_dir(dir)
}

/// Candidate names for `name` in a folder where it may be taken: `name`, `name-2`, `name-3`, …
fn candidates(name: &str) -> impl Iterator<Item = String> + '_ {
    std::iter::once(name.to_string()).chain((2..).map(move |i| format!("{name}-{i}")))
}

/// Renames `source` into `dir`, as `name` or the first free `name-N`; never replaces anything.
pub(crate) fn rename_unique(source: &Path, dir: &Path, name: &str) -> io::Result<String> {
    for candidate in candidates(name).take(10_000) {
        let dest = dir.join(&candidate);
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            source,
            rustix::fs::CWD,
            &dest,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => return Ok(candidate),
            Err(rustix::io::Errno::EXIST) => continue,
            // Filesystems without renameat2: check, then rename (tracerd is the only mover).
            Err(rustix::io::Errno::INVAL) if !dest.exists() => {
                fs::rename(source, &dest)?;
                return Ok(candidate);
            }
            Err(rustix::io::Errno::INVAL) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(format!(
        "no free name for a study in {}",
        dir.display()
    )))
}

/// Creates `dir/name` (or the first free `name-N`) and returns the name used.
fn create_unique_dir(dir: &Path, name: &str) -> io::Result<String> {
    for candidate in candidates(name).take(10_000) {
        match fs::create_dir(dir.join(&candidate)) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "no free name for a study in {}",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Journal) {
        let root = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        for (name, dir) in [
            ("inbox", &mut config.paths.inbox),
            ("work", &mut config.paths.work),
            ("outbox", &mut config.paths.outbox),
            ("failed", &mut config.paths.failed),
            ("archive", &mut config.paths.archive),
        ] {
            *dir = root.path().join(name);
        }
        let journal = Journal::open(&config).unwrap();
        (root, journal)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != STATE_DIR)
            .collect();
        v.sort();
        v
    }

    fn drop_study(journal: &Journal, name: &str) {
        let dir = journal.paths.inbox.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("SUV.nii.gz"), name).unwrap();
    }

    #[test]
    fn claim_archive_and_fail_move_whole_studies_without_replacing() {
        let (_root, j) = setup();
        drop_study(&j, "a");
        let first = j.claim("a").unwrap();
        drop_study(&j, "a");
        let second = j.claim("a").unwrap();
        assert_eq!((first.name.as_str(), second.name.as_str()), ("a", "a-2"));
        assert_eq!(first.entry, entry_id("a"));
        assert_eq!(first.entry.len(), 8);
        assert!(names(&j.paths.inbox).is_empty());
        assert_eq!(j.finish(&first).unwrap(), Some(j.paths.archive.join("a")));
        let error = StudyError::new(Stage::Ingest, "truncated", "re-export");
        let failed = j.fail(&second, &error).unwrap();
        assert_eq!(names(&j.paths.work), Vec::<String>::new());
        assert_eq!(names(&failed), ["SUV.nii.gz", "error.json"]);
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(failed.join("error.json")).unwrap()).unwrap();
        assert_eq!(json["stage"], "ingest");
        assert_eq!(json["error"], "truncated");
        assert_eq!(
            fs::read(j.paths.archive.join("a/SUV.nii.gz")).unwrap(),
            b"a"
        );
    }

    #[test]
    fn a_loose_file_is_claimed_into_a_folder_and_an_input_error_json_is_kept() {
        let (_root, j) = setup();
        fs::write(j.paths.inbox.join("scan.nii.gz"), "x").unwrap();
        let c = j.claim("scan.nii.gz").unwrap();
        assert_eq!(names(&c.dir), ["scan.nii.gz"]);
        fs::write(c.dir.join("error.json"), "the sender's own").unwrap();
        let failed = j
            .fail(&c, &StudyError::new(Stage::Ingest, "e", "h"))
            .unwrap();
        assert_eq!(
            names(&failed),
            ["error.json", "scan.nii.gz", "tracerd-error.json"]
        );
        assert_eq!(
            fs::read(failed.join("error.json")).unwrap(),
            b"the sender's own"
        );
    }

    #[test]
    fn recovery_requeues_work_sweeps_temporaries_and_finishes_failures() {
        let (_root, j) = setup();
        drop_study(&j, "queued");
        let queued = j.claim("queued").unwrap();
        // A crash inside fail(): error file staged, study already in failed/.
        drop_study(&j, "failing");
        let failing = j.claim("failing").unwrap();
        fs::write(j.staged_error_file("failing"), "{}").unwrap();
        rename_unique(&failing.dir, &j.paths.failed, "failing").unwrap();
        // Inputs with the names of tracerd's files (issue 16 row 11) are left alone.
        fs::write(queued.dir.join(".tracerd-tmp-7-7-error.json"), "input").unwrap();
        // A crash inside publish and inside a delete.
        fs::create_dir(j.paths.outbox.join(format!("{}9-1-k", fsio::TEMP_PREFIX))).unwrap();
        fs::create_dir(j.paths.work.join(format!("{}9-2-gone", fsio::TEMP_PREFIX))).unwrap();
        // A counter of a study that is no longer in work/.
        j.set_attempts("long-gone", 2).unwrap();

        let r = j.recover().unwrap();
        assert_eq!(r.requeued, vec![queued.clone()]);
        assert!(r.gave_up.is_empty());
        assert_eq!(r.temporaries, 2);
        assert_eq!(r.finished_failures, 1);
        assert_eq!(
            names(&j.paths.failed.join("failing")),
            ["SUV.nii.gz", "error.json"]
        );
        assert!(names(&j.paths.outbox).is_empty());
        assert_eq!(fs::read_dir(j.state_dir()).unwrap().count(), 0);
        assert_eq!(
            fs::read(queued.dir.join(".tracerd-tmp-7-7-error.json")).unwrap(),
            b"input"
        );
    }

    /// Issue 16 row 11: an input named `tracerd-error.json` was overwritten by tracerd's error
    /// record (the inputs also held an `error.json`).
    #[test]
    fn the_error_record_never_takes_an_inputs_name() {
        let (_root, j) = setup();
        drop_study(&j, "s");
        let c = j.claim("s").unwrap();
        fs::write(c.dir.join("error.json"), "input 1").unwrap();
        fs::write(c.dir.join("tracerd-error.json"), "input 2").unwrap();
        let error = StudyError::new(Stage::Ingest, "bad", "fix it");
        let dir = j.fail(&c, &error).unwrap();
        assert_eq!(fs::read(dir.join("error.json")).unwrap(), b"input 1");
        assert_eq!(
            fs::read(dir.join("tracerd-error.json")).unwrap(),
            b"input 2"
        );
        let ours = fs::read_to_string(dir.join("tracerd-error-2.json")).unwrap();
        assert!(ours.contains("\"bad\""), "{ours}");
    }

    #[test]
    fn a_second_daemon_cannot_take_the_folders() {
        let (_root, j) = setup();
        let held = j.lock().unwrap();
        let err = j.lock().unwrap_err();
        assert!(err.to_string().contains("another tracerd"), "{err}");
        drop(held);
        j.lock().unwrap();
        // The lock file survives recovery's sweep of stale counters.
        j.recover().unwrap();
        assert!(j.state_dir().join("lock").exists());
    }

    #[test]
    fn a_study_interrupted_max_attempts_times_is_failed_with_that_reason() {
        let (_root, j) = setup();
        drop_study(&j, "poison");
        let c = j.claim("poison").unwrap();
        for expected in 1..=3 {
            assert_eq!(j.begin_attempt(&c).unwrap(), expected);
            if expected < 3 {
                let r = j.recover().unwrap();
                assert_eq!(r.requeued.len(), 1, "attempt {expected}");
            }
        }
        // A graceful stop takes its attempt back.
        j.cancel_attempt(&c).unwrap();
        assert_eq!(j.recover().unwrap().requeued.len(), 1);
        j.begin_attempt(&c).unwrap();
        let r = j.recover().unwrap();
        assert_eq!(r.gave_up, vec![c]);
        let text = fs::read_to_string(j.paths.failed.join("poison/error.json")).unwrap();
        assert!(text.contains("interrupted 3 times"), "{text}");
        assert_eq!(
            fs::read(j.paths.failed.join("poison/SUV.nii.gz")).unwrap(),
            b"poison"
        );
    }

    #[test]
    fn only_a_study_that_crashes_alone_uses_up_its_attempts() {
        let (_root, j) = setup();
        for name in ["good", "poison"] {
            drop_study(&j, name);
        }
        let good = j.claim("good").unwrap();
        let poison = j.claim("poison").unwrap();
        // Crashes with both in memory blame no one, however often they happen.
        for _ in 0..5 {
            j.begin_attempt(&good).unwrap();
            j.begin_attempt(&poison).unwrap();
            let r = j.recover().unwrap();
            assert!(r.gave_up.is_empty());
            assert_eq!(r.suspects.len(), 2);
            assert_eq!((j.attempts("good"), j.attempts("poison")), (0, 0));
        }
        // Alone, the poison study is blamed each time and fails at max_attempts (3).
        for n in 1..=3 {
            assert_eq!(j.begin_attempt(&poison).unwrap(), n);
            let r = j.recover().unwrap();
            let expected_suspects = if n < 3 { 2 } else { 1 };
            assert_eq!(r.suspects.len(), expected_suspects, "crash {n}");
            assert_eq!(r.requeued.len(), expected_suspects, "crash {n}");
        }
        assert_eq!(j.attempts("good"), 0);
        assert_eq!(names(&j.paths.failed), ["poison"]);
        // Published, the suspect is forgotten.
        j.finish(&good).unwrap();
        assert!(j.recover().unwrap().suspects.is_empty());
    }

    #[test]
    fn an_attempt_record_of_an_older_daemon_still_reads() {
        assert_eq!(
            Attempts::parse("2\n"),
            Attempts {
                counted: 2,
                open: false,
                suspect: false
            }
        );
        let r = Attempts {
            counted: 1,
            open: true,
            suspect: true,
        };
        assert_eq!(Attempts::parse(&r.to_string()), r);
    }

    /// Issue 16 row 10: an inbox entry whose name is not UTF-8 was never processed, with four
    /// warnings a second forever. It is now claimed under a name made from its hash; a loose
    /// file keeps its own name inside its folder.
    #[test]
    fn an_entry_whose_name_is_not_utf8_is_claimed_under_its_hash() {
        use std::os::unix::ffi::OsStrExt;
        let (_root, j) = setup();
        let folder = OsStr::from_bytes(b"caf\xe9");
        fs::create_dir(j.paths.inbox.join(folder)).unwrap();
        fs::write(j.paths.inbox.join(folder).join("SUV.nii.gz"), "x").unwrap();
        let loose = OsStr::from_bytes(b"scan\xff.nii.gz");
        fs::write(j.paths.inbox.join(loose), "y").unwrap();
        let scan = super::super::watch::scan(&j.paths.inbox).unwrap();
        assert_eq!(scan.entries.len(), 2);
        for e in &scan.entries {
            assert!(
                e.name.starts_with("nonutf8-") && e.name.len() == 24,
                "{}",
                e.name
            );
            let c = j.claim_as(&e.source, &e.name).unwrap();
            assert_eq!(c.name, e.name);
        }
        let f = &scan
            .entries
            .iter()
            .find(|e| e.source == folder)
            .unwrap()
            .name;
        assert_eq!(
            fs::read(j.paths.work.join(f).join("SUV.nii.gz")).unwrap(),
            b"x"
        );
        let l = &scan
            .entries
            .iter()
            .find(|e| e.source == loose)
            .unwrap()
            .name;
        assert_eq!(fs::read(j.paths.work.join(l).join(loose)).unwrap(), b"y");
        assert!(names(&j.paths.inbox).is_empty());
    }

    #[test]
    fn deleting_inputs_leaves_nothing_behind() {
        let (root, mut j) = setup();
        j.after_publish = AfterPublish::Delete;
        drop_study(&j, "d");
        let c = j.claim("d").unwrap();
        assert_eq!(j.finish(&c).unwrap(), None);
        assert!(names(&j.paths.work).is_empty());
        assert!(names(&j.paths.archive).is_empty());
        drop(root);
    }
}
