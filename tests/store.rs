//! The directory store against real directories and real processes: the lock between processes
//! (and after one is killed), epochs under contention, the audit log after a torn append, and
//! the errors an operator sees for corrupt or unusable state.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};

use flotilla::store::{
    AuditEvent, AuditFilter, DirStore, Holder, RolloutRecord, Store, StoreError, default_dir, render_history,
};
use jiff::Timestamp;

/// Set in the environment of a child copy of this test binary to make [`child_helper`] act.
const CHILD_ENV: &str = "FLOTILLA_STORE_TEST_CHILD";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn holder(pid: u32, user: &str, command: &str) -> Holder {
    Holder {
        pid,
        machine: "build-01".into(),
        user: user.into(),
        since: ts("2026-11-22T07:40:00Z"),
        command: command.into(),
    }
}

fn new_store() -> (tempfile::TempDir, DirStore) {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(&tmp.path().join("state")).unwrap();
    (tmp, store)
}

/// Runs this test binary again, as a child doing `task` (see [`child_helper`]).
fn spawn_child(task: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_helper", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, task)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Not a test of its own: the body of the child processes the tests below spawn. Without
/// `FLOTILLA_STORE_TEST_CHILD` it does nothing.
///
/// - `epochs <n> <dir>`: takes n epochs, printing `EPOCH <e>` for each;
/// - `lock <dir>`: takes the lock, prints `LOCKED`, and waits to be killed.
#[test]
fn child_helper() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut words = task.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("epochs"), Some(n), Some(dir)) => {
            let store = DirStore::open(Path::new(dir)).unwrap();
            let mut out = std::io::stdout().lock();
            for _ in 0..n.parse::<usize>().unwrap() {
                writeln!(out, "EPOCH {}", store.next_epoch().unwrap()).unwrap();
            }
        }
        (Some("lock"), Some(dir), None) => {
            let store = DirStore::open(Path::new(dir)).unwrap();
            let _guard = store
                .lock(&Holder::this_process("store-test child", Timestamp::now()))
                .unwrap();
            println!("LOCKED");
            std::io::stdout().flush().unwrap();
            // Killed by the parent long before this ends.
            std::thread::sleep(std::time::Duration::from_secs(120));
        }
        _ => panic!("unknown child task {task:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Creation and layout

#[test]
fn a_new_store_has_a_stable_id_and_the_documented_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("deep/er/state");
    let store = DirStore::open(&dir).unwrap();
    let id = store.id().to_owned();
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    for file in ["id", "epoch"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    for sub in ["rollouts", "observations", "cache/artifacts"] {
        assert!(dir.join(sub).is_dir(), "{sub}");
    }
    assert_eq!(store.artifact_cache_dir(), dir.join("cache/artifacts"));
    assert_eq!(store.dir(), dir);
    assert_eq!(DirStore::open(&dir).unwrap().id(), id, "reopening keeps the id");
    let id_json: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("id")).unwrap()).unwrap();
    assert_eq!(id_json["id"], id.as_str());
    assert_eq!(id_json["format_version"], 1);
}

