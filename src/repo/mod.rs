//! The fleet repository: the manifests of a fleet read either from the working tree or from a
//! commit through git2 (no checkout, so `--rev` never touches the files a user is editing).
//! The fleet root may be any directory inside the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::manifest::{ManifestFile, RepoEntry, RepoFiles};

mod files;

use files::*;

/// Problems opening or reading the fleet repository. Each says what went wrong in plain words
/// and how to fix it; libgit2's own diagnostics (`class=…; code=…`) and the OS error codes
/// are never shown, and no cause is printed twice: the causes are kept out of the error
/// chain because the message already words them.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("cannot read the fleet directory {path}: {}", io_reason(cause))]
    Io { path: PathBuf, cause: std::io::Error },
    #[error(
        "{path}: no flotilla.toml here; point Flotilla at the fleet root (the directory holding flotilla.toml)"
    )]
    NotAFleet { path: PathBuf },
    #[error(
        "{path} is a symbolic link inside the repository at {repo}; Flotilla follows no link in \
         the repository (a commit could point it anywhere): give the directory it points to, or \
         replace the link with the directory"
    )]
    LinkedFleetDir { path: PathBuf, repo: PathBuf },
    #[error(
        "{path} is not a Git repository (nor inside one), so there is no revision to read with --rev: \
         run `git init` and commit the fleet, or leave out --rev to read the files as they are"
    )]
    NoRepository { path: PathBuf },
    #[error(
        "{path} is not a Git repository (nor inside one), so there is no commit to apply and \
         record: run `git init && git add -A && git commit` there, or pass --allow-dirty to apply \
         the files as they are (audited as dirty)"
    )]
    NotCommittable { path: PathBuf },
    #[error(
        "the Git repository at {path} has no commits yet: commit the fleet (`git add -A && git commit`), \
         or pass --allow-dirty to apply the files as they are (audited as dirty)"
    )]
    NoCommits { path: PathBuf },
    #[error(
        "the fleet directory has uncommitted changes: commit them, or pass --allow-dirty to apply the working tree as it is"
    )]
    Uncommitted,
    #[error("cannot open the Git repository that holds {path}: {}", git_reason(cause))]
    Open { path: PathBuf, cause: git2::Error },
    #[error("unknown revision `{rev}`: {}", revision_reason(cause))]
    UnknownRevision { rev: String, cause: git2::Error },
    #[error("`{rev}` names {kind}, not a commit: give a branch, a tag or a commit id")]
    NotACommit { rev: String, kind: &'static str },
    #[error("revision {rev} has no directory `{dir}` (the fleet root); it may have been added later")]
    NoFleetAtRevision { rev: String, dir: String },
    #[error("cannot read {what} at revision {rev}: {}", git_reason(cause))]
    Git {
        what: String,
        rev: String,
        cause: git2::Error,
    },
    #[error("{path} is not UTF-8 text")]
    NotUtf8 { path: String },
}

/// libgit2's message alone, without its class and code, starting in lower case.
fn git_reason(e: &git2::Error) -> String {
    let m = e.message().trim().trim_end_matches('.');
    let mut c = m.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => "an unknown Git error".to_owned(),
    }
}

/// Why a revision did not resolve, in words, with where to look for one that does.
fn revision_reason(e: &git2::Error) -> String {
    const LIST: &str = "`git log --oneline`, `git branch -a` and `git tag` list the ones there are";
    match e.code() {
        git2::ErrorCode::NotFound => {
            format!("no branch, tag or commit by that name ({LIST})")
        }
        git2::ErrorCode::Ambiguous => {
            "several objects start with that; give more digits of the commit id".to_owned()
        }
        git2::ErrorCode::InvalidSpec => format!("not a revision Git understands ({LIST})"),
        _ => format!("{} ({LIST})", git_reason(e)),
    }
}

/// An I/O error's description without the `(os error N)` suffix the path already makes
/// redundant.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text,
    };
    let mut c = text.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => text,
    }
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

/// Refuses a fleet directory reached through a symbolic link inside its Git repository (DESIGN,
/// threat model: no link is followed in any path component). The path is walked as written,
/// one component at a time; links above the repository (how this machine lays out its disks,
/// or a link to the repository itself) are the operator's and are followed.
fn refuse_links_in_repository(dir: &Path) -> Result<(), RepoError> {
    let Ok(abs) = std::path::absolute(dir) else {
        return Ok(()); // canonicalize reports the path next
    };
    let mut at = PathBuf::new();
    let mut repo: Option<PathBuf> = None;
    for c in abs.components() {
        at.push(c);
        let Ok(meta) = std::fs::symlink_metadata(&at) else {
            return Ok(());
        };
        // A link above any repository is the machine's own layout (and may lead to the
        // repository itself).
        if meta.file_type().is_symlink()
            && let Some(repo) = repo
        {
            return Err(RepoError::LinkedFleetDir { path: at, repo });
        }
        if repo.is_none() && std::fs::symlink_metadata(at.join(".git")).is_ok() {
            repo = Some(at.clone());
        }
    }
    Ok(())
}

