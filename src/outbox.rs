//! The outbox: `result.json` (schema `tracerd.result/1`, JSON Schema in
//! `schemas/result.schema.json`) and the atomic publication of a study's folder.
//!
//! A study's results are written into a temporary folder inside the outbox (name starting with
//! [`fsio::TEMP_PREFIX`]), each file `fsync`ed, and the folder appears as `outbox/<key>/` in one
//! `rename(2)`. When `<key>` is already published (a re-run), the new folder and the old one are
//! swapped in one `renameat2(RENAME_EXCHANGE)` and the old one is deleted: a reader sees the old
//! result or the new one, never a mixture, never two. Debris after a crash is only ever a
//! temporary folder, which start-up recovery removes ([`fsio::remove_temporaries`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fsio;
use crate::models::l2snet::LesionSummary;
use crate::models::two_be_three::Scores;
use crate::models::{ModelUse, Timings};
use crate::study::Inputs;

/// Value of `result.json`'s `"schema"`.
pub const SCHEMA: &str = "tracerd.result/1";
/// The JSON Schema of `result.json`, shipped with the binary.
pub const JSON_SCHEMA: &str = include_str!("../schemas/result.schema.json");

pub const RESULT_FILE: &str = "result.json";
pub const MASK_FILE: &str = "lesions.nii.gz";
pub const SEG_FILE: &str = "lesions.seg.dcm";
pub const SR_FILE: &str = "lesions.sr.dcm";
pub const OVERVIEW_FILE: &str = "overview.png";
pub const OVERVIEW_SC_FILE: &str = "overview.sc.dcm";

/// A value, or the reason it is absent.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum OrAbsent<T> {
    Present(T),
    Absent { reason: String },
}

/// Which engine ran the models: the common one, or `mixed` with each model's in `models`.
#[derive(Debug, Clone, Serialize)]
pub struct Backend {
    pub engine: String,
    pub device: String,
}

/// `result.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ResultDoc {
    pub schema: &'static str,
    pub key: String,
    pub tracerd_version: &'static str,
    pub inputs: Inputs,
    pub scores: OrAbsent<ScoresOut>,
    pub lesions: OrAbsent<LesionSummary>,
    /// Files published next to `result.json`.
    pub outputs: Vec<String>,
    pub models: Vec<ModelUse>,
    pub backend: Backend,
    pub timings_ms: Timings,
    /// The models' status lines: demonstration weights are labelled as such in every result.
    pub model_status: Vec<String>,
    pub warnings: Vec<String>,
    /// Where the DICOM results are sent and what each destination confirmed (the daemon,
    /// with `[delivery]` destinations; updated as deliveries happen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<crate::net::record::Record>,
}

/// Scores and the model variant that produced them.
#[derive(Debug, Clone, Serialize)]
pub struct ScoresOut {
    #[serde(flatten)]
    pub scores: Scores,
    /// `ws`: slices over the whole scan.
    pub variant: &'static str,
}

impl Backend {
    pub fn of(models: &[ModelUse]) -> Backend {
        let first = models.first();
        let same = |f: fn(&ModelUse) -> &str| match first {
            Some(m) if models.iter().all(|o| f(o) == f(m)) => f(m).to_string(),
            Some(_) => "mixed".to_string(),
            None => "none".to_string(),
        };
        Backend {
            engine: same(|m| &m.engine),
            device: same(|m| &m.device),
        }
    }
}

/// The characters a study key may hold: `A-Z a-z 0-9 - _ .`.
pub fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Refuses keys that are not one plain path component (`outbox/<key>` must stay inside).
pub fn check_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && key.chars().all(is_key_char);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "study key {key:?} must be 1-128 characters of A-Z a-z 0-9 - _ . and not start with '.'"
        ))
    }
}

/// Publishes `outbox/<key>/`: `fill` writes the files into the temporary folder it is given;
/// the folder then appears (or replaces the previous result) in one rename. On any error
/// nothing is published and the temporary folder is removed.
pub fn publish<E>(
    outbox: &Path,
    key: &str,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<PathBuf, E>
where
    E: From<io::Error>,
{
    check_key(key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    fs::create_dir_all(outbox)?;
    let staging = fsio::temp_path_for(&outbox.join(key));
    fs::create_dir(&staging)?;
    let result = fill(&staging)
        .and_then(|()| sync_tree(&staging).map_err(E::from))
        .and_then(|()| swap_in(&staging, &outbox.join(key)).map_err(E::from));
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result.map(|()| outbox.join(key))
}

/// `fsync`s every file in `dir` and `dir` itself.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            fs::File::open(&path)?.sync_all()?;
        }
    }
    fsio::sync_dir(dir)
}

/// Renames `staging` to `dest`, exchanging atomically with a previous `dest`, which is then
/// deleted.
fn swap_in(staging: &Path, dest: &Path) -> io::Result<()> {
    if dest.exists() {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            staging,
            rustix::fs::CWD,
            dest,
            rustix::fs::RenameFlags::EXCHANGE,
        )?;
        // `staging` now holds the previous result.
        fsio::sync_parent(dest)?;
        fs::remove_dir_all(staging)?;
    } else {
        fs::rename(staging, dest)?;
    }
    fsio::sync_parent(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn publish_appears_whole_and_replaces_without_duplicating() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        let write = |text: &'static str| {
            move |d: &Path| -> io::Result<()> {
                fs::write(d.join("result.json"), text)?;
                fs::write(d.join("extra"), text)
            }
        };
        let path = publish(&outbox, "study-1", write("one")).unwrap();
        assert_eq!(path, outbox.join("study-1"));
        assert_eq!(fs::read_to_string(path.join("result.json")).unwrap(), "one");
        publish(&outbox, "study-1", |d: &Path| {
            fs::write(d.join("result.json"), "two")
        })
        .unwrap();
        assert_eq!(names(&outbox), ["study-1"]);
        assert_eq!(names(&outbox.join("study-1")), ["result.json"]);
        assert_eq!(
            fs::read_to_string(outbox.join("study-1/result.json")).unwrap(),
            "two"
        );
    }

    #[test]
    fn a_failed_fill_publishes_nothing_and_leaves_no_debris() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        publish(&outbox, "k", |d: &Path| fs::write(d.join("a"), "old")).unwrap();
        let err = publish(&outbox, "k", |d: &Path| {
            fs::write(d.join("a"), "half")?;
            Err::<(), _>(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(names(&outbox), ["k"]);
        assert_eq!(fs::read_to_string(outbox.join("k/a")).unwrap(), "old");
    }

    #[test]
    fn keys_stay_inside_the_outbox() {
        for bad in ["", "..", ".hidden", "a/b", "x\u{e9}", &"k".repeat(129)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        check_key("a1b2c3d4-PET_01.v2").unwrap();
    }
}
