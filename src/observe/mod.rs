//! Observation: one probe per host (the same `sh` script for every transport) reporting
//! runtimes, `current` links, managed files, `state.json`, the host's clock and missing tools.
//! Everything that comes back is untrusted: the parser bounds sizes, never trusts a length it
//! cannot check, and drops names that are not valid. File content is asked for only for files
//! Flotilla already manages, that differ from desired and are not sensitive, so a manifest can
//! never make a plan print a file such as /etc/shadow.
//!
//! "Already manages" is what `state.json` says, and `state.json` is only as trustworthy as
//! whoever wrote it: a pull request can add a `local` host whose `state_dir` is in the
//! checkout and commit a forged `state.json` that "manages" a controller file the manifests
//! also desire. So content is asked for only when `state.json` carries the `store_id` of the
//! store this run uses (with no store, never); otherwise the plan shows the change without
//! the old content and says why. A file the manifests desire but `state.json` does not list
//! (a take-over) never has its content asked for: only its size and sha256.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

mod usage;
pub use usage::Usage;

use crate::hoststate::HostState;
use crate::manifest::model::HostPath;
use crate::resolve::DesiredHost;
use crate::transport::{Script, Session, TransportError};

mod memo;
pub use memo::Memo;

const PROBE: &str = include_str!("probe.sh");

/// What one host has now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observation {
    /// The host's clock (Unix seconds) when probed.
    #[serde(skip)]
    pub clock: Option<i64>,
    pub missing_tools: Vec<String>,
    pub state: Option<HostState>,
    /// Why `state.json` could not be read, when it exists but is unusable.
    pub state_error: Option<String>,
    /// sha256 of `state.json` as read, so a transaction can check it is unchanged.
    pub state_sha256: Option<String>,
    /// The bytes of `state.json` as read (their digest is `state_sha256`): a transaction
    /// sends them back as its undo copy instead of having the host copy the file.
    #[serde(skip)]
    pub state_raw: Option<std::sync::Arc<[u8]>>,
    pub runtimes: BTreeMap<String, ObservedRuntime>,
    pub files: BTreeMap<HostPath, ObservedFile>,
    /// Why the content of managed files was not asked for (so no diff can be shown), when
    /// `state.json` was not written by the store this run uses.
    #[serde(skip)]
    pub content_withheld: Option<String>,
    /// Free space where runtimes unpack and where uploads land; `None` when the probe could
    /// not tell. Not part of the fingerprint: it changes all the time, and a saved plan must
    /// not go stale because a log grew.
    #[serde(skip)]
    pub free_space: Option<FreeSpace>,
    /// CPU load and memory in use (`host_limits`); `None` when the probe could not tell. Not
    /// part of the fingerprint either.
    #[serde(skip)]
    pub usage: Option<Usage>,
    /// Each regular file's identity as the probe saw it (device, inode, ctime, size, owner,
    /// mode), for a later probe to skip hashing it if unchanged ([`Memo`]). Not part of the
    /// fingerprint.
    #[serde(skip)]
    pub file_keys: BTreeMap<HostPath, String>,
}

/// Free space on a host (DESIGN §6.1), as `df -Pk` reported it: bytes available to
/// unprivileged users (root may use a few reserved blocks more), so a check against it errs
/// on the side of warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpace {
    /// On the filesystem that holds `runtimes_dir` (where versions unpack).
    pub runtimes: u64,
    /// On the filesystem that holds `state_dir` (where artifacts are uploaded, in `staging/`).
    pub state: u64,
    /// Both directories are on one filesystem: uploads and unpacked versions share `runtimes`.
    pub shared: bool,
    /// How full the filesystem holding `runtimes_dir` is (df's capacity), for `host_limits`.
    pub runtimes_used_percent: Option<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ObservedRuntime {
    pub versions: BTreeSet<String>,
    /// Where `current` points, when it is a link.
    pub current: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObservedFile {
    Missing,
    Regular {
        sha256: String,
        mode: Option<u32>,
        owner: Option<String>,
        group: Option<String>,
        size: u64,
        /// Present only for managed, non-sensitive files that differ from desired.
        #[serde(skip)]
        content: Option<Vec<u8>>,
    },
    /// A directory, symlink or device where a file should be.
    Other {
        what: String,
    },
}

impl Observation {
    /// A host that has been written by Flotilla and not finished: a transaction was cut off.
    pub fn interrupted(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.pending.is_some())
    }

    /// Digest of everything observed that a plan depends on, so a saved plan can tell that a
    /// host changed since it was planned.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        crate::resolve::sha256_hex(&json)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("host {host}: the probe failed (exit {status}): {stderr}")]
    ProbeFailed {
        host: String,
        status: i32,
        stderr: String,
    },
    #[error("host {host}: the probe's output is malformed: {why}")]
    Malformed { host: String, why: String },
}

