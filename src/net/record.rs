//! The durable delivery record: `result.json`'s `delivery` member, one entry per destination
//! with the state of each file sent there.
//!
//! The record is read and rewritten through a handle on the study's outbox folder, never by
//! path: when a study is re-published its folder is exchanged in one rename, and an update
//! in flight then lands in the old folder (about to be deleted), never in the new result.
//! Rewrites are atomic (temporary name, `fsync`, rename, `fsync` of the folder), and every
//! rewrite of any record in the process is serialised, so destinations updating one study at
//! once do not lose each other's updates.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::config::{Destination, DicomResult, Protocol};
use crate::outbox;

/// `result.json`'s `delivery`: one entry per configured destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub destinations: Vec<DestinationState>,
}

/// Where one destination stands for one study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationState {
    pub name: String,
    pub protocol: Protocol,
    pub state: State,
    /// Tries made so far.
    pub attempts: u32,
    /// Why the last try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next try is due (RFC 3339, UTC), while pending after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
    pub files: Vec<FileState>,
}

/// One file for one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileState {
    pub file: String,
    /// When the destination confirmed it (RFC 3339, UTC); absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Files are still to be sent (tries go on with back-off).
    Pending,
    /// Every file was confirmed.
    Delivered,
    /// Given up after `delivery.max_attempts` tries.
    Failed,
    /// The study has none of the files this destination takes (a NIfTI study).
    NothingToSend,
}

fn file_name(r: DicomResult) -> &'static str {
    match r {
        DicomResult::Seg => outbox::SEG_FILE,
        DicomResult::Sr => outbox::SR_FILE,
        DicomResult::Sc => outbox::OVERVIEW_SC_FILE,
    }
}

/// The record of a study about to be published with `outputs`; `None` without destinations.
pub fn initial(destinations: &[Destination], outputs: &[String]) -> Option<Record> {
    if destinations.is_empty() {
        return None;
    }
    let destinations = destinations
        .iter()
        .map(|d| {
            let files: Vec<FileState> = d
                .send
                .iter()
                .map(|r| file_name(*r))
                .filter(|f| outputs.iter().any(|o| o == f))
                .map(|f| FileState {
                    file: f.to_string(),
                    delivered_at: None,
                })
                .collect();
            DestinationState {
                name: d.name.clone(),
                protocol: d.protocol,
                state: if files.is_empty() {
                    State::NothingToSend
                } else {
                    State::Pending
                },
                attempts: 0,
                last_error: None,
                next_attempt: None,
                files,
            }
        })
        .collect();
    Some(Record { destinations })
}

/// Now, as RFC 3339 UTC to the second.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Serialises every read-modify-write of a record in this process.
static REWRITE: Mutex<()> = Mutex::new(());

/// A published study's folder, held open.
pub struct StudyDir {
    fd: OwnedFd,
}

impl StudyDir {
    /// Opens `outbox/<key>`.
    pub fn open(outbox: &Path, key: &str) -> io::Result<StudyDir> {
        let fd = rustix::fs::open(
            outbox.join(key),
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(StudyDir { fd })
    }

    /// A file of the folder, whole.
    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut bytes = Vec::new();
        File::from(fd).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// The delivery record in `result.json`, if it has one.
    pub fn record(&self) -> io::Result<Option<Record>> {
        let doc: serde_json::Value =
            serde_json::from_slice(&self.read(outbox::RESULT_FILE)?).map_err(io::Error::other)?;
        match doc.get("delivery") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(io::Error::other),
        }
    }

    /// Changes `destination`'s entry with `change` and rewrites `result.json` atomically;
    /// returns the entry as written (`None`: no such entry).
    pub fn update(
        &self,
        destination: &str,
        change: impl FnOnce(&mut DestinationState),
    ) -> io::Result<Option<DestinationState>> {
        let _one_at_a_time = REWRITE.lock().unwrap_or_else(|e| e.into_inner());
        let mut doc: serde_json::Value =
            serde_json::from_slice(&self.read(outbox::RESULT_FILE)?).map_err(io::Error::other)?;
        let Some(v) = doc.get_mut("delivery") else {
            return Ok(None);
        };
        let mut record: Record = serde_json::from_value(v.clone()).map_err(io::Error::other)?;
        let Some(entry) = record
            .destinations
            .iter_mut()
            .find(|d| d.name == destination)
        else {
            return Ok(None);
        };
        change(entry);
        let written = entry.clone();
        *v = serde_json::to_value(&record).map_err(io::Error::other)?;
        let mut json = serde_json::to_vec_pretty(&doc).map_err(io::Error::other)?;
        json.push(b'\n');
        self.replace(outbox::RESULT_FILE, &json)?;
        Ok(Some(written))
    }

    fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = format!("{}{}-{name}", crate::fsio::TEMP_PREFIX, std::process::id());
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, tmp.as_str(), flags, Mode::from_raw_mode(0o644))?;
        let mut f = File::from(fd);
        f.write_all(bytes)?;
        f.sync_all()?;
        rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)?;
        rustix::fs::fsync(&self.fd)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(name: &str, send: Vec<DicomResult>) -> Destination {
        Destination {
            name: name.into(),
            protocol: Protocol::CStore,
            address: Some("pacs:104".into()),
            ae_title: Some("PACS".into()),
            calling_ae_title: None,
            url: None,
            username: None,
            password_file: None,
            send,
        }
    }

    #[test]
    fn the_record_lists_the_files_each_destination_takes_and_updates_in_place() {
        let outputs: Vec<String> = ["result.json", "lesions.sr.dcm", "overview.sc.dcm"]
            .map(String::from)
            .to_vec();
        let all = vec![DicomResult::Seg, DicomResult::Sr, DicomResult::Sc];
        let rec = initial(
            &[
                destination("a", all),
                destination("b", vec![DicomResult::Seg]),
            ],
            &outputs,
        )
        .unwrap();
        assert_eq!(rec.destinations[0].state, State::Pending);
        let files: Vec<&str> = rec.destinations[0]
            .files
            .iter()
            .map(|f| f.file.as_str())
            .collect();
        assert_eq!(files, ["lesions.sr.dcm", "overview.sc.dcm"]);
        assert_eq!(rec.destinations[1].state, State::NothingToSend);
        assert!(initial(&[], &outputs).is_none());

        let dir = tempfile::tempdir().unwrap();
        let study = dir.path().join("k");
        std::fs::create_dir(&study).unwrap();
        let doc = serde_json::json!({"key": "k", "delivery": rec});
        std::fs::write(study.join("result.json"), doc.to_string()).unwrap();
        let d = StudyDir::open(dir.path(), "k").unwrap();
        let after = d
            .update("a", |e| {
                e.attempts = 1;
                e.files[0].delivered_at = Some(now_rfc3339());
            })
            .unwrap()
            .unwrap();
        assert_eq!(after.attempts, 1);
        let back = d.record().unwrap().unwrap();
        assert_eq!(back.destinations[0], after);
        assert_eq!(back.destinations[1], rec.destinations[1]);
        let text: serde_json::Value =
            serde_json::from_slice(&std::fs::read(study.join("result.json")).unwrap()).unwrap();
        assert_eq!(text["key"], "k");
        assert!(d.update("nope", |_| {}).unwrap().is_none());
        let names: Vec<_> = std::fs::read_dir(&study).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary left");
    }
}
