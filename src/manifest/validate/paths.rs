//! Paths in manifests: local files (keys, known_hosts) and repository files (artifacts,
//! file sources), resolved without leaving the repository.

use super::*;

/// `/a/b/../c` → `/a/c`, without touching the disk (the path is on the controller, and may
/// not exist yet).
pub(super) fn lexically_normal(p: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Resolves every link in `p` that exists on this machine; the part that does not exist yet
/// is appended as written (normalised).
pub(super) fn resolve_links(p: &Path) -> std::path::PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return lexically_normal(&out);
        }
        match (existing.file_name().map(ToOwned::to_owned), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return lexically_normal(p),
        }
    }
}

/// Where `value` (absolute, or `~/` under `home`) really points when that is inside `repo`,
/// for the message; `None` when it is outside. Both spellings are compared: as written
/// (normalised) and with `~` expanded and every link resolved, against the resolved `repo`.
pub(super) fn inside_repository(value: &str, repo: &Path, home: Option<&Path>) -> Option<String> {
    let expanded = match value.strip_prefix("~/") {
        Some(rest) => home?.join(rest),
        None => std::path::PathBuf::from(value),
    };
    let repo_real = resolve_links(repo);
    let as_written = lexically_normal(&expanded);
    if as_written.starts_with(repo) || as_written.starts_with(&repo_real) {
        return Some(format!("{} is inside {}", as_written.display(), repo.display()));
    }
    let real = resolve_links(&expanded);
    if real.starts_with(&repo_real) {
        return Some(format!(
            "{value} resolves to {}, inside {}",
            real.display(),
            repo_real.display()
        ));
    }
    None
}

pub(super) fn file_stem<'p>(path: &'p str, dir: &str) -> Option<&'p str> {
    path.strip_prefix(dir)?.strip_suffix(".toml")
}

impl super::Validator<'_> {
    /// `identity_file` and `known_hosts`: absolute or `~/`, never inside the repository (a
    /// commit must not be able to choose the credentials or host keys it is checked with).
    pub(super) fn local_path(&mut self, file: &str, p: &Option<Str>, key: &str) -> Option<String> {
        let p = p.as_ref()?;
        let s = p.get();
        if !(s.starts_with('/') || s.starts_with("~/")) {
            self.err(
                file,
                p.span(),
                format!("`{key}` must be an absolute path or start with `~/`"),
            )
            .label = Some("relative paths would point into the repository".into());
            return None;
        }
        if let Some(repo) = self.ctx.repo_dir
            && let Some(inside) = inside_repository(s, repo, self.ctx.home)
        {
            self.err(
                file,
                p.span(),
                format!("`{key}` may not point inside the repository"),
            )
            .label = Some(inside);
            if let Some(d) = self.diags.last_mut() {
                d.help = Some("keep keys outside the fleet repository, e.g. under ~/.ssh/".into());
            }
            return None;
        }
        Some(s.clone())
    }

    /// A path inside the repository (`source`, `artifact`): relative, normalised, present, and
    /// not a symlink. Returns the content when `read`.
    pub(super) fn repo_file(
        &mut self,
        file: &str,
        p: &Str,
        key: &str,
        read: bool,
    ) -> Option<Option<Arc<[u8]>>> {
        let s = p.get();
        let bad = s.is_empty()
            || s.starts_with('/')
            || s.chars().any(char::is_control)
            || s.split('/').any(|c| c.is_empty() || c == "." || c == "..");
        if bad {
            self.err(
                file,
                p.span(),
                format!("`{key}` must be a normalised path relative to the fleet root"),
            )
            .label = Some("no leading `/`, no `.` or `..`, no `//`".into());
            return None;
        }
        let missing = |v: &mut Self, what: String| {
            v.err(file, p.span(), what).label = Some(format!("`{key}` must name a file in the repository"));
        };
        match self.repo.entry(s, read) {
            RepoEntry::File(bytes) => Some(bytes),
            RepoEntry::Missing => {
                missing(self, format!("`{s}` does not exist"));
                None
            }
            RepoEntry::Directory => {
                missing(self, format!("`{s}` is a directory"));
                None
            }
            RepoEntry::Symlink(link) => {
                let message = if link == *s {
                    format!("`{s}` is a symlink")
                } else {
                    format!("`{s}` passes through a symlink: `{link}`")
                };
                self.err(file, p.span(), message).label =
                    Some("symlinks are refused: they could point outside the repository".into());
                if let Some(d) = self.diags.last_mut() {
                    d.help = Some(format!("commit the file itself instead of the link `{link}`"));
                }
                None
            }
            RepoEntry::NotRegular(what) => {
                self.err(file, p.span(), format!("`{s}` is {what}, not a regular file"))
                    .label = Some(format!("`{key}` must name a regular file in the repository"));
                None
            }
            RepoEntry::TooLarge(size) => {
                self.err(
                    file,
                    p.span(),
                    format!("`{s}` is {size} bytes, more than the {MAX_SOURCE_BYTES} Flotilla reads"),
                )
                .label = Some(format!("`{key}` files are read whole and shown in plans"));
                if let Some(d) = self.diags.last_mut() {
                    d.help =
                        Some("ship large content as a runtime artifact instead of a managed file".into());
                }
                None
            }
            RepoEntry::Unreadable(why) => {
                self.err(file, p.span(), format!("`{s}` cannot be read: {why}"));
                None
            }
        }
    }

    pub(super) fn artifact_ref(&mut self, file: &str, p: &Str, key: &str) -> Option<ArtifactRef> {
        let s = p.get();
        if s.starts_with("https://") || s.starts_with("file://") {
            if s.chars().any(|c| c.is_control() || c == ' ') {
                self.err(
                    file,
                    p.span(),
                    format!("`{key}` URL contains spaces or control characters"),
                );
                return None;
            }
            return Some(ArtifactRef::Url(s.clone()));
        }
        if s.contains("://") {
            self.err(file, p.span(), format!("unsupported URL scheme in `{key}`"))
                .label = Some("use https://, file:// or a repository path".into());
            return None;
        }
        self.repo_file(file, p, key, false)
            .map(|_| ArtifactRef::Repo(s.clone()))
    }
}
