//! `flotilla watch` (DESIGN §10): the GitOps loop. It follows a branch; every new valid
//! revision is planned (the plan is shown before anything changes) and applied to
//! `auto_apply` environments through the engine, with windows, freezes, promotion, pauses and
//! halts as `apply` has them; the rest is reported as pending. Between cycles it sleeps until
//! the next event: the branch moves, a waiting environment may go, or the drift check is due.
//!
//! Never unattended: a revision that changes `[trust]`, connection settings or commands waits
//! for a person's `apply` ([`crate::apply::guard`]). An invalid revision is reported and the
//! last valid one stays in force. The loop holds the store's lock for its whole life, so no
//! `apply` or second `watch` runs beside it.

mod cycle;
mod follow;
pub mod http;
mod status;
pub mod wake;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::mpsc;

pub use cycle::CycleResult;
pub use follow::{FollowError, Follower, Origin, Remote, Seen};
pub use status::{Cycle, EnvironmentState, Shared, WatchStatus};

use crate::apply::Outcome;
use crate::cancel::{Cancel, Stop};
use crate::clock::Clock;
use crate::plan::Plan;
use crate::rollout::Event;
use crate::store::Store;

/// How `watch` runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the branch is looked at when nothing tells us it moved (a remote's fetch).
    pub interval: Duration,
    /// How often every host is observed and drift corrected.
    pub drift_interval: Duration,
    /// SSH sessions (and host changes) at once.
    pub parallel: usize,
    /// `--trusted-keys`: pinned minisign keys, which the repository cannot change.
    pub pinned_keys: Option<String>,
    /// Who applies, for the audit log (`watch:user@machine`).
    pub actor: String,
    /// `--identity-file` / `--known-hosts`: override the manifests for every host.
    pub identity_file: Option<std::path::PathBuf>,
    pub known_hosts: Option<std::path::PathBuf>,
}

/// Something worth a log line, beside the plan and the engine's events.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Note {
    Started {
        origin: String,
    },
    NewRevision {
        revision: String,
        previous: Option<String>,
    },
    /// The revision is invalid: never applied; `in_force` stays.
    Invalid {
        revision: String,
        in_force: Option<String>,
        problems: String,
    },
    ForcePushed {
        followed: String,
        head: String,
    },
    SourceFailed {
        error: String,
        retry_in_secs: u64,
    },
    /// Changes in an environment that only a person may apply.
    NeedsPerson {
        environment: String,
        why: String,
    },
    CycleDone {
        revision: String,
        outcome: String,
        applied: usize,
        failed: usize,
        pending: usize,
        seconds: f64,
        next_wake: Option<Timestamp>,
    },
    CycleFailed {
        revision: String,
        error: String,
    },
    /// Another process holds the store: watch waits for it.
    StoreHeld {
        error: String,
        retry_in_secs: u64,
    },
    /// This watch lost the store's lock (its database session): it starts no more hosts and
    /// waits as a standby until it can take the lock again.
    LeaseLost {
        error: String,
    },
    Stopping,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |r: &str| r.get(..12).unwrap_or(r).to_owned();
        match self {
            Note::Started { origin } => write!(f, "watching {origin}"),
            Note::NewRevision { revision, .. } => write!(f, "new revision {}", short(revision)),
            Note::Invalid {
                revision,
                in_force,
                problems,
            } => write!(
                f,
                "revision {} is invalid and will not be applied; {} stays in force:\n{problems}",
                short(revision),
                in_force.as_deref().map_or("nothing".to_owned(), short)
            ),
            Note::ForcePushed { followed, head } => write!(
                f,
                "the branch was force-pushed: {} does not descend from {} (in force); not followed — push a commit on top of {}, or restart watch to follow the new history",
                short(head),
                short(followed),
                short(followed)
            ),
            Note::SourceFailed { error, retry_in_secs } => {
                write!(f, "{error} (retrying in {retry_in_secs}s)")
            }
            Note::NeedsPerson { environment, why } => write!(f, "{environment}: {why}"),
            Note::CycleDone {
                revision,
                outcome,
                applied,
                failed,
                pending,
                seconds,
                next_wake,
            } => {
                write!(
                    f,
                    "cycle at {}: {outcome}, {applied} applied, {failed} failed, {pending} pending ({seconds:.2}s)",
                    short(revision)
                )?;
                if let Some(t) = next_wake {
                    write!(f, "; next wake-up {}", t.strftime("%Y-%m-%d %H:%M:%S UTC"))?;
                }
                Ok(())
            }
            Note::CycleFailed { revision, error } => {
                write!(f, "cycle at {} failed: {error}", short(revision))
            }
            Note::StoreHeld { error, retry_in_secs } => {
                write!(f, "{error}; watch waits for it (retrying in {retry_in_secs}s)")
            }
            Note::LeaseLost { error } => {
                write!(f, "{error}; watch waits as a standby to take the lock again")
            }
            Note::Stopping => write!(f, "stopping: hosts in flight finish, then watch exits"),
        }
    }
}

