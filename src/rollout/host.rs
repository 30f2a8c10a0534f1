//! One host's part of a run: its transaction started, its session given back, its result
//! read; and a busy host's usage read again (DESIGN §6.4).

use super::policy::{self, Hold};
use super::spec::{Emit, HostJob, RunSpec, Summary};
use super::{Event, FailureKind, HostOutcome, HostResult};
use crate::transaction::{self, Outcome, Report};
use crate::transport::{Pool, Target};

/// A busy host that stays busy: it waits (DESIGN §6.4), and the run exits 3 for it.
pub(super) fn deferred_results(summary: &mut Summary, job: &HostJob, why: String) {
    let hold = Hold::Busy { why };
    summary
        .results
        .push(result(job, None, HostOutcome::Waiting { hold }));
}

/// Reads a busy host's usage again, when the rest of its wave is done: why it is still busy,
/// or `None` when it may start now.
pub(super) async fn recheck_busy(
    spec: &RunSpec<'_>,
    job: &HostJob,
    limits: &crate::manifest::model::HostLimits,
) -> Option<String> {
    let target = Target::for_host(&job.desired, spec.fleet_dir);
    let before = job.busy.clone().unwrap_or_default();
    let mut session = match spec.pool.take(&target).await {
        Ok(s) => s,
        Err(e) => return Some(format!("{before} (its usage could not be read again: {e})")),
    };
    let now = crate::observe::usage(session.as_mut(), &job.desired).await;
    spec.pool.put(&target.host, session).await;
    match now {
        Ok((usage, disk)) => policy::busy(limits, usage, disk),
        Err(e) => Some(format!("{before} (its usage could not be read again: {e})")),
    }
}

pub(super) fn result(job: &HostJob, txn: Option<String>, outcome: HostOutcome) -> HostResult {
    HostResult {
        host: job.desired.name.to_string(),
        environment: job.desired.environment.to_string(),
        changes: job.changes.clone(),
        txn,
        outcome,
    }
}

pub(super) fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "the host's task was cancelled".into();
    }
    let payload = e.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error (a bug in Flotilla, please report it): the host's task panicked: {text}")
}

pub(super) type HostRun = Result<Report, (FailureKind, String)>;

/// One host's transaction on its pooled session.
pub(super) fn run_host(
    spec: &RunSpec<'_>,
    job: &HostJob,
    txn: transaction::Transaction,
    emit: Emit<'_>,
) -> impl std::future::Future<Output = HostRun> + Send + 'static {
    let target = Target::for_host(&job.desired, spec.fleet_dir);
    let desired = job.desired.clone();
    let pool = spec.pool.clone();
    let events = emit.clone();
    let progress_host = desired.name.to_string();
    async move {
        let progress = move |p: transaction::Progress<'_>| {
            let host = progress_host.clone();
            events.send(match p {
                transaction::Progress::Controller(step) => Event::HostStep {
                    host,
                    step: step.to_owned(),
                },
                transaction::Progress::OnHost(step) => Event::HostRunning {
                    host,
                    step: step.to_owned(),
                },
            });
        };
        let mut session = pool
            .take(&target)
            .await
            .map_err(|e| (FailureKind::Connection, e.to_string()))?;
        let r = transaction::run(session.as_mut(), &desired, &target.root, &txn, &progress).await;
        give_back(&pool, &target.host, session, r).await
    }
}

/// Returns a session to the pool after a host command, or closes it when the command failed
/// (a session that failed mid-use is not reused); the command's result as a [`HostRun`].
pub(super) async fn give_back(
    pool: &Pool,
    host: &str,
    session: Box<dyn crate::transport::Session>,
    r: Result<Report, transaction::TxnError>,
) -> HostRun {
    match r {
        Ok(rep) => {
            pool.put(host, session).await;
            Ok(rep)
        }
        Err(e) => {
            let _ = session.close().await;
            Err((FailureKind::Connection, e.to_string()))
        }
    }
}

pub(super) fn host_outcome(r: HostRun) -> HostOutcome {
    let rep = match r {
        Ok(rep) => rep,
        Err((kind, error)) => return HostOutcome::Failed { kind, error },
    };
    let kind = match &rep.outcome {
        Outcome::Applied => return HostOutcome::Applied { warning: None },
        Outcome::AppliedWithErrors(w) => {
            return HostOutcome::Applied {
                warning: Some(w.clone()),
            };
        }
        Outcome::RolledBack(_) => FailureKind::RolledBack,
        Outcome::Broken(_) => FailureKind::Broken,
        Outcome::Stale(_) => FailureKind::Stale,
        Outcome::Locked(_) => FailureKind::Locked,
        Outcome::Unhealthy(_) => FailureKind::Unhealthy,
    };
    HostOutcome::Failed {
        kind,
        error: transaction::describe_failure(&rep),
    }
}