#[test]
fn stores_created_at_the_same_time_in_one_directory_agree_on_the_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Arc::new(tmp.path().join("state"));
    let barrier = Arc::new(Barrier::new(8));
    let ids: BTreeSet<String> = (0..8)
        .map(|_| {
            let (dir, barrier) = (dir.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                DirStore::open(&dir).unwrap().id().to_owned()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[test]
fn the_store_is_usable_as_a_shared_trait_object() {
    let (_tmp, store) = new_store();
    let store: Arc<dyn Store> = Arc::new(store);
    let other = store.clone();
    let epoch = std::thread::spawn(move || other.next_epoch().unwrap())
        .join()
        .unwrap();
    assert_eq!(epoch, 1);
    assert!(store.artifact_cache_dir().is_dir());
}

#[test]
fn different_stores_have_different_ids() {
    let (_a, a) = new_store();
    let (_b, b) = new_store();
    assert_ne!(a.id(), b.id());
}

#[test]
fn a_directory_with_other_content_is_not_turned_into_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
    let err = DirStore::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
    assert!(msg.contains("--state-dir"), "{msg}");
    assert!(!tmp.path().join("id").exists(), "nothing was written");
}

#[test]
fn a_store_that_lost_its_id_is_reported_not_given_a_new_one() {
    let (tmp, store) = new_store();
    store.append_audit(&event("apply-started", None, None)).unwrap();
    let dir = tmp.path().join("state");
    fs::remove_file(dir.join("id")).unwrap();
    let msg = DirStore::open(&dir).unwrap_err().to_string();
    assert!(msg.contains("id"), "{msg}");
    assert!(msg.contains("store_id"), "says where to find the old id: {msg}");
    assert!(!dir.join("id").exists());
}

#[test]
fn a_store_that_lost_its_epoch_is_reported_not_reset() {
    let (tmp, _store) = new_store();
    let dir = tmp.path().join("state");
    fs::remove_file(dir.join("epoch")).unwrap();
    let msg = DirStore::open(&dir).unwrap_err().to_string();
    assert!(msg.contains("epoch"), "{msg}");
    assert!(msg.contains("state.json"), "says how to recover: {msg}");
    assert!(!dir.join("epoch").exists());
}

#[test]
fn a_corrupt_id_file_is_a_clear_error() {
    let (tmp, _store) = new_store();
    let dir = tmp.path().join("state");
    fs::write(dir.join("id"), "{not json").unwrap();
    let err = DirStore::open(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(&dir.join("id").display().to_string()), "{msg}");
    assert!(msg.contains("restore it"), "{msg}");
    assert_eq!(
        fs::read_to_string(dir.join("id")).unwrap(),
        "{not json",
        "left as it was"
    );
}

#[test]
fn a_store_from_a_newer_flotilla_is_refused() {
    let (tmp, _store) = new_store();
    let dir = tmp.path().join("state");
    fs::write(dir.join("id"), r#"{"format_version":9,"id":"0123456789abcdef"}"#).unwrap();
    let err = DirStore::open(&dir).unwrap_err();
    assert!(matches!(err, StoreError::NewerFormat { found: 9, .. }), "{err:?}");
    assert!(err.to_string().contains("upgrade"), "{err}");
}

#[test]
fn a_store_path_below_a_regular_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain");
    fs::write(&file, "x").unwrap();
    let dir = file.join("state");
    let err = DirStore::open(&dir).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(msg.contains("--state-dir"), "{msg}");

    let err = DirStore::open(&file).unwrap_err();
    assert!(matches!(err, StoreError::NotADirectory { .. }), "{err:?}");
    assert!(err.to_string().contains("--state-dir"), "{err}");
}

/// Whether permissions stop this process (they do not for root, which tests may run as).
fn permissions_bite(dir: &Path) -> bool {
    let probe = dir.join("probe");
    let bites = fs::write(&probe, "").is_err();
    let _ = fs::remove_file(probe);
    bites
}

#[test]
fn an_unwritable_store_directory_is_reported_when_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    DirStore::open(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o500)).unwrap();
    let bites = permissions_bite(&dir);
    let result = DirStore::open(&dir);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    if !bites {
        eprintln!("permissions do not apply to this user (root?): not checking the error");
        return;
    }
    let err = result.unwrap_err();
    assert!(matches!(err, StoreError::NotWritable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(msg.contains("choose another with --state-dir"), "{msg}");
}

#[test]
fn a_store_directory_that_cannot_be_created_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("locked");
    fs::create_dir(&parent).unwrap();
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o500)).unwrap();
    let bites = permissions_bite(&parent);
    let result = DirStore::open(&parent.join("state"));
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o700)).unwrap();
    if !bites {
        eprintln!("permissions do not apply to this user (root?): not checking the error");
        return;
    }
    let msg = result.unwrap_err().to_string();
    assert!(msg.contains("cannot create the store directory"), "{msg}");
    assert!(msg.contains("--state-dir"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// The lock

#[test]
fn a_held_lock_refuses_a_second_holder_and_names_the_first() {
    let (tmp, store) = new_store();
    let first = holder(1234, "alice", "flotilla apply");
    let guard = store.lock(&first).unwrap();
    assert_eq!(guard.holder(), &first);
    assert!(guard.taken_over().is_none());

    // Another DirStore on the same directory, as another process would have.
    let other = DirStore::open(&tmp.path().join("state")).unwrap();
    for s in [&store, &other] {
        let err = s.lock(&holder(99, "bob", "flotilla watch")).unwrap_err();
        let StoreError::Locked { holder: Some(h), .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(**h, first);
        let msg = err.to_string();
        assert!(
            msg.contains("pid 1234 (alice@build-01, `flotilla apply`, since 2026-11-22T07:40:00Z)"),
            "{msg}"
        );
        assert!(msg.contains("lock"), "{msg}");
    }
    drop(guard);
}

#[test]
fn the_lock_is_released_on_drop() {
    let (_tmp, store) = new_store();
    let guard = store.lock(&holder(1, "alice", "flotilla apply")).unwrap();
    drop(guard);
    let again = store.lock(&holder(2, "bob", "flotilla apply")).unwrap();
    assert!(again.taken_over().is_none(), "a released lock is not a dead one");
}

#[test]
fn the_lock_is_released_when_its_holder_panics() {
    let (_tmp, store) = new_store();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = store.lock(&holder(1, "alice", "flotilla apply")).unwrap();
        panic!("deliberate panic while holding the store lock");
    }));
    assert!(result.is_err());
    let guard = store.lock(&holder(2, "bob", "flotilla apply")).unwrap();
    assert!(guard.taken_over().is_none());
}

