//! SIGINT and SIGTERM, handled once per process: the first drains (no new host starts,
//! in-flight hosts finish, state is saved), the second aborts (the run stops waiting for
//! in-flight hosts, which finish or roll back on the host by themselves). If an aborted run
//! has still not returned a few seconds later, the process exits.

use std::sync::OnceLock;
use std::time::Duration;

use crate::cancel::{self, Cancel, Stop};

/// How long an aborted run gets to return its summary and close its sessions.
const ABORT_GRACE: Duration = Duration::from_secs(5);

static CANCEL: OnceLock<Cancel> = OnceLock::new();

/// The process's stop requests. The first call installs the handlers (inside the runtime);
/// later calls share them.
pub fn cancel() -> Cancel {
    CANCEL
        .get_or_init(|| {
            let (stopper, cancel) = cancel::channel();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) =
                    (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
                else {
                    tracing::warn!("cannot install signal handlers; Ctrl-C ends the process at once");
                    return;
                };
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    match stopper.escalate() {
                        Stop::Drain => eprintln!(
                            "\nStopping: no new host starts; hosts in flight finish and state is saved. Press Ctrl-C again to stop at once."
                        ),
                        _ => {
                            eprintln!(
                                "\nStopping at once: hosts in flight finish or roll back on the host by themselves."
                            );
                            tokio::spawn(async {
                                tokio::time::sleep(ABORT_GRACE).await;
                                std::process::exit(130);
                            });
                        }
                    }
                }
            });
            cancel
        })
        .clone()
}
