//! The PostgreSQL store end to end (DESIGN §7): the real binary with `--state postgres://…`
//! against a real server (`FLOTILLA_TEST_POSTGRES`, a database per test), real fleets on the
//! local transport, signed artifacts. What a team sharing one store notices: apply, history,
//! status and pause work the same; a second apply is refused naming the first; hosts the
//! database's store owns refuse a directory store; `store copy` keeps the id; a standby
//! `watch` takes over within 15 s of the leader's kill -9.

mod common;

use std::process::{Child, Command, Stdio};

use common::pg::{TestDb, database};
use common::{TestFleet, current, flotilla, run, signed_fleet, wait_for};

fn with_host(hooks: &str) -> TestFleet {
    let (f, _keys) = signed_fleet(hooks);
    f.host("hosts/a.toml", "h1", "staging", "");
    f.commit("initial");
    f
}

fn pg(db: &TestDb, args: &[&str], f: &TestFleet) -> common::Run {
    run(flotilla().arg("--state").arg(&db.url).args(args).arg(f.path()))
}

fn apply_pg(db: &TestDb, f: &TestFleet, extra: &[&str]) -> common::Run {
    let mut args = vec!["apply", "--auto-approve"];
    args.extend_from_slice(extra);
    pg(db, &args, f)
}

#[test]
fn apply_history_status_and_pause_work_on_a_postgres_store() {
    let Some(db) = database("apply_history_status_and_pause_work_on_a_postgres_store") else {
        return;
    };
    let f = with_host("");
    // Reading commands create no store.
    let h = pg(&db, &["history"], &f);
    assert_eq!(h.code, 1, "{}{}", h.stdout, h.stderr);
    assert!(
        db.sql("SELECT 1 FROM pg_tables WHERE tablename = 'flotilla_store'")
            .is_empty()
    );

    let r = apply_pg(&db, &f, &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    let store_id = db.sql("SELECT id, epoch FROM flotilla_store");
    let state = std::fs::read_to_string(f.root("h1").join("var/lib/flotilla/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["store_id"].as_str(), store_id[0][0].as_deref());
    assert_eq!(state["epoch"].to_string(), store_id[0][1].clone().unwrap());

    let h = pg(&db, &["history", "--host", "h1"], &f);
    assert_eq!(h.code, 0, "{}", h.stderr);
    assert!(h.stdout.contains("host-applied"), "{}", h.stdout);
    assert!(h.stdout.contains("staging/h1"), "{}", h.stdout);
    let events = db.sql("SELECT event FROM flotilla_audit ORDER BY seq");
    assert!(events.len() >= 3, "{events:?}");

    let st = pg(&db, &["status"], &f);
    assert_eq!(st.code, 0, "{}{}", st.stdout, st.stderr);
    assert!(st.stdout.contains("staging"), "{}", st.stdout);

    let p = pg(&db, &["pause", "INC-9 database failover"], &f);
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("1.0.0");
    let a = apply_pg(&db, &f, &[]);
    assert_eq!(a.code, 3, "paused: {}{}", a.stdout, a.stderr);
    assert!(a.stdout.contains("INC-9 database failover"), "{}", a.stdout);
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    assert_eq!(pg(&db, &["resume"], &f).code, 0);
    let a = apply_pg(&db, &f, &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("1.0.0"));
}

#[test]
fn a_second_apply_is_refused_naming_the_first_and_a_directory_store_is_refused_by_the_hosts() {
    let Some(db) = database("a_second_apply_is_refused_naming_the_first") else {
        return;
    };
    let f = with_host("[hooks]\nactivate = \"sleep 3\"\n");
    let mut first = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .env("NO_COLOR", "1")
        .arg("--state")
        .arg(&db.url)
        .args(["apply", "--auto-approve"])
        .arg(f.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first apply to hold the store's lock", 30, || {
        db.sql("SELECT to_regclass('flotilla_lock_holder') IS NOT NULL")[0][0].as_deref() == Some("t")
            && !db.sql("SELECT pid FROM flotilla_lock_holder").is_empty()
    });
    let r = apply_pg(&db, &f, &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(&format!("pid {} (", first.id())) && r.stderr.contains("`flotilla apply`"),
        "names the holder: {}",
        r.stderr
    );
    assert!(first.wait().unwrap().success());
    assert!(
        db.sql("SELECT pid FROM flotilla_lock_holder").is_empty(),
        "the holder row goes with the lock"
    );

    // An operator with a directory store of their own is refused by the hosts.
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("1.0.0");
    let dir = tempfile::tempdir().unwrap();
    let r = common::apply(&f, dir.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("another store") && r.stdout.contains("--take-over"),
        "{}",
        r.stdout
    );
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
}

#[test]
fn store_copy_moves_a_directory_store_with_its_id_so_hosts_are_not_refused() {
    let Some(db) = database("store_copy_moves_a_directory_store_with_its_id") else {
        return;
    };
    let f = with_host("");
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(common::apply(&f, dir.path(), &[]).code, 0);
    let before = run(flotilla()
        .arg("--state-dir")
        .arg(dir.path())
        .args(["history", "--json"])
        .arg(f.path()));

    let c = run(flotilla()
        .args(["store", "copy", "--from"])
        .arg(dir.path())
        .args(["--to", &db.url]));
    assert_eq!(c.code, 0, "{}{}", c.stdout, c.stderr);
    assert!(c.stdout.contains("Copied store"), "{}", c.stdout);
    let id: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("id")).unwrap()).unwrap();
    assert_eq!(
        db.sql("SELECT id FROM flotilla_store")[0][0].as_deref(),
        id["id"].as_str()
    );
    let after = pg(&db, &["history", "--json"], &f);
    assert_eq!(after.stdout, before.stdout, "the audit log came along");

    // The hosts accept the copied store without --take-over, with a higher epoch.
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("1.0.0");
    let r = apply_pg(&db, &f, &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("1.0.0"));

    // A second copy into the now-used database is refused.
    let again = run(flotilla()
        .args(["store", "copy", "--from"])
        .arg(dir.path())
        .args(["--to", &db.url]));
    assert_eq!(again.code, 1, "{}{}", again.stdout, again.stderr);
    assert!(again.stderr.contains("empty database"), "{}", again.stderr);
}

