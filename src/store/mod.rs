//! The store: the reconciler's own state (DESIGN §7) — the apply lock, the append-only audit
//! log, epochs, rollout records, the last observation of each host and the artifact cache.
//!
//! Everything above this module talks to the [`Store`] trait only: the embedded default,
//! [`DirStore`], keeps its state in a directory; [`PgStore`] in a PostgreSQL database (for a
//! team sharing one fleet, and several `watch` replicas with one leader). The types exchanged here
//! are plain data (serde) and carry no paths; the one exception is
//! [`Store::artifact_cache_dir`], because artifacts are local files whatever the backend.
//!
//! The guarantees every backend must keep:
//! - one apply at a time per store, and the lock names its holder;
//! - epochs only grow, across processes and crashes (hosts compare them, DESIGN §7);
//! - the audit log is append-only and survives a crash in the middle of an append;
//! - a crash at any point leaves state the next run can read and resume from, and state that
//!   cannot be read is reported with the file and the fix, never silently reset.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod dir;
mod error;
mod fsutil;
mod history;
mod key;
mod memory;
pub mod pausing;
mod pg;
mod records;

pub use crate::plan::promotion::PromotionRecord;
pub use dir::DirStore;
pub use error::StoreError;
pub use history::render_history;
pub use key::{DigestKey, KEYED_PREFIX};
pub use memory::MemStore;
pub use pg::{CopySummary, PgStore, PgUrl};
pub use records::{
    Approval, AuditEvent, AuditFilter, ChangedHost, Holder, Observation, Pause, RolloutRecord,
};
use records::{merge_changed, set_pause, take_pause};

/// Where a store lives (DESIGN §7): a directory (the embedded default), or a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Dir(PathBuf),
    /// A `postgres://` URL (`--state`, `FLOTILLA_STATE`); shown without its password.
    Postgres(PgUrl),
}

impl Location {
    /// `--state`'s value: a `postgres://` URL.
    pub fn parse_url(url: &str) -> Result<Location, StoreError> {
        PgUrl::parse(url).map(Location::Postgres)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Dir(d) => write!(f, "{}", d.display()),
            Location::Postgres(url) => write!(f, "{url}"),
        }
    }
}

/// Opens (creating it if needed) the store at `location`. The one place that names backends.
pub fn open(location: &Location) -> Result<Box<dyn Store>, StoreError> {
    match location {
        Location::Dir(d) => Ok(Box::new(DirStore::open(d)?)),
        Location::Postgres(url) => Ok(Box::new(PgStore::open(url)?)),
    }
}

/// Where the store at `location` keeps verified artifacts, whether or not the store exists
/// yet: `validate` and `plan` remember checked artifacts there without creating a store.
pub fn artifact_cache_dir(location: &Location) -> PathBuf {
    match location {
        Location::Dir(d) => dir::artifact_cache_dir(d),
        Location::Postgres(url) => pg::cache_dir(url).join("artifacts"),
    }
}

/// Where `watch --remote` keeps its bare mirror of the fleet repository (DESIGN §7): a local
/// directory whatever the backend, since Git reads it.
pub fn mirror_dir(location: &Location) -> PathBuf {
    match location {
        Location::Dir(d) => d.join("cache").join("mirror.git"),
        Location::Postgres(url) => pg::cache_dir(url).join("mirror.git"),
    }
}

/// `flotilla store copy`: moves the directory store at `from` into the PostgreSQL database at
/// `to` (DESIGN §7), with its id, so the hosts it applied to are not refused. Returns the id
/// and what was copied.
pub fn copy_dir_to_postgres(
    from: &Path,
    to: &str,
    holder: &Holder,
) -> Result<(String, CopySummary), StoreError> {
    if !from.join("id").is_file() {
        return Err(StoreError::NotACopySource { dir: from.to_owned() });
    }
    let source = DirStore::open(from)?;
    let url = PgUrl::parse(to)?;
    let summary = PgStore::copy_from_dir(&source, &url, holder)?;
    Ok((source.id().to_owned(), summary))
}

/// Opens the store at `location` only if it exists: commands that only read (plan, status,
/// history) never create one.
pub fn open_existing(location: &Location) -> Result<Option<Box<dyn Store>>, StoreError> {
    match location {
        Location::Dir(d) if !d.join("id").is_file() => Ok(None),
        Location::Dir(_) => open(location).map(Some),
        Location::Postgres(url) => Ok(PgStore::open_existing(url)?.map(|s| Box::new(s) as Box<dyn Store>)),
    }
}

/// The reconciler's state, behind one interface (DESIGN §7). Implementations are shared across
/// threads and tasks, hence `Send + Sync`; every method does its own locking.
pub trait Store: Send + Sync {
    /// The store's stable id, created with the store. It goes into every host's `state.json`
    /// so that a host written by another store (another operator, another `watch`) is noticed.
    fn id(&self) -> &str;

