//! [`DirStore`]: the embedded store, a directory on the machine that runs Flotilla.
//!
//! ```text
//! id                  {"format_version":1,"id":"<16 hex>","created_at":…}   created once
//! epoch               the last epoch handed out (a JSON number)
//! lock                flock'd by the apply that holds the store; its holder as JSON inside
//! audit.jsonl         the audit log, one JSON object per line, append-only
//! rollouts/<env>.json one rollout record per environment
//! observations/<host>.json  the last observation of each host (a cache)
//! cache/artifacts/    the artifact cache (owned by the artifact module)
//! digest-key          the key for published digests of sensitive files (0600; see `key`)
//! ```
//!
//! Mutual exclusion uses `flock(2)`: the kernel drops it when its process dies, so a crashed
//! apply never leaves a lock someone must delete by hand. Every file except the audit log is
//! replaced atomically (see [`super::fsutil`]); the audit log is appended to under a lock, and a
//! line torn by a crash is skipped when reading and fenced off by a newline when appending.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fsutil::{
    append_lines, create_atomic, io_err, read_optional, sync_dir, write_atomic, write_atomic_cache,
};
use super::{
    AuditEvent, AuditFilter, Holder, LockGuard, Observation, PromotionRecord, RolloutRecord, Store,
    StoreError, check_file_name,
};

mod setup;

use setup::*;

/// The layout version this build writes and the newest it reads.
const FORMAT_VERSION: u32 = 1;

const ID: &str = "id";
const EPOCH: &str = "epoch";
const LOCK: &str = "lock";
const AUDIT: &str = "audit.jsonl";
const ROLLOUTS: &str = "rollouts";
const PROMOTIONS: &str = "promotions.jsonl";
const PAUSES: &str = "pauses.json";
const APPROVALS: &str = "approvals.json";
/// Serialises changes of pauses and approvals (read, change, write) without the apply lock,
/// which a running `watch` holds while a person pauses it.
const RECORDS_LOCK: &str = "records.lock";
const OBSERVATIONS: &str = "observations";
const CACHE: &str = "cache";
const ARTIFACTS: &str = "artifacts";

/// `<store>/cache/artifacts`.
pub(super) fn artifact_cache_dir(store: &Path) -> PathBuf {
    store.join(CACHE).join(ARTIFACTS)
}

const ID_FIX: &str = "restore it from a backup; the store id is the `store_id` in the state.json of hosts this store applied to (write {\"format_version\":1,\"id\":\"<store_id>\"})";
const EPOCH_FIX: &str = "it holds the last epoch this store handed out: restore it from a backup, or write a number at least as high as the highest `epoch` in the state.json of hosts this store applied to";
const ROLLOUT_FIX: &str = "fix the JSON, or delete the file to forget this rollout (the next apply starts a new one, with a new wave layout)";

/// How long a refused `lock` keeps re-reading the holder's details when the holder took the
/// lock but has not written them yet (or is just releasing it).
const HOLDER_RETRIES: u32 = 20;
const HOLDER_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// The contents of the `id` file.
#[derive(Debug, Serialize, Deserialize)]
struct IdFile {
    format_version: u32,
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<jiff::Timestamp>,
}

/// The store kept in a directory (DESIGN §7); see the module documentation for its layout.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
    id: String,
}

