//! `flotilla store copy`: moves a directory store into PostgreSQL with the same id (so hosts
//! that store applied to are not refused), its epoch, audit log, rollouts, promotion records,
//! pauses, approvals, observations and digest key. The target must hold no store, or an empty
//! one with the same id (an interrupted copy's), so nothing is ever mixed or duplicated.

use super::{PgStore, PgUrl};
use crate::store::{AuditFilter, DirStore, Holder, Store, StoreError};

/// What was copied, for the command's report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CopySummary {
    pub epoch: u64,
    pub audit_events: usize,
    pub rollouts: usize,
    pub promotions: usize,
    pub pauses: usize,
    pub approvals: usize,
    pub observations: usize,
}

impl PgStore {
    /// Copies `from` into the database at `to`, holding both stores' locks meanwhile (no apply
    /// or `watch` may change either during the copy).
    pub fn copy_from_dir(from: &DirStore, to: &PgUrl, holder: &Holder) -> Result<CopySummary, StoreError> {
        let _source_lock = from.lock(holder)?;
        let target = PgStore::open_with_id(to, from.id())?;
        if target.id() != from.id() {
            return Err(StoreError::CopyTarget {
                url: to.to_string(),
                problem: format!(
                    "it already holds another store (id {}, the source's is {})",
                    target.id(),
                    from.id()
                ),
            });
        }
        let _target_lock = target.lock(holder)?;
        let epoch: i64 = target.call("read the epoch", |c| {
            Box::pin(async move { Ok(c.query_one("SELECT epoch FROM flotilla_store", &[]).await?.get(0)) })
        })?;
        let has_audit = !target
            .audit(&AuditFilter {
                limit: Some(1),
                ..AuditFilter::default()
            })?
            .is_empty();
        if epoch != 0 || has_audit {
            return Err(StoreError::CopyTarget {
                url: to.to_string(),
                problem: "it already holds this store's state (it was copied before, or has been used since)"
                    .to_owned(),
            });
        }
        let mut summary = CopySummary::default();
        // The digest key first: published digests of sensitive files stay the same.
        let key = from.digest_key()?.to_hex();
        target.call("copy the digest key", move |c| {
            Box::pin(async move {
                c.execute("UPDATE flotilla_store SET digest_key = $1", &[&key])
                    .await
                    .map(drop)
            })
        })?;
        let events = from.audit(&AuditFilter::default())?;
        for chunk in events.chunks(1000) {
            target.append_audit_all(chunk)?;
        }
        summary.audit_events = events.len();
        for env in from.rollout_environments()? {
            if let Some(record) = from.rollout(&env)? {
                target.save_rollout(&env, &record)?;
                summary.rollouts += 1;
            }
        }
        for record in from.promotions()? {
            target.record_promotion(&record)?;
            summary.promotions += 1;
        }
        for pause in from.pauses()? {
            target.pause(&pause)?;
            summary.pauses += 1;
        }
        for (env, approval) in from.approvals()? {
            target.approve(&env, &approval)?;
            summary.approvals += 1;
        }
        for host in from.known_hosts()? {
            if let Some(o) = from.observation(&host)? {
                target.save_observation(&host, &o.fingerprint, o.at)?;
                summary.observations += 1;
            }
        }
        // The epoch last: hosts compare it, so it must never be lower than the source's.
        let last = from.last_epoch()?;
        let set = i64::try_from(last).unwrap_or(i64::MAX);
        target.call("copy the epoch", move |c| {
            Box::pin(async move {
                c.execute("UPDATE flotilla_store SET epoch = greatest(epoch, $1)", &[&set])
                    .await
                    .map(drop)
            })
        })?;
        summary.epoch = last;
        Ok(summary)
    }
}