/// Why `state.json` cannot be trusted to say which files Flotilla manages (for showing their
/// content), or `None` when it was written by `store_id`, the store this run uses.
pub fn untrusted_state(state: &HostState, store_id: Option<&str>) -> Option<String> {
    match store_id {
        Some(id) if state.store_id == id => None,
        Some(_) => Some("old content not shown: state.json was not written by this store".to_owned()),
        None => Some(
            "old content not shown: no store to check state.json against (pass --state-dir to see diffs)"
                .to_owned(),
        ),
    }
}

/// Probes one host over an open session: one script, plus a second only when file contents
/// are needed for diffs. `store_id` is the store this run uses: content is asked for only
/// when the host's `state.json` carries it (see the module's documentation). `memo`: what an
/// earlier probe saw (files it hashed need not be hashed again), updated with this one.
pub async fn observe(
    session: &mut dyn Session,
    host: &DesiredHost,
    store_id: Option<&str>,
    room: bool,
    memo: Option<&Memo>,
) -> Result<Observation, ObserveError> {
    let obs = observe_once(session, host, store_id, room, memo).await;
    if let Some(m) = memo {
        m.remember(host.name.as_str(), obs.as_ref().ok());
    }
    obs
}

async fn observe_once(
    session: &mut dyn Session,
    host: &DesiredHost,
    store_id: Option<&str>,
    room: bool,
    memo: Option<&Memo>,
) -> Result<Observation, ObserveError> {
    let env = full_probe_env(host, room);
    let desired_paths: Vec<&HostPath> = if host.decommission {
        Vec::new()
    } else {
        host.files.keys().collect()
    };
    let seen = memo.and_then(|m| m.seen(host.name.as_str()));
    let mut stdin = Vec::new();
    for p in &desired_paths {
        let line = match seen.as_ref().and_then(|s| Some((s.clock, s.files.get(*p)?))) {
            Some((clock, (sha, key))) => format!("I {clock} {sha} {key} {p}\n"),
            None => format!("S {p}\n"),
        };
        stdin.extend_from_slice(line.as_bytes());
    }
    let out = run_probe(session, host, env.clone(), stdin).await?;
    let mut obs = parse(&out, &desired_paths).map_err(|why| ObserveError::Malformed {
        host: host.name.to_string(),
        why,
    })?;
    obs.content_withheld = obs.state.as_ref().and_then(|st| untrusted_state(st, store_id));
    let content_allowed = obs.state.is_some() && obs.content_withheld.is_none();

    // Second round: managed files that left the manifests (to plan their removal) and the
    // content of managed, non-sensitive files that differ (to show a diff).
    let managed: Vec<HostPath> = obs
        .state
        .as_ref()
        .map(|st| st.files.keys().filter_map(|p| HostPath::new(p).ok()).collect())
        .unwrap_or_default();
    let mut second: Vec<(HostPath, bool)> = Vec::new();
    for p in &managed {
        let desired = if host.decommission {
            None
        } else {
            host.files.get(p)
        };
        match desired {
            None if !obs.files.contains_key(p) => second.push((p.clone(), false)),
            Some(d) if !d.value.sensitive && content_allowed => {
                if let Some(ObservedFile::Regular { sha256, .. }) = obs.files.get(p)
                    && *sha256 != d.value.sha256
                {
                    second.push((p.clone(), true));
                }
            }
            _ => {}
        }
    }
    if !second.is_empty() {
        let mut stdin = Vec::new();
        for (p, content) in &second {
            stdin.extend_from_slice(format!("{} {p}\n", if *content { 'C' } else { 'S' }).as_bytes());
        }
        let mut env = env;
        env.retain(|(k, _)| k != "FLOTILLA_PROBE_FULL");
        let out = run_probe(session, host, env, stdin).await?;
        let paths: Vec<&HostPath> = second.iter().map(|(p, _)| p).collect();
        let extra = parse(&out, &paths).map_err(|why| ObserveError::Malformed {
            host: host.name.to_string(),
            why,
        })?;
        obs.files.extend(extra.files);
    }
    if !content_allowed {
        // Whatever a host sent unasked is dropped too.
        for f in obs.files.values_mut() {
            if let ObservedFile::Regular { content, .. } = f {
                *content = None;
            }
        }
    }
    Ok(obs)
}

