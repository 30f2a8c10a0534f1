//! The engine as a library: `prepare` → `apply` with an in-memory store, against real hosts on
//! the local transport, real tarballs and signatures, a real Git repository.

mod common;

use std::sync::Arc;

use flotilla::apply::{self, ApplyOptions, Outcome, Overrides, Request, Scope};
use flotilla::artifact::TrustPolicy;
use flotilla::cancel::Cancel;
use flotilla::clock::Clock;
use flotilla::rollout::HostOutcome;
use flotilla::store::{AuditFilter, MemStore, Store};
use flotilla::transport::Pool;

fn loaded(f: &common::TestFleet) -> (flotilla::repo::FleetRepo, flotilla::load::LoadedFleet) {
    let repo = flotilla::repo::FleetRepo::open(f.path(), None).unwrap();
    let loaded = match flotilla::load::load(&repo) {
        Ok(l) => l,
        Err(e) => panic!("{e:?}"),
    };
    (repo, loaded)
}

/// h1 in staging and h2 in prod, both to greeter 2.0.0; prod's only window opens at the
/// whole hour two hours from now (returned as "HH:00" UTC), so it is closed now.
fn staging_and_closed_prod() -> (common::TestFleet, String) {
    let (f, _keys) = common::signed_fleet("");
    f.host("hosts/a.toml", "h1", "staging", "");
    f.host("hosts/a.toml", "h2", "prod", "");
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    let start = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
    let hm = start
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%H:00")
        .to_string();
    f.write(
        "environments/prod.toml",
        &format!("[runtimes]\ngreeter = \"2.0.0\"\n\n[[window]]\nstart = \"{hm}\"\nduration = \"30m\"\n"),
    );
    f.commit("two environments, prod's window closed");
    (f, hm)
}

