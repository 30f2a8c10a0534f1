//! The local transport: the "host" is this machine, under the host's `root`. Used for demos,
//! tests and self-management; it runs the very same scripts the SSH transport sends.

use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::process::Command;

use super::{Output, Script, Session, Tap, Target, TransportError};

pub struct LocalSession {
    target: Target,
}

impl LocalSession {
    pub fn open(target: &Target) -> Result<LocalSession, TransportError> {
        if !target.root.is_dir() {
            return Err(TransportError::NoRoot {
                host: target.host.clone(),
                root: target.root.clone(),
            });
        }
        Ok(LocalSession {
            target: target.clone(),
        })
    }

    fn io(&self, what: &str) -> impl FnOnce(std::io::Error) -> TransportError + '_ {
        let what = what.to_owned();
        move |source| TransportError::Io {
            host: self.target.host.clone(),
            what,
            source,
        }
    }
}

#[async_trait]
impl Session for LocalSession {
    async fn run(&mut self, script: &Script<'_>) -> Result<Output, TransportError> {
        self.run_with_input(script, &mut tokio::io::empty(), &mut |_| {})
            .await
    }

    async fn run_with_input(
        &mut self,
        script: &Script<'_>,
        input: &mut (dyn AsyncRead + Unpin + Send),
        tap: Tap<'_>,
    ) -> Result<Output, TransportError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script.text)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .env("LC_ALL", "C")
            .env("FLOTILLA_ROOT", &self.target.root)
            .envs(script.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
        let mut child = cmd.spawn().map_err(self.io("starting sh"))?;
        let stdin = script.stdin.clone();
        let pipe = child.stdin.take();
        let feed = async {
            // Owned here, so the pipe closes (EOF for the script) when the input is done.
            if let Some(mut p) = pipe {
                let p = &mut p;
                // A script may exit without reading all input; that is not an error here.
                if p.write_all(&stdin).await.is_ok() {
                    let _ = tokio::io::copy(input, p).await;
                }
                let _ = p.shutdown().await;
            }
        };
        let timeout = script.timeout.unwrap_or(self.target.command_timeout);
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let run = async {
            let ((), out, err) = tokio::join!(
                feed,
                super::read_bounded_tapped(out, super::MAX_STDOUT, tap),
                super::read_bounded(err, super::MAX_STDERR)
            );
            (out, err)
        };
        let (out, err) = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| TransportError::Timeout {
                host: self.target.host.clone(),
                what: "a host script".into(),
                timeout,
            })?;
        let ((stdout, over_out), (stderr, over_err)) = (
            out.map_err(self.io("reading sh"))?,
            err.map_err(self.io("reading sh"))?,
        );
        if over_out || over_err {
            let _ = child.kill().await;
            return Err(TransportError::OutputTooLarge {
                host: self.target.host.clone(),
                what: "a host script".into(),
                stream: if over_out { "stdout" } else { "stderr" },
                limit: if over_out {
                    super::MAX_STDOUT
                } else {
                    super::MAX_STDERR
                },
            });
        }
        let status = child.wait().await.map_err(self.io("running sh"))?;
        Ok(Output {
            status: status.code().unwrap_or(-1),
            stdout,
            stderr,
        })
    }

    async fn upload(
        &mut self,
        data: &mut (dyn AsyncRead + Unpin + Send),
        path: &str,
    ) -> Result<u64, TransportError> {
        if let Some(dir) = std::path::Path::new(path).parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(self.io(&format!("creating {}", dir.display())))?;
        }
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(self.io(&format!("creating {path}")))?;
        let n = tokio::io::copy(data, &mut file)
            .await
            .map_err(self.io(&format!("writing {path}")))?;
        file.sync_all()
            .await
            .map_err(self.io(&format!("syncing {path}")))?;
        Ok(n)
    }

    async fn close(self: Box<Self>) -> Result<(), TransportError> {
        Ok(())
    }
}
