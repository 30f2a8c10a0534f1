//! File-system primitives for the directory store: atomic replacement and create-if-absent,
//! both durable (file and directory fsynced), so that a crash at any point leaves either the
//! old content or the new, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::StoreError;

/// Wraps an I/O error with the path and what was being done to it.
pub(crate) fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { path, action, source }
}

/// A temporary file name next to `name`: hidden (starts with `.`), so listings of the store
/// skip it, and random, so concurrent writers never share one.
fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()))
}

/// Writes `bytes` to a fresh temporary file in `dir` and (when `durable`) fsyncs it; the
/// caller then moves it into place. The temporary file is removed if anything fails.
fn write_temp(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> Result<PathBuf, StoreError> {
    let tmp = temp_path(dir, name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp, "create a temporary file"))?;
        f.write_all(bytes).map_err(io_err(&tmp, "write"))?;
        if durable {
            f.sync_all().map_err(io_err(&tmp, "flush to disk"))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Replaces `dir/name` with `bytes` atomically and durably: temporary file in the same
/// directory, write, fsync, rename, fsync the directory. Readers see the old content or the
/// new, and after a crash so does the next run.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    replace(dir, name, bytes, true)
}

/// Like [`write_atomic`] but without flushing to disk, for caches: readers never see a
/// half-written file, and a crash may lose the newest content, which is then rebuilt.
pub(crate) fn write_atomic_cache(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    replace(dir, name, bytes, false)
}

fn replace(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
    let tmp = write_temp(dir, name, bytes, durable)?;
    let target = dir.join(name);
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&target, "replace")(e));
    }
    if durable { sync_dir(dir) } else { Ok(()) }
}

/// Creates `dir/name` with `bytes` unless it exists, atomically and durably. Returns whether
/// this call created it. A hard link, unlike a rename, fails when the target exists, so two
/// processes initialising the same store never overwrite each other's file.
pub(crate) fn create_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<bool, StoreError> {
    let tmp = write_temp(dir, name, bytes, true)?;
    let target = dir.join(name);
    let linked = fs::hard_link(&tmp, &target);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(&target, "create")(e)),
    }
}

/// Fsyncs a directory, which makes the renames and creations in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "flush the directory to disk"))
}

/// Reads a whole file; `Ok(None)` when it does not exist.
/// Appends `lines` (each ending in a newline) to the JSON-lines file `path` in `dir`, durably:
/// under an exclusive lock, so concurrent writers never interleave; after a newline when the
/// file ends in a torn line (a crash during an earlier append), so the torn line stays alone
/// and is skipped by readers instead of swallowing the first new one; flushed, and the
/// directory too when the file is new.
pub(crate) fn append_lines(dir: &Path, path: &Path, lines: &[u8]) -> Result<(), StoreError> {
    use std::os::unix::fs::FileExt as _;
    if lines.is_empty() {
        return Ok(());
    }
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_err(path, "open"))?;
    file.lock().map_err(io_err(path, "lock"))?;
    let len = file.metadata().map_err(io_err(path, "inspect"))?.len();
    let mut torn = false;
    if len > 0 {
        let mut last = [0u8];
        file.read_exact_at(&mut last, len - 1)
            .map_err(io_err(path, "read"))?;
        if last[0] != b'\n' {
            tracing::warn!(
                file = %path.display(),
                "the file ends in a torn line (a crash during an append); it is kept, and skipped when read"
            );
            torn = true;
        }
    }
    let mut file_ref = &file;
    if torn {
        file_ref.write_all(b"\n").map_err(io_err(path, "append to"))?;
    }
    file_ref.write_all(lines).map_err(io_err(path, "append to"))?;
    file.sync_data().map_err(io_err(path, "flush to disk"))?;
    if !existed {
        sync_dir(dir)?;
    }
    Ok(())
}

pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "read")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_files() {
        let d = tempfile::tempdir().unwrap();
        write_atomic(d.path(), "f", b"one").unwrap();
        write_atomic(d.path(), "f", b"two").unwrap();
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
    }

    #[test]
    fn create_atomic_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        assert!(create_atomic(d.path(), "f", b"first").unwrap());
        assert!(!create_atomic(d.path(), "f", b"second").unwrap());
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"first");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_names_the_path() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let e = write_atomic(&missing, "f", b"x").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
