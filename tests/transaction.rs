//! Host transactions on the local transport, against real host roots: real tarballs unpacked
//! by the real `tar`, real hooks, real rollbacks.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::TestFleet;
use flotilla::observe::Observation;
use flotilla::plan::{self, HostInput, PlanInput};
use flotilla::transaction::{self, Context, Outcome, Upload};
use flotilla::transport::{self, Target};

/// A real .tar.gz with `bin/hello` printing `version`; returns (path, sha256).
fn artifact(dir: &Path, version: &str) -> (PathBuf, String) {
    let src = dir.join(format!("src-{version}"));
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/hello"), format!("#!/bin/sh\necho {version}\n")).unwrap();
    common::set_mode(&src.join("bin/hello"), 0o755);
    std::fs::write(src.join("VERSION"), version).unwrap();
    let out = dir.join(format!("greeter-{version}.tar.gz"));
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .args(["bin", "VERSION"])
        .status()
        .unwrap();
    assert!(st.success());
    let sha = flotilla::resolve::sha256_hex(&std::fs::read(&out).unwrap());
    (out, sha)
}

struct World {
    fleet: TestFleet,
    artifacts: BTreeMap<(String, String), Upload>,
    _dir: tempfile::TempDir,
}

fn world(runtime_extra: &str, env_extra: &str) -> World {
    let f = TestFleet::new();
    let dir = tempfile::tempdir().unwrap();
    let mut artifacts = BTreeMap::new();
    let mut rt = String::new();
    for v in ["1.0.0", "2.0.0"] {
        let (path, sha) = artifact(dir.path(), v);
        rt.push_str(&format!("[[version]]\nversion = \"{v}\"\nartifact = \"https://example.invalid/{v}.tgz\"\nsha256 = \"{sha}\"\n\n"));
        artifacts.insert(
            ("greeter".to_owned(), v.to_owned()),
            Upload {
                sha256: sha,
                local_path: path,
            },
        );
    }
    rt.push_str(runtime_extra);
    f.write("runtimes/greeter.toml", &rt);
    f.write("environments/staging.toml", &format!("[runtimes]\ngreeter = \"1.0.0\"\n\n[[file]]\npath = \"/etc/app.conf\"\ncontent = \"workers = 8\\n\"\non_change = \"echo reloaded >> \\\"$FLOTILLA_ROOT/reloads\\\"\"\n{env_extra}"));
    f.host("hosts/a.toml", "h1", "staging", "");
    World {
        fleet: f,
        artifacts,
        _dir: dir,
    }
}

/// Observes, plans and applies host h1 once; returns the outcome.
async fn apply_once(w: &World) -> transaction::Report {
    let repo = flotilla::repo::FleetRepo::open(w.fleet.path(), None).unwrap();
    let loaded = flotilla::load::load(&repo).expect("valid fleet");
    let d = &loaded.desired[0];
    let target = Target::for_host(d, repo.fleet_dir());
    let mut session = transport::connect(&target).await.unwrap();
    let obs: Observation = flotilla::observe::observe(session.as_mut(), d).await.unwrap();
    let now = jiff::Timestamp::now();
    let p = plan::build(&PlanInput {
        fleet: &loaded.fleet,
        revision: None,
        hosts: vec![HostInput {
            desired: d,
            observed: Ok(&obs),
            refused: None,
            take_over: false,
        }],
        at: now,
        observed_at: now,
        all_desired: &loaded.desired,
        promotions: &[],
        halts: &Default::default(),
    });
    let cx = Context {
        fleet: &loaded.fleet,
        revision: None,
        store_id: "test-store",
        epoch: 1,
        now,
        artifacts: &w.artifacts,
    };
    let txn = transaction::build(d, &obs, &p.hosts[0].changes, &cx);
    let report = transaction::run(session.as_mut(), d, &target.root, &txn, &|_| {})
        .await
        .unwrap();
    session.close().await.unwrap();
    report
}

/// Every file under a directory with its content (links as "-> target"), for byte-for-byte
/// comparisons; Flotilla's own transaction records are left out.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("var/lib/flotilla/txn")
                || rel.starts_with("var/lib/flotilla/staging")
                || rel == "var/lib/flotilla/lock"
            {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", std::fs::read_link(&p).unwrap().display()));
            } else if meta.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    rel,
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned(),
                );
            }
        }
    }
    out
}

