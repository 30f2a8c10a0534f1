//! `flotilla apply` end to end: the real binary, real Git repositories, real tarballs signed
//! by the real minisign CLI, hosts under temp roots on the local transport.

mod common;

use std::process::Command;

use common::{Keys, TestFleet, apply, current, flotilla, run, signed_fleet, spawn_apply};

fn with_host(runtime_extra: &str) -> (TestFleet, Keys, tempfile::TempDir) {
    let (f, keys) = signed_fleet(runtime_extra);
    f.host("hosts/a.toml", "h1", "staging", "");
    f.commit("initial");
    (f, keys, tempfile::tempdir().unwrap())
}

/// Waits (at most 20 s) until a transaction has started on `host`.
fn wait_for_transaction(f: &TestFleet, host: &str) {
    let started = std::time::Instant::now();
    while !f.root(host).join("var/lib/flotilla/txn").exists() && started.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn apply_converges_and_a_second_plan_has_no_changes() {
    let (f, _keys, store) = with_host("");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("Apply complete: 1 applied, 0 failed, 0 rolled back, 0 skipped."),
        "{}",
        r.stdout
    );
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    let conf = f.root("h1").join("etc/app.conf");
    assert_eq!(std::fs::read_to_string(conf).unwrap(), "name = h1\nworkers = 8\n");
    let r = run(flotilla().args(["plan", "--detailed-exitcode"]).arg(f.path()));
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout
            .ends_with("No changes. The fleet matches the manifests.\n")
    );

    // Downgrade, then removal of the runtime.
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("downgrade, drop the file");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("1.0.0"));
    assert!(
        !f.root("h1").join("etc/app.conf").exists(),
        "a file Flotilla created is deleted when it leaves"
    );
    f.write("environments/staging.toml", "[runtimes]\ngreeter = false\n");
    f.commit("remove");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!f.root("h1").join("opt/flotilla/runtimes/greeter").exists());

    let h = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["history", "--host", "h1"])
        .arg(f.path()));
    assert_eq!(h.code, 0, "{}", h.stderr);
    assert_eq!(h.stdout.matches("host-applied").count(), 3, "{}", h.stdout);
    let j = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["history", "--json", "--limit", "1"])
        .arg(f.path()));
    let last: serde_json::Value = serde_json::from_str(j.stdout.trim()).unwrap();
    assert_eq!(last["event"], "apply-finished");
}

#[test]
fn without_a_terminal_apply_asks_for_auto_approve() {
    let (f, _keys, store) = with_host("");
    let r = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .arg("apply")
        .arg(f.path()));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--auto-approve"), "{}", r.stderr);
    assert!(current(&f, "h1").is_none(), "nothing was applied");
}

#[test]
fn uncommitted_changes_are_refused_unless_allowed() {
    let (f, _keys, store) = with_host("");
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("uncommitted changes") && r.stderr.contains("--allow-dirty"),
        "{}",
        r.stderr
    );
    let r = apply(&f, store.path(), &["--allow-dirty"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("1.0.0"));
    let h = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["history", "--json"])
        .arg(f.path()));
    assert!(
        h.stdout.lines().all(|l| l.contains("\"dirty\":true")),
        "audited as dirty: {}",
        h.stdout
    );
}

#[test]
fn a_failing_health_check_rolls_back_and_exits_1() {
    let (f, _keys, store) = with_host("[health]\ncommand = \"test \\\"$(./bin/greeter)\\\" = 1.0.0\"\n");
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("1.0.0");
    assert_eq!(apply(&f, store.path(), &[]).code, 0);
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    f.commit("2.0.0 is bad");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("rolled back") && r.stderr.contains("health check of greeter 2.0.0"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("1 rolled back"), "{}", r.stdout);
    assert_eq!(current(&f, "h1").as_deref(), Some("1.0.0"));
    let h = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["history", "--host", "h1"])
        .arg(f.path()));
    assert!(h.stdout.contains("rolled-back"), "{}", h.stdout);
}