    /// Takes the store's apply lock for `holder`: one apply at a time per store.
    ///
    /// Fails with [`StoreError::Locked`] (naming the holder) when another holder has it; never
    /// waits. The lock is released when the guard is dropped, on every exit path including
    /// panics, and by the operating system when the process dies — so a lock left behind by a
    /// dead process is simply taken over (the guard reports it in [`LockGuard::taken_over`]).
    fn lock(&self, holder: &Holder) -> Result<Box<dyn LockGuard>, StoreError>;

    /// Why the apply lock this store handed out (and whose guard still lives) is no longer
    /// held, if it is not: a PostgreSQL store whose lock session was lost. Checked before every
    /// host start, since the guard itself is held far from there. `None` for backends whose
    /// lock cannot be lost while the process lives.
    fn lease_lost(&self) -> Option<String> {
        None
    }

    /// Hands out the next epoch: strictly greater than every epoch this store handed out
    /// before, in any process, persisted before it is returned.
    fn next_epoch(&self) -> Result<u64, StoreError>;

    /// Appends one event to the audit log, durably (it is on disk when this returns). The log
    /// is append-only: nothing ever truncates or rewrites it.
    fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.append_audit_all(std::slice::from_ref(event))
    }
    /// Appends several events with one flush to disk (one line each, in order).
    fn append_audit_all(&self, events: &[AuditEvent]) -> Result<(), StoreError>;

    /// The audit events that match `filter`, oldest first. `limit` keeps the newest N of the
    /// matching events. An entry that cannot be read (a crash in the middle of an append
    /// leaves a torn line) is skipped with a warning, so one bad line never hides the rest.
    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;

    /// Records the fingerprint of what `host` was observed to have at `at`, replacing the
    /// previous one.
    fn save_observation(&self, host: &str, fingerprint: &str, at: jiff::Timestamp) -> Result<(), StoreError>;

    /// The last observation saved for `host`, if any. Observations are a cache: one that
    /// cannot be read is reported with a warning and treated as absent.
    fn observation(&self, host: &str) -> Result<Option<Observation>, StoreError>;

    /// The hosts with a saved observation, sorted by name: hosts that a plan must report as
    /// "no longer managed" when they leave the manifests.
    fn known_hosts(&self) -> Result<Vec<String>, StoreError>;

    /// Records the state of `env`'s rollout, replacing the previous record.
    fn save_rollout(&self, env: &str, record: &RolloutRecord) -> Result<(), StoreError>;

    /// The last rollout record of `env`, if any, with every host appended by
    /// [`Store::rollout_host_changed`] since it was saved in its `changed` list.
    fn rollout(&self, env: &str) -> Result<Option<RolloutRecord>, StoreError>;

    /// Adds one host to the `changed` list of `env`'s rollout record, durably, as it happens
    /// (DESIGN §6.2): appended rather than rewriting the record, so a rollout of n hosts costs
    /// n small writes, not n rewrites of a record that grows to n hosts (an entry is about 80
    /// bytes, so one environment of 10,000 hosts rewrote about 4 GB, each time flushed). A host
    /// appended twice counts once, the
    /// last entry winning; [`Store::save_rollout`] replaces the list with the record's own.
    fn rollout_host_changed(&self, env: &str, host: &ChangedHost) -> Result<(), StoreError>;

    /// The directory of the content-addressed artifact cache; it exists. Artifacts are local
    /// files whatever the backend, so this is a path even for a remote store.
    fn artifact_cache_dir(&self) -> PathBuf;

    /// Records that an environment converged, healthy, on a runtime version (DESIGN §6.4).
    /// Records are never revoked.
    fn record_promotion(&self, record: &PromotionRecord) -> Result<(), StoreError>;

    /// Every promotion record, oldest first.
    fn promotions(&self) -> Result<Vec<PromotionRecord>, StoreError>;

    /// The store's digest key (created on first use, kept private): plans and the audit log
    /// publish the sha256 of a `sensitive` file only keyed with it (see [`DigestKey`]).
    fn digest_key(&self) -> Result<DigestKey, StoreError>;

    /// The pauses in force (`flotilla pause`): the fleet-wide one first, then by environment.
    /// Read without the apply lock, and at every host start: a pause written while an apply
    /// or `watch` runs holds the hosts it has not started yet.
    fn pauses(&self) -> Result<Vec<Pause>, StoreError>;

    /// Pauses a scope; a pause already in force there is replaced (its reason updated).
    /// Works while another process holds the apply lock: that is when it is needed.
    fn pause(&self, pause: &Pause) -> Result<(), StoreError>;

    /// Lifts the pause of `environment` (`None`: the fleet-wide one) and returns it; `None`
    /// when that scope was not paused.
    fn resume(&self, environment: Option<&str>) -> Result<Option<Pause>, StoreError>;

    /// Per environment, what a person last applied of the settings `watch` never changes on
    /// its own (DESIGN §10).
    fn approvals(&self) -> Result<std::collections::BTreeMap<String, Approval>, StoreError>;

    /// Records that a person applied `env` with these settings.
    fn approve(&self, env: &str, approval: &Approval) -> Result<(), StoreError>;
}

