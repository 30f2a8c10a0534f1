//! Following a branch (DESIGN §10): the newest commit of a branch of a local repository, or of
//! a remote one through a bare mirror in the store. Only fast-forwards are followed: a branch
//! whose new head does not descend from the commit in force was force-pushed (or reset), and
//! is reported instead.
//!
//! Remotes are fetched with the system `git` (file://, https:// and ssh:// alike, with the
//! credentials an operator already configures for it), not with libgit2: its https and ssh
//! transports would pull OpenSSL and libssh2 into the build. Arguments are passed as a list,
//! never through a shell, and a token reaches git through its environment
//! (`GIT_CONFIG_VALUE_0`), never its command line, where `ps` would show it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Where the fleet repository comes from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A local repository (the fleet directory is in its work tree): `branch`, or the branch
    /// HEAD is on.
    Local {
        fleet_dir: PathBuf,
        branch: Option<String>,
    },
    /// A remote, mirrored into `mirror` (a bare repository in the store).
    Remote(Remote),
}

/// A remote repository and how to reach it.
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: String,
    pub branch: String,
    pub mirror: PathBuf,
    /// An HTTPS token (sent as `Authorization: Bearer`), read from the environment.
    pub token: Option<String>,
    /// An SSH key for `ssh://` remotes (a deploy key) and the known_hosts to check it with.
    pub identity: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    /// A fetch that takes longer is stopped and reported.
    pub timeout: Duration,
}

/// What a look at the branch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The branch's head, which descends from the commit followed so far (or is the first).
    Head(String),
    /// The branch moved to a commit that does not descend from the one followed: not followed.
    ForcePushed { followed: String, head: String },
}

/// Why the branch could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot read the repository at {path}: {cause}")]
    Open { path: PathBuf, cause: git2::Error },
    #[error(
        "HEAD of {path} is not on a branch (detached): pass `--branch NAME` to say which branch to follow"
    )]
    Detached { path: PathBuf },
    #[error("branch `{branch}` does not exist in {path}: check `--branch`, or whether it was deleted")]
    NoBranch { branch: String, path: PathBuf },
    #[error("cannot fetch branch `{branch}` from {url}: {why}")]
    Fetch {
        url: String,
        branch: String,
        why: String,
    },
    #[error("cannot run git (needed for --remote): {0}; install git")]
    Git(std::io::Error),
}

/// Follows one branch; remembers the commit in force.
#[derive(Debug)]
pub struct Follower {
    origin: Origin,
    followed: Option<String>,
}

impl Follower {
    pub fn new(origin: Origin) -> Follower {
        Follower {
            origin,
            followed: None,
        }
    }

    /// Where `FleetRepo::open(dir, Some(commit))` reads the fleet from.
    pub fn fleet_dir(&self) -> &Path {
        match &self.origin {
            Origin::Local { fleet_dir, .. } => fleet_dir,
            Origin::Remote(r) => &r.mirror,
        }
    }

    /// Files whose change means the branch may have moved (a local repository's refs), for
    /// the file watcher; none for a remote, which is polled.
    /// Each with whether to watch it recursively.
    pub fn watched_paths(&self) -> Vec<(PathBuf, bool)> {
        let Origin::Local { fleet_dir, .. } = &self.origin else {
            return Vec::new();
        };
        let Ok(repo) = git2::Repository::discover(fleet_dir) else {
            return Vec::new();
        };
        // Branch updates rewrite refs/heads/… (or packed-refs after `git pack-refs`); HEAD
        // changes on checkout. Watching the git directory itself (not recursively) sees all
        // three, since git replaces those files by rename.
        let git = repo.path().to_owned();
        // Branch names may hold slashes: refs/heads is watched recursively.
        vec![(git.clone(), false), (git.join("refs").join("heads"), true)]
    }

    /// Marks `commit` as the one in force (after it was read, valid or not).
    pub fn follow(&mut self, commit: &str) {
        self.followed = Some(commit.to_owned());
    }

