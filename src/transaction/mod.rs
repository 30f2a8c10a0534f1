//! One host's transaction (DESIGN §6.1): the plan's changes for a host turned into a bundle
//! (op lines, file contents, command files, the `pending` and final `state.json`), uploaded
//! with the artifacts it needs, and run on the host by `txn.sh`, which holds the host lock,
//! checks that the host is still what the plan saw, applies, checks health, commits, and rolls
//! back by itself on any failure before the commit.
//!
//! The op lines carry only values the manifests' validation already constrained (names,
//! normalised paths, digests, modes); commands travel as files, never as script text.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::hoststate::{FileState, HostState, RuntimeState};
use crate::manifest::model::{Fleet, HostPath};
use crate::observe::{Observation, ObservedFile};
use crate::plan::{Action, Change, Kind};
use crate::resolve::{DesiredHost, sha256_hex};
use crate::transport::{Script, Session, TransportError};

mod build;
mod report;

pub use build::build;
pub use report::{CommandOutput, Report, describe_failure};
use report::{StepStream, parse_report};

/// The host transaction, one constant script in two files (txn_lib.sh: settings and functions;
/// txn_main.sh: the flow).
const TXN_SH: &str = concat!(include_str!("txn_lib.sh"), include_str!("txn_main.sh"));
const LAUNCH_SH: &str = include_str!("launch.sh");

/// An artifact the host needs, verified on the controller.
#[derive(Debug, Clone)]
pub struct Upload {
    pub sha256: String,
    pub local_path: PathBuf,
}

/// What the person watching a run wants from its hosts besides each result (DESIGN §6.5).
/// Each costs host work, so it is asked for only when something shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Detail {
    /// Each on-host step as the transaction starts it (a terminal, `-v` or a JSON log shows
    /// them): [`run`]'s `progress` hears [`Progress::OnHost`].
    pub steps: bool,
    /// The last lines of every hook's, health check's and on_change's output, also when it
    /// succeeds (`-v`): [`Report::outputs`]. Never a sensitive file's on_change.
    pub output: bool,
}

/// What [`run`] reports while a transaction goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// A phase on the controller's side (uploading, starting the transaction).
    Controller(&'a str),
    /// The step the host's transaction just started (with [`Detail::steps`]); host text,
    /// sanitized.
    OnHost(&'a str),
}

/// What the transaction needs besides the host's plan.
pub struct Context<'a> {
    pub fleet: &'a Fleet,
    pub revision: Option<&'a str>,
    pub store_id: &'a str,
    pub epoch: u64,
    pub now: jiff::Timestamp,
    /// (runtime, version) → verified artifact.
    pub artifacts: &'a BTreeMap<(String, String), Upload>,
    /// What the hosts report besides each result.
    pub detail: Detail,
}

/// A host's transaction, ready to upload.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub id: String,
    pub ops: String,
    /// Bundle files: relative path → content.
    pub bundle: BTreeMap<String, Arc<[u8]>>,
    /// Bundle files whose mode is not 0600: a file's copy carries the mode the host gives it.
    pub modes: BTreeMap<String, u32>,
    pub uploads: Vec<Upload>,
    /// What the host reports besides the result ([`Context::detail`]).
    pub detail: Detail,
    /// The host can enlarge the pipe its uploads arrive on (its probe found how): the
    /// controller enlarges its end too ([`crate::transport::Script::large_input`]).
    pub large_pipes: bool,
}

/// How a host's transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Committed, but a deletion or prune after the commit failed.
    AppliedWithErrors(String),
    /// The host changed since the plan; nothing was touched.
    Stale(String),
    /// Another transaction holds the host's lock; nothing was touched.
    Locked(String),
    /// A step failed and the host is back where it was.
    RolledBack(String),
    /// A step failed and so did the rollback: the host needs a person.
    Broken(String),
    /// A health re-check after a bake failed; nothing was changed by the check.
    Unhealthy(String),
}

impl Outcome {
    pub fn failed(&self) -> bool {
        !matches!(self, Outcome::Applied | Outcome::AppliedWithErrors(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("host {host}: {what}")]
    Host { host: String, what: String },
    #[error("host {host}: building the transaction bundle: {source}")]
    Bundle { host: String, source: std::io::Error },
}

pub use crate::plan::change_digest;

/// The transaction directory as a tar to unpack in state_dir: `txn/<id>/` (0700, root's only:
/// undo copies and file contents may be sensitive) and everything in it.
fn tar_bundle(t: &Transaction) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let top = format!("txn/{}", t.id);
    let mut dirs = BTreeSet::new();
    for path in t.bundle.keys() {
        if let Some((dir, _)) = path.rsplit_once('/') {
            dirs.insert(dir.to_owned());
        }
    }
    // undo/ receives copies of the files a transaction replaces, out/ the output of each
    // command with -v: root's only, and present from the start (no `mkdir` on the host).
    dirs.insert("undo".to_owned());
    dirs.insert("out".to_owned());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: String, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        b.append_data(&mut h, path, std::io::empty())
    };
    dir(&mut b, format!("{top}/"), 0o700)?;
    for d in &dirs {
        dir(
            &mut b,
            format!("{top}/{d}/"),
            if d == "undo" || d == "out" { 0o700 } else { 0o755 },
        )?;
    }
    for (path, data) in &t.bundle {
        let mut h = tar::Header::new_gnu();
        h.set_mode(t.modes.get(path).copied().unwrap_or(0o600));
        h.set_size(data.len() as u64);
        b.append_data(&mut h, format!("{top}/{path}"), &data[..])?;
    }
    b.into_inner()
}

