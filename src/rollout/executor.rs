//! The executor: runs the plan's hosts as transactions, in environment and wave order, and
//! emits events. Failures on one host are data; only a broken host (its rollback failed)
//! stops everything.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, watch};

use super::Event;
use crate::manifest::model::Fleet;
use crate::manifest::raw::CountOrPercent;
use crate::observe::Observation;
use crate::plan::Change;
use crate::resolve::DesiredHost;
use crate::transaction::{self, Context, Outcome, Report, Upload};
use crate::transport::{self, Target};

/// Set to true (Ctrl-C, SIGTERM): no new host starts; in-flight hosts finish.
pub type Cancel = watch::Receiver<bool>;

/// One host to change.
pub struct HostJob {
    pub desired: DesiredHost,
    pub observed: Observation,
    pub changes: Vec<Change>,
    pub wave: usize,
    /// Why the host may not be touched (an artifact it needs failed its checks).
    pub blocked: Option<String>,
}

pub struct RunSpec<'a> {
    pub fleet: &'a Fleet,
    pub fleet_dir: &'a Path,
    pub revision: Option<&'a str>,
    pub store_id: &'a str,
    pub epoch: u64,
    pub now: jiff::Timestamp,
    pub artifacts: &'a BTreeMap<(String, String), Upload>,
    /// Environments in the order they go, each with its changing hosts.
    pub environments: Vec<(String, Vec<HostJob>)>,
    /// Environments whose changes wait, and why (window, freeze).
    pub waiting: BTreeMap<String, String>,
    /// Hosts changed at once across the fleet.
    pub parallel: usize,
    pub cancel: Cancel,
    /// Sessions opened while observing, reused for the transactions.
    pub pool: Arc<transport::Pool>,
}

/// What happened to one host.
#[derive(Debug, Clone)]
pub struct HostResult {
    pub host: String,
    pub environment: String,
    pub changes: Vec<Change>,
    /// `Err` when the transaction could not run at all (connection, upload).
    pub report: Result<Report, String>,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub results: Vec<HostResult>,
    /// Hosts not started, and why.
    pub skipped: Vec<(String, String)>,
    /// Environments whose changes wait, and why.
    pub waiting: Vec<(String, String)>,
    pub halted: Vec<(String, String)>,
    pub interrupted: bool,
}

impl Summary {
    pub fn applied(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.report.as_ref().is_ok_and(|r| !r.outcome.failed()))
            .count()
    }
    pub fn failed(&self) -> usize {
        self.results.len() - self.applied()
    }
    pub fn rolled_back(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.report.as_ref().map(|r| &r.outcome), Ok(Outcome::RolledBack(_))))
            .count()
    }
    pub fn broken(&self) -> bool {
        self.results
            .iter()
            .any(|r| matches!(r.report.as_ref().map(|r| &r.outcome), Ok(Outcome::Broken(_))))
    }
}

fn budget(max: CountOrPercent, hosts: usize) -> usize {
    match max {
        CountOrPercent::Count(n) => n as usize,
        CountOrPercent::Percent(p) => hosts * usize::from(p) / 100,
    }
}

