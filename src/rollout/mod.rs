//! Rollouts: a plan's changing hosts applied environment by environment, wave by wave, at most
//! `max_parallel` at once, failures counted against `max_failures`.
//!
//! The rules are pure decisions in [`policy`]; [`execute`] is the thin tokio driver that asks
//! them at every host start and after every result, runs each host's planned changes as a
//! transaction, and reports what happened as [`Event`]s — which the terminal, plain-line and
//! JSON views, the audit log and (later) `watch`'s metrics all consume.

mod executor;
mod host;
pub mod policy;
mod spec;
mod sweep;
#[cfg(test)]
mod tests;

pub use executor::execute;
pub use policy::{Gate, Hold, SkipKind};
pub use spec::{EnvEnd, EnvRun, HostJob, Records, RunSpec, Summary, Touched};

use serde::Serialize;

use crate::plan::Change;
use crate::text::escape_controls;

/// Why a host that started did not end up changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A step failed and the host is back where it was.
    RolledBack,
    /// A step failed and so did the rollback: the host needs a person.
    Broken,
    /// A health re-check after a bake failed.
    Unhealthy,
    /// The host changed since it was observed; it was left untouched.
    Stale,
    /// Another transaction held the host's lock; it was left untouched.
    Locked,
    /// The connection failed or was lost (the on-host transaction finishes or rolls back by
    /// itself).
    Connection,
    /// The task running the host panicked (a bug): counted as a failed host.
    Panicked,
    /// The run was aborted (a second Ctrl-C) while the host was in flight.
    Aborted,
    /// The host lacks free space for the artifacts it installs (upload plus unpacked size);
    /// it was refused before anything was uploaded.
    NoRoom,
}

/// What happened to one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HostOutcome {
    Applied {
        /// A deletion or prune after the commit failed.
        warning: Option<String>,
    },
    Failed {
        kind: FailureKind,
        error: String,
    },
    /// Applied, then rolled back with the rest of its halted rollout.
    Reverted {
        why: String,
    },
    /// Not started.
    Skipped {
        kind: SkipKind,
        why: String,
    },
    /// Not started yet: it may go later.
    Waiting {
        hold: Hold,
    },
}

/// One host's result, with the changes it was to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostResult {
    pub host: String,
    pub environment: String,
    #[serde(skip)]
    pub changes: Vec<Change>,
    /// The transaction that changed the host, when one ran.
    pub txn: Option<String>,
    #[serde(flatten)]
    pub outcome: HostOutcome,
}

impl HostResult {
    /// Whether the host ends this run changed as planned.
    pub fn applied(&self) -> bool {
        matches!(self.outcome, HostOutcome::Applied { .. })
    }
}

/// Why an environment's rollout halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Halt {
    /// The wave during or after which it halted (0: before the first wave).
    pub wave: usize,
    pub reason: String,
}

/// What the driver reports, in the order it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    EnvironmentStarted {
        env: String,
        waves: usize,
        hosts: usize,
    },
    /// Changes in this environment wait (window, freeze, pause, promotion).
    EnvironmentWaiting {
        env: String,
        why: String,
        until: Option<jiff::Timestamp>,
    },
    WaveStarted {
        env: String,
        wave: usize,
        hosts: Vec<String>,
    },
    /// The bake after a wave, or the rest of one an interrupted run did not finish.
    Baking {
        env: String,
        wave: usize,
        until: jiff::Timestamp,
        /// The rest of a bake an interrupted run did not finish.
        resumed: bool,
    },
    /// A phase of a host's run on the controller's side, or a warning about the host.
    HostStep {
        host: String,
        step: String,
    },
    /// The step a host's transaction just started on the host (streamed while it runs; only
    /// when the run asked for [`crate::transaction::Detail::steps`]).
    HostRunning {
        host: String,
        step: String,
    },
    /// The last lines of one command's output on a host, after the host finished (only when
    /// the run asked for [`crate::transaction::Detail::output`], `-v`): host text, sanitized
    /// and bounded; never a sensitive file's on_change.
    HostOutput {
        host: String,
        env: String,
        /// What ran: `health check of app 2.0.0`, `on_change /etc/app.conf`, …
        label: String,
        lines: Vec<String>,
    },
    HostApplied {
        host: String,
        env: String,
        changes: usize,
        warning: Option<String>,
    },
    HostFailed {
        host: String,
        env: String,
        kind: FailureKind,
        error: String,
    },
    /// A host an interrupted transaction had left `pending` was restored to where it was.
    HostRecovered {
        host: String,
        env: String,
        txn: String,
    },
    /// A host rolled back with its halted rollout.
    RolledBack {
        host: String,
        env: String,
        why: String,
    },
    /// Over its environment's `host_limits`: it waits; the rest of its wave goes on, and it
    /// is tried again when they are done.
    HostBusy {
        host: String,
        env: String,
        why: String,
    },
    /// Not started: stale, blocked by an artifact, halted rollout, interruption.
    HostSkipped {
        host: String,
        env: String,
        kind: SkipKind,
        why: String,
    },
    Halted {
        env: String,
        wave: usize,
        why: String,
    },
}

