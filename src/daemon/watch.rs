//! The inbox: what is in it, and when an entry has fully arrived.
//!
//! Each top-level entry of the inbox is one study (a folder, or a loose file). Entries whose
//! name starts with `.` are left alone: senders use such names while copying, and so does
//! tracerd. An entry is *complete* once its [`Fingerprint`] — every file's path, size and
//! modification time, and the folder structure — has not changed for `settle_seconds`, or at
//! once when it holds a [`COMPLETE_MARKER`](super::journal::COMPLETE_MARKER) file at its top
//! level. Deciding needs only `stat`: no file is opened, so a file still being written is
//! never read.
//!
//! A DICOM drop may complete sooner: once it has been quiet for [`EARLY_QUIET`] (or the settle
//! time, if shorter), its DICOM headers are read once ([`dicom_study_complete`]), and when every
//! PET series in it holds all its ImageIndex (0054,1330) values 1..=NumberOfSlices (0054,0081)
//! *and* a CT series of the same study covers the PET's axial extent without a gap, the study
//! counts as complete. Only the headers of files unchanged for that long are read, and an
//! incomplete or unreadable answer (a PET-only drop included) leaves the study to the settle
//! rule.
//!
//! File-system events ([`InboxWatcher`], inotify through `notify`) are hints that make the
//! next scan come sooner. The scan is the truth: events can be dropped (queue overflow,
//! network filesystems) and scanners write files in place.

use std::collections::HashMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::journal::COMPLETE_MARKER;

/// A summary of everything `stat` says about an entry's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64);

/// One inbox entry as a scan saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The name tracerd uses: the entry's own when it is UTF-8, else `nonutf8-` + 16 hex
    /// digits of a hash of its bytes.
    pub name: String,
    /// The entry's name in the inbox, as the file system has it.
    pub source: std::ffi::OsString,
    pub fingerprint: Fingerprint,
    /// The sender says the study is complete (`.complete` at its top level).
    pub marked_complete: bool,
}

/// The entries of the inbox, with their fingerprints, sorted by name. Hidden entries are
/// skipped; a name that is not UTF-8 is processed under [`utf8_name`].
pub fn scan(inbox: &Path) -> io::Result<Scan> {
    let mut scan = Scan::default();
    for entry in fs::read_dir(inbox)? {
        let entry = entry?;
        let source = entry.file_name();
        if source.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let name = utf8_name(&source);
        let path = entry.path();
        let mut hasher = DefaultHasher::new();
        hash_tree(&path, Path::new(""), &mut hasher);
        scan.entries.push(Observed {
            marked_complete: path.join(COMPLETE_MARKER).is_file(),
            fingerprint: Fingerprint(hasher.finish()),
            name,
            source,
        });
    }
    scan.entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(scan)
}

/// The result of one inbox scan.
#[derive(Debug, Default)]
pub struct Scan {
    pub entries: Vec<Observed>,
}

/// The name tracerd uses for an inbox entry: its own when it is UTF-8, else `nonutf8-` + 16 hex
/// digits of the SHA-256 of its bytes (stable, so the entry is tracked across scans).
pub fn utf8_name(source: &std::ffi::OsStr) -> String {
    match source.to_str() {
        Some(s) => s.to_string(),
        None => {
            use sha2::Digest;
            let d = sha2::Sha256::digest(source.as_encoded_bytes());
            let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("nonutf8-{hex}")
        }
    }
}

/// Hashes the metadata of `path` and, for a folder, of everything under it (sorted, so that
/// directory order does not matter). Errors are hashed too: an unreadable subfolder is a
/// stable state that ingest will report, not a reason to wait forever.
fn hash_tree(path: &Path, rel: &Path, hasher: &mut DefaultHasher) {
    rel.hash(hasher);
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => {
            e.kind().hash(hasher);
            return;
        }
    };
    (meta.mode(), meta.len(), meta.mtime(), meta.mtime_nsec()).hash(hasher);
    if meta.is_dir() {
        match fs::read_dir(path) {
            Ok(rd) => {
                let mut names: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
                names.sort();
                for name in names {
                    hash_tree(&path.join(&name), &rel.join(&name), hasher);
                }
            }
            Err(e) => e.kind().hash(hasher),
        }
    }
}

