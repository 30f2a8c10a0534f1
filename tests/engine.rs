//! The engine's rules end to end, through the binary, on the local transport with real
//! tarballs, real minisign signatures and real Git repositories: halted rollouts stay halted
//! until retried, a freeze that begins mid-wave, saved plans of hosts that changed since,
//! the audit log written as hosts change, and hosts whose state cannot be read.

mod common;

use common::{TestFleet, apply, current, flotilla, run, signed_fleet};

fn with_store(f: &TestFleet, store: &std::path::Path, args: &[&str]) -> common::Run {
    run(flotilla().arg("--state-dir").arg(store).args(args).arg(f.path()))
}

/// `hosts` staging hosts on greeter 1.0.0, the manifests then moved to 2.0.0 with `rollout`.
fn fleet(hosts: &[&str], runtime_extra: &str, rollout: &str) -> (TestFleet, common::Keys, tempfile::TempDir) {
    let (f, keys) = signed_fleet(runtime_extra);
    for h in hosts {
        f.host("hosts/a.toml", h, "staging", "");
    }
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("1.0.0");
    let store = tempfile::tempdir().unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    f.write(
        "environments/staging.toml",
        &format!("[runtimes]\ngreeter = \"2.0.0\"\n\n[rollout]\n{rollout}"),
    );
    f.commit("2.0.0");
    (f, keys, store)
}

