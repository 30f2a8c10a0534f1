//! Hosts an interrupted transaction left `pending`, restored from their journals before the
//! rollout (DESIGN §6.1).

use std::collections::BTreeMap;

use super::prepare::{Planned, build_plan};
use super::run::changes_of;
use super::{EngineError, Report, Request};
use crate::observe::observe_all;
use crate::plan::Change;
use crate::plan::room::ArtifactSizes;
use crate::resolve::DesiredHost;
use crate::rollout::{Event, FailureKind, HostOutcome, HostResult};
use crate::store::Store;
use crate::transaction;
use crate::transport::Target;

/// Restores hosts a killed transaction left `pending` (DESIGN §6.1), only hosts this store may
/// change; the restore is fenced on the host like every rollback. Returns the indexes (into
/// `planned.targets`) of the hosts restored.
pub(super) async fn recover_interrupted(
    req: &Request<'_>,
    planned: &Planned<'_>,
    emit: &impl Fn(Event),
    failed: &mut Vec<HostResult>,
) -> Vec<usize> {
    let mut restored = Vec::new();
    for (i, (d, o)) in planned.targets.iter().zip(&planned.observations).enumerate() {
        // Never a host this store may not change, nor one a saved plan found changed.
        if planned.refused.contains_key(d.name.as_str()) || planned.stale.contains_key(d.name.as_str()) {
            continue;
        }
        if req.cancel.draining() {
            break;
        }
        let Some(txn) = o
            .as_ref()
            .ok()
            .and_then(|o| o.state.as_ref())
            .and_then(transaction::pending_txn)
        else {
            continue;
        };
        let host = d.name.to_string();
        emit(Event::HostStep {
            host: host.clone(),
            step: format!("restoring the state from before interrupted transaction {txn}"),
        });
        let target = Target::for_host(d, req.repo.fleet_dir());
        let result = async {
            let mut session = req.pool.take(&target).await.map_err(|e| e.to_string())?;
            let r = transaction::recover(session.as_mut(), d, &txn).await;
            req.pool.put(&target.host, session).await;
            r.map_err(|e| e.to_string())
        }
        .await;
        let error = match result {
            Ok(r) if !r.outcome.failed() => {
                restored.push(i);
                emit(Event::HostRecovered {
                    host,
                    env: d.environment.to_string(),
                    txn,
                });
                continue;
            }
            Ok(r) => format!(
                "restoring interrupted transaction {txn} failed: {}",
                transaction::describe_failure(&r)
            ),
            Err(e) => format!("restoring interrupted transaction {txn} failed: {e}"),
        };
        emit(Event::HostFailed {
            host: host.clone(),
            env: d.environment.to_string(),
            kind: FailureKind::Broken,
            error: error.clone(),
        });
        failed.push(HostResult {
            host,
            environment: d.environment.to_string(),
            changes: Vec::new(),
            txn: Some(txn),
            outcome: HostOutcome::Failed {
                kind: FailureKind::Broken,
                error,
            },
        });
    }
    restored
}

/// Observes the hosts [`recover_interrupted`] restored (`restored`: indexes into
/// `planned.targets`) and plans the whole fleet again with what they now hold. Under a saved
/// plan those hosts become stale: their changes after the restore are new ones, which nobody
/// approved.
pub(super) async fn replan_restored(
    req: &Request<'_>,
    store: &dyn Store,
    planned: &mut Planned<'_>,
    restored: &[usize],
    sizes: &ArtifactSizes,
    report: &mut Report,
    changes: &std::sync::Mutex<BTreeMap<String, Vec<Change>>>,
) -> Result<(), EngineError> {
    let subset: Vec<&DesiredHost> = restored.iter().map(|&i| planned.targets[i]).collect();
    let again = observe_all(
        &subset,
        req.repo.fleet_dir(),
        &req.pool,
        req.parallel,
        Some(store.id()),
        &super::prepare::room_rule(&req.fleet.fleet),
        req.memo.as_ref(),
    )
    .await;
    for (&i, o) in restored.iter().zip(again) {
        planned.observations[i] = o;
    }
    let promotions = store.promotions()?;
    let fresh = build_plan(
        req,
        (&planned.targets, &planned.observations),
        &planned.refused,
        &planned.rollouts,
        &promotions,
        req.clock.now(),
        sizes,
    );
    planned.plan.hosts = fresh.hosts;
    planned.plan.environments = fresh.environments;
    planned.plan.summary = fresh.summary;
    report.unreachable = planned.plan.summary.hosts_unreachable;
    *changes.lock().unwrap_or_else(|e| e.into_inner()) = changes_of(&planned.plan);
    // A saved plan was approved for the host as it was: after the restore, its changes are
    // new ones, which nobody approved.
    if planned.saved.is_some() {
        for &i in restored {
            planned.stale.insert(
                planned.targets[i].name.to_string(),
                "an interrupted transaction was restored; plan again".into(),
            );
        }
    }
    Ok(())
}