#[test]
fn tampered_and_untrusted_artifacts_block_before_any_host_is_touched() {
    let (f, _keys, store) = with_host("");
    // Tampered after signing: the sha256 in the manifest no longer matches.
    let art = f.path().join("artifacts/greeter-2.0.0.tar.gz");
    let mut bytes = std::fs::read(&art).unwrap();
    bytes.push(0);
    std::fs::write(&art, bytes).unwrap();
    f.commit("tampered");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("greeter") && r.stderr.contains("2.0.0") && r.stderr.contains("sha256"),
        "{}",
        r.stderr
    );
    assert!(current(&f, "h1").is_none());
    assert!(
        !f.root("h1").join("etc/app.conf").exists(),
        "the host was not touched at all"
    );

    // Pinned keys: the manifests' own key no longer counts.
    let (f, _keys, store) = with_host("");
    let other = Keys::new();
    let pinned = other.dir.path().join("pinned.pub");
    std::fs::write(&pinned, format!("{}\n", other.public())).unwrap();
    let r = apply(&f, store.path(), &["--trusted-keys", pinned.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("untrusted") || r.stderr.contains("not trusted"),
        "{}",
        r.stderr
    );
    assert!(current(&f, "h1").is_none());
}

#[test]
fn plan_and_validate_check_repository_artifacts_and_remember_what_passed() {
    let (f, _keys, store) = with_host("");
    let with_store = |args: &[&str]| {
        run(flotilla()
            .arg("--state-dir")
            .arg(store.path())
            .args(args)
            .arg(f.path()))
    };
    // Good artifacts: plan and validate pass, and the store's cache remembers the checks.
    assert_eq!(apply(&f, store.path(), &[]).code, 0);
    let r = with_store(&["validate"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let verified = store.path().join("cache/artifacts/verified");
    assert!(
        std::fs::read_dir(&verified).is_ok_and(|d| d.count() > 0),
        "no verified markers in {}",
        verified.display()
    );
    // Tampered in the working tree after the good copy was cached: the cache must not hide it.
    let art = f.path().join("artifacts/greeter-2.0.0.tar.gz");
    let mut bytes = std::fs::read(&art).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&art, &bytes).unwrap();
    for cmd in [&["validate"][..], &["plan"][..]] {
        let r = with_store(cmd);
        assert_eq!(r.code, 1, "{cmd:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("greeter") && r.stderr.contains("2.0.0") && r.stderr.contains("sha256"),
            "{cmd:?}: {}",
            r.stderr
        );
    }
    // The committed revision still holds the good bytes (read by blob id).
    let r = with_store(&["validate", "--rev", "HEAD"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // apply refuses before asking or touching anything.
    let r = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["apply", "--auto-approve", "--allow-dirty"])
        .arg(f.path()));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Apply refused"), "{}", r.stdout);
}

#[test]
fn concurrent_apply_is_refused_by_the_store_lock() {
    let (f, _keys, store) = with_host("[hooks]\nactivate = \"sleep 3\"\n");
    let mut first = spawn_apply(&f, store.path(), std::process::Stdio::null);
    // Wait until the first apply holds the lock (its transaction has started).
    wait_for_transaction(&f, "h1");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("pid"), "names its holder: {}", r.stderr);
    assert!(first.wait().unwrap().success());
}

#[test]
fn saved_plans_apply_only_unchanged_hosts() {
    let (f, _keys) = signed_fleet("");
    let store = tempfile::tempdir().unwrap();
    f.host("hosts/a.toml", "h1", "staging", "");
    f.host("hosts/a.toml", "h2", "staging", "");
    // A stale host counts against max_failures (DESIGN §6.3): allow one.
    let env = std::fs::read_to_string(f.path().join("environments/staging.toml")).unwrap();
    f.write(
        "environments/staging.toml",
        &format!("{env}\n[rollout]\nmax_failures = 1\n"),
    );
    f.commit("two hosts");
    let saved = store
        .path()
        .join("..")
        .join(format!("plan-{}.json", std::process::id()));
    let r = run(flotilla().args(["plan", "--out"]).arg(&saved).arg(f.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // h2 changes after the plan was saved.
    std::fs::create_dir_all(f.root("h2").join("etc")).unwrap();
    std::fs::write(f.root("h2").join("etc/app.conf"), "by hand\n").unwrap();
    let r = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["apply", "--auto-approve", "--plan"])
        .arg(&saved)
        .arg(f.path()));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("h2 skipped: stale"), "{}", r.stdout);
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    assert!(current(&f, "h2").is_none());
    assert_eq!(
        std::fs::read_to_string(f.root("h2").join("etc/app.conf")).unwrap(),
        "by hand\n"
    );

    // Targeting flags with --plan are refused; so is a plan of an uncommitted tree.
    for flags in [&["--host", "h1"][..], &["--env", "staging"], &["--rev", "HEAD"]] {
        let r = run(flotilla()
            .args(["apply", "--auto-approve"])
            .args(flags)
            .arg("--plan")
            .arg(&saved)
            .arg(f.path()));
        assert_eq!(r.code, 1, "{flags:?}");
        assert!(
            r.stderr.starts_with("error: the argument '")
                && r.stderr.contains(flags[0])
                && r.stderr.contains("cannot be used with '--plan <FILE>'"),
            "{flags:?}: {}",
            r.stderr
        );
    }
    f.write("environments/prod.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    let r = run(flotilla().args(["plan", "--out"]).arg(&saved).arg(f.path()));
    assert_eq!(r.code, 0);
    let r = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["apply", "--auto-approve", "--plan"])
        .arg(&saved)
        .arg(f.path()));
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        format!(
            "error: {} is a plan of an uncommitted tree, which cannot be applied later: commit, \
             then `flotilla plan --out` again\n",
            saved.display()
        )
    );
    let _ = std::fs::remove_file(saved);
}

