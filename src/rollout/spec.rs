//! What a run is made of, and what it gives back: the jobs of each environment, the records
//! the driver keeps through [`Records`] without knowing the store, and the summary.

use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::mpsc;

use super::policy::{Gate, Hold};
use super::{Event, Halt, HostResult};
use crate::cancel::Cancel;
use crate::clock::Clock;
use crate::manifest::model::Fleet;
use crate::observe::Observation;
use crate::plan::Change;
use crate::resolve::DesiredHost;
use crate::transaction::Context;
use crate::transport::Pool;

/// One host to change.
#[derive(Debug, Clone)]
pub struct HostJob {
    pub desired: DesiredHost,
    pub observed: Observation,
    pub changes: Vec<Change>,
    /// 1-based wave of the rollout's layout.
    pub wave: usize,
    /// Why the host may not be touched (an artifact it needs failed its checks).
    pub blocked: Option<String>,
    /// Why the host lacks room for the artifacts it installs (`crate::plan::room`): when its
    /// turn comes it fails as [`FailureKind::NoRoom`](super::FailureKind::NoRoom), before anything is uploaded.
    pub no_room: Option<String>,
    /// Why the host was over its environment's `host_limits` when observed: it waits while
    /// the rest of its wave goes, then its usage is read again (DESIGN §6.4).
    pub busy: Option<String>,
}

/// A host a rollout changed: enough to re-check it after a bake or roll it back on halt.
#[derive(Debug, Clone)]
pub struct Touched {
    pub desired: DesiredHost,
    pub wave: usize,
    pub txn: String,
}

/// One environment's part of a run.
#[derive(Debug, Clone)]
pub struct EnvRun {
    pub name: String,
    pub jobs: Vec<HostJob>,
    pub gate: Gate,
    /// Hosts that already failed (unreachable, stale, refused): they count against
    /// `max_failures` too (DESIGN §6.3).
    pub failed_before: usize,
    /// Hosts an earlier, interrupted run of this rollout changed: re-checked after bakes and
    /// rolled back if the rollout halts.
    pub earlier: Vec<Touched>,
    /// The end of a bake that an earlier, interrupted run of this rollout did not finish.
    pub bake_until: Option<Timestamp>,
    /// When this rollout started (`max_duration` counts from it).
    pub started_at: Option<Timestamp>,
}

/// What the driver needs from the records kept between runs, without knowing the store.
pub trait Records: Sync {
    /// Per job, why its changes wait for promotion (`None`: they may go). Asked once per
    /// environment as it starts, so an environment that converged a moment ago in this run
    /// already counts.
    fn promotion_waits(&self, env: &str, jobs: &[HostJob]) -> Vec<Option<String>>;
    /// A host was changed: recorded at once, so a later run can re-check or roll it back.
    fn host_changed(&self, env: &str, touched: &Touched);
    /// A wave is done; `bake_until` is when the bake after it ends.
    fn wave_done(&self, env: &str, waves_done: usize, bake_until: Option<Timestamp>);
    /// The environment's part of the run is over.
    fn finished(&self, env: &str, end: &EnvEnd<'_>);
    /// Why changes in `env` are paused (`flotilla pause`), if they are. Asked before every
    /// host start: a pause made while a run goes on holds the hosts not started yet.
    fn paused(&self, env: &str) -> Option<String>;
    /// Why this process may start no host any more (the store's lock was lost), if so.
    fn lease_lost(&self) -> Option<String> {
        None
    }
}

/// How an environment's part of a run ended, for [`Records::finished`].
#[derive(Debug)]
pub struct EnvEnd<'a> {
    pub results: &'a [HostResult],
    pub halt: Option<&'a Halt>,
    /// Every wave done, nothing waiting, halted or interrupted.
    pub completed: bool,
}

/// Everything one run needs.
pub struct RunSpec<'a> {
    pub fleet: &'a Fleet,
    pub fleet_dir: &'a Path,
    /// What every transaction of this run carries (revision, store id, epoch, artifacts).
    pub txn: Context<'a>,
    /// Environments in the order they go.
    pub environments: Vec<EnvRun>,
    /// Hosts changed at once across the fleet.
    pub parallel: usize,
    pub cancel: Cancel,
    /// Sessions opened while observing, reused for the transactions.
    pub pool: Arc<Pool>,
    pub clock: Clock,
    pub records: &'a dyn Records,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub results: Vec<HostResult>,
    pub halts: Vec<(String, Halt)>,
    /// Environments whose remaining hosts wait, and why.
    pub holds: Vec<(String, Hold)>,
    /// A stop was requested.
    pub interrupted: bool,
}

/// Where events go: the views, the audit log. A closed receiver is not an error.
#[derive(Clone)]
pub(super) struct Events(pub(super) mpsc::UnboundedSender<Event>);

impl Events {
    pub(super) fn send(&self, e: Event) {
        let _ = self.0.send(e);
    }
}

pub(super) type Emit<'e> = &'e Events;
