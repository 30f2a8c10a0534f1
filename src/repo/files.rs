//! Reading a revision's files safely: which paths are manifests, the reports for what is
//! refused there (links, non-UTF-8 names, non-regular or oversized files), and reading a file
//! from the working tree or a commit without following a link planted on the way.

use super::*;

/// A Git tree entry's mode for a symbolic link.
pub(super) const GIT_SYMLINK: i32 = 0o120000;

/// Whether `path` (relative to the fleet root) is somewhere Flotilla looks for manifests, so
/// that something unusable there is worth a report.
pub(super) fn in_manifest_location(path: &str) -> bool {
    matches!(path, "flotilla.toml" | "environments" | "hosts" | "runtimes")
        || path.starts_with("hosts/")
        || is_manifest_path(path)
}

pub(super) fn symlinked_manifest(path: &str) -> Diagnostic {
    Diagnostic::new(format!("{path} is a symlink, which Flotilla does not follow"))
        .at(path, 0..0)
        .label("links could point outside the repository")
        .help(format!(
            "replace the link with the file or directory itself (git mv the target to {path})"
        ))
}

pub(super) fn non_utf8_name(path: &str) -> Diagnostic {
    Diagnostic::new(format!("{path} has a name that is not UTF-8"))
        .at(path, 0..0)
        .help("rename it: manifest file and directory names must be UTF-8")
}

pub(super) fn not_regular_manifest(path: &str, what: &str) -> Diagnostic {
    Diagnostic::new(format!("{path} is {what}, not a regular file"))
        .at(path, 0..0)
        .help("manifests must be regular files; remove it or replace it with a file")
}

pub(super) fn too_large_manifest(path: &str, size: u64) -> Diagnostic {
    Diagnostic::new(format!(
        "{path} is {size} bytes, more than the {MAX_READ_BYTES} Flotilla reads of a manifest"
    ))
    .at(path, 0..0)
    .help("split it into smaller files (hosts may be spread over hosts/**/*.toml)")
}

/// What a non-regular, non-directory, non-link file is, for messages.
pub(super) fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

pub(super) fn is_manifest_path(p: &str) -> bool {
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

/// Reads manifests from the working tree without following any link.
pub(super) struct DiskWalk<'a> {
    pub(super) base: &'a Path,
    pub(super) out: &'a mut BTreeMap<String, Vec<u8>>,
    pub(super) problems: &'a mut Vec<Diagnostic>,
}

impl DiskWalk<'_> {
    pub(super) fn visit(&mut self, rel: &str, recurse: bool) -> Result<(), RepoError> {
        let path = self.base.join(rel);
        let io = |cause| RepoError::Io {
            path: path.clone(),
            cause,
        };
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            if in_manifest_location(rel) {
                self.problems.push(symlinked_manifest(rel));
            }
            return Ok(());
        }
        if ft.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&path)
                .map_err(io)?
                .collect::<Result<_, _>>()
                .map_err(io)?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    let child = format!("{rel}/{}", name.to_string_lossy());
                    if in_manifest_location(&child) {
                        self.problems.push(non_utf8_name(&child));
                    }
                    continue;
                };
                let child = format!("{rel}/{name}");
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if is_dir && !recurse {
                    continue;
                }
                self.visit(&child, recurse)?;
            }
            return Ok(());
        }
        if !is_manifest_path(rel) {
            return Ok(());
        }
        if !ft.is_file() {
            self.problems.push(not_regular_manifest(rel, file_kind(ft)));
            return Ok(());
        }
        match read_regular(&path, &meta, MAX_READ_BYTES) {
            Ok(bytes) => {
                self.out.insert(rel.to_owned(), bytes);
            }
            Err(ReadError::TooLarge(size)) => self.problems.push(too_large_manifest(rel, size)),
            Err(ReadError::Changed) => self.problems.push(
                Diagnostic::new(format!("{rel} changed while it was being read"))
                    .at(rel, 0..0)
                    .help("run the command again once nothing is changing the fleet directory"),
            ),
            Err(ReadError::Io(e)) => return Err(io(e)),
        }
        Ok(())
    }
}

