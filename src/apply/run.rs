//! `Apply(plan)`: everything after the person said yes. In order: every artifact the run
//! needs is fetched and checked (one failure refuses the whole run, nothing touched); an epoch
//! is taken; hosts a killed transaction left `pending` are restored (only hosts this store
//! owns); halted rollouts stay halted unless retried; the rollout runs with every host event
//! audited as it happens; the report says what happened and when to come back.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::mpsc;

use super::artifacts::prepare_artifacts;
use super::audit::AuditLog;
use super::prepare::{Planned, refusal};
use super::records::StoreRecords;
use super::recover::{recover_interrupted, replan_restored};
use super::{ApplyOptions, EngineError, Report, Request, Wait};
use crate::observe::Observation;
use crate::plan::Change;
use crate::plan::room::{self, ArtifactSizes};
use crate::resolve::DesiredHost;
use crate::rollout::policy::{self, Gate, SkipKind};
use crate::rollout::{EnvRun, Event, HostJob, HostOutcome, HostResult, Records as _, RunSpec, Touched};
use crate::store::{RolloutRecord, Store};
use crate::transaction::{Context, Upload};

/// Runs blocking work (file I/O, hashing) without stalling other tasks on a multi-threaded
/// runtime; inline on a current-thread one (tests), where `block_in_place` would panic.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Carries out `planned`. `view` hears every event (the CLI's progress views).
pub async fn apply<'a>(
    req: &Request<'a>,
    mut planned: Planned<'a>,
    opts: &ApplyOptions,
    view: Option<mpsc::UnboundedSender<Event>>,
) -> Result<Report, EngineError> {
    let store = req.store.ok_or(EngineError::NoStore)?;
    let fleet = &req.fleet.fleet;
    let revision = req.repo.revision().map(str::to_owned);
    let log = AuditLog {
        store,
        actor: opts.actor.clone(),
        revision: revision.clone(),
        dirty: opts.dirty,
        clock: req.clock,
    };
    let mut report = Report {
        hosts: Vec::new(),
        waits: Vec::new(),
        halts: Vec::new(),
        artifact_errors: Vec::new(),
        unreachable: planned.plan.summary.hosts_unreachable,
        interrupted: false,
        next: super::Action::default(),
        outcome: super::Outcome::Success,
    };

    // Every artifact is fetched and verified before any host is touched; a repository artifact
    // that failed when planning refuses the run even if no host needs it (DESIGN §3).
    let (artifacts, sizes, mut errors) = prepare_artifacts(req, &planned, store);
    for e in &planned.artifact_errors {
        if !errors.contains(e) {
            errors.push(e.clone());
        }
    }
    if !errors.is_empty() {
        let mut e = log.event("apply-refused");
        e.error = Some(
            errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        );
        store.append_audit(&e)?;
        report.artifact_errors = errors;
        report.decide();
        return Ok(report);
    }

    let epoch = store.next_epoch()?;
    let mut started = log.event("apply-started");
    started.changes =
        vec![serde_json::json!({ "epoch": epoch, "hosts": planned.plan.summary.hosts_changed })];
    store.append_audit(&started)?;
    if !opts.unattended {
        // A person saw this plan and said yes: `watch` may carry on with these connection
        // settings and commands in the environments it covered.
        let envs: BTreeSet<&str> = planned.targets.iter().map(|d| d.environment.as_str()).collect();
        for env in envs {
            let guarded = super::guard::Guarded::of(fleet, &req.fleet.desired, env);
            let approval = guarded.approval(revision.as_deref(), &opts.actor, req.clock.now());
            store.approve(env, &approval)?;
        }
    }
    for (flag, reason) in [
        ("override-windows", &req.overrides.windows),
        ("override-freeze", &req.overrides.freeze),
    ] {
        if let Some(r) = reason {
            let mut e = log.event(flag);
            e.reason = Some(r.clone());
            store.append_audit(&e)?;
        }
    }

    // Ownership, now with this run's epoch: refused hosts are never touched, not even to
    // restore an interrupted transaction.
    let take_over = req.overrides.take_over.is_some();
    for (d, o) in planned.targets.iter().zip(&planned.observations) {
        let Ok(o) = o else { continue };
        match refusal(
            d,
            o,
            fleet.name.as_str(),
            Some(store.id()),
            Some(epoch),
            take_over,
        ) {
            Some(why) => {
                planned.refused.insert(d.name.to_string(), why);
            }
            None if take_over
                && (o.state_error.is_some()
                    || o.state.as_ref().is_some_and(|s| s.store_id != store.id())) =>
            {
                let mut e = log.event("take-over");
                e.host = Some(d.name.to_string());
                e.environment = Some(d.environment.to_string());
                e.reason = req.overrides.take_over.clone();
                store.append_audit(&e)?;
            }
            None => {}
        }
    }

    let (tx, rx) = mpsc::unbounded_channel();
    // Each host's changes, for its audit lines; replanned hosts update it.
    let changes = std::sync::Mutex::new(changes_of(&planned.plan));
    let tee = log.tee(rx, view, &changes);
    let work = async {
        let result = run(
            req,
            &mut planned,
            epoch,
            (&artifacts, &sizes),
            &log,
            &tx,
            &changes,
            &mut report,
            opts.detail,
        )
        .await;
        drop(tx);
        result
    };
    let (result, audit_errors) = tokio::join!(work, tee);
    result?;
    for e in audit_errors {
        tracing::warn!("{e}");
    }

    // The observation cache, off the rollout's critical path.
    let now = req.clock.now();
    blocking(|| {
        for (d, o) in planned.targets.iter().zip(&planned.observations) {
            if let Ok(o) = o {
                let _ = store.save_observation(d.name.as_str(), &o.fingerprint(), now);
            }
        }
    });
    report.decide();
    let mut finished = log.event("apply-finished");
    finished.changes = vec![serde_json::json!({
        "applied": report.applied(), "failed": report.failed(), "rolled_back": report.rolled_back(),
        "skipped": report.skipped(), "waiting": report.waiting(), "interrupted": report.interrupted,
    })];
    store.append_audit(&finished)?;
    Ok(report)
}

