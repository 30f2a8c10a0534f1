//! The executor: runs the plan's hosts as transactions, in environment and wave order, and
//! emits events. Failures on one host are data; only a broken host (its rollback failed)
//! stops everything.
//!
//! Within an environment: each wave starts only while its window is open and no freeze
//! covers the moment (hosts in flight finish regardless); after each wave the executor waits
//! `bake` and re-runs the health checks of every host changed so far; past `max_failures` the
//! rollout halts, and with `on_failure = "rollback"` every host it changed is rolled back
//! from its transaction journal, last wave first (rollbacks ignore windows and freezes).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, watch};

use super::Event;
use crate::manifest::model::Fleet;
use crate::manifest::model::{CountOrPercent, OnFailure};
use crate::observe::Observation;
use crate::plan::Change;
use crate::resolve::DesiredHost;
use crate::schedule::window::{Freeze, Window, availability, describe};
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

/// When an environment may start a wave: its windows and freezes (empty when overridden).
#[derive(Debug, Clone, Default)]
pub struct Gate {
    pub windows: Vec<Window>,
    pub freezes: Vec<Freeze>,
}

/// What the executor needs from the records kept between runs (the store), without knowing
/// about the store: whether promotion lets a host start now, and word that an environment's
/// rollout finished, so its outcome is recorded and later environments can go in the same run.
pub trait Records: Sync {
    /// Why this host's changes wait for promotion, or `None`.
    fn promotion_waits(&self, env: &str, job: &HostJob) -> Option<String>;
    /// Called after each environment's rollout: what happened to its hosts, and why it
    /// halted if it did.
    fn finished(&self, env: &str, results: &[HostResult], halted: Option<&str>);
    /// Called when a wave's hosts are done: how many waves are done, and until when the
    /// bake after it runs, so a rollout interrupted during a bake waits out the rest on resume.
    fn wave_done(&self, env: &str, waves_done: usize, bake_deadline: Option<jiff::Timestamp>);
    /// A bake an earlier, interrupted run of this rollout did not finish.
    fn unfinished_bake(&self, env: &str) -> Option<jiff::Timestamp>;
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
    /// Per environment, the windows and freezes waves must respect.
    pub gates: BTreeMap<String, Gate>,
    /// Per environment, hosts that already failed before any wave (unreachable, stale,
    /// refused): they count against `max_failures` too (DESIGN §6.3).
    pub prior_failures: BTreeMap<String, usize>,
    /// Hosts changed at once across the fleet.
    pub parallel: usize,
    pub cancel: Cancel,
    /// Sessions opened while observing, reused for the transactions.
    pub pool: Arc<transport::Pool>,
    /// The clock, so tests and `--at`-style runs can move time; wall time otherwise.
    pub clock: fn() -> jiff::Timestamp,
    pub records: Option<&'a dyn Records>,
}

/// What happened to one host.
#[derive(Debug, Clone)]
pub struct HostResult {
    pub host: String,
    pub environment: String,
    pub changes: Vec<Change>,
    /// `Err` when the transaction could not run at all (connection, upload).
    pub report: Result<Report, String>,
    /// Applied, then rolled back with the rest of its halted rollout.
    pub reverted: bool,
}

impl HostResult {
    pub fn applied(&self) -> bool {
        !self.reverted && self.report.as_ref().is_ok_and(|r| !r.outcome.failed())
    }
}

#[derive(Debug, Default)]
pub struct Summary {
    pub results: Vec<HostResult>,
    /// Hosts not started, and why.
    pub skipped: Vec<(String, String)>,
    /// Environments whose changes (or remaining waves) wait, and why.
    pub waiting: Vec<(String, String)>,
    pub halted: Vec<(String, String)>,
    /// Hosts held back by promotion gates, and why.
    pub held: Vec<(String, String)>,
    pub interrupted: bool,
}

