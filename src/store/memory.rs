//! An in-memory store: the same interface and guarantees as [`DirStore`](super::DirStore)
//! within one process, nothing on disk. For tests of everything above the store, and for
//! library users who want a throwaway reconciler.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    AuditEvent, AuditFilter, Holder, LockGuard, Observation, PromotionRecord, RolloutRecord, Store,
    StoreError,
};

#[derive(Debug, Default)]
struct State {
    holder: Option<Holder>,
    epoch: u64,
    audit: Vec<AuditEvent>,
    observations: BTreeMap<String, Observation>,
    rollouts: BTreeMap<String, RolloutRecord>,
    promotions: Vec<PromotionRecord>,
    pauses: Vec<super::Pause>,
    approvals: std::collections::BTreeMap<String, super::Approval>,
}

/// A store held in memory; clones share it.
#[derive(Debug, Clone)]
pub struct MemStore {
    id: String,
    key: super::DigestKey,
    state: Arc<Mutex<State>>,
    cache: Arc<tempfile::TempDir>,
}

impl MemStore {
    /// A new, empty store with a fresh id. Its artifact cache is a temporary directory,
    /// removed with the last clone.
    pub fn new() -> Result<MemStore, StoreError> {
        let cache = tempfile::tempdir().map_err(|source| StoreError::CreateDir {
            dir: std::env::temp_dir(),
            source,
        })?;
        Ok(MemStore {
            key: super::DigestKey::random(),
            id: format!("mem-{:016x}", rand::random::<u64>()),
            state: Arc::default(),
            cache: Arc::new(cache),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct MemLock {
    holder: Holder,
    state: Arc<Mutex<State>>,
}

impl LockGuard for MemLock {
    fn holder(&self) -> &Holder {
        &self.holder
    }
    fn taken_over(&self) -> Option<&Holder> {
        None
    }
}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.holder = None;
    }
}

impl Store for MemStore {
    fn id(&self) -> &str {
        &self.id
    }

    fn lock(&self, holder: &Holder) -> Result<Box<dyn LockGuard>, StoreError> {
        let mut s = self.state();
        if let Some(h) = &s.holder {
            return Err(StoreError::Locked {
                path: PathBuf::from("memory"),
                holder: Some(Box::new(h.clone())),
            });
        }
        s.holder = Some(holder.clone());
        Ok(Box::new(MemLock {
            holder: holder.clone(),
            state: self.state.clone(),
        }))
    }

    fn next_epoch(&self) -> Result<u64, StoreError> {
        let mut s = self.state();
        s.epoch += 1;
        Ok(s.epoch)
    }

    fn append_audit_all(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.state().audit.extend_from_slice(events);
        Ok(())
    }

    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let s = self.state();
        let mut out: Vec<AuditEvent> = s.audit.iter().filter(|e| e.matches(filter)).cloned().collect();
        if let Some(n) = filter.limit {
            out.drain(..out.len().saturating_sub(n));
        }
        Ok(out)
    }

    fn save_observation(&self, host: &str, fingerprint: &str, at: jiff::Timestamp) -> Result<(), StoreError> {
        super::check_file_name("host", host)?;
        self.state().observations.insert(
            host.to_owned(),
            Observation {
                host: host.to_owned(),
                fingerprint: fingerprint.to_owned(),
                at,
            },
        );
        Ok(())
    }

    fn observation(&self, host: &str) -> Result<Option<Observation>, StoreError> {
        Ok(self.state().observations.get(host).cloned())
    }

    fn known_hosts(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.state().observations.keys().cloned().collect())
    }

    fn save_rollout(&self, env: &str, record: &RolloutRecord) -> Result<(), StoreError> {
        super::check_file_name("environment", env)?;
        self.state().rollouts.insert(env.to_owned(), record.clone());
        Ok(())
    }

    fn rollout(&self, env: &str) -> Result<Option<RolloutRecord>, StoreError> {
        Ok(self.state().rollouts.get(env).cloned())
    }

    fn rollout_host_changed(&self, env: &str, host: &super::ChangedHost) -> Result<(), StoreError> {
        if let Some(r) = self.state().rollouts.get_mut(env) {
            super::merge_changed(r, [host.clone()]);
        }
        Ok(())
    }

    fn artifact_cache_dir(&self) -> PathBuf {
        self.cache.path().to_path_buf()
    }

    fn record_promotion(&self, record: &PromotionRecord) -> Result<(), StoreError> {
        self.state().promotions.push(record.clone());
        Ok(())
    }

    fn promotions(&self) -> Result<Vec<PromotionRecord>, StoreError> {
        Ok(self.state().promotions.clone())
    }

    fn digest_key(&self) -> Result<super::DigestKey, StoreError> {
        Ok(self.key.clone())
    }

    fn pauses(&self) -> Result<Vec<super::Pause>, StoreError> {
        Ok(self.state().pauses.clone())
    }

    fn pause(&self, pause: &super::Pause) -> Result<(), StoreError> {
        let mut state = self.state();
        super::set_pause(&mut state.pauses, pause.clone());
        Ok(())
    }

    fn resume(&self, environment: Option<&str>) -> Result<Option<super::Pause>, StoreError> {
        Ok(super::take_pause(&mut self.state().pauses, environment))
    }

    fn approvals(&self) -> Result<std::collections::BTreeMap<String, super::Approval>, StoreError> {
        Ok(self.state().approvals.clone())
    }

    fn approve(&self, env: &str, approval: &super::Approval) -> Result<(), StoreError> {
        self.state().approvals.insert(env.to_owned(), approval.clone());
        Ok(())
    }
}