pub(super) fn changes_of(plan: &crate::plan::Plan) -> BTreeMap<String, Vec<Change>> {
    plan.hosts
        .iter()
        .map(|h| (h.name.clone(), h.changes.clone()))
        .collect()
}

/// A digest of what the manifests want in `env`: a rollout is one environment moving to one
/// desired state (DESIGN §6.2), so a commit that changes nothing there continues the same
/// rollout, and a halt holds until the desired state changes (§6.3).
///
/// It covers every host's resolved state (runtime versions, file digests, settings) and what
/// the runtimes they use run on the host (artifact digests, hooks, health checks) and the
/// environment's `health_command`: fixing a failing health check starts a new rollout, while
/// a commit elsewhere in the repository does not. The rollout policy itself is not part of it:
/// changing `max_failures` does not lift a halt (`--retry` does).
pub(super) fn desired_digest(
    fleet: &crate::manifest::model::Fleet,
    desired: &[DesiredHost],
    env: &str,
) -> String {
    use crate::manifest::model::Pin;
    let hosts: Vec<&DesiredHost> = desired.iter().filter(|d| d.environment.as_str() == env).collect();
    let mut text = serde_json::to_string(&hosts).unwrap_or_default();
    let used: BTreeSet<(&str, &str)> = hosts
        .iter()
        .flat_map(|h| h.runtimes.iter())
        .filter_map(|(rt, pin)| match &pin.value {
            Pin::Version(v) => Some((rt.as_str(), v.as_str())),
            Pin::Remove => None,
        })
        .collect();
    for (rt, v) in used {
        let Some(runtime) = fleet.runtimes.get(rt) else {
            continue;
        };
        let sha = runtime
            .versions
            .get(v)
            .map(|x| x.sha256.as_str())
            .unwrap_or_default();
        text.push_str(&format!(
            "\n{rt} {v} {sha} {:?} {:?} {:?}",
            runtime.hooks.activate, runtime.hooks.remove, runtime.health
        ));
    }
    if let Some(e) = fleet.environments.get(env) {
        text.push_str(&format!("\nhealth_command {:?}", e.rollout.health_command));
    }
    crate::resolve::sha256_hex(text.as_bytes())
}

