//! One suite, two backends: every test here runs on a directory store (`dir::…`) and on a
//! PostgreSQL store in a database of its own (`postgres::…`, skipped visibly without
//! `FLOTILLA_TEST_POSTGRES`). What the store promises (DESIGN §7) holds for both.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::Arc;

use flotilla::store::{Approval, AuditFilter, Location, Pause, Store};
use jiff::Timestamp;

use super::common;
use super::{check_epochs, event, holder, kinds, pauses_round_trip, rollout, spawn_child, ts};

/// A store under test and what keeps it alive.
pub(super) enum Backend {
    Dir(tempfile::TempDir),
    Pg(common::pg::TestDb),
}

impl Backend {
    fn dir() -> Backend {
        Backend::Dir(tempfile::tempdir().unwrap())
    }

    /// `None` after a visible skip (no PostgreSQL configured).
    #[track_caller]
    fn pg(test: &str) -> Option<Backend> {
        common::pg::database(test).map(Backend::Pg)
    }

    pub(super) fn location(&self) -> Location {
        match self {
            Backend::Dir(d) => Location::Dir(d.path().join("state")),
            Backend::Pg(db) => Location::parse_url(&db.url).unwrap(),
        }
    }

    /// How a child process is told where the store is.
    fn spec(&self) -> String {
        match self {
            Backend::Dir(d) => d.path().join("state").display().to_string(),
            Backend::Pg(db) => db.url.clone(),
        }
    }

    /// Opens the store (as another process would: a new handle each time).
    pub(super) fn open(&self) -> Box<dyn Store> {
        flotilla::store::open(&self.location()).unwrap()
    }
}

/// Declares each conformance test once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod dir {
            $(#[test]
            fn $name() {
                super::$name(&super::Backend::dir());
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                if let Some(b) = super::Backend::pg(concat!("postgres::", stringify!($name))) {
                    super::$name(&b);
                }
            })*
        }
    };
}

conformance!(
    a_store_keeps_its_id_and_is_shared_across_threads,
    a_held_lock_refuses_a_second_holder_and_names_the_first,
    the_lock_is_released_on_drop_and_when_its_holder_panics,
    the_lock_of_another_process_is_refused_and_taken_over_once_it_is_killed,
    epochs_start_at_one_and_survive_reopening,
    epochs_strictly_increase_across_concurrent_threads,
    epochs_strictly_increase_across_concurrent_processes,
    audit_events_come_back_oldest_first_filtered_and_limited,
    audit_events_survive_reopening_byte_for_byte,
    concurrent_audit_appends_never_interleave,
    rollouts_are_saved_and_read_back_per_environment,
    hosts_a_rollout_changed_are_appended_and_kept_until_the_record_is_saved,
    observations_are_saved_and_list_the_known_hosts,
    names_that_would_escape_the_store_are_refused,
    pauses_are_kept_per_scope,
    a_pause_is_written_while_another_process_holds_the_apply_lock,
    approvals_promotions_and_the_digest_key_round_trip,
);

fn a_store_keeps_its_id_and_is_shared_across_threads(b: &Backend) {
    let store: Arc<dyn Store> = Arc::from(b.open());
    let id = store.id().to_owned();
    assert!(!id.is_empty());
    assert_eq!(b.open().id(), id, "reopening keeps the id");
    assert_ne!(Backend::dir().open().id(), id, "another store has another id");
    let other = store.clone();
    let epoch = std::thread::spawn(move || other.next_epoch().unwrap())
        .join()
        .unwrap();
    assert_eq!(epoch, 1);
    assert!(store.artifact_cache_dir().is_dir());
}

fn a_held_lock_refuses_a_second_holder_and_names_the_first(b: &Backend) {
    let store = b.open();
    let first = holder(1234, "alice", "flotilla apply");
    let guard = store.lock(&first).unwrap();
    assert_eq!(guard.holder(), &first);
    assert!(guard.taken_over().is_none());
    assert!(guard.lost().is_none());

    // Another handle on the same store, as another process would have.
    let other = b.open();
    for s in [&store, &other] {
        let err = s.lock(&holder(99, "bob", "flotilla watch")).unwrap_err();
        assert!(err.is_locked(), "{err:?}");
        assert_eq!(err.lock_holder(), Some(&first));
        let msg = err.to_string();
        assert!(
            msg.contains("pid 1234 (alice@build-01, `flotilla apply`, since 2026-11-22T07:40:00Z)"),
            "{msg}"
        );
        assert!(msg.contains("one apply at a time"), "{msg}");
    }
    drop(guard);
}

