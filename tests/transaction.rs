//! Host transactions on the local transport, against real host roots: real tarballs unpacked
//! by the real `tar`, real hooks, real rollbacks.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::TestFleet;
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
    apply_txn(w).await.0
}

/// Observes, plans and applies host h1 once; returns the outcome and the transaction's id.
async fn apply_txn(w: &World) -> (transaction::Report, String) {
    common::apply_txn_once(&w.fleet, &w.artifacts).await
}

/// Runs `recover`, `recheck` or `finish` of a transaction on host h1.
async fn later(w: &World, mode: &str, txn: &str) -> transaction::Report {
    let repo = flotilla::repo::FleetRepo::open(w.fleet.path(), None).unwrap();
    let loaded = flotilla::load::load(&repo).expect("valid fleet");
    let d = &loaded.desired[0];
    let target = Target::for_host(d, repo.fleet_dir());
    let mut session = transport::connect(&target).await.unwrap();
    let r = match mode {
        "recover" => transaction::recover(session.as_mut(), d, txn).await,
        "recheck" => transaction::recheck(session.as_mut(), d, txn, Default::default()).await,
        "finish" => transaction::finish(session.as_mut(), d, txn).await,
        _ => unreachable!(),
    };
    session.close().await.unwrap();
    r.unwrap()
}

fn set_version(w: &World, v: &str) {
    w.fleet.write("environments/staging.toml", &format!("[runtimes]\ngreeter = \"{v}\"\n\n[[file]]\npath = \"/etc/app.conf\"\ncontent = \"workers = 8\\n\"\n"));
}

fn versions(w: &World) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(w.fleet.root("h1").join("opt/flotilla/runtimes/greeter"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "current")
        .collect();
    v.sort();
    v
}

