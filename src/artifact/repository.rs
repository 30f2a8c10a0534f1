//! The check `validate`, `plan` and `preview` run on every artifact stored in the repository
//! (DESIGN §3): sha256, signature by a trusted key, tarball inspection — reusing what the
//! cache already verified, so an unchanged artifact costs a `stat`. Nothing but the
//! repository and the cache is read: no URL is opened, `file://` included.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{
    ArtifactCache, ArtifactError, ArtifactRequest, ArtifactSize, DEFAULT_MAX_UNPACKED, RepoReader,
    TrustPolicy,
};
use crate::manifest::Fleet;
use crate::manifest::model::ArtifactRef;

/// What checking the repository's artifacts found.
#[derive(Debug, Default)]
pub struct RepositoryCheck {
    /// Every failure (each names runtime, version and why).
    pub errors: Vec<ArtifactError>,
    /// (runtime, version) → sizes, for every artifact that passed: the plan warns about hosts
    /// without room for them.
    pub sizes: BTreeMap<(String, String), ArtifactSize>,
    /// (runtime, version) of repository artifacts whose signature is a URL that `apply` has
    /// not fetched yet: not checked here (no URL is opened), `apply` checks them.
    pub unchecked: Vec<(String, String)>,
}

/// Checks every repository artifact of `fleet`. `cache` is the store's artifact cache; without
/// one the check runs in a temporary cache and nothing is remembered. Blocking: file I/O and
/// hashing.
pub fn check_repository(
    fleet: &Fleet,
    repo: &dyn RepoReader,
    trust: &TrustPolicy,
    cache: Option<PathBuf>,
) -> RepositoryCheck {
    let wanted: Vec<_> = fleet
        .runtimes
        .iter()
        .flat_map(|(name, rt)| rt.versions.iter().map(move |(v, version)| (name, v, version)))
        .filter(|(_, _, version)| matches!(version.artifact, ArtifactRef::Repo(_)))
        .collect();
    let mut out = RepositoryCheck::default();
    if wanted.is_empty() {
        return out;
    }
    // A temporary cache when there is no store: every artifact is read and checked in full.
    let scratch;
    let dir = match cache {
        Some(d) => d,
        None => match tempfile::tempdir() {
            Ok(t) => {
                scratch = t;
                scratch.path().to_owned()
            }
            Err(e) => {
                out.errors.push(ArtifactError::Cache {
                    at: Box::new(super::Origin {
                        runtime: String::new(),
                        version: String::new(),
                        location: "a temporary directory".into(),
                    }),
                    path: std::env::temp_dir(),
                    source: e,
                });
                return out;
            }
        },
    };
    let cache = ArtifactCache::new(dir);
    for (name, v, version) in wanted {
        let request = ArtifactRequest {
            runtime: name.as_str(),
            version: v.as_str(),
            artifact: &version.artifact,
            signature: &version.signature,
            sha256: &version.sha256,
        };
        // Offline: a URL signature is only checked from the copy `apply` saved; without one
        // the artifact is left to `apply` (a manifest must not make `validate` read the
        // controller's files or reach the network).
        match cache.check_offline(&request, repo, trust, DEFAULT_MAX_UNPACKED) {
            Some(Ok(p)) => {
                out.sizes
                    .insert((name.to_string(), v.to_string()), ArtifactSize::of(&p));
            }
            Some(Err(e)) => out.errors.push(e),
            None => out.unchecked.push((name.to_string(), v.to_string())),
        }
    }
    out
}
