//! How Flotilla reaches a host. A transport has two basic operations — run a POSIX `sh`
//! script with stdin and environment, and stream a file to a host path — and everything else
//! (the probe, transactions) is built on them, so local and SSH hosts behave the same.
//! Manifest values reach scripts only through the environment or stdin, never as script text.

pub mod local;
mod pipe;
mod resident;
pub mod ssh;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use crate::manifest::model::TransportKind;
use crate::resolve::DesiredHost;

/// A script and its inputs. The script is Flotilla's own constant text; `env` and `stdin`
/// carry everything that came from manifests.
#[derive(Debug, Clone, Default)]
pub struct Script<'a> {
    pub text: &'a str,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub timeout: Option<Duration>,
    /// The input is large (an upload): the SSH transport makes the pipe that feeds the
    /// command [`LARGE_PIPE`] bytes, so it crosses in fewer wake-ups (the local transport
    /// needs nothing: `launch.sh` enlarges that same pipe). Only for hosts whose probe said
    /// they enlarge their end too: on loopback a big controller pipe alone made the upload
    /// burstier and cost the hosts' sshd more than it saved (measured).
    pub large_input: bool,
}

/// The size of a pipe that carries an upload, on either end (Linux's default unprivileged
/// maximum, /proc/sys/fs/pipe-max-size).
pub const LARGE_PIPE: i32 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("host {host}: {what}: {source}")]
    Io {
        host: String,
        what: String,
        source: std::io::Error,
    },
    #[error("host {host}: {what} did not finish within {timeout:?}")]
    Timeout {
        host: String,
        what: String,
        timeout: Duration,
    },
    #[error("host {host}: root directory {root} does not exist (create it, or fix `root`)")]
    NoRoot { host: String, root: PathBuf },
    #[error(
        "host {host}: unreachable at {address} port {port}: {detail} (check `address` and `port`, and that sshd runs there)"
    )]
    Unreachable {
        host: String,
        address: String,
        port: u16,
        detail: String,
    },
    #[error(
        "host {host}: authentication failed for user `{user}` with {identity}: {detail} (check `user` and `identity_file`, and that the key is in the user's authorized_keys)"
    )]
    AuthFailed {
        host: String,
        user: String,
        identity: String,
        detail: String,
    },
    #[error("host {host}: host key refused: {why}; to fix: {fix}")]
    HostKey { host: String, why: String, fix: String },
    #[error("host {host}: `{setting}` cannot be used: {why}")]
    Setting {
        host: String,
        setting: String,
        why: String,
    },
    #[error(
        "host {host}: `become = \"sudo\"` failed for user `{user}`: {detail} (Flotilla runs `sudo -n`, so the user needs a password-less sudo right)"
    )]
    Sudo {
        host: String,
        user: String,
        detail: String,
    },
    #[error("host {host}: connection lost: {detail}")]
    ConnectionLost { host: String, detail: String },
    #[error("host {host}: {what} failed (exit {status}): {stderr}")]
    CommandFailed {
        host: String,
        what: String,
        status: i32,
        stderr: String,
    },
    #[error("host {host}: ssh: {detail}")]
    Ssh { host: String, detail: String },
    /// The host wrote more than Flotilla ever needs to read; the command was stopped.
    #[error(
        "host {host}: {what} wrote more than {limit} bytes to {stream}; stopped it (a probe or transaction never prints that much: check the host)"
    )]
    OutputTooLarge {
        host: String,
        what: String,
        stream: &'static str,
        limit: usize,
    },
}

/// The most a host command may write to stdout. The largest legitimate output is a probe:
/// `state.json` (at most 16 MiB) plus the content of managed files that differ (at most
/// 256 KiB each). A host is untrusted (DESIGN §1): past this it is failed, not buffered.
pub const MAX_STDOUT: usize = 64 << 20;
/// The most a host command may write to stderr (only its tail is ever shown).
pub const MAX_STDERR: usize = 1 << 20;

