//! `Plan()`: observe the targeted hosts and plan them, with what the store knows (promotion
//! records, halted rollouts, hosts no longer managed) and which hosts this store may not touch.
//! Reads the store, never writes it; touches no host beyond the read-only probe.

use std::collections::BTreeMap;

use super::{EngineError, Request, Scope};
use crate::artifact::{ArtifactFailure, RepositoryCheck};
use crate::observe::{Observation, ObserveError, observe_all};
use crate::plan::room::{self, ArtifactSizes};
use crate::plan::{self, HostInput, Plan, PlanInput, SavedPlan};
use crate::resolve::DesiredHost;
use crate::store::{DigestKey, RolloutRecord};

/// A plan, and what `apply` needs to carry it out.
pub struct Planned<'a> {
    /// The plan of the hosts as they are now.
    pub plan: Plan,
    /// The hosts observed, in the order of `observations`.
    pub targets: Vec<&'a DesiredHost>,
    pub observations: Vec<Result<Observation, ObserveError>>,
    /// Hosts this store may not change, and why (DESIGN §4, §7).
    pub refused: BTreeMap<String, String>,
    /// With a saved plan: hosts that changed since it was saved, and how.
    pub stale: BTreeMap<String, String>,
    /// Each environment's last rollout record, as read when planning.
    pub rollouts: BTreeMap<String, RolloutRecord>,
    /// The saved plan this run carries out, if any.
    pub saved: Option<&'a SavedPlan>,
    /// Repository artifacts that failed their checks (each names runtime, version and why):
    /// `plan` reports them and exits 1, `apply` refuses the whole run.
    pub artifact_errors: Vec<ArtifactFailure>,
    /// URL artifacts the plan needs that the store's cache holds and that failed their
    /// checks there (DESIGN §3): `plan` reports them and exits 1; `apply` fetches and checks
    /// every URL artifact again (with a fresh signature) before any host, and refuses then.
    pub cached_artifact_errors: Vec<ArtifactFailure>,
    /// Failures found with a saved copy of a URL signature (`provisional`): the URL may
    /// serve a newer one, so `plan` only warns; `apply` fetches it again and decides.
    pub artifact_warnings: Vec<ArtifactFailure>,
}

impl Planned<'_> {
    /// The plan to show before confirming: the saved one when applying a saved plan (the
    /// person approved that one), the fresh one otherwise.
    pub fn shown(&self) -> &Plan {
        self.saved.map_or(&self.plan, |s| &s.plan)
    }

    /// Whether `apply` has anything to do or report: changes, hosts an interrupted
    /// transaction left `pending` (to restore), or hosts that will be reported stale.
    pub fn has_work(&self) -> bool {
        let interrupted = self.targets.iter().zip(&self.observations).any(|(d, o)| {
            !self.refused.contains_key(d.name.as_str()) && o.as_ref().is_ok_and(Observation::interrupted)
        });
        self.plan.has_changes() || !self.stale.is_empty() || interrupted
    }
}

/// Observes the request's hosts and plans them.
pub async fn prepare<'a>(req: &Request<'a>) -> Result<Planned<'a>, EngineError> {
    let (targets, saved): (Vec<&'a DesiredHost>, _) = match req.scope {
        Scope::Hosts(h) => (h.to_vec(), None),
        Scope::Saved(s) => {
            if s.plan.fleet != req.fleet.fleet.name.as_str() {
                return Err(EngineError::OtherFleet {
                    saved: s.plan.fleet.clone(),
                    found: req.fleet.fleet.name.to_string(),
                });
            }
            // A saved plan names its hosts: those it would change.
            let hosts = req
                .fleet
                .desired
                .iter()
                .filter(|h| {
                    s.plan
                        .hosts
                        .iter()
                        .any(|p| p.name == h.name.as_str() && !p.changes.is_empty())
                })
                .collect();
            (hosts, Some(s))
        }
    };
    let store = req.store;
    let (promotions, rollouts) = records(req)?;
    let observed_at = req.clock.now();
    let store_id = store.map(|s| s.id().to_owned());
    let cache = req
        .artifact_cache
        .clone()
        .or_else(|| store.map(|s| s.artifact_cache_dir()));
    let (observations, checked) = observe_and_check(req, &targets, store_id.as_deref(), cache.clone()).await;
    // A failure found with a saved URL signature is only a warning (`artifact_warnings`).
    let (provisional, artifact_errors): (Vec<ArtifactFailure>, Vec<ArtifactFailure>) = checked
        .errors
        .iter()
        .map(ArtifactFailure::from)
        .partition(|f| f.provisional);
    let mut sizes = checked.sizes;
    let refused = refusals(req, &targets, &observations, store_id.as_deref());
    let mut plan = build_plan(
        req,
        (&targets, &observations),
        &refused,
        &rollouts,
        &promotions,
        observed_at,
        &ArtifactSizes::default(),
    );
    plan.no_longer_managed = no_longer_managed(req)?;
    let needed = super::artifacts::needed_artifacts(&plan, &targets, &observations);
    let (mut artifact_warnings, mut cached_artifact_errors) = (provisional, Vec::new());
    if let Some(dir) = cache {
        let cache = crate::artifact::ArtifactCache::new(dir);
        let (more, failures) =
            super::run::blocking(|| super::artifacts::check_cached_urls(req, &needed, &cache));
        sizes.extend(more);
        let (warnings, errors): (Vec<_>, Vec<_>) = failures.into_iter().partition(|f| f.provisional);
        artifact_warnings.extend(warnings);
        cached_artifact_errors = errors;
    }
    warn_without_room(&mut plan, &targets, &observations, &sizes);
    let stale = saved.map(|s| stale_hosts(s, &plan)).unwrap_or_default();
    Ok(Planned {
        plan,
        targets,
        observations,
        refused,
        stale,
        rollouts,
        saved,
        artifact_errors,
        cached_artifact_errors,
        artifact_warnings,
    })
}