impl FleetRepo {
    /// Opens the fleet at `dir`, at `rev` when given, else the working tree.
    pub fn open(dir: &Path, rev: Option<&str>) -> Result<FleetRepo, RepoError> {
        refuse_links_in_repository(dir)?;
        let fleet_dir = dir.canonicalize().map_err(|cause| RepoError::Io {
            path: dir.to_owned(),
            cause,
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
                                RepoError::Open { path, cause: e }
                            }
                            _ => RepoError::NoRepository { path },
                        });
                    }
                };
                let object = repo
                    .revparse_single(rev)
                    .map_err(|cause| RepoError::UnknownRevision {
                        rev: rev.to_owned(),
                        cause,
                    })?;
                let commit = object.peel_to_commit().map_err(|_| RepoError::NotACommit {
                    rev: rev.to_owned(),
                    kind: object.kind().map_or("an object", |k| match k {
                        git2::ObjectType::Tree => "a tree",
                        git2::ObjectType::Blob => "a blob (a file's content)",
                        git2::ObjectType::Tag => "a tag of something else",
                        _ => "an object",
                    }),
                })?;
                let id = commit.id();
                let tree = commit.tree().map_err(|cause| RepoError::Git {
                    what: "the tree".into(),
                    rev: id.to_string(),
                    cause,
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
                drop(object);
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

    /// The first line of the commit's message when reading a commit (`--rev`), for titles
    /// such as a preview's. `None` for a working tree.
    pub fn subject(&self) -> Option<String> {
        match &self.source {
            Source::Commit { repo, commit, .. } => {
                let c = repo.find_commit(*commit).ok()?;
                let message = String::from_utf8_lossy(c.message_bytes()).into_owned();
                Some(message.lines().next().unwrap_or_default().trim().to_owned())
            }
            Source::WorkTree { .. } => None,
        }
    }

    /// HEAD's commit id even when the tree is dirty, for messages.
    pub fn head(&self) -> Option<&str> {
        self.revision.as_deref()
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Refuses a working tree that is not a commit, saying which of the three it is: outside
    /// any Git repository, in one without commits, or with uncommitted changes. `apply`
    /// calls it unless `--allow-dirty`.
    pub fn require_committed(&self) -> Result<(), RepoError> {
        if !self.dirty {
            return Ok(());
        }
        let path = self.fleet_dir.clone();
        Err(match (&self.repo_dir, &self.revision) {
            (None, _) => RepoError::NotCommittable { path },
            (Some(repo), None) => RepoError::NoCommits { path: repo.clone() },
            (Some(_), Some(_)) => RepoError::Uncommitted,
        })
    }

    pub fn repo_dir(&self) -> Option<&Path> {
        self.repo_dir.as_deref()
    }

    /// The fleet root on disk (where relative `root`s of local hosts are anchored).
    pub fn fleet_dir(&self) -> &Path {
        &self.fleet_dir
    }

    /// A file the repository tracks at or under `dir` (an absolute path on disk), at the
    /// revision read (the index for a working tree); `None` when there is none, or `dir` is
    /// outside the repository. Host state is never committed: a tracked `state.json` under a
    /// local host's state directory can only be forged (DESIGN §1).
    pub fn tracked_under(&self, dir: &Path) -> Option<String> {
        let repo_dir = std::fs::canonicalize(self.repo_dir.as_deref()?).ok()?;
        let rel = dir.strip_prefix(&repo_dir).ok()?;
        let rel = rel.to_str()?.trim_end_matches('/');
        match &self.source {
            Source::Commit { repo, commit, .. } => {
                let tree = repo.find_commit(*commit).ok()?.tree().ok()?;
                if rel.is_empty() {
                    return None;
                }
                let entry = tree.get_path(Path::new(rel)).ok()?;
                let Some(sub) = entry.to_object(repo).ok()?.into_tree().ok() else {
                    return Some(rel.to_owned());
                };
                // The first file under it, for the message.
                let mut first = None;
                let _ = sub.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
                    if e.kind() == Some(git2::ObjectType::Blob) {
                        first = Some(format!("{rel}/{dir}{}", e.name().unwrap_or("?")));
                        return git2::TreeWalkResult::Abort;
                    }
                    git2::TreeWalkResult::Ok
                });
                first
            }
            Source::WorkTree { .. } => {
                let repo = git2::Repository::open(&repo_dir).ok()?;
                let index = repo.index().ok()?;
                let prefix = format!("{rel}/");
                index.iter().find_map(|e| {
                    let p = String::from_utf8_lossy(&e.path).into_owned();
                    (p == rel || p.starts_with(&prefix)).then_some(p)
                })
            }
        }
    }

    /// Every manifest file: flotilla.toml, environments/*.toml, hosts/**/*.toml, runtimes/*.toml.
    /// Files that cannot be manifests (symlinks, non-UTF-8 names, devices, oversized or
    /// non-UTF-8 text) are left out; [`FleetRepo::read_manifests`] reports them.
    pub fn manifest_files(&self) -> Result<Vec<ManifestFile>, RepoError> {
        Ok(self.read_manifests()?.files)
    }

    /// Every manifest file, plus a problem for each file in a manifest location that had to be
    /// refused: nothing is skipped silently, and nothing outside the repository is read.
    pub fn read_manifests(&self) -> Result<ManifestSet, RepoError> {
        let mut raw: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut problems = Vec::new();
        match &self.source {
            Source::WorkTree { fleet_dir } => {
                let mut walk = DiskWalk {
                    base: fleet_dir,
                    out: &mut raw,
                    problems: &mut problems,
                };
                walk.visit("flotilla.toml", false)?;
                for (dir, recurse) in [("environments", false), ("hosts", true), ("runtimes", false)] {
                    walk.visit(dir, recurse)?;
                }
            }
            Source::Commit { repo, commit, prefix } => {
                let rev = commit.to_string();
                let git = |what: &str| {
                    let what = what.to_owned();
                    let rev = rev.clone();
                    move |cause| RepoError::Git { what, rev, cause }
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
                let odb = repo.odb().map_err(git("the object database"))?;
                root.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
                    let name = match entry.name() {
                        Ok(n) => n,
                        Err(_) => {
                            let lossy = String::from_utf8_lossy(entry.name_bytes());
                            let path = format!("{dir}{lossy}");
                            if in_manifest_location(&path) {
                                problems.push(non_utf8_name(&path));
                            }
                            return git2::TreeWalkResult::Skip;
                        }
                    };
                    let path = format!("{dir}{name}");
                    if entry.filemode() == GIT_SYMLINK {
                        if in_manifest_location(&path) {
                            problems.push(symlinked_manifest(&path));
                        }
                        return git2::TreeWalkResult::Ok;
                    }
                    if entry.kind() == Some(git2::ObjectType::Tree) {
                        let wanted = dir.is_empty() && matches!(name, "environments" | "hosts" | "runtimes")
                            || dir.starts_with("hosts/");
                        return if wanted {
                            git2::TreeWalkResult::Ok
                        } else {
                            git2::TreeWalkResult::Skip
                        };
                    }
                    if !is_manifest_path(&path) {
                        return git2::TreeWalkResult::Ok;
                    }
                    if entry.kind() != Some(git2::ObjectType::Blob) {
                        problems.push(not_regular_manifest(&path, "a submodule"));
                        return git2::TreeWalkResult::Ok;
                    }
                    match odb.read_header(entry.id()) {
                        Ok((size, _)) if size as u64 > MAX_READ_BYTES => {
                            problems.push(too_large_manifest(&path, size as u64));
                        }
                        _ => match repo.find_blob(entry.id()) {
                            Ok(blob) => {
                                raw.insert(path, blob.content().to_vec());
                            }
                            Err(e) => problems.push(
                                Diagnostic::new(format!(
                                    "{path} cannot be read at this revision: {}",
                                    e.message()
                                ))
                                .at(&path, 0..0),
                            ),
                        },
                    }
                    git2::TreeWalkResult::Ok
                })
                .map_err(git("the fleet tree"))?;
            }
        }
        let mut files = Vec::with_capacity(raw.len());
        for (path, bytes) in raw {
            match String::from_utf8(bytes) {
                Ok(text) => files.push(ManifestFile { path, text }),
                Err(_) => problems.push(
                    Diagnostic::new(format!("{path} is not UTF-8 text"))
                        .at(&path, 0..0)
                        .help("manifests are TOML, which is UTF-8; re-save the file as UTF-8"),
                ),
            }
        }
        Ok(ManifestSet { files, problems })
    }
}

