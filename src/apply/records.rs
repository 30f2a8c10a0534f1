//! The store's side of a rollout: promotion gates (read once per environment), the rollout
//! record (layout, waves done, bake deadline, halt, every host changed as it happens) and
//! promotion records when an environment converged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use jiff::Timestamp;

use crate::clock::Clock;
use crate::manifest::model::{Fleet, Pin};
use crate::observe::Observation;
use crate::plan::{Kind, Plan};
use crate::resolve::DesiredHost;
use crate::rollout::{EnvEnd, HostJob, Records, Touched};
use crate::store::{ChangedHost, PromotionRecord, RolloutRecord, Store};

pub(super) struct StoreRecords<'a> {
    pub fleet: &'a Fleet,
    pub desired: &'a [DesiredHost],
    pub store: &'a dyn Store,
    pub plan: &'a Plan,
    /// Every targeted host that was observed.
    pub observed: &'a BTreeMap<&'a str, (&'a DesiredHost, &'a Observation)>,
    /// Refused and stale hosts: observed, but not converged whatever their plan says.
    pub left_out: BTreeSet<String>,
    /// Each environment's desired-state digest, computed once per run (it serialises every
    /// host of the environment, so not once per host changed).
    pub identities: BTreeMap<String, String>,
    pub clock: Clock,
    /// Warnings for the operator (a record that could not be written).
    pub warnings: Mutex<Vec<String>>,
}

impl StoreRecords<'_> {
    fn warn(&self, w: String) {
        tracing::warn!("{w}");
        self.warnings.lock().unwrap_or_else(|e| e.into_inner()).push(w);
    }

    /// Reads, changes and writes the rollout record of `env`, if it is this rollout's (the
    /// same desired state).
    fn update(&self, env: &str, f: impl FnOnce(&mut RolloutRecord)) {
        let identity = self.identities.get(env).map(String::as_str);
        let record = match self.store.rollout(env) {
            Ok(Some(r)) if identity.is_some() && r.identity() == identity => r,
            Ok(_) => return,
            Err(e) => return self.warn(format!("cannot read the rollout record of {env}: {e}")),
        };
        let mut record = record;
        f(&mut record);
        if let Err(e) = self.store.save_rollout(env, &record) {
            self.warn(format!("cannot record the progress of the rollout in {env}: {e}"));
        }
    }
}