/// The tar header of an artifact `len` bytes long, uploaded as `staging/<sha256>.tar.gz`
/// (txn.sh checks the digest before any use); its data and padding follow separately,
/// streamed from the artifact cache.
fn tar_upload_header(sha256: &str, len: u64) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(len);
    // An empty reader: only the header is written, no padding.
    b.append_data(&mut h, format!("staging/{sha256}.tar.gz"), std::io::empty())?;
    // Not `into_inner`, which would end the archive.
    Ok(b.get_ref().clone())
}

fn env(desired: &DesiredHost, txn: &str, mode: &str, detail: Detail) -> Vec<(String, String)> {
    let s = &desired.settings;
    let flag = |on: bool| if on { "1" } else { "" }.to_owned();
    vec![
        ("FLOTILLA_STEPS".into(), flag(detail.steps)),
        ("FLOTILLA_OUTPUT".into(), flag(detail.output)),
        ("FLOTILLA_STATE_DIR".into(), s.state_dir.value.to_string()),
        ("FLOTILLA_RUNTIMES_DIR".into(), s.runtimes_dir.value.to_string()),
        ("FLOTILLA_HOST".into(), desired.name.to_string()),
        ("FLOTILLA_ENVIRONMENT".into(), desired.environment.to_string()),
        ("FLOTILLA_TXN".into(), txn.to_owned()),
        ("FLOTILLA_MODE".into(), mode.to_owned()),
        (
            "FLOTILLA_KEEP_VERSIONS".into(),
            s.keep_versions.value.max(1).to_string(),
        ),
        (
            "FLOTILLA_COMMAND_TIMEOUT".into(),
            s.command_timeout.value.as_secs().max(1).to_string(),
        ),
    ]
}

/// Streams the artifacts and the bundle to the host and runs the transaction there, all in
/// one command that holds the host lock from the first byte; waits for its result.
/// `progress` hears each phase, and with [`Detail::steps`] each on-host step as it starts,
/// for the views.
pub async fn run(
    session: &mut dyn Session,
    desired: &DesiredHost,
    root: &std::path::Path,
    txn: &Transaction,
    progress: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> Result<Report, TxnError> {
    use tokio::io::AsyncReadExt as _;
    // The host's root is the transport's business (FLOTILLA_ROOT); kept for compatibility.
    let _ = root;
    let host = desired.name.to_string();
    let mut input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = Box::new(tokio::io::empty());
    let mut upload_bytes = 0u64;
    for u in &txn.uploads {
        // The digest names the file on the host (staging/<sha256>.tar.gz): never anything else.
        if u.sha256.len() != 64 || !u.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(TxnError::Host {
                host: host.clone(),
                what: format!("artifact digest {:?} is not a sha256", u.sha256),
            });
        }
        let file = tokio::fs::File::open(&u.local_path)
            .await
            .map_err(|e| TxnError::Host {
                host: host.clone(),
                what: format!("opening cached artifact {}: {e}", u.local_path.display()),
            })?;
        let len = file
            .metadata()
            .await
            .map_err(|e| TxnError::Host {
                host: host.clone(),
                what: format!("reading cached artifact {}: {e}", u.local_path.display()),
            })?
            .len();
        upload_bytes = upload_bytes.saturating_add(len);
        let bundle_err = |source| TxnError::Bundle {
            host: host.clone(),
            source,
        };
        let header = tar_upload_header(&u.sha256, len).map_err(bundle_err)?;
        // Exactly `len` bytes whatever happens to the file meanwhile (a shorter one is padded
        // with zeros and fails the digest check on the host), then the padding to 512 bytes.
        let data = file.take(len).chain(tokio::io::repeat(0)).take(len);
        let pad = vec![0u8; ((512 - len % 512) % 512) as usize];
        input = Box::new(
            input
                .chain(std::io::Cursor::new(header))
                .chain(data)
                .chain(std::io::Cursor::new(pad)),
        );
    }
    // The uploads and the transaction directory are one tar stream, unpacked by one `tar` on
    // the host.
    let bundle = tar_bundle(txn).map_err(|source| TxnError::Bundle {
        host: host.clone(),
        source,
    })?;
    let mut input = input.chain(std::io::Cursor::new(bundle));
    let phase = match txn.uploads.as_slice() {
        [] => "running the transaction".to_owned(),
        [u] => format!("uploading {} and running the transaction", &u.sha256[..12]),
        more => format!("uploading {} artifacts and running the transaction", more.len()),
    };
    progress(Progress::Controller(&phase));
    let on_host = |step: &str| progress(Progress::OnHost(step));
    let mut steps = StepStream::new(&on_host);
    let launched = Launch {
        txn_id: &txn.id,
        mode: "apply",
        upload_bytes,
        detail: txn.detail,
        large_input: txn.large_pipes && upload_bytes > 0,
    };
    launch(session, desired, &launched, &mut input, &mut |chunk| {
        steps.feed(chunk)
    })
    .await
}