/// Proof of holding a store's apply lock; dropping it releases the lock.
pub trait LockGuard: Send + Sync + fmt::Debug {
    /// Who holds the lock (the holder given to [`Store::lock`]).
    fn holder(&self) -> &Holder;

    /// The holder recorded by a process that died while holding the lock, if this guard took
    /// it over. Its apply was interrupted: hosts may be `pending` and rollouts unfinished, which
    /// the next plan resumes from; callers should say so.
    fn taken_over(&self) -> Option<&Holder>;

    /// Why the lock is no longer held although this guard lives, if it is not: a PostgreSQL
    /// store's session was lost (the server released the lock, another process may hold it).
    /// A holder that sees this starts no new host, and `watch` goes back to standby.
    fn lost(&self) -> Option<String> {
        None
    }
}

/// The default store directory (DESIGN §7): `$XDG_STATE_HOME/flotilla/<fleet>`, else
/// `$HOME/.local/state/flotilla/<fleet>`. Pure: the caller passes the environment's values.
///
/// Relative or empty values are ignored, as the XDG base directory specification asks (a
/// relative state directory would depend on where Flotilla happens to run). `None` when neither
/// gives an absolute path, or when `fleet` is not safe as a directory name.
pub fn default_dir(xdg_state_home: Option<&OsStr>, home: Option<&OsStr>, fleet: &str) -> Option<PathBuf> {
    if check_file_name("fleet", fleet).is_err() {
        return None;
    }
    fn absolute(v: Option<&OsStr>) -> Option<&Path> {
        v.map(Path::new).filter(|p| p.is_absolute())
    }
    let base = match absolute(xdg_state_home) {
        Some(xdg) => xdg.to_path_buf(),
        None => absolute(home)?.join(".local").join("state"),
    };
    Some(base.join("flotilla").join(fleet))
}

/// Defends against a name that would escape its directory or collide with the store's own
/// temporary files (which start with `.`). Callers validate names already (DESIGN §3).
pub(crate) fn check_file_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    let bad = name.is_empty()
        || name.starts_with('.')
        || name.contains('/')
        || name.contains('\0')
        || name.len() > 200;
    if bad {
        return Err(StoreError::BadName {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_display_names_process_user_machine_command_and_time() {
        let h = Holder {
            pid: 1234,
            machine: "build-01".into(),
            user: "alice".into(),
            since: "2026-11-22T07:40:00.123456Z".parse().unwrap(),
            command: "flotilla apply".into(),
        };
        assert_eq!(
            h.to_string(),
            "pid 1234 (alice@build-01, `flotilla apply`, since 2026-11-22T07:40:00Z)"
        );
    }

    #[test]
    fn locked_error_shows_the_holder_or_says_it_is_unknown() {
        let h = Holder {
            pid: 7,
            machine: "m".into(),
            user: "u".into(),
            since: "2026-01-01T00:00:00Z".parse().unwrap(),
            command: "flotilla watch".into(),
        };
        let e = StoreError::Locked {
            path: "/s/lock".into(),
            holder: Some(Box::new(h)),
        };
        let msg = e.to_string();
        assert!(msg.contains("pid 7 (u@m, `flotilla watch`"), "{msg}");
        assert!(msg.contains("/s/lock"), "{msg}");
        let e = StoreError::Locked {
            path: "/s/lock".into(),
            holder: None,
        };
        assert!(e.to_string().contains("another process"));
    }

    #[test]
    fn io_errors_say_what_to_do() {
        let e = StoreError::Io {
            path: "/s/epoch".into(),
            action: "write",
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let msg = e.to_string();
        assert!(msg.starts_with("/s/epoch: cannot write: "), "{msg}");
        assert!(msg.contains("--state-dir"), "{msg}");
    }

    #[test]
    fn file_names_that_escape_or_hide_are_refused() {
        for bad in ["", ".", "..", ".hidden", "a/b", "/abs", "a\0b", &"x".repeat(201)] {
            assert!(check_file_name("host", bad).is_err(), "{bad:?}");
        }
        for good in ["web-01", "a.b_c+d", "0"] {
            assert!(check_file_name("host", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn audit_event_fields_are_exactly_the_documented_names() {
        let e = AuditEvent::new("2026-01-01T00:00:00Z".parse().unwrap(), "alice", "apply-started");
        let v = serde_json::to_value(&e).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "time",
            "actor",
            "revision",
            "dirty",
            "environment",
            "host",
            "event",
            "changes",
            "error",
            "reason",
        ];
        want.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
    }

    #[test]
    fn audit_event_reads_lines_with_only_the_mandatory_fields() {
        let e: AuditEvent =
            serde_json::from_str(r#"{"time":"2026-01-01T00:00:00Z","actor":"a","event":"take-over"}"#)
                .unwrap();
        assert_eq!(
            e,
            AuditEvent::new("2026-01-01T00:00:00Z".parse().unwrap(), "a", "take-over")
        );
    }
}
