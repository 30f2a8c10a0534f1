//! One cycle of `watch`: load the revision in force, observe every host and plan (shown before
//! anything changes), then apply what may go unattended — environments with `auto_apply = true`
//! whose guarded settings a person applied — through the engine, which keeps windows,
//! freezes, promotion, pauses and halts. Everything else is reported as pending.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;

use super::status::{Cycle, EnvironmentState};
use super::{Note, Watch};
use crate::apply::guard::Guarded;
use crate::apply::{self as engine, ApplyOptions, Outcome, Overrides, Report, Request, Scope};
use crate::artifact::TrustPolicy;
use crate::load::{LoadError, LoadedFleet};
use crate::observe::Memo;
use crate::plan::Plan;
use crate::repo::FleetRepo;
use crate::resolve::DesiredHost;
use crate::rollout::HostOutcome;
use crate::transport::Pool;

/// How often changes that wait without a known end (promotion soak, a pause, a busy host) are
/// looked at again, as `apply --wait` does — or every `--interval`, if that is shorter.
const RECHECK: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// What a cycle means for the loop.
#[derive(Debug, Clone, Copy)]
pub struct CycleResult {
    /// apply's outcome: `--once` exits with it.
    pub outcome: Outcome,
    /// When something that waits may go.
    pub requeue_at: Option<Timestamp>,
}

/// A valid revision, loaded once (with the command line's connection settings) and kept while it
/// is in force: drift checks and waits that end reuse it.
pub(super) struct Revision {
    pub id: String,
    repo: FleetRepo,
    loaded: LoadedFleet,
}

/// Loads `rev`; `Err` carries every problem, rendered as `flotilla validate` shows them.
pub(super) fn load(dir: &Path, rev: &str, settings: &super::Settings) -> Result<Revision, String> {
    let repo = FleetRepo::open(dir, Some(rev)).map_err(|e| e.to_string())?;
    let mut loaded = match crate::load::load(&repo) {
        Ok(loaded) => loaded,
        Err(LoadError::Invalid {
            diagnostics, sources, ..
        }) => {
            return Err(crate::diagnostic::render(&diagnostics, &sources, false));
        }
        Err(e) => return Err(e.to_string()),
    };
    loaded.override_connection(settings.identity_file.as_deref(), settings.known_hosts.as_deref());
    Ok(Revision {
        id: rev.to_owned(),
        repo,
        loaded,
    })
}

/// Runs one cycle at `rev` and records it in the shared status.
pub(super) async fn run(w: &Watch<'_>, revision: &Revision, pool: Arc<Pool>, memo: Arc<Memo>) -> CycleResult {
    let rev = revision.id.as_str();
    let started = w.clock.now();
    let result = attempt(w, revision, pool, memo).await;
    let ended = w.clock.now();
    let seconds = ended.duration_since(started).as_secs_f64();
    match result {
        Ok(done) => {
            let cycle = Cycle {
                revision: rev.to_owned(),
                started,
                seconds,
                outcome: outcome_name(done.outcome).to_owned(),
                error: None,
                applied: done.applied,
                failed: done.failed,
                drifted: done.drifted,
            };
            let pending = done
                .environments
                .iter()
                .map(|e| {
                    e.hosts.get("pending").copied().unwrap_or(0)
                        + e.hosts.get("waiting").copied().unwrap_or(0)
                })
                .sum();
            w.shared.cycle_done(cycle, done.environments, ended);
            w.view.note(&Note::CycleDone {
                revision: rev.to_owned(),
                outcome: outcome_name(done.outcome).to_owned(),
                applied: done.applied,
                failed: done.failed,
                pending,
                seconds,
                next_wake: done.requeue_at,
            });
            CycleResult {
                outcome: done.outcome,
                requeue_at: done.requeue_at,
            }
        }
        Err(error) => {
            w.view.note(&Note::CycleFailed {
                revision: rev.to_owned(),
                error: error.clone(),
            });
            let environments = w.shared.status().environments;
            let cycle = Cycle {
                revision: rev.to_owned(),
                started,
                seconds,
                outcome: "error".to_owned(),
                error: Some(error),
                applied: 0,
                failed: 0,
                drifted: 0,
            };
            w.shared.cycle_done(cycle, environments, ended);
            CycleResult {
                outcome: Outcome::Failure,
                requeue_at: None,
            }
        }
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Waiting => "waiting",
    }
}