/// The artifacts h1 keeps in staging (file names).
fn staged(w: &World) -> Vec<String> {
    std::fs::read_dir(w.fleet.root("h1").join("var/lib/flotilla/staging"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.gz"))
        .collect()
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
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
    let obs = flotilla::observe::observe(session.as_mut(), d, Some("s"), true, None)
        .await
        .unwrap();
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
        detail: Default::default(),
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

#[tokio::test]
async fn recover_of_an_older_transaction_after_a_newer_one_is_stale_and_touches_nothing() {
    let w = world("", "");
    let (r, a) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    set_version(&w, "2.0.0");
    let (r, _b) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    let root = w.fleet.root("h1");
    let before = snapshot(&root);
    // A's rollout halts and rolls A back, but B (another operator's) has since committed.
    let r = later(&w, "recover", &a).await;
    assert!(
        matches!(&r.outcome, Outcome::Stale(why) if why.contains("written by a later transaction")),
        "{r:?}"
    );
    assert_eq!(snapshot(&root), before, "the host is unchanged byte for byte");
    assert_eq!(common::current(&w.fleet, "h1").as_deref(), Some("2.0.0"));
}

#[tokio::test]
async fn recheck_of_an_older_transaction_after_a_newer_one_is_stale() {
    let w = world(
        "[health]\ncommand = \"echo checked >> \\\"$FLOTILLA_ROOT/checks\\\"\"\n",
        "",
    );
    let (r, a) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    assert_eq!(
        later(&w, "recheck", &a).await.outcome,
        Outcome::Applied,
        "A's own re-check runs"
    );
    set_version(&w, "2.0.0");
    assert_eq!(apply_txn(&w).await.0.outcome, Outcome::Applied);
    let root = w.fleet.root("h1");
    let checks = std::fs::read_to_string(root.join("checks")).unwrap();
    let r = later(&w, "recheck", &a).await;
    assert!(
        matches!(&r.outcome, Outcome::Stale(why) if why.contains("written by a later transaction")),
        "{r:?}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("checks")).unwrap(),
        checks,
        "no health check ran"
    );
}

#[tokio::test]
async fn recover_without_the_transaction_or_its_journal_is_stale() {
    let w = world("", "");
    let (r, a) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    let root = w.fleet.root("h1");
    let before = snapshot(&root);
    let r = later(&w, "recover", "1-00000000deadbeef").await;
    assert!(
        matches!(&r.outcome, Outcome::Stale(why) if why.contains("not on this host")),
        "{r:?}"
    );
    std::fs::remove_file(root.join("var/lib/flotilla/txn").join(&a).join("journal")).unwrap();
    let r = later(&w, "recover", &a).await;
    assert!(
        matches!(&r.outcome, Outcome::Stale(why) if why.contains("no journal")),
        "{r:?}"
    );
    assert_eq!(snapshot(&root), before);
}

#[tokio::test]
async fn recover_rolls_back_the_latest_committed_transaction_once() {
    let w = world("", "");
    assert_eq!(apply_txn(&w).await.0.outcome, Outcome::Applied);
    let root = w.fleet.root("h1");
    let before = snapshot(&root);
    set_version(&w, "2.0.0");
    let (r, b) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    // The rollback runs the controller's txn.sh, not the bundle's (which an older Flotilla
    // may have left): a bundle script that would do nothing changes nothing here.
    std::fs::write(
        root.join("var/lib/flotilla/txn").join(&b).join("txn.sh"),
        "exit 0\n",
    )
    .unwrap();
    let r = later(&w, "recover", &b).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    // 2.0.0 was a fresh install: its directory goes with the rollback.
    assert_eq!(snapshot(&root), before);
    // A second rollback of the same transaction finds the state it restored: stale.
    let r = later(&w, "recover", &b).await;
    assert!(matches!(&r.outcome, Outcome::Stale(_)), "{r:?}");
}

#[tokio::test]
async fn keep_versions_1_keeps_the_previous_version_for_rollback_until_finish() {
    let w = world("", "");
    w.fleet.write("hosts/a.toml", "");
    w.fleet.host("hosts/a.toml", "h1", "staging", "keep_versions = 1");
    assert_eq!(apply_txn(&w).await.0.outcome, Outcome::Applied);
    set_version(&w, "2.0.0");
    let (r, b) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    assert_eq!(
        versions(&w),
        ["1.0.0", "2.0.0"],
        "1.0.0 stays while the rollout may roll back"
    );

    // The rollout halts: the rollback finds 1.0.0 intact.
    let r = later(&w, "recover", &b).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    assert_eq!(common::current(&w.fleet, "h1").as_deref(), Some("1.0.0"));
    let out = std::process::Command::new(
        w.fleet
            .root("h1")
            .join("opt/flotilla/runtimes/greeter/current/bin/hello"),
    )
    .output()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.0.0\n");

    // Upgrade again, and this time the rollout completes: finish prunes to keep_versions.
    let (r, c) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    assert_eq!(versions(&w), ["1.0.0", "2.0.0"]);
    let r = later(&w, "finish", &c).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    assert_eq!(versions(&w), ["2.0.0"]);
    assert_eq!(common::current(&w.fleet, "h1").as_deref(), Some("2.0.0"));
    // Only 2.0.0's artifact stays in staging.
    let staging = staged(&w);
    let sha2 = &w.artifacts[&("greeter".to_owned(), "2.0.0".to_owned())].sha256;
    assert_eq!(staging, [format!("{sha2}.tar.gz")]);
    // finish of an older transaction is fenced like recover.
    let r = later(&w, "finish", &b).await;
    assert!(matches!(&r.outcome, Outcome::Stale(_)), "{r:?}");
}

/// What a cut-off upload leaves — part of a transaction bundle (a journal without a result)
/// and part of an artifact in staging — does not survive the next transaction (DESIGN §4),
/// also when there are fewer than five journals and when that transaction rolls back; the
/// artifact the rolled-back transaction uploaded goes too (no installed version needs it).
#[tokio::test]
async fn a_cut_off_upload_leaves_nothing_after_the_next_transaction_even_a_rolled_back_one() {
    let w = world(
        "[health]\ncommand = \"test \\\"$(./bin/hello)\\\" = 1.0.0\"\nretries = 1\ninterval = \"1s\"\n",
        "",
    );
    assert_eq!(apply_once(&w).await.outcome, Outcome::Applied);
    let sd = w.fleet.root("h1").join("var/lib/flotilla");
    let cut = sd.join("txn/1-00000000000000aa");
    std::fs::create_dir_all(cut.join("files")).unwrap();
    std::fs::write(cut.join("ops"), "install\tgreeter").unwrap();
    let partial = sd.join("staging").join(format!("{}.tar.gz", "b".repeat(64)));
    std::fs::write(&partial, "half an artifact").unwrap();
    // 2.0.0 fails its health check (hello prints 2.0.0): the transaction rolls back.
    set_version(&w, "2.0.0");
    let r = apply_once(&w).await;
    assert!(matches!(&r.outcome, Outcome::RolledBack(_)), "{r:?}");
    assert!(!cut.exists(), "the cut-off journal is gone");
    let staging = staged(&w);
    let sha1 = &w.artifacts[&("greeter".to_owned(), "1.0.0".to_owned())].sha256;
    assert_eq!(
        staging,
        [format!("{sha1}.tar.gz")],
        "only the installed version's artifact stays"
    );
}

#[tokio::test]
async fn housekeeping_keeps_five_journals_and_leaves_no_interrupted_upload_or_unpack() {
    let w = world("", "");
    assert_eq!(apply_txn(&w).await.0.outcome, Outcome::Applied);
    let root = w.fleet.root("h1");
    let sd = root.join("var/lib/flotilla");
    // An interrupted upload and an interrupted unpack.
    std::fs::write(
        sd.join("staging")
            .join(format!("{}.1-0000000000000001.part", "a".repeat(64))),
        "half",
    )
    .unwrap();
    let inc = root.join("opt/flotilla/runtimes/greeter/.incoming-1-0000000000000001");
    std::fs::create_dir_all(inc.join("bin")).unwrap();
    let mut last = String::new();
    for n in 0..6 {
        w.fleet.write("environments/staging.toml", &format!("[runtimes]\ngreeter = \"1.0.0\"\n\n[[file]]\npath = \"/etc/app.conf\"\ncontent = \"workers = {n}\\n\"\n"));
        let (r, id) = apply_txn(&w).await;
        assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
        if n == 0 {
            assert!(
                !inc.exists(),
                "the next transaction removes an interrupted unpack"
            );
            let parts: Vec<_> = std::fs::read_dir(sd.join("staging"))
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
                .collect();
            assert!(parts.is_empty(), "and interrupted uploads: {parts:?}");
        }
        last = id;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let journals: Vec<String> = std::fs::read_dir(sd.join("txn"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(journals.len(), 5, "{journals:?}");
    assert!(journals.contains(&last));
    // The artifact of the version on the host stays.
    let sha1 = &w.artifacts[&("greeter".to_owned(), "1.0.0".to_owned())].sha256;
    assert!(sd.join("staging").join(format!("{sha1}.tar.gz")).is_file());
}

#[tokio::test]
async fn an_upload_that_is_not_the_artifact_is_refused_and_a_cut_off_unpack_leaves_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let mut w = world("", "");
    let root = w.fleet.root("h1");
    let rt = root.join("opt/flotilla/runtimes");
    // The cached file no longer holds what was verified, and is shorter than it: the stream
    // is padded to the announced length and the host's digest check refuses it.
    let key = ("greeter".to_owned(), "1.0.0".to_owned());
    let good = w.artifacts[&key].local_path.clone();
    let bad = w._dir.path().join("bad.tar.gz");
    std::fs::write(&bad, b"not the artifact").unwrap();
    w.artifacts.get_mut(&key).unwrap().local_path = bad;
    let r = apply_once(&w).await;
    assert!(
        matches!(&r.outcome, Outcome::RolledBack(why) if why.contains("uploaded artifact has sha256")),
        "{r:?}"
    );
    assert!(!rt.join("greeter").exists(), "nothing installed");
    assert!(!root.join("var/lib/flotilla/state.json").exists());
    assert!(!root.join("etc/app.conf").exists());

    // An unpack cut off before `pending` (a crash) may leave a runtime directory holding only
    // its .incoming-*: the next transaction removes both.
    std::fs::create_dir_all(rt.join("other/.incoming-1-0000000000000001/bin")).unwrap();
    w.artifacts.get_mut(&key).unwrap().local_path = good;
    let (r, id) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    assert!(
        !rt.join("other").exists(),
        "the leftover and its empty runtime directory are gone"
    );
    assert_eq!(
        std::fs::read_link(rt.join("greeter/current")).unwrap(),
        Path::new("1.0.0")
    );
    // The transaction directory arrived in the same tar as the upload: root's only.
    let tx = root.join("var/lib/flotilla/txn").join(&id);
    assert_eq!(
        std::fs::metadata(&tx).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let staged: Vec<String> = std::fs::read_dir(root.join("var/lib/flotilla/staging"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let sha = &w.artifacts[&key].sha256;
    assert!(staged.contains(&format!("{sha}.tar.gz")), "{staged:?}");
    assert_eq!(
        flotilla::resolve::sha256_hex(
            &std::fs::read(root.join(format!("var/lib/flotilla/staging/{sha}.tar.gz"))).unwrap()
        ),
        *sha
    );
}

#[tokio::test]
async fn journals_of_sensitive_files_are_root_only_and_rollback_restores_the_mode() {
    let w = world("", "");
    let root = w.fleet.root("h1");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/app.conf"), "original\n").unwrap();
    common::set_mode(&root.join("etc/app.conf"), 0o644);
    w.fleet.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n\n[[file]]\npath = \"/etc/app.conf\"\ncontent = \"password = hunter2\\n\"\nmode = \"0600\"\nsensitive = true\n");
    let (r, a) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    let tx = root.join("var/lib/flotilla/txn").join(&a);
    assert_eq!(mode_of(&tx), 0o700, "the transaction directory is root's only");
    assert_eq!(mode_of(&tx.join("undo")), 0o700);
    assert_eq!(
        mode_of(&tx.join("undo/0")),
        0o600,
        "the copy of the replaced file too"
    );
    assert_eq!(mode_of(&tx.join("files/0")), 0o600);
    // The original taken over is kept in backup/ with its own mode (0644, for a restore to
    // put back): the directory is what keeps other users out.
    let backup = root.join("var/lib/flotilla/backup");
    let kept: Vec<_> = std::fs::read_dir(&backup)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read_to_string(&kept[0]).unwrap(), "original\n");
    assert_eq!(mode_of(&backup), 0o700, "backup/ is its owner's alone");
    let r = later(&w, "recover", &a).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/app.conf")).unwrap(),
        "original\n"
    );
    assert_eq!(
        mode_of(&root.join("etc/app.conf")),
        0o644,
        "the original mode comes back"
    );
}
