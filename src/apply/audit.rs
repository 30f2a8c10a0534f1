//! The audit log as it happens (DESIGN §7): every host event reaches the store when it
//! happens, not at the end of the run, so a controller killed mid-apply loses no event of a
//! host it changed. Events that arrive together are written with one flush.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use crate::plan::Change;
use crate::rollout::{Event, FailureKind};
use crate::store::{AuditEvent, Store};

/// Who, at which revision: what every audit line of a run carries.
pub(super) struct AuditLog<'a> {
    pub store: &'a dyn Store,
    pub actor: String,
    pub revision: Option<String>,
    pub dirty: bool,
    pub clock: crate::clock::Clock,
}

impl AuditLog<'_> {
    /// An event of this run, stamped now.
    pub fn event(&self, name: &str) -> AuditEvent {
        let mut e = AuditEvent::new(self.clock.now(), &self.actor, name);
        e.revision = self.revision.clone();
        e.dirty = self.dirty;
        e
    }

    /// The audit line for a rollout event, if it is one that is audited.
    fn line(&self, e: &Event, changes: &BTreeMap<String, Vec<Change>>) -> Option<AuditEvent> {
        let (name, host, env, error) = match e {
            Event::HostApplied {
                host, env, warning, ..
            } => ("host-applied", host, env, warning.clone()),
            Event::HostFailed {
                host,
                env,
                kind,
                error,
                ..
            } => {
                let name = match kind {
                    FailureKind::RolledBack => "rolled-back",
                    FailureKind::Broken => "host-broken",
                    FailureKind::Unhealthy => "host-unhealthy",
                    FailureKind::Stale | FailureKind::Locked => "host-skipped",
                    _ => "host-failed",
                };
                (name, host, env, Some(error.clone()))
            }
            Event::RolledBack { host, env, why } => ("rolled-back", host, env, Some(why.clone())),
            Event::HostRecovered { host, env, txn } => (
                "host-recovered",
                host,
                env,
                Some(format!("restored from before transaction {txn}")),
            ),
            Event::HostSkipped { host, env, why, .. } => ("host-skipped", host, env, Some(why.clone())),
            Event::Halted { env, why, .. } => {
                let mut a = self.event("rollout-halted");
                a.environment = Some(env.clone());
                a.error = Some(why.clone());
                return Some(a);
            }
            _ => return None,
        };
        let mut a = self.event(name);
        a.host = Some(host.clone());
        a.environment = Some(env.clone());
        a.error = error;
        a.changes = changes
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        Some(a)
    }

    /// Passes every event on to `view` and appends the audited ones as they arrive, until the
    /// sending side closes. Returns the write errors (the run goes on; they are reported).
    pub async fn tee(
        &self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        view: Option<mpsc::UnboundedSender<Event>>,
        changes: &std::sync::Mutex<BTreeMap<String, Vec<Change>>>,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(e) = rx.try_recv() {
                batch.push(e);
            }
            let lines: Vec<AuditEvent> = {
                let changes = changes.lock().unwrap_or_else(|e| e.into_inner());
                batch.iter().filter_map(|e| self.line(e, &changes)).collect()
            };
            if !lines.is_empty()
                && let Err(e) = super::run::blocking(|| self.store.append_audit_all(&lines))
            {
                errors.push(format!("cannot write the audit log: {e}"));
            }
            if let Some(view) = &view {
                for e in batch {
                    let _ = view.send(e);
                }
            }
        }
        errors
    }
}