impl DirStore {
    /// Opens the store in `dir`, creating the directory and the store (its id and epoch) when
    /// they do not exist yet. Fails early, with the directory named, when it is not writable —
    /// better than after a plan has been approved.
    ///
    /// A directory that holds other things and no store is refused rather than filled (a
    /// mistyped `--state-dir ~` must not scatter state into a home directory), and a store that
    /// lost its `id` or `epoch` file is reported rather than given new ones, since hosts compare
    /// both.
    pub fn open(dir: &Path) -> Result<DirStore, StoreError> {
        match fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(StoreError::NotADirectory {
                    path: dir.to_path_buf(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(StoreError::CreateDir {
                    dir: dir.to_path_buf(),
                    source,
                });
            }
        }
        probe_writable(dir)?;
        let id = match read_id(dir)? {
            Some(id) => {
                if read_optional(&dir.join(EPOCH))?.is_none() {
                    return Err(StoreError::Corrupt {
                        path: dir.join(EPOCH),
                        problem: "the store's epoch file is missing".to_owned(),
                        fix: EPOCH_FIX,
                    });
                }
                id
            }
            None => initialise(dir)?,
        };
        let mut created = false;
        for sub in [ROLLOUTS, OBSERVATIONS, CACHE] {
            created |= create_dir(&dir.join(sub))?;
        }
        if created {
            sync_dir(dir)?;
        }
        if create_dir(&dir.join(CACHE).join(ARTIFACTS))? {
            sync_dir(&dir.join(CACHE))?;
        }
        Ok(DirStore {
            dir: dir.to_path_buf(),
            id,
        })
    }

    /// The store's directory, for messages ("state kept in …").
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The environments with a rollout record, sorted (for `flotilla store copy`).
    pub fn rollout_environments(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.dir.join(ROLLOUTS);
        let mut envs = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir, "list"))? {
            let name = entry.map_err(io_err(&dir, "list"))?.file_name();
            if let Some(env) = name.to_str().and_then(|n| n.strip_suffix(".json"))
                && check_file_name("environment", env).is_ok()
            {
                envs.push(env.to_owned());
            }
        }
        envs.sort_unstable();
        Ok(envs)
    }

    /// The last epoch handed out (0 before the first), without taking one.
    pub fn last_epoch(&self) -> Result<u64, StoreError> {
        let path = self.dir.join(EPOCH);
        let bytes = fs::read(&path).map_err(io_err(&path, "read"))?;
        read_epoch(&path, &bytes)
    }

    fn rollout_file(&self, env: &str) -> Result<(PathBuf, String), StoreError> {
        check_file_name("environment", env)?;
        Ok((self.dir.join(ROLLOUTS), format!("{env}.json")))
    }

    fn observation_file(&self, host: &str) -> Result<(PathBuf, String), StoreError> {
        check_file_name("host", host)?;
        Ok((self.dir.join(OBSERVATIONS), format!("{host}.json")))
    }
}

/// Hosts appended to `env`'s rollout record since it was last saved, one JSON line each.
fn changed_file(env: &str) -> String {
    format!("{env}.changed.jsonl")
}

impl Store for DirStore {
    fn id(&self) -> &str {
        &self.id
    }

