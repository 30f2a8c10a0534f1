//! Loading a fleet end to end: repository files → validated manifests → desired state for
//! every host, with every problem collected for one report.

use std::path::Path;

use crate::diagnostic::{Diagnostic, Sources};
use crate::manifest::model::TransportKind;
use crate::manifest::{self, Fleet, LoadContext};
use crate::repo::{FleetRepo, RepoError};
use crate::resolve::{DesiredHost, resolve_all};
use crate::schedule::waves::WaveTarget;

pub struct LoadedFleet {
    pub fleet: Fleet,
    /// Every host's desired state, sorted by host name.
    pub desired: Vec<DesiredHost>,
    pub sources: Sources,
}

impl LoadedFleet {
    /// Command-line connection settings (`--identity-file`, `--known-hosts`) override the
    /// manifests for every host (DESIGN §2.1).
    pub fn override_connection(&mut self, identity_file: Option<&Path>, known_hosts: Option<&Path>) {
        let text = |p: Option<&Path>| p.map(|p| p.display().to_string());
        crate::resolve::override_connection(
            &mut self.desired,
            text(identity_file).as_deref(),
            text(known_hosts).as_deref(),
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("the manifests have {} problem(s)", diagnostics.len())]
    Invalid {
        diagnostics: Vec<Diagnostic>,
        sources: Sources,
        /// What could be built despite the problems (see [`Checked::partial`]).
        partial: Option<Box<Fleet>>,
    },
}

pub fn load(repo: &FleetRepo) -> Result<LoadedFleet, LoadError> {
    let read = repo.read_manifests()?;
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let ctx = LoadContext {
        repo_dir: repo.repo_dir(),
        home: home.as_deref(),
    };
    let Checked {
        valid,
        mut diagnostics,
        sources,
        mut partial,
    } = check(&read.files, repo, &ctx);
    diagnostics.splice(0..0, read.problems);
    if let Some((fleet, desired)) = valid {
        diagnostics.extend(linked_local_roots(&fleet, &desired, repo.fleet_dir()));
        diagnostics.extend(committed_host_state(&fleet, &desired, repo));
        if diagnostics.is_empty() {
            return Ok(LoadedFleet {
                fleet,
                desired,
                sources,
            });
        }
        partial = Some(Box::new(fleet));
    }
    Err(LoadError::Invalid {
        diagnostics,
        sources,
        partial,
    })
}

/// The repository artifacts of a fleet whose manifests have problems, checked anyway, so a
/// broken file elsewhere does not hide them (DESIGN §3: every problem in one run): each
/// failure as a diagnostic at its line. Nothing when `flotilla.toml` itself has a problem
/// (its `[trust]` may be what is broken, and every signature would seem untrusted) or the
/// trusted keys cannot be read. Blocking: file I/O and hashing.
pub fn partial_artifact_diagnostics(
    partial: &Fleet,
    diagnostics: &[Diagnostic],
    sources: &Sources,
    repo: &FleetRepo,
    pinned_keys: Option<&str>,
    cache: Option<std::path::PathBuf>,
) -> Vec<Diagnostic> {
    let fleet_file_broken = diagnostics
        .iter()
        .any(|d| d.location.as_ref().is_none_or(|l| l.file == "flotilla.toml"));
    if fleet_file_broken {
        return Vec::new();
    }
    let Ok(trust) =
        crate::artifact::TrustPolicy::new(&partial.trust.keys, partial.trust.require_signatures, pinned_keys)
    else {
        return Vec::new();
    };
    // Failures found with a saved URL signature are left out: they are only warnings.
    let errors: Vec<_> = crate::artifact::check_repository(partial, repo, &trust, cache)
        .errors
        .iter()
        .map(crate::artifact::ArtifactFailure::from)
        .filter(|f| !f.provisional)
        .collect();
    crate::artifact::ArtifactFailure::diagnostics(&errors, sources)
}

/// Validates manifest files and resolves every host, collecting every problem (DESIGN §3):
/// per-host problems of the entries that were valid are reported beside the manifest
/// problems, never hidden by them. The fleet and desired state come back only when there is
/// no problem at all. Pure but for the repository reads `repo` does.
pub fn check(
    files: &[manifest::ManifestFile],
    repo: &dyn manifest::RepoFiles,
    ctx: &LoadContext<'_>,
) -> Checked {
    let (fleet, mut diagnostics, sources) = match manifest::load(files, repo, ctx) {
        Ok(loaded) => (Some(loaded.fleet), Vec::new(), loaded.sources),
        Err(f) => {
            let mut diagnostics = f.diagnostics;
            if let Some(partial) = &f.partial {
                diagnostics.extend(decreasing_waves(partial));
                if let Err(more) = resolve_all(partial) {
                    diagnostics.extend(more);
                }
            }
            return Checked {
                valid: None,
                diagnostics,
                sources: f.sources,
                partial: f.partial,
            };
        }
    };
    let Some(fleet) = fleet else {
        return Checked {
            valid: None,
            diagnostics,
            sources,
            partial: None,
        };
    };
    diagnostics.extend(decreasing_waves(&fleet));
    let (valid, partial) = match resolve_all(&fleet) {
        Ok(desired) if diagnostics.is_empty() => (Some((fleet, desired)), None),
        Ok(_) => (None, Some(Box::new(fleet))),
        Err(more) => {
            diagnostics.extend(more);
            (None, Some(Box::new(fleet)))
        }
    };
    Checked {
        valid,
        diagnostics,
        sources,
        partial,
    }
}

/// What [`check`] found: the fleet and every host's desired state when there is no problem,
/// and every problem found.
pub struct Checked {
    pub valid: Option<(Fleet, Vec<DesiredHost>)>,
    pub diagnostics: Vec<Diagnostic>,
    pub sources: Sources,
    /// When there are problems: what could be built despite them (the files and entries that
    /// were valid), so further checks can report alongside; `None` when `flotilla.toml`
    /// itself is broken, or when there is no problem.
    pub partial: Option<Box<Fleet>>,
}

/// A local host whose state directory lies inside the repository must find nothing committed
/// there: host state is written by Flotilla, never by a commit, and a `state.json` an
/// unmerged pull request commits could claim to manage a controller file (DESIGN §1).
fn committed_host_state(fleet: &Fleet, desired: &[DesiredHost], repo: &FleetRepo) -> Vec<Diagnostic> {
    let Ok(fleet_dir) = std::fs::canonicalize(repo.fleet_dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for d in desired {
        if d.settings.transport.value != TransportKind::Local {
            continue;
        }
        let root = &d.settings.root.value;
        let mut dir = if root.starts_with('/') {
            std::path::PathBuf::from("/")
        } else {
            fleet_dir.clone()
        };
        let state = d.settings.state_dir.value.as_str().trim_start_matches('/');
        for part in root.split('/').chain(state.split('/')) {
            match part {
                "" | "." => {}
                ".." => {
                    dir.pop();
                }
                p => dir.push(p),
            }
        }
        if let Some(file) = repo.tracked_under(&dir) {
            let mut diag = Diagnostic::new(format!(
                "host `{}`: its state directory holds a file committed to the repository: `{file}`",
                d.name
            ))
            .label("host state is written by Flotilla on the host, never committed")
            .help(format!(
                "remove it from the repository (`git rm --cached {file}`), or give the host a root outside the repository"
            ));
            if let Some(h) = fleet.hosts.iter().find(|h| h.name == d.name) {
                diag = diag.at(&h.origin.file, h.origin.span.clone());
            }
            out.push(diag);
        }
    }
    out
}

/// Waves that mix counts and percentages may decrease once evaluated against the
/// environment's hosts: `[5, "10%"]` with 20 hosts asks for 5, then 2 (DESIGN §3).
fn decreasing_waves(fleet: &Fleet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for env in fleet.environments.values() {
        let Some(at) = &env.rollout.waves_at else {
            continue;
        };
        let total = fleet.hosts.iter().filter(|h| h.environment == env.name).count();
        let show = |w: &WaveTarget| match w {
            WaveTarget::Count(n) => n.to_string(),
            WaveTarget::Percent(p) => format!("\"{p}%\""),
        };
        let mut prev: Option<(usize, &WaveTarget)> = None;
        for w in &env.rollout.waves {
            let n = crate::schedule::waves::cumulative(*w, total);
            if let Some((p, pw)) = prev
                && n < p
            {
                out.push(
                    Diagnostic::new(format!(
                        "waves decrease for the {total} hosts of `{}`: {} is {p} host{}, then {} is {n}",
                        env.name,
                        show(pw),
                        if p == 1 { "" } else { "s" },
                        show(w),
                    ))
                    .at(&at.file, at.span.clone())
                    .label("each wave is a cumulative target and must not ask for fewer hosts")
                    .help("use counts or percentages that grow for this many hosts, e.g. [1, \"50%\", \"100%\"]"),
                );
                break;
            }
            prev = Some((n, w));
        }
    }
    out
}

/// A relative `root` of a local host is a directory under the fleet root (resolve has checked
/// it does not climb out with `..`); it must not leave it through a link either. Components
/// that do not exist yet are fine: nothing can be linked there.
fn linked_local_roots(fleet: &Fleet, desired: &[DesiredHost], fleet_dir: &Path) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for d in desired {
        let root = &d.settings.root.value;
        if d.settings.transport.value != TransportKind::Local || root.starts_with('/') {
            continue;
        }
        let mut cur = fleet_dir.to_path_buf();
        let mut so_far: Vec<&str> = Vec::new();
        for part in root.split('/').filter(|p| !p.is_empty() && *p != ".") {
            cur.push(part);
            so_far.push(part);
            let Ok(meta) = std::fs::symlink_metadata(&cur) else {
                break;
            };
            if meta.file_type().is_symlink() {
                let link = so_far.join("/");
                let mut diag = Diagnostic::new(format!(
                    "host `{}`: `root` passes through a symlink: `{link}`",
                    d.name
                ))
                .label(format!(
                    "root = {root:?} comes from {}; links could lead outside the fleet directory",
                    d.settings.root.from
                ))
                .help(format!(
                    "make `{link}` a real directory, or use an absolute root for a host outside the fleet"
                ));
                if let Some(h) = fleet.hosts.iter().find(|h| h.name == d.name) {
                    diag = diag.at(&h.origin.file, h.origin.span.clone());
                }
                out.push(diag);
                break;
            }
            if !meta.is_dir() {
                break;
            }
        }
    }
    out
}

/// Test fixtures shared by unit tests of several modules.
#[cfg(test)]
pub(crate) mod testing {
    /// Loads a fleet written from `files` (path, text) into a temporary directory; panics
    /// when it is invalid.
    pub(crate) fn load_files(files: &[(&str, &str)]) -> super::LoadedFleet {
        let dir = tempfile::tempdir().unwrap();
        for (p, t) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, t).unwrap();
        }
        let repo = crate::repo::FleetRepo::open(dir.path(), None).unwrap();
        super::load(&repo).unwrap_or_else(|_| panic!("invalid test fleet"))
    }
}
