//! Rollout rules end to end on the local transport: halts, environment-wide rollback, bake
//! re-checks, freezes and overrides.

mod common;

use common::{TestFleet, apply, current, flotilla, run, signed_fleet, spawn_apply};

/// Three staging hosts on greeter 1.0.0, ready to move to 2.0.0 in waves [1, 2, 3].
fn three_hosts(runtime_extra: &str, rollout: &str) -> (TestFleet, common::Keys, tempfile::TempDir) {
    let (f, keys) = signed_fleet(runtime_extra);
    for h in ["h1", "h2", "h3"] {
        f.host(
            "hosts/a.toml",
            h,
            "staging",
            if h == "h1" { "canary = true" } else { "" },
        );
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
fn past_max_failures_the_rollout_halts_and_rolls_back_every_host_it_changed() {
    // h3's health check fails; h1 (wave 1) and h2 (wave 2) were already changed.
    let (f, _keys, store) = three_hosts(
        "[health]\ncommand = \"test \\\"$FLOTILLA_HOST\\\" != h3 || test \\\"$FLOTILLA_VERSION\\\" = 1.0.0\"\n",
        "waves = [1, 2, 3]\nmax_failures = 0\non_failure = \"rollback\"\n",
    );
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("environment staging: HALTED"), "{}", r.stderr);
    assert!(
        r.stderr.contains("h1: rolled back: its rollout halted"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("h2: rolled back: its rollout halted"),
        "{}",
        r.stderr
    );
    for h in ["h1", "h2", "h3"] {
        assert_eq!(
            current(&f, h).as_deref(),
            Some("1.0.0"),
            "{h} is back where it was"
        );
    }
    // Last wave first.
    let h2 = r.stderr.find("h2: rolled back: its rollout").unwrap();
    let h1 = r.stderr.find("h1: rolled back: its rollout").unwrap();
    assert!(h2 < h1, "{}", r.stderr);
    let plan = run(flotilla().args(["plan", "--detailed-exitcode"]).arg(f.path()));
    assert_eq!(plan.code, 2, "the changes are still to do: {}", plan.stdout);
    // `status` remembers the halt.
    let st = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["status", "--json"])
        .arg(f.path()));
    assert_eq!(st.code, 0, "{}", st.stderr);
    let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let staging = &st["environments"][0];
    assert!(
        staging["halted"]
            .as_str()
            .unwrap()
            .contains("more than max_failures"),
        "{staging}"
    );
    assert!(
        staging["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["status"] == "halted"),
        "{staging}"
    );
}

#[test]
fn with_halt_the_changed_hosts_stay_and_no_new_host_starts() {
    let (f, _keys, store) = three_hosts(
        "[health]\ncommand = \"test \\\"$FLOTILLA_HOST\\\" != h2 || test \\\"$FLOTILLA_VERSION\\\" = 1.0.0\"\n",
        "waves = [1, 2, 3]\nmax_failures = 0\non_failure = \"halt\"\n",
    );
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        current(&f, "h1").as_deref(),
        Some("2.0.0"),
        "halt keeps what went well"
    );
    assert_eq!(
        current(&f, "h2").as_deref(),
        Some("1.0.0"),
        "the failed host rolled itself back"
    );
    assert_eq!(current(&f, "h3").as_deref(), Some("1.0.0"), "no new host starts");
    assert!(
        r.stdout.contains("h3 skipped: the rollout in staging halted"),
        "{}",
        r.stdout
    );
}

#[test]
fn max_failures_as_a_budget_lets_the_rollout_go_on() {
    let (f, _keys, store) = three_hosts(
        "[health]\ncommand = \"test \\\"$FLOTILLA_HOST\\\" != h2 || test \\\"$FLOTILLA_VERSION\\\" = 1.0.0\"\n",
        "waves = [1, 2, 3]\nmax_failures = 1\n",
    );
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "a failed host still fails the run: {}", r.stdout);
    assert_eq!(
        current(&f, "h3").as_deref(),
        Some("2.0.0"),
        "within the budget the next wave starts"
    );
    assert_eq!(current(&f, "h2").as_deref(), Some("1.0.0"));
}

#[test]
fn a_host_that_turns_unhealthy_during_the_bake_halts_the_rollout() {
    // The check passes once (during the transaction) and fails when re-run after the bake.
    let (f, _keys, store) = three_hosts(
        "[health]\ncommand = \"if [ -e \\\"$FLOTILLA_ROOT/checked\\\" ]; then exit 1; fi; touch \\\"$FLOTILLA_ROOT/checked\\\"\"\n",
        "waves = [1, 2, 3]\nbake = \"1s\"\non_failure = \"rollback\"\n",
    );
    for h in ["h1", "h2", "h3"] {
        let _ = std::fs::remove_file(f.root(h).join("checked"));
    }
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("unhealthy: health check of greeter 2.0.0 failed after the bake"),
        "{}",
        r.stderr
    );
    assert_eq!(
        current(&f, "h1").as_deref(),
        Some("1.0.0"),
        "rolled back after the bake"
    );
    assert_eq!(
        current(&f, "h2").as_deref(),
        Some("1.0.0"),
        "wave 2 never started"
    );
}