/// Plans hosts observed by the caller, as [`prepare`] would plan them (the store's promotion
/// records, halts and pauses, hosts it may not change), without checking artifacts: `preview`
/// observes hosts with the connection settings of another revision (`--against fleet`), or
/// assumes what they have (`--against manifests`). Reads the store, never writes it.
pub fn plan_observed(
    req: &Request<'_>,
    targets: &[&DesiredHost],
    observations: &[Result<Observation, ObserveError>],
) -> Result<Plan, EngineError> {
    let (promotions, rollouts) = records(req)?;
    let store_id = req.store.map(|s| s.id().to_owned());
    let refused = refusals(req, targets, observations, store_id.as_deref());
    let mut plan = build_plan(
        req,
        (targets, observations),
        &refused,
        &rollouts,
        &promotions,
        req.clock.now(),
        &ArtifactSizes::default(),
    );
    plan.no_longer_managed = no_longer_managed(req)?;
    Ok(plan)
}

/// The store's promotion records and each environment's last rollout (none without a store).
pub fn records(
    req: &Request<'_>,
) -> Result<
    (
        Vec<crate::store::PromotionRecord>,
        BTreeMap<String, RolloutRecord>,
    ),
    EngineError,
> {
    let Some(s) = req.store else {
        return Ok((Vec::new(), BTreeMap::new()));
    };
    let mut rollouts = BTreeMap::new();
    for env in req.fleet.fleet.environments.keys() {
        if let Some(r) = s.rollout(env.as_str())? {
            rollouts.insert(env.to_string(), r);
        }
    }
    Ok((s.promotions()?, rollouts))
}

/// Hosts the store has seen that the manifests no longer name.
fn no_longer_managed(req: &Request<'_>) -> Result<Vec<String>, EngineError> {
    Ok(match req.store {
        Some(s) => s
            .known_hosts()?
            .into_iter()
            .filter(|h| req.fleet.fleet.host(h).is_none())
            .collect(),
        None => Vec::new(),
    })
}

/// The observed hosts this store may not change, and why.
fn refusals(
    req: &Request<'_>,
    targets: &[&DesiredHost],
    observations: &[Result<Observation, ObserveError>],
    store_id: Option<&str>,
) -> BTreeMap<String, String> {
    let take_over = req.overrides.take_over.is_some();
    let mut refused = BTreeMap::new();
    for (d, o) in targets.iter().zip(observations) {
        if let Ok(o) = o
            && let Some(why) = refusal(d, o, req.fleet.fleet.name.as_str(), store_id, None, take_over)
        {
            refused.insert(d.name.to_string(), why);
        }
    }
    refused
}

/// Which hosts' probes report free space: those with runtimes, and all of an environment
/// that limits disk usage (see [`crate::observe::wants_room`]).
pub(super) fn room_rule(fleet: &crate::manifest::model::Fleet) -> impl Fn(&DesiredHost) -> bool + Sync + '_ {
    move |h| {
        let disk_limit = fleet
            .environments
            .get(&h.environment)
            .is_some_and(|e| e.rollout.host_limits.disk.is_some());
        crate::observe::wants_room(h, disk_limit)
    }
}