/// The environment of a full probe (runtimes, state, usage and, with `room`, free space,
/// besides files).
fn full_probe_env(host: &DesiredHost, room: bool) -> Vec<(String, String)> {
    let s = &host.settings;
    vec![
        (
            "FLOTILLA_PROBE_DF".to_owned(),
            if room { "1" } else { "0" }.to_owned(),
        ),
        (
            "FLOTILLA_RUNTIMES_DIR".to_owned(),
            s.runtimes_dir.value.to_string(),
        ),
        ("FLOTILLA_STATE_DIR".to_owned(), s.state_dir.value.to_string()),
        ("FLOTILLA_PROBE_FULL".to_owned(), "1".to_owned()),
    ]
}

/// Reads a host's usage again (`host_limits`): a probe with no file requests. Returns the
/// CPU and memory usage and how full the filesystem holding `runtimes_dir` is.
pub async fn usage(
    session: &mut dyn Session,
    host: &DesiredHost,
) -> Result<(Option<Usage>, Option<u8>), ObserveError> {
    let env = full_probe_env(host, true);
    let out = run_probe(session, host, env, Vec::new()).await?;
    let obs = parse(&out, &[]).map_err(|why| ObserveError::Malformed {
        host: host.name.to_string(),
        why,
    })?;
    Ok((obs.usage, obs.free_space.and_then(|f| f.runtimes_used_percent)))
}

async fn run_probe(
    session: &mut dyn Session,
    host: &DesiredHost,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
) -> Result<Vec<u8>, ObserveError> {
    let out = session
        .run_resident(&Script {
            text: PROBE,
            env,
            stdin,
            timeout: None,
        })
        .await?;
    if out.status != 0 {
        let stderr = crate::text::sanitize(&String::from_utf8_lossy(&out.stderr));
        let tail: String = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" / ");
        return Err(ObserveError::ProbeFailed {
            host: host.name.to_string(),
            status: out.status,
            stderr: tail,
        });
    }
    Ok(out.stdout)
}

/// Reads the probe's records. `paths` are the file requests, in the order they were sent.
pub fn parse(out: &[u8], paths: &[&HostPath]) -> Result<Observation, String> {
    let mut r = Reader { buf: out, pos: 0 };
    if r.line()? != b"flotilla-probe 1" {
        return Err("it does not start with the probe header (is `sh` a POSIX shell?)".into());
    }
    let mut obs = Observation::default();
    let mut current_runtime: Option<String> = None;
    let mut file_index = 0usize;
    let mut last_file: Option<HostPath> = None;
    loop {
        let line = r.line()?;
        if line == b"flotilla-probe end" {
            break;
        }
        let line = std::str::from_utf8(line).map_err(|_| "a record header is not text")?;
        let (tag, len) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("unexpected line {line:?}"))?;
        let len: usize = len.parse().map_err(|_| format!("bad length in {line:?}"))?;
        let payload = r.payload(len)?;
        let text = || String::from_utf8_lossy(payload).into_owned();
        match tag {
            "clock" => obs.clock = text().trim().parse().ok(),
            "missing" => obs.missing_tools.push(text()),
            "state" => {
                obs.state_sha256 = Some(crate::resolve::sha256_hex(payload));
                obs.state_raw = Some(std::sync::Arc::from(payload));
                match HostState::parse(payload) {
                    Ok(s) => obs.state = Some(s),
                    Err(e) => obs.state_error = Some(e),
                }
            }
            "df" => obs.free_space = parse_df(payload),
            "usage" => obs.usage = usage::parse(payload),
            "state-too-large" => {
                obs.state_error = Some(format!("state.json is {} bytes, too large to read", text()));
            }
            "runtime" => {
                let name = text();
                current_runtime = crate::names::check_name(&name).is_ok().then(|| name.clone());
                if let Some(n) = &current_runtime {
                    obs.runtimes.entry(n.clone()).or_default();
                }
            }
            "current" | "version" => {
                let value = text();
                if let Some(rt) = current_runtime.as_ref().and_then(|n| obs.runtimes.get_mut(n)) {
                    if crate::names::check_name(&value).is_ok() {
                        if tag == "current" {
                            rt.current = Some(value);
                        } else {
                            rt.versions.insert(value);
                        }
                    } else if tag == "current" {
                        rt.current = Some(String::from("(invalid link)"));
                    }
                }
            }
            "file" | "file-missing" | "file-other" => {
                let path = *paths.get(file_index).ok_or("more file records than requests")?;
                file_index += 1;
                let observed = match tag {
                    "file-missing" => ObservedFile::Missing,
                    "file-other" => ObservedFile::Other {
                        what: crate::text::sanitize(&text()),
                    },
                    _ => parse_file(&text())?,
                };
                obs.files.insert(path.clone(), observed);
                last_file = Some(path.clone());
            }
            "key" => {
                let path = last_file.as_ref().ok_or("key without a file record")?;
                // Only what a stat prints: digits, colons and the ctime's dot.
                let key = text();
                if key.len() <= 128 && key.bytes().all(|b| b.is_ascii_digit() || b == b':' || b == b'.') {
                    obs.file_keys.insert(path.clone(), key);
                }
            }
            "content" => {
                let path = last_file.as_ref().ok_or("content without a file record")?;
                // Kept only if it is what was hashed: a file that changed between the two reads
                // (or a FIFO swapped in, which the probe pads with zeros) shows no diff.
                if let Some(ObservedFile::Regular { content, sha256, .. }) = obs.files.get_mut(path)
                    && crate::resolve::sha256_hex(payload) == *sha256
                {
                    *content = Some(payload.to_vec());
                }
            }
            _ => return Err(format!("unknown record `{tag}`")),
        }
    }
    if file_index != paths.len() {
        return Err(format!("{} file requests but {file_index} answers", paths.len()));
    }
    Ok(obs)
}