struct Done {
    outcome: Outcome,
    requeue_at: Option<Timestamp>,
    environments: Vec<EnvironmentState>,
    applied: usize,
    failed: usize,
    drifted: usize,
}

async fn attempt(
    w: &Watch<'_>,
    revision: &Revision,
    pool: Arc<Pool>,
    memo: Arc<Memo>,
) -> Result<Done, String> {
    let (rev, repo, loaded) = (revision.id.as_str(), &revision.repo, &revision.loaded);
    let fleet = &loaded.fleet;
    let trust = TrustPolicy::new(
        &fleet.trust.keys,
        fleet.trust.require_signatures,
        w.settings.pinned_keys.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    let all: Vec<&DesiredHost> = loaded.desired.iter().collect();
    // Connections to hosts this revision no longer names are closed, not kept open forever.
    pool.close_unless(|h| fleet.host(h).is_some()).await;
    let request = |scope| Request {
        fleet: loaded,
        repo,
        scope,
        overrides: Overrides::default(),
        store: Some(w.store),
        pool: pool.clone(),
        memo: Some(memo.clone()),
        clock: w.clock,
        cancel: w.cancel.clone(),
        parallel: w.settings.parallel,
        at: None,
        trust: &trust,
        artifact_cache: None,
    };
    let everything = request(Scope::Hosts(&all));
    let planned = engine::prepare(&everything).await.map_err(|e| e.to_string())?;
    // The plan is logged when it says something new: a fleet at rest logs one line per cycle.
    let digest = crate::resolve::sha256_hex(
        serde_json::to_string(&planned.plan.hosts)
            .unwrap_or_default()
            .as_bytes(),
    );
    let worth_showing = planned.plan.has_changes() || planned.plan.summary.hosts_unreachable > 0;
    if w.shared.plan_changed(&digest) && worth_showing {
        w.view.plan(rev, &planned.plan);
    }
    if let Ok(json) = serde_json::to_string_pretty(&planned.plan) {
        w.shared.set_plan(json);
    }

    // Who may apply what: unattended only `auto_apply` environments whose guarded settings
    // are the ones a person applied.
    let approvals = w.store.approvals().map_err(|e| e.to_string())?;
    let mut needs_person: BTreeMap<String, String> = BTreeMap::new();
    let mut go: BTreeSet<String> = BTreeSet::new();
    for env in &planned.plan.environments {
        let changes = planned
            .plan
            .hosts
            .iter()
            .any(|h| h.environment == env.name && !h.changes.is_empty());
        if !changes {
            continue;
        }
        let auto = fleet
            .environments
            .iter()
            .any(|(n, e)| n.as_str() == env.name && e.auto_apply);
        let why = if !auto {
            Some(format!(
                "auto_apply is off: changes wait for a person's `flotilla apply --env {}`",
                env.name
            ))
        } else {
            Guarded::of(fleet, &loaded.desired, &env.name).unapproved(&env.name, approvals.get(&env.name))
        };
        match why {
            Some(why) => {
                w.view.note(&Note::NeedsPerson {
                    environment: env.name.clone(),
                    why: why.clone(),
                });
                needs_person.insert(env.name.clone(), why);
            }
            None => {
                go.insert(env.name.clone());
            }
        }
    }

    let plan = planned.plan.clone();
    let unreachable_or_refused = plan.summary.hosts_unreachable > 0 || !planned.refused.is_empty();
    let artifact_errors = !planned.artifact_errors.is_empty();
    let mut report: Option<Report> = None;
    if !go.is_empty() && !w.cancel.draining() {
        let subset: Vec<&DesiredHost> = all
            .iter()
            .filter(|d| go.contains(d.environment.as_str()))
            .copied()
            .collect();
        let options = ApplyOptions {
            actor: w.settings.actor.clone(),
            dirty: false,
            unattended: true,
            detail: Default::default(),
        };
        let (tx, view) = w.view.events(rev);
        // The plan of every host is reused when the environments held for a person have no
        // changes (the common case); otherwise the applicable hosts are planned again.
        let result = if needs_person.is_empty() {
            engine::apply(&everything, planned, &options, Some(tx)).await
        } else {
            let part = request(Scope::Hosts(&subset));
            match engine::prepare(&part).await {
                Ok(p) => engine::apply(&part, p, &options, Some(tx)).await,
                Err(e) => Err(e),
            }
        };
        let _ = view.await;
        report = Some(result.map_err(|e| e.to_string())?);
    }

    let environments = environment_states(fleet, &plan, report.as_ref(), &needs_person);
    let (applied, failed) = report.as_ref().map_or((0, 0), |r| (r.applied(), r.failed()));
    let drifted = plan
        .hosts
        .iter()
        .filter(|h| h.changes.iter().any(|c| c.drift))
        .count();
    let mut outcome = match &report {
        Some(r) => r.outcome,
        None if unreachable_or_refused || artifact_errors => Outcome::Failure,
        None => Outcome::Success,
    };
    if outcome == Outcome::Success && !needs_person.is_empty() {
        outcome = Outcome::Waiting;
    }
    let now = w.clock.now();
    let requeue_at = report.as_ref().and_then(|r| {
        let open_ended = r.waits.iter().any(|w| w.hold.until().is_none());
        let every = super::wake::signed(w.settings.interval).min(RECHECK);
        let recheck = open_ended.then(|| now.saturating_add(every).unwrap_or(Timestamp::MAX));
        match (r.next.requeue_at, recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    });
    Ok(Done {
        outcome,
        requeue_at,
        environments,
        applied,
        failed,
        drifted,
    })
}

/// Each environment's hosts by status after the cycle, and why its changes wait.
fn environment_states(
    fleet: &crate::manifest::model::Fleet,
    plan: &Plan,
    report: Option<&Report>,
    needs_person: &BTreeMap<String, String>,
) -> Vec<EnvironmentState> {
    let results: BTreeMap<&str, &HostOutcome> = report
        .map(|r| r.hosts.iter().map(|h| (h.host.as_str(), &h.outcome)).collect())
        .unwrap_or_default();
    plan.environments
        .iter()
        .map(|env| {
            let mut hosts: BTreeMap<String, usize> = BTreeMap::new();
            for h in plan.hosts.iter().filter(|h| h.environment == env.name) {
                let status = if h.error.is_some() {
                    "unreachable"
                } else if h.refused.is_some() {
                    "refused"
                } else if h.changes.is_empty() {
                    "converged"
                } else {
                    match results.get(h.name.as_str()) {
                        Some(HostOutcome::Applied { .. }) => "converged",
                        Some(HostOutcome::Waiting { .. }) => "waiting",
                        Some(HostOutcome::Skipped { .. }) => "skipped",
                        Some(_) => "failed",
                        None => "pending",
                    }
                };
                *hosts.entry(status.to_owned()).or_default() += 1;
            }
            let waiting = report
                .and_then(|r| r.waits.iter().find(|w| w.environment == env.name))
                .map(|w| w.hold.why())
                .or_else(|| env.waiting.clone());
            let halted = report
                .and_then(|r| r.halts.iter().find(|(e, _)| *e == env.name))
                .map(|(_, h)| h.reason.clone())
                .or_else(|| env.halted.as_ref().map(|h| h.reason.clone()));
            EnvironmentState {
                name: env.name.clone(),
                auto_apply: fleet
                    .environments
                    .iter()
                    .any(|(n, e)| n.as_str() == env.name && e.auto_apply),
                window_open: env.window.open && !env.frozen,
                hosts,
                waiting,
                halted,
                paused: env.paused.clone(),
                needs_person: needs_person.get(&env.name).cloned(),
            }
        })
        .collect()
}