/// How long a DICOM drop must be quiet before its headers are read for the ImageIndex rule.
pub const EARLY_QUIET: Duration = Duration::from_secs(3);

/// Whether a DICOM drop holds everything a study needs, so it may be claimed before the settle
/// time: every PET series complete by ImageIndex, and a CT series of the same study whose
/// slices follow one another without a gap over the PET's whole axial extent (the CT is what
/// attenuation correction and the lesion model need, and scanners often send it last). A
/// PET-only drop, or one whose CT is still arriving, waits for the settle time.
pub fn dicom_study_complete(dir: &Path) -> bool {
    use crate::io::dicom::Instance;
    use crate::io::dicom::complete::{Completeness, pet_series_completeness};
    let Ok(scan) = crate::io::dicom::scan_folder(dir) else {
        return false;
    };
    let mut series: HashMap<(&str, &str), Vec<&Instance>> = HashMap::new();
    for i in &scan.instances {
        series
            .entry((i.modality.as_str(), i.series_uid.as_str()))
            .or_default()
            .push(i);
    }
    let pets: Vec<&Vec<&Instance>> = series
        .iter()
        .filter(|((m, _), _)| *m == "PT")
        .map(|(_, v)| v)
        .collect();
    if pets.is_empty()
        || !pets
            .iter()
            .all(|s| pet_series_completeness(s) == Completeness::Complete)
    {
        return false;
    }
    pets.iter().all(|pet| {
        let Some(extent) = axial_extent(pet) else {
            return false;
        };
        series.iter().any(|((m, _), ct)| {
            *m == "CT" && ct[0].study_uid == pet[0].study_uid && ct_covers(ct, extent)
        })
    })
}

/// Lowest and highest slice position (z, mm) of a series, with its median slice step.
fn slice_positions(series: &[&crate::io::dicom::Instance]) -> Option<(Vec<f64>, f64)> {
    let mut z: Vec<f64> = series
        .iter()
        .map(|i| i.image_position.map(|p| p[2]))
        .collect::<Option<_>>()?;
    z.sort_by(f64::total_cmp);
    z.dedup_by(|a, b| (*a - *b).abs() < 1e-3);
    let mut steps: Vec<f64> = z.windows(2).map(|w| w[1] - w[0]).collect();
    if steps.is_empty() {
        return None;
    }
    steps.sort_by(f64::total_cmp);
    let median = steps[steps.len() / 2];
    Some((z, median))
}

fn axial_extent(series: &[&crate::io::dicom::Instance]) -> Option<(f64, f64)> {
    let (z, step) = slice_positions(series)?;
    Some((z[0] - step / 2.0, z[z.len() - 1] + step / 2.0))
}

/// The CT's slices are evenly spaced (no step over 1.5 × the median) and reach over the PET's
/// extent (within one CT slice at either end).
fn ct_covers(ct: &[&crate::io::dicom::Instance], (lo, hi): (f64, f64)) -> bool {
    let Some((z, step)) = slice_positions(ct) else {
        return false;
    };
    let even = z.windows(2).all(|w| w[1] - w[0] <= 1.5 * step);
    even && z[0] <= lo + step && z[z.len() - 1] >= hi - step
}

/// What the tracker remembers of an entry still arriving.
#[derive(Debug, Clone, Copy)]
struct Seen {
    fingerprint: Fingerprint,
    since: Instant,
    /// The early-completeness probe already answered "no" for this fingerprint.
    probed: bool,
}

/// Decides completeness from successive scans.
#[derive(Debug)]
pub struct Tracker {
    settle: Duration,
    seen: HashMap<String, Seen>,
}

impl Tracker {
    pub fn new(settle: Duration) -> Tracker {
        Tracker {
            settle,
            seen: HashMap::new(),
        }
    }

    pub fn set_settle(&mut self, settle: Duration) {
        self.settle = settle;
    }

