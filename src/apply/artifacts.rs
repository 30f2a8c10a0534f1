//! Every artifact a run needs, fetched and checked before any host is touched (DESIGN §3).

use std::collections::{BTreeMap, BTreeSet};

use super::Request;
use super::prepare::Planned;
use super::run::blocking;
use crate::artifact::{ArtifactCache, ArtifactRequest, ArtifactSize, DEFAULT_MAX_UNPACKED};
use crate::observe::Observation;
use crate::plan::room::ArtifactSizes;
use crate::plan::{Action as ChangeAction, Kind};
use crate::store::Store;
use crate::transaction::Upload;

/// Fetches and checks every artifact the planned hosts need; returns the verified uploads,
/// their sizes and, separately, every failure (each names runtime, version and why).
pub(super) fn prepare_artifacts(
    req: &Request<'_>,
    planned: &Planned<'_>,
    store: &dyn Store,
) -> (BTreeMap<(String, String), Upload>, ArtifactSizes, Vec<String>) {
    let observed: BTreeMap<&str, &Observation> = planned
        .targets
        .iter()
        .zip(&planned.observations)
        .filter_map(|(d, o)| Some((d.name.as_str(), o.as_ref().ok()?)))
        .collect();
    let mut needed: BTreeSet<(String, String)> = BTreeSet::new();
    for h in planned
        .plan
        .hosts
        .iter()
        .filter(|h| !planned.refused.contains_key(&h.name))
    {
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
    // An interrupted host is restored first, which may remove what its killed transaction
    // unpacked: it may need any version it wants, and that is checked before any host too.
    for (d, o) in planned.targets.iter().zip(&planned.observations) {
        if planned.refused.contains_key(d.name.as_str()) || !o.as_ref().is_ok_and(Observation::interrupted) {
            continue;
        }
        for (rt, pin) in &d.runtimes {
            if let crate::manifest::model::Pin::Version(v) = &pin.value {
                needed.insert((rt.to_string(), v.to_string()));
            }
        }
    }
    let cache = ArtifactCache::new(store.artifact_cache_dir());
    let (mut ok, mut sizes, mut errors) = (BTreeMap::new(), ArtifactSizes::new(), Vec::new());
    for (rt, v) in needed {
        let Some(version) = req
            .fleet
            .fleet
            .runtimes
            .get(rt.as_str())
            .and_then(|r| r.versions.get(v.as_str()))
        else {
            continue;
        };
        let request = ArtifactRequest {
            runtime: &rt,
            version: &v,
            artifact: &version.artifact,
            signature: &version.signature,
            sha256: &version.sha256,
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
            Err(e) => errors.push(e.to_string()),
        }
    }
    (ok, sizes, errors)
}