/// The part that touches hosts; its events go to `tx` (views and audit).
#[allow(clippy::too_many_arguments)]
async fn run(
    req: &Request<'_>,
    planned: &mut Planned<'_>,
    epoch: u64,
    (artifacts, sizes): (&BTreeMap<(String, String), Upload>, &ArtifactSizes),
    log: &AuditLog<'_>,
    tx: &mpsc::UnboundedSender<Event>,
    changes: &std::sync::Mutex<BTreeMap<String, Vec<Change>>>,
    report: &mut Report,
    detail: crate::transaction::Detail,
) -> Result<(), EngineError> {
    let store = log.store;
    let emit = |e: Event| {
        let _ = tx.send(e);
    };
    // Hosts a killed transaction left `pending` are restored to where they were, then
    // observed and planned again.
    let mut unrecovered = Vec::new();
    let recovered = recover_interrupted(req, planned, &emit, &mut unrecovered).await;
    for r in &unrecovered {
        // A host that could not be restored takes no part in the rollout.
        planned.refused.insert(
            r.host.clone(),
            "its interrupted transaction could not be restored".into(),
        );
    }
    report.hosts.extend(unrecovered);
    if !recovered.is_empty() {
        replan_restored(req, store, planned, &recovered, sizes, report, changes).await?;
    }

    let plan = &planned.plan;
    let by_name: BTreeMap<&str, (&DesiredHost, &Observation)> = planned
        .targets
        .iter()
        .zip(&planned.observations)
        .filter_map(|(d, o)| Some((d.name.as_str(), (*d, o.as_ref().ok()?))))
        .collect();

    // Hosts that cannot take part: reported, and counted against their environment's budget.
    let mut failed_before: BTreeMap<String, usize> = BTreeMap::new();
    for h in &plan.hosts {
        let skip = if let Some(why) = planned.stale.get(&h.name) {
            Some((SkipKind::Stale, format!("stale: {why}")))
        } else {
            planned
                .refused
                .get(&h.name)
                .map(|why| (SkipKind::Refused, why.clone()))
        };
        if h.error.is_some() {
            *failed_before.entry(h.environment.clone()).or_default() += 1;
        }
        let Some((kind, why)) = skip else { continue };
        *failed_before.entry(h.environment.clone()).or_default() += 1;
        emit(Event::HostSkipped {
            host: h.name.clone(),
            env: h.environment.clone(),
            kind,
            why: why.clone(),
        });
        report.hosts.push(HostResult {
            host: h.name.clone(),
            environment: h.environment.clone(),
            changes: h.changes.clone(),
            txn: None,
            outcome: HostOutcome::Skipped { kind, why },
        });
    }

    let identities: BTreeMap<String, String> = plan
        .environments
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                desired_digest(&req.fleet.fleet, &req.fleet.desired, &e.name),
            )
        })
        .collect();
    let records = StoreRecords {
        fleet: &req.fleet.fleet,
        desired: &req.fleet.desired,
        store,
        plan,
        observed: &by_name,
        left_out: planned
            .refused
            .keys()
            .chain(planned.stale.keys())
            .cloned()
            .collect(),
        identities: identities.clone(),
        clock: req.clock,
        warnings: Default::default(),
    };
    let mut environments = Vec::new();
    for env in &plan.environments {
        let jobs: Vec<HostJob> = plan
            .hosts
            .iter()
            .filter(|h| h.environment == env.name && h.wave.is_some() && !h.changes.is_empty())
            .filter(|h| !planned.stale.contains_key(&h.name) && !planned.refused.contains_key(&h.name))
            .filter_map(|h| {
                let (d, o) = by_name.get(h.name.as_str())?;
                Some(HostJob {
                    desired: (*d).clone(),
                    observed: (*o).clone(),
                    changes: h.changes.clone(),
                    wave: h.wave?,
                    blocked: None,
                    // Checked against every artifact's size, not only the repository's the
                    // plan knew: this run fetched them all.
                    no_room: room::shortfall(d, o, &h.changes, sizes),
                    busy: req.fleet.fleet.environments.get(env.name.as_str()).and_then(|e| {
                        policy::busy(
                            &e.rollout.host_limits,
                            o.usage,
                            o.free_space.and_then(|f| f.runtimes_used_percent),
                        )
                    }),
                })
            })
            .collect();
        let Some(identity) = identities.get(&env.name).cloned() else {
            continue;
        };
        let stored = store.rollout(&env.name)?;
        let unfinished = stored.as_ref().is_some_and(|r| {
            r.identity() == Some(identity.as_str())
                && r.halted.is_none()
                && (r.bake_deadline.is_some() || (!r.changed.is_empty() && r.waves_done < r.waves.len()))
        });
        let whole_env = req
            .fleet
            .desired
            .iter()
            .filter(|d| d.environment.as_str() == env.name)
            .all(|d| by_name.contains_key(d.name.as_str()));
        if jobs.is_empty() && !unfinished {
            // Only a run that saw every host of the environment may say it converged.
            if whole_env && failed_before.get(&env.name).copied().unwrap_or(0) == 0 {
                // Converged now: its records let later environments go in this same run.
                records.finished(
                    &env.name,
                    &crate::rollout::EnvEnd {
                        results: &[],
                        halt: None,
                        completed: true,
                    },
                );
            }
            continue;
        }
        let halted_here = |retry| {
            policy::halted_at_revision(
                stored.as_ref().and_then(|r| r.halted.as_deref()),
                stored.as_ref().and_then(RolloutRecord::identity),
                Some(identity.as_str()),
                retry,
            )
        };
        let halted = halted_here(req.overrides.retry.is_some());
        if halted_here(false).is_some()
            && let Some(reason) = &req.overrides.retry
        {
            let mut e = log.event("retry");
            e.environment = Some(env.name.clone());
            e.reason = Some(reason.clone());
            store.append_audit(&e)?;
        }
        if let Some(why) = halted {
            for j in &jobs {
                emit(Event::HostSkipped {
                    host: j.desired.name.to_string(),
                    env: env.name.clone(),
                    kind: SkipKind::Halted,
                    why: why.clone(),
                });
                report.hosts.push(HostResult {
                    host: j.desired.name.to_string(),
                    environment: env.name.clone(),
                    changes: j.changes.clone(),
                    txn: None,
                    outcome: HostOutcome::Skipped {
                        kind: SkipKind::Halted,
                        why: why.clone(),
                    },
                });
            }
            continue;
        }
        let skip: BTreeSet<String> = jobs
            .iter()
            .map(|j| j.desired.name.to_string())
            .chain(planned.refused.keys().cloned())
            .chain(planned.stale.keys().cloned())
            .collect();
        let observed = |h: &str| by_name.contains_key(h) && !skip.contains(h);
        environments.push(env_run(
            req,
            env,
            jobs,
            stored,
            &identity,
            &observed,
            &failed_before,
            store,
        )?);
    }

    let spec = RunSpec {
        fleet: &req.fleet.fleet,
        fleet_dir: req.repo.fleet_dir(),
        txn: Context {
            fleet: &req.fleet.fleet,
            revision: plan.revision.as_deref(),
            store_id: store.id(),
            epoch,
            now: req.clock.now(),
            artifacts,
            detail,
        },
        environments,
        parallel: req.parallel,
        cancel: req.cancel.clone(),
        pool: req.pool.clone(),
        clock: req.clock,
        records: &records,
    };
    let summary = crate::rollout::execute(spec, tx.clone()).await;
    report.hosts.extend(summary.results);
    report.halts = summary.halts;
    report.waits = summary
        .holds
        .into_iter()
        .map(|(environment, hold)| Wait { environment, hold })
        .collect();
    report.interrupted = summary.interrupted;
    for w in records.warnings.into_inner().unwrap_or_default() {
        tracing::warn!("{w}");
    }
    Ok(())
}

