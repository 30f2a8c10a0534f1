//! The fleet repository: the manifests of a fleet read either from the working tree or from a
//! commit through git2 (no checkout, so `--rev` never touches the files a user is editing).
//! The fleet root may be any directory inside the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::manifest::{ManifestFile, RepoEntry, RepoFiles};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{path}: cannot read the fleet directory: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{path}: no flotilla.toml here; point Flotilla at the fleet root (the directory holding flotilla.toml)"
    )]
    NotAFleet { path: PathBuf },
    #[error("{path}: --rev needs a Git repository, but this directory is not inside one")]
    NoRepository { path: PathBuf },
    #[error("{path}: cannot open the Git repository: {source}")]
    Open { path: PathBuf, source: git2::Error },
    #[error("unknown revision `{rev}`: {source} (try a branch, a tag or a commit id; `git log` lists them)")]
    UnknownRevision { rev: String, source: git2::Error },
    #[error("revision {rev} has no directory `{dir}` (the fleet root); it may have been added later")]
    NoFleetAtRevision { rev: String, dir: String },
    #[error("reading {what} at {rev}: {source}")]
    Git {
        what: String,
        rev: String,
        source: git2::Error,
    },
    #[error("{path} is not UTF-8 text")]
    NotUtf8 { path: String },
}

/// What is being read: the files on disk, or a commit.
enum Source {
    WorkTree {
        fleet_dir: PathBuf,
    },
    Commit {
        repo: git2::Repository,
        commit: git2::Oid,
        prefix: String,
    },
}

/// A fleet at one revision.
pub struct FleetRepo {
    source: Source,
    /// Full commit id: the commit read, or HEAD when reading a clean working tree.
    revision: Option<String>,
    dirty: bool,
    repo_dir: Option<PathBuf>,
    fleet_dir: PathBuf,
}