/// The slowest link Flotilla plans for when it streams an artifact to a host: 1 MiB/s
/// (8 Mbit/s). Conservative on purpose: loopback and LAN links run at hundreds of MiB/s, and
/// even a thin WAN link to a remote site does better; a host reached more slowly than this
/// needs a larger `command_timeout`.
pub const MIN_UPLOAD_RATE: u64 = 1 << 20;

/// How long streaming `bytes` to a host may take: `command_timeout` (for the command that
/// receives them to start, and for the last write to be acknowledged) plus `bytes` at
/// [`MIN_UPLOAD_RATE`]. A link slower than that, or a host that stops reading, fails the
/// upload instead of holding the host's session (and its lock) without end.
pub fn upload_budget(command_timeout: Duration, bytes: u64) -> Duration {
    let transfer = Duration::from_secs(bytes.div_ceil(MIN_UPLOAD_RATE));
    command_timeout.saturating_add(transfer)
}

/// Hears a command's stdout as it arrives, chunk by chunk as read (a line may span chunks):
/// the progress a long host command reports before it ends.
pub type Tap<'t> = &'t mut (dyn FnMut(&[u8]) + Send);

/// Reads `r` to its end, keeping at most `limit` bytes. Returns what was kept and whether
/// there was more; reading stops at `limit + 1`, so memory stays bounded whatever the host
/// sends.
pub(crate) async fn read_bounded<R: AsyncRead + Unpin>(
    r: Option<R>,
    limit: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    read_bounded_tapped(r, limit, &mut |_| {}).await
}

/// [`read_bounded`], with `tap` hearing each chunk as it arrives (never past `limit`).
pub(crate) async fn read_bounded_tapped<R: AsyncRead + Unpin>(
    r: Option<R>,
    limit: usize,
    tap: Tap<'_>,
) -> std::io::Result<(Vec<u8>, bool)> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    if let Some(r) = r {
        let mut r = r.take(limit as u64 + 1);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = r.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            let seen = buf.len();
            buf.extend_from_slice(&chunk[..n]);
            tap(&buf[seen..buf.len().min(limit)]);
        }
    }
    let over = buf.len() > limit;
    buf.truncate(limit);
    Ok((buf, over))
}

/// An open connection to one host; one per host, reused for every step.
#[async_trait]
pub trait Session: Send {
    /// Runs `sh -c script` on the host (through `sudo -n` when the host says so).
    async fn run(&mut self, script: &Script<'_>) -> Result<Output, TransportError>;
    /// Runs `script` with `script.stdin` followed by everything `input` yields on its stdin,
    /// so one command can carry large data (artifacts) to the script; `tap` hears its stdout
    /// as it arrives, for the progress a long command reports. The SSH and local transports
    /// stream both; this default, for other sessions, reads the input into memory first and
    /// taps the output once the command ended.
    async fn run_with_input(
        &mut self,
        script: &Script<'_>,
        input: &mut (dyn AsyncRead + Unpin + Send),
        tap: Tap<'_>,
    ) -> Result<Output, TransportError> {
        use tokio::io::AsyncReadExt as _;
        let mut stdin = script.stdin.clone();
        input
            .read_to_end(&mut stdin)
            .await
            .map_err(|source| TransportError::Io {
                host: String::from("(this host)"),
                what: "reading a script's input".into(),
                source,
            })?;
        let out = self
            .run(&Script {
                stdin,
                ..script.clone()
            })
            .await?;
        tap(&out.stdout);
        Ok(out)
    }
    /// Runs `script` as [`Session::run`] does, for a script run again and again (the probe):
    /// the SSH transport keeps one shell open on its connection that serves every call for
    /// the same script, instead of a channel, a login shell and a wrapper per call. Its
    /// stderr is not kept; a call that fails is run again the ordinary way, which reports it.
    /// This default, for other transports, is [`Session::run`].
    async fn run_resident(&mut self, script: &Script<'_>) -> Result<Output, TransportError> {
        self.run(script).await
    }
    /// Streams `data` into `path` on the host (a path already prefixed with the host's root),
    /// within `command_timeout` (callers that stream large data use [`upload_budget`] in a
    /// script's `timeout` and [`Session::run_with_input`] instead).
    async fn upload(
        &mut self,
        data: &mut (dyn AsyncRead + Unpin + Send),
        path: &str,
    ) -> Result<u64, TransportError>;
    /// Whether the connection can still run commands (an idle SSH master exits after its
    /// `ControlPersist` bound). Cheap: no round trip to the host.
    async fn is_alive(&mut self) -> bool {
        true
    }
    /// Closes the connection explicitly (SSH masters must not be orphaned).
    async fn close(self: Box<Self>) -> Result<(), TransportError>;
}

/// What a transport needs to reach a host, independent of the manifests' types.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub kind: TransportKind,
    pub address: String,
    pub user: String,
    pub port: u16,
    /// Absolute, for both transports (a local relative root is anchored at the fleet root).
    pub root: PathBuf,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub identity_file: Option<String>,
    pub known_hosts: Option<String>,
    pub become_: crate::manifest::model::Become,
}

