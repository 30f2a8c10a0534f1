//! Hosts an interrupted transaction left `pending`, restored from their journals before the
//! rollout (DESIGN §6.1).

use super::Request;
use super::prepare::Planned;
use crate::rollout::{Event, FailureKind, HostOutcome, HostResult};
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