impl FleetRepo {
    /// Opens the fleet at `dir`, at `rev` when given, else the working tree.
    pub fn open(dir: &Path, rev: Option<&str>) -> Result<FleetRepo, RepoError> {
        let fleet_dir = dir.canonicalize().map_err(|source| RepoError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let repo = git2::Repository::discover(&fleet_dir).ok();
        let repo_dir = repo
            .as_ref()
            .and_then(|r| r.workdir())
            .and_then(|w| w.canonicalize().ok());
        let prefix = repo_dir
            .as_ref()
            .and_then(|w| fleet_dir.strip_prefix(w).ok())
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        match rev {
            None => {
                if !fleet_dir.join("flotilla.toml").is_file() {
                    return Err(RepoError::NotAFleet { path: fleet_dir });
                }
                let (revision, dirty) = match &repo {
                    Some(r) => {
                        let head = r
                            .head()
                            .ok()
                            .and_then(|h| h.peel_to_commit().ok())
                            .map(|c| c.id().to_string());
                        (head, is_dirty(r, &prefix))
                    }
                    None => (None, true),
                };
                Ok(FleetRepo {
                    source: Source::WorkTree {
                        fleet_dir: fleet_dir.clone(),
                    },
                    revision,
                    dirty,
                    repo_dir,
                    fleet_dir,
                })
            }
            Some(rev) => {
                let path = fleet_dir.clone();
                let repo = match repo {
                    Some(r) => r,
                    None => {
                        return Err(match git2::Repository::discover(&fleet_dir) {
                            Err(e) if e.code() != git2::ErrorCode::NotFound => {
                                RepoError::Open { path, source: e }
                            }
                            _ => RepoError::NoRepository { path },
                        });
                    }
                };
                let commit = repo
                    .revparse_single(rev)
                    .and_then(|o| o.peel_to_commit())
                    .map_err(|source| RepoError::UnknownRevision {
                        rev: rev.to_owned(),
                        source,
                    })?;
                let id = commit.id();
                let tree = commit.tree().map_err(|source| RepoError::Git {
                    what: "the tree".into(),
                    rev: id.to_string(),
                    source,
                })?;
                let has_fleet = tree.get_path(&Path::new(&prefix).join("flotilla.toml")).is_ok();
                if !has_fleet {
                    return Err(RepoError::NoFleetAtRevision {
                        rev: id.to_string(),
                        dir: if prefix.is_empty() { ".".into() } else { prefix },
                    });
                }
                drop(tree);
                drop(commit);
                Ok(FleetRepo {
                    source: Source::Commit {
                        repo,
                        commit: id,
                        prefix,
                    },
                    revision: Some(id.to_string()),
                    dirty: false,
                    repo_dir,
                    fleet_dir,
                })
            }
        }
    }

    /// The commit id the manifests are read at; `None` for a tree with uncommitted changes.
    pub fn revision(&self) -> Option<&str> {
        if self.dirty {
            None
        } else {
            self.revision.as_deref()
        }
    }

    /// HEAD's commit id even when the tree is dirty, for messages.
    pub fn head(&self) -> Option<&str> {
        self.revision.as_deref()
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn repo_dir(&self) -> Option<&Path> {
        self.repo_dir.as_deref()
    }

    /// The fleet root on disk (where relative `root`s of local hosts are anchored).
    pub fn fleet_dir(&self) -> &Path {
        &self.fleet_dir
    }

    /// Every manifest file: flotilla.toml, environments/*.toml, hosts/**/*.toml, runtimes/*.toml.
    pub fn manifest_files(&self) -> Result<Vec<ManifestFile>, RepoError> {
        let mut raw: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        match &self.source {
            Source::WorkTree { fleet_dir } => {
                read_disk(fleet_dir, "flotilla.toml", false, &mut raw)?;
                for (dir, recurse) in [("environments", false), ("hosts", true), ("runtimes", false)] {
                    read_disk(fleet_dir, dir, recurse, &mut raw)?;
                }
            }
            Source::Commit { repo, commit, prefix } => {
                let rev = commit.to_string();
                let git = |what: &str| {
                    let what = what.to_owned();
                    let rev = rev.clone();
                    move |source| RepoError::Git { what, rev, source }
                };
                let tree = repo
                    .find_commit(*commit)
                    .and_then(|c| c.tree())
                    .map_err(git("the tree"))?;
                let root = if prefix.is_empty() {
                    tree
                } else {
                    let entry = tree.get_path(Path::new(prefix)).map_err(git(prefix))?;
                    repo.find_tree(entry.id()).map_err(git(prefix))?
                };
                root.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
                    let Ok(name) = entry.name() else {
                        return git2::TreeWalkResult::Ok;
                    };
                    let path = format!("{dir}{name}");
                    if entry.kind() == Some(git2::ObjectType::Tree) {
                        let wanted = dir.is_empty() && matches!(name, "environments" | "hosts" | "runtimes")
                            || dir.starts_with("hosts/");
                        return if wanted {
                            git2::TreeWalkResult::Ok
                        } else {
                            git2::TreeWalkResult::Skip
                        };
                    }
                    if is_manifest_path(&path)
                        && let Ok(blob) = repo.find_blob(entry.id())
                    {
                        raw.insert(path, blob.content().to_vec());
                    }
                    git2::TreeWalkResult::Ok
                })
                .map_err(git("the fleet tree"))?;
            }
        }
        raw.into_iter()
            .map(|(path, bytes)| match String::from_utf8(bytes) {
                Ok(text) => Ok(ManifestFile { path, text }),
                Err(_) => Err(RepoError::NotUtf8 { path }),
            })
            .collect()
    }
}

fn is_manifest_path(p: &str) -> bool {
    if p == "flotilla.toml" {
        return true;
    }
    if !p.ends_with(".toml") {
        return false;
    }
    match p.split_once('/') {
        Some(("environments" | "runtimes", rest)) => !rest.contains('/'),
        Some(("hosts", _)) => true,
        _ => false,
    }
}

