//! `flotilla release`, and the artifact checks `validate` runs on the repository's artifacts.

use super::Outcome;
use super::args::ReleaseArgs;
use super::output::{errln, outln};
use crate::artifact::{ArtifactCache, ArtifactRequest, DEFAULT_MAX_UNPACKED, TrustPolicy};
use crate::load::LoadedFleet;
use crate::manifest::model::ArtifactRef;
use crate::release::{ReleaseRequest, SigningKey};
use crate::repo::FleetRepo;

pub fn release(args: &ReleaseArgs) -> anyhow::Result<Outcome> {
    let key = args
        .sign
        .as_deref()
        .map(|p| SigningKey::load(p, None))
        .transpose()?;
    let done = crate::release::release(&ReleaseRequest {
        fleet_dir: &args.fleet_dir,
        runtime: &args.runtime,
        version: &args.version,
        file: &args.file,
        url: args.url.as_deref(),
        key: key.as_ref(),
    })?;
    for w in &done.warnings {
        errln!("warning: {w}");
    }
    outln!(
        "Released {} {}: {}:{} (sha256 {})",
        args.runtime,
        args.version,
        done.manifest,
        done.line,
        done.sha256
    )?;
    outln!("  artifact:  {}", done.artifact)?;
    match &done.signature {
        Some(s) => outln!("  signature: {s}")?,
        None => outln!("  signature: none")?,
    }
    outln!(
        "\nNext: pin it in an environment (`{} = \"{}\"` under [runtimes]), then `flotilla validate`, `flotilla plan`, and commit.",
        args.runtime,
        args.version
    )?;
    Ok(Outcome::Success)
}

/// Checks every artifact stored in the repository as `apply` would (sha256, signature by a
/// trusted key, tarball inspection; DESIGN §3), returning one message per failure. URL
/// artifacts are not fetched: `validate` stays off the network.
///
/// The copies go to a temporary cache, never the store's: a cached copy is reused by digest,
/// which would hide a tampered file in the repository.
pub(super) fn check_repo_artifacts(repo: &FleetRepo, loaded: &LoadedFleet) -> anyhow::Result<Vec<String>> {
    let trust = TrustPolicy::new(
        &loaded.fleet.trust.keys,
        loaded.fleet.trust.require_signatures,
        None,
    )?;
    let mut errors = Vec::new();
    let mut cache: Option<(tempfile::TempDir, ArtifactCache)> = None;
    for (name, runtime) in &loaded.fleet.runtimes {
        for (version, v) in &runtime.versions {
            if !matches!(v.artifact, ArtifactRef::Repo(_)) {
                continue;
            }
            if cache.is_none() {
                let dir = tempfile::tempdir()?;
                let c = ArtifactCache::new(dir.path().to_owned());
                cache = Some((dir, c));
            }
            let Some((_, cache)) = &cache else { continue };
            let request = ArtifactRequest {
                runtime: name.as_str(),
                version: version.as_str(),
                artifact: &v.artifact,
                signature: &v.signature,
                sha256: &v.sha256,
            };
            if let Err(e) = cache.prepare(&request, repo, &trust, DEFAULT_MAX_UNPACKED) {
                errors.push(e.to_string());
            }
        }
    }
    Ok(errors)
}
