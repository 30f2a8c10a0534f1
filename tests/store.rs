//! The stores against real directories, a real PostgreSQL and real processes. `conformance`
//! runs one suite on both backends (the lock between processes and after one is killed, epochs
//! under contention, audit order and durability, records round trips); the rest are the
//! directory store's own (files after a torn append, the errors an operator sees for corrupt or
//! unusable state) and PostgreSQL's own (schema versions, a lost session, a crash mid-write).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};

use flotilla::store::{
    AuditEvent, AuditFilter, DirStore, Holder, Location, RolloutRecord, Store, StoreError, default_dir,
    render_history,
};

mod common;
#[path = "store/conformance.rs"]
mod conformance;
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

/// A store location as a child process gets it: a `postgres://` URL or a directory.
fn location_of(spec: &str) -> Location {
    if spec.starts_with("postgres://") {
        Location::parse_url(spec).unwrap()
    } else {
        Location::Dir(PathBuf::from(spec))
    }
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

/// Not a test of its own: the body of the child processes the tests spawn. Without
/// `FLOTILLA_STORE_TEST_CHILD` it does nothing. `STORE` is a directory or a `postgres://` URL.
///
/// - `epochs <n> <STORE>`: takes n epochs, printing `EPOCH <e>` for each;
/// - `lock <STORE>`: takes the lock, prints `LOCKED`, and waits to be killed;
/// - `audit <STORE>`: appends batches of 200 events, printing `BATCH <k>` after each, until
///   killed.
#[test]
fn child_helper() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut words = task.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("epochs"), Some(n), Some(spec)) => {
            let store = flotilla::store::open(&location_of(spec)).unwrap();
            let mut out = std::io::stdout().lock();
            for _ in 0..n.parse::<usize>().unwrap() {
                writeln!(out, "EPOCH {}", store.next_epoch().unwrap()).unwrap();
            }
        }
        (Some("lock"), Some(spec), None) => {
            let store = flotilla::store::open(&location_of(spec)).unwrap();
            let _guard = store
                .lock(&Holder::this_process("store-test child", Timestamp::now()))
                .unwrap();
            println!("LOCKED");
            std::io::stdout().flush().unwrap();
            // Killed by the parent long before this ends.
            std::thread::sleep(std::time::Duration::from_secs(120));
        }
        (Some("audit"), Some(spec), None) => {
            let store = flotilla::store::open(&location_of(spec)).unwrap();
            let batch: Vec<AuditEvent> = (0..200)
                .map(|i| event("host-applied", Some("prod"), Some(&format!("web-{i:03}"))))
                .collect();
            for k in 0..1000 {
                store.append_audit_all(&batch).unwrap();
                println!("BATCH {k}");
                std::io::stdout().flush().unwrap();
            }
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

// ---------------------------------------------------------------------------------------------
// Epochs

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
fn pauses_are_kept_per_scope_in_memory_too() {
    pauses_round_trip(&flotilla::store::MemStore::new().unwrap());
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL's own

use common::pg;

/// A PostgreSQL store in a database of its own; `None` after a visible skip.
#[track_caller]
fn pg_store(test: &str) -> Option<(pg::TestDb, Location)> {
    let db = pg::database(test)?;
    let location = Location::parse_url(&db.url).unwrap();
    Some((db, location))
}

#[test]
fn postgres_reading_commands_create_nothing_and_the_first_use_creates_the_schema() {
    let Some((db, location)) = pg_store("postgres_reading_commands_create_nothing") else {
        return;
    };
    assert!(flotilla::store::open_existing(&location).unwrap().is_none());
    let tables = "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'flotilla%'";
    assert_eq!(db.sql(tables), [[Some("0".to_owned())]], "nothing created");
    let store = flotilla::store::open(&location).unwrap();
    let id = store.id().to_owned();
    assert_eq!(db.sql("SELECT id FROM flotilla_store"), [[Some(id.clone())]]);
    assert_eq!(
        db.sql("SELECT max(version) FROM flotilla_schema"),
        [[Some("2".to_owned())]]
    );
    let existing = flotilla::store::open_existing(&location).unwrap().unwrap();
    assert_eq!(existing.id(), id);
}

#[test]
fn postgres_a_database_of_an_older_schema_is_migrated_on_first_use() {
    let Some((db, location)) = pg_store("postgres_a_database_of_an_older_schema_is_migrated") else {
        return;
    };
    let id = flotilla::store::open(&location).unwrap().id().to_owned();
    // As a database written by the release before (schema 1) would be.
    db.sql("DROP TABLE flotilla_rollout_changed; DELETE FROM flotilla_schema WHERE version = 2");
    let store = flotilla::store::open(&location).unwrap();
    assert_eq!(store.id(), id, "the same store");
    assert_eq!(
        db.sql("SELECT max(version) FROM flotilla_schema"),
        [[Some("2".to_owned())]]
    );
    store.save_rollout("prod", &rollout()).unwrap();
    store
        .rollout_host_changed(
            "prod",
            &flotilla::store::ChangedHost {
                host: "web-02".into(),
                wave: 2,
                txn: "7-0100".into(),
            },
        )
        .unwrap();
    assert_eq!(store.rollout("prod").unwrap().unwrap().changed.len(), 2);
}

#[test]
fn postgres_a_database_with_a_newer_schema_is_refused() {
    let Some((db, location)) = pg_store("postgres_a_database_with_a_newer_schema_is_refused") else {
        return;
    };
    flotilla::store::open(&location).unwrap();
    db.sql("INSERT INTO flotilla_schema (version) VALUES (99)");
    for result in [
        flotilla::store::open(&location).map(|_| ()),
        flotilla::store::open_existing(&location).map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("upgrade Flotilla"), "{msg}");
        assert!(msg.contains(&db.name), "names the database: {msg}");
    }
}

#[test]
fn postgres_the_audit_table_is_append_only_and_queryable_with_sql() {
    let Some((db, location)) = pg_store("postgres_the_audit_table_is_append_only") else {
        return;
    };
    let store = flotilla::store::open(&location).unwrap();
    store
        .append_audit(&event("host-applied", Some("prod"), Some("web-01")))
        .unwrap();
    // The documented columns, as a team's SQL would read them.
    assert_eq!(
        db.sql(
            "SELECT time, actor, environment, host, event, jsonb_array_length(changes) FROM flotilla_audit"
        ),
        [[
            Some("2026-11-22 07:40:00+00".to_owned()),
            Some("alice".to_owned()),
            Some("prod".to_owned()),
            Some("web-01".to_owned()),
            Some("host-applied".to_owned()),
            Some("0".to_owned()),
        ]]
    );
    for sql in [
        "UPDATE flotilla_audit SET actor = 'mallory'",
        "DELETE FROM flotilla_audit",
    ] {
        let admin = db.url.clone();
        let sql = sql.to_owned();
        let failed = std::panic::catch_unwind(move || pg::admin_sql(&admin, &sql)).is_err();
        assert!(failed, "the audit log refuses changes");
    }
    assert_eq!(store.audit(&AuditFilter::default()).unwrap().len(), 1);
}

#[test]
fn postgres_a_crash_in_the_middle_of_a_batch_leaves_all_of_it_or_none() {
    let Some((_db, location)) = pg_store("postgres_a_crash_in_the_middle_of_a_batch") else {
        return;
    };
    let store = flotilla::store::open(&location).unwrap();
    let mut child = spawn_child(&format!("audit {}", _db.url));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap() == "BATCH 2"), "the child appended");
    // Killed while it is (most likely) in the middle of its next batch.
    child.kill().unwrap();
    child.wait().unwrap();
    let events = store.audit(&AuditFilter::default()).unwrap();
    assert!(events.len() >= 600, "{}", events.len());
    assert_eq!(events.len() % 200, 0, "a batch is appended whole or not at all");
    store.append_audit(&event("take-over", None, None)).unwrap();
    assert_eq!(
        store
            .audit(&AuditFilter::default())
            .unwrap()
            .last()
            .unwrap()
            .event,
        "take-over"
    );
}