#[test]
fn a_halted_rollout_stays_halted_for_its_revision_until_retried() {
    // h1's health check fails on 2.0.0; the rollout halts after it (max_failures = 0).
    let (f, _keys, store) = fleet(
        &["h1", "h2"],
        "[health]\ncommand = \"test \\\"$FLOTILLA_VERSION\\\" = 1.0.0 || test -e \\\"$FLOTILLA_ROOT/ok\\\"\"\n",
        "waves = [1, \"100%\"]\non_failure = \"halt\"\n",
    );
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("HALTED"), "{}", r.stderr);
    assert_eq!(
        current(&f, "h1").as_deref(),
        Some("1.0.0"),
        "h1 rolled back on its own"
    );
    assert_eq!(current(&f, "h2").as_deref(), Some("1.0.0"), "h2 never started");

    // A commit that does not change the environment's desired state is the same rollout.
    f.write("NOTES.md", "unrelated\n");
    f.commit("an unrelated commit");
    // The same desired state again: refused, and the output says how to retry.
    std::fs::write(f.root("h1").join("ok"), "").unwrap();
    std::fs::write(f.root("h2").join("ok"), "").unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("--retry REASON"), "{}", r.stdout);
    assert_eq!(current(&f, "h1").as_deref(), Some("1.0.0"), "nothing started");
    // Without --auto-approve and without a terminal: the halt, not a question it cannot ask.
    let r = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .arg("apply")
        .arg(f.path())
        .stdin(std::process::Stdio::null()));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("--retry REASON"), "{}{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("no terminal"), "{}", r.stderr);

    // `plan` shows the halt with its wave, reason and time.
    let p = with_store(&f, store.path(), &["plan"]);
    assert!(p.stdout.contains("HALTED at wave 1"), "{}", p.stdout);
    let p = with_store(&f, store.path(), &["plan", "--format", "json"]);
    let p: serde_json::Value = serde_json::from_str(&p.stdout).unwrap();
    assert_eq!(p["environments"][0]["halted"]["wave"], 1, "{p}");
    assert!(p["environments"][0]["halted"]["at"].is_string(), "{p}");

    // So does `preview` of the halted revision, from the same store.
    let p = with_store(
        &f,
        store.path(),
        &[
            "preview", "--base", "HEAD~2", "--head", "HEAD", "--format", "text",
        ],
    );
    assert!(p.stdout.contains("HALTED at wave 1"), "{}{}", p.stdout, p.stderr);

    // `status` shows the halt with its wave.
    let st = with_store(&f, store.path(), &["status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert!(st["environments"][0]["halted"].as_str().is_some(), "{st}");

    // A person retries, with a reason that goes to the audit log.
    let r = apply(&f, store.path(), &["--retry", "health check fixed, INC-9"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    assert_eq!(current(&f, "h2").as_deref(), Some("2.0.0"));
    let audit = std::fs::read_to_string(store.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"event\":\"retry\"") && audit.contains("INC-9"),
        "{audit}"
    );
    assert!(audit.contains("\"event\":\"rollout-halted\""), "{audit}");
}

/// A halt holds its revision's desired state only (DESIGN §6.3): a commit that changes the
/// environment's desired state is a new rollout, which goes without `--retry`.
#[test]
fn a_new_desired_state_is_a_new_rollout_that_the_halt_does_not_hold() {
    let rollout = "waves = [1, \"100%\"]\non_failure = \"halt\"\n";
    let (f, _keys, store) = fleet(
        &["h1", "h2"],
        "[health]\ncommand = \"test \\\"$FLOTILLA_VERSION\\\" = 1.0.0\"\n",
        rollout,
    );
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("HALTED"), "{}", r.stderr);
    // Back to 1.0.0, with a new file: another desired state.
    f.write(
        "environments/staging.toml",
        &format!(
            "[runtimes]\ngreeter = \"1.0.0\"\n\n[[file]]\npath = \"/etc/new.conf\"\ncontent = \"x = 1\\n\"\n\n[rollout]\n{rollout}"
        ),
    );
    f.commit("back to 1.0.0, and a new file");
    let p = with_store(&f, store.path(), &["plan"]);
    assert!(!p.stdout.contains("HALTED"), "{}", p.stdout);
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for h in ["h1", "h2"] {
        assert_eq!(current(&f, h).as_deref(), Some("1.0.0"), "{h}");
        assert!(f.root(h).join("etc/new.conf").exists(), "{h}");
    }
}

#[test]
fn a_freeze_that_begins_mid_wave_leaves_the_rest_of_the_wave_untouched() {
    // One wave of three, one host at a time; each activation takes four seconds, and the
    // freeze begins two to three seconds after the apply starts, while h1 is in flight.
    let (f, _keys, store) = fleet(
        &["h1", "h2", "h3"],
        "[hooks]\nactivate = \"test $FLOTILLA_VERSION = 1.0.0 || sleep 4\"\n",
        "",
    );
    let from = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    let until = from + jiff::SignedDuration::from_hours(1);
    f.write(
        "environments/staging.toml",
        &format!(
            "[runtimes]\ngreeter = \"2.0.0\"\n\n[rollout]\nwaves = [\"100%\"]\nmax_parallel = 1\n\n\
             [[freeze]]\nfrom = \"{from:.0}\"\nuntil = \"{until:.0}\"\nreason = \"sudden freeze\"\n"
        ),
    );
    f.commit("a freeze soon");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 3, "changes wait: {}{}", r.stdout, r.stderr);
    assert_eq!(
        current(&f, "h1").as_deref(),
        Some("2.0.0"),
        "the host in flight finished"
    );
    assert_eq!(
        current(&f, "h2").as_deref(),
        Some("1.0.0"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(current(&f, "h3").as_deref(), Some("1.0.0"));
    assert!(r.stdout.contains("sudden freeze"), "{}", r.stdout);
}

#[test]
fn a_saved_plan_of_a_host_that_changed_since_is_stale_even_when_it_needs_nothing_now() {
    let (f, _keys, store) = fleet(&["h1", "h2"], "", "max_failures = 1\n");
    let saved = store
        .path()
        .join("..")
        .join(format!("engine-plan-{}.json", std::process::id()));
    let r = with_store(&f, store.path(), &["plan", "--out", saved.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Someone else applies h2 after the plan was saved: it now needs nothing.
    let r = with_store(&f, store.path(), &["apply", "--auto-approve", "--host", "h2"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = with_store(
        &f,
        store.path(),
        &["apply", "--auto-approve", "--plan", saved.to_str().unwrap()],
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("h2 skipped: stale"), "{}", r.stdout);
    assert!(
        r.stdout.contains("Plan: 0 to add, 2 to change, 0 to destroy."),
        "the plan shown is the saved one: {}",
        r.stdout
    );
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    let _ = std::fs::remove_file(saved);
}

#[test]
fn a_controller_killed_mid_apply_has_already_audited_every_host_it_changed() {
    let (f, _keys, store) = fleet(
        &["h1", "h2"],
        &format!(
            "[hooks]\nactivate = \"test \\\"$FLOTILLA_HOST\\\" = h1 || test $FLOTILLA_VERSION = 1.0.0 || {{ {}; }}\"\n",
            common::recording_pid("sleep 30")
        ),
        "waves = [1, \"100%\"]\n",
    );
    let mut child = common::spawn_apply(&f, store.path(), std::process::Stdio::null);
    let audit = store.path().join("audit.jsonl");
    let started = std::time::Instant::now();
    let seen = loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if text.contains("\"host\":\"h1\"") && text.contains("host-applied") {
            break true;
        }
        if started.elapsed().as_secs() > 20 {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(seen, "h1's event was on disk while the apply still ran");
    // Killed while h2's hook sleeps: the run never reaches its end.
    let pid_file = f.root("h2").join("hook.pid");
    wait_until("h2's hook", || pid_file.exists());
    child.kill().unwrap();
    child.wait().unwrap();
    // The hook's own `sleep`, by the PID it recorded: never another process's.
    assert!(
        common::kill_recorded(&pid_file, "sleep 30"),
        "h2's hook was still sleeping"
    );
}

#[test]
fn a_host_whose_state_cannot_be_read_is_refused_until_taken_over() {
    let (f, _keys, store) = fleet(&["h1"], "", "");
    let state = f.root("h1").join("var/lib/flotilla/state.json");
    std::fs::write(&state, "{ not json").unwrap();
    let r = with_store(&f, store.path(), &["plan"]);
    assert!(
        r.stdout.contains("refused") && r.stdout.contains("--take-over"),
        "{}",
        r.stdout
    );
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{ not json",
        "untouched"
    );
    let r = apply(&f, store.path(), &["--take-over", "state lost in INC-12"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    let audit = std::fs::read_to_string(store.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("INC-12"), "{audit}");
}

/// Sends `sig` to `child` with kill(1).
fn signal(child: &std::process::Child, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits up to `secs` for `child` to exit; its exit code and output.
fn finish_within(child: std::process::Child, secs: u64) -> (Option<i32>, String, String) {
    let started = std::time::Instant::now();
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if started.elapsed().as_secs() >= secs {
            let _ = child.kill();
            panic!("still running after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(started.elapsed().as_secs() < 30, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn sigterm_during_a_bake_stops_the_rollout_promptly() {
    let (f, _keys, store) = fleet(&["h1", "h2"], "", "waves = [1, \"100%\"]\nbake = \"1h\"\n");
    let child = common::spawn_apply(&f, store.path(), std::process::Stdio::piped);
    let record = store.path().join("rollouts/staging.json");
    wait_until("the bake", || {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .contains("\"bake_deadline\": \"")
    });
    signal(&child, "-TERM");
    let (code, stdout, _) = finish_within(child, 10);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("Apply interrupted"), "{stdout}");
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    assert_eq!(current(&f, "h2").as_deref(), Some("1.0.0"), "no new host started");
}

#[test]
fn sigterm_ends_apply_wait_and_nothing_changes() {
    let (f, _keys, store) = fleet(&["h1"], "", "");
    let now = jiff::Timestamp::now();
    f.write(
        "environments/staging.toml",
        &format!(
            "[runtimes]\ngreeter = \"2.0.0\"\n\n[[freeze]]\nfrom = \"{:.0}\"\nuntil = \"{:.0}\"\nreason = \"long freeze\"\n",
            now - jiff::SignedDuration::from_hours(1),
            now + jiff::SignedDuration::from_hours(1)
        ),
    );
    f.commit("frozen for an hour");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("--state-dir")
        .arg(store.path())
        .args(["apply", "--auto-approve", "--wait"])
        .arg(f.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    signal(&child, "-TERM");
    let (code, _, stderr) = finish_within(child, 10);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("stopped while waiting"), "{stderr}");
    assert_eq!(current(&f, "h1").as_deref(), Some("1.0.0"));
}

#[test]
fn a_second_signal_stops_without_waiting_for_the_host_in_flight() {
    let (f, _keys, store) = fleet(
        &["h1"],
        &format!(
            "[hooks]\nactivate = \"test $FLOTILLA_VERSION = 1.0.0 || {{ {}; }}\"\n",
            common::recording_pid("sleep 20")
        ),
        "",
    );
    let child = common::spawn_apply(&f, store.path(), std::process::Stdio::piped);
    let txn = f.root("h1").join("var/lib/flotilla/txn");
    wait_until("the activate hook", || {
        std::fs::read_dir(&txn)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("steps")).ok())
            .any(|s| s.contains("activate greeter 2.0.0"))
            && f.root("h1").join("hook.pid").exists()
    });
    let started = std::time::Instant::now();
    signal(&child, "-INT");
    std::thread::sleep(std::time::Duration::from_millis(200));
    signal(&child, "-INT");
    let (code, stdout, stderr) = finish_within(child, 10);
    assert!(started.elapsed().as_secs() < 8, "prompt");
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("1 failed"),
        "the in-flight host is reported: {stdout}"
    );
    // The hook's own `sleep`, by the PID it recorded: never another process's.
    assert!(
        common::kill_recorded(&f.root("h1").join("hook.pid"), "sleep 20"),
        "the hook in flight was left running, as a second signal does"
    );
}

#[test]
fn a_host_another_store_wrote_is_planned_as_refused_with_no_changes() {
    let (f, _keys, store) = fleet(&["h1"], "", "");
    let other = tempfile::tempdir().unwrap();
    flotilla::store::open(&flotilla::store::Location::Dir(other.path().to_path_buf())).unwrap();
    let r = with_store(&f, other.path(), &["plan", "--format", "json"]);
    let p: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let h1 = &p["hosts"][0];
    assert!(h1["refused"].as_str().unwrap().contains("another store"), "{h1}");
    assert_eq!(h1["changes"].as_array().unwrap().len(), 0, "{h1}");
    assert_eq!(p["summary"]["change"], 0, "{p}");
    let r = with_store(&f, other.path(), &["plan"]);
    assert!(
        r.stdout
            .contains("# host h1 refused: last written by another store"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("- runtime"), "{}", r.stdout);
    let r = apply(&f, other.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("1.0.0"), "untouched");
    drop(store);
}

fn versions_on(f: &TestFleet, host: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(f.root(host).join("opt/flotilla/runtimes/greeter"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "current" && !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

#[test]
fn keep_versions_1_keeps_the_rollback_target_until_the_rollout_completes() {
    // h2's health check fails on 2.0.0: the rollout halts and rolls h1 back.
    let health = "[health]\ncommand = \"test $FLOTILLA_HOST != h2 || test $FLOTILLA_VERSION = 1.0.0\"\n";
    let rollout = "waves = [1, \"100%\"]\n\n[defaults]\nkeep_versions = 1\n";
    let (f, _keys, store) = fleet(&["h1", "h2"], health, rollout);
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("1.0.0"), "{}", r.stderr);
    assert!(
        f.root("h1")
            .join("opt/flotilla/runtimes/greeter/current/VERSION")
            .is_file(),
        "not dangling"
    );
    let p = with_store(&f, store.path(), &["plan"]);
    assert!(p.stdout.contains("\"1.0.0\" -> \"2.0.0\""), "{}", p.stdout);

    // Without the failure the rollout completes, and only then is 1.0.0 pruned.
    let (f, _keys, store) = fleet(&["h1", "h2"], "", rollout);
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for h in ["h1", "h2"] {
        assert_eq!(versions_on(&f, h), ["2.0.0"], "{h}");
    }
}
