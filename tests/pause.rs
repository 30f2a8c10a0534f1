//! `flotilla pause` / `flotilla resume` end to end (DESIGN §10): real fleets on the local
//! transport, real signed artifacts, the real binary. A pause holds every host change of its
//! scope (apply exits 3 and says who paused and why), shows in plan and status, is audited,
//! and `resume` lets the changes go.

mod common;

use common::{TestFleet, apply, current, flotilla, run, signed_fleet};

fn fleet() -> TestFleet {
    let (f, keys) = signed_fleet("");
    // No promotion order: prod waits only on the pause.
    f.write("flotilla.toml", &common::fleet_toml_without_promotion(&keys));
    f.host("hosts/s.toml", "s1", "staging", "");
    f.host("hosts/p.toml", "p1", "prod", "");
    f.commit("init");
    f
}

fn cmd(store: &std::path::Path, f: &TestFleet, args: &[&str]) -> common::Run {
    run(flotilla().arg("--state-dir").arg(store).args(args).arg(f.path()))
}

#[test]
fn a_paused_environment_waits_with_who_and_why_and_resume_lets_it_go() {
    let f = fleet();
    let store = tempfile::tempdir().unwrap();

    let p = cmd(
        store.path(),
        &f,
        &["pause", "--env", "prod", "INC-4711 db failover"],
    );
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    assert!(
        p.stdout.contains("Paused environment prod: INC-4711 db failover"),
        "{}",
        p.stdout
    );

    let plan = cmd(store.path(), &f, &["plan"]);
    assert!(
        plan.stdout.contains("PAUSED: INC-4711 db failover"),
        "{}",
        plan.stdout
    );

    let a = apply(&f, store.path(), &[]);
    assert_eq!(a.code, 3, "changes wait: {}{}", a.stdout, a.stderr);
    assert!(a.stdout.contains("paused: INC-4711 db failover"), "{}", a.stdout);
    assert!(current(&f, "s1").is_some(), "staging is not paused");
    assert_eq!(current(&f, "p1"), None, "prod was left alone");

    let st = cmd(store.path(), &f, &["status"]);
    assert!(
        st.stdout.contains("PAUSED: INC-4711 db failover"),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout.contains("`flotilla resume --env prod` lifts it"),
        "{}",
        st.stdout
    );
    let json = cmd(store.path(), &f, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let prod = v["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "prod")
        .unwrap();
    assert!(prod["paused"].as_str().unwrap().contains("INC-4711"), "{prod}");

    let r = cmd(store.path(), &f, &["resume", "--env", "prod"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Resumed environment prod"), "{}", r.stdout);
    let a = apply(&f, store.path(), &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    assert!(current(&f, "p1").is_some(), "prod applied after resume");

    // A run's start and end say what they summarise, not "1 change".
    let text = cmd(store.path(), &f, &["history"]);
    let started = text.stdout.lines().find(|l| l.contains("apply-started")).unwrap();
    assert!(
        started.contains("epoch ") && started.contains("hosts "),
        "{started}"
    );
    assert!(!started.contains("1 change"), "{started}");
    let h = cmd(store.path(), &f, &["history", "--json"]);
    let events: Vec<serde_json::Value> = h
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pause = events
        .iter()
        .find(|e| e["event"] == "pause")
        .expect("pause audited");
    assert_eq!(pause["environment"], "prod");
    assert_eq!(pause["reason"], "INC-4711 db failover");
    assert!(events.iter().any(|e| e["event"] == "resume"), "resume audited");
}

#[test]
fn a_fleet_wide_pause_holds_every_environment_and_outlives_an_environment_resume() {
    let f = fleet();
    let store = tempfile::tempdir().unwrap();
    assert_eq!(cmd(store.path(), &f, &["pause", "maintenance"]).code, 0);
    let r = cmd(store.path(), &f, &["resume", "--env", "staging"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("was not paused"), "{}", r.stdout);
    assert!(r.stdout.contains("The whole fleet stays paused"), "{}", r.stdout);
    let a = apply(&f, store.path(), &[]);
    assert_eq!(a.code, 3, "{}{}", a.stdout, a.stderr);
    assert_eq!(current(&f, "s1"), None);
    assert_eq!(current(&f, "p1"), None);
    assert_eq!(cmd(store.path(), &f, &["resume"]).code, 0);
    assert_eq!(apply(&f, store.path(), &[]).code, 0);
}

#[test]
fn pausing_an_unknown_environment_or_without_a_reason_is_refused() {
    let f = fleet();
    let store = tempfile::tempdir().unwrap();
    let p = cmd(store.path(), &f, &["pause", "--env", "prd", "x"]);
    assert_eq!(p.code, 1);
    assert!(p.stderr.contains("unknown environment `prd`"), "{}", p.stderr);
    assert!(
        p.stderr.contains("prod, staging") || p.stderr.contains("staging, prod"),
        "{}",
        p.stderr
    );
    let p = cmd(store.path(), &f, &["pause", " "]);
    assert_eq!(p.code, 1);
    assert!(p.stderr.contains("needs a reason"), "{}", p.stderr);
}
