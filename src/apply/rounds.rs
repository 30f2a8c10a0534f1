//! `apply` as rounds: plan, show, confirm, apply; with `--wait`, sleep until the report's
//! next moment (`Action::requeue_at`) and go again. The decisions are here — the store lock
//! for each round, when a round has nothing to do, when a later round may go on without
//! asking again, when to sleep — and the caller's [`RoundView`] shows, asks and waits.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{ApplyOptions, EngineError, Outcome, Planned, Report, Request};
use crate::rollout::Event;
use crate::store::Holder;
use crate::transport::Pool;

/// What a person sees and is asked during `apply`'s rounds.
#[async_trait::async_trait]
pub trait RoundView: Send {
    /// The view's own failures (output, the prompt); the engine's convert into it.
    type Error: From<EngineError> + Send;
    /// A round's plan, before anything is asked or touched.
    fn plan(&mut self, planned: &Planned<'_>) -> Result<(), Self::Error>;
    /// Whether to apply the changes just shown.
    fn confirm(&mut self) -> Result<bool, Self::Error>;
    /// A channel for the engine's events while it applies, and the task that shows them.
    fn events(
        &mut self,
    ) -> (
        tokio::sync::mpsc::UnboundedSender<Event>,
        tokio::task::JoinHandle<()>,
    );
    /// A round's report, once it applied.
    fn report(&mut self, report: &Report) -> Result<(), Self::Error>;
    /// Waits until `wake` (`None`: no known moment) before the next round.
    async fn wait(&mut self, wake: Option<jiff::Timestamp>) -> Result<(), Self::Error>;
}

/// How the rounds ended.
#[derive(Debug)]
pub enum RoundsEnd {
    /// Nothing to apply; `incomplete` when some hosts could not be observed or are refused
    /// (they are not "applied").
    NothingToDo { incomplete: bool },
    /// The person did not confirm.
    Declined,
    /// The last round's report.
    Applied(Report),
}

/// How the rounds go.
#[derive(Debug, Clone, Copy)]
pub struct Rounds {
    /// Apply without asking.
    pub auto_approve: bool,
    /// `--wait`: when changes wait, sleep until they may go and apply them then.
    pub wait: bool,
}

/// What one round leads to.
enum Step {
    Done(RoundsEnd),
    Sleep(Option<jiff::Timestamp>),
}

/// Runs `apply`'s rounds. `request` builds each round's request around a fresh connection
/// pool: one session per host for a round, closed on every way out, so nothing stays
/// connected (or locked) while `--wait` sleeps.
pub async fn apply_rounds<'a, V: RoundView>(
    request: &dyn Fn(Arc<Pool>) -> Request<'a>,
    options: &ApplyOptions,
    rounds: Rounds,
    view: &mut V,
) -> Result<RoundsEnd, V::Error> {
    // `--wait` asks once: a later round goes on without asking only if its changes are the
    // ones confirmed (hosts applied in an earlier round have nothing left; the rest must be
    // unchanged).
    let mut confirmed: Option<BTreeMap<String, String>> = None;
    loop {
        let pool = Arc::new(Pool::new());
        let req = request(pool.clone());
        let step = round(&req, options, rounds, &mut confirmed, view).await;
        pool.close_all().await;
        match step? {
            Step::Done(end) => return Ok(end),
            Step::Sleep(wake) => view.wait(wake).await?,
        }
    }
}

async fn round<V: RoundView>(
    req: &Request<'_>,
    options: &ApplyOptions,
    rounds: Rounds,
    confirmed: &mut Option<BTreeMap<String, String>>,
    view: &mut V,
) -> Result<Step, V::Error> {
    let store = req.store.ok_or(EngineError::NoStore)?;
    // Held from planning to the end of the round; released while `--wait` sleeps.
    let _lock = store
        .lock(&Holder::this_process("flotilla apply", req.clock.now()))
        .map_err(EngineError::from)?;
    let planned = super::prepare(req).await?;
    view.plan(&planned)?;
    // A repository artifact failed its checks, or every change waits behind a halt: the run
    // is refused before anything is asked or touched (apply reports it, and how to go on).
    let refused = !planned.artifact_errors.is_empty() || all_halted(&planned, req);
    if !planned.has_work() && !refused {
        let incomplete = planned.plan.summary.hosts_unreachable > 0 || !planned.refused.is_empty();
        return Ok(Step::Done(RoundsEnd::NothingToDo { incomplete }));
    }
    let digests: BTreeMap<String, String> = planned
        .plan
        .hosts
        .iter()
        .filter(|h| !h.changes.is_empty())
        .map(|h| (h.name.clone(), crate::plan::change_digest(&h.changes)))
        .collect();
    let same = confirmed
        .as_ref()
        .is_some_and(|c| digests.iter().all(|(h, d)| c.get(h) == Some(d)));
    if !rounds.auto_approve && !same && !refused {
        if !view.confirm()? {
            return Ok(Step::Done(RoundsEnd::Declined));
        }
        *confirmed = Some(digests);
    }
    let (tx, shown) = view.events();
    let report = super::apply(req, planned, options, Some(tx)).await;
    let _ = shown.await;
    let report = report?;
    view.report(&report)?;
    Ok(match report.outcome {
        Outcome::Waiting if rounds.wait && !req.cancel.draining() => Step::Sleep(report.next.requeue_at),
        _ => Step::Done(RoundsEnd::Applied(report)),
    })
}

/// Whether every change in the plan waits behind a rollout halted at this revision, with no
/// `--retry`: the run will refuse them all (exit 1, saying how to retry), so nothing is
/// asked first — without a terminal, the question would hide the halt behind "no terminal".
fn all_halted(planned: &super::prepare::Planned<'_>, req: &super::Request<'_>) -> bool {
    if req.overrides.retry.is_some() {
        return false;
    }
    let halted = |env: &str| {
        planned
            .plan
            .environments
            .iter()
            .any(|e| e.name == env && e.halted.is_some())
    };
    let mut changing = planned
        .plan
        .hosts
        .iter()
        .filter(|h| !h.changes.is_empty())
        .peekable();
    changing.peek().is_some() && changing.all(|h| halted(&h.environment))
}