    fn lock(&self, holder: &Holder) -> Result<Box<dyn LockGuard>, StoreError> {
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path, "open the lock file"))?;
        let mut attempt = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(io_err(&path, "lock")(e)),
            }
            // Held: name the holder. Its details may not be written yet (it locked an instant
            // ago) or already cleared (it is releasing), so look again briefly before giving up.
            if let Some(h) = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
            {
                return Err(StoreError::Locked {
                    path,
                    holder: Some(Box::new(h)),
                });
            }
            attempt += 1;
            if attempt >= HOLDER_RETRIES {
                return Err(StoreError::Locked { path, holder: None });
            }
            std::thread::sleep(HOLDER_RETRY_PAUSE);
        }
        // Ours now. Details still in the file belong to a process that died holding the lock
        // (a live holder clears them before it releases).
        let mut previous = Vec::new();
        (&file)
            .read_to_end(&mut previous)
            .map_err(io_err(&path, "read the lock file"))?;
        let taken_over = if previous.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match serde_json::from_slice::<Holder>(&previous) {
                Ok(dead) => {
                    tracing::warn!(
                        lock = %path.display(),
                        "taking over the store lock left by {dead}, which is no longer running; its apply was interrupted"
                    );
                    Some(dead)
                }
                Err(e) => {
                    tracing::warn!(
                        lock = %path.display(),
                        "taking over the store lock from a process that is no longer running (its details are unreadable: {e})"
                    );
                    None
                }
            }
        };
        let json = serde_json::to_vec(holder)
            .map_err(|e| io_err(&path, "encode the holder for")(io::Error::other(e)))?;
        file.set_len(0)
            .and_then(|()| file.write_all_at(&json, 0))
            .and_then(|()| file.sync_data())
            .map_err(io_err(&path, "write the holder into"))?;
        Ok(Box::new(DirLock {
            file,
            path,
            holder: holder.clone(),
            taken_over,
        }))
    }

    fn next_epoch(&self) -> Result<u64, StoreError> {
        let path = self.dir.join(EPOCH);
        // The epoch file is replaced by rename, so a process that waited for the lock may hold
        // the old file: it must lock the file that is at the path, and try again if it is not.
        loop {
            let file = File::open(&path).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    StoreError::Corrupt {
                        path: path.clone(),
                        problem: "the store's epoch file is missing".to_owned(),
                        fix: EPOCH_FIX,
                    }
                } else {
                    io_err(&path, "open")(e)
                }
            })?;
            file.lock().map_err(io_err(&path, "lock"))?;
            let locked = file.metadata().map_err(io_err(&path, "inspect"))?;
            match fs::metadata(&path) {
                Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path, "inspect")(e)),
            }
            let mut bytes = Vec::new();
            (&file).read_to_end(&mut bytes).map_err(io_err(&path, "read"))?;
            let last = read_epoch(&path, &bytes)?;
            let next = last.checked_add(1).ok_or_else(|| StoreError::Corrupt {
                path: path.clone(),
                problem: "the epoch has reached its largest value".to_owned(),
                fix: EPOCH_FIX,
            })?;
            write_atomic(&self.dir, EPOCH, format!("{next}\n").as_bytes())?;
            // `file` (and its lock) is released here, after the new epoch is on disk.
            return Ok(next);
        }
    }

    fn append_audit_all(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let path = self.dir.join(AUDIT);
        let mut line = Vec::new();
        for event in events {
            serde_json::to_writer(&mut line, event)
                .map_err(|e| io_err(&path, "encode an event for")(io::Error::other(e)))?;
            line.push(b'\n');
        }
        append_lines(&self.dir, &path, &line)
    }

    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let path = self.dir.join(AUDIT);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path, "open")(e)),
        };
        // Shared: an append in progress is waited for rather than read half-written.
        file.lock_shared().map_err(io_err(&path, "lock"))?;
        let mut reader = BufReader::new(&file);
        let mut events = VecDeque::new();
        let mut buf = Vec::new();
        let mut line_no = 0usize;
        loop {
            buf.clear();
            if reader
                .read_until(b'\n', &mut buf)
                .map_err(io_err(&path, "read"))?
                == 0
            {
                break;
            }
            line_no += 1;
            let text = buf.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<AuditEvent>(text) {
                Ok(event) if event.matches(filter) => {
                    events.push_back(event);
                    if filter.limit.is_some_and(|limit| events.len() > limit) {
                        events.pop_front();
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    audit = %path.display(),
                    line = line_no,
                    "skipping an audit entry that cannot be read (a crash during an append leaves a torn line): {e}"
                ),
            }
        }
        Ok(events.into())
    }

    fn save_observation(&self, host: &str, fingerprint: &str, at: jiff::Timestamp) -> Result<(), StoreError> {
        let (dir, name) = self.observation_file(host)?;
        let obs = Observation {
            host: host.to_owned(),
            fingerprint: fingerprint.to_owned(),
            at,
        };
        let mut bytes = serde_json::to_vec_pretty(&obs)
            .map_err(|e| io_err(&dir.join(&name), "encode")(io::Error::other(e)))?;
        bytes.push(b'\n');
        // A cache: atomic, but not worth two fsyncs per host on every run.
        write_atomic_cache(&dir, &name, &bytes)
    }

    fn observation(&self, host: &str) -> Result<Option<Observation>, StoreError> {
        let (dir, name) = self.observation_file(host)?;
        let path = dir.join(name);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        match serde_json::from_slice::<Observation>(&bytes) {
            Ok(obs) if obs.host == host => Ok(Some(obs)),
            Ok(obs) => {
                tracing::warn!(
                    observation = %path.display(),
                    "ignoring a cached observation that names another host ({}); the host will be observed afresh",
                    obs.host
                );
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(
                    observation = %path.display(),
                    "ignoring a cached observation that cannot be read ({e}); the host will be observed afresh"
                );
                Ok(None)
            }
        }
    }

    fn known_hosts(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.dir.join(OBSERVATIONS);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir, "list")(e)),
        };
        let mut hosts = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&dir, "list"))?;
            let name = entry.file_name();
            // Temporary files start with `.`; anything else odd is not ours.
            let Some(host) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if check_file_name("host", host).is_ok() {
                hosts.push(host.to_owned());
            }
        }
        hosts.sort_unstable();
        Ok(hosts)
    }

    fn save_rollout(&self, env: &str, record: &RolloutRecord) -> Result<(), StoreError> {
        let (dir, name) = self.rollout_file(env)?;
        let mut bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| io_err(&dir.join(&name), "encode")(io::Error::other(e)))?;
        bytes.push(b'\n');
        write_atomic(&dir, &name, &bytes)?;
        // The record now holds every host: the appended ones are in it. A crash before this
        // removal only leaves entries that merge into the same list.
        let appended = dir.join(changed_file(env));
        match fs::remove_file(&appended) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&appended, "remove")(e)),
            _ => Ok(()),
        }
    }

    fn rollout_host_changed(&self, env: &str, host: &super::ChangedHost) -> Result<(), StoreError> {
        let (dir, _) = self.rollout_file(env)?;
        let path = dir.join(changed_file(env));
        let mut line = serde_json::to_vec(host)
            .map_err(|e| io_err(&path, "encode a record for")(io::Error::other(e)))?;
        line.push(b'\n');
        append_lines(&dir, &path, &line)
    }

    fn rollout(&self, env: &str) -> Result<Option<RolloutRecord>, StoreError> {
        let (dir, name) = self.rollout_file(env)?;
        let path = dir.join(name);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        let mut record: RolloutRecord = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path,
            problem: format!("the rollout record is not valid: {e}"),
            fix: ROLLOUT_FIX,
        })?;
        let (dir, _) = self.rollout_file(env)?;
        if let Some(appended) = read_optional(&dir.join(changed_file(env)))? {
            // A torn last line (a crash mid-append) is skipped, like the audit log's.
            let hosts = appended
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .filter_map(|l| serde_json::from_slice(l).ok());
            super::merge_changed(&mut record, hosts);
        }
        Ok(Some(record))
    }

    fn record_promotion(&self, record: &PromotionRecord) -> Result<(), StoreError> {
        let path = self.dir.join(PROMOTIONS);
        let mut line = serde_json::to_vec(record)
            .map_err(|e| io_err(&path, "encode a record for")(io::Error::other(e)))?;
        line.push(b'\n');
        append_lines(&self.dir, &path, &line)
    }

    fn digest_key(&self) -> Result<super::DigestKey, StoreError> {
        super::key::load_or_create(&self.dir)
    }

    fn promotions(&self) -> Result<Vec<PromotionRecord>, StoreError> {
        let path = self.dir.join(PROMOTIONS);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(Vec::new());
        };
        // A torn last line (a crash mid-append) is skipped, like the audit log's.
        Ok(bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect())
    }

    fn artifact_cache_dir(&self) -> PathBuf {
        artifact_cache_dir(&self.dir)
    }

    fn pauses(&self) -> Result<Vec<super::Pause>, StoreError> {
        self.read_json(
            PAUSES,
            "fix the JSON (a list of pauses), or delete the file to lift every pause",
        )
    }

    fn pause(&self, pause: &super::Pause) -> Result<(), StoreError> {
        self.edit_json(PAUSES, |pauses: &mut Vec<super::Pause>| {
            super::set_pause(pauses, pause.clone());
        })
    }

    fn resume(&self, environment: Option<&str>) -> Result<Option<super::Pause>, StoreError> {
        self.edit_json(PAUSES, |pauses: &mut Vec<super::Pause>| {
            super::take_pause(pauses, environment)
        })
    }

    fn approvals(&self) -> Result<std::collections::BTreeMap<String, super::Approval>, StoreError> {
        self.read_json(
            APPROVALS,
            "fix the JSON, or delete the file (watch then waits for a person's apply in every environment)",
        )
    }

    fn approve(&self, env: &str, approval: &super::Approval) -> Result<(), StoreError> {
        check_file_name("environment", env)?;
        self.edit_json(
            APPROVALS,
            |all: &mut std::collections::BTreeMap<String, super::Approval>| {
                all.insert(env.to_owned(), approval.clone());
            },
        )
    }
}

