//! Every artifact a run needs, fetched and checked before any host is touched (DESIGN §3).

use std::collections::{BTreeMap, BTreeSet};

use super::Request;
use super::prepare::Planned;
use super::run::blocking;
use crate::artifact::{ArtifactCache, ArtifactFailure, ArtifactRequest, ArtifactSize, DEFAULT_MAX_UNPACKED};
use crate::observe::{Observation, ObserveError};
use crate::plan::room::ArtifactSizes;
use crate::plan::{Action as ChangeAction, Kind, Plan};
use crate::resolve::DesiredHost;
use crate::store::Store;
use crate::transaction::Upload;

/// The (runtime, version) artifacts the plan's hosts need: each version a host installs that
/// it does not have unpacked, and every version an interrupted host wants (it is restored
/// first, which may remove what its killed transaction unpacked). Refused hosts need none.
pub fn needed_artifacts(
    plan: &Plan,
    targets: &[&DesiredHost],
    observations: &[Result<Observation, ObserveError>],
) -> BTreeSet<(String, String)> {
    let observed: BTreeMap<&str, &Observation> = targets
        .iter()
        .zip(observations)
        .filter_map(|(d, o)| Some((d.name.as_str(), o.as_ref().ok()?)))
        .collect();
    let refused: BTreeSet<&str> = plan
        .hosts
        .iter()
        .filter(|h| h.refused.is_some())
        .map(|h| h.name.as_str())
        .collect();
    let mut needed = BTreeSet::new();
    for h in plan.hosts.iter().filter(|h| h.refused.is_none()) {
        let Some(o) = observed.get(h.name.as_str()) else {
            continue;
        };
        for c in &h.changes {
            if let (Kind::Runtime, ChangeAction::Create | ChangeAction::Update, Some(v)) =
                (c.kind, c.action, &c.after)
                && !o.runtimes.get(&c.name).is_some_and(|r| r.versions.contains(v))
            {
                needed.insert((c.name.clone(), v.clone()));
            }
        }
    }
    for (d, o) in targets.iter().zip(observations) {
        if refused.contains(d.name.as_str()) || !o.as_ref().is_ok_and(Observation::interrupted) {
            continue;
        }
        for (rt, pin) in &d.runtimes {
            if let crate::manifest::model::Pin::Version(v) = &pin.value {
                needed.insert((rt.to_string(), v.to_string()));
            }
        }
    }
    needed
}

/// The request for artifact (runtime, version), if the manifests declare it.
fn request<'f>(fleet: &'f crate::manifest::Fleet, rt: &'f str, v: &'f str) -> Option<ArtifactRequest<'f>> {
    let version = fleet.runtimes.get(rt)?.versions.get(v)?;
    Some(ArtifactRequest {
        runtime: rt,
        version: v,
        artifact: &version.artifact,
        signature: &version.signature,
        sha256: &version.sha256,
    })
}

/// Checks the URL artifacts among `needed` that `cache` already holds, without the network
/// (DESIGN §3: `plan` and `preview` do; `apply` fetches and checks them all again before any
/// host). Returns the sizes of those that passed and every failure. Blocking.
pub fn check_cached_urls(
    req: &Request<'_>,
    needed: &BTreeSet<(String, String)>,
    cache: &ArtifactCache,
) -> (ArtifactSizes, Vec<ArtifactFailure>) {
    let (mut sizes, mut errors) = (ArtifactSizes::new(), Vec::new());
    for (rt, v) in needed {
        let Some(request) = request(&req.fleet.fleet, rt, v) else {
            continue;
        };
        match cache.check_cached(&request, req.repo, req.trust, DEFAULT_MAX_UNPACKED) {
            Some(Ok(p)) => {
                sizes.insert((rt.clone(), v.clone()), ArtifactSize::of(&p));
            }
            Some(Err(e)) => errors.push(ArtifactFailure::from(e)),
            None => {}
        }
    }
    (sizes, errors)
}

/// Fetches and checks every artifact the planned hosts need; returns the verified uploads,
/// their sizes and, separately, every failure (each names runtime, version and why).
pub(super) fn prepare_artifacts(
    req: &Request<'_>,
    planned: &Planned<'_>,
    store: &dyn Store,
) -> (
    BTreeMap<(String, String), Upload>,
    ArtifactSizes,
    Vec<ArtifactFailure>,
) {
    let needed = needed_artifacts(&planned.plan, &planned.targets, &planned.observations);
    let cache = ArtifactCache::new(store.artifact_cache_dir());
    let (mut ok, mut sizes, mut errors) = (BTreeMap::new(), ArtifactSizes::new(), Vec::new());
    for (rt, v) in needed {
        let Some(request) = request(&req.fleet.fleet, &rt, &v) else {
            continue;
        };
        match blocking(|| cache.prepare(&request, req.repo, req.trust, DEFAULT_MAX_UNPACKED)) {
            Ok(p) => {
                sizes.insert((rt.clone(), v.clone()), ArtifactSize::of(&p));
                ok.insert(
                    (rt.clone(), v.clone()),
                    Upload {
                        sha256: p.sha256,
                        local_path: p.path,
                    },
                );
            }
            Err(e) => errors.push(ArtifactFailure::from(e)),
        }
    }
    (ok, sizes, errors)
}
