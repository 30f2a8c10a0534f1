//! `flotilla status`: where every environment and host stands, from a fresh plan and the
//! store's records — converged, pending, waiting (why, until when), failed, halted, drifted or
//! unreachable — with each environment's window. Pure: the plan and the records are inputs.

use std::fmt::Write as _;

use serde::Serialize;

use crate::plan::{Plan, WindowState};
use crate::store::AuditEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    Converged,
    Pending,
    Waiting,
    Failed,
    Halted,
    Drifted,
    Unreachable,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostLine {
    pub name: String,
    pub status: HostStatus,
    /// Why, for every status but converged and pending.
    pub reason: Option<String>,
    /// When a waiting host may go.
    pub until: Option<jiff::Timestamp>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentStatus {
    pub name: String,
    pub window: WindowState,
    pub frozen: bool,
    pub waiting: Option<String>,
    pub halted: Option<String>,
    /// `flotilla pause` holds this environment: why, who, since when.
    pub paused: Option<String>,
    pub hosts: Vec<HostLine>,
    #[serde(skip)]
    window_text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub format_version: &'static str,
    pub fleet: String,
    pub revision: Option<String>,
    pub environments: Vec<EnvironmentStatus>,
}

const FAILED_EVENTS: [&str; 5] = [
    "host-failed",
    "rolled-back",
    "host-broken",
    "host-unhealthy",
    "host-skipped",
];

/// `last_event(host)` comes from the store; halts come with the plan.
pub fn build(plan: &Plan, last_event: &dyn Fn(&str) -> Option<AuditEvent>) -> Status {
    let environments = plan
        .environments
        .iter()
        .map(|env| {
            // A halt matters while its changes are still to do.
            let pending = plan
                .hosts
                .iter()
                .any(|h| h.environment == env.name && !h.changes.is_empty());
            // The engine's plan carries the halts that still hold (DESIGN §6.3).
            let halted = env
                .halted
                .as_ref()
                .map(|h| {
                    format!(
                        "halted at wave {}: {} (since {:.0}); `flotilla apply --retry REASON` starts it again",
                        h.wave, h.reason, h.at
                    )
                })
                .filter(|_| pending);
            let hosts = plan
                .hosts
                .iter()
                .filter(|h| h.environment == env.name)
                .map(|h| {
                    let (status, reason, until) = if let Some(e) = &h.error {
                        (HostStatus::Unreachable, Some(e.clone()), None)
                    } else if h.changes.is_empty() {
                        (HostStatus::Converged, None, None)
                    } else if let Some(why) = &halted {
                        (HostStatus::Halted, Some(why.clone()), None)
                    } else if let Some(e) =
                        last_event(&h.name).filter(|e| FAILED_EVENTS.contains(&e.event.as_str()))
                    {
                        (HostStatus::Failed, Some(e.error.unwrap_or(e.event)), None)
                    } else if let Some(why) = &h.busy {
                        (HostStatus::Waiting, Some(why.clone()), None)
                    } else if h.changes.iter().any(|c| c.drift) {
                        (HostStatus::Drifted, Some("changed outside Flotilla".into()), None)
                    } else if let Some(why) = &env.waiting {
                        let until = env.window.next_open.filter(|_| env.paused.is_none());
                        (HostStatus::Waiting, Some(why.clone()), until)
                    } else {
                        (HostStatus::Pending, None, None)
                    };
                    HostLine {
                        name: h.name.clone(),
                        status,
                        reason,
                        until,
                    }
                })
                .collect();
            EnvironmentStatus {
                name: env.name.clone(),
                window: env.window.clone(),
                frozen: env.frozen,
                waiting: env.waiting.clone(),
                halted,
                paused: env.paused.clone(),
                hosts,
                window_text: env.view.window.clone(),
            }
        })
        .collect();
    Status {
        format_version: "1",
        fleet: plan.fleet.clone(),
        revision: plan.revision.clone(),
        environments,
    }
}

pub fn render_text(s: &Status) -> String {
    let mut out = String::new();
    for env in &s.environments {
        let _ = writeln!(out, "Environment {} · {}", env.name, env.window_text);
        if let Some(h) = &env.halted {
            let _ = writeln!(out, "  rollout HALTED: {h}");
        }
        if let Some(p) = &env.paused {
            let resume = if p.contains("(the whole fleet, ") {
                "`flotilla resume`".to_owned()
            } else {
                format!("`flotilla resume --env {}`", env.name)
            };
            let _ = writeln!(out, "  PAUSED: {p}; {resume} lifts it");
        }
        let width = env.hosts.iter().map(|h| h.name.len()).max().unwrap_or(0);
        for h in &env.hosts {
            let status = serde_json::to_value(h.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = write!(out, "  {:<width$}  {status}", h.name);
            if let Some(r) = &h.reason {
                let _ = write!(out, ": {r}");
            }
            if let Some(u) = h.until {
                let _ = write!(out, " (until {})", u.strftime("%Y-%m-%d %H:%M UTC"));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}