/// Rolls back a transaction from its journal: one that a crash or kill left `pending`, or a
/// committed one whose rollout halted.
///
/// Compare-and-swap, under the host lock: it acts only while the host's `state.json` is byte
/// for byte what this transaction wrote (its `pending` record, or its committed state).
/// Otherwise — a later transaction wrote `state.json`, this one was rolled back already, or
/// its directory or journal is gone — it returns [`Outcome::Stale`] and touches nothing, so a
/// halted rollout can never undo another operator's newer change.
pub async fn recover(
    session: &mut dyn Session,
    desired: &DesiredHost,
    txn_id: &str,
) -> Result<Report, TxnError> {
    later(session, desired, txn_id, "recover", Detail::default()).await
}

/// Re-runs a committed transaction's health checks (after a bake), changing nothing.
///
/// Fenced like [`recover`], under the host lock, but only on the committed state: when
/// `state.json` is not byte for byte this transaction's committed state (a later transaction
/// wrote it, it was rolled back, or it never committed) the result is [`Outcome::Stale`] and
/// no check runs. With [`Detail::output`] the report carries the end of each check's output.
pub async fn recheck(
    session: &mut dyn Session,
    desired: &DesiredHost,
    txn_id: &str,
    detail: Detail,
) -> Result<Report, TxnError> {
    let output = Detail {
        steps: false,
        output: detail.output,
    };
    later(session, desired, txn_id, "health", output).await
}

/// Called once the environment's rollout completed without halting: nothing will roll this
/// transaction back any more, so each of its runtimes is pruned to exactly `keep_versions`
/// (the desired host's setting): the active version and the newest others, the previous
/// version no longer kept for its own sake (with `keep_versions = 1` it goes). Also the
/// housekeeping of a commit (old journals, artifacts of versions gone).
///
/// Under the host lock and fenced like [`recheck`]: when `state.json` is not byte for byte
/// this transaction's committed state, [`Outcome::Stale`] and nothing is touched. A failed
/// removal is [`Outcome::AppliedWithErrors`]; success is [`Outcome::Applied`].
pub async fn finish(
    session: &mut dyn Session,
    desired: &DesiredHost,
    txn_id: &str,
) -> Result<Report, TxnError> {
    later(session, desired, txn_id, "finish", Detail::default()).await
}

/// One run of launch.sh: which transaction, in which mode, what it uploads and reports.
struct Launch<'a> {
    txn_id: &'a str,
    mode: &'a str,
    upload_bytes: u64,
    detail: Detail,
    /// Both ends of the input's pipe are made large ([`Transaction::large_pipes`]).
    large_input: bool,
}

/// A later mode (recover, health, finish) of a transaction an apply left: the controller's
/// txn.sh on stdin, nothing uploaded, no steps streamed.
async fn later(
    session: &mut dyn Session,
    desired: &DesiredHost,
    txn_id: &str,
    mode: &str,
    detail: Detail,
) -> Result<Report, TxnError> {
    let l = Launch {
        txn_id,
        mode,
        upload_bytes: 0,
        detail,
        large_input: false,
    };
    launch(session, desired, &l, &mut TXN_SH.as_bytes(), &mut |_| {}).await
}

async fn launch(
    session: &mut dyn Session,
    desired: &DesiredHost,
    l: &Launch<'_>,
    input: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
    tap: crate::transport::Tap<'_>,
) -> Result<Report, TxnError> {
    let timeout = launch_budget(desired.settings.command_timeout.value, l.upload_bytes);
    let mut env = env(desired, l.txn_id, l.mode, l.detail);
    if l.large_input {
        env.push((
            "FLOTILLA_LARGE_PIPE".into(),
            crate::transport::LARGE_PIPE.to_string(),
        ));
    }
    let script = Script {
        text: LAUNCH_SH,
        env,
        stdin: Vec::new(),
        timeout: Some(timeout),
        large_input: l.large_input,
    };
    let out = session.run_with_input(&script, input, tap).await?;
    parse_report(desired.name.as_str(), &out.stdout)
}

/// The bound on one launch: the transaction bounds each host command itself, and this bounds
/// the whole run generously (20 × `command_timeout`), plus the artifacts' upload at the
/// slowest rate Flotilla plans for ([`crate::transport::upload_budget`]), so a large
/// artifact on a slow link is neither cut off by a size-blind bound nor left to stall.
pub fn launch_budget(command_timeout: std::time::Duration, upload_bytes: u64) -> std::time::Duration {
    let steps = command_timeout.saturating_mul(19);
    steps.saturating_add(crate::transport::upload_budget(command_timeout, upload_bytes))
}

/// The transaction id a `pending` record names, if it is well-formed.
pub fn pending_txn(state: &HostState) -> Option<String> {
    let id = state.pending.as_ref()?.get("txn")?.as_str()?;
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then(|| id.to_owned())
}