impl DirStore {
    /// A small JSON record file at the top of the store; its default when absent.
    fn read_json<T: serde::de::DeserializeOwned + Default>(
        &self,
        name: &str,
        fix: &'static str,
    ) -> Result<T, StoreError> {
        let path = self.dir.join(name);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(T::default());
        };
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path,
            problem: format!("the records are not valid: {e}"),
            fix,
        })
    }

    /// Reads, changes and atomically rewrites a record file under the records lock.
    fn edit_json<T, R>(&self, name: &str, edit: impl FnOnce(&mut T) -> R) -> Result<R, StoreError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Default,
    {
        let lock_path = self.dir.join(RECORDS_LOCK);
        let lock = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path, "open"))?;
        lock.lock().map_err(io_err(&lock_path, "lock"))?;
        let mut records: T = self.read_json(name, "fix the JSON, or delete the file")?;
        let out = edit(&mut records);
        let mut bytes = serde_json::to_vec_pretty(&records)
            .map_err(|e| io_err(&self.dir.join(name), "encode")(io::Error::other(e)))?;
        bytes.push(b'\n');
        write_atomic(&self.dir, name, &bytes)?;
        Ok(out)
    }
}

/// The held apply lock of a [`DirStore`]: the flock'd lock file with the holder written in it.
#[derive(Debug)]
struct DirLock {
    file: File,
    path: PathBuf,
    holder: Holder,
    taken_over: Option<Holder>,
}

impl LockGuard for DirLock {
    fn holder(&self) -> &Holder {
        &self.holder
    }

    fn taken_over(&self) -> Option<&Holder> {
        self.taken_over.as_ref()
    }
}

impl Drop for DirLock {
    /// Clears the holder before releasing, so that details left in the file always mean a
    /// holder that died; closing the file would release the flock anyway, but unlocking
    /// explicitly states the order.
    fn drop(&mut self) {
        if let Err(e) = self.file.set_len(0) {
            tracing::warn!(lock = %self.path.display(), "could not clear the lock holder: {e}");
        }
        if let Err(e) = self.file.unlock() {
            tracing::warn!(lock = %self.path.display(), "could not release the lock (closing it will): {e}");
        }
    }
}