#[test]
fn a_freeze_makes_changes_wait_with_exit_3_unless_overridden() {
    let (f, _keys, store) = three_hosts("", "waves = [1, 2, 3]\n");
    let env = std::fs::read_to_string(f.path().join("environments/staging.toml")).unwrap();
    f.write(
        "environments/staging.toml",
        &format!("{env}\n[[freeze]]\nfrom = \"2020-01-01T00:00:00Z\"\nuntil = \"2100-01-01T00:00:00Z\"\nreason = \"forever\"\n"),
    );
    f.commit("freeze");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("staging waits: frozen until 2100-01-01"),
        "{}",
        r.stdout
    );
    assert_eq!(current(&f, "h1").as_deref(), Some("1.0.0"));
    let st = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .arg("status")
        .arg(f.path()));
    assert!(
        st.stdout.contains("h1  waiting: frozen until 2100-01-01"),
        "{}",
        st.stdout
    );
    let r = apply(&f, store.path(), &["--override-freeze", "hotfix INC-42"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "h3").as_deref(), Some("2.0.0"));
    let audit = std::fs::read_to_string(store.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("override-freeze") && audit.contains("hotfix INC-42"));
    let st = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .arg("status")
        .arg(f.path()));
    assert_eq!(st.stdout.matches("  converged").count(), 3, "{}", st.stdout);
}

/// staging (s1) and prod (p1, p2) both on greeter 1.0.0, then both asked for 2.0.0.
fn promoted(runtime_extra: &str, prod_rollout: &str) -> (TestFleet, common::Keys, tempfile::TempDir) {
    let (f, keys) = signed_fleet(runtime_extra);
    f.host("hosts/s.toml", "s1", "staging", "");
    f.host("hosts/p.toml", "p1", "prod", "canary = true");
    f.host("hosts/p.toml", "p2", "prod", "");
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.write("environments/prod.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("1.0.0 everywhere");
    let store = tempfile::tempdir().unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    f.write(
        "environments/prod.toml",
        &format!("[runtimes]\ngreeter = \"2.0.0\"\n\n[rollout]\n{prod_rollout}"),
    );
    f.commit("2.0.0 everywhere");
    (f, keys, store)
}

#[test]
fn a_later_environment_goes_in_the_same_apply_once_the_earlier_one_converged() {
    let (f, _keys, store) = promoted("", "");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for h in ["s1", "p1", "p2"] {
        assert_eq!(current(&f, h).as_deref(), Some("2.0.0"), "{h}");
    }
    let records = std::fs::read_to_string(store.path().join("promotions.jsonl")).unwrap();
    assert!(
        records.contains("\"environment\":\"staging\"") && records.contains("\"version\":\"2.0.0\""),
        "{records}"
    );
}

#[test]
fn a_version_that_failed_in_staging_never_reaches_prod() {
    let (f, _keys, store) = promoted(
        "[health]\ncommand = \"test \\\"$FLOTILLA_ENVIRONMENT\\\" != staging || test \\\"$FLOTILLA_VERSION\\\" = 1.0.0\"\n",
        "",
    );
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("p1 waits: greeter 2.0.0 waits on staging"),
        "{}",
        r.stdout
    );
    for h in ["s1", "p1", "p2"] {
        assert_eq!(current(&f, h).as_deref(), Some("1.0.0"), "{h}");
    }
    // Targeting prod alone does not get around the gate.
    let r = apply(&f, store.path(), &["--env", "prod"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "p1").as_deref(), Some("1.0.0"));
}

#[test]
fn promotion_soak_holds_the_later_environment() {
    let (f, _keys, store) = promoted("", "promotion_soak = \"1h\"\n");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "s1").as_deref(), Some("2.0.0"));
    assert!(
        r.stdout.contains("greeter 2.0.0 soaks in staging until"),
        "{}",
        r.stdout
    );
    assert_eq!(current(&f, "p1").as_deref(), Some("1.0.0"));
}

#[test]
fn wait_sleeps_through_a_freeze_that_ends_in_a_few_seconds_then_applies() {
    // Real time, on purpose: the one end-to-end check that --wait wakes up and applies.
    let (f, _keys, store) = three_hosts("", "waves = [1, \"100%\"]\n");
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    let env = std::fs::read_to_string(f.path().join("environments/staging.toml")).unwrap();
    f.write(
        "environments/staging.toml",
        &format!(
            "{env}\n[[freeze]]\nfrom = \"2020-01-01T00:00:00Z\"\nuntil = \"{}\"\nreason = \"a short one\"\n",
            until.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
    );
    f.commit("short freeze");
    let started = std::time::Instant::now();
    let r = apply(&f, store.path(), &["--wait"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("Waiting until"),
        "a visible countdown: {}",
        r.stderr
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "it did wait"
    );
    for h in ["h1", "h2", "h3"] {
        assert_eq!(current(&f, h).as_deref(), Some("2.0.0"));
    }
}

#[test]
fn an_interrupted_rollout_resumes_with_its_stored_wave_layout() {
    let (f, _keys, store) = three_hosts("[hooks]\nactivate = \"sleep 1\"\n", "waves = [1, 2, 3]\n");
    let child = spawn_apply(&f, store.path(), std::process::Stdio::null);
    // Stop it while the canary (wave 1) is in flight.
    let started = std::time::Instant::now();
    while current(&f, "h1").as_deref() != Some("2.0.0") && started.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(1));
    assert_eq!(current(&f, "h2").as_deref(), Some("1.0.0"));
    let record = std::fs::read_to_string(store.path().join("rollouts/staging.json")).unwrap();
    assert!(record.contains("\"waves_done\": 1"), "{record}");
    // The resumed run keeps h2 in wave 2 and h3 in wave 3, rather than starting a new layout.
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("wave 2 (1 host(s)): h2"), "{}", r.stderr);
    assert!(r.stderr.contains("wave 3 (1 host(s)): h3"), "{}", r.stderr);
    let record = std::fs::read_to_string(store.path().join("rollouts/staging.json")).unwrap();
    assert!(record.contains("\"waves_done\": 3"), "{record}");
}

