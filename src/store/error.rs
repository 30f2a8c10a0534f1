//! What can go wrong in a store, each with the file or server and how to fix it.

use super::*;

/// Why the store could not do something. Every message names the file or directory involved and
/// says what to do about it, since it is shown to the operator as is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{dir}: cannot create the store directory: {source} (create it yourself, or choose another with --state-dir)"
    )]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("{path}: the store location is not a directory (choose another with --state-dir)")]
    NotADirectory { path: PathBuf },
    #[error(
        "{dir}: the store directory is not writable ({source}); fix its permissions, or choose another with --state-dir"
    )]
    NotWritable { dir: PathBuf, source: io::Error },
    #[error(
        "{dir}: this directory is not empty and is not a Flotilla store (it has no `id` file); choose an empty or new directory with --state-dir"
    )]
    NotAStore { dir: PathBuf },
    #[error(
        "{path}: the store was written by a newer Flotilla (format {found}; this one reads up to {supported}); upgrade Flotilla, or choose another directory with --state-dir"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A state file cannot be read; `fix` says what the operator can do.
    #[error("{path}: {problem}; {fix}")]
    Corrupt {
        path: PathBuf,
        problem: String,
        fix: &'static str,
    },
    /// Another holder has the apply lock. `holder` is `None` only when it took the lock an
    /// instant ago and has not written its details yet.
    #[error(
        "the store is locked by {} (lock file {path}): one apply at a time per store; wait for it to finish, or stop that process, and try again (do not delete the lock file: a lock whose process died is taken over by itself)",
        describe_holder(.holder)
    )]
    Locked {
        path: PathBuf,
        holder: Option<Box<Holder>>,
    },
    /// Another process holds a PostgreSQL store's lock (its database session does).
    #[error(
        "the store {url} is locked by {}: one apply at a time per store; wait for it to finish, or stop that process, and try again (the lock ends with that process's database session)",
        describe_holder(.holder)
    )]
    LeaseHeld {
        url: String,
        holder: Option<Box<Holder>>,
    },
    /// `--state` or `FLOTILLA_STATE` is not a URL the PostgreSQL driver reads.
    #[error("--state {url}: {problem}")]
    BadUrl { url: String, problem: String },
    /// The database could not do something; `detail` is the server's or driver's reason.
    #[error(
        "{url}: cannot {action}: {detail} (check that the server runs and that the URL, user and password in --state or FLOTILLA_STATE are right)"
    )]
    Database {
        url: String,
        action: &'static str,
        detail: String,
    },
    #[error(
        "{dir}: not a Flotilla store (it has no `id` file); --from takes a store directory such as ~/.local/state/flotilla/FLEET"
    )]
    NotACopySource { dir: PathBuf },
    /// `flotilla store copy` refuses a target that holds state already.
    #[error("cannot copy into {url}: {problem}; copy into a new, empty database (CREATE DATABASE …)")]
    CopyTarget { url: String, problem: String },
    #[error(
        "{url}: the database's store schema is version {found}, newer than this Flotilla knows (up to {supported}); upgrade Flotilla, or use another database"
    )]
    NewerSchema { url: String, found: i32, supported: i32 },
    #[error("{path}: cannot {action}: {source}{}", io_hint(.source))]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// A caller passed a name that is unsafe as a file name; names are validated before they
    /// reach the store, so this is a bug in the caller.
    #[error(
        "refusing {what} name {name:?} as a file name in the store: it must not be empty, contain `/` or NUL, or start with `.`"
    )]
    BadName { what: &'static str, name: String },
}

impl StoreError {
    /// Whether another process holds the store's lock (whatever the backend): the one error
    /// a waiting `watch` retries.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Locked { .. } | StoreError::LeaseHeld { .. })
    }

    /// The holder named by a lock refusal, if any.
    pub fn lock_holder(&self) -> Option<&Holder> {
        match self {
            StoreError::Locked { holder, .. } | StoreError::LeaseHeld { holder, .. } => holder.as_deref(),
            _ => None,
        }
    }
}

fn describe_holder(holder: &Option<Box<Holder>>) -> String {
    match holder {
        Some(h) => h.to_string(),
        None => "another process (it has not written its details yet)".to_owned(),
    }
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            " (fix the permissions, or choose another store directory with --state-dir)"
        }
        io::ErrorKind::ReadOnlyFilesystem => {
            " (choose a store directory on a writable file system with --state-dir)"
        }
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            " (free some space, or choose another store directory with --state-dir)"
        }
        _ => " (check that path, or choose another store directory with --state-dir)",
    }
}