    /// Takes a scan made at `now`; returns the names of the entries that are complete, in
    /// the order they became quiet. Entries no longer in the inbox are forgotten; a returned
    /// entry is forgotten too (it is about to be claimed; if the claim fails it is seen anew).
    /// `probe` is asked, at most once per unchanged entry, whether an entry quiet for
    /// [`EARLY_QUIET`] (or `settle`, if shorter) is complete already (the DICOM rule).
    pub fn update(
        &mut self,
        now: Instant,
        observed: &[Observed],
        mut probe: impl FnMut(&Observed) -> bool,
    ) -> Vec<String> {
        let mut next = HashMap::with_capacity(observed.len());
        let mut complete = Vec::new();
        let early = EARLY_QUIET.min(self.settle);
        for o in observed {
            let mut seen = match self.seen.get(&o.name) {
                Some(s) if s.fingerprint == o.fingerprint => *s,
                _ => Seen {
                    fingerprint: o.fingerprint,
                    since: now,
                    probed: false,
                },
            };
            let quiet = now.duration_since(seen.since);
            let done = o.marked_complete
                || quiet >= self.settle
                || (quiet >= early && !seen.probed && {
                    seen.probed = true;
                    probe(o)
                });
            if done {
                complete.push((seen.since, o.name.clone()));
            } else {
                next.insert(o.name.clone(), seen);
            }
        }
        self.seen = next;
        complete.sort();
        complete.into_iter().map(|(_, name)| name).collect()
    }

    /// When the tracker next has something to decide: an entry reaching the early-probe
    /// point or the end of its settle time, if it stays unchanged.
    pub fn next_deadline(&self) -> Option<Instant> {
        let early = EARLY_QUIET.min(self.settle);
        self.seen
            .values()
            .map(|s| {
                if s.probed {
                    s.since + self.settle
                } else {
                    s.since + early
                }
            })
            .min()
    }

    /// How many entries are still arriving.
    pub fn arriving(&self) -> usize {
        self.seen.len()
    }
}

/// inotify on the inbox (recursive), reduced to "something changed": each event tries to put
/// a token into a channel of one, and a full channel drops it, as the scan will see it anyway.
pub struct InboxWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl InboxWatcher {
    pub fn start(inbox: &Path, hints: Sender<()>) -> notify::Result<InboxWatcher> {
        use notify::Watcher;
        let mut watcher = notify::recommended_watcher(move |_event| {
            let _ = hints.try_send(());
        })?;
        watcher.watch(inbox, notify::RecursiveMode::Recursive)?;
        Ok(InboxWatcher { _watcher: watcher })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(dir: &Path) -> Vec<Observed> {
        scan(dir).unwrap().entries
    }

    #[test]
    fn an_entry_completes_after_settling_and_any_change_restarts_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let study = dir.path().join("s1");
        fs::create_dir(&study).unwrap();
        fs::write(study.join("a.dcm"), "1").unwrap();
        let settle = Duration::from_secs(30);
        let mut t = Tracker::new(settle);
        let t0 = Instant::now();
        assert!(t.update(t0, &observed(dir.path()), |_| false).is_empty());
        assert_eq!(t.next_deadline(), Some(t0 + EARLY_QUIET));
        let t1 = t0 + Duration::from_secs(20);
        assert!(t.update(t1, &observed(dir.path()), |_| false).is_empty());
        // A file grows (in a subfolder): the clock restarts.
        fs::create_dir(study.join("sub")).unwrap();
        fs::write(study.join("sub/b.dcm"), "22").unwrap();
        assert!(t.update(t1, &observed(dir.path()), |_| false).is_empty());
        assert!(
            t.update(t0 + Duration::from_secs(40), &observed(dir.path()), |_| {
                false
            })
            .is_empty()
        );
        assert_eq!(
            t.update(t1 + settle, &observed(dir.path()), |_| false),
            ["s1".to_string()]
        );
        assert_eq!(t.arriving(), 0);
    }

