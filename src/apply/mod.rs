//! The engine (DESIGN §12), Terraform's `Plan()` → `Apply(plan)`: [`prepare()`] observes the
//! targeted hosts and plans them against the manifests and the store's records; the caller
//! shows the plan and confirms; [`apply`] then checks every artifact, takes an epoch, restores
//! interrupted hosts, runs the rollout and returns a typed [`Report`] whose [`Action`] says
//! when something can go next. `plan`, `apply`, `apply --wait` and `status` all call it;
//! [`apply_rounds`] is `apply` and `apply --wait` whole (plan, confirm, apply, sleep, again).
//! The CLI only parses, confirms and renders.
//!
//! Nothing here touches a host before [`apply`] is called, and [`apply`] touches only hosts
//! this store may change: a host whose `state.json` names another fleet, host or store (or a
//! newer epoch of this one), or cannot be read, is refused — planned as refused, never
//! recovered, rolled back or re-checked.

mod artifacts;
mod audit;
pub mod guard;
mod prepare;
mod records;
mod recover;
mod rounds;
mod run;

pub use artifacts::{check_cached_urls, needed_artifacts};
pub use prepare::{Planned, plan_observed, prepare, records};
pub use rounds::{RoundView, Rounds, RoundsEnd, apply_rounds};
pub use run::apply;

use std::sync::Arc;

use serde::Serialize;

use crate::cancel::Cancel;
use crate::clock::Clock;
use crate::load::LoadedFleet;
use crate::plan::SavedPlan;
use crate::repo::FleetRepo;
use crate::resolve::DesiredHost;
use crate::rollout::{Halt, Hold, HostOutcome, HostResult};
use crate::store::Store;
use crate::transport::Pool;

/// Which hosts a run covers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// The hosts the targeting flags picked.
    Hosts(&'a [&'a DesiredHost]),
    /// The hosts a saved plan changes (`apply --plan`): each changes only if its observation
    /// and its changes are still the ones saved.
    Saved(&'a SavedPlan),
}

/// What a person allowed for this run, each with the reason that goes to the audit log.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--override-windows REASON`: windows are ignored.
    pub windows: Option<String>,
    /// `--override-freeze REASON`: freezes are ignored.
    pub freeze: Option<String>,
    /// `--take-over REASON`: hosts last written by another store (or with an unreadable
    /// `state.json`) become this store's.
    pub take_over: Option<String>,
    /// `--retry REASON`: rollouts halted at this revision start again.
    pub retry: Option<String>,
}

/// One run's inputs: the fleet at a revision, which hosts, what was overridden, and the
/// effects it may use (store, sessions, clock, cancellation).
pub struct Request<'a> {
    pub fleet: &'a LoadedFleet,
    pub repo: &'a FleetRepo,
    pub scope: Scope<'a>,
    pub overrides: Overrides,
    /// The store; `None` for a plan without one (nothing applied yet).
    pub store: Option<&'a dyn Store>,
    pub pool: Arc<Pool>,
    /// What earlier probes saw, kept across runs by `watch` (see [`crate::observe::Memo`]);
    /// `None`: every file is hashed.
    pub memo: Option<Arc<crate::observe::Memo>>,
    pub clock: Clock,
    pub cancel: Cancel,
    /// SSH sessions (and host changes) at once across the fleet.
    pub parallel: usize,
    /// When windows are evaluated for the plan (`--at`); the clock's now otherwise.
    pub at: Option<jiff::Timestamp>,
    /// Which keys artifacts must be signed by: repository artifacts are checked when planning,
    /// every artifact a run needs before applying (DESIGN §3).
    pub trust: &'a crate::artifact::TrustPolicy,
    /// Where checked artifacts are remembered; the store's cache when `None` (and no cache
    /// at all without a store).
    pub artifact_cache: Option<std::path::PathBuf>,
}

/// What `apply` needs beyond the request.
pub struct ApplyOptions {
    /// Who applies (`user@machine`), for the audit log.
    pub actor: String,
    /// The working tree had uncommitted changes (`--allow-dirty`).
    pub dirty: bool,
    /// `watch` applies without a person: nothing is approved (see [`guard`]). A person's
    /// apply records the guarded settings of every environment it covers as approved.
    pub unattended: bool,
    /// What the hosts report besides each result: on-host steps as they start, the output of
    /// hooks and health checks (`-v`).
    pub detail: crate::transaction::Detail,
}

/// How a run ended, which decides the exit code (DESIGN §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every targeted change applied.
    Success,
    /// A host failed, was rolled back, refused, stale, or could not be observed; or an error.
    Failure,
    /// Nothing failed, but changes wait (window, freeze, promotion, pause).
    Waiting,
}

/// When to run again, kube-runtime style: `requeue_at` is the next moment something that
/// waits may go (a window opens, a freeze ends); `None` when nothing waits on a known time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Action {
    pub requeue_at: Option<jiff::Timestamp>,
}

/// An environment whose remaining changes wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wait {
    pub environment: String,
    #[serde(flatten)]
    pub hold: Hold,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Per host, in the order things happened; hosts with nothing to do are not listed.
    pub hosts: Vec<HostResult>,
    pub waits: Vec<Wait>,
    pub halts: Vec<(String, Halt)>,
    /// Artifacts that failed their checks: the whole run was refused before any host.
    pub artifact_errors: Vec<crate::artifact::ArtifactFailure>,
    /// Hosts that could not be observed.
    pub unreachable: usize,
    /// A stop was requested during the run.
    pub interrupted: bool,
    pub next: Action,
    pub outcome: Outcome,
}

impl Report {
    fn count(&self, f: impl Fn(&HostOutcome) -> bool) -> usize {
        self.hosts.iter().filter(|h| f(&h.outcome)).count()
    }
    pub fn applied(&self) -> usize {
        self.count(|o| matches!(o, HostOutcome::Applied { .. }))
    }
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, HostOutcome::Failed { .. } | HostOutcome::Reverted { .. }))
    }
    pub fn rolled_back(&self) -> usize {
        self.count(|o| {
            matches!(
                o,
                HostOutcome::Reverted { .. }
                    | HostOutcome::Failed {
                        kind: crate::rollout::FailureKind::RolledBack,
                        ..
                    }
            )
        })
    }
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, HostOutcome::Skipped { .. }))
    }
    pub fn waiting(&self) -> usize {
        self.count(|o| matches!(o, HostOutcome::Waiting { .. }))
    }

    /// The outcome the results call for (DESIGN §11).
    fn decide(&mut self) {
        let failed = self.failed() + self.skipped() > 0
            || !self.artifact_errors.is_empty()
            || self.unreachable > 0
            || self.interrupted;
        self.outcome = if failed {
            Outcome::Failure
        } else if self.waiting() > 0 || !self.waits.is_empty() {
            Outcome::Waiting
        } else {
            Outcome::Success
        };
        self.next = Action {
            requeue_at: crate::rollout::policy::next_wake(self.waits.iter().map(|w| &w.hold)),
        };
    }
}

/// Why the engine could not run at all (as opposed to hosts failing, which is data).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(
        "the saved plan is for fleet {saved:?}, but the fleet directory holds fleet {found}: plan again with `flotilla plan --out`"
    )]
    OtherFleet { saved: String, found: String },
    #[error(
        "applying needs a store: pass --state-dir or --state postgres://… (or set FLOTILLA_STATE_DIR, FLOTILLA_STATE, XDG_STATE_HOME or HOME)"
    )]
    NoStore,
    #[error("cannot check the artifacts: {0}")]
    Artifacts(String),
}