#[test]
fn a_saved_plan_for_another_fleet_or_a_revision_not_here_is_refused_and_says_why() {
    let (f, _keys, store) = with_host("");
    let saved = store
        .path()
        .join("..")
        .join(format!("plan-other-{}.json", std::process::id()));
    let r = run(flotilla().args(["plan", "--out"]).arg(&saved).arg(f.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let apply_saved = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut plan = original.clone();
        edit(&mut plan);
        std::fs::write(&saved, plan.to_string()).unwrap();
        run(flotilla()
            .arg("--state-dir")
            .arg(store.path())
            .args(["apply", "--auto-approve", "--plan"])
            .arg(&saved)
            .arg(f.path()))
    };
    // Made for another fleet.
    let r = apply_saved(&|p| p["fleet"] = "other".into());
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "error: the saved plan is for fleet \"other\", but the fleet directory holds fleet acme: \
             plan again with `flotilla plan --out`"
        ),
        "{}",
        r.stderr
    );
    assert!(current(&f, "h1").is_none(), "nothing applied");
    // Made at a revision this repository does not have.
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let r = apply_saved(&|p| p["revision"] = missing.into());
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stderr,
        format!(
            "error: {} was planned at revision {missing}, which this repository does not have \
             (history rewritten, or planned in another clone): fetch it, or plan again with \
             `flotilla plan --out`\n",
            saved.display()
        )
    );
    assert!(current(&f, "h1").is_none(), "nothing applied");
    // The untouched plan still applies: the refusals were about the edits.
    let r = apply_saved(&|_| {});
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    let _ = std::fs::remove_file(saved);
}

#[test]
fn an_existing_file_is_taken_over_and_restored_when_it_leaves() {
    let (f, _keys, store) = with_host("");
    let conf = f.root("h1").join("etc/app.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(&conf, "original\n").unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("take over existing file"), "{}", r.stdout);
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "name = h1\nworkers = 8\n"
    );
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    f.commit("stop managing app.conf");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("restores the original"), "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "original\n");
}

#[test]
fn sensitive_content_never_reaches_output_or_audit() {
    let (f, _keys, store) = with_host("");
    f.write(
        "environments/staging.toml",
        "[runtimes]\ngreeter = \"2.0.0\"\n\n[[file]]\npath = \"/etc/token\"\ncontent = \"s3cr3t-value\\n\"\nmode = \"0600\"\nowner = \"nobody\"\ngroup = \"nogroup\"\nsensitive = true\n",
    );
    f.commit("token");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("s3cr3t") && !r.stderr.contains("s3cr3t"));
    let audit = std::fs::read_to_string(store.path().join("audit.jsonl")).unwrap();
    assert!(!audit.contains("s3cr3t"));
    let token = f.root("h1").join("etc/token");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&token).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "owner nobody, group nogroup"
    );
    // A changed owner alone is a change, and is put back.
    std::os::unix::fs::chown(&token, Some(0), Some(0)).unwrap();
    let r = run(flotilla().arg("plan").arg(f.path()));
    assert!(r.stdout.contains("owner root -> nobody"), "{}", r.stdout);
    assert_eq!(apply(&f, store.path(), &[]).code, 0);
    assert_eq!(std::fs::metadata(&token).unwrap().uid(), 65534);
}

