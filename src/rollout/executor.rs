//! The driver: runs each environment's hosts as transactions, wave by wave, asking
//! [`policy`] before every host start and after every result, and emits events.
//! It decides nothing itself; failures on one host are data, and only a broken host (its
//! rollback failed) stops every environment.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use tokio::sync::mpsc;

use super::host::{deferred_results, recheck_busy, result, run_host};
use super::host::{host_outcome, panic_message};
use super::policy::{self, Budget, Gate, Hold, SkipKind, Start};
use super::spec::{Emit, EnvEnd, EnvRun, Events, HostJob, RunSpec, Summary, Touched};
use super::sweep::{finish, recheck, roll_back};
use super::{Event, FailureKind, Halt, HostOutcome};
use crate::cancel::Stop;
use crate::manifest::model::OnFailure;
use crate::transaction;

/// Runs every environment in order.
pub async fn execute(spec: RunSpec<'_>, events: mpsc::UnboundedSender<Event>) -> Summary {
    let emit = Events(events);
    let mut summary = Summary::default();
    let mut broken: Option<String> = None;
    for env in spec.environments.iter() {
        let Some(cfg) = spec.fleet.environments.get(env.name.as_str()) else {
            continue;
        };
        let first = summary.results.len();
        let end = run_env(&spec, env, cfg, &mut broken, &mut summary, &emit).await;
        spec.records.finished(
            &env.name,
            &EnvEnd {
                results: &summary.results[first..],
                halt: end.halt.as_ref(),
                completed: end.completed,
            },
        );
        if let Some(h) = end.halt {
            summary.halts.push((env.name.clone(), h));
        }
        if let Some(h) = end.hold {
            summary.holds.push((env.name.clone(), h));
        }
    }
    summary.interrupted = spec.cancel.draining();
    summary
}

struct EnvEndOwned {
    halt: Option<Halt>,
    hold: Option<Hold>,
    completed: bool,
}

