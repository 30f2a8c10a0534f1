//! Creating and opening a store directory: its `id` and `epoch` files, and refusing a
//! directory that is not a store (or not writable) before anything is written to it.

use super::*;

/// Creates `path` as a directory unless it exists; returns whether it was created.
pub(super) fn create_dir(path: &Path) -> Result<bool, StoreError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) => Err(io_err(path, "create the directory")(e)),
    }
}

/// Writes and removes a file in `dir`: the one portable way to learn that it is writable.
pub(super) fn probe_writable(dir: &Path) -> Result<(), StoreError> {
    let probe = dir.join(format!(".probe-{:016x}", rand::random::<u64>()));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => fs::remove_file(&probe).map_err(io_err(&probe, "remove")),
        Err(source)
            if matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            Err(StoreError::NotWritable {
                dir: dir.to_path_buf(),
                source,
            })
        }
        Err(e) => Err(io_err(dir, "write into the store directory")(e)),
    }
}

/// Reads the store id; `Ok(None)` when the store has not been created yet.
pub(super) fn read_id(dir: &Path) -> Result<Option<String>, StoreError> {
    let path = dir.join(ID);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    let corrupt = |problem: String| StoreError::Corrupt {
        path: path.clone(),
        problem,
        fix: ID_FIX,
    };
    let file: IdFile = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("the store id file is not valid: {e}")))?;
    if file.format_version > FORMAT_VERSION {
        return Err(StoreError::NewerFormat {
            path,
            found: file.format_version,
            supported: FORMAT_VERSION,
        });
    }
    let valid = !file.id.is_empty()
        && file.id.len() <= 64
        && file
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(corrupt(format!(
            "the store id {:?} is not valid (letters, digits, - and _, at most 64)",
            file.id
        )));
    }
    Ok(Some(file.id))
}

/// Creates a new store in `dir`: the epoch first, then the id, which marks the store as
/// complete. Two processes doing this at once end up with the same store, and a crash halfway
/// leaves at most an epoch file, which the next attempt keeps.
pub(super) fn initialise(dir: &Path) -> Result<String, StoreError> {
    check_initialisable(dir)?;
    if !create_atomic(dir, EPOCH, b"0\n")? {
        // Left by an interrupted initialisation (or a concurrent one): keep it, if readable.
        read_epoch(
            &dir.join(EPOCH),
            &fs::read(dir.join(EPOCH)).map_err(io_err(&dir.join(EPOCH), "read"))?,
        )?;
    }
    let file = IdFile {
        format_version: FORMAT_VERSION,
        id: format!("{:016x}", rand::random::<u64>()),
        created_at: Some(jiff::Timestamp::now()),
    };
    let mut bytes =
        serde_json::to_vec(&file).map_err(|e| io_err(&dir.join(ID), "encode")(io::Error::other(e)))?;
    bytes.push(b'\n');
    create_atomic(dir, ID, &bytes)?;
    // Whoever won the race, the id on disk is the store's.
    read_id(dir)?.ok_or_else(|| StoreError::Corrupt {
        path: dir.join(ID),
        problem: "the store id file vanished while the store was being created".to_owned(),
        fix: "check that nothing else is deleting files in the store directory, then try again",
    })
}

/// Refuses to create a store in a directory that holds anything but the leftovers of an
/// interrupted initialisation.
pub(super) fn check_initialisable(dir: &Path) -> Result<(), StoreError> {
    let mut foreign = false;
    let mut store_state = false;
    for entry in fs::read_dir(dir).map_err(io_err(dir, "list"))? {
        let entry = entry.map_err(io_err(dir, "list"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == EPOCH
            || name == ID
            || name.starts_with(".probe-")
            || name.starts_with(&format!(".{EPOCH}.tmp-"))
        {
            continue;
        }
        if name.starts_with(&format!(".{ID}.tmp-")) {
            continue;
        }
        // The cache alone is not state: `validate` and `plan` remember checked artifacts there
        // before any store exists, and a cache can always be rebuilt.
        if name == CACHE {
            continue;
        }
        if [LOCK, AUDIT, ROLLOUTS, OBSERVATIONS].contains(&&*name) {
            store_state = true;
        } else {
            foreign = true;
        }
    }
    if !(foreign || store_state) || dir.join(ID).exists() {
        // Empty, or another process has just finished creating the store.
        return Ok(());
    }
    if foreign {
        return Err(StoreError::NotAStore {
            dir: dir.to_path_buf(),
        });
    }
    Err(StoreError::Corrupt {
        path: dir.join(ID),
        problem: "the store id file is missing, but the directory holds a store's state".to_owned(),
        fix: ID_FIX,
    })
}

pub(super) fn read_epoch(path: &Path, bytes: &[u8]) -> Result<u64, StoreError> {
    serde_json::from_slice::<u64>(bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        problem: format!("the epoch is not a non-negative whole number: {e}"),
        fix: EPOCH_FIX,
    })
}