/// The manifest files of a revision and the files in manifest locations that were refused.
pub struct ManifestSet {
    pub files: Vec<ManifestFile>,
    /// One per refused file (symlink, non-UTF-8 name or text, not a regular file, too large).
    pub problems: Vec<Diagnostic>,
}

/// The most Flotilla reads of one manifest or `source` file (artifacts are streamed instead).
pub const MAX_READ_BYTES: u64 = crate::manifest::validate::MAX_SOURCE_BYTES;

impl RepoFiles for FleetRepo {
    fn entry(&self, path: &str, read: bool) -> RepoEntry {
        match &self.source {
            Source::WorkTree { fleet_dir } => match locate_on_disk(fleet_dir, path) {
                Err(entry) => entry,
                Ok(_) if !read => RepoEntry::File(None),
                Ok((full, meta)) => match read_regular(&full, &meta, MAX_READ_BYTES) {
                    Ok(b) => RepoEntry::File(Some(Arc::from(b))),
                    Err(ReadError::TooLarge(n)) => RepoEntry::TooLarge(n),
                    Err(ReadError::Changed) => RepoEntry::Unreadable("it changed while being read".into()),
                    Err(ReadError::Io(e)) => RepoEntry::Unreadable(e.to_string()),
                },
            },
            Source::Commit { repo, commit, prefix } => match locate_in_commit(repo, *commit, prefix, path) {
                Err(entry) => entry,
                Ok(_) if !read => RepoEntry::File(None),
                Ok(id) => {
                    let size = repo.odb().and_then(|o| o.read_header(id)).map(|(n, _)| n as u64);
                    match size {
                        Ok(n) if n > MAX_READ_BYTES => RepoEntry::TooLarge(n),
                        _ => match repo.find_blob(id) {
                            Ok(b) => RepoEntry::File(Some(Arc::from(b.content()))),
                            Err(err) => RepoEntry::Unreadable(err.message().to_owned()),
                        },
                    }
                }
            },
        }
    }
}

