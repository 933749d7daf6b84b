//! Crash-safe file writing, the primitive under the filesystem journal.
//!
//! Every file tracerd writes goes through [`write_atomic`]: it is written under a temporary name
//! in its final directory, `fsync`ed, renamed over the final name, and the directory is `fsync`ed.
//! A reader therefore sees either the old file or the complete new one, and after a crash at any
//! instant the only possible debris is a file whose name starts with [`TEMP_PREFIX`], which
//! start-up recovery may delete.

use std::error::Error;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of every temporary file or folder name tracerd creates.
pub const TEMP_PREFIX: &str = ".tracerd-tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary path next to `dest`, keeping `dest`'s file name as the suffix so that
/// writers which choose a format from the extension (`.nii.gz`) still do the right thing.
pub fn temp_path_for(dest: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!("{TEMP_PREFIX}{}-{n}-{name}", std::process::id()))
}

/// Writes `dest` atomically: `write` fills a temporary path, which is then synced and renamed
/// over `dest`. On any error the temporary file is removed and `dest` is untouched.
pub fn write_atomic<E>(dest: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E>
where
    E: From<io::Error>,
{
    let tmp = temp_path_for(dest);
    let result = write(&tmp).and_then(|()| persist(&tmp, dest).map_err(E::from));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic`] for an in-memory buffer.
pub fn write_bytes_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(dest, |tmp| {
        let mut f = File::create(tmp)?;
        f.write_all(bytes)
    })
}

/// Makes a finished temporary file durable and gives it its final name.
pub fn persist(tmp: &Path, dest: &Path) -> io::Result<()> {
    File::open(tmp)?.sync_all()?;
    fs::rename(tmp, dest)?;
    sync_parent(dest)
}

/// `fsync`s the directory holding `path`, so that a rename into it survives power loss.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(parent)
}

/// `fsync`s a directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes the temporary files and folders (names starting with [`TEMP_PREFIX`]) a crash left
/// directly in `dir`; returns how many.
pub fn remove_temporaries(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// `e` as an `io::Error` of the kind of the first `io::Error` in its source chain (its own
/// message kept), so that a full disk deep inside a writer still reads as `StorageFull` to the
/// code deciding whether to retry; `Other` when no I/O error is in the chain.
pub fn keep_kind<E: Error + Send + Sync + 'static>(e: E) -> io::Error {
    let mut cause: Option<&(dyn Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            return io::Error::new(io.kind(), e.to_string());
        }
        cause = c.source();
    }
    io::Error::other(e)
}

/// Fault injection for tests, in debug builds only: while the file named by
/// `TRACERD_TEST_FULL_MARKER` exists, writes into the outbox fail as on a full disk.
pub fn injected_full_disk() -> io::Result<()> {
    #[cfg(debug_assertions)]
    if std::env::var_os("TRACERD_TEST_FULL_MARKER").is_some_and(|m| Path::new(&m).exists()) {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "No space left on device (injected by TRACERD_TEST_FULL_MARKER)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_atomically_and_leave_no_debris() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("result.json");
        write_bytes_atomic(&dest, b"first").unwrap();
        write_bytes_atomic(&dest, b"second").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.bin");
        write_bytes_atomic(&dest, b"old").unwrap();
        let err = write_atomic(&dest, |tmp| {
            fs::write(tmp, b"half")?;
            Err(io::Error::other("disk on fire"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporaries_are_swept_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(format!("{TEMP_PREFIX}1-0-k"))).unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}1-0-k/a")), "").unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}x")), "").unwrap();
        fs::create_dir(dir.path().join("published")).unwrap();
        assert_eq!(remove_temporaries(dir.path()).unwrap(), 2);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["published"]);
    }

    #[test]
    fn temp_names_keep_the_extension() {
        let p = temp_path_for(Path::new("/x/SUV.nii.gz"));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(TEMP_PREFIX) && name.ends_with("-SUV.nii.gz"));
    }
}