impl Summary {
    pub fn applied(&self) -> usize {
        self.results.iter().filter(|r| r.applied()).count()
    }
    pub fn failed(&self) -> usize {
        self.results.len() - self.applied()
    }
    pub fn rolled_back(&self) -> usize {
        self.results
            .iter()
            .filter(|r| {
                r.reverted || matches!(r.report.as_ref().map(|r| &r.outcome), Ok(Outcome::RolledBack(_)))
            })
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

/// A host changed by this rollout: enough to re-check or roll it back later.
struct Changed {
    wave: usize,
    index: usize,
    desired: DesiredHost,
    target: Target,
    txn: String,
}

/// Runs `f` on each host's pooled session, at most `limit` at once.
async fn on_hosts<F, Fut>(
    hosts: &[&Changed],
    pool: &Arc<transport::Pool>,
    limit: usize,
    f: F,
) -> Vec<Result<Report, String>>
where
    F: Fn(Box<dyn transport::Session>, DesiredHost, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (Box<dyn transport::Session>, Result<Report, String>)> + Send,
{
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in hosts.iter().enumerate() {
        let (pool, permits, f) = (pool.clone(), permits.clone(), f.clone());
        let (target, desired, txn) = (c.target.clone(), c.desired.clone(), c.txn.clone());
        set.spawn(async move {
            let _p = permits.acquire_owned().await;
            let session = match pool.take(&target).await {
                Ok(s) => s,
                Err(e) => return (i, Err(e.to_string())),
            };
            let (session, r) = f(session, desired, txn).await;
            pool.put(&target.host, session).await;
            (i, r)
        });
    }
    let mut out: Vec<Result<Report, String>> =
        hosts.iter().map(|_| Err("the task failed".to_owned())).collect();
    while let Some(Ok((i, r))) = set.join_next().await {
        out[i] = r;
    }
    out
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
    let mut cancel = spec.cancel.clone();
    for (env_name, jobs) in spec.environments {
        let Some(env) = spec.fleet.environments.get(env_name.as_str()) else {
            continue;
        };
        let gate = spec.gates.get(&env_name).cloned().unwrap_or_default();
        let prior = spec.prior_failures.get(&env_name).copied().unwrap_or(0);
        // The budget's base is every host taking part, the ones that already failed included.
        let total = jobs.len();
        let allowed = budget(env.rollout.max_failures, total + prior);
        let mut waves: BTreeMap<usize, Vec<HostJob>> = BTreeMap::new();
        let mut held: Option<String> = None;
        for j in jobs {
            // Promotion is decided when the environment starts: an earlier environment may
            // have converged a moment ago in this same run.
            if let Some(why) = spec.records.and_then(|p| p.promotion_waits(&env_name, &j)) {
                summary.held.push((j.desired.name.to_string(), why.clone()));
                held.get_or_insert(why);
                continue;
            }
            waves.entry(j.wave).or_default().push(j);
        }
        if let Some(why) = held {
            emit(Event::EnvironmentWaiting {
                env: env_name.clone(),
                why: why.clone(),
            });
            summary.waiting.push((env_name.clone(), why));
        }
        let first_result = summary.results.len();
        if let Some(deadline) = spec.records.and_then(|r| r.unfinished_bake(&env_name)) {
            let left = deadline.duration_since((spec.clock)());
            if left > jiff::SignedDuration::ZERO && !waves.is_empty() {
                emit(Event::HostStep {
                    host: env_name.clone(),
                    step: format!(
                        "finishing the bake of the interrupted rollout ({})",
                        crate::schedule::window::format_countdown(left)
                    ),
                });
                tokio::select! {
                    _ = tokio::time::sleep(left.unsigned_abs()) => {}
                    _ = cancel.wait_for(|c| *c) => {}
                }
            }
        }
        let wave_count = waves.len();
        let mut started = false;
        let mut failures = prior;
        let mut halted: Option<String> = None;
        if failures > allowed {
            let why = format!(
                "{failures} host(s) failed before the first wave (unreachable, stale or refused), more than max_failures allows ({allowed})"
            );
            emit(Event::Halted {
                env: env_name.clone(),
                why: why.clone(),
            });
            summary.halted.push((env_name.clone(), why));
            halted = Some(format!("the rollout in {env_name} halted"));
        }
        let mut waiting: Option<String> = None;
        let mut changed: Vec<Changed> = Vec::new();
        for (wave, jobs) in waves {
            // A wave starts only inside a window and outside freezes; in-flight hosts finish.
            if halted.is_none() && stop_all.is_none() && waiting.is_none() {
                let now = (spec.clock)();
                let a = availability(&gate.windows, &gate.freezes, now);
                if !a.open {
                    let why = describe(&gate.windows, &gate.freezes, &a, now);
                    emit(Event::EnvironmentWaiting {
                        env: env_name.clone(),
                        why: why.clone(),
                    });
                    summary.waiting.push((env_name.clone(), why.clone()));
                    waiting = Some(why);
                }
            }
            if waiting.is_some() {
                continue;
            }
            if halted.is_some() || stop_all.is_some() || *cancel.borrow() {
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
            if !started {
                emit(Event::EnvironmentStarted {
                    env: env_name.clone(),
                    waves: wave_count,
                    hosts: total,
                });
                started = true;
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
                        return (job, target, txn.id, None);
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
                    (job, target, txn.id, Some(report))
                });
            }
            while let Some(joined) = set.join_next().await {
                let Ok((job, target, txn_id, report)) = joined else {
                    continue;
                };
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
                let changes = job.changes.len();
                match &report {
                    Ok(r) => match &r.outcome {
                        Outcome::Applied | Outcome::AppliedWithErrors(_) => {
                            let warning = match &r.outcome {
                                Outcome::AppliedWithErrors(w) => Some(w.clone()),
                                _ => None,
                            };
                            emit(Event::HostApplied {
                                host: host.clone(),
                                changes,
                                warning,
                            });
                            changed.push(Changed {
                                wave,
                                index: summary.results.len(),
                                desired: job.desired.clone(),
                                target,
                                txn: txn_id,
                            });
                        }
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
                        Outcome::Stale(_) | Outcome::Locked(_) | Outcome::Unhealthy(_) => {
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
                    reverted: false,
                });
            }

            let baking = !env.rollout.bake.is_zero() && failures <= allowed && !changed.is_empty();
            if let Some(r) = spec.records {
                let deadline =
                    baking.then(|| crate::duration::saturating_add((spec.clock)(), env.rollout.bake));
                r.wave_done(&env_name, wave, deadline);
            }
            // Bake, then re-check the health of every host changed so far.
            if baking {
                emit(Event::HostStep {
                    host: format!("{env_name} (wave {wave})"),
                    step: format!(
                        "baking for {}",
                        crate::duration::format_duration(env.rollout.bake)
                    ),
                });
                let baked = tokio::select! {
                    _ = tokio::time::sleep(env.rollout.bake) => true,
                    _ = cancel.wait_for(|c| *c) => false,
                };
                if baked {
                    let hosts: Vec<&Changed> = changed.iter().collect();
                    let checks = on_hosts(
                        &hosts,
                        &spec.pool,
                        env.rollout.max_parallel as usize,
                        |mut s, d, txn| async move {
                            let r = transaction::recheck(s.as_mut(), &d, &txn)
                                .await
                                .map_err(|e| e.to_string());
                            (s, r)
                        },
                    )
                    .await;
                    for (c, r) in changed.iter().zip(checks) {
                        let bad = match &r {
                            Ok(rep) if !rep.outcome.failed() => None,
                            Ok(rep) => Some(transaction::describe_failure(rep)),
                            Err(e) => Some(e.clone()),
                        };
                        if let Some(why) = bad {
                            failures += 1;
                            emit(Event::HostFailed {
                                host: c.desired.name.to_string(),
                                error: why,
                            });
                        }
                    }
                }
            }

            if failures > allowed && halted.is_none() {
                let why = format!("{failures} failed host(s), more than max_failures allows ({allowed})");
                emit(Event::Halted {
                    env: env_name.clone(),
                    why: why.clone(),
                });
                summary.halted.push((env_name.clone(), why.clone()));
                halted = Some(format!("the rollout in {env_name} halted"));
                if env.rollout.on_failure == OnFailure::Rollback && !changed.is_empty() {
                    rollback_all(&mut changed, &spec.pool, &mut summary, &emit).await;
                }
            }
        }
        if let Some(p) = spec.records {
            let why = summary
                .halted
                .iter()
                .find(|(e, _)| *e == env_name)
                .map(|(_, w)| w.as_str());
            p.finished(&env_name, &summary.results[first_result..], why);
        }
    }
    summary.interrupted = *spec.cancel.borrow();
    summary
}

/// Rolls back every host of a halted rollout from its transaction journal, last wave first.
async fn rollback_all(
    changed: &mut Vec<Changed>,
    pool: &Arc<transport::Pool>,
    summary: &mut Summary,
    emit: &impl Fn(Event),
) {
    changed.sort_by_key(|c| std::cmp::Reverse(c.wave));
    let mut waves: Vec<usize> = changed.iter().map(|c| c.wave).collect();
    waves.dedup();
    for wave in waves {
        let hosts: Vec<&Changed> = changed.iter().filter(|c| c.wave == wave).collect();
        let results = on_hosts(&hosts, pool, hosts.len(), |mut s, d, txn| async move {
            let r = transaction::recover(s.as_mut(), &d, &txn)
                .await
                .map_err(|e| e.to_string());
            (s, r)
        })
        .await;
        for (c, r) in hosts.iter().zip(results) {
            let host = c.desired.name.to_string();
            match r {
                Ok(rep) if !rep.outcome.failed() => {
                    summary.results[c.index].reverted = true;
                    emit(Event::RolledBack {
                        host,
                        why: "its rollout halted (on_failure = \"rollback\")".into(),
                    });
                }
                Ok(rep) => emit(Event::HostFailed {
                    host,
                    error: format!("rollback failed: {}", transaction::describe_failure(&rep)),
                }),
                Err(e) => emit(Event::HostFailed {
                    host,
                    error: format!("rollback failed: {e}"),
                }),
            }
        }
    }
    changed.clear();
}