fn parse_file(fields: &str) -> Result<ObservedFile, String> {
    let f: Vec<&str> = fields.split(' ').collect();
    let [sha, mode, owner, group, size] = f[..] else {
        return Err(format!("bad file record {fields:?}"));
    };
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a file's sha256 could not be read".into());
    }
    let name = |s: &str| crate::names::check_name(s).is_ok().then(|| s.to_owned());
    Ok(ObservedFile::Regular {
        sha256: sha.to_owned(),
        mode: u32::from_str_radix(mode, 8).ok(),
        owner: name(owner),
        group: name(group),
        size: size.parse().unwrap_or(0),
        content: None,
    })
}

/// `df -Pk A B`'s output: a header, then one line per directory ("device blocks used
/// available capacity% mount point"; device and mount point may hold spaces). Anything else —
/// a missing or failed `df`, a line too many or too few, a number that is not one — is
/// unknown, never an error: free space only ever adds a warning.
pub fn parse_df(out: &[u8]) -> Option<FreeSpace> {
    if out.len() > 8192 {
        return None;
    }
    let text = std::str::from_utf8(out).ok()?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    lines.next()?; // the header
    let (rt, st) = (df_line(lines.next()?)?, df_line(lines.next()?)?);
    if lines.next().is_some() {
        return None;
    }
    Some(FreeSpace {
        runtimes: rt.0,
        state: st.0,
        shared: rt.1 == st.1,
        runtimes_used_percent: rt.2,
    })
}

/// One `df -P` line: bytes available, the filesystem's identity (device and mount point) and
/// how full it is (capacity, `None` for "-").
fn df_line(line: &str) -> Option<(u64, (String, String), Option<u8>)> {
    let t: Vec<&str> = line.split_whitespace().collect();
    let num = |s: &str| s.parse::<u64>().ok();
    let count = |s: &str| s == "-" || num(s).is_some();
    let i = (1..t.len().saturating_sub(4)).find(|&i| {
        count(t[i])
            && count(t[i + 1])
            && num(t[i + 2]).is_some()
            && (t[i + 3] == "-" || t[i + 3].strip_suffix('%').is_some_and(|p| num(p).is_some()))
    })?;
    let available = num(t[i + 2])?.checked_mul(1024)?;
    let used = t[i + 3]
        .strip_suffix('%')
        .and_then(|p| p.parse::<u8>().ok())
        .filter(|p| *p <= 100);
    Some((available, (t[..i].join(" "), t[i + 4..].join(" ")), used))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn line(&mut self) -> Result<&'a [u8], String> {
        let rest = &self.buf[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("the output ended early")?;
        if end > 4096 {
            return Err("a record header is too long".into());
        }
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn payload(&mut self, len: usize) -> Result<&'a [u8], String> {
        let rest = &self.buf[self.pos..];
        if rest.len() < len + 1 || rest[len] != b'\n' {
            return Err("a record is shorter than its length".into());
        }
        self.pos += len + 1;
        Ok(&rest[..len])
    }
}

/// Whether a host's probe must report free space (`df`): it has runtimes, which need room to
/// unpack, or its environment limits disk usage (`disk_limit`). A probe without it starts
/// one process fewer, which is much of a warm drift check.
pub fn wants_room(host: &DesiredHost, disk_limit: bool) -> bool {
    disk_limit || !host.runtimes.is_empty()
}