#[test]
fn a_second_store_is_refused_unless_it_takes_over() {
    let (f, _keys, store) = with_host("");
    assert_eq!(apply(&f, store.path(), &[]).code, 0);
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("1.0.0");
    let other = tempfile::tempdir().unwrap();
    let r = apply(&f, other.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("another store") && r.stdout.contains("--take-over"),
        "{}",
        r.stdout
    );
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    let r = apply(
        &f,
        other.path(),
        &["--take-over", "migrating to the new CI runner"],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("1.0.0"));
    let audit = std::fs::read_to_string(other.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("take-over") && audit.contains("migrating to the new CI runner"));
}

/// Creates `path` when dropped: a hook waiting for it ends even when the test fails.
struct Release(std::path::PathBuf);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

/// The results host-side transactions wrote under `host`'s state directory: whole lines
/// only (`result` is written by one `printf >`, so it exists empty a moment before it holds
/// its line).
fn txn_results(f: &TestFleet, host: &str) -> Vec<String> {
    let txn = f.root(host).join("var/lib/flotilla/txn");
    std::fs::read_dir(txn)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("result")).ok())
        .filter(|r| r.ends_with('\n'))
        .collect()
}

#[test]
fn killing_the_controller_mid_apply_loses_nothing() {
    // The activate hook holds the host-side transaction until the test releases it, so the
    // controller dies at a known point: the link moved, the host has not finished.
    let (f, _keys, store) = with_host(
        "[hooks]\nactivate = \"touch \\\"$FLOTILLA_ROOT/hook-started\\\"; \
         until [ -e \\\"$FLOTILLA_ROOT/release\\\" ]; do sleep 0.05; done\"\n",
    );
    let root = f.root("h1");
    let release = Release(root.join("release"));
    let mut child = spawn_apply(&f, store.path(), std::process::Stdio::null);
    common::wait_for("the activate hook", 30, || root.join("hook-started").exists());
    let state = std::fs::read_to_string(root.join("var/lib/flotilla/state.json")).unwrap();
    assert!(state.contains("\"pending\""), "in flight: {state}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let audit = std::fs::read_to_string(store.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"event\":\"apply-started\""),
        "the killed run's start is on record: {audit}"
    );

    // The host-side transaction runs on by itself and commits.
    drop(release);
    common::wait_for("the host-side transaction's result", 30, || {
        !txn_results(&f, "h1").is_empty()
    });
    assert_eq!(txn_results(&f, "h1"), ["ok\n"]);
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    let head = git2::Repository::open(f.path())
        .unwrap()
        .head()
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("var/lib/flotilla/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["pending"], serde_json::Value::Null, "{state}");
    assert_eq!(state["revision"], head.as_str(), "{state}");
    assert_eq!(state["runtimes"]["greeter"]["active"], "2.0.0", "{state}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/app.conf")).unwrap(),
        "name = h1\nworkers = 8\n"
    );

    // One re-run, not a retry loop: it takes over the dead run's store lock, says so, and
    // finds the host converged.
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("which is no longer running; its apply was interrupted"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout
            .ends_with("No changes. The fleet matches the manifests.\n"),
        "{}",
        r.stdout
    );
    let r = run(flotilla().args(["plan", "--detailed-exitcode"]).arg(f.path()));
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn killing_the_host_script_leaves_pending_which_the_next_apply_restores() {
    let (f, _keys, store) = with_host("");
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("1.0.0");
    assert_eq!(apply(&f, store.path(), &[]).code, 0);
    // 2.0.0's activate hook hangs; the on-host script is killed while it waits.
    let rt = std::fs::read_to_string(f.path().join("runtimes/greeter.toml")).unwrap();
    f.write(
        "runtimes/greeter.toml",
        &format!(
            "{rt}[hooks]\nactivate = \"{}\"\n",
            common::recording_pid("sleep 30")
        ),
    );
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    f.commit("2.0.0 with a hanging hook");
    let mut child = spawn_apply(&f, store.path(), std::process::Stdio::null);
    let steps = |f: &TestFleet| -> String {
        let txn = f.root("h1").join("var/lib/flotilla/txn");
        std::fs::read_dir(&txn)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("steps")).ok())
            .collect()
    };
    common::wait_for("the activate hook", 30, || {
        steps(&f).contains("activate greeter 2.0.0") && f.root("h1").join("hook.pid").exists()
    });
    assert_eq!(
        current(&f, "h1").as_deref(),
        Some("2.0.0"),
        "the link moved before the hook"
    );
    // Kill the host-side transaction (and its hook) with SIGKILL, then the controller.
    let root = f.root("h1");
    let st = Command::new("pkill")
        .args(["-9", "-f"])
        .arg(format!("{}/var/lib/flotilla/txn/.*/txn.sh", root.display()))
        .status()
        .unwrap();
    assert!(st.success(), "pkill found the transaction");
    // The hook's own `sleep`, by the PID it recorded: never another process's.
    assert!(
        common::kill_recorded(&root.join("hook.pid"), "sleep 30"),
        "the hook's sleep was still running"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let state = std::fs::read_to_string(root.join("var/lib/flotilla/state.json")).unwrap();
    assert!(
        state.contains("\"pending\""),
        "the pending record survives: {state}"
    );
    let r = run(flotilla().arg("plan").arg(f.path()));
    assert!(
        r.stdout.contains("a transaction was interrupted here"),
        "{}",
        r.stdout
    );

    // The next apply restores the pending state first, then converges (the hook now works).
    f.write(
        "runtimes/greeter.toml",
        &format!("{rt}[hooks]\nactivate = \"true\"\n"),
    );
    f.commit("fix the hook");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("restoring the state from before interrupted transaction"),
        "{}",
        r.stderr
    );
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    let state = std::fs::read_to_string(root.join("var/lib/flotilla/state.json")).unwrap();
    assert!(!state.contains("\"pending\": {"), "{state}");
}