#[test]
fn a_lock_file_left_by_a_dead_process_is_taken_over() {
    let (tmp, store) = new_store();
    let dead = holder(4_000_000, "carol", "flotilla apply");
    fs::write(tmp.path().join("state/lock"), serde_json::to_vec(&dead).unwrap()).unwrap();
    let guard = store.lock(&holder(5, "dave", "flotilla apply")).unwrap();
    assert_eq!(guard.taken_over(), Some(&dead));
    let on_disk: Holder = serde_json::from_slice(&fs::read(tmp.path().join("state/lock")).unwrap()).unwrap();
    assert_eq!(on_disk.user, "dave", "the new holder replaced the dead one");
    drop(guard);
    assert_eq!(
        fs::read(tmp.path().join("state/lock")).unwrap(),
        b"",
        "cleared on release"
    );
}

#[test]
fn a_garbled_lock_file_without_a_holder_is_taken_over() {
    let (tmp, store) = new_store();
    fs::write(tmp.path().join("state/lock"), "{\"pid\": 12").unwrap();
    let guard = store.lock(&holder(5, "dave", "flotilla apply")).unwrap();
    assert!(guard.taken_over().is_none());
}

#[test]
fn the_lock_of_another_process_is_refused_and_taken_over_once_it_is_killed() {
    let (tmp, store) = new_store();
    let dir = tmp.path().join("state");
    let mut child = spawn_child(&format!("lock {}", dir.display()));
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
    let guard = store.lock(&holder(1, "alice", "flotilla apply")).unwrap();
    let dead = guard.taken_over().expect("the dead child's details are reported");
    assert_eq!(dead.pid, child.id());
    assert_eq!(dead.command, "store-test child");
}

// ---------------------------------------------------------------------------------------------
// Epochs

#[test]
fn epochs_start_at_one_and_survive_reopening() {
    let (tmp, store) = new_store();
    assert_eq!(store.next_epoch().unwrap(), 1);
    assert_eq!(store.next_epoch().unwrap(), 2);
    let again = DirStore::open(&tmp.path().join("state")).unwrap();
    assert_eq!(again.next_epoch().unwrap(), 3);
    assert_eq!(
        fs::read_to_string(tmp.path().join("state/epoch")).unwrap().trim(),
        "3"
    );
}

/// Every epoch handed out is unique, and each taker sees its own increase.
fn check_epochs(per_taker: &[Vec<u64>], total: u64) {
    for seq in per_taker {
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "not increasing: {seq:?}");
    }
    let all: BTreeSet<u64> = per_taker.iter().flatten().copied().collect();
    assert_eq!(all.len() as u64, total, "an epoch was handed out twice");
    assert_eq!(all, (1..=total).collect(), "epochs are dense from 1");
}

