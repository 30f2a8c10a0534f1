//! Plans: the changes that turn what hosts have into what the manifests say, as one
//! serialisable value ([`Plan`]). [`build`] computes it (pure), and the renderers turn the
//! same value into text for terminals, markdown for pull requests and JSON for machines.

mod build;
pub mod fold;
pub mod markdown;
pub mod promotion;
pub mod text;

pub use build::{HostInput, PlanInput, build};

use serde::{Deserialize, Serialize};

use crate::text::{escape_controls, sanitize};

pub const FORMAT_VERSION: &str = "1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: String,
    pub fleet: String,
    /// Full commit id; null for an uncommitted tree.
    pub revision: Option<String>,
    pub created_at: jiff::Timestamp,
    pub summary: Summary,
    pub environments: Vec<EnvironmentPlan>,
    pub hosts: Vec<HostPlan>,
    /// Presentation only: hosts the store has seen that the manifests no longer name; they
    /// are left as they are.
    #[serde(skip)]
    pub no_longer_managed: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub hosts_changed: usize,
    pub hosts_total: usize,
    pub hosts_unreachable: usize,
}

/// A halted rollout (DESIGN §6.3): past `max_failures` it stopped, and it stays halted for
/// that revision until `apply --retry REASON`. JSON: `{"wave": N, "reason": "...", "at": "RFC 3339"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    /// The wave (1-based) the rollout halted in.
    pub wave: usize,
    /// Why it halted, as recorded (may carry host text; plans escape control characters).
    pub reason: String,
    /// When it halted.
    pub at: jiff::Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentPlan {
    pub name: String,
    pub window: WindowState,
    pub frozen: bool,
    /// The environment's rollout of this revision halted: where, why and when; null when not.
    #[serde(default)]
    pub halted: Option<Halt>,
    /// Why this environment's changes wait, or null.
    pub waiting: Option<String>,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowState {
    pub open: bool,
    pub closes_at: Option<jiff::Timestamp>,
    pub next_open: Option<jiff::Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlan {
    pub name: String,
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
    pub changes: Vec<Change>,
    /// Presentation only: interrupted transactions, clock skew.
    #[serde(skip)]
    pub warnings: Vec<String>,
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

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
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
    pub drift: bool,
    /// Presentation only: "take over existing file", "mode 0644 -> 0600".
    #[serde(skip)]
    pub notes: Vec<String>,
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
    /// The last line of every text plan (DESIGN §5).
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        if s.add + s.change + s.destroy == 0 {
            "No changes. The fleet matches the manifests.".to_owned()
        } else {
            format!(
                "Plan: {} to add, {} to change, {} to destroy.",
                s.add, s.change, s.destroy
            )
        }
    }

    pub fn has_changes(&self) -> bool {
        self.summary.add + self.summary.change + self.summary.destroy > 0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