/// Where `watch` reports: the CLI renders as text or JSON lines.
pub trait WatchView: Send + Sync {
    /// A plan, before anything of it is applied.
    fn plan(&self, revision: &str, plan: &Plan);
    /// Something happened.
    fn note(&self, note: &Note);
    /// A channel for the engine's events during an apply of `revision`.
    fn events(&self, revision: &str) -> (mpsc::UnboundedSender<Event>, tokio::task::JoinHandle<()>);
}

/// Everything the loop needs.
pub struct Watch<'a> {
    pub store: &'a dyn Store,
    pub follower: Follower,
    pub settings: Settings,
    pub clock: Clock,
    pub cancel: Cancel,
    pub shared: Arc<Shared>,
    pub view: &'a dyn WatchView,
    /// Where `/healthz`, `/readyz`, `/metrics`, `/status` and `/plan` are served, if anywhere;
    /// the server runs as long as the loop (also while it waits for the store).
    pub listener: Option<tokio::net::TcpListener>,
}

/// The longest a standby `watch` waits between attempts to take the store's lock.
const STANDBY_RETRY: Duration = Duration::from_secs(5);

/// Why `watch` could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Follow(#[from] FollowError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The state of the loop between wake-ups.
struct Loop {
    /// The newest valid revision: what is applied.
    in_force: Option<String>,
    /// That revision, loaded.
    loaded: Option<cycle::Revision>,
    /// The newest revision looked at (valid or not), so an invalid one is reported once.
    seen: Option<String>,
    /// When the drift check is due.
    drift_due: Timestamp,
    /// When an environment's waiting changes may go, as the last cycle said.
    requeue_at: Option<Timestamp>,
    /// Consecutive failures to read the branch, for backoff.
    failures: u32,
    /// A force push already reported (its head).
    reported_force: Option<String>,
}