/// One environment's run: its jobs in their waves (the stored layout when an unfinished
/// rollout of this revision resumes), its gate and what an earlier run left.
/// `earlier_ok(host)`: whether a host an earlier run changed may be re-checked or rolled back
/// by this one (observed, not refused or stale, and not changed again by this run).
#[allow(clippy::too_many_arguments)]
fn env_run(
    req: &Request<'_>,
    env: &crate::plan::EnvironmentPlan,
    mut jobs: Vec<HostJob>,
    stored: Option<RolloutRecord>,
    identity: &str,
    earlier_ok: &dyn Fn(&str) -> bool,
    failed_before: &BTreeMap<String, usize>,
    store: &dyn Store,
) -> Result<EnvRun, EngineError> {
    let revision = req.repo.revision();
    let cfg = req.fleet.fleet.environments.get(env.name.as_str());
    // When the last, different rollout ended (completed or halted): `min_interval` counts
    // from it.
    let last_ended = stored
        .as_ref()
        .filter(|r| r.identity() != Some(identity))
        .and_then(|r| r.ended_at.or(r.halted_at));
    let resumable = stored.filter(|r| {
        r.identity() == Some(identity)
            && r.halted.is_none()
            && (r.waves_done < r.waves.len() || r.bake_deadline.is_some())
    });
    let mut earlier = Vec::new();
    let mut bake_until = None;
    let mut started_at = None;
    let not_before =
        cfg.and_then(|c| policy::next_rollout_at(last_ended, c.rollout.min_interval, req.clock.now()));
    match resumable {
        Some(record) => {
            started_at = Some(record.started_at);
            for job in &mut jobs {
                let name = job.desired.name.as_str();
                job.wave = record
                    .waves
                    .iter()
                    .position(|w| w.iter().any(|h| h == name))
                    .map_or(record.waves.len(), |i| i + 1);
            }
            earlier = record
                .changed
                .iter()
                .filter(|c| earlier_ok(&c.host))
                .filter_map(|c| {
                    let desired = req.fleet.desired.iter().find(|d| d.name.as_str() == c.host)?;
                    Some(Touched {
                        desired: desired.clone(),
                        wave: c.wave,
                        txn: c.txn.clone(),
                    })
                })
                .collect();
            bake_until = record.bake_deadline;
        }
        // Too soon after the last rollout: nothing is recorded, the gate holds every host.
        None if not_before.is_some() => {}
        None => {
            started_at = Some(req.clock.now());
            let record = RolloutRecord {
                revision: revision.map(str::to_owned),
                desired: Some(identity.to_owned()),
                waves: env.waves.clone(),
                waves_done: 0,
                bake_deadline: None,
                halted: None,
                halted_wave: None,
                halted_at: None,
                started_at: req.clock.now(),
                ended_at: None,
                changed: Vec::new(),
            };
            store.save_rollout(&env.name, &record)?;
        }
    }
    let gate = Gate {
        windows: match (&req.overrides.windows, cfg) {
            (None, Some(e)) => e.windows.clone(),
            _ => Vec::new(),
        },
        freezes: match (&req.overrides.freeze, cfg) {
            (None, Some(e)) => e.freezes.clone(),
            _ => Vec::new(),
        },
        paused: None,
        not_before,
    };
    Ok(EnvRun {
        started_at,
        name: env.name.clone(),
        jobs,
        gate,
        failed_before: failed_before.get(&env.name).copied().unwrap_or(0),
        earlier,
        bake_until,
    })
}