/// The request of these tests: every host, the in-memory store, the wall clock.
fn request_for<'a>(
    loaded: &'a flotilla::load::LoadedFleet,
    repo: &'a flotilla::repo::FleetRepo,
    targets: &'a [&'a flotilla::resolve::DesiredHost],
    store: &'a MemStore,
    trust: &'a TrustPolicy,
    pool: Arc<Pool>,
) -> Request<'a> {
    Request {
        fleet: loaded,
        repo,
        scope: Scope::Hosts(targets),
        overrides: Overrides::default(),
        store: Some(store),
        pool,
        memo: None,
        clock: Clock::wall(),
        cancel: Cancel::never(),
        parallel: 8,
        at: None,
        trust,
        artifact_cache: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_then_apply_converges_and_reports_what_waits_and_until_when() {
    let (f, hm) = staging_and_closed_prod();
    let (repo, loaded) = loaded(&f);
    let store = MemStore::new().unwrap();
    let targets: Vec<_> = loaded.desired.iter().collect();
    let trust = TrustPolicy::new(&loaded.fleet.trust.keys, true, None).unwrap();
    let request = request_for(&loaded, &repo, &targets, &store, &trust, Arc::new(Pool::new()));
    let planned = apply::prepare(&request).await.unwrap();
    assert_eq!(planned.plan.summary.hosts_changed, 2);
    assert!(planned.refused.is_empty());
    let options = ApplyOptions {
        actor: "test@lab".into(),
        dirty: false,
        unattended: false,
        detail: Default::default(),
    };
    let report = apply::apply(&request, planned, &options, None).await.unwrap();
    request.pool.close_all().await;

    assert_eq!(report.outcome, Outcome::Waiting, "{report:#?}");
    assert_eq!(common::current(&f, "h1").as_deref(), Some("2.0.0"));
    assert_eq!(common::current(&f, "h2"), None, "prod waits for its window");
    let h2 = report.hosts.iter().find(|h| h.host == "h2").unwrap();
    assert!(matches!(h2.outcome, HostOutcome::Waiting { .. }), "{h2:?}");
    let wake = report.next.requeue_at.expect("a known wake-up");
    let wake_hm = wake
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%H:%M")
        .to_string();
    assert_eq!(wake_hm, hm, "the next wake-up is when prod's window opens");

    // The in-memory store has the audit trail and the rollout record.
    let audit = store.audit(&AuditFilter::default()).unwrap();
    let events: Vec<&str> = audit.iter().map(|e| e.event.as_str()).collect();
    assert!(
        events.contains(&"apply-started") && events.contains(&"apply-finished"),
        "{events:?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e.event == "host-applied" && e.host.as_deref() == Some("h1") && !e.changes.is_empty()),
        "{audit:?}"
    );
    let record = store.rollout("staging").unwrap().unwrap();
    assert_eq!(record.waves_done, record.waves.len());
    assert!(
        record.changed.is_empty(),
        "a completed rollout leaves nothing to re-check"
    );
}

/// A view for `apply_rounds` that answers the prompt with `answer`, counts what it is asked
/// and shown, and stops the rounds at its `stop_after`-th wait.
struct Scripted {
    answer: bool,
    confirms: usize,
    plans: usize,
    waits: Vec<Option<jiff::Timestamp>>,
    stop_after: usize,
}

#[derive(Debug)]
enum ScriptedError {
    Engine(#[allow(dead_code)] apply::EngineError),
    Stopped,
}

impl From<apply::EngineError> for ScriptedError {
    fn from(e: apply::EngineError) -> Self {
        ScriptedError::Engine(e)
    }
}

#[async_trait::async_trait]
impl apply::RoundView for Scripted {
    type Error = ScriptedError;
    fn plan(&mut self, _: &apply::Planned<'_>) -> Result<(), ScriptedError> {
        self.plans += 1;
        Ok(())
    }
    fn confirm(&mut self) -> Result<bool, ScriptedError> {
        self.confirms += 1;
        Ok(self.answer)
    }
    fn events(
        &mut self,
    ) -> (
        tokio::sync::mpsc::UnboundedSender<flotilla::rollout::Event>,
        tokio::task::JoinHandle<()>,
    ) {
        common::discard_events()
    }
    fn report(&mut self, _: &apply::Report) -> Result<(), ScriptedError> {
        Ok(())
    }
    async fn wait(&mut self, wake: Option<jiff::Timestamp>) -> Result<(), ScriptedError> {
        self.waits.push(wake);
        if self.waits.len() >= self.stop_after {
            return Err(ScriptedError::Stopped);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_rounds_ask_once_wait_for_the_window_and_a_no_applies_nothing() {
    let (f, hm) = staging_and_closed_prod();
    let (repo, loaded) = loaded(&f);
    let store = MemStore::new().unwrap();
    let targets: Vec<_> = loaded.desired.iter().collect();
    let trust = TrustPolicy::new(&loaded.fleet.trust.keys, true, None).unwrap();
    let request = |pool: Arc<Pool>| request_for(&loaded, &repo, &targets, &store, &trust, pool);
    let options = ApplyOptions {
        actor: "test@lab".into(),
        dirty: false,
        unattended: false,
        detail: Default::default(),
    };

    // "No": nothing is applied.
    let mut no = Scripted {
        answer: false,
        confirms: 0,
        plans: 0,
        waits: Vec::new(),
        stop_after: 1,
    };
    let wait = apply::Rounds {
        auto_approve: false,
        wait: true,
    };
    let end = apply::apply_rounds(&request, &options, wait, &mut no).await;
    assert!(matches!(end, Ok(apply::RoundsEnd::Declined)), "{end:?}");
    assert_eq!((no.plans, no.confirms), (1, 1));
    assert_eq!(common::current(&f, "h1"), None, "declined: nothing applied");

    // "Yes" with --wait: staging applies, prod waits for its window; the next round plans
    // again and goes on without asking, since its changes are the ones confirmed.
    let mut yes = Scripted {
        answer: true,
        confirms: 0,
        plans: 0,
        waits: Vec::new(),
        stop_after: 2,
    };
    let end = apply::apply_rounds(&request, &options, wait, &mut yes).await;
    assert!(matches!(end, Err(ScriptedError::Stopped)), "{end:?}");
    assert_eq!(common::current(&f, "h1").as_deref(), Some("2.0.0"));
    assert_eq!(common::current(&f, "h2"), None, "prod waits for its window");
    assert_eq!(yes.plans, 2, "a round after the first wait");
    assert_eq!(yes.confirms, 1, "the same changes are not asked for again");
    let at = |w: &Option<jiff::Timestamp>| {
        w.map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).strftime("%H:%M").to_string())
    };
    assert_eq!(
        yes.waits.iter().map(at).collect::<Vec<_>>(),
        [Some(hm.clone()), Some(hm)]
    );

    // Without --wait the round ends with the report, and nothing is left to apply now.
    let mut once = Scripted {
        answer: true,
        confirms: 0,
        plans: 0,
        waits: Vec::new(),
        stop_after: 1,
    };
    let end = apply::apply_rounds(
        &request,
        &options,
        apply::Rounds {
            auto_approve: true,
            wait: false,
        },
        &mut once,
    )
    .await;
    match end {
        Ok(apply::RoundsEnd::Applied(report)) => assert_eq!(report.outcome, Outcome::Waiting),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        (once.confirms, once.waits.len()),
        (0, 0),
        "auto-approved, no wait"
    );
}