    /// Fetches (a remote) and reads the branch's head.
    pub async fn look(&self) -> Result<Seen, FollowError> {
        if let Origin::Remote(r) = &self.origin {
            fetch(r).await?;
        }
        let dir = self.fleet_dir().to_owned();
        let branch = match &self.origin {
            Origin::Local { branch, .. } => branch.clone(),
            Origin::Remote(_) => Some(FETCHED.to_owned()),
        };
        let followed = self.followed.clone();
        let blocking = move || head_of(&dir, branch.as_deref(), followed.as_deref());
        tokio::task::spawn_blocking(blocking)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// The ref a remote's branch is fetched into, in the mirror.
const FETCHED: &str = "refs/flotilla/fetched";

fn head_of(dir: &Path, branch: Option<&str>, followed: Option<&str>) -> Result<Seen, FollowError> {
    let open = |cause| FollowError::Open {
        path: dir.to_owned(),
        cause,
    };
    let repo = git2::Repository::discover(dir).map_err(open)?;
    let name = match branch {
        Some(b) if b.starts_with("refs/") => b.to_owned(),
        Some(b) => format!("refs/heads/{b}"),
        None => {
            let head = repo.find_reference("HEAD").map_err(open)?;
            match head.symbolic_target().ok().flatten() {
                Some(t) => t.to_owned(),
                None => return Err(FollowError::Detached { path: dir.to_owned() }),
            }
        }
    };
    let no_branch = || FollowError::NoBranch {
        branch: name.trim_start_matches("refs/heads/").to_owned(),
        path: dir.to_owned(),
    };
    let head = repo
        .find_reference(&name)
        .and_then(|r| r.peel_to_commit())
        .map_err(|_| no_branch())?
        .id();
    let Some(followed) = followed else {
        return Ok(Seen::Head(head.to_string()));
    };
    let old = git2::Oid::from_str(followed).map_err(open)?;
    if head == old || repo.graph_descendant_of(head, old).unwrap_or(false) {
        Ok(Seen::Head(head.to_string()))
    } else {
        Ok(Seen::ForcePushed {
            followed: followed.to_owned(),
            head: head.to_string(),
        })
    }
}

/// Brings `r.branch` into the mirror's `refs/flotilla/fetched`, creating the mirror (or
/// re-creating a corrupt one) as needed.
async fn fetch(r: &Remote) -> Result<(), FollowError> {
    let fresh = git2::Repository::open_bare(&r.mirror).is_err();
    if fresh {
        // Missing or corrupt: start again from an empty bare repository.
        if r.mirror.exists() {
            tracing::warn!(mirror = %r.mirror.display(), "the mirror is not a readable repository; cloning again");
            let _ = std::fs::remove_dir_all(&r.mirror);
        }
        git2::Repository::init_bare(&r.mirror).map_err(|cause| FollowError::Open {
            path: r.mirror.clone(),
            cause,
        })?;
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C")
        .arg(&r.mirror)
        .args(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--"])
        .arg(&r.url)
        .arg(format!("+refs/heads/{}:{FETCHED}", r.branch))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(token) = &r.token {
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", format!("Authorization: Bearer {token}"));
    }
    if r.identity.is_some() || r.known_hosts.is_some() {
        // GIT_SSH_COMMAND is parsed by a shell: the paths are quoted for it. They come from
        // the operator's command line, never from the repository.
        let mut ssh = String::from("ssh -o BatchMode=yes -o StrictHostKeyChecking=yes");
        if let Some(k) = &r.identity {
            ssh.push_str(&format!(" -o IdentitiesOnly=yes -i {}", shell_quote(k)));
        }
        if let Some(k) = &r.known_hosts {
            ssh.push_str(&format!(" -o UserKnownHostsFile={}", shell_quote(k)));
        }
        cmd.env("GIT_SSH_COMMAND", ssh);
    }
    let failed = |why: String| FollowError::Fetch {
        url: redact(&r.url),
        branch: r.branch.clone(),
        why,
    };
    let child = cmd.spawn().map_err(FollowError::Git)?;
    let out = tokio::time::timeout(r.timeout, child.wait_with_output())
        .await
        .map_err(|_| failed(format!("no answer within {}s", r.timeout.as_secs())))?
        .map_err(FollowError::Git)?;
    if out.status.success() {
        return Ok(());
    }
    let why = git_error(&out.stderr);
    Err(failed(match &r.token {
        Some(t) if !t.is_empty() => why.replace(t.as_str(), "***"),
        _ => why,
    }))
}

/// git's own words, without its boilerplate ("Please make sure you have the correct access
/// rights…"), on one bounded line.
fn git_error(stderr: &[u8]) -> String {
    let text = crate::text::sanitize(&String::from_utf8_lossy(stderr));
    let lines: Vec<&str> = text
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("fatal: ")
                .trim_start_matches("error: ")
        })
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Please make sure you have the correct access rights")
                && *l != "and the repository exists."
        })
        .collect();
    let mut why = if lines.is_empty() {
        "git fetch failed".to_owned()
    } else {
        lines.join("; ")
    };
    if why.len() > 500 {
        let cut = (0..=500).rev().find(|&i| why.is_char_boundary(i)).unwrap_or(0);
        why.truncate(cut);
        why.push('…');
    }
    why
}

/// A URL without its password (`https://user:secret@host` → `https://user:***@host`).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') && !user.contains('/') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_errors_keep_the_cause_and_drop_the_boilerplate() {
        let e = b"Host key verification failed.\r\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n";
        assert_eq!(
            git_error(e),
            "Host key verification failed.; Could not read from remote repository."
        );
        assert_eq!(git_error(b""), "git fetch failed");
        assert!(git_error(&[b'x'; 2000]).len() <= 504);
    }

    #[test]
    fn passwords_in_urls_are_never_shown() {
        assert_eq!(
            redact("https://bot:s3cr3t@git.example/x.git"),
            "https://bot:***@git.example/x.git"
        );
        assert_eq!(redact("ssh://git@host/x.git"), "ssh://git@host/x.git");
        assert_eq!(redact("file:///srv/x.git"), "file:///srv/x.git");
    }

    #[test]
    fn paths_are_quoted_for_the_shell_that_reads_git_ssh_command() {
        assert_eq!(shell_quote(Path::new("/k/it's key")), r"'/k/it'\''s key'");
    }
}