#[test]
fn postgres_a_lost_session_is_reported_by_the_guard_and_frees_the_lock() {
    let Some((db, location)) = pg_store("postgres_a_lost_session_is_reported_by_the_guard") else {
        return;
    };
    let store = flotilla::store::open(&location).unwrap();
    let guard = store.lock(&holder(1, "alice", "flotilla watch")).unwrap();
    assert!(guard.lost().is_none());
    assert!(store.lease_lost().is_none());
    // The server ends the sessions (as a restart or a cut connection would).
    db.terminate_sessions();
    common::wait_for("the guard to notice its lost session", 10, || {
        guard.lost().is_some()
    });
    let why = guard.lost().unwrap();
    assert!(why.contains("starts no more hosts"), "{why}");
    assert_eq!(store.lease_lost(), Some(why));
    // Another process takes the lock; the lost holder's row is reported as a dead holder's.
    let other = flotilla::store::open(&location).unwrap();
    let taken = other.lock(&holder(2, "bob", "flotilla watch")).unwrap();
    assert_eq!(taken.taken_over().map(|h| h.user.as_str()), Some("alice"));
    // The store that lost its session still works for everything else (it reconnects).
    assert_eq!(store.next_epoch().unwrap(), 1);
    drop(guard);
    assert!(store.lease_lost().is_none(), "forgotten with its guard");
}