#[test]
fn an_unreachable_host_counts_against_max_failures() {
    let (f, _keys, store) = three_hosts("", "waves = [1, 2, 3]\n");
    let away = tempfile::tempdir().unwrap();
    std::fs::rename(f.root("h3"), away.path().join("h3")).unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("failed before the first wave"), "{}", r.stderr);
    assert_eq!(
        current(&f, "h1").as_deref(),
        Some("1.0.0"),
        "with max_failures = 0 nothing starts"
    );
}

#[test]
fn a_rollout_killed_during_its_bake_waits_out_the_rest_when_it_resumes() {
    let (f, _keys, store) = three_hosts("", "waves = [1, 2, 3]\nbake = \"3s\"\n");
    let mut child = spawn_apply(&f, store.path(), std::process::Stdio::null);
    let record = store.path().join("rollouts/staging.json");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&record)
        .unwrap_or_default()
        .contains("\"bake_deadline\": \"")
        && started.elapsed().as_secs() < 20
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL, in the middle of the canary's bake
    child.wait().unwrap();
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));
    assert_eq!(current(&f, "h2").as_deref(), Some("1.0.0"));
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("finishing the bake of the interrupted rollout"),
        "{}",
        r.stderr
    );
    assert_eq!(current(&f, "h3").as_deref(), Some("2.0.0"));
}

#[test]
fn a_new_rollout_waits_min_interval_after_the_last_one_ended() {
    let (f, _keys, store) = three_hosts("", "min_interval = \"1h\"\n");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 3, "changes wait: {}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("min_interval: the last rollout ended at"),
        "{}",
        r.stdout
    );
    for h in ["h1", "h2", "h3"] {
        assert!(current(&f, h).unwrap().ends_with("1.0.0"), "{h} untouched");
    }
    // The wait has an end: `apply --wait` would sleep until it, the report says when.
    assert!(r.stdout.contains("next may start 1h later"), "{}", r.stdout);
}

#[test]
fn a_host_over_host_limits_waits_and_plan_and_status_say_which_limit() {
    // Memory in use is always over 1%: h2 stays busy, the others go.
    let (f, _keys, store) = three_hosts("", "waves = [\"100%\"]\n");
    let hosts = std::fs::read_to_string(f.path().join("hosts/a.toml")).unwrap();
    // Only h2 is limited: it moves to an environment of its own with the limit.
    f.write(
        "hosts/a.toml",
        &hosts.replace(
            "name = \"h2\"\nenvironment = \"staging\"",
            "name = \"h2\"\nenvironment = \"busy\"",
        ),
    );
    f.write(
        "environments/staging.toml",
        "[runtimes]\ngreeter = \"2.0.0\"\n\n[rollout]\nwaves = [\"100%\"]\n",
    );
    f.write(
        "environments/busy.toml",
        "[runtimes]\ngreeter = \"2.0.0\"\n\n[rollout]\nhost_limits = { memory = \"1%\", cpu = \"1000%\" }\n",
    );
    f.commit("h2 is limited");

    let plan = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .arg("plan")
        .arg(f.path()));
    assert!(plan.stdout.contains("busy: memory"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("is over host_limits.memory 1%"),
        "{}",
        plan.stdout
    );

    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 3, "h2 waits: {}{}", r.stdout, r.stderr);
    assert!(current(&f, "h1").unwrap().ends_with("2.0.0"));
    assert!(current(&f, "h3").unwrap().ends_with("2.0.0"));
    assert!(
        current(&f, "h2").unwrap().ends_with("1.0.0"),
        "the busy host is untouched"
    );
    assert!(r.stdout.contains("h2"), "{}", r.stdout);

    let st = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["status", "--json"])
        .arg(f.path()));
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let h2 = v["environments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["hosts"].as_array().unwrap().iter())
        .find(|h| h["name"] == "h2")
        .unwrap()
        .clone();
    assert_eq!(h2["status"], "waiting", "{h2}");
    assert!(h2["reason"].as_str().unwrap().starts_with("busy: memory"), "{h2}");
}
