//! Loading a fleet end to end: repository files → validated manifests → desired state for
//! every host, with every problem collected for one report.

use crate::diagnostic::{Diagnostic, Sources};
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
    let files = repo.manifest_files()?;
    let ctx = LoadContext {
        repo_dir: repo.repo_dir(),
    };
    let loaded = manifest::load(&files, repo, &ctx).map_err(|f| LoadError::Invalid {
        diagnostics: f.diagnostics,
        sources: f.sources,
    })?;
    match resolve_all(&loaded.fleet) {
        Ok(desired) => Ok(LoadedFleet {
            fleet: loaded.fleet,
            desired,
            sources: loaded.sources,
        }),
        Err(diagnostics) => Err(LoadError::Invalid {
            diagnostics,
            sources: loaded.sources,
        }),
    }
}