#[tokio::test]
async fn install_then_upgrade_then_no_changes() {
    let w = world("", "");
    let r = apply_once(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    let root = w.fleet.root("h1");
    let current = std::fs::read_link(root.join("opt/flotilla/runtimes/greeter/current")).unwrap();
    assert_eq!(current, Path::new("1.0.0"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/app.conf")).unwrap(),
        "workers = 8\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("reloads")).unwrap(),
        "reloaded\n"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("var/lib/flotilla/state.json")).unwrap()).unwrap();
    assert_eq!(state["runtimes"]["greeter"]["active"], "1.0.0");
    assert!(state["pending"].is_null());

    w.fleet.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n\n[[file]]\npath = \"/etc/app.conf\"\ncontent = \"workers = 8\\n\"\n");
    let r = apply_once(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    let rt = root.join("opt/flotilla/runtimes/greeter");
    assert_eq!(
        std::fs::read_link(rt.join("current")).unwrap(),
        Path::new("2.0.0")
    );
    assert!(
        rt.join("1.0.0").is_dir(),
        "the previous version is kept for rollback"
    );
    let out = std::process::Command::new(rt.join("current/bin/hello"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2.0.0\n");
}

#[tokio::test]
async fn failing_health_check_rolls_back_byte_for_byte() {
    let w = world("", "");
    assert_eq!(apply_once(&w).await.outcome, Outcome::Applied);
    let root = w.fleet.root("h1");
    let before = snapshot(&root);
    // 2.0.0 fails its health check; the file change and its on_change must be undone too.
    w.fleet.write(
        "runtimes/greeter.toml",
        &format!(
            "{}[health]\ncommand = \"test \\\"$(./bin/hello)\\\" = 1.0.0\"\nretries = 1\ninterval = \"1s\"\n",
            std::fs::read_to_string(w.fleet.path().join("runtimes/greeter.toml")).unwrap()
        ),
    );
    w.fleet.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n\n[[file]]\npath = \"/etc/app.conf\"\ncontent = \"workers = 16\\n\"\non_change = \"echo reloaded >> \\\"$FLOTILLA_ROOT/reloads\\\"\"\n");
    let r = apply_once(&w).await;
    assert!(
        matches!(&r.outcome, Outcome::RolledBack(why) if why.contains("health check of greeter 2.0.0")),
        "{r:?}"
    );
    let mut after = snapshot(&root);
    // on_change ran for the change and again for the restore: that is the only difference.
    assert_eq!(
        after.remove("reloads").as_deref(),
        Some("reloaded\nreloaded\nreloaded\n")
    );
    let mut before = before;
    before.remove("reloads");
    assert_eq!(after, before);
}

#[tokio::test]
async fn failing_activate_hook_rolls_back_a_fresh_install() {
    let w = world("[hooks]\nactivate = \"exit 3\"\n", "");
    let r = apply_once(&w).await;
    assert!(
        matches!(&r.outcome, Outcome::RolledBack(why) if why.contains("activate hook of greeter")),
        "{r:?}"
    );
    let root = w.fleet.root("h1");
    assert!(
        !root.join("opt/flotilla/runtimes/greeter/1.0.0").exists(),
        "a fresh install loses its directory"
    );
    assert!(
        !root.join("opt/flotilla/runtimes/greeter/current").exists(),
        "and its link"
    );
    assert!(!root.join("etc/app.conf").exists(), "the created file is removed");
    assert!(
        !root.join("var/lib/flotilla/state.json").exists(),
        "no state.json: there was none before"
    );
}

#[tokio::test]
async fn a_changed_host_is_stale_and_left_untouched() {
    let w = world("", "");
    let repo = flotilla::repo::FleetRepo::open(w.fleet.path(), None).unwrap();
    let loaded = flotilla::load::load(&repo).ok().unwrap();
    let d = &loaded.desired[0];
    let target = Target::for_host(d, repo.fleet_dir());
    let mut session = transport::connect(&target).await.unwrap();
    let obs = flotilla::observe::observe(session.as_mut(), d).await.unwrap();
    let now = jiff::Timestamp::now();
    let p = plan::build(&PlanInput {
        fleet: &loaded.fleet,
        revision: None,
        hosts: vec![HostInput {
            desired: d,
            observed: Ok(&obs),
            refused: None,
            take_over: false,
        }],
        at: now,
        observed_at: now,
        all_desired: &loaded.desired,
        promotions: &[],
        halts: &Default::default(),
    });
    // Someone writes the file between plan and apply.
    let root = w.fleet.root("h1");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/app.conf"), "hand-made\n").unwrap();
    let cx = Context {
        fleet: &loaded.fleet,
        revision: None,
        store_id: "s",
        epoch: 1,
        now,
        artifacts: &w.artifacts,
    };
    let txn = transaction::build(d, &obs, &p.hosts[0].changes, &cx);
    let r = transaction::run(session.as_mut(), d, &target.root, &txn, &|_| {})
        .await
        .unwrap();
    assert!(
        matches!(&r.outcome, Outcome::Stale(why) if why.contains("/etc/app.conf")),
        "{r:?}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/app.conf")).unwrap(),
        "hand-made\n"
    );
    assert!(!root.join("opt/flotilla/runtimes/greeter/1.0.0").exists());
}
