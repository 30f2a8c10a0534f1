//! Loading a fleet end to end: repository files → validated manifests → desired state for
//! every host, with every problem collected for one report.

use std::path::Path;

use crate::diagnostic::{Diagnostic, Sources};
use crate::manifest::model::TransportKind;
use crate::manifest::{self, Fleet, LoadContext};
use crate::repo::{FleetRepo, RepoError};
use crate::resolve::{DesiredHost, resolve_all};

pub struct LoadedFleet {
    pub fleet: Fleet,
    /// Every host's desired state, sorted by host name.
    pub desired: Vec<DesiredHost>,
    pub sources: Sources,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("the manifests have {} problem(s)", diagnostics.len())]
    Invalid {
        diagnostics: Vec<Diagnostic>,
        sources: Sources,
    },
}

pub fn load(repo: &FleetRepo) -> Result<LoadedFleet, LoadError> {
    let read = repo.read_manifests()?;
    let mut diagnostics = read.problems;
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let ctx = LoadContext {
        repo_dir: repo.repo_dir(),
        home: home.as_deref(),
    };
    let loaded = match manifest::load(&read.files, repo, &ctx) {
        Ok(loaded) => loaded,
        Err(f) => {
            diagnostics.extend(f.diagnostics);
            return Err(LoadError::Invalid {
                diagnostics,
                sources: f.sources,
            });
        }
    };
    match resolve_all(&loaded.fleet) {
        Ok(desired) => {
            diagnostics.extend(linked_local_roots(&loaded.fleet, &desired, repo.fleet_dir()));
            if !diagnostics.is_empty() {
                return Err(LoadError::Invalid {
                    diagnostics,
                    sources: loaded.sources,
                });
            }
            Ok(LoadedFleet {
                fleet: loaded.fleet,
                desired,
                sources: loaded.sources,
            })
        }
        Err(more) => {
            diagnostics.extend(more);
            Err(LoadError::Invalid {
                diagnostics,
                sources: loaded.sources,
            })
        }
    }
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