impl crate::artifact::RepoReader for FleetRepo {
    fn open(&self, path: &str) -> std::io::Result<Box<dyn std::io::Read + Send + '_>> {
        // Repository paths are read as Git would: a symlink in any component is refused, not
        // followed, and only a regular file is opened. Artifacts are streamed, so not capped.
        let refused = |entry: RepoEntry| match entry {
            RepoEntry::Missing => std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{path} does not exist in the repository"),
            ),
            RepoEntry::Symlink(link) => std::io::Error::other(format!(
                "{path}: `{link}` is a symlink; Flotilla does not follow links in the repository"
            )),
            RepoEntry::Directory => std::io::Error::other(format!("{path} is a directory")),
            RepoEntry::NotRegular(what) => {
                std::io::Error::other(format!("{path} is {what}, not a regular file"))
            }
            RepoEntry::TooLarge(n) => std::io::Error::other(format!("{path} is too large ({n} bytes)")),
            RepoEntry::Unreadable(why) => std::io::Error::other(format!("{path} cannot be read: {why}")),
            RepoEntry::File(_) => std::io::Error::other(format!("{path} cannot be read")),
        };
        match &self.source {
            Source::WorkTree { fleet_dir } => {
                let (full, meta) = locate_on_disk(fleet_dir, path).map_err(refused)?;
                match open_checked(&full, &meta) {
                    Ok(f) => Ok(Box::new(f)),
                    Err(ReadError::Io(e)) => Err(e),
                    Err(_) => Err(std::io::Error::other(format!(
                        "{path} changed while it was being opened"
                    ))),
                }
            }
            Source::Commit { repo, commit, prefix } => {
                let id = locate_in_commit(repo, *commit, prefix, path).map_err(refused)?;
                let blob = repo
                    .find_blob(id)
                    .map_err(|e| std::io::Error::other(format!("{path}: {}", e.message())))?;
                Ok(Box::new(std::io::Cursor::new(blob.content().to_vec())))
            }
        }
    }

    fn content_id(&self, path: &str) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        match &self.source {
            // Every write changes mtime or ctime (ctime cannot be set back from user space).
            Source::WorkTree { fleet_dir } => {
                let (full, m) = locate_on_disk(fleet_dir, path).ok()?;
                Some(format!(
                    "stat:{}:{}:{}:{}:{}:{}:{}",
                    full.display(),
                    m.dev(),
                    m.ino(),
                    m.size(),
                    m.mtime_nsec() + m.mtime() * 1_000_000_000,
                    m.ctime_nsec() + m.ctime() * 1_000_000_000,
                    m.mode(),
                ))
            }
            Source::Commit { repo, commit, prefix } => {
                let id = locate_in_commit(repo, *commit, prefix, path).ok()?;
                Some(format!("blob:{id}"))
            }
        }
    }
}
