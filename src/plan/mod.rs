//! Plans: the changes that turn what hosts have into what the manifests say, as one
//! serialisable value ([`Plan`]). [`build()`] computes it (pure), and the renderers turn the
//! same value into text for terminals, markdown for pull requests and JSON for machines.

mod build;
pub mod fold;
pub mod markdown;
pub mod promotion;
pub mod room;
pub mod text;

pub use build::{HostInput, PlanInput, build};

use serde::{Deserialize, Serialize};

use crate::text::{escape_controls, sanitize};

pub const FORMAT_VERSION: &str = "1";

/// The plan: what applying would change, per environment and host (DESIGN §5). Its JSON form
/// (`plan --format json`, `plan --out`) is described by `schema/plan.schema.json`, generated
/// from this type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(title = "Flotilla plan", deny_unknown_fields)]
pub struct Plan {
    /// Always "1" for this layout.
    pub format_version: String,
    /// The fleet's name (`[fleet] name`).
    pub fleet: String,
    /// Full commit id; null for an uncommitted tree.
    pub revision: Option<String>,
    /// When the plan was made, RFC 3339.
    #[schemars(with = "String")]
    pub created_at: jiff::Timestamp,
    /// Counts of changes and hosts.
    pub summary: Summary,
    /// Every environment with targeted hosts, in promotion order.
    pub environments: Vec<EnvironmentPlan>,
    /// Every targeted host, changed or not.
    pub hosts: Vec<HostPlan>,
    /// Hosts the store has seen that the manifests no longer name; they are left as they are.
    #[serde(default)]
    pub no_longer_managed: Vec<String>,
}

/// Counts of a plan. Changes that wait (window, freeze, promotion) still count; hosts that
/// could not be observed count only in `hosts_unreachable`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Summary {
    /// Runtimes installed and files created.
    pub add: usize,
    /// Runtimes switched, files changed or taken over, and interrupted transactions to restore
    /// (one per interrupted host).
    pub change: usize,
    /// Runtimes and files removed.
    pub destroy: usize,
    /// Hosts with at least one change.
    pub hosts_changed: usize,
    /// Hosts targeted.
    pub hosts_total: usize,
    /// Hosts that could not be observed.
    pub hosts_unreachable: usize,
}

/// A halted rollout (DESIGN §6.3): past `max_failures` it stopped, and it stays halted for
/// that revision until `apply --retry REASON`. JSON: `{"wave": N, "reason": "...", "at": "RFC 3339"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Halt {
    /// The wave (1-based) the rollout halted in.
    pub wave: usize,
    /// Why it halted, as recorded (may carry host text; plans escape control characters).
    pub reason: String,
    /// When it halted, RFC 3339.
    #[schemars(with = "String")]
    pub at: jiff::Timestamp,
}

/// One environment's state for this plan: window, freeze, halt, promotion and waves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EnvironmentPlan {
    /// The environment's name.
    pub name: String,
    /// Its maintenance window now.
    pub window: WindowState,
    /// Whether a freeze is in force now.
    pub frozen: bool,
    /// The environment's rollout of this revision halted: where, why and when; null when not.
    #[serde(default)]
    pub halted: Option<Halt>,
    /// Why this environment's changes wait, or null.
    pub waiting: Option<String>,
    /// Every promotion gate holding a change of this environment ("greeter 2.0.0 soaks in
    /// staging until …"); empty when none holds.
    #[serde(default)]
    pub promotion_holds: Vec<String>,
    /// A closed window or a freeze that `apply --override-windows/--override-freeze REASON`
    /// lifts for this run: the reason; null when nothing is overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overridden: Option<String>,
    /// `flotilla pause` holds every change of this environment: the reason, who and since
    /// when; null when not paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// Host names per wave, canaries first.
    pub waves: Vec<Vec<String>>,
    /// Presentation only: the window sentence and the configured wave targets.
    #[serde(skip)]
    pub view: EnvironmentView,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentView {
    pub window: String,
    pub wave_targets: String,
    pub promotion: Option<String>,
}

/// An environment's maintenance window at plan time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WindowState {
    /// Whether changes may start now (a window is open, or there is none).
    pub open: bool,
    /// When the open window closes, RFC 3339; null when closed or without windows.
    #[schemars(with = "Option<String>")]
    pub closes_at: Option<jiff::Timestamp>,
    /// When the next window opens, RFC 3339; null when open now.
    #[schemars(with = "Option<String>")]
    pub next_open: Option<jiff::Timestamp>,
}

