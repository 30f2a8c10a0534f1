//! The SSH transport: one multiplexed OpenSSH master per host (the `openssh` crate, native
//! mux), reused for the probe, uploads and every step of the host's transaction, and closed
//! explicitly. Host keys are checked strictly against `known_hosts`, never accepted; nothing
//! ever prompts (BatchMode).
//!
//! Manifest values never become command text: the remote command is a constant wrapper (and
//! Flotilla's own constant script as its argument), and every value — paths, names, the
//! host's root — travels on stdin as a length-prefixed preamble that the wrapper exports
//! before it runs the script with the rest of stdin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use openssh::{ControlPersist, KnownHosts, SessionBuilder, Stdio};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::{Output, Script, Session, Tap, Target, TransportError};
use crate::manifest::model::Become;

/// Reads `NAME LEN\n<LEN bytes>\n` records up to a `--` line, exports them (only FLOTILLA_*
/// and LC_ALL), then runs the script given as `$1` with what is left of stdin.
///
/// Builtins only: `read` takes a value line by line (joining lines until LEN bytes, so values
/// may hold newlines) and leaves stdin exactly after the record. The previous `$(dd bs=1 …)`
/// per value cost two forks a value, about 20 per command and 30 ms of host CPU per host in
/// a rollout (measured with 50 hosts on one machine). The script runs with `eval` in this
/// shell rather than a second `sh -c`: one exec fewer.
const WRAPPER: &str = r#"set -u
export LC_ALL=C
unset flotilla_once FLOTILLA_PRIME
while IFS=' ' read -r name len; do
  [ "$name" = -- ] && break
  case $name in FLOTILLA_*|LC_ALL) ;; *) echo "flotilla: bad preamble" >&2; exit 125 ;; esac
  case $len in ''|*[!0-9]*) echo "flotilla: bad preamble" >&2; exit 125 ;; esac
  IFS= read -r val || { echo "flotilla: bad preamble" >&2; exit 125; }
  while [ "${#val}" -lt "$len" ]; do
    IFS= read -r more || { echo "flotilla: bad preamble" >&2; exit 125; }
    val="$val
$more"
  done
  [ "${#val}" -eq "$len" ] || { echo "flotilla: bad preamble" >&2; exit 125; }
  export "$name=$val"
done
unset name len val more
eval "$1"
"#;

/// Streams stdin into `$FLOTILLA_DEST`, then says how many bytes arrived.
const UPLOAD: &str = r#"mkdir -p "$(dirname "$FLOTILLA_DEST")" && cat > "$FLOTILLA_DEST" && printf 'flotilla-uploaded %s\n' "$(wc -c < "$FLOTILLA_DEST")""#;

/// Key exchange: curve25519 costs about a third of OpenSSH 9's default (sntrup761x25519) in
/// CPU per connection, which dominates fan-out to many hosts; the post-quantum default stays
/// as a fallback. The rest keeps ssh quiet and non-interactive.
const SSH_CONFIG: &str = "\
KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org,sntrup761x25519-sha512@openssh.com,ecdh-sha2-nistp256
LogLevel ERROR
PasswordAuthentication no
KbdInteractiveAuthentication no
";

/// How long an OpenSSH master with no command running stays up: `ControlPersist`.
///
/// Why bounded: the master is a daemon (`ssh -f -M`) holding an authenticated connection and a
/// control socket. Flotilla closes it explicitly, but a controller killed with SIGKILL (OOM,
/// a CI job cancelled) cannot, and with the crate's default (`ControlPersist=yes`) the master
/// would then stay logged in to the host forever. Why two minutes: a master is only idle
/// between commands of one run (the probe, the upload, the transaction's steps follow each
/// other closely); a longer gap — a confirmation prompt, a bake, waiting for a wave — costs one
/// new handshake, because [`super::Pool`] checks a session is alive before reusing it. An
/// orphaned master is gone two minutes after its last command, and one running command keeps
/// its master up however long it takes (the bound is on idleness, not age).
pub const CONTROL_PERSIST: Duration = Duration::from_secs(120);

/// Overrides [`CONTROL_PERSIST`] in whole seconds (1 to 3600), for tests and for operators
/// who want orphaned masters gone sooner; anything else is ignored with a warning.
pub const CONTROL_PERSIST_ENV: &str = "FLOTILLA_SSH_CONTROL_PERSIST";

/// A longer bound for a long-running process (`watch`), set once at its start.
static KEEP_FOR: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// Keeps idle masters up for `d` (at most an hour) instead of [`CONTROL_PERSIST`]: `watch`
/// observes every host each drift interval, and a master that outlives the interval turns the
/// next drift check's handshakes into one channel each. The cost is the same as ever: an
/// orphaned master (the controller killed with SIGKILL) stays logged in for up to `d`. The
/// environment variable still wins.
pub fn keep_masters_for(d: Duration) {
    let _ = KEEP_FOR.set(d.clamp(Duration::from_secs(1), Duration::from_secs(3600)));
}

