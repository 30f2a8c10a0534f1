//! A shell kept open on an SSH connection that runs one constant script again and again: one
//! channel per host for every probe of a long run (watch's drift checks), instead of one per
//! probe.
//!
//! Why: a warm drift check of 200 sshd hosts over the pooled masters cost about 1.15 s, most
//! of it not the probe but what surrounds each one: a channel opened on the master, sshd's
//! session process, the login shell and the wrapper shell, the preamble read byte by byte.
//! Here that happens once per host; a request costs a write, one subshell on the host and a
//! read (measured numbers are in the README's Performance section).
//!
//! The protocol, all on the channel's stdin and stdout: the controller writes
//! `flotilla-request NONCE`, then the same environment preamble [`super::ssh`] sends before
//! every command, ended by `-- N` where N is the number of stdin lines that follow, then those
//! lines. The host runs the script in a subshell with that environment and those lines as its
//! stdin, and ends its output with `\nflotilla-response NONCE STATUS`. The nonce is fresh and
//! random for each request and never leaves the shell's memory on the host (not exported), so
//! nothing a file on the host holds can pass for the end of a response. The script's stderr is
//! discarded: a request that fails, or anything unexpected on the channel, closes the resident
//! shell and the caller runs the script the ordinary way, which reports stderr in full.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The host side. Constant text: the script comes as `$1` (a constant of Flotilla's), every
/// value on stdin. First the script runs once with `FLOTILLA_PRIME=1`: what it prints then
/// (facts that hold while the shell lives) every later run finds in `$flotilla_once`, a
/// shell variable, not exported (both names are unset first, so a login environment cannot
/// set them). The preamble is read with the same checks as the one-shot wrapper; `read`
/// takes exactly one line, byte by byte, so the shell never reads past a request.
const RESIDENT: &str = r#"set -u
export LC_ALL=C
unset flotilla_once FLOTILLA_PRIME
if o=$(FLOTILLA_PRIME=1 eval "$1" 2>/dev/null); then flotilla_once=$o; fi
unset o
while IFS=' ' read -r tag nonce; do
  [ "$tag" = flotilla-request ] || exit 125
  (
    unset tag
    while IFS=' ' read -r name len; do
      [ "$name" = -- ] && break
      case $name in FLOTILLA_*|LC_ALL) ;; *) exit 125 ;; esac
      case $len in ''|*[!0-9]*) exit 125 ;; esac
      IFS= read -r val || exit 125
      while [ "${#val}" -lt "$len" ]; do
        IFS= read -r more || exit 125
        val="$val
$more"
      done
      [ "${#val}" -eq "$len" ] || exit 125
      export "$name=$val"
    done
    case ${len:-} in ''|*[!0-9]*) exit 125 ;; esac
    n=$len; k=$len; req=
    while [ "$n" -gt 0 ]; do
      IFS= read -r l || exit 125
      if [ -z "$req" ]; then req=$l; else req="$req
$l"; fi
      n=$((n - 1))
    done
    unset name len val more l n nonce
    if [ "$k" -gt 0 ]; then
      eval "$1" 2>/dev/null <<EOF
$req
EOF
    else
      eval "$1" 2>/dev/null </dev/null
    fi
  )
  printf '\nflotilla-response %s %s\n' "$nonce" "$?"
done
"#;

/// The open resident shell of one host, serving one script. Dropping it closes its end of the
/// channel: the shell reads the end of its input and exits; nothing waits for that.
pub(super) struct Resident {
    /// The script it serves (requests for another script open a new one).
    script: String,
    /// Held for the channel's lifetime, never waited for.
    _child: openssh::Child<Arc<openssh::Session>>,
    stdin: openssh::ChildStdin,
    stdout: openssh::ChildStdout,
}

/// Why a request did not complete. Any of them closes the resident shell.
#[derive(Debug)]
pub(super) enum Failed {
    /// The host did not answer within the command's bound: the caller reports a timeout.
    Timeout,
    /// Anything else (the channel closed, a malformed answer, a non-zero status): the caller
    /// runs the script the ordinary way.
    Fallback,
}

impl Resident {
    /// Opens a resident shell for `script` on the master (through `sudo -n` when asked).
    pub(super) async fn open(session: &Arc<openssh::Session>, script: &str, sudo: bool) -> Option<Resident> {
        let mut cmd = if sudo {
            let mut c = Arc::clone(session).arc_command("sudo");
            c.args(["-n", "--", "sh", "-c", RESIDENT, "flotilla", script]);
            c
        } else {
            let mut c = Arc::clone(session).arc_command("sh");
            c.args(["-c", RESIDENT, "flotilla", script]);
            c
        };
        cmd.stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::null());
        let mut child = cmd.spawn().await.ok()?;
        let stdin = child.stdin().take()?;
        let stdout = child.stdout().take()?;
        Some(Resident {
            script: script.to_owned(),
            _child: child,
            stdin,
            stdout,
        })
    }

    pub(super) fn serves(&self, script: &str) -> bool {
        self.script == script
    }

    /// One run of the script: `preamble` is the environment (see [`super::ssh`]) without its
    /// final `-- 0` line, `stdin` whole lines. Returns the script's stdout.
    pub(super) async fn request(
        &mut self,
        preamble: &[u8],
        stdin: &[u8],
        timeout: Duration,
        max: usize,
    ) -> Result<Vec<u8>, Failed> {
        // Whole lines only: the host counts them.
        if !stdin.is_empty() && !stdin.ends_with(b"\n") {
            return Err(Failed::Fallback);
        }
        let lines = stdin.iter().filter(|&&b| b == b'\n').count();
        let nonce = format!("{:032x}", rand::random::<u128>());
        let mut msg = Vec::with_capacity(preamble.len() + stdin.len() + 64);
        msg.extend_from_slice(format!("flotilla-request {nonce}\n").as_bytes());
        msg.extend_from_slice(preamble);
        msg.extend_from_slice(format!("-- {lines}\n").as_bytes());
        msg.extend_from_slice(stdin);
        let end = format!("\nflotilla-response {nonce} ");
        let exchange = async {
            self.stdin.write_all(&msg).await.map_err(|_| Failed::Fallback)?;
            self.stdin.flush().await.map_err(|_| Failed::Fallback)?;
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            // Where to resume looking for the end marker (it may arrive split across reads).
            let mut from = 0;
            loop {
                if let Some(at) = find(&buf[from..], end.as_bytes()).map(|i| i + from) {
                    let rest = &buf[at + end.len()..];
                    if let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                        let status = std::str::from_utf8(&rest[..nl])
                            .ok()
                            .and_then(|s| s.parse::<i32>().ok());
                        // Nothing may follow an answer: it would be taken for the start of
                        // the next one.
                        if nl + 1 != rest.len() {
                            return Err(Failed::Fallback);
                        }
                        buf.truncate(at);
                        return match status {
                            Some(0) => Ok(buf),
                            _ => Err(Failed::Fallback),
                        };
                    }
                } else {
                    from = buf.len().saturating_sub(end.len());
                }
                if buf.len() > max {
                    return Err(Failed::Fallback);
                }
                let n = self.stdout.read(&mut chunk).await.map_err(|_| Failed::Fallback)?;
                if n == 0 {
                    return Err(Failed::Fallback);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failed::Timeout),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