/// Observes every host concurrently, at most `parallel` at once, through the pool's sessions
/// (left open for what follows); one host's failure is its own result and never stops the
/// others. Results are in the order of `hosts`. `store_id` and `memo`: see [`observe`];
/// `room`: whether a host's probe reports free space (see [`wants_room`]).
pub async fn observe_all(
    hosts: &[&DesiredHost],
    fleet_dir: &std::path::Path,
    pool: &std::sync::Arc<crate::transport::Pool>,
    parallel: usize,
    store_id: Option<&str>,
    room: &(dyn Fn(&DesiredHost) -> bool + Sync),
    memo: Option<&Arc<Memo>>,
) -> Vec<Result<Observation, ObserveError>> {
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, host) in hosts.iter().enumerate() {
        let host: DesiredHost = (*host).clone();
        let target = crate::transport::Target::for_host(&host, fleet_dir);
        let (permits, pool) = (permits.clone(), pool.clone());
        let store_id = store_id.map(str::to_owned);
        let room = room(&host);
        let memo = memo.cloned();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = async {
                let mut session = pool.take(&target).await?;
                let obs = observe(
                    session.as_mut(),
                    &host,
                    store_id.as_deref(),
                    room,
                    memo.as_deref(),
                )
                .await;
                if obs.is_ok() {
                    pool.put(&target.host, session).await;
                } else {
                    let _ = session.close().await;
                }
                obs
            }
            .await;
            (i, result)
        });
    }
    let mut out: Vec<Option<Result<Observation, ObserveError>>> = (0..hosts.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| {
                Err(ObserveError::Malformed {
                    host: hosts[i].name.to_string(),
                    why: "the observation task failed".into(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_kept_only_when_it_is_what_was_hashed() {
        let path = HostPath::new("/etc/app.conf").unwrap();
        let probe = |content: &str| {
            let sha = crate::resolve::sha256_hex(b"x = 1\n");
            let file = format!("{sha} 644 root root 6");
            format!(
                "flotilla-probe 1\nfile {}\n{file}\ncontent {}\n{content}\nflotilla-probe end\n",
                file.len(),
                content.len()
            )
        };
        let content_of = |out: String| match parse(out.as_bytes(), &[&path]).unwrap().files.remove(&path) {
            Some(ObservedFile::Regular { content, .. }) => content,
            other => panic!("{other:?}"),
        };
        assert_eq!(content_of(probe("x = 1\n")).as_deref(), Some(&b"x = 1\n"[..]));
        // Changed between the hash and the read, or the zeros a FIFO swapped in is padded with.
        assert_eq!(content_of(probe("x = 2\n")), None);
        assert_eq!(content_of(probe("\0\0\0\0\0\0")), None);
    }

    const HEADER: &str = "Filesystem     1024-blocks    Used Available Capacity Mounted on\n";

    #[test]
    fn df_lines_give_bytes_available_and_whether_the_filesystem_is_shared() {
        let two = format!("{HEADER}tmpfs 40960 1024 39936 3% /srv/my root\n/dev/sda1 1000 - 500 50% /\n");
        let fs = parse_df(two.as_bytes()).unwrap();
        assert_eq!(fs.runtimes, 39936 * 1024);
        assert_eq!(fs.state, 500 * 1024);
        assert!(!fs.shared);
        let one = format!("{HEADER}my dev 10 2 8 20% /\nmy dev 10 2 8 20% /\n");
        assert_eq!(
            parse_df(one.as_bytes()),
            Some(FreeSpace {
                runtimes: 8192,
                state: 8192,
                shared: true,
                runtimes_used_percent: Some(20),
            })
        );
    }

    #[test]
    fn garbage_from_a_host_is_unknown_free_space_not_an_error() {
        let huge = format!("{HEADER}d 1 1 {} 1% /\nd 1 1 1 1% /\n", u64::MAX);
        for bad in [
            "",
            HEADER,
            "df: /x: No such file or directory\n",
            &format!("{HEADER}d 1 1 1 1% /\n"),
            &format!("{HEADER}d 1 1 1 1% /\nd 1 1 1 1% /\nd 1 1 1 1% /\n"),
            &format!("{HEADER}d x 1 1 1% /\nd 1 1 1 1% /\n"),
            &format!("{HEADER}d 1 1 -5 1% /\nd 1 1 1 1% /\n"),
            &huge,
            &"x".repeat(10_000),
        ] {
            assert_eq!(parse_df(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_df(&[0xff, 0xfe, b'\n']), None);
        // A probe that reports garbage free space is still a good observation.
        let out = b"flotilla-probe 1\ndf 3\n1 2\nflotilla-probe end\n";
        let obs = parse(out, &[]).unwrap();
        assert_eq!(obs.free_space, None);
    }
}