pub(super) enum ReadError {
    TooLarge(u64),
    /// The path no longer names the file that was checked (replaced by a link or another file).
    Changed,
    Io(std::io::Error),
}

/// Opens a file already checked (by `symlink_metadata`) to be regular, and makes sure the file
/// opened is that same file: were it swapped for a link in between, the link would be caught.
pub(super) fn open_checked(path: &Path, checked: &std::fs::Metadata) -> Result<std::fs::File, ReadError> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let now = file.metadata().map_err(ReadError::Io)?;
    if !now.is_file() || now.dev() != checked.dev() || now.ino() != checked.ino() {
        return Err(ReadError::Changed);
    }
    Ok(file)
}

/// Reads at most `limit` bytes of a checked regular file; more is an error, never a truncation.
pub(super) fn read_regular(
    path: &Path,
    checked: &std::fs::Metadata,
    limit: u64,
) -> Result<Vec<u8>, ReadError> {
    use std::io::Read as _;
    if checked.len() > limit {
        return Err(ReadError::TooLarge(checked.len()));
    }
    let file = open_checked(path, checked)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Finds a repository path in the working tree one component at a time, never following a
/// link: the final regular file's path and metadata, or what stood in the way.
pub(super) fn locate_on_disk(base: &Path, rel: &str) -> Result<(PathBuf, std::fs::Metadata), RepoEntry> {
    let parts: Vec<&str> = rel.split('/').collect();
    let mut cur = base.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        cur.push(part);
        let meta = match std::fs::symlink_metadata(&cur) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RepoEntry::Missing),
            Err(e) if e.raw_os_error() == Some(20) => return Err(RepoEntry::Missing), // ENOTDIR
            Err(e) => return Err(RepoEntry::Unreadable(e.to_string())),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Err(RepoEntry::Symlink(parts[..=i].join("/")));
        }
        let last = i + 1 == parts.len();
        if !last {
            if !ft.is_dir() {
                return Err(RepoEntry::Missing);
            }
            continue;
        }
        if ft.is_dir() {
            return Err(RepoEntry::Directory);
        }
        if !ft.is_file() {
            return Err(RepoEntry::NotRegular(file_kind(ft).to_owned()));
        }
        return Ok((cur, meta));
    }
    Err(RepoEntry::Missing)
}

/// Finds a repository path in a commit one tree entry at a time: a symlink (mode 120000) in
/// any component is reported as such rather than as a missing file.
pub(super) fn locate_in_commit(
    repo: &git2::Repository,
    commit: git2::Oid,
    prefix: &str,
    rel: &str,
) -> Result<git2::Oid, RepoEntry> {
    let unreadable = |e: git2::Error| RepoEntry::Unreadable(e.message().to_owned());
    let mut tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(unreadable)?;
    if !prefix.is_empty() {
        let id = tree.get_path(Path::new(prefix)).map_err(unreadable)?.id();
        tree = repo.find_tree(id).map_err(unreadable)?;
    }
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let (id, mode, kind) = match tree.get_name(part) {
            Some(e) => (e.id(), e.filemode(), e.kind()),
            None => return Err(RepoEntry::Missing),
        };
        if mode == GIT_SYMLINK {
            return Err(RepoEntry::Symlink(parts[..=i].join("/")));
        }
        let last = i + 1 == parts.len();
        match kind {
            Some(git2::ObjectType::Tree) if last => return Err(RepoEntry::Directory),
            Some(git2::ObjectType::Tree) => tree = repo.find_tree(id).map_err(unreadable)?,
            _ if !last => return Err(RepoEntry::Missing),
            Some(git2::ObjectType::Blob) => return Ok(id),
            _ => return Err(RepoEntry::NotRegular("a submodule".to_owned())),
        }
    }
    Err(RepoEntry::Missing)
}

pub(super) fn is_dirty(repo: &git2::Repository, prefix: &str) -> bool {
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