impl Event {
    /// The host the event is about, if it is about one.
    pub fn host(&self) -> Option<&str> {
        match self {
            Event::HostStep { host, .. }
            | Event::HostRunning { host, .. }
            | Event::HostOutput { host, .. }
            | Event::HostRecovered { host, .. }
            | Event::HostApplied { host, .. }
            | Event::HostFailed { host, .. }
            | Event::RolledBack { host, .. }
            | Event::HostSkipped { host, .. }
            | Event::HostBusy { host, .. } => Some(host),
            _ => None,
        }
    }

    /// One plain line, for logs and non-terminal output.
    pub fn line(&self) -> String {
        match self {
            Event::EnvironmentStarted { env, waves, hosts } => {
                format!("environment {env}: {hosts} host(s) in {waves} wave(s)")
            }
            Event::EnvironmentWaiting { env, why, .. } => format!("environment {env}: waiting: {why}"),
            Event::WaveStarted { env, wave, hosts } => {
                format!(
                    "environment {env}: wave {wave} ({} host(s)): {}",
                    hosts.len(),
                    hosts.join(", ")
                )
            }
            Event::Baking {
                env,
                wave,
                until,
                resumed: false,
            } => format!("environment {env}: baking after wave {wave} until {until:.0}"),
            Event::Baking {
                env,
                until,
                resumed: true,
                ..
            } => {
                format!("environment {env}: finishing the bake of the interrupted rollout (until {until:.0})")
            }
            Event::HostStep { host, step } | Event::HostRunning { host, step } => {
                format!("  {host}: {}", escape_controls(step))
            }
            Event::HostOutput {
                host, label, lines, ..
            } => {
                let mut out = format!("  {host}: output of {}:", escape_controls(label));
                if lines.is_empty() {
                    out.push_str(" (none)");
                }
                for l in lines {
                    out.push_str("\n    | ");
                    out.push_str(&escape_controls(l));
                }
                out
            }
            Event::HostRecovered { host, txn, .. } => {
                format!("  {host}: restored the state from before interrupted transaction {txn}")
            }
            Event::HostApplied {
                host,
                changes,
                warning: None,
                ..
            } => format!("  {host}: applied {changes} change(s)"),
            Event::HostApplied {
                host,
                changes,
                warning: Some(w),
                ..
            } => {
                format!(
                    "  {host}: applied {changes} change(s), but {}",
                    escape_controls(w)
                )
            }
            // Errors can carry host text (stderr): escaped, so a host cannot forge lines.
            Event::HostFailed { host, error, .. } => format!("  {host}: FAILED: {}", escape_controls(error)),
            Event::RolledBack { host, why, .. } => format!("  {host}: rolled back: {}", escape_controls(why)),
            Event::HostSkipped { host, why, .. } => format!("  {host}: skipped: {}", escape_controls(why)),
            Event::HostBusy { host, why, .. } => format!("  {host}: waits, {}", escape_controls(why)),
            Event::Halted { env, why, .. } => format!("environment {env}: HALTED: {why}"),
        }
    }
}