#[test]
fn drift_is_corrected_decommission_empties_and_removed_hosts_are_listed() {
    let (f, _keys, store) = with_host("");
    f.host("hosts/b.toml", "h2", "staging", "");
    f.commit("two hosts");
    assert_eq!(apply(&f, store.path(), &[]).code, 0);
    // Drift: a hand edit is put back.
    let conf = f.root("h1").join("etc/app.conf");
    std::fs::write(&conf, "name = h1\nworkers = 1\n").unwrap();
    let r = apply(&f, store.path(), &["--host", "h1"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("(changed outside Flotilla)"), "{}", r.stdout);
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "name = h1\nworkers = 8\n"
    );
    // Decommission: everything Flotilla manages leaves the host.
    f.write(
        "hosts/a.toml",
        "[[host]]\nname = \"h1\"\nenvironment = \"staging\"\nroot = \"roots/h1\"\ndecommission = true\n",
    );
    f.commit("decommission h1");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!conf.exists());
    assert!(current(&f, "h1").is_none());
    // A host removed from the manifests is listed, and left alone.
    std::fs::remove_file(f.path().join("hosts/b.toml")).unwrap();
    f.commit("h2 leaves");
    let r = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .arg("plan")
        .arg(f.path()));
    assert!(
        r.stdout
            .contains("No longer in the manifests (left as they are): h2"),
        "{}",
        r.stdout
    );
    assert_eq!(current(&f, "h2").as_deref(), Some("2.0.0"));
}

#[test]
fn an_unpack_failure_rolls_back_and_names_the_step() {
    let (f, _keys, store) = with_host("");
    // The runtime's directory cannot be created: a regular file stands where it should be.
    let rt = f.root("h1").join("opt/flotilla/runtimes");
    std::fs::create_dir_all(&rt).unwrap();
    std::fs::write(rt.join("greeter"), "not a directory").unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("install greeter 2.0.0"), "{}", r.stderr);
    assert!(
        !f.root("h1").join("etc/app.conf").exists(),
        "nothing half-changed"
    );
    assert!(!f.root("h1").join("var/lib/flotilla/state.json").exists());
}

#[test]
fn sigterm_lets_in_flight_hosts_finish_and_starts_no_new_one() {
    let (f, _keys) = signed_fleet("[hooks]\nactivate = \"sleep 2\"\n");
    let store = tempfile::tempdir().unwrap();
    f.host("hosts/a.toml", "h1", "staging", "canary = true");
    f.host("hosts/a.toml", "h2", "staging", "");
    f.commit("two waves");
    let child = spawn_apply(&f, store.path(), std::process::Stdio::piped);
    wait_for_transaction(&f, "h1");
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("Apply interrupted: 1 applied"), "{stdout}");
    assert!(stdout.contains("h2 skipped"), "{stdout}");
    assert_eq!(
        current(&f, "h1").as_deref(),
        Some("2.0.0"),
        "the in-flight host finished"
    );
    assert!(current(&f, "h2").is_none(), "the next wave never started");
}