/// One targeted host: its wave, its changes, or why it cannot be planned or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct HostPlan {
    /// The host's name.
    pub name: String,
    /// Its environment.
    pub environment: String,
    /// 1-based; null when the host has nothing to change.
    pub wave: Option<usize>,
    /// Digest of the observation; null when the host could not be observed.
    pub fingerprint: Option<String>,
    /// Why the host could not be observed.
    pub error: Option<String>,
    /// Why `apply` will refuse the host (another fleet, host or store; a higher epoch; an
    /// unreadable `state.json`), or null. A refused host has no changes and no wave.
    #[serde(default)]
    pub refused: Option<String>,
    /// A transaction was interrupted on this host (it is `pending`): apply restores it first.
    #[serde(default)]
    pub interrupted: bool,
    /// What to change, runtimes first, then files by path.
    pub changes: Vec<Change>,
    /// Warnings about the host: an interrupted transaction, a clock more than two minutes off
    /// the controller's, an unreadable `state.json`, missing tools.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Over its environment's `host_limits` when observed: which limits (DESIGN §6.4); null
    /// when not busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<String>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn symbol(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Runtime,
    File,
}

/// One change on one host: a runtime or a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Change {
    /// What happens to it.
    pub action: Action,
    /// A runtime or a file.
    pub kind: Kind,
    /// Runtime name or file path.
    pub name: String,
    /// Versions for runtimes, sha256 for files; for `sensitive` files (and files leaving the
    /// manifests) the engine publishes a keyed digest instead (`hmac-sha256:…`, see
    /// `crate::store::DigestKey`).
    pub before: Option<String>,
    pub after: Option<String>,
    /// Unified diff; files only, absent when sensitive or unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The host differs from what Flotilla last applied there (changed outside Flotilla).
    pub drift: bool,
    /// Presentation only: "take over existing file", "mode 0644 -> 0600".
    #[serde(skip)]
    pub notes: Vec<String>,
    /// Presentation only: the template a file's content is rendered from (its manifest
    /// location), so hosts whose changes differ only by template variables fold together.
    #[serde(skip)]
    pub template: Option<String>,
}

/// A plan saved by `plan --out`: the JSON plan plus each host's change digest, so that
/// `apply --plan` changes a host only if the same changes are still called for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPlan {
    #[serde(flatten)]
    pub plan: Plan,
    /// host → digest of its changes.
    pub digests: std::collections::BTreeMap<String, String>,
}

impl SavedPlan {
    pub fn new(plan: Plan) -> SavedPlan {
        let digests = plan
            .hosts
            .iter()
            .filter(|h| h.error.is_none() && h.refused.is_none())
            .map(|h| (h.name.clone(), change_digest(&h.changes)))
            .collect();
        SavedPlan { plan, digests }
    }
}

/// Digest of a host's changes, saved with a plan so `apply --plan` can tell whether the same
/// changes are still what the manifests and the host call for.
pub fn change_digest(changes: &[Change]) -> String {
    crate::resolve::sha256_hex(serde_json::to_string(changes).unwrap_or_default().as_bytes())
}

