//! Rollouts: a plan's changing hosts applied environment by environment, wave by wave, at most
//! `max_parallel` at once, failures counted against `max_failures`. The executor decides
//! nothing the plan did not: it runs each host's planned changes as a transaction and reports
//! what happened as [`Event`]s, which the terminal, plain-line and JSON views (and later
//! `watch`'s metrics) all consume.

mod executor;

pub use executor::{Cancel, Gate, HostJob, HostResult, Records, RunSpec, Summary, execute};

use serde::Serialize;

/// What the executor reports, in the order it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    EnvironmentStarted {
        env: String,
        waves: usize,
        hosts: usize,
    },
    /// Changes in this environment wait (window, freeze); nothing starts.
    EnvironmentWaiting {
        env: String,
        why: String,
    },
    WaveStarted {
        env: String,
        wave: usize,
        hosts: Vec<String>,
    },
    HostStep {
        host: String,
        step: String,
    },
    HostApplied {
        host: String,
        changes: usize,
        warning: Option<String>,
    },
    HostFailed {
        host: String,
        error: String,
    },
    RolledBack {
        host: String,
        why: String,
    },
    /// Not started: stale, blocked by an artifact, halted rollout, interruption.
    HostSkipped {
        host: String,
        why: String,
    },
    Halted {
        env: String,
        why: String,
    },
}

impl Event {
    /// One plain line, for logs and non-terminal output.
    pub fn line(&self) -> String {
        match self {
            Event::EnvironmentStarted { env, waves, hosts } => {
                format!("environment {env}: {hosts} host(s) in {waves} wave(s)")
            }
            Event::EnvironmentWaiting { env, why } => format!("environment {env}: waiting: {why}"),
            Event::WaveStarted { env, wave, hosts } => {
                format!(
                    "environment {env}: wave {wave} ({} host(s)): {}",
                    hosts.len(),
                    hosts.join(", ")
                )
            }
            Event::HostStep { host, step } => format!("  {host}: {step}"),
            Event::HostApplied {
                host,
                changes,
                warning: None,
            } => format!("  {host}: applied {changes} change(s)"),
            Event::HostApplied {
                host,
                changes,
                warning: Some(w),
            } => {
                format!("  {host}: applied {changes} change(s), but {w}")
            }
            Event::HostFailed { host, error } => format!("  {host}: FAILED: {error}"),
            Event::RolledBack { host, why } => format!("  {host}: rolled back: {why}"),
            Event::HostSkipped { host, why } => format!("  {host}: skipped: {why}"),
            Event::Halted { env, why } => format!("environment {env}: HALTED: {why}"),
        }
    }
}
