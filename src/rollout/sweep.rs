//! Operations over the hosts a rollout changed, after its waves: health re-checks after a
//! bake, the environment-wide rollback of a halted rollout, and the prune once it completed.
//! Each runs on the hosts' pooled sessions, at most `max_parallel` at once, and is fenced on
//! the host like a transaction.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::host::{HostRun, give_back, host_outcome, panic_message};
use super::policy::Budget;
use super::spec::{Emit, RunSpec, Summary, Touched};
use super::{Event, FailureKind, HostOutcome, HostResult};
use crate::cancel::Stop;
use crate::resolve::DesiredHost;
use crate::transaction::{self, Report};
use crate::transport::{Session, Target};

/// Runs `f` on each host's pooled session, at most `limit` at once; results in input order.
async fn on_hosts<F, Fut>(spec: &RunSpec<'_>, hosts: &[&Touched], limit: usize, f: F) -> Vec<HostRun>
where
    F: Fn(Box<dyn Session>, DesiredHost, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (Box<dyn Session>, Result<Report, transaction::TxnError>)> + Send,
{
    let permits = Arc::new(Semaphore::new(limit.min(spec.parallel).max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut ids = HashMap::new();
    for (i, t) in hosts.iter().enumerate() {
        let (pool, permits, f) = (spec.pool.clone(), permits.clone(), f.clone());
        let target = Target::for_host(&t.desired, spec.fleet_dir);
        let (desired, txn) = (t.desired.clone(), t.txn.clone());
        let handle = set.spawn(async move {
            let _p = permits.acquire_owned().await;
            let session = pool
                .take(&target)
                .await
                .map_err(|e| (FailureKind::Connection, e.to_string()))?;
            let (session, r) = f(session, desired, txn).await;
            give_back(&pool, &target.host, session, r).await
        });
        ids.insert(handle.id(), i);
    }
    // Whatever has not reported when a second stop request comes was aborted, not failed.
    let mut out: Vec<HostRun> = hosts
        .iter()
        .map(|_| Err((FailureKind::Aborted, "aborted before it reported".to_owned())))
        .collect();
    loop {
        let joined = tokio::select! {
            biased;
            _ = spec.cancel.reached(Stop::Abort) => { set.abort_all(); break }
            j = set.join_next_with_id() => j,
        };
        match joined {
            None => break,
            Some(Ok((id, r))) => out[ids[&id]] = r,
            Some(Err(e)) => {
                let i = ids[&e.id()];
                out[i] = Err((FailureKind::Panicked, panic_message(e)));
            }
        }
    }
    out
}

/// After a bake: the health checks of every host changed so far, again. Returns why the
/// rollout halts, if a failure takes it past its budget.
pub(super) async fn recheck(
    spec: &RunSpec<'_>,
    env: &str,
    limit: usize,
    touched: &[Touched],
    budget: &mut Budget,
    summary: &mut Summary,
    emit: Emit<'_>,
) -> Option<String> {
    let hosts: Vec<&Touched> = touched.iter().collect();
    let detail = spec.txn.detail;
    let checks = on_hosts(spec, &hosts, limit, move |mut s, d, txn| async move {
        let r = transaction::recheck(s.as_mut(), &d, &txn, detail).await;
        (s, r)
    })
    .await;
    let mut halt = None;
    for (t, mut r) in touched.iter().zip(checks) {
        // -v: each check's output, whatever its result.
        if let Ok(rep) = &mut r {
            for o in std::mem::take(&mut rep.outputs) {
                emit.send(Event::HostOutput {
                    host: t.desired.name.to_string(),
                    env: env.to_owned(),
                    label: o.label,
                    lines: o.lines,
                });
            }
        }
        let HostOutcome::Failed { kind, error } = host_outcome(r) else {
            continue;
        };
        if kind == FailureKind::Aborted {
            // Nothing failed on the host: the run was stopped before it answered.
            continue;
        }
        let kind = if kind == FailureKind::Stale {
            FailureKind::Stale
        } else {
            FailureKind::Unhealthy
        };
        let host = t.desired.name.to_string();
        emit.send(Event::HostFailed {
            host: host.clone(),
            env: env.to_owned(),
            kind,
            error: error.clone(),
        });
        set_outcome(summary, env, t, HostOutcome::Failed { kind, error });
        if let Some(why) = budget.fail() {
            halt.get_or_insert(why);
        }
    }
    halt
}

/// Rolls back every host a halted rollout changed, last wave first, at most `limit` at once
/// (rollbacks ignore windows and freezes). Each rollback is fenced on the host: one whose
/// `state.json` a later transaction wrote is left alone and reported.
pub(super) async fn roll_back(
    spec: &RunSpec<'_>,
    env: &str,
    limit: usize,
    mut touched: Vec<Touched>,
    broken: &mut Option<String>,
    summary: &mut Summary,
    emit: Emit<'_>,
) {
    touched.sort_by_key(|t| std::cmp::Reverse(t.wave));
    let mut waves: Vec<usize> = touched.iter().map(|t| t.wave).collect();
    waves.dedup();
    for wave in waves {
        let hosts: Vec<&Touched> = touched.iter().filter(|t| t.wave == wave).collect();
        let results = on_hosts(spec, &hosts, limit, |mut s, d, txn| async move {
            let r = transaction::recover(s.as_mut(), &d, &txn).await;
            (s, r)
        })
        .await;
        for (t, r) in hosts.iter().zip(results) {
            let host = t.desired.name.to_string();
            let outcome = match host_outcome(r) {
                HostOutcome::Applied { .. } => {
                    let why = "its rollout halted (on_failure = \"rollback\")".to_owned();
                    emit.send(Event::RolledBack {
                        host: host.clone(),
                        env: env.to_owned(),
                        why: why.clone(),
                    });
                    HostOutcome::Reverted { why }
                }
                HostOutcome::Failed { kind, error } => {
                    let kind = if matches!(kind, FailureKind::Stale | FailureKind::Aborted) {
                        kind
                    } else {
                        broken.get_or_insert(format!("host {host} is broken (its rollback failed)"));
                        FailureKind::Broken
                    };
                    let error = format!("rollback failed: {error}");
                    emit.send(Event::HostFailed {
                        host: host.clone(),
                        env: env.to_owned(),
                        kind,
                        error: error.clone(),
                    });
                    HostOutcome::Failed { kind, error }
                }
                other => other,
            };
            set_outcome(summary, env, t, outcome);
        }
    }
}

/// After a rollout completed: versions kept only so the rollout could roll back
/// (`keep_versions = 1`) are pruned now.
pub(super) async fn finish(spec: &RunSpec<'_>, env: &str, touched: &[Touched], emit: Emit<'_>) {
    let hosts: Vec<&Touched> = touched
        .iter()
        .filter(|t| t.desired.settings.keep_versions.value < 2)
        .collect();
    if hosts.is_empty() {
        return;
    }
    let results = on_hosts(spec, &hosts, spec.parallel, |mut s, d, txn| async move {
        let r = transaction::finish(s.as_mut(), &d, &txn).await;
        (s, r)
    })
    .await;
    for (t, r) in hosts.iter().zip(results) {
        if let HostOutcome::Failed { error, .. } = host_outcome(r) {
            emit.send(Event::HostStep {
                host: t.desired.name.to_string(),
                step: format!("warning: in {env}, pruning old versions failed: {error}"),
            });
        }
    }
}

/// Records what a sweep found for a host: it replaces the host's latest result of this run, or
/// is added for a host an earlier run changed.
fn set_outcome(summary: &mut Summary, env: &str, t: &Touched, outcome: HostOutcome) {
    let host = t.desired.name.as_str();
    match summary.results.iter_mut().rev().find(|r| r.host == host) {
        Some(r) => r.outcome = outcome,
        None => summary.results.push(HostResult {
            host: host.to_owned(),
            environment: env.to_owned(),
            changes: Vec::new(),
            txn: Some(t.txn.clone()),
            outcome,
        }),
    }
}