fn spawn_watch(db: &TestDb, f: &TestFleet, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .env("NO_COLOR", "1")
        .arg("--state")
        .arg(&db.url)
        .args([
            "watch",
            "--interval",
            "1s",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg(f.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn watch")
}

fn status(port: u16) -> serde_json::Value {
    ureq::get(&format!("http://127.0.0.1:{port}/status"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// Ends a watch this test started (SIGTERM), waiting for it.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn a_standby_watch_takes_over_within_15_s_of_the_leaders_kill_9() {
    let Some(db) = database("a_standby_watch_takes_over_within_15_s") else {
        return;
    };
    let (f, keys) = signed_fleet("");
    f.write("flotilla.toml", &common::fleet_toml_without_promotion(&keys));
    std::fs::remove_file(f.path().join("environments/prod.toml")).unwrap();
    let web = |v: u32| {
        format!("auto_apply = true\n\n[[file]]\npath = \"/etc/web.conf\"\ncontent = \"v = {v}\\n\"\n")
    };
    f.write("environments/staging.toml", &web(1));
    f.host("hosts/a.toml", "w1", "staging", "");
    f.host("hosts/a.toml", "w2", "staging", "");
    f.commit("v1");
    // A person's first apply approves the environment for watch.
    let r = apply_pg(&db, &f, &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    let (p1, p2) = (
        common::sshd::free_port("127.0.0.1"),
        common::sshd::free_port("127.0.0.1"),
    );
    let mut leader = spawn_watch(&db, &f, p1);
    wait_for("the leader's first cycle", 30, || {
        status(p1)["last_cycle"].is_object()
    });
    let mut standby = spawn_watch(&db, &f, p2);
    wait_for("the standby to report the held store", 30, || {
        status(p2)["store_problem"]
            .as_str()
            .is_some_and(|p| p.contains("flotilla watch"))
    });

    f.write("environments/staging.toml", &web(2));
    f.commit("v2");
    wait_for("the leader to apply v2", 30, || {
        ["w1", "w2"]
            .iter()
            .all(|h| std::fs::read_to_string(f.root(h).join("etc/web.conf")).is_ok_and(|c| c == "v = 2\n"))
    });
    leader.kill().unwrap();
    leader.wait().unwrap();
    let killed = std::time::Instant::now();
    f.write("environments/staging.toml", &web(3));
    f.commit("v3");
    wait_for("the standby to apply v3", 15, || {
        ["w1", "w2"]
            .iter()
            .all(|h| std::fs::read_to_string(f.root(h).join("etc/web.conf")).is_ok_and(|c| c == "v = 3\n"))
    });
    assert!(killed.elapsed().as_secs() < 15, "{:?}", killed.elapsed());
    assert!(status(p2)["store_problem"].is_null(), "{}", status(p2));
    stop(&mut standby);

    // One epoch sequence: every host's state.json names the store and an epoch the store handed out.
    let epoch: u64 = db.sql("SELECT epoch FROM flotilla_store")[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    for h in ["w1", "w2"] {
        let state = std::fs::read_to_string(f.root(h).join("var/lib/flotilla/state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert!(state["epoch"].as_u64().unwrap() <= epoch, "{state}");
    }
    let takeovers = db.sql("SELECT count(*) FROM flotilla_audit WHERE event = 'take-over'");
    assert_eq!(
        takeovers[0][0].as_deref(),
        Some("0"),
        "no host was refused or taken over"
    );
}

#[test]
fn an_apply_whose_database_sessions_are_cut_starts_no_further_host() {
    let Some(db) = database("an_apply_whose_database_sessions_are_cut_starts_no_further_host") else {
        return;
    };
    // Three hosts one at a time; each health check takes 3 s, longer than the lock's 1 s
    // liveness check needs to notice the loss.
    let (f, _keys) = signed_fleet("[health]\ncommand = \"sleep 3\"\n");
    for h in ["h1", "h2", "h3"] {
        f.host("hosts/a.toml", h, "staging", "");
    }
    f.write(
        "environments/staging.toml",
        "[runtimes]\ngreeter = \"2.0.0\"\n\n[rollout]\nwaves = [\"100%\"]\nmax_parallel = 1\n",
    );
    f.commit("three hosts");
    let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .env("NO_COLOR", "1")
        .arg("--state")
        .arg(&db.url)
        .args(["apply", "--auto-approve", "--env", "staging"])
        .arg(f.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("h1 to be changed", 30, || current(&f, "h1").is_some());
    // As a restarted server or a cut network would: the lock's session is gone, so another
    // process may hold the lock now. No further host may start.
    db.terminate_sessions();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert_eq!(current(&f, "h3"), None, "h3 never started: {text}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "hosts not started are skipped: {text}"
    );
    assert_eq!(current(&f, "h2"), None, "h2 never started: {text}");
    assert!(text.contains("was lost"), "says the lock was lost: {text}");
    assert!(text.contains("h3: skipped"), "{text}");
}
