//! Stopping a run: the first request drains (no new host starts, in-flight hosts finish, state
//! is saved), the second aborts (the run stops waiting for in-flight hosts, whose on-host
//! transactions finish or roll back by themselves). The binary feeds it from SIGINT/SIGTERM,
//! once per process; tests and `watch` feed it directly.

use tokio::sync::watch;

/// How far a stop has gone; it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Keep going.
    Run,
    /// No new host starts; in-flight hosts finish.
    Drain,
    /// Stop now; do not wait for in-flight hosts.
    Abort,
}

/// The sending side: whoever decides to stop (a signal handler, `watch`'s shutdown, a test).
#[derive(Debug, Clone)]
pub struct Stopper(std::sync::Arc<watch::Sender<Stop>>);

/// The receiving side, cloned into everything that must notice a stop.
#[derive(Debug, Clone)]
pub struct Cancel(watch::Receiver<Stop>);

/// A connected pair.
pub fn channel() -> (Stopper, Cancel) {
    let (tx, rx) = watch::channel(Stop::Run);
    (Stopper(std::sync::Arc::new(tx)), Cancel(rx))
}

impl Stopper {
    /// Moves one step further (Run → Drain → Abort) and returns the new state.
    pub fn escalate(&self) -> Stop {
        let mut now = Stop::Run;
        self.0.send_modify(|s| {
            *s = match *s {
                Stop::Run => Stop::Drain,
                _ => Stop::Abort,
            };
            now = *s;
        });
        now
    }
}

impl Cancel {
    /// A receiver that never stops (its sender lives for the whole process).
    pub fn never() -> Cancel {
        static NEVER: std::sync::OnceLock<watch::Sender<Stop>> = std::sync::OnceLock::new();
        Cancel(NEVER.get_or_init(|| watch::channel(Stop::Run).0).subscribe())
    }

    /// The current state.
    pub fn state(&self) -> Stop {
        *self.0.borrow()
    }

    /// Whether no new work may start.
    pub fn draining(&self) -> bool {
        self.state() >= Stop::Drain
    }

    /// Resolves once the state reaches `at_least` (never, if the sender is gone first).
    pub async fn reached(&self, at_least: Stop) {
        let mut rx = self.0.clone();
        if rx.wait_for(|s| *s >= at_least).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stops_escalate_once_per_request_and_never_go_back() {
        let (stop, cancel) = channel();
        assert!(!cancel.draining());
        assert_eq!(stop.escalate(), Stop::Drain);
        cancel.reached(Stop::Drain).await;
        assert!(cancel.draining());
        assert_eq!(stop.escalate(), Stop::Abort);
        assert_eq!(stop.escalate(), Stop::Abort);
        cancel.reached(Stop::Abort).await;
    }
}