#[test]
fn epochs_strictly_increase_across_concurrent_threads() {
    let (tmp, store) = new_store();
    let dir = Arc::new(tmp.path().join("state"));
    let store = Arc::new(store);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (dir, store) = (dir.clone(), store.clone());
            std::thread::spawn(move || {
                // Half share one DirStore, half open their own (as separate processes would).
                let own;
                let s: &DirStore = if i % 2 == 0 {
                    &store
                } else {
                    own = DirStore::open(&dir).unwrap();
                    &own
                };
                (0..50).map(|_| s.next_epoch().unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let per_thread: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    check_epochs(&per_thread, 400);
}

#[test]
fn epochs_strictly_increase_across_concurrent_processes() {
    let (tmp, store) = new_store();
    let dir = tmp.path().join("state");
    let children: Vec<Child> = (0..2)
        .map(|_| spawn_child(&format!("epochs 100 {}", dir.display())))
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

#[test]
fn a_corrupt_epoch_file_is_a_clear_error_and_is_left_alone() {
    let (tmp, store) = new_store();
    let path = tmp.path().join("state/epoch");
    fs::write(&path, "forty-two\n").unwrap();
    let err = store.next_epoch().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(msg.contains("highest `epoch`"), "says how to fix it: {msg}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "forty-two\n", "never reset");

    fs::write(&path, "-3").unwrap();
    assert!(store.next_epoch().is_err());
    fs::write(&path, "41").unwrap();
    assert_eq!(store.next_epoch().unwrap(), 42, "a repaired file is used");
}

// ---------------------------------------------------------------------------------------------
// Audit log

fn event(kind: &str, env: Option<&str>, host: Option<&str>) -> AuditEvent {
    AuditEvent {
        environment: env.map(str::to_owned),
        host: host.map(str::to_owned),
        revision: Some("3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a".into()),
        ..AuditEvent::new(ts("2026-11-22T07:40:00Z"), "alice", kind)
    }
}

fn kinds(events: &[AuditEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}/{}",
                e.event,
                e.environment.as_deref().unwrap_or("-"),
                e.host.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

#[test]
fn audit_events_come_back_oldest_first_filtered_and_limited() {
    let (_tmp, store) = new_store();
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
    for e in &events {
        store.append_audit(e).unwrap();
    }
    let all = store.audit(&AuditFilter::default()).unwrap();
    assert_eq!(all, events);

    let by_env = store
        .audit(&AuditFilter {
            env: Some("prod".into()),
            ..AuditFilter::default()
        })
        .unwrap();
    assert_eq!(
        kinds(&by_env),
        [
            "host-failed prod/web-01",
            "rolled-back prod/web-01",
            "host-applied prod/web-02"
        ]
    );

    let by_host = store
        .audit(&AuditFilter {
            host: Some("web-01".into()),
            ..AuditFilter::default()
        })
        .unwrap();
    assert_eq!(
        kinds(&by_host),
        ["host-failed prod/web-01", "rolled-back prod/web-01"]
    );

    let newest_two = store
        .audit(&AuditFilter {
            limit: Some(2),
            ..AuditFilter::default()
        })
        .unwrap();
    assert_eq!(
        kinds(&newest_two),
        ["host-applied prod/web-02", "apply-finished -/-"]
    );

    let combined = store
        .audit(&AuditFilter {
            env: Some("prod".into()),
            host: Some("web-01".into()),
            limit: Some(1),
        })
        .unwrap();
    assert_eq!(kinds(&combined), ["rolled-back prod/web-01"]);

    let none = store
        .audit(&AuditFilter {
            limit: Some(0),
            ..AuditFilter::default()
        })
        .unwrap();
    assert!(none.is_empty());
}

#[test]
fn the_audit_log_is_one_json_line_per_event_and_only_grows() {
    let (tmp, store) = new_store();
    let path = tmp.path().join("state/audit.jsonl");
    let mut e = event("override", Some("prod"), None);
    e.reason = Some("hotfix\nfor INC-42".into());
    e.changes = vec![serde_json::json!({"runtime": "python", "from": "3.11", "to": "3.12"})];
    store.append_audit(&e).unwrap();
    let before = fs::read(&path).unwrap();
    store.append_audit(&event("apply-finished", None, None)).unwrap();
    let after = fs::read(&path).unwrap();
    assert!(after.starts_with(&before), "appends never rewrite");
    let text = String::from_utf8(after).unwrap();
    assert_eq!(text.lines().count(), 2);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["reason"], "hotfix\nfor INC-42");
    assert_eq!(first["environment"], "prod");
    assert_eq!(first["host"], serde_json::Value::Null);
    assert_eq!(first["changes"][0]["to"], "3.12");
}

#[test]
fn a_torn_last_line_neither_hides_the_log_nor_swallows_the_next_event() {
    let (tmp, store) = new_store();
    let path = tmp.path().join("state/audit.jsonl");
    store.append_audit(&event("apply-started", None, None)).unwrap();
    store
        .append_audit(&event("host-applied", Some("prod"), Some("web-01")))
        .unwrap();
    // A crash in the middle of the third append.
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"time":"2026-11-22T07:41:00Z","actor":"alice","ev"#)
        .unwrap();
    drop(f);

    let read = store.audit(&AuditFilter::default()).unwrap();
    assert_eq!(kinds(&read), ["apply-started -/-", "host-applied prod/web-01"]);

    store
        .append_audit(&event("take-over", Some("prod"), Some("web-02")))
        .unwrap();
    let read = store.audit(&AuditFilter::default()).unwrap();
    assert_eq!(
        kinds(&read),
        [
            "apply-started -/-",
            "host-applied prod/web-01",
            "take-over prod/web-02"
        ]
    );
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "the torn line is kept, on its own line: {text}");
    assert!(lines[2].ends_with(r#""ev"#), "{text}");
    assert!(text.ends_with('\n'));
}

#[test]
fn concurrent_audit_appends_never_interleave() {
    let (tmp, _store) = new_store();
    let dir = Arc::new(tmp.path().join("state"));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let store = DirStore::open(&dir).unwrap();
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
    let text = fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    for line in text.lines() {
        serde_json::from_str::<AuditEvent>(line).unwrap();
    }
    assert_eq!(text.lines().count(), 100);
}

// ---------------------------------------------------------------------------------------------
// Rollouts and observations

fn rollout() -> RolloutRecord {
    RolloutRecord {
        revision: Some("3f2a9c1e5b7d".into()),
        desired: Some("9d1c".into()),
        waves: vec![vec!["web-01".into()], vec!["web-02".into(), "web-03".into()]],
        waves_done: 1,
        bake_deadline: Some(ts("2026-11-22T08:10:00Z")),
        halted: None,
        halted_wave: None,
        halted_at: None,
        started_at: ts("2026-11-22T07:40:00Z"),
        ended_at: None,
        changed: vec![flotilla::store::ChangedHost {
            host: "web-01".into(),
            wave: 1,
            txn: "7-00ff".into(),
        }],
    }
}

#[test]
fn rollouts_are_saved_and_read_back_per_environment() {
    let (tmp, store) = new_store();
    assert_eq!(store.rollout("prod").unwrap(), None);
    let mut r = rollout();
    store.save_rollout("prod", &r).unwrap();
    assert_eq!(store.rollout("prod").unwrap(), Some(r.clone()));
    assert_eq!(store.rollout("staging").unwrap(), None);
    r.waves_done = 2;
    r.halted = Some("max_failures exceeded".into());
    store.save_rollout("prod", &r).unwrap();
    assert_eq!(
        DirStore::open(&tmp.path().join("state"))
            .unwrap()
            .rollout("prod")
            .unwrap(),
        Some(r)
    );
    let names: Vec<_> = fs::read_dir(tmp.path().join("state/rollouts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["prod.json"], "no temporary files left behind");
}

#[test]
fn a_corrupt_rollout_record_is_a_clear_error() {
    let (tmp, store) = new_store();
    let path = tmp.path().join("state/rollouts/prod.json");
    fs::write(&path, r#"{"waves": [["web-01"]], "waves_done": "#).unwrap();
    let err = store.rollout("prod").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(msg.contains("delete the file"), "{msg}");
}

#[test]
fn observations_are_saved_and_list_the_known_hosts() {
    let (tmp, store) = new_store();
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
    // Leftovers that are not observations.
    fs::write(tmp.path().join("state/observations/.web-03.json.tmp-0123"), "").unwrap();
    fs::write(tmp.path().join("state/observations/README"), "").unwrap();
    assert_eq!(store.known_hosts().unwrap(), ["web-01", "web-02"]);
    let obs = store.observation("web-01").unwrap().unwrap();
    assert_eq!(obs.fingerprint, "fp-1b");
    assert_eq!(obs.at, ts("2026-11-22T07:45:00Z"));
    assert_eq!(store.observation("web-09").unwrap(), None);
}

#[test]
fn a_corrupt_observation_is_ignored_as_the_cache_it_is() {
    let (tmp, store) = new_store();
    fs::write(tmp.path().join("state/observations/web-01.json"), "{\"host\":").unwrap();
    assert_eq!(store.observation("web-01").unwrap(), None);
    assert_eq!(store.known_hosts().unwrap(), ["web-01"]);
    store
        .save_observation("web-01", "fp", ts("2026-11-22T07:40:00Z"))
        .unwrap();
    assert_eq!(store.observation("web-01").unwrap().unwrap().fingerprint, "fp");
}

#[test]
fn names_that_would_escape_the_store_are_refused() {
    let (tmp, store) = new_store();
    for bad in ["../evil", "a/b", ".hidden", ""] {
        let err = store.save_rollout(bad, &rollout()).unwrap_err();
        assert!(matches!(err, StoreError::BadName { .. }), "{bad:?}: {err:?}");
        assert!(store.rollout(bad).is_err());
        assert!(store.save_observation(bad, "fp", Timestamp::now()).is_err());
        assert!(store.observation(bad).is_err());
    }
    assert!(!tmp.path().join("evil.json").exists());
}

// ---------------------------------------------------------------------------------------------
// default_dir

#[test]
fn the_default_directory_follows_xdg_then_home() {
    let os = |s: &'static str| Some(OsStr::new(s));
    assert_eq!(
        default_dir(os("/x/state"), os("/home/alice"), "acme"),
        Some(PathBuf::from("/x/state/flotilla/acme"))
    );
    assert_eq!(
        default_dir(None, os("/home/alice"), "acme"),
        Some(PathBuf::from("/home/alice/.local/state/flotilla/acme"))
    );
    // Empty or relative XDG_STATE_HOME is ignored, as the XDG specification asks.
    for xdg in ["", "relative/state"] {
        assert_eq!(
            default_dir(os(xdg), os("/home/alice"), "acme"),
            Some(PathBuf::from("/home/alice/.local/state/flotilla/acme")),
            "{xdg:?}"
        );
    }
    assert_eq!(default_dir(None, None, "acme"), None);
    assert_eq!(default_dir(None, os(""), "acme"), None);
    assert_eq!(default_dir(None, os("home"), "acme"), None);
    assert_eq!(
        default_dir(os("/x/state"), None, "acme"),
        Some(PathBuf::from("/x/state/flotilla/acme"))
    );
    assert_eq!(default_dir(os("/x"), None, "../etc"), None);
    assert_eq!(default_dir(os("/x"), None, ".hidden"), None);
}

// ---------------------------------------------------------------------------------------------
// render_history

fn history() -> Vec<AuditEvent> {
    let rev = Some("3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a".to_owned());
    vec![
        AuditEvent {
            revision: rev.clone(),
            ..AuditEvent::new(ts("2026-11-22T07:40:00Z"), "alice", "apply-started")
        },
        AuditEvent {
            revision: rev.clone(),
            environment: Some("prod-eu".into()),
            reason: Some("INC-4711: hotfix during the freeze".into()),
            ..AuditEvent::new(ts("2026-11-22T07:40:01Z"), "alice", "override")
        },
        AuditEvent {
            revision: rev.clone(),
            environment: Some("prod-eu".into()),
            host: Some("web-01".into()),
            changes: vec![
                serde_json::json!({"runtime": "python"}),
                serde_json::json!({"file": "/etc/app.conf"}),
            ],
            ..AuditEvent::new(ts("2026-11-22T07:41:12.5Z"), "alice", "host-applied")
        },
        AuditEvent {
            revision: rev.clone(),
            environment: Some("prod-eu".into()),
            host: Some("web-02".into()),
            changes: vec![serde_json::json!({"runtime": "python"})],
            error: Some(
                "health check `curl -fsS localhost:8080/health` failed:\ncurl: (7) refused\u{1b}[0m".into(),
            ),
            ..AuditEvent::new(ts("2026-11-22T07:42:30Z"), "alice", "host-failed")
        },
        AuditEvent {
            revision: rev.clone(),
            environment: Some("prod-eu".into()),
            host: Some("web-02".into()),
            ..AuditEvent::new(ts("2026-11-22T07:42:41Z"), "alice", "rolled-back")
        },
        AuditEvent {
            revision: rev,
            error: Some("1 host failed, 1 rolled back".into()),
            ..AuditEvent::new(ts("2026-11-22T07:43:00Z"), "watch", "apply-finished")
        },
        AuditEvent {
            revision: None,
            dirty: true,
            host: Some("lab-07".into()),
            reason: Some("was managed by store 9c0ffee".into()),
            ..AuditEvent::new(ts("2026-11-23T10:00:00Z"), "bob", "take-over")
        },
    ]
}

#[test]
fn history_as_text() {
    let text = render_history(&history(), false);
    assert_eq!(text.lines().count(), history().len());
    insta::assert_snapshot!(text);
}

#[test]
fn history_as_json_lines_reads_back_as_the_same_events() {
    let events = history();
    let json = render_history(&events, true);
    let back: Vec<AuditEvent> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(back, events);
    insta::assert_snapshot!(json.lines().next().unwrap());
}

proptest::proptest! {
    #[test]
    fn history_text_is_one_clean_line_per_event(
        actor in ".{0,20}",
        host in proptest::option::of(".{0,20}"),
        error in proptest::option::of(".{0,40}"),
        n in 0usize..4,
    ) {
        let e = AuditEvent {
            host,
            error,
            ..AuditEvent::new(ts("2026-11-22T07:40:00Z"), &actor, "host-failed")
        };
        let events = vec![e; n];
        let text = render_history(&events, false);
        proptest::prop_assert_eq!(text.lines().count(), n);
        proptest::prop_assert!(text.chars().all(|c| c == '\n' || !c.is_control()));
    }
}

#[test]
fn a_directory_holding_only_the_artifact_cache_becomes_a_store() {
    // `validate` and `plan` remember checked artifacts before any store exists.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(dir.join("cache/artifacts/verified")).unwrap();
    let store = DirStore::open(&dir).unwrap();
    assert!(!store.id().is_empty());
    // But a directory with audit history and no id is still refused, not silently renewed.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("audit.jsonl"), "").unwrap();
    assert!(DirStore::open(&other).is_err());
}

/// Pause records behave the same in every backend: one per scope, the fleet-wide one first,
/// replaced by a second pause of the same scope, taken back by resume.
fn pauses_round_trip(store: &dyn Store) {
    use flotilla::store::Pause;
    let pause = |env: Option<&str>, reason: &str| Pause {
        environment: env.map(str::to_owned),
        reason: reason.into(),
        actor: "alice@ops1".into(),
        since: ts("2026-12-01T09:00:00Z"),
    };
    assert!(store.pauses().unwrap().is_empty());
    store.pause(&pause(Some("prod"), "INC-1")).unwrap();
    store.pause(&pause(None, "maintenance")).unwrap();
    store.pause(&pause(Some("prod"), "INC-2")).unwrap();
    let all = store.pauses().unwrap();
    assert_eq!(
        all,
        vec![pause(None, "maintenance"), pause(Some("prod"), "INC-2")]
    );
    assert_eq!(Pause::holding(&all, "prod").unwrap().reason, "INC-2");
    assert_eq!(Pause::holding(&all, "staging").unwrap().reason, "maintenance");
    assert_eq!(store.resume(Some("staging")).unwrap(), None);
    assert_eq!(store.resume(None).unwrap(), Some(pause(None, "maintenance")));
    assert_eq!(store.pauses().unwrap(), vec![pause(Some("prod"), "INC-2")]);
    assert_eq!(store.resume(Some("prod")).unwrap().unwrap().reason, "INC-2");
    assert!(store.pauses().unwrap().is_empty());
}

#[test]
fn pauses_are_kept_per_scope_in_the_directory_store_and_in_memory() {
    let (_tmp, dir) = new_store();
    pauses_round_trip(&dir);
    pauses_round_trip(&flotilla::store::MemStore::new().unwrap());
}

#[test]
fn a_pause_is_written_while_another_process_holds_the_apply_lock() {
    let (tmp, store) = new_store();
    let _held = store.lock(&holder(1, "watch", "flotilla watch")).unwrap();
    let other = DirStore::open(&tmp.path().join("state")).unwrap();
    other
        .pause(&flotilla::store::Pause {
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
