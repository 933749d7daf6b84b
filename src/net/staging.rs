//! Studies arriving over DICOM wait in a hidden folder of the inbox, one per study
//! (`inbox/.tracerd-dicom/<16 hex digits of a hash of the StudyInstanceUID>/`), until they are
//! complete; then they are renamed into view as `inbox/dicom-<hash>/` with a `.complete`
//! marker, and the daemon claims them as it claims any drop.
//!
//! Complete means the same as for a drop ([`Tracker`], [`dicom_study_complete`]): no
//! association is open that has sent instances of the study, and then either its PET holds
//! every ImageIndex and its CT covers the PET (checked once it has been quiet for a few
//! seconds), or nothing has arrived for `watch.settle_seconds`. An association that sends more
//! of a study restarts its clock. Folders left by a crash are picked up again at start.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select};

use crate::daemon::journal::{COMPLETE_MARKER, name_hash, rename_unique};
use crate::daemon::watch::{self, Tracker, dicom_study_complete};
use crate::fsio;

/// The hidden folder of the inbox that holds studies still arriving over DICOM.
pub const STAGING_DIR: &str = ".tracerd-dicom";

/// How soon a failed look or move is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// The staging folders and which of them an open association is writing to.
pub struct Staging {
    root: PathBuf,
    inbox: PathBuf,
    /// Open associations per study folder.
    open: Mutex<HashMap<String, usize>>,
    /// Told whenever an association leaves a study (the promoter looks again).
    changed: Sender<()>,
}

/// The staging folder name of a study: 16 hex digits of the SHA-256 of its StudyInstanceUID
/// (no identifier in a file name).
pub fn study_folder(study_uid: &str) -> String {
    name_hash(study_uid, 8)
}

impl Staging {
    /// Opens (creating) the staging folder of `inbox`, removing debris of interrupted writes;
    /// returns the receiver of change notices for [`Staging::run_promoter`].
    pub fn open(inbox: &Path) -> io::Result<(Arc<Staging>, Receiver<()>)> {
        let root = inbox.join(STAGING_DIR);
        fs::create_dir_all(&root)?;
        for entry in fs::read_dir(&root)? {
            let path = entry?.path();
            if path.is_dir() {
                fsio::remove_temporaries(&path)?;
            }
        }
        let (changed, rx) = crossbeam_channel::bounded(1);
        let staging = Staging {
            root,
            inbox: inbox.to_path_buf(),
            open: Mutex::new(HashMap::new()),
            changed,
        };
        Ok((Arc::new(staging), rx))
    }

    /// The staging folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The staging folder of `study`.
    pub fn dir(&self, study: &str) -> PathBuf {
        self.root.join(study)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An association starts writing into `study`: the folder (created if needed).
    pub fn enter(&self, study: &str) -> io::Result<PathBuf> {
        *self.lock().entry(study.to_string()).or_default() += 1;
        let dir = self.root.join(study);
        if let Err(e) = fs::create_dir_all(&dir) {
            self.leave(study);
            return Err(e);
        }
        Ok(dir)
    }

    /// An association is done with `study` (released, aborted or broken).
    pub fn leave(&self, study: &str) {
        let mut open = self.lock();
        if let Some(n) = open.get_mut(study) {
            *n -= 1;
            if *n == 0 {
                open.remove(study);
            }
        }
        let _ = self.changed.try_send(());
    }

    fn busy(&self, study: &str) -> bool {
        self.lock().contains_key(study)
    }

    /// Studies in staging, with their fingerprints, that no association is writing to.
    fn quiet(&self) -> io::Result<Vec<watch::Observed>> {
        let mut entries = watch::scan(&self.root)?.entries;
        entries.retain(|o| !self.busy(&o.name));
        Ok(entries)
    }

    /// Moves a complete study into view: `.complete` inside, then one rename to
    /// `inbox/dicom-<hash>` (or `-2`, … when that name is still taken).
    /// Returns `None` when an association started writing to it meanwhile.
    fn promote(&self, study: &str) -> io::Result<Option<String>> {
        // Held across the rename, so that no association enters the study while it moves.
        let open = self.lock();
        if open.contains_key(study) {
            return Ok(None);
        }
        let dir = self.root.join(study);
        fsio::write_bytes_atomic(&dir.join(COMPLETE_MARKER), b"")?;
        let name = rename_unique(&dir, &self.inbox, &format!("dicom-{study}"))?;
        fsio::sync_dir(&self.root)?;
        fsio::sync_dir(&self.inbox)?;
        Ok(Some(name))
    }

    /// Watches the staging folder and promotes each study once complete, until `stop` is
    /// closed. Sleeps while nothing is waiting (no timer ticks on an idle daemon).
    pub fn run_promoter(
        &self,
        settle: impl Fn() -> Duration,
        changes: Receiver<()>,
        stop: Receiver<()>,
    ) {
        let mut tracker = Tracker::new(settle());
        loop {
            tracker.set_settle(settle());
            let retry = !self.promote_complete(&mut tracker);
            let timer = match tracker.next_deadline() {
                Some(d) => crossbeam_channel::at(d),
                None if retry => crossbeam_channel::after(RETRY),
                None => never(),
            };
            select! {
                recv(stop) -> _ => return,
                recv(changes) -> _ => {},
                recv(timer) -> _ => {},
            }
        }
    }

    /// One look at the staging folder: promotes what is complete. False when something failed
    /// (said in the log) and needs another look later.
    fn promote_complete(&self, tracker: &mut Tracker) -> bool {
        let quiet = match self.quiet() {
            Ok(quiet) => quiet,
            Err(error) => {
                tracing::error!(%error, "cannot read the DICOM staging folder; will retry");
                return false;
            }
        };
        let probe = |o: &watch::Observed| {
            let t = Instant::now();
            let complete = dicom_study_complete(&self.root.join(&o.name));
            tracing::debug!(entry = %o.name, complete, ms = t.elapsed().as_millis() as u64, "ImageIndex completeness of a received study");
            complete
        };
        let mut ok = true;
        for study in tracker.update(Instant::now(), &quiet, probe) {
            match self.promote(&study) {
                Ok(Some(name)) => {
                    tracing::info!(entry = %name, "received study complete; handed to the inbox")
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(entry = %study, %error, "cannot move a received study into the inbox; will retry");
                    ok = false;
                }
            }
        }
        ok
    }
}
