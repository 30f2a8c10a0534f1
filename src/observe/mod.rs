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
mod parse;
pub use memo::Memo;
pub use parse::{parse, parse_df};

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
    /// The host can enlarge the pipe an upload arrives on (Linux, with `perl`): uploads to it
    /// then go through large pipes on both ends. Not part of the fingerprint.
    #[serde(skip)]
    pub large_pipes: bool,
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
    let out = run_probe(session, host, env.clone(), stdin, memo.is_some()).await?;
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
        let out = run_probe(session, host, env, stdin, memo.is_some()).await?;
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
    let out = run_probe(session, host, env, Vec::new(), false).await?;
    let obs = parse(&out, &[]).map_err(|why| ObserveError::Malformed {
        host: host.name.to_string(),
        why,
    })?;
    Ok((obs.usage, obs.free_space.and_then(|f| f.runtimes_used_percent)))
}

/// Runs the probe: on the session's resident shell for a long-running caller (`resident`:
/// watch, which has a [`Memo`]), as one command otherwise. Why not always resident: an open
/// resident holds three descriptors per host until the run ends, which a one-shot `plan` of
/// thousands of hosts would pay for nothing (it probes each host once or twice).
async fn run_probe(
    session: &mut dyn Session,
    host: &DesiredHost,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
    resident: bool,
) -> Result<Vec<u8>, ObserveError> {
    let script = Script {
        text: PROBE,
        env,
        stdin,
        timeout: None,
        large_input: false,
    };
    let out = if resident {
        session.run_resident(&script).await?
    } else {
        session.run(&script).await?
    };
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