#[test]
fn postgres_urls_are_checked_and_never_shown_with_their_password() {
    for bad in ["mysql://u@h/db", "postgres://u:s3cret@h/db?sslmode=sometimes"] {
        let msg = Location::parse_url(bad).unwrap_err().to_string();
        assert!(!msg.contains("s3cret"), "{msg}");
        assert!(msg.contains("--state"), "{msg}");
    }
    let location = Location::parse_url("postgres://ops:s3cret@db.example:6543/fleet").unwrap();
    assert_eq!(location.to_string(), "postgres://ops@db.example:6543/fleet");
    assert!(!format!("{location:?}").contains("s3cret"));
    // Artifacts and the mirror stay in a local cache keyed by the database, not the password.
    let again = Location::parse_url("postgres://ops:other@db.example:6543/fleet").unwrap();
    assert_eq!(
        flotilla::store::artifact_cache_dir(&location),
        flotilla::store::artifact_cache_dir(&again)
    );
    assert!(flotilla::store::mirror_dir(&location).ends_with("mirror.git"));
}

#[test]
fn a_torn_append_to_a_rollouts_changed_hosts_is_skipped_not_an_error() {
    let (tmp, store) = new_store();
    store.save_rollout("prod", &rollout()).unwrap();
    store
        .rollout_host_changed(
            "prod",
            &flotilla::store::ChangedHost {
                host: "web-09".into(),
                wave: 2,
                txn: "9-0001".into(),
            },
        )
        .unwrap();
    // A crash in the middle of the next append leaves half a line.
    let path = tmp.path().join("state/rollouts/prod.changed.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"host\":\"web-1");
    std::fs::write(&path, text).unwrap();
    let read = store.rollout("prod").unwrap().unwrap();
    let hosts: Vec<&str> = read.changed.iter().map(|c| c.host.as_str()).collect();
    assert_eq!(hosts, ["web-01", "web-09"]);
}

#[test]
fn an_append_after_a_torn_line_is_kept_for_rollout_hosts_and_promotions() {
    let (tmp, store) = new_store();
    store.save_rollout("prod", &rollout()).unwrap();
    let host = |name: &str| flotilla::store::ChangedHost {
        host: name.into(),
        wave: 2,
        txn: "9-0001".into(),
    };
    // A crash in the middle of an append left half a line; the next append must not be
    // glued to it (and lost with it).
    let path = tmp.path().join("state/rollouts/prod.changed.jsonl");
    std::fs::write(&path, "{\"host\":\"web-1").unwrap();
    store.rollout_host_changed("prod", &host("web-09")).unwrap();
    let hosts: Vec<String> = store
        .rollout("prod")
        .unwrap()
        .unwrap()
        .changed
        .into_iter()
        .map(|c| c.host)
        .collect();
    assert_eq!(hosts, ["web-01", "web-09"]);

    let promotions = tmp.path().join("state/promotions.jsonl");
    std::fs::write(&promotions, "{\"runtime\":\"gr").unwrap();
    let record: flotilla::store::PromotionRecord = serde_json::from_value(serde_json::json!({
        "environment": "staging", "runtime": "greeter", "version": "2.0.0", "at": "2026-12-01T10:00:00Z"
    }))
    .unwrap();
    store.record_promotion(&record).unwrap();
    assert_eq!(store.promotions().unwrap(), [record]);
}