impl Watch<'_> {
    /// Runs cycles until a stop is requested; with `once`, one cycle (on the branch's head).
    /// Returns the outcome of the last cycle (`--once` exits with it).
    pub async fn run(mut self, once: bool) -> Result<Outcome, WatchError> {
        let server = self.listener.take().map(|listener| {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let serve = http::serve(
                listener,
                self.shared.clone(),
                self.clock,
                self.settings.interval,
                async {
                    let _ = stopped.await;
                },
            );
            (stop, tokio::spawn(serve))
        });
        let result = self.run_loop(once).await;
        if let Some((stop, task)) = server {
            let _ = stop.send(());
            let _ = task.await;
        }
        result
    }

    async fn run_loop(mut self, once: bool) -> Result<Outcome, WatchError> {
        // One controller per store, for the whole run (DESIGN §10).
        let Some(mut lock) = self.lock(once).await? else {
            return Ok(Outcome::Success);
        };
        let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<()>();
        // Keep the watcher alive for the loop's life; a failure only means polling.
        let _watcher = ref_watcher(&self.follower, wake_tx);
        let now = self.clock.now();
        let mut st = Loop {
            in_force: None,
            loaded: None,
            seen: None,
            drift_due: now,
            requeue_at: None,
            failures: 0,
            reported_force: None,
        };
        let mut last = Outcome::Success;
        // Sessions stay open across cycles (warm drift checks); the pool reconnects a host
        // whose connection settings changed, or whose session died.
        let pool = Arc::new(crate::transport::Pool::new());
        // What each host's files were at the last drift check: unchanged files are not
        // hashed again.
        let memo = Arc::new(crate::observe::Memo::new());
        loop {
            if self.cancel.draining() {
                break;
            }
            // A leader whose lock was lost (its database session ended) is no leader: it
            // stands by until it holds the lock again, and starts from the stored state then.
            if let Some(error) = lock.lost() {
                self.view.note(&Note::LeaseLost { error: error.clone() });
                self.shared.update(|s| s.store_problem = Some(error));
                drop(lock);
                lock = match self.lock(once).await? {
                    Some(l) => l,
                    None => break,
                };
                // Whatever was applied meanwhile was another leader's: look again.
                st.in_force = None;
                st.loaded = None;
                st.seen = None;
                st.drift_due = self.clock.now();
            }
            let poll_in = match self.look(&mut st).await {
                Ok(()) => self.settings.interval,
                Err(e) if once => return Err(e.into()),
                Err(e) => {
                    st.failures += 1;
                    let backoff = wake::backoff(self.settings.interval, st.failures);
                    let error = e.to_string();
                    self.view.note(&Note::SourceFailed {
                        error: error.clone(),
                        retry_in_secs: backoff.as_secs(),
                    });
                    self.shared.update(|s| s.source_problem = Some(error));
                    backoff
                }
            };
            let now = self.clock.now();
            let fresh = st.in_force.is_some() && self.shared.status().revision != st.in_force;
            let due = wake::cycle_due(fresh, now, st.drift_due, st.requeue_at);
            if let (true, Some(revision)) = (due, st.loaded.as_ref()) {
                let result = cycle::run(&self, revision, pool.clone(), memo.clone()).await;
                last = result.outcome;
                st.requeue_at = result.requeue_at;
                st.drift_due = self
                    .clock
                    .now()
                    .saturating_add(wake::signed(self.settings.drift_interval))
                    .unwrap_or(Timestamp::MAX);
            } else if once {
                // Nothing valid to apply.
                last = Outcome::Failure;
            }
            if once {
                break;
            }
            let now = self.clock.now();
            let wake_at = wake::next_wake(now, poll_in, st.drift_due, st.requeue_at);
            self.shared.update(|s| s.next_wake = Some(wake_at));
            let sleep = wake_at.duration_since(now).try_into().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                Some(()) = wake_rx.recv() => {
                    // A burst of ref updates (a push writes several files) is one wake-up.
                    while wake_rx.try_recv().is_ok() {}
                }
                _ = self.cancel.reached(Stop::Drain) => {}
            }
        }
        if self.cancel.draining() {
            self.view.note(&Note::Stopping);
            self.shared.update(|s| s.stopping = true);
        }
        pool.close_all().await;
        Ok(last)
    }

    /// Takes the store's lock. Held by another process: `--once` is refused (naming the
    /// holder); a running watch waits with backoff, saying so in the log and `/status`.
    /// `None`: stopped while waiting.
    async fn lock(&self, once: bool) -> Result<Option<Box<dyn crate::store::LockGuard>>, WatchError> {
        let mut attempt = 0u32;
        loop {
            let holder = crate::store::Holder::this_process("flotilla watch", jiff::Timestamp::now());
            match self.store.lock(&holder) {
                Ok(guard) => {
                    self.shared.update(|s| s.store_problem = None);
                    return Ok(Some(guard));
                }
                Err(e) if e.is_locked() && !once => {
                    attempt += 1;
                    // A standby tries at least every STANDBY_RETRY, so it takes over soon
                    // after the leader dies (DESIGN §7: within 15 s).
                    let wait = wake::backoff(self.settings.interval, attempt).min(STANDBY_RETRY);
                    let error = e.to_string();
                    self.view.note(&Note::StoreHeld {
                        error: error.clone(),
                        retry_in_secs: wait.as_secs(),
                    });
                    self.shared.update(|s| s.store_problem = Some(error));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.cancel.reached(Stop::Drain) => return Ok(None),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Looks at the branch: a new head is loaded and, when valid, put in force.
    async fn look(&mut self, st: &mut Loop) -> Result<(), FollowError> {
        let started = std::time::Instant::now();
        let seen = self.follower.look().await?;
        tracing::debug!(
            millis = started.elapsed().as_millis() as u64,
            "looked at the branch"
        );
        st.failures = 0;
        let now = self.clock.now();
        self.shared.update(|s| {
            s.source_problem = None;
            s.last_poll = Some(now);
        });
        let head = match seen {
            Seen::Head(h) => h,
            Seen::ForcePushed { followed, head } => {
                if st.reported_force.as_deref() != Some(&head) {
                    self.view.note(&Note::ForcePushed {
                        followed: followed.clone(),
                        head: head.clone(),
                    });
                    st.reported_force = Some(head.clone());
                    let note = format!("force-pushed to {head}: not followed");
                    self.shared.update(|s| {
                        s.latest = Some(head);
                        s.latest_problem = Some(note);
                    });
                }
                return Ok(());
            }
        };
        if st.seen.as_deref() == Some(&head) {
            return Ok(());
        }
        st.seen = Some(head.clone());
        self.follower.follow(&head);
        self.view.note(&Note::NewRevision {
            revision: head.clone(),
            previous: st.in_force.clone(),
        });
        match cycle::load(self.follower.fleet_dir(), &head, &self.settings) {
            Ok(revision) => {
                st.loaded = Some(revision);
                st.in_force = Some(head);
                self.shared.update(|s| {
                    s.latest = None;
                    s.latest_problem = None;
                });
            }
            Err(problems) => {
                self.view.note(&Note::Invalid {
                    revision: head.clone(),
                    in_force: st.in_force.clone(),
                    problems: problems.clone(),
                });
                self.shared.update(|s| {
                    s.latest = Some(head);
                    s.latest_problem = Some(format!("invalid manifests:\n{problems}"));
                });
            }
        }
        Ok(())
    }
}

/// Wakes the loop when a local repository's refs change (inotify through `notify`). Polling
/// every interval remains the fallback if the watcher cannot be set up.
fn ref_watcher(follower: &Follower, wake: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let paths = follower.watched_paths();
    if paths.is_empty() {
        return None;
    }
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = wake.send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch the repository for changes ({e}); polling instead");
            return None;
        }
    };
    for (p, recursive) in paths {
        let mode = if recursive {
            notify::RecursiveMode::Recursive
        } else {
            notify::RecursiveMode::NonRecursive
        };
        if p.exists()
            && let Err(e) = watcher.watch(&p, mode)
        {
            tracing::warn!("cannot watch {} ({e}); polling instead", p.display());
        }
    }
    Some(watcher)
}