impl Plan {
    /// The last line of every text plan (DESIGN §5). "The fleet matches the manifests" only
    /// when every targeted host was observed: a host that could not be observed may differ.
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        if s.add + s.change + s.destroy == 0 {
            if s.hosts_unreachable == 0 {
                "No changes. The fleet matches the manifests.".to_owned()
            } else {
                let observed = s.hosts_total.saturating_sub(s.hosts_unreachable);
                format!(
                    "No changes on the {observed} host{} observed; {} could not be observed.",
                    if observed == 1 { "" } else { "s" },
                    s.hosts_unreachable
                )
            }
        } else {
            format!(
                "Plan: {} to add, {} to change, {} to destroy.",
                s.add, s.change, s.destroy
            )
        }
    }

    /// Lifts closed windows (`windows`) and freezes (`freeze`) for this run, with the reasons
    /// given (audited by apply): the environment's header says `window closed — overridden:
    /// REASON`, and its changes no longer wait for the schedule (halts and promotion still
    /// hold them).
    pub fn override_schedule(&mut self, windows: Option<&str>, freeze: Option<&str>) {
        for env in &mut self.environments {
            let closed = !env.window.open;
            let lifted = match (closed, env.frozen) {
                (false, false) => continue,
                (true, false) => windows,
                (false, true) => freeze,
                (true, true) => windows.and(freeze),
            };
            let Some(reason) = lifted else { continue };
            let reason = escape_controls(reason);
            env.view.window = format!("{} — overridden: {reason}", env.view.window);
            env.overridden = Some(reason);
            if env.halted.is_none() {
                env.waiting = env.promotion_holds.first().cloned();
            }
        }
    }

    /// Marks the environments `paused_by` names as paused (DESIGN §10): their changes wait
    /// until someone resumes them, whatever the schedule says.
    pub fn pause(&mut self, paused_by: impl Fn(&str) -> Option<String>) {
        for env in &mut self.environments {
            let Some(why) = paused_by(&env.name) else { continue };
            let why = escape_controls(&why);
            env.waiting = Some(format!("paused: {why}"));
            env.paused = Some(why);
        }
    }

    pub fn has_changes(&self) -> bool {
        self.summary.add + self.summary.change + self.summary.destroy > 0
    }

    /// Whether the plan proves that the targeted hosts match the manifests: no changes and
    /// every host observed. `plan --detailed-exitcode` exits 0 only then.
    pub fn proves_converged(&self) -> bool {
        !self.has_changes() && self.summary.hosts_unreachable == 0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_with(summary: Summary) -> Plan {
        Plan {
            format_version: "1".into(),
            fleet: "f".into(),
            revision: None,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            summary,
            environments: Vec::new(),
            hosts: Vec::new(),
            no_longer_managed: Vec::new(),
        }
    }

    fn env(name: &str, open: bool, frozen: bool) -> EnvironmentPlan {
        EnvironmentPlan {
            name: name.into(),
            window: WindowState {
                open,
                closes_at: None,
                next_open: None,
            },
            frozen,
            halted: None,
            waiting: (!open || frozen).then(|| "closed; opens Sat 02:00".to_owned()),
            promotion_holds: Vec::new(),
            overridden: None,
            paused: None,
            waves: vec![vec!["h1".into()]],
            view: EnvironmentView {
                window: "closed; opens Sat 02:00".into(),
                ..EnvironmentView::default()
            },
        }
    }

    #[test]
    fn overriding_windows_lifts_closed_windows_but_not_freezes() {
        let mut p = plan_with(Summary::default());
        p.environments = vec![
            env("closed", false, false),
            env("frozen", true, true),
            env("open", true, false),
        ];
        p.environments[2].waiting = None;
        p.override_schedule(Some("hotfix \u{1b}[2K"), None);
        let closed = &p.environments[0];
        assert_eq!(closed.overridden.as_deref(), Some("hotfix \\u{1b}[2K"));
        assert_eq!(closed.waiting, None);
        assert!(
            closed.view.window.ends_with("— overridden: hotfix \\u{1b}[2K"),
            "{}",
            closed.view.window
        );
        assert_eq!(
            p.environments[1].overridden, None,
            "a freeze needs --override-freeze"
        );
        assert!(p.environments[1].waiting.is_some());
        assert_eq!(p.environments[2].overridden, None, "nothing to lift");
        p.override_schedule(None, Some("incident"));
        assert_eq!(p.environments[1].overridden.as_deref(), Some("incident"));
    }

    #[test]
    fn no_changes_is_claimed_only_when_every_host_was_observed() {
        let all = plan_with(Summary {
            hosts_total: 3,
            ..Summary::default()
        });
        assert_eq!(all.summary_line(), "No changes. The fleet matches the manifests.");
        assert!(all.proves_converged());
        let some = plan_with(Summary {
            hosts_total: 3,
            hosts_unreachable: 2,
            ..Summary::default()
        });
        assert_eq!(
            some.summary_line(),
            "No changes on the 1 host observed; 2 could not be observed."
        );
        assert!(!some.proves_converged());
        let changes = plan_with(Summary {
            add: 1,
            hosts_total: 3,
            hosts_unreachable: 1,
            ..Summary::default()
        });
        assert_eq!(
            changes.summary_line(),
            "Plan: 1 to add, 0 to change, 0 to destroy."
        );
        assert!(!changes.proves_converged());
    }
}
