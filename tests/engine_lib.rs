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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_then_apply_converges_and_reports_what_waits_and_until_when() {
    let (f, _keys) = common::signed_fleet("");
    f.host("hosts/a.toml", "h1", "staging", "");
    f.host("hosts/a.toml", "h2", "prod", "");
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    // prod's only window opens at the next 03:00 UTC: it is closed for most of the day.
    let now = jiff::Timestamp::now();
    let start = now + jiff::SignedDuration::from_hours(2);
    let hm = start
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%H:00")
        .to_string();
    f.write(
        "environments/prod.toml",
        &format!("[runtimes]\ngreeter = \"2.0.0\"\n\n[[window]]\nstart = \"{hm}\"\nduration = \"30m\"\n"),
    );
    f.commit("two environments");
    let (repo, loaded) = loaded(&f);
    let store = MemStore::new().unwrap();
    let targets: Vec<_> = loaded.desired.iter().collect();
    let trust = TrustPolicy::new(&loaded.fleet.trust.keys, true, None).unwrap();
    let request = Request {
        fleet: &loaded,
        repo: &repo,
        scope: Scope::Hosts(&targets),
        overrides: Overrides::default(),
        store: Some(&store),
        pool: Arc::new(Pool::new()),
        memo: None,
        clock: Clock::wall(),
        cancel: Cancel::never(),
        parallel: 8,
        at: None,
        trust: &trust,
        artifact_cache: None,
    };
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