/// Observes the hosts and, at the same time, checks every repository artifact (DESIGN §3):
/// the check is CPU and disk on the controller while observing waits on hosts, so neither
/// waits for the other. The check also gives the sizes of the artifacts that passed. The check runs on this thread (the repository handle cannot cross
/// threads); the observation is driven from a scoped thread. On a current-thread runtime
/// (tests) they run one after the other.
async fn observe_and_check(
    req: &Request<'_>,
    targets: &[&DesiredHost],
    store_id: Option<&str>,
    cache: Option<std::path::PathBuf>,
) -> (Vec<Result<Observation, ObserveError>>, RepositoryCheck) {
    let check = || crate::artifact::check_repository(&req.fleet.fleet, req.repo, req.trust, cache.clone());
    let (fleet_dir, pool, parallel) = (req.repo.fleet_dir(), &req.pool, req.parallel);
    let room = room_rule(&req.fleet.fleet);
    let room = &room;
    let memo = req.memo.as_ref();
    let observe = move || observe_all(targets, fleet_dir, pool, parallel, store_id, room, memo);
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        let observations = observe().await;
        return (observations, check());
    }
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let observing = s.spawn(|| handle.block_on(observe()));
            let errors = check();
            let observations = observing.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (observations, errors)
        })
    })
}

/// The pure part: desired × observed → plan, with the hosts this store may not change, the
/// rollouts halted at this revision, and a warning for each host without room for the
/// artifacts of known `sizes` it installs.
#[allow(clippy::too_many_arguments)]
pub(super) fn build_plan(
    req: &Request<'_>,
    planned: (&[&DesiredHost], &[Result<Observation, ObserveError>]),
    refused: &BTreeMap<String, String>,
    rollouts: &BTreeMap<String, RolloutRecord>,
    promotions: &[crate::store::PromotionRecord],
    observed_at: jiff::Timestamp,
    sizes: &ArtifactSizes,
) -> Plan {
    let (targets, observations) = planned;
    let revision = req.repo.revision().map(str::to_owned);
    let hosts = targets
        .iter()
        .zip(observations)
        .map(|(d, o)| HostInput {
            desired: d,
            observed: o.as_ref().map_err(ToString::to_string),
            refused: refused.get(d.name.as_str()).cloned(),
            take_over: req.overrides.take_over.is_some(),
        })
        .collect();
    // Halts hold for the desired state they were rolling out to (DESIGN §6.3); a retry lifts
    // them.
    let halts: BTreeMap<String, plan::Halt> = rollouts
        .iter()
        .filter(|(env, r)| {
            req.overrides.retry.is_none()
                && r.identity()
                    == Some(super::run::desired_digest(&req.fleet.fleet, &req.fleet.desired, env).as_str())
        })
        .filter_map(|(env, r)| {
            Some((
                env.clone(),
                plan::Halt {
                    wave: r.halted_wave.unwrap_or(0),
                    reason: r.halted.clone()?,
                    at: r.halted_at.unwrap_or(r.started_at),
                },
            ))
        })
        .collect();
    let mut plan = plan::build(&PlanInput {
        fleet: &req.fleet.fleet,
        revision,
        hosts,
        at: req.at.unwrap_or(observed_at),
        observed_at,
        all_desired: &req.fleet.desired,
        promotions,
        halts: &halts,
    });
    let key = match req.store {
        Some(s) => s.digest_key().unwrap_or_else(|e| {
            tracing::warn!(
                "{e}; digests of sensitive files in this plan are keyed for this run only (a saved plan of it will be stale)"
            );
            DigestKey::process().clone()
        }),
        None => DigestKey::process().clone(),
    };
    key_sensitive_digests(&mut plan, targets, &key);
    // Room warnings need the artifacts' sizes: `prepare` adds them once it knows them all.
    warn_without_room(&mut plan, targets, observations, sizes);
    warn_busy(&mut plan, &req.fleet.fleet, targets, observations);
    plan.override_schedule(req.overrides.windows.as_deref(), req.overrides.freeze.as_deref());
    if let Some(store) = req.store {
        match store.pauses() {
            Ok(pauses) => plan
                .pause(|env| crate::store::Pause::holding(&pauses, env).map(crate::store::Pause::describe)),
            Err(e) => plan.pause(|_| Some(format!("the pause records cannot be read ({e})"))),
        }
    }
    plan
}

/// Warns about each host that lacks room for what it installs (DESIGN §6.1); apply refuses
/// such a host before uploading.
fn warn_without_room(
    plan: &mut Plan,
    targets: &[&DesiredHost],
    observations: &[Result<Observation, ObserveError>],
    sizes: &ArtifactSizes,
) {
    if sizes.is_empty() {
        return;
    }
    let by_name: std::collections::HashMap<&str, (&DesiredHost, &Observation)> = targets
        .iter()
        .zip(observations)
        .filter_map(|(d, o)| Some((d.name.as_str(), (*d, o.as_ref().ok()?))))
        .collect();
    for host in plan.hosts.iter_mut().filter(|h| h.refused.is_none()) {
        if let Some((d, o)) = by_name.get(host.name.as_str())
            && let Some(why) = room::shortfall(d, o, &host.changes, sizes)
        {
            host.warnings.push(why);
        }
    }
}