/// The `ControlPersist` bound this process uses (see [`CONTROL_PERSIST`]).
pub fn control_persist() -> Duration {
    let Some(value) = std::env::var_os(CONTROL_PERSIST_ENV) else {
        return KEEP_FOR.get().copied().unwrap_or(CONTROL_PERSIST);
    };
    match value.to_str().and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(secs @ 1..=3600) => Duration::from_secs(secs),
        _ => {
            tracing::warn!(
                value = %value.to_string_lossy(),
                "{CONTROL_PERSIST_ENV} must be whole seconds from 1 to 3600; using {}s",
                CONTROL_PERSIST.as_secs()
            );
            CONTROL_PERSIST
        }
    }
}

pub struct SshSession {
    target: Target,
    /// Shared with the resident shell's channel, which holds a reference while it is open.
    session: Option<std::sync::Arc<openssh::Session>>,
    /// The shell that serves repeated probes on one channel ([`super::resident`]).
    resident: Option<super::resident::Resident>,
    /// Short private directory for the control socket and the config; removed on close/drop.
    _dir: tempfile::TempDir,
}

fn expand(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// Turns ssh's error text into a per-host error a person can act on.
fn classify(t: &Target, err: &openssh::Error) -> TransportError {
    let text = match err {
        openssh::Error::Connect(e) | openssh::Error::Master(e) => e.to_string(),
        other => other.to_string(),
    };
    let msg = crate::text::sanitize(text.trim());
    let lower = msg.to_ascii_lowercase();
    let host = t.host.clone();
    let kh = t
        .known_hosts
        .clone()
        .unwrap_or_else(|| "~/.ssh/known_hosts".into());
    let endpoint = if t.port == 22 {
        t.address.clone()
    } else {
        format!("[{}]:{}", t.address, t.port)
    };
    if lower.contains("remote host identification has changed")
        || lower.contains("host key for") && lower.contains("has changed")
    {
        return TransportError::HostKey {
            host,
            why: format!("the host key of {endpoint} has CHANGED since it was recorded in {kh}"),
            fix: format!(
                "if the change is expected, compare fingerprints (`ssh-keyscan -p {} {} | ssh-keygen -lf -` against `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host), then `ssh-keygen -R '{endpoint}' -f {kh}` and add the new key",
                t.port, t.address
            ),
        };
    }
    if lower.contains("host key verification failed")
        || lower.contains("no ") && lower.contains("host key is known")
    {
        return TransportError::HostKey {
            host,
            why: format!("{endpoint} is not in {kh} (host keys are never accepted automatically)"),
            fix: format!(
                "fetch it with `ssh-keyscan -p {} {}`, compare the fingerprint with the host's own, and add the line to {kh}",
                t.port, t.address
            ),
        };
    }
    if lower.contains("permission denied") {
        return TransportError::AuthFailed {
            host,
            user: t.user.clone(),
            identity: t
                .identity_file
                .clone()
                .unwrap_or_else(|| "ssh's default keys".into()),
            detail: msg,
        };
    }
    let unreachable = [
        "connection refused",
        "timed out",
        "could not resolve hostname",
        "no route to host",
        "network is unreachable",
        "name or service not known",
        "connection closed",
        "connection reset",
    ];
    if unreachable.iter().any(|u| lower.contains(u)) {
        return TransportError::Unreachable {
            host,
            address: t.address.clone(),
            port: t.port,
            detail: msg,
        };
    }
    match err {
        openssh::Error::Disconnected | openssh::Error::RemoteProcessTerminated => TransportError::ConnectionLost {
            host,
            detail: "the connection dropped; a running transaction finishes or rolls back on the host by itself, and the next run repairs from what it observes".into(),
        },
        _ => TransportError::Ssh { host, detail: msg },
    }
}

impl SshSession {
    pub async fn open(t: &Target) -> Result<SshSession, TransportError> {
        let setting = |setting: &str, why: String| TransportError::Setting {
            host: t.host.clone(),
            setting: setting.into(),
            why,
        };
        // Checked here so the error names the setting, not whatever ssh makes of it.
        for (key, value) in [
            ("identity_file", &t.identity_file),
            ("known_hosts", &t.known_hosts),
        ] {
            let Some(value) = value else { continue };
            let p = expand(value);
            match std::fs::metadata(&p).and_then(|m| std::fs::File::open(&p).map(|_| m)) {
                Ok(m) if m.is_file() => {}
                Ok(_) => return Err(setting(key, format!("{} is not a regular file", p.display()))),
                Err(e) => return Err(setting(key, format!("{}: {e}", p.display()))),
            }
        }
        let io = |what: &str| {
            let what = what.to_owned();
            let host = t.host.clone();
            move |source| TransportError::Io { host, what, source }
        };
        // 0700: the control socket inside is a logged-in connection to the host; anyone who
        // can reach it runs commands there as the connecting user.
        let dir = tempfile::Builder::new()
            .prefix("fl-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in("/tmp")
            .map_err(io("creating a control directory"))?;
        let config = dir.path().join("config");
        std::fs::write(&config, SSH_CONFIG).map_err(io("writing the ssh config"))?;
        let mut b = SessionBuilder::default();
        b.known_hosts_check(KnownHosts::Strict)
            .user(t.user.clone())
            .port(t.port)
            .connect_timeout(t.connect_timeout)
            .server_alive_interval(Duration::from_secs(15))
            .control_directory(dir.path())
            .control_persist(persist_option(control_persist()))
            .config_file(&config);
        if let Some(id) = &t.identity_file {
            b.keyfile(expand(id));
        }
        if let Some(kh) = &t.known_hosts {
            b.user_known_hosts_file(expand(kh));
        }
        // ssh's own ConnectTimeout covers the TCP connect; this bounds the whole handshake.
        let limit = t.connect_timeout.saturating_add(Duration::from_secs(5));
        let session = match tokio::time::timeout(limit, b.connect_mux(&t.address)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(classify(t, &e)),
            Err(_) => {
                return Err(TransportError::Unreachable {
                    host: t.host.clone(),
                    address: t.address.clone(),
                    port: t.port,
                    detail: format!("no SSH session within {limit:?}"),
                });
            }
        };
        Ok(SshSession {
            target: t.clone(),
            session: Some(std::sync::Arc::new(session)),
            resident: None,
            _dir: dir,
        })
    }

    /// The control directory (the master's socket is in a subdirectory of it).
    pub fn control_dir(&self) -> &Path {
        self._dir.path()
    }

    fn preamble(&self, env: &[(String, String)]) -> Vec<u8> {
        let mut out = self.env_lines(env);
        out.extend_from_slice(b"-- 0\n");
        out
    }

    /// The environment part of the preamble: `NAME LENGTH` then the value, for each variable.
    fn env_lines(&self, env: &[(String, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        let root = self.target.root.display().to_string();
        let all = env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([("FLOTILLA_ROOT", root.as_str()), ("LC_ALL", "C")]);
        for (k, v) in all {
            out.extend_from_slice(format!("{k} {}\n", v.len()).as_bytes());
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    async fn exec(
        &mut self,
        script: &str,
        env: &[(String, String)],
        input: &mut (dyn AsyncRead + Unpin + Send),
        large_input: bool,
        timeout: Duration,
        tap: Tap<'_>,
    ) -> Result<Output, TransportError> {
        let t = self.target.clone();
        let preamble = self.preamble(env);
        let session = self
            .session
            .as_ref()
            .ok_or_else(|| TransportError::ConnectionLost {
                host: t.host.clone(),
                detail: "the session was already closed".into(),
            })?;
        let large_input = large_input.then_some(super::LARGE_PIPE);
        let mut cmd = match t.become_ {
            Become::Sudo => {
                let mut c = session.command("sudo");
                c.args(["-n", "--", "sh", "-c", WRAPPER, "flotilla", script]);
                c
            }
            Become::None => {
                let mut c = session.command("sh");
                c.args(["-c", WRAPPER, "flotilla", script]);
                c
            }
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let run = async {
            let mut child = cmd.spawn().await.map_err(|e| classify(&t, &e))?;
            let stdin = child.stdin().take();
            // Input is fed while output is read, so neither side can block the other.
            let feed = async move {
                if let Some(mut stdin) = stdin {
                    // Counted until the input is fed and the pipe closed.
                    let _large = large_input.map(|size| super::pipe::LargePipe::enlarge(&stdin, size));
                    stdin.write_all(&preamble).await?;
                    // Large chunks: an artifact crosses the pipe to the ssh master in few writes.
                    let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, input);
                    tokio::io::copy_buf(&mut reader, &mut stdin).await?;
                    stdin.shutdown().await?;
                }
                Ok::<(), std::io::Error>(())
            };
            let (out, err) = (child.stdout().take(), child.stderr().take());
            let (_fed, out, err) = tokio::join!(
                feed,
                super::read_bounded_tapped(out, super::MAX_STDOUT, tap),
                super::read_bounded(err, super::MAX_STDERR)
            );
            let io = |e: std::io::Error| TransportError::ConnectionLost {
                host: t.host.clone(),
                detail: e.to_string(),
            };
            let ((stdout, over_out), (stderr, over_err)) = (out.map_err(io)?, err.map_err(io)?);
            if over_out || over_err {
                // Dropping the child closes the channel; the remote side gets SIGPIPE.
                drop(child);
                return Err(TransportError::OutputTooLarge {
                    host: t.host.clone(),
                    what: "a host command".into(),
                    stream: if over_out { "stdout" } else { "stderr" },
                    limit: if over_out {
                        super::MAX_STDOUT
                    } else {
                        super::MAX_STDERR
                    },
                });
            }
            // The remote side may exit without reading everything; its status says why.
            let status = child.wait().await.map_err(|e| classify(&t, &e))?;
            Ok(std::process::Output {
                status,
                stdout,
                stderr,
            })
        };
        let out = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| TransportError::Timeout {
                host: t.host.clone(),
                what: "a host command".into(),
                timeout,
            })??;
        let status = out.status.code().unwrap_or(-1);
        if t.become_ == Become::Sudo && status != 0 {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("sudo:")
                && (stderr.contains("password is required")
                    || stderr.contains("not in the sudoers")
                    || stderr.contains("not allowed"))
            {
                return Err(TransportError::Sudo {
                    host: t.host.clone(),
                    user: t.user.clone(),
                    detail: crate::text::sanitize(stderr.trim()),
                });
            }
        }
        Ok(Output {
            status,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

#[async_trait]
impl Session for SshSession {
    async fn run(&mut self, script: &Script<'_>) -> Result<Output, TransportError> {
        let timeout = script.timeout.unwrap_or(self.target.command_timeout);
        let mut input = &script.stdin[..];
        self.exec(script.text, &script.env, &mut input, false, timeout, &mut |_| {})
            .await
    }

    async fn run_with_input(
        &mut self,
        script: &Script<'_>,
        input: &mut (dyn AsyncRead + Unpin + Send),
        tap: Tap<'_>,
    ) -> Result<Output, TransportError> {
        use tokio::io::AsyncReadExt as _;
        let timeout = script.timeout.unwrap_or(self.target.command_timeout);
        let mut all = (&script.stdin[..]).chain(input);
        self.exec(
            script.text,
            &script.env,
            &mut all,
            script.large_input,
            timeout,
            tap,
        )
        .await
    }

    async fn upload(
        &mut self,
        data: &mut (dyn AsyncRead + Unpin + Send),
        path: &str,
    ) -> Result<u64, TransportError> {
        let env = vec![("FLOTILLA_DEST".to_owned(), path.to_owned())];
        let timeout = self.target.command_timeout;
        let out = self.exec(UPLOAD, &env, data, false, timeout, &mut |_| {}).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text
            .trim()
            .strip_prefix("flotilla-uploaded ")
            .and_then(|n| n.trim().parse().ok())
        {
            Some(n) if out.status == 0 => Ok(n),
            _ => Err(TransportError::CommandFailed {
                host: self.target.host.clone(),
                what: format!("writing {path}"),
                status: out.status,
                stderr: crate::text::sanitize(String::from_utf8_lossy(&out.stderr).trim()),
            }),
        }
    }

    async fn run_resident(&mut self, script: &Script<'_>) -> Result<Output, TransportError> {
        use super::resident::{Failed, Resident};
        let timeout = script.timeout.unwrap_or(self.target.command_timeout);
        self.resident.take_if(|r| !r.serves(script.text));
        if self.resident.is_none()
            && let Some(s) = &self.session
        {
            self.resident = Resident::open(s, script.text, self.target.become_ == Become::Sudo).await;
        }
        let env = self.env_lines(&script.env);
        if let Some(r) = self.resident.as_mut() {
            match r.request(&env, &script.stdin, timeout, super::MAX_STDOUT).await {
                Ok(stdout) => {
                    return Ok(Output {
                        status: 0,
                        stdout,
                        stderr: Vec::new(),
                    });
                }
                Err(Failed::Timeout) => {
                    self.resident = None;
                    return Err(TransportError::Timeout {
                        host: self.target.host.clone(),
                        what: "a host command".into(),
                        timeout,
                    });
                }
                Err(Failed::Fallback) => self.resident = None,
            }
        }
        self.run(script).await
    }

    async fn is_alive(&mut self) -> bool {
        match &self.session {
            Some(s) => s.check().await.is_ok(),
            None => false,
        }
    }

    async fn close(mut self: Box<Self>) -> Result<(), TransportError> {
        // The resident shell's channel held the only other reference to the master.
        self.resident = None;
        if let Some(s) = self.session.take()
            && let Ok(s) = std::sync::Arc::try_unwrap(s)
        {
            s.close().await.map_err(|e| classify(&self.target, &e))?;
        }
        Ok(())
    }
}

fn persist_option(d: Duration) -> ControlPersist {
    match std::num::NonZeroUsize::new(d.as_secs().try_into().unwrap_or(usize::MAX)) {
        Some(secs) => ControlPersist::IdleFor(secs),
        None => ControlPersist::ClosedAfterInitialConnection,
    }
}