async fn run_env(
    spec: &RunSpec<'_>,
    env: &EnvRun,
    cfg: &crate::manifest::model::Environment,
    broken: &mut Option<String>,
    summary: &mut Summary,
    emit: Emit<'_>,
) -> EnvEndOwned {
    let name = env.name.as_str();
    let rollout = &cfg.rollout;
    let waits = spec.records.promotion_waits(name, &env.jobs);
    // Promotion holds single hosts (all of a host's changes go together); the others go on.
    let mut held: Option<Hold> = None;
    let mut hold: Option<Hold> = None;
    let mut waves: BTreeMap<usize, Vec<&HostJob>> = BTreeMap::new();
    for (job, wait) in env
        .jobs
        .iter()
        .zip(waits.into_iter().chain(std::iter::repeat(None)))
    {
        match wait {
            Some(why) => {
                let h = Hold::Promotion { why };
                summary
                    .results
                    .push(result(job, None, HostOutcome::Waiting { hold: h.clone() }));
                held.get_or_insert(h);
            }
            None => waves.entry(job.wave).or_default().push(job),
        }
    }
    if let Some(h) = &held {
        emit.send(Event::EnvironmentWaiting {
            env: name.to_owned(),
            why: h.why(),
            until: h.until(),
        });
    }
    let taking_part = waves.values().map(Vec::len).sum::<usize>();
    let mut budget = Budget::new(rollout.max_failures, taking_part, env.failed_before);
    let mut halt: Option<Halt> = budget.halted().map(|why| Halt {
        wave: 0,
        reason: why.to_owned(),
    });
    if let Some(h) = &halt {
        emit.send(Event::Halted {
            env: name.to_owned(),
            wave: 0,
            why: h.reason.clone(),
        });
    }
    let mut touched: Vec<Touched> = env.earlier.clone();
    // The rest of a bake an interrupted run of this rollout did not finish, then its re-check
    // (also when the deadline passed meanwhile, and when no job is left).
    if let Some(until) = env.bake_until
        && halt.is_none()
        && !touched.is_empty()
        && !spec.cancel.draining()
    {
        let wave = waves.keys().next().map_or(0, |w| w.saturating_sub(1));
        if bake(spec, name, wave, until, true, emit).await {
            let limit = rollout.max_parallel as usize;
            if let Some(why) = recheck(spec, name, limit, &touched, &mut budget, summary, emit).await {
                halt = Some(halted(name, wave, why, emit));
            }
        }
    }
    let mut started = false;
    let last_wave = waves.keys().last().copied().unwrap_or(0);
    // Busy hosts left waiting: the rollout is not complete (and promotes nothing) yet.
    let mut busy_left = false;
    for (wave, jobs) in waves {
        if let Some(h) = &hold {
            for job in jobs {
                summary
                    .results
                    .push(result(job, None, HostOutcome::Waiting { hold: h.clone() }));
            }
            continue;
        }
        if !started && budget.halted().is_none() && !spec.cancel.draining() && broken.is_none() {
            emit.send(Event::EnvironmentStarted {
                env: name.to_owned(),
                waves: last_wave,
                hosts: taking_part,
            });
            started = true;
        }
        let mut announced = false;
        let limit = (rollout.max_parallel as usize).min(spec.parallel).max(1);
        let mut queue: std::collections::VecDeque<&HostJob> = jobs.into_iter().collect();
        // Busy hosts wait for the rest of the wave, then are looked at again once.
        let mut deferred: Vec<&HostJob> = Vec::new();
        let mut cleared: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut rechecked = false;
        let mut set = tokio::task::JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, (&HostJob, String)> = HashMap::new();
        loop {
            while set.len() < limit && hold.is_none() {
                let Some(job) = queue.pop_front() else { break };
                if let Some(started) = env.started_at
                    && let Some(why) =
                        policy::past_max_duration(started, rollout.max_duration, spec.clock.now())
                    && let Some(why) = budget.halt_for(why)
                {
                    halt = Some(halted(name, wave, why, emit));
                }
                let gate = Gate {
                    paused: spec.records.paused(name),
                    ..env.gate.clone()
                };
                // A process that lost the store's lock starts nothing more: another may hold
                // it now. Not started hosts are skipped as on an interruption (exit 1).
                let decision = match spec.records.lease_lost() {
                    Some(why) => Start::Skip(SkipKind::Interrupted, why),
                    None => policy::next_start(
                        &budget,
                        spec.cancel.state(),
                        broken.as_deref(),
                        job.blocked.as_deref(),
                        &gate,
                        spec.clock.now(),
                    ),
                };
                match decision {
                    Start::Go => {
                        if !announced {
                            emit.send(Event::WaveStarted {
                                env: name.to_owned(),
                                wave,
                                hosts: std::iter::once(job.desired.name.to_string())
                                    .chain(queue.iter().map(|j| j.desired.name.to_string()))
                                    .collect(),
                            });
                            announced = true;
                        }
                        if let Some(why) = &job.no_room {
                            // Refused before anything is uploaded: reported and audited as a
                            // failed host, not counted against the budget (no evidence against
                            // the version; see policy::counts_against_budget).
                            let error = format!("not started, nothing uploaded: {why}");
                            emit.send(Event::HostFailed {
                                host: job.desired.name.to_string(),
                                env: name.to_owned(),
                                kind: FailureKind::NoRoom,
                                error: error.clone(),
                            });
                            let outcome = HostOutcome::Failed {
                                kind: FailureKind::NoRoom,
                                error,
                            };
                            summary.results.push(result(job, None, outcome));
                            continue;
                        }
                        if let Some(why) = &job.busy
                            && !cleared.contains(job.desired.name.as_str())
                        {
                            emit.send(Event::HostBusy {
                                host: job.desired.name.to_string(),
                                env: name.to_owned(),
                                why: why.clone(),
                            });
                            deferred.push(job);
                            continue;
                        }
                        let txn = transaction::build(&job.desired, &job.observed, &job.changes, &spec.txn);
                        let id = txn.id.clone();
                        let handle = set.spawn(run_host(spec, job, txn, emit));
                        in_flight.insert(handle.id(), (job, id));
                    }
                    Start::Hold(h) => {
                        emit.send(Event::EnvironmentWaiting {
                            env: name.to_owned(),
                            why: h.why(),
                            until: h.until(),
                        });
                        summary
                            .results
                            .push(result(job, None, HostOutcome::Waiting { hold: h.clone() }));
                        hold = Some(h);
                    }
                    Start::Skip(kind, why) => {
                        let why = match kind {
                            SkipKind::Halted => format!("the rollout in {name} halted"),
                            _ => why,
                        };
                        if kind == SkipKind::Blocked
                            && let Some(why) = budget.fail()
                        {
                            halt = Some(halted(name, wave, why, emit));
                        }
                        emit.send(Event::HostSkipped {
                            host: job.desired.name.to_string(),
                            env: name.to_owned(),
                            kind,
                            why: why.clone(),
                        });
                        summary
                            .results
                            .push(result(job, None, HostOutcome::Skipped { kind, why }));
                    }
                }
            }
            if set.is_empty() {
                let may_go = hold.is_none() && budget.halted().is_none() && !spec.cancel.draining();
                if rechecked || deferred.is_empty() || !may_go {
                    break;
                }
                rechecked = true;
                for job in std::mem::take(&mut deferred) {
                    match recheck_busy(spec, job, &rollout.host_limits).await {
                        None => {
                            cleared.insert(job.desired.name.as_str());
                            queue.push_back(job);
                        }
                        Some(why) => {
                            deferred_results(summary, job, why);
                            busy_left = true;
                        }
                    }
                }
                continue;
            }
            let joined = tokio::select! {
                biased;
                _ = spec.cancel.reached(Stop::Abort) => None,
                j = set.join_next_with_id() => j,
            };
            let Some(joined) = joined else {
                // A second stop: in-flight hosts are left to finish or roll back on the host.
                set.abort_all();
                for (_, (job, txn)) in in_flight.drain() {
                    let error = "aborted while in flight: its transaction finishes or rolls back on the host by itself; the next plan shows where it ended".to_owned();
                    emit.send(Event::HostFailed {
                        host: job.desired.name.to_string(),
                        env: name.to_owned(),
                        kind: FailureKind::Aborted,
                        error: error.clone(),
                    });
                    summary.results.push(result(
                        job,
                        Some(txn),
                        HostOutcome::Failed {
                            kind: FailureKind::Aborted,
                            error,
                        },
                    ));
                }
                break;
            };
            let (id, mut report) = match joined {
                Ok((id, r)) => (id, r),
                Err(e) => (e.id(), Err((FailureKind::Panicked, panic_message(e)))),
            };
            let Some((job, txn)) = in_flight.remove(&id) else {
                continue;
            };
            // -v: shown after the host's result, whatever it is.
            let outputs = match &mut report {
                Ok(r) => std::mem::take(&mut r.outputs),
                Err(_) => Vec::new(),
            };
            let outcome = host_outcome(report);
            let host = job.desired.name.to_string();
            let output_events: Vec<Event> = outputs
                .into_iter()
                .map(|o| Event::HostOutput {
                    host: host.clone(),
                    env: name.to_owned(),
                    label: o.label,
                    lines: o.lines,
                })
                .collect();
            match &outcome {
                HostOutcome::Applied { warning } => {
                    emit.send(Event::HostApplied {
                        host,
                        env: name.to_owned(),
                        changes: job.changes.len(),
                        warning: warning.clone(),
                    });
                    let t = Touched {
                        desired: job.desired.clone(),
                        wave,
                        txn: txn.clone(),
                    };
                    spec.records.host_changed(name, &t);
                    touched.push(t);
                }
                HostOutcome::Failed { kind, error } => {
                    if *kind == FailureKind::Broken {
                        broken.get_or_insert(format!("host {host} is broken (its rollback failed)"));
                    }
                    let event = if *kind == FailureKind::RolledBack {
                        Event::RolledBack {
                            host,
                            env: name.to_owned(),
                            why: error.clone(),
                        }
                    } else {
                        Event::HostFailed {
                            host,
                            env: name.to_owned(),
                            kind: *kind,
                            error: error.clone(),
                        }
                    };
                    emit.send(event);
                    if policy::counts_against_budget(*kind)
                        && let Some(why) = budget.fail()
                    {
                        halt = Some(halted(name, wave, why, emit));
                    }
                }
                _ => {}
            }
            for e in output_events {
                emit.send(e);
            }
            summary.results.push(result(job, Some(txn), outcome));
        }
        if spec.cancel.state() == Stop::Abort {
            for job in queue {
                let why = "interrupted before it started".to_owned();
                summary.results.push(result(
                    job,
                    None,
                    HostOutcome::Skipped {
                        kind: SkipKind::Interrupted,
                        why,
                    },
                ));
            }
            break;
        }
        // Busy hosts not looked at again (a hold, a halt or a stop came first) still wait.
        for job in std::mem::take(&mut deferred) {
            deferred_results(summary, job, job.busy.clone().unwrap_or_default());
            busy_left = true;
        }
        if let Some(h) = &hold {
            for job in queue {
                summary
                    .results
                    .push(result(job, None, HostOutcome::Waiting { hold: h.clone() }));
            }
            continue;
        }
        // Bake, then re-check the health of every host this rollout changed so far.
        let until = policy::bake_until(rollout.bake, &budget, touched.len(), spec.clock.now());
        spec.records.wave_done(name, wave, until);
        if let Some(until) = until
            && !spec.cancel.draining()
            && bake(spec, name, wave, until, false, emit).await
        {
            let limit = rollout.max_parallel as usize;
            if let Some(why) = recheck(spec, name, limit, &touched, &mut budget, summary, emit).await {
                halt.get_or_insert(halted(name, wave, why, emit));
            }
        }
    }
    // After the waves (a halt starts no new host, so nothing is lost by waiting for the wave's
    // in-flight hosts): every host this rollout changed, in this run or an earlier one.
    if halt.is_some() && rollout.on_failure == OnFailure::Rollback && !touched.is_empty() {
        let limit = rollout.max_parallel as usize;
        roll_back(
            spec,
            name,
            limit,
            std::mem::take(&mut touched),
            broken,
            summary,
            emit,
        )
        .await;
    }
    let hold = hold.or(held);
    let completed =
        halt.is_none() && hold.is_none() && !busy_left && !spec.cancel.draining() && broken.is_none();
    if completed {
        finish(spec, name, &touched, emit).await;
    }
    EnvEndOwned {
        halt,
        hold,
        completed,
    }
}

fn halted(env: &str, wave: usize, why: String, emit: Emit<'_>) -> Halt {
    emit.send(Event::Halted {
        env: env.to_owned(),
        wave,
        why: why.clone(),
    });
    Halt { wave, reason: why }
}

/// Waits until `until` unless a stop comes first; returns whether the bake ran to its end.
async fn bake(
    spec: &RunSpec<'_>,
    env: &str,
    wave: usize,
    until: Timestamp,
    resumed: bool,
    emit: Emit<'_>,
) -> bool {
    emit.send(Event::Baking {
        env: env.to_owned(),
        wave,
        until,
        resumed,
    });
    tokio::select! {
        _ = spec.clock.sleep_until(until) => true,
        _ = spec.cancel.reached(Stop::Drain) => false,
    }
}