pub async fn execute(spec: RunSpec<'_>, events: mpsc::UnboundedSender<Event>) -> Summary {
    let emit = |e: Event| {
        let _ = events.send(e);
    };
    let mut summary = Summary::default();
    let fleet_permits = Arc::new(Semaphore::new(spec.parallel.max(1)));
    let cx = Context {
        fleet: spec.fleet,
        revision: spec.revision,
        store_id: spec.store_id,
        epoch: spec.epoch,
        now: spec.now,
        artifacts: spec.artifacts,
    };
    let mut stop_all: Option<String> = None;
    for (env_name, jobs) in spec.environments {
        if let Some(why) = spec.waiting.get(&env_name) {
            emit(Event::EnvironmentWaiting {
                env: env_name.clone(),
                why: why.clone(),
            });
            summary.waiting.push((env_name.clone(), why.clone()));
            continue;
        }
        let Some(env) = spec.fleet.environments.get(env_name.as_str()) else {
            continue;
        };
        let total = jobs.len();
        let allowed = budget(env.rollout.max_failures, total);
        let mut waves: BTreeMap<usize, Vec<HostJob>> = BTreeMap::new();
        for j in jobs {
            waves.entry(j.wave).or_default().push(j);
        }
        emit(Event::EnvironmentStarted {
            env: env_name.clone(),
            waves: waves.len(),
            hosts: total,
        });
        let mut failures = 0usize;
        let mut halted: Option<String> = None;
        for (wave, jobs) in waves {
            if halted.is_some() || stop_all.is_some() || *spec.cancel.borrow() {
                let why = halted
                    .clone()
                    .or(stop_all.clone())
                    .unwrap_or_else(|| "interrupted".into());
                for j in jobs {
                    summary.skipped.push((j.desired.name.to_string(), why.clone()));
                    emit(Event::HostSkipped {
                        host: j.desired.name.to_string(),
                        why: why.clone(),
                    });
                }
                continue;
            }
            emit(Event::WaveStarted {
                env: env_name.clone(),
                wave,
                hosts: jobs.iter().map(|j| j.desired.name.to_string()).collect(),
            });
            let wave_permits = Arc::new(Semaphore::new(env.rollout.max_parallel.max(1) as usize));
            let mut set = tokio::task::JoinSet::new();
            for job in jobs {
                let host = job.desired.name.to_string();
                if let Some(why) = &job.blocked {
                    summary.skipped.push((host.clone(), why.clone()));
                    emit(Event::HostSkipped {
                        host,
                        why: why.clone(),
                    });
                    failures += 1;
                    continue;
                }
                let txn = transaction::build(&job.desired, &job.observed, &job.changes, &cx);
                let target = Target::for_host(&job.desired, spec.fleet_dir);
                let (wave_permits, fleet_permits) = (wave_permits.clone(), fleet_permits.clone());
                let pool = spec.pool.clone();
                let events = events.clone();
                let cancel = spec.cancel.clone();
                set.spawn(async move {
                    let _w = wave_permits.acquire_owned().await;
                    let _f = fleet_permits.acquire_owned().await;
                    if *cancel.borrow() {
                        return (job, None);
                    }
                    let progress = {
                        let events = events.clone();
                        let host = host.clone();
                        move |step: &str| {
                            let _ = events.send(Event::HostStep {
                                host: host.clone(),
                                step: step.to_owned(),
                            });
                        }
                    };
                    let report = async {
                        let mut session = pool.take(&target).await.map_err(|e| e.to_string())?;
                        let r =
                            transaction::run(session.as_mut(), &job.desired, &target.root, &txn, &progress)
                                .await;
                        // A session that failed mid-transaction is closed, not reused.
                        match &r {
                            Ok(_) => pool.put(&target.host, session).await,
                            Err(_) => {
                                let _ = session.close().await;
                            }
                        }
                        r.map_err(|e| e.to_string())
                    }
                    .await;
                    (job, Some(report))
                });
            }
            while let Some(joined) = set.join_next().await {
                let Ok((job, report)) = joined else { continue };
                let host = job.desired.name.to_string();
                let Some(report) = report else {
                    summary
                        .skipped
                        .push((host.clone(), "interrupted before it started".into()));
                    emit(Event::HostSkipped {
                        host,
                        why: "interrupted before it started".into(),
                    });
                    continue;
                };
                match &report {
                    Ok(r) => match &r.outcome {
                        Outcome::Applied => emit(Event::HostApplied {
                            host: host.clone(),
                            changes: job.changes.len(),
                            warning: None,
                        }),
                        Outcome::AppliedWithErrors(w) => emit(Event::HostApplied {
                            host: host.clone(),
                            changes: job.changes.len(),
                            warning: Some(w.clone()),
                        }),
                        Outcome::RolledBack(_) => {
                            failures += 1;
                            emit(Event::RolledBack {
                                host: host.clone(),
                                why: transaction::describe_failure(r),
                            });
                        }
                        Outcome::Broken(_) => {
                            failures += 1;
                            stop_all = Some(format!("host {host} is broken (its rollback failed)"));
                            emit(Event::HostFailed {
                                host: host.clone(),
                                error: transaction::describe_failure(r),
                            });
                        }
                        Outcome::Stale(_) | Outcome::Locked(_) => {
                            failures += 1;
                            emit(Event::HostFailed {
                                host: host.clone(),
                                error: transaction::describe_failure(r),
                            });
                        }
                    },
                    Err(e) => {
                        failures += 1;
                        emit(Event::HostFailed {
                            host: host.clone(),
                            error: e.clone(),
                        });
                    }
                }
                summary.results.push(HostResult {
                    host,
                    environment: env_name.clone(),
                    changes: job.changes,
                    report,
                });
            }
            if failures > allowed && halted.is_none() {
                let why = format!("{failures} failed host(s), more than max_failures allows ({allowed})");
                emit(Event::Halted {
                    env: env_name.clone(),
                    why: why.clone(),
                });
                summary.halted.push((env_name.clone(), why.clone()));
                halted = Some(format!("the rollout in {env_name} halted"));
            }
        }
    }
    summary.interrupted = *spec.cancel.borrow();
    summary
}
