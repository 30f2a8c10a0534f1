//! The check `validate` and `plan` run on every artifact stored in the repository (DESIGN
//! §3): sha256, signature by a trusted key, tarball inspection — reusing what the cache
//! already verified, so an unchanged artifact costs a `stat`.

use std::path::PathBuf;

use super::{ArtifactCache, ArtifactError, ArtifactRequest, DEFAULT_MAX_UNPACKED, RepoReader, TrustPolicy};
use crate::manifest::Fleet;
use crate::manifest::model::ArtifactRef;

/// Checks every repository artifact of `fleet`; returns every failure (each names runtime,
/// version and why). `cache` is the store's artifact cache; without one the check runs in a
/// temporary cache and nothing is remembered. Blocking: file I/O and hashing.
pub fn check_repository(
    fleet: &Fleet,
    repo: &dyn RepoReader,
    trust: &TrustPolicy,
    cache: Option<PathBuf>,
) -> Vec<ArtifactError> {
    let wanted: Vec<_> = fleet
        .runtimes
        .iter()
        .flat_map(|(name, rt)| rt.versions.iter().map(move |(v, version)| (name, v, version)))
        .filter(|(_, _, version)| matches!(version.artifact, ArtifactRef::Repo(_)))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
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
                return vec![ArtifactError::Cache {
                    at: Box::new(super::Origin {
                        runtime: String::new(),
                        version: String::new(),
                        location: "a temporary directory".into(),
                    }),
                    path: std::env::temp_dir(),
                    source: e,
                }];
            }
        },
    };
    let cache = ArtifactCache::new(dir);
    let mut errors = Vec::new();
    for (name, v, version) in wanted {
        let request = ArtifactRequest {
            runtime: name.as_str(),
            version: v.as_str(),
            artifact: &version.artifact,
            signature: &version.signature,
            sha256: &version.sha256,
        };
        if let Err(e) = cache.prepare(&request, repo, trust, DEFAULT_MAX_UNPACKED) {
            errors.push(e);
        }
    }
    errors
}