impl Target {
    /// `fleet_dir` anchors relative roots of local hosts.
    pub fn for_host(host: &DesiredHost, fleet_dir: &std::path::Path) -> Target {
        let s = &host.settings;
        let root = PathBuf::from(&s.root.value);
        Target {
            host: host.name.to_string(),
            kind: s.transport.value,
            address: host.address.clone(),
            user: s.user.value.clone(),
            port: s.port.value,
            root: if root.is_absolute() {
                root
            } else {
                fleet_dir.join(root)
            },
            connect_timeout: s.connect_timeout.value,
            command_timeout: s.command_timeout.value,
            identity_file: s.identity_file.value.clone(),
            known_hosts: s.known_hosts.value.clone(),
            become_: s.become_.value,
        }
    }
}

/// Opens a session to the host with the transport it asks for.
pub async fn connect(target: &Target) -> Result<Box<dyn Session>, TransportError> {
    match target.kind {
        TransportKind::Local => Ok(Box::new(local::LocalSession::open(target)?)),
        TransportKind::Ssh => Ok(Box::new(ssh::SshSession::open(target).await?)),
    }
}

/// An idle session and the target it was opened for (`None`: put in without one).
type Idle = (Option<String>, Box<dyn Session>);

/// Open sessions, one per host, kept for the whole command (and across `watch`'s cycles): the
/// probe, a re-probe, uploads and the transaction all reuse the host's one connection (an SSH
/// handshake costs far more than a command on an open session). A session is reused only for
/// the exact target it was opened for: a host whose address, user, key or any other
/// connection setting changed gets a new one. Sessions are closed explicitly by
/// [`Pool::close_all`].
#[derive(Default)]
pub struct Pool {
    idle: tokio::sync::Mutex<std::collections::HashMap<String, Idle>>,
    /// The target each host's session (idle or in use) was opened for, as `{:?}`.
    opened_for: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// The host's open session, or a new one. Give it back with [`Pool::put`] when done; a
    /// session that failed mid-use is better dropped than returned.
    pub async fn take(&self, target: &Target) -> Result<Box<dyn Session>, TransportError> {
        let key = format!("{target:?}");
        let existing = self.idle.lock().await.remove(&target.host);
        if let Some((opened_for, mut s)) = existing {
            // A session put in without a target (tests' fakes) serves any.
            if opened_for.as_ref().is_none_or(|k| *k == key) && s.is_alive().await {
                self.remember(&target.host, key);
                return Ok(s);
            }
            // Idle past its ControlPersist bound, dropped, or opened for other settings.
            let _ = s.close().await;
        }
        let session = connect(target).await?;
        self.remember(&target.host, key);
        Ok(session)
    }