    #[test]
    fn a_marker_completes_at_once_and_hidden_entries_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("s2")).unwrap();
        fs::write(dir.path().join("s2/SUV.nii.gz"), "x").unwrap();
        fs::create_dir(dir.path().join(".incoming")).unwrap();
        let mut t = Tracker::new(Duration::from_secs(3600));
        assert!(
            t.update(Instant::now(), &observed(dir.path()), |_| false)
                .is_empty()
        );
        fs::write(dir.path().join("s2").join(COMPLETE_MARKER), "").unwrap();
        assert_eq!(
            t.update(Instant::now(), &observed(dir.path()), |_| false),
            ["s2"]
        );
    }

    /// A temporary folder holding `drop/`: a small synthetic PET/CT study as DICOM.
    fn synthetic_dicom_drop() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let study = crate::synth::generate(&crate::synth::SynthOptions {
            seed: 5,
            size: crate::synth::Size::Small,
        });
        let drop = dir.path().join("drop");
        crate::synth::dicom::write_dicom(&study, &drop).unwrap();
        (dir, drop)
    }

    /// Issue 16 row 6: a PET copied, its CT 6 s later, `settle_seconds = 30`: the drop was
    /// claimed by the ImageIndex rule before the CT arrived and a PET-only result published.
    #[test]
    fn a_dicom_drop_is_not_complete_early_while_its_ct_is_missing_or_partial() {
        let (dir, drop) = synthetic_dicom_drop();
        let mut ct: Vec<_> = crate::io::dicom::scan_folder(&drop)
            .unwrap()
            .instances
            .into_iter()
            .filter(|i| i.modality == "CT")
            .collect();
        ct.sort_by(|a, b| a.image_position.unwrap()[2].total_cmp(&b.image_position.unwrap()[2]));
        let hidden = dir.path().join("hidden");
        fs::create_dir(&hidden).unwrap();
        let hide = |i: &crate::io::dicom::Instance, k: usize| {
            fs::rename(&i.path, hidden.join(k.to_string())).unwrap();
        };
        let restore = |i: &crate::io::dicom::Instance, k: usize| {
            fs::rename(hidden.join(k.to_string()), &i.path).unwrap();
        };
        // No CT yet.
        for (k, i) in ct.iter().enumerate() {
            hide(i, k);
        }
        assert!(!dicom_study_complete(&drop), "PET only");
        // The CT's first half (copied in order).
        for (k, i) in ct.iter().enumerate().take(ct.len() / 2) {
            restore(i, k);
        }
        assert!(!dicom_study_complete(&drop), "half a CT");
        // All but one slice in the middle.
        let mid = ct.len() * 3 / 4;
        for (k, i) in ct.iter().enumerate().skip(ct.len() / 2) {
            if k != mid {
                restore(i, k);
            }
        }
        assert!(!dicom_study_complete(&drop), "a gap in the CT");
        restore(&ct[mid], mid);
        assert!(dicom_study_complete(&drop));
    }

    #[test]
    fn a_dicom_drop_is_complete_once_its_pet_image_indices_are_all_there() {
        let (dir, drop) = synthetic_dicom_drop();
        assert!(dicom_study_complete(&drop));

        // Settle of an hour: only the DICOM rule can complete it, after EARLY_QUIET, once.
        let mut t = Tracker::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        let mut probes = 0;
        let mut probe = |o: &Observed| {
            probes += 1;
            dicom_study_complete(&dir.path().join(&o.name))
        };
        assert!(t.update(t0, &observed(dir.path()), &mut probe).is_empty());
        assert_eq!(
            t.update(t0 + EARLY_QUIET, &observed(dir.path()), &mut probe),
            ["drop"]
        );
        assert_eq!(probes, 1);

        // One PET slice missing: not complete, and asked only once while nothing changes.
        let pet = crate::io::dicom::scan_folder(&drop)
            .unwrap()
            .instances
            .into_iter()
            .find(|i| i.modality == "PT")
            .unwrap();
        fs::remove_file(&pet.path).unwrap();
        assert!(!dicom_study_complete(&drop));
        let mut t = Tracker::new(Duration::from_secs(3600));
        let mut probes = 0;
        let mut probe = |o: &Observed| {
            probes += 1;
            dicom_study_complete(&dir.path().join(&o.name))
        };
        for k in 0..4 {
            let now = t0 + EARLY_QUIET * k;
            assert!(t.update(now, &observed(dir.path()), &mut probe).is_empty());
        }
        assert_eq!(probes, 1);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn the_fingerprint_sees_size_and_mtime_but_not_directory_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s/x");
        fs::create_dir(dir.path().join("s")).unwrap();
        fs::write(&f, "abc").unwrap();
        let a = observed(dir.path())[0].fingerprint;
        assert_eq!(a, observed(dir.path())[0].fingerprint);
        let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_ne!(a, observed(dir.path())[0].fingerprint);
    }
}