/// Says which hosts with changes are over their environment's `host_limits` (DESIGN §6.4):
/// apply starts them after the rest of their wave, if they are no longer busy by then.
fn warn_busy(
    plan: &mut Plan,
    fleet: &crate::manifest::model::Fleet,
    targets: &[&DesiredHost],
    observations: &[Result<Observation, ObserveError>],
) {
    for (d, o) in targets.iter().zip(observations) {
        let Ok(o) = o else { continue };
        let Some(env) = fleet.environments.get(d.environment.as_str()) else {
            continue;
        };
        let disk = o.free_space.and_then(|f| f.runtimes_used_percent);
        let Some(why) = crate::rollout::policy::busy(&env.rollout.host_limits, o.usage, disk) else {
            continue;
        };
        if let Some(host) = plan
            .hosts
            .iter_mut()
            .find(|h| h.name == d.name.as_str() && !h.changes.is_empty() && h.refused.is_none())
        {
            host.warnings.push(format!(
                "{why}: it waits while the rest of its wave goes, and starts then if no longer busy"
            ));
            host.busy = Some(why);
        }
    }
}

/// Replaces the sha256 in `before`/`after` of `sensitive` files with the store's keyed digest
/// (DESIGN §9): a plan is shown, saved and audited, and a plain sha256 would let its readers
/// confirm a guess of the secret. A file leaving the manifests is keyed too, since whether
/// it was sensitive is no longer known. The transaction checks the host against the real
/// sha256, which it takes from the observation, not from these fields.
fn key_sensitive_digests(plan: &mut Plan, targets: &[&DesiredHost], key: &DigestKey) {
    let by_name: std::collections::HashMap<&str, &DesiredHost> =
        targets.iter().map(|d| (d.name.as_str(), *d)).collect();
    for host in &mut plan.hosts {
        let Some(d) = by_name.get(host.name.as_str()) else {
            continue;
        };
        for c in host.changes.iter_mut().filter(|c| c.kind == plan::Kind::File) {
            let sensitive = crate::manifest::model::HostPath::new(&c.name)
                .ok()
                .and_then(|p| d.files.get(&p))
                .is_none_or(|f| f.value.sensitive);
            if sensitive {
                for digest in [&mut c.before, &mut c.after].into_iter().flatten() {
                    *digest = key.keyed(digest);
                }
            }
        }
    }
}

/// With a saved plan, a host changes only if it is exactly as it was planned: hosts whose
/// observation changed since are stale, even when they now need nothing.
fn stale_hosts(saved: &SavedPlan, now: &Plan) -> BTreeMap<String, String> {
    let mut stale = BTreeMap::new();
    for old in saved.plan.hosts.iter().filter(|h| !h.changes.is_empty()) {
        let Some(h) = now.hosts.iter().find(|h| h.name == old.name) else {
            continue;
        };
        let why = if h.error.is_some() {
            continue;
        } else if old.fingerprint != h.fingerprint {
            "the host changed since the plan was saved"
        } else if saved.digests.get(&h.name) != Some(&crate::transaction::change_digest(&h.changes)) {
            "its changes are no longer the ones the plan saved"
        } else {
            continue;
        };
        stale.insert(h.name.clone(), why.to_owned());
    }
    stale
}

/// Why this store may not change the host (DESIGN §4, §7), or `None`. `epoch` is the running
/// apply's (a plan has none yet).
pub(super) fn refusal(
    d: &DesiredHost,
    o: &Observation,
    fleet: &str,
    store_id: Option<&str>,
    epoch: Option<u64>,
    take_over: bool,
) -> Option<String> {
    use crate::text::sanitize;
    if let Some(e) = &o.state_error
        && !take_over
    {
        return Some(format!(
            "{}; run `flotilla apply --take-over REASON` to start this host over",
            sanitize(e)
        ));
    }
    let s = o.state.as_ref()?;
    if s.fleet != fleet || s.host != d.name.as_str() {
        return Some(format!(
            "state.json names fleet {:?} and host {:?}: this host belongs to another fleet or name; fix the manifests or clear the host",
            sanitize(&s.fleet),
            sanitize(&s.host)
        ));
    }
    let store_id = store_id?;
    if s.store_id != store_id && !take_over {
        return Some(format!(
            "last written by another store ({}); run `flotilla apply --take-over REASON` if this store should own it",
            sanitize(&s.store_id)
        ));
    }
    let pending_epoch = s
        .pending
        .as_ref()
        .and_then(|p| p.get("epoch"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if let Some(epoch) = epoch
        && s.store_id == store_id
        && s.epoch.max(pending_epoch) > epoch
    {
        return Some(format!(
            "written by a newer apply of this store (epoch {} > {epoch}); left untouched",
            s.epoch.max(pending_epoch)
        ));
    }
    None
}