fn the_lock_is_released_on_drop_and_when_its_holder_panics(b: &Backend) {
    let store = b.open();
    let guard = store.lock(&holder(1, "alice", "flotilla apply")).unwrap();
    drop(guard);
    let again = b.open().lock(&holder(2, "bob", "flotilla apply")).unwrap();
    assert!(again.taken_over().is_none(), "a released lock is not a dead one");
    drop(again);

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = store.lock(&holder(1, "alice", "flotilla apply")).unwrap();
        panic!("deliberate panic while holding the store lock");
    }));
    assert!(result.is_err());
    let guard = b.open().lock(&holder(2, "bob", "flotilla apply")).unwrap();
    assert!(guard.taken_over().is_none());
}

fn the_lock_of_another_process_is_refused_and_taken_over_once_it_is_killed(b: &Backend) {
    let store = b.open();
    let mut child = spawn_child(&format!("lock {}", b.spec()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap() == "LOCKED"),
        "the child did not take the lock"
    );

    let err = store.lock(&holder(1, "alice", "flotilla apply")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("pid {} (", child.id())), "{msg}");
    assert!(msg.contains("`store-test child`"), "{msg}");

    child.kill().unwrap();
    child.wait().unwrap();
    // The kernel closes the child's files (and its database session) as it dies; the
    // database server notices the closed session a moment later.
    let mut guard = None;
    common::wait_for("the dead child's lock to be released", 10, || {
        guard = store.lock(&holder(1, "alice", "flotilla apply")).ok();
        guard.is_some()
    });
    let guard = guard.unwrap();
    let dead = guard.taken_over().expect("the dead child's details are reported");
    assert_eq!(dead.pid, child.id());
    assert_eq!(dead.command, "store-test child");
}

fn epochs_start_at_one_and_survive_reopening(b: &Backend) {
    let store = b.open();
    assert_eq!(store.next_epoch().unwrap(), 1);
    assert_eq!(store.next_epoch().unwrap(), 2);
    drop(store);
    assert_eq!(b.open().next_epoch().unwrap(), 3);
}