#[test]
fn history_of_an_unknown_host_is_an_error_not_an_empty_list() {
    let (f, _keys, store) = with_host("");
    assert_eq!(apply(&f, store.path(), &[]).code, 0);
    let history = |host: &str| {
        run(flotilla()
            .arg("--state-dir")
            .arg(store.path())
            .args(["history", "--host", host])
            .arg(f.path()))
    };
    let r = history("h1");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("h1"), "{}", r.stdout);
    let r = history("h9");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("unknown host `h9`"), "{}", r.stderr);
}

#[test]
fn switching_back_to_a_version_already_on_the_host_records_its_artifact_sha256() {
    let (f, _keys, store) = with_host("");
    assert_eq!(apply(&f, store.path(), &[]).code, 0);
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("1.0.0");
    assert_eq!(apply(&f, store.path(), &[]).code, 0);
    // 2.0.0 is still unpacked on the host: switching back uploads nothing.
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    f.commit("2.0.0 again");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    let manifest = std::fs::read_to_string(f.path().join("runtimes/greeter.toml")).unwrap();
    let sha = manifest
        .split("[[version]]")
        .find(|v| v.contains("\"2.0.0\""))
        .and_then(|v| v.split("sha256 = \"").nth(1))
        .map(|s| s[..64].to_owned())
        .unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(f.root("h1").join("var/lib/flotilla/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["runtimes"]["greeter"]["sha256"], sha, "{state}");
}

#[test]
fn health_checks_get_the_previous_version_and_remove_hooks_the_version_removed() {
    let (f, _keys, store) = with_host(
        "[health]\ncommand = \"echo \\\"$FLOTILLA_VERSION ${FLOTILLA_PREVIOUS_VERSION:-none}\\\" >> \\\"$FLOTILLA_ROOT/health.log\\\"\"\n\n[hooks]\nremove = \"echo \\\"$FLOTILLA_VERSION $FLOTILLA_VERSION_DIR\\\" > \\\"$FLOTILLA_ROOT/removed\\\"\"\n",
    );
    assert_eq!(apply(&f, store.path(), &[]).code, 0);
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("1.0.0");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let health = std::fs::read_to_string(f.root("h1").join("health.log")).unwrap();
    assert_eq!(health, "2.0.0 none\n1.0.0 2.0.0\n");
    f.write("environments/staging.toml", "[runtimes]\ngreeter = false\n");
    f.commit("no greeter");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let removed = std::fs::read_to_string(f.root("h1").join("removed")).unwrap();
    assert!(removed.starts_with("1.0.0 /"), "{removed}");
    assert!(removed.trim_end().ends_with("/greeter/1.0.0"), "{removed}");
}

/// Keys pinned out of band (`--trusted-keys` / `FLOTILLA_TRUSTED_KEYS`) are what `validate`
/// and `plan` check repository artifacts against too (DESIGN §9): a pull request cannot pass
/// CI by signing with a key of its own that the operator never pinned.
#[test]
fn pinned_keys_hold_for_validate_and_plan_too() {
    let (f, _keys, store) = with_host("");
    let other = Keys::new();
    let pinned = other.dir.path().join("pinned.pub");
    std::fs::write(&pinned, format!("{}\n", other.public())).unwrap();
    let cmd = |args: &[&str], env: bool| {
        let mut c = flotilla();
        c.arg("--state-dir").arg(store.path()).args(args).arg(f.path());
        if env {
            c.env("FLOTILLA_TRUSTED_KEYS", &pinned);
        } else {
            c.env_remove("FLOTILLA_TRUSTED_KEYS");
        }
        run(&mut c)
    };
    for args in [vec!["validate"], vec!["plan"]] {
        let r = cmd(&args, false);
        assert_eq!(
            r.code, 0,
            "{args:?} without pinned keys: {}{}",
            r.stdout, r.stderr
        );
        let r = cmd(&args, true);
        assert_eq!(r.code, 1, "{args:?} with pinned keys: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("untrusted") || r.stderr.contains("not trusted"),
            "{args:?}: {}",
            r.stderr
        );
    }
}