impl Records for StoreRecords<'_> {
    fn lease_lost(&self) -> Option<String> {
        self.store.lease_lost()
    }

    fn paused(&self, env: &str) -> Option<String> {
        match self.store.pauses() {
            Ok(p) => crate::store::Pause::holding(&p, env).map(crate::store::Pause::describe),
            // Unreadable pause records hold everything: a pause must never be missed.
            Err(e) => Some(format!("the pause records cannot be read ({e})")),
        }
    }
    fn promotion_waits(&self, env: &str, jobs: &[HostJob]) -> Vec<Option<String>> {
        if !self.fleet.promotion.iter().any(|e| e.as_str() == env) {
            return vec![None; jobs.len()];
        }
        let records = match self.store.promotions() {
            Ok(r) => r,
            Err(e) => {
                let why = format!("cannot read promotion records: {e}");
                return vec![Some(why); jobs.len()];
            }
        };
        // Versions active anywhere in the environment before this run are not gated.
        let active: BTreeSet<(String, String)> = self
            .observed
            .values()
            .filter(|(d, _)| d.environment.as_str() == env)
            .flat_map(|(_, o)| {
                o.runtimes
                    .iter()
                    .filter_map(|(rt, r)| Some((rt.clone(), r.current.clone()?)))
            })
            .collect();
        let now = self.clock.now();
        jobs.iter()
            .map(|job| {
                crate::plan::promotion::waits(
                    self.fleet,
                    self.desired,
                    env,
                    &job.changes,
                    &active,
                    &records,
                    now,
                )
            })
            .collect()
    }

    fn host_changed(&self, env: &str, t: &Touched) {
        // The run saved (or resumed) this rollout's record before its first host started, so
        // the host is appended without reading the record back: one small write per host.
        if !self.identities.contains_key(env) {
            return;
        }
        let host = ChangedHost {
            host: t.desired.name.to_string(),
            wave: t.wave,
            txn: t.txn.clone(),
        };
        if let Err(e) = self.store.rollout_host_changed(env, &host) {
            self.warn(format!(
                "cannot record that {} changed in the rollout of {env}: {e}",
                host.host
            ));
        }
    }

    fn wave_done(&self, env: &str, waves_done: usize, bake_until: Option<Timestamp>) {
        self.update(env, |r| {
            r.waves_done = r.waves_done.max(waves_done);
            r.bake_deadline = bake_until;
        });
    }

    fn finished(&self, env: &str, end: &EnvEnd<'_>) {
        let done = |h: &String| {
            end.results.iter().any(|r| r.host == *h && r.applied())
                || (!self.left_out.contains(h)
                    && self
                        .plan
                        .hosts
                        .iter()
                        .any(|p| p.name == *h && p.changes.is_empty() && p.error.is_none()))
        };
        let now = self.clock.now();
        self.update(env, |r| {
            r.waves_done = r.waves.iter().take_while(|w| w.iter().all(done)).count();
            if end.completed {
                // A bake interrupted by a stop is waited out (and re-checked) on resume.
                r.bake_deadline = None;
            }
            if let Some(h) = end.halt {
                r.halted = Some(h.reason.clone());
                r.halted_wave = Some(h.wave);
                r.halted_at = Some(now);
            }
            if end.completed {
                // Rolled back or pruned: nothing left for a later run to re-check.
                r.changed.clear();
                r.ended_at.get_or_insert(now);
            }
        });
        // Only a completed rollout promotes: not a halted one, not one interrupted during a
        // bake whose re-check has not run.
        if end.completed {
            self.record_promotions(env, end);
        }
    }
}

impl StoreRecords<'_> {
    /// An environment whose hosts that want runtime R all have version V now, healthy,
    /// promotes (R, V). Only a run that saw every host of the environment can say so.
    fn record_promotions(&self, env: &str, end: &EnvEnd<'_>) {
        let hosts: Vec<&DesiredHost> = self
            .desired
            .iter()
            .filter(|h| h.environment.as_str() == env)
            .collect();
        if hosts.is_empty()
            || hosts.iter().any(|h| {
                !self.observed.contains_key(h.name.as_str()) || self.left_out.contains(h.name.as_str())
            })
        {
            return;
        }
        let mut converged: BTreeMap<(String, String), bool> = BTreeMap::new();
        for h in hosts {
            let planned = self.plan.hosts.iter().find(|p| p.name == h.name.as_str());
            for (rt, pin) in &h.runtimes {
                let Pin::Version(v) = &pin.value else {
                    continue;
                };
                let pending = planned.is_some_and(|p| {
                    p.changes
                        .iter()
                        .any(|c| c.kind == Kind::Runtime && c.name == rt.as_str())
                });
                let ok = !pending
                    || end
                        .results
                        .iter()
                        .any(|r| r.host == h.name.as_str() && r.applied());
                *converged.entry((rt.to_string(), v.to_string())).or_insert(true) &= ok;
            }
        }
        let records = self.store.promotions().unwrap_or_default();
        for ((runtime, version), ok) in converged {
            let known = records
                .iter()
                .any(|r| r.environment == env && r.runtime == runtime && r.version == version);
            if ok && !known {
                let record = PromotionRecord {
                    environment: env.to_owned(),
                    runtime,
                    version,
                    at: self.clock.now(),
                };
                if let Err(e) = self.store.record_promotion(&record) {
                    self.warn(format!("cannot record the promotion of {env}: {e}"));
                }
            }
        }
    }
}