fn epochs_strictly_increase_across_concurrent_threads(b: &Backend) {
    let shared: Arc<dyn Store> = Arc::from(b.open());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let shared = shared.clone();
            let own: Option<Box<dyn Store>> = (i % 2 == 1).then(|| b.open());
            std::thread::spawn(move || {
                // Half share one handle, half have their own (as separate processes would).
                let s: &dyn Store = own.as_deref().unwrap_or(&*shared);
                (0..50).map(|_| s.next_epoch().unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let per_thread: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    check_epochs(&per_thread, 400);
}

fn epochs_strictly_increase_across_concurrent_processes(b: &Backend) {
    let store = b.open();
    let children: Vec<Child> = (0..2)
        .map(|_| spawn_child(&format!("epochs 100 {}", b.spec())))
        .collect();
    let mine: Vec<u64> = (0..100).map(|_| store.next_epoch().unwrap()).collect();
    let mut per_process = vec![mine];
    for mut child in children {
        let out = BufReader::new(child.stdout.take().unwrap());
        let epochs: Vec<u64> = out
            .lines()
            .filter_map(|l| l.unwrap().strip_prefix("EPOCH ").map(|e| e.parse().unwrap()))
            .collect();
        assert!(child.wait().unwrap().success());
        assert_eq!(epochs.len(), 100);
        per_process.push(epochs);
    }
    check_epochs(&per_process, 300);
}

fn audit_events_come_back_oldest_first_filtered_and_limited(b: &Backend) {
    let store = b.open();
    assert!(
        store.audit(&AuditFilter::default()).unwrap().is_empty(),
        "empty before any append"
    );
    let events = [
        event("apply-started", None, None),
        event("host-applied", Some("staging"), Some("stg-01")),
        event("host-failed", Some("prod"), Some("web-01")),
        event("rolled-back", Some("prod"), Some("web-01")),
        event("host-applied", Some("prod"), Some("web-02")),
        event("apply-finished", None, None),
    ];
    for e in &events[..2] {
        store.append_audit(e).unwrap();
    }
    store.append_audit_all(&events[2..]).unwrap();
    let all = store.audit(&AuditFilter::default()).unwrap();
    assert_eq!(all, events);

    let filter = |env: Option<&str>, host: Option<&str>, limit: Option<usize>| AuditFilter {
        env: env.map(str::to_owned),
        host: host.map(str::to_owned),
        limit,
    };
    assert_eq!(
        kinds(&store.audit(&filter(Some("prod"), None, None)).unwrap()),
        [
            "host-failed prod/web-01",
            "rolled-back prod/web-01",
            "host-applied prod/web-02"
        ]
    );
    assert_eq!(
        kinds(&store.audit(&filter(None, Some("web-01"), None)).unwrap()),
        ["host-failed prod/web-01", "rolled-back prod/web-01"]
    );
    assert_eq!(
        kinds(&store.audit(&filter(None, None, Some(2))).unwrap()),
        ["host-applied prod/web-02", "apply-finished -/-"]
    );
    assert_eq!(
        kinds(
            &store
                .audit(&filter(Some("prod"), Some("web-01"), Some(1)))
                .unwrap()
        ),
        ["rolled-back prod/web-01"]
    );
    assert!(store.audit(&filter(None, None, Some(0))).unwrap().is_empty());
}

fn audit_events_survive_reopening_byte_for_byte(b: &Backend) {
    let mut e = event("override", Some("prod"), None);
    e.time = ts("2026-11-22T07:40:00.123456789Z");
    e.reason = Some("hotfix\nfor INC-42 \u{1b}[31m".into());
    e.error = Some("ünïcode and \"quotes\"".into());
    e.dirty = true;
    e.changes = vec![
        serde_json::json!({"runtime": "python", "from": "3.11", "to": "3.12"}),
        serde_json::json!({"file": "/etc/app.conf", "sha256": null}),
    ];
    b.open().append_audit(&e).unwrap();
    let back = b.open().audit(&AuditFilter::default()).unwrap();
    assert_eq!(back, [e]);
}

fn concurrent_audit_appends_never_interleave(b: &Backend) {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = b.open();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let mut e = event("host-applied", Some("prod"), Some(&format!("h{t}-{i}")));
                    e.changes = vec![serde_json::json!({"padding": "x".repeat(5000)})];
                    store.append_audit(&e).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = b.open().audit(&AuditFilter::default()).unwrap();
    assert_eq!(all.len(), 100);
    // Each writer's events are in its own order.
    for t in 0..4 {
        let mine: Vec<String> = all
            .iter()
            .filter_map(|e| e.host.clone())
            .filter(|h| h.starts_with(&format!("h{t}-")))
            .collect();
        let want: Vec<String> = (0..25).map(|i| format!("h{t}-{i}")).collect();
        assert_eq!(mine, want);
    }
}

fn rollouts_are_saved_and_read_back_per_environment(b: &Backend) {
    let store = b.open();
    assert_eq!(store.rollout("prod").unwrap(), None);
    let mut r = rollout();
    store.save_rollout("prod", &r).unwrap();
    assert_eq!(store.rollout("prod").unwrap(), Some(r.clone()));
    assert_eq!(store.rollout("staging").unwrap(), None);
    r.waves_done = 2;
    r.halted = Some("max_failures exceeded".into());
    store.save_rollout("prod", &r).unwrap();
    assert_eq!(b.open().rollout("prod").unwrap(), Some(r));
}

fn hosts_a_rollout_changed_are_appended_and_kept_until_the_record_is_saved(b: &Backend) {
    use flotilla::store::ChangedHost;
    let changed = |host: &str, wave, txn: &str| ChangedHost {
        host: host.into(),
        wave,
        txn: txn.into(),
    };
    let store = b.open();
    let mut r = rollout();
    r.changed = vec![changed("web-01", 1, "7-00ff")];
    store.save_rollout("prod", &r).unwrap();
    store
        .rollout_host_changed("prod", &changed("web-02", 2, "7-0100"))
        .unwrap();
    store
        .rollout_host_changed("prod", &changed("web-03", 2, "7-0101"))
        .unwrap();
    // The same host again (a later run of the rollout changed it again): counted once, the
    // last transaction wins, in its first place.
    store
        .rollout_host_changed("prod", &changed("web-02", 2, "8-0001"))
        .unwrap();
    let read = b.open().rollout("prod").unwrap().unwrap();
    assert_eq!(
        read.changed,
        [
            changed("web-01", 1, "7-00ff"),
            changed("web-02", 2, "8-0001"),
            changed("web-03", 2, "7-0101")
        ],
        "appended hosts are durable and merged, across handles"
    );
    // Saving the record makes its list the whole truth again.
    let mut next = read.clone();
    next.changed.clear();
    next.waves_done = 2;
    store.save_rollout("prod", &next).unwrap();
    assert_eq!(b.open().rollout("prod").unwrap().unwrap().changed, []);
    assert_eq!(
        store.rollout("staging").unwrap(),
        None,
        "other environments are untouched"
    );
}

fn observations_are_saved_and_list_the_known_hosts(b: &Backend) {
    let store = b.open();
    assert!(store.known_hosts().unwrap().is_empty());
    store
        .save_observation("web-02", "fp-2", ts("2026-11-22T07:40:00Z"))
        .unwrap();
    store
        .save_observation("web-01", "fp-1", ts("2026-11-22T07:40:00Z"))
        .unwrap();
    store
        .save_observation("web-01", "fp-1b", ts("2026-11-22T07:45:00Z"))
        .unwrap();
    store
        .save_observation("Web-00", "fp-0", ts("2026-11-22T07:45:00Z"))
        .unwrap();
    assert_eq!(store.known_hosts().unwrap(), ["Web-00", "web-01", "web-02"]);
    let obs = b.open().observation("web-01").unwrap().unwrap();
    assert_eq!(obs.fingerprint, "fp-1b");
    assert_eq!(obs.at, ts("2026-11-22T07:45:00Z"));
    assert_eq!(store.observation("web-09").unwrap(), None);
}

fn names_that_would_escape_the_store_are_refused(b: &Backend) {
    let store = b.open();
    for bad in ["../evil", "a/b", ".hidden", ""] {
        let err = store.save_rollout(bad, &rollout()).unwrap_err();
        assert!(
            matches!(err, flotilla::store::StoreError::BadName { .. }),
            "{bad:?}: {err:?}"
        );
        assert!(store.rollout(bad).is_err());
        assert!(store.save_observation(bad, "fp", Timestamp::now()).is_err());
        assert!(store.observation(bad).is_err());
    }
    assert!(store.known_hosts().unwrap().is_empty());
}

fn pauses_are_kept_per_scope(b: &Backend) {
    pauses_round_trip(&*b.open());
}

fn a_pause_is_written_while_another_process_holds_the_apply_lock(b: &Backend) {
    let store = b.open();
    let _held = store.lock(&holder(1, "watch", "flotilla watch")).unwrap();
    b.open()
        .pause(&Pause {
            environment: None,
            reason: "stop now".into(),
            actor: "bob@ops2".into(),
            since: ts("2026-12-01T09:00:00Z"),
        })
        .unwrap();
    assert_eq!(
        store.pauses().unwrap()[0].reason,
        "stop now",
        "the lock holder sees it"
    );
}

fn approvals_promotions_and_the_digest_key_round_trip(b: &Backend) {
    let store = b.open();
    assert!(store.approvals().unwrap().is_empty());
    let approval = |actor: &str| Approval {
        trust: "t1".into(),
        connection: "c1".into(),
        commands: "k1".into(),
        revision: Some("3f2a9c1e5b7d".into()),
        actor: actor.into(),
        at: ts("2026-12-01T09:00:00Z"),
    };
    store.approve("prod", &approval("alice@ops1")).unwrap();
    store.approve("staging", &approval("bob@ops2")).unwrap();
    store.approve("prod", &approval("carol@ops3")).unwrap();
    let all = b.open().approvals().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["prod", "staging"]);
    assert_eq!(all["prod"], approval("carol@ops3"), "replaced, not added");

    assert!(store.promotions().unwrap().is_empty());
    let record = |env: &str, version: &str| -> flotilla::store::PromotionRecord {
        serde_json::from_value(serde_json::json!({
            "environment": env,
            "runtime": "python",
            "version": version,
            "at": "2026-12-01T09:00:00Z",
        }))
        .unwrap()
    };
    store.record_promotion(&record("staging", "3.12")).unwrap();
    store.record_promotion(&record("prod", "3.12")).unwrap();
    assert_eq!(
        b.open().promotions().unwrap(),
        [record("staging", "3.12"), record("prod", "3.12")],
        "oldest first"
    );

    let key = store.digest_key().unwrap();
    let sha = "0".repeat(64);
    assert_eq!(
        b.open().digest_key().unwrap().keyed(&sha),
        key.keyed(&sha),
        "one key per store"
    );
    assert_ne!(
        Backend::dir().open().digest_key().unwrap().keyed(&sha),
        key.keyed(&sha)
    );
    let distinct: BTreeSet<String> = [key.keyed(&sha), key.keyed(&"1".repeat(64))].into();
    assert_eq!(distinct.len(), 2);
}