    fn remember(&self, host: &str, key: String) {
        let mut map = self.opened_for.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(host.to_owned(), key);
    }

    pub async fn put(&self, host: &str, session: Box<dyn Session>) {
        let key = {
            let map = self.opened_for.lock().unwrap_or_else(|e| e.into_inner());
            map.get(host).cloned()
        };
        self.idle.lock().await.insert(host.to_owned(), (key, session));
    }

    /// Closes every idle session (SSH masters must not outlive the command).
    pub async fn close_all(&self) {
        self.close_unless(|_| false).await;
    }

    /// Closes the idle sessions of the hosts `keep` does not name: a long-running caller
    /// (watch) drops the connections of hosts the fleet no longer has, which an open resident
    /// shell would otherwise keep up until it exits.
    pub async fn close_unless(&self, keep: impl Fn(&str) -> bool) {
        let sessions: Vec<Box<dyn Session>> = {
            let mut idle = self.idle.lock().await;
            let gone: Vec<String> = idle.keys().filter(|h| !keep(h)).cloned().collect();
            gone.iter()
                .filter_map(|h| idle.remove(h))
                .map(|(_, s)| s)
                .collect()
        };
        let mut set = tokio::task::JoinSet::new();
        for s in sessions {
            set.spawn(async move {
                let _ = s.close().await;
            });
        }
        while set.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session that counts its closes.
    struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    #[async_trait]
    impl Session for Counted {
        async fn run(&mut self, _: &Script<'_>) -> Result<Output, TransportError> {
            unreachable!("not run")
        }
        async fn upload(
            &mut self,
            _: &mut (dyn AsyncRead + Unpin + Send),
            _: &str,
        ) -> Result<u64, TransportError> {
            unreachable!("not run")
        }
        async fn close(self: Box<Self>) -> Result<(), TransportError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn only_the_sessions_of_hosts_no_longer_named_are_closed() {
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pool = Pool::new();
        for h in ["a", "b", "c"] {
            pool.put(h, Box::new(Counted(closed.clone()))).await;
        }
        pool.close_unless(|h| h != "b").await;
        assert_eq!(closed.load(std::sync::atomic::Ordering::SeqCst), 1);
        let left: Vec<String> = {
            let mut v: Vec<String> = pool.idle.lock().await.keys().cloned().collect();
            v.sort();
            v
        };
        assert_eq!(left, ["a", "c"]);
        pool.close_all().await;
        assert_eq!(closed.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_upload_budget_grows_with_the_size_at_the_minimum_rate() {
        let five_min = Duration::from_secs(300);
        assert_eq!(upload_budget(five_min, 0), five_min);
        // One byte still gets a whole second; 4 GiB at 1 MiB/s is 4096 s.
        assert_eq!(upload_budget(five_min, 1), Duration::from_secs(301));
        assert_eq!(upload_budget(five_min, 4 * GIB), Duration::from_secs(300 + 4096));
        // No overflow, whatever the size.
        assert_eq!(upload_budget(Duration::MAX, u64::MAX), Duration::MAX);
        assert!(
            upload_budget(Duration::ZERO, u64::MAX) > Duration::from_secs(u64::MAX / MIN_UPLOAD_RATE - 1)
        );
    }

    #[test]
    fn a_transaction_without_uploads_keeps_its_bound_and_one_with_uploads_adds_their_budget() {
        use crate::transaction::launch_budget;
        let t = Duration::from_secs(30);
        assert_eq!(launch_budget(t, 0), t * 20);
        // A 4 GiB artifact with command_timeout = 30s: before, the whole launch (upload
        // included) had 10 minutes, which a legitimate upload at 5 MiB/s (14 minutes) missed.
        let big = launch_budget(t, 4 * GIB);
        assert_eq!(big, t * 20 + Duration::from_secs(4096));
        assert!(big > Duration::from_secs(4 * GIB / (5 << 20)));
        assert_eq!(launch_budget(Duration::MAX, u64::MAX), Duration::MAX);
    }
}
