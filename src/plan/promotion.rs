//! Promotion gates (DESIGN §6.4), pure: with `fleet.promotion`, version V of runtime R may
//! start in an environment only after every earlier environment in the list that uses R has
//! a promotion record for (R, V) at least `promotion_soak` old. Environments that do not use R
//! are skipped, and a version already active in the environment before is not gated.

use std::collections::BTreeSet;

use crate::manifest::model::{Fleet, Pin};
use crate::plan::{Action, Change, Kind};
use crate::resolve::DesiredHost;

/// An environment that had every host wanting `runtime` at `version` converged and healthy:
/// the store keeps these, and [`waits`] reads them. Records are never revoked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PromotionRecord {
    /// The environment that converged.
    pub environment: String,
    /// The runtime's name.
    pub runtime: String,
    /// The version every host of the environment wanting the runtime had active and healthy.
    pub version: String,
    /// When the environment converged; the soak of later environments counts from here.
    pub at: jiff::Timestamp,
}

/// Does any host of `env` pin `runtime` to a version?
pub fn uses(desired: &[DesiredHost], env: &str, runtime: &str) -> bool {
    desired.iter().any(|h| {
        h.environment.as_str() == env
            && h.runtimes
                .get(runtime)
                .is_some_and(|p| matches!(p.value, Pin::Version(_)))
    })
}

/// Why a host's changes wait for promotion, or `None` when they may go. All of a host's
/// changes go together, so the first gated change holds the host.
pub fn waits(
    fleet: &Fleet,
    desired: &[DesiredHost],
    env: &str,
    changes: &[Change],
    active_in_env: &BTreeSet<(String, String)>,
    records: &[PromotionRecord],
    now: jiff::Timestamp,
) -> Option<String> {
    let pos = fleet.promotion.iter().position(|e| e.as_str() == env)?;
    let soak = fleet
        .environments
        .get(env)
        .map(|e| e.rollout.promotion_soak)
        .unwrap_or_default();
    for c in changes {
        let (Kind::Runtime, Action::Create | Action::Update, Some(version)) = (c.kind, c.action, &c.after)
        else {
            continue;
        };
        if active_in_env.contains(&(c.name.clone(), version.clone())) {
            continue;
        }
        for earlier in &fleet.promotion[..pos] {
            if !uses(desired, earlier.as_str(), &c.name) {
                continue;
            }
            let record = records
                .iter()
                .filter(|r| r.environment == earlier.as_str() && r.runtime == c.name && r.version == *version)
                .map(|r| r.at)
                .min();
            match record {
                None => return Some(format!("{} {version} waits on {earlier}", c.name)),
                Some(at) => {
                    let ready = crate::duration::saturating_add(at, soak);
                    if ready > now {
                        return Some(format!(
                            "{} {version} soaks in {earlier} until {}",
                            c.name,
                            ready.strftime("%Y-%m-%d %H:%M:%S UTC")
                        ));
                    }
                }
            }
        }
    }
    None
}