fn read_disk(
    base: &Path,
    rel: &str,
    recurse: bool,
    out: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), RepoError> {
    let path = base.join(rel);
    let io = |source| RepoError::Io {
        path: path.clone(),
        source,
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    if meta.is_file() {
        if is_manifest_path(rel) {
            out.insert(rel.to_owned(), std::fs::read(&path).map_err(io)?);
        }
        return Ok(());
    }
    if !meta.is_dir() {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(&path)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let child = format!("{rel}/{name}");
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && !recurse {
            continue;
        }
        read_disk(base, &child, recurse, out)?;
    }
    Ok(())
}

fn is_dirty(repo: &git2::Repository, prefix: &str) -> bool {
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    if !prefix.is_empty() {
        opts.pathspec(prefix);
    }
    match repo.statuses(Some(&mut opts)) {
        Ok(s) => !s.is_empty(),
        Err(_) => true,
    }
}

impl RepoFiles for FleetRepo {
    fn entry(&self, path: &str, read: bool) -> RepoEntry {
        match &self.source {
            Source::WorkTree { fleet_dir } => {
                let full = fleet_dir.join(path);
                match std::fs::symlink_metadata(&full) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => RepoEntry::Missing,
                    Err(e) => RepoEntry::Unreadable(e.to_string()),
                    Ok(m) if m.file_type().is_symlink() => RepoEntry::Symlink,
                    Ok(m) if m.is_dir() => RepoEntry::Directory,
                    Ok(_) if !read => RepoEntry::File(None),
                    Ok(_) => match std::fs::read(&full) {
                        Ok(b) => RepoEntry::File(Some(Arc::from(b))),
                        Err(e) => RepoEntry::Unreadable(e.to_string()),
                    },
                }
            }
            Source::Commit { repo, commit, prefix } => {
                let full = Path::new(prefix).join(path);
                let entry = repo
                    .find_commit(*commit)
                    .and_then(|c| c.tree())
                    .and_then(|t| t.get_path(&full));
                match entry {
                    Err(e) if e.code() == git2::ErrorCode::NotFound => RepoEntry::Missing,
                    Err(e) => RepoEntry::Unreadable(e.message().to_owned()),
                    Ok(e) if e.filemode() == 0o120000 => RepoEntry::Symlink,
                    Ok(e) if e.kind() == Some(git2::ObjectType::Tree) => RepoEntry::Directory,
                    Ok(_) if !read => RepoEntry::File(None),
                    Ok(e) => match repo.find_blob(e.id()) {
                        Ok(b) => RepoEntry::File(Some(Arc::from(b.content()))),
                        Err(err) => RepoEntry::Unreadable(err.message().to_owned()),
                    },
                }
            }
        }
    }
}

impl crate::artifact::RepoReader for FleetRepo {
    fn open(&self, path: &str) -> std::io::Result<Box<dyn std::io::Read + Send + '_>> {
        match &self.source {
            Source::WorkTree { fleet_dir } => {
                // Repository paths are read as Git would: a symlink is refused, not followed.
                let full = fleet_dir.join(path);
                if std::fs::symlink_metadata(&full)?.file_type().is_symlink() {
                    return Err(std::io::Error::other(format!(
                        "{path} is a symlink; artifacts must be regular files"
                    )));
                }
                Ok(Box::new(std::fs::File::open(full)?))
            }
            Source::Commit { .. } => match crate::manifest::RepoFiles::entry(self, path, true) {
                RepoEntry::File(Some(bytes)) => Ok(Box::new(std::io::Cursor::new(bytes))),
                RepoEntry::Missing => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{path} does not exist at this revision"),
                )),
                other => Err(std::io::Error::other(format!(
                    "{path} is not a regular file ({other:?})"
                ))),
            },
        }
    }
}
