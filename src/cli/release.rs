//! `flotilla release`, and the artifact checks `validate` runs on the repository's artifacts.

use super::Outcome;
use super::args::ReleaseArgs;
use super::output::{errln, outln};
use crate::artifact::TrustPolicy;
use crate::load::LoadedFleet;
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
/// trusted key, tarball inspection; DESIGN §3), returning every failure. No URL is opened
/// (`file://` included): URL artifacts, and repository artifacts whose signature is a URL
/// `apply` has not fetched yet, are left to `apply` (a note says which). With a store, what
/// its cache verified before is not checked again (a repository file is re-read whenever it
/// changed).
pub(super) fn check_repo_artifacts(
    repo: &FleetRepo,
    loaded: &LoadedFleet,
    cache: Option<std::path::PathBuf>,
    pinned: Option<&str>,
) -> anyhow::Result<Vec<crate::artifact::ArtifactFailure>> {
    let trust = TrustPolicy::new(
        &loaded.fleet.trust.keys,
        loaded.fleet.trust.require_signatures,
        pinned,
    )?;
    let checked = crate::artifact::check_repository(&loaded.fleet, repo, &trust, cache);
    for (runtime, version) in &checked.unchecked {
        errln!(
            "note: runtime `{runtime}` version `{version}`: its signature is a URL, which validate does not open; apply fetches and checks it"
        );
    }
    Ok(checked
        .errors
        .iter()
        .map(crate::artifact::ArtifactFailure::from)
        .collect())
}
