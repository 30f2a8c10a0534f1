//! The SSH transport end to end: the real `flotilla` binary against real OpenSSH servers, one
//! `/usr/sbin/sshd` per loopback address (tests/common/sshd.rs), with generated host and client
//! keys and strict host key checking. Hosts share this machine through per-host roots.
//!
//! Without /usr/sbin/sshd these tests are skipped with a `SKIPPED name: why` line that
//! `cargo test` shows (written past libtest's capture), and fail where `CI` is set.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sshd::{self, SshLab};
use common::{Keys, Run, TestFleet, flotilla, run, signed_fleet};

/// A lab of `n` sshd, or None (after a message) where sshd is missing outside CI.
fn lab(test: &str, n: usize) -> Option<SshLab> {
    sshd::available(test).then(|| SshLab::start(n))
}

/// Host names of equal width, so plans fold them: h01, h02, ...
fn name(i: usize) -> String {
    format!("h{:02}", i + 1)
}

/// A signed fleet (greeter 1.0.0 and 2.0.0) whose defaults reach this lab over SSH, with one
/// environment `staging` (`env` is its whole text) and the given `[[host]]` tables. Returns
/// the fleet, its keys and the runtime's version tables (to append `[health]`/`[hooks]` to).
fn ssh_fleet(lab: &SshLab, env: &str, hosts: &str, runtime_extra: &str) -> (TestFleet, Keys, String) {
    let (f, keys) = signed_fleet("");
    let versions = std::fs::read_to_string(f.path().join("runtimes/greeter.toml")).expect("runtime");
    f.write("runtimes/greeter.toml", &format!("{versions}{runtime_extra}"));
    f.write("flotilla.toml", &lab.fleet_toml(&keys.public()));
    std::fs::remove_file(f.path().join("environments/prod.toml")).expect("drop prod");
    f.write("environments/staging.toml", env);
    f.write("hosts/lab.toml", hosts);
    f.commit("ssh fleet");
    (f, keys, versions)
}

/// `[[host]]` tables for the first `n` hosts of the lab, named h01...
fn lab_hosts(lab: &SshLab, n: usize) -> String {
    (0..n)
        .map(|i| lab.host_toml(i, &name(i), "staging", ""))
        .collect()
}

/// These tests are about one host's connection: an unreachable or refused host counts
/// against `max_failures` (DESIGN §6.3), so they allow failures, and the other hosts go on.
const TOLERANT: &str = "max_failures = \"100%\"\n";

fn env_text(version: &str, rollout: &str) -> String {
    format!(
        "[runtimes]\ngreeter = \"{version}\"\n\n[[file]]\npath = \"/etc/app.conf\"\ntemplate = true\ncontent = \"name = {{{{ host.name }}}}\\naddress = {{{{ host.address }}}}\\n\"\n\n[rollout]\n{rollout}"
    )
}

fn apply(f: &TestFleet, store: &Path, extra: &[&str]) -> Run {
    run(flotilla()
        .arg("--state-dir")
        .arg(store)
        .args(["apply", "--auto-approve"])
        .args(extra)
        .arg(f.path()))
}

fn plan(f: &TestFleet, store: &Path, extra: &[&str]) -> Run {
    run(flotilla()
        .arg("--state-dir")
        .arg(store)
        .arg("plan")
        .args(extra)
        .arg(f.path()))
}

/// `plan --format json`: its exit code and document.
fn plan_json(f: &TestFleet, store: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(extra);
    let r = plan(f, store, &args);
    let doc = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("plan JSON ({e}): {}\n{}", r.stdout, r.stderr));
    (r.code, doc)
}

fn host_entry<'a>(plan: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    plan["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["name"] == host)
        .unwrap_or_else(|| panic!("host {host} in the plan: {plan:#}"))
}

/// The plan's error for `host` (empty when it was observed).
fn host_error(plan: &serde_json::Value, host: &str) -> String {
    host_entry(plan, host)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn current(root: &Path) -> Option<String> {
    std::fs::read_link(root.join("opt/flotilla/runtimes/greeter/current"))
        .ok()
        .map(|p| p.display().to_string())
}

/// Runs the installed greeter through the `current` link, as the host would.
fn greeter_says(root: &Path) -> String {
    let out = Command::new(root.join("opt/flotilla/runtimes/greeter/current/bin/greeter"))
        .output()
        .expect("run greeter");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn state(root: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(root.join("var/lib/flotilla/state.json")).expect("state.json");
    serde_json::from_str(&text).expect("state.json is JSON")
}

fn has_pending(root: &Path) -> bool {
    !state(root)["pending"].is_null()
}

/// Nothing at all was written under a host root.
fn untouched(root: &Path) -> bool {
    std::fs::read_dir(root).expect("root exists").next().is_none()
}

fn both(r: &Run) -> String {
    format!("{}{}", r.stdout, r.stderr)
}

/// Runs one test of this binary again in a child process, with sshd pointed at a path that
/// does not exist, with or without `CI`.
fn run_without_sshd(test: &str, ci: bool) -> std::process::Output {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--test-threads", "1"])
        .env("FLOTILLA_TEST_SSHD", "/nonexistent/sshd")
        .env_remove("CI");
    if ci {
        c.env("CI", "true");
    }
    c.output().unwrap()
}

#[test]
fn a_missing_sshd_is_a_visible_skip_and_a_failure_under_ci() {
    let test = "harness_self_check_with_the_plain_ssh_client";
    // Outside CI: the test passes, and the skip is on the output `cargo test` prints (not
    // swallowed by libtest's capture, which keeps a passing test's eprintln! to itself).
    let out = run_without_sshd(test, false);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "SKIPPED {test}: /nonexistent/sshd is missing (apt-get install openssh-server) (with CI set this fails)"
        )),
        "{text}"
    );
    // Under CI: a failure that says why.
    let out = run_without_sshd(test, true);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "CI must never skip: {text}");
    assert!(
        text.contains("/nonexistent/sshd is missing") && text.contains("CI must never skip a test"),
        "{text}"
    );
}

#[test]
fn harness_self_check_with_the_plain_ssh_client() {
    let Some(mut lab) = lab("harness_self_check_with_the_plain_ssh_client", 2) else {
        return;
    };
    for i in 0..2 {
        let out = lab.ssh(i, "root", &lab.client_key, "echo ok; id -u");
        assert!(
            out.status.success(),
            "ssh into {}: {}{}",
            lab.hosts[i].address,
            String::from_utf8_lossy(&out.stderr),
            lab.hosts[i].log_text()
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n0\n");
    }
    let kh = std::fs::read_to_string(&lab.known_hosts).unwrap();
    assert!(
        kh.starts_with(&format!("[127.0.0.10]:{} ssh-ed25519 AAAA", lab.hosts[0].port)),
        "{kh}"
    );

    // A key that is not authorized is refused.
    let stranger = lab.keygen("stranger");
    let out = lab.ssh(0, "root", &stranger, "true");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // kill() drops open connections too, not only the listener.
    let mut long = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", lab.known_hosts.display()))
        .arg("-i")
        .arg(&lab.client_key)
        .args(["-p", &lab.hosts[1].port.to_string()])
        .arg(format!("root@{}", lab.hosts[1].address))
        .arg("echo started; sleep 30")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(long.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "started\n");
    let t = Instant::now();
    lab.hosts[1].kill();
    let status = long.wait().unwrap();
    assert!(!status.success());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the open connection dropped"
    );
    let out = lab.ssh(1, "root", &lab.client_key, "true");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Connection refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lab.ssh(0, "root", &lab.client_key, "true").status.success(),
        "the other host runs on"
    );

    lab.hosts[1].restart();
    assert!(lab.ssh(1, "root", &lab.client_key, "true").status.success());

    // A new host key no longer matches known_hosts; rewriting known_hosts trusts it again.
    lab.hosts[1].regenerate_host_key();
    let out = lab.ssh(1, "root", &lab.client_key, "true");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{err}");
    lab.write_known_hosts();
    assert!(lab.ssh(1, "root", &lab.client_key, "true").status.success());
}

#[test]
fn plan_apply_upgrade_and_rollback_across_five_hosts() {
    let Some(lab) = lab("plan_apply_upgrade_and_rollback_across_five_hosts", 5) else {
        return;
    };
    // Every host in one wave, and a failing host does not halt the others: all five roll back.
    let rollout = "waves = [\"100%\"]\nmax_parallel = 5\nmax_failures = \"100%\"\n";
    let (f, _keys, versions) = ssh_fleet(&lab, &env_text("1.0.0", rollout), &lab_hosts(&lab, 5), "");
    let store = tempfile::tempdir().unwrap();
    let store = store.path();

    let (code, p) = plan_json(&f, store, &["--detailed-exitcode"]);
    assert_eq!(code, 2, "{p:#}");
    assert_eq!(p["summary"]["hosts_total"], 5, "{p:#}");
    assert_eq!(p["summary"]["hosts_unreachable"], 0, "{p:#}");
    assert_eq!(p["summary"]["add"], 10, "a runtime and a file per host: {p:#}");
    for i in 0..5 {
        let h = host_entry(&p, &name(i));
        assert!(h["error"].is_null(), "{h:#}");
        assert_eq!(h["changes"].as_array().unwrap().len(), 2, "{h:#}");
    }
    let r = plan(&f, store, &[]);
    assert_eq!(r.code, 0, "{}", both(&r));
    assert!(
        r.stdout
            .ends_with("Plan: 10 to add, 0 to change, 0 to destroy.\n"),
        "{}",
        r.stdout
    );

    let r = apply(&f, store, &[]);
    assert_eq!(r.code, 0, "{}", both(&r));
    assert!(
        r.stdout
            .contains("Apply complete: 5 applied, 0 failed, 0 rolled back, 0 skipped."),
        "{}",
        r.stdout
    );
    for (i, h) in lab.hosts.iter().enumerate() {
        assert_eq!(current(&h.root).as_deref(), Some("1.0.0"), "{}", name(i));
        assert_eq!(greeter_says(&h.root), "1.0.0");
        assert_eq!(
            std::fs::read_to_string(h.root.join("etc/app.conf")).unwrap(),
            format!("name = {}\naddress = {}\n", name(i), h.address)
        );
        let s = state(&h.root);
        assert_eq!(s["host"], name(i).as_str());
        assert_eq!(s["runtimes"]["greeter"]["active"], "1.0.0");
        assert!(s["pending"].is_null(), "{s:#}");
    }
    let r = plan(&f, store, &["--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", both(&r));
    assert!(
        r.stdout
            .ends_with("No changes. The fleet matches the manifests.\n"),
        "{}",
        r.stdout
    );

    // 2.0.0 fails its health check on every host: each one is rolled back to 1.0.0.
    f.write(
        "runtimes/greeter.toml",
        &format!("{versions}[health]\ncommand = \"test \\\"$(./bin/greeter)\\\" = 1.0.0\"\n"),
    );
    f.write("environments/staging.toml", &env_text("2.0.0", rollout));
    f.commit("2.0.0, whose health check fails");
    let (code, p) = plan_json(&f, store, &["--detailed-exitcode"]);
    assert_eq!(code, 2, "{p:#}");
    assert_eq!(p["summary"]["change"], 5, "{p:#}");
    let r = apply(&f, store, &[]);
    assert_eq!(r.code, 1, "{}", both(&r));
    assert!(r.stdout.contains("5 rolled back"), "{}", both(&r));
    assert!(r.stderr.contains("health check of greeter 2.0.0"), "{}", r.stderr);
    for (i, h) in lab.hosts.iter().enumerate() {
        assert_eq!(
            current(&h.root).as_deref(),
            Some("1.0.0"),
            "{} rolled back",
            name(i)
        );
        assert_eq!(greeter_says(&h.root), "1.0.0");
        assert!(!has_pending(&h.root), "{}", name(i));
    }

    // A health check 2.0.0 passes: the upgrade goes through everywhere.
    f.write(
        "runtimes/greeter.toml",
        &format!("{versions}[health]\ncommand = \"./bin/greeter\"\n"),
    );
    f.commit("a health check that passes");
    let r = apply(&f, store, &[]);
    assert_eq!(r.code, 0, "{}", both(&r));
    assert!(r.stdout.contains("5 applied, 0 failed"), "{}", r.stdout);
    for h in &lab.hosts {
        assert_eq!(current(&h.root).as_deref(), Some("2.0.0"));
        assert_eq!(greeter_says(&h.root), "2.0.0");
    }
    let r = plan(&f, store, &["--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", both(&r));

    // Rolling back through the manifests.
    f.write("environments/staging.toml", &env_text("1.0.0", rollout));
    f.commit("back to 1.0.0");
    let r = apply(&f, store, &[]);
    assert_eq!(r.code, 0, "{}", both(&r));
    for h in &lab.hosts {
        assert_eq!(current(&h.root).as_deref(), Some("1.0.0"));
        assert_eq!(greeter_says(&h.root), "1.0.0");
    }
    let r = plan(&f, store, &["--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", both(&r));
    let h = run(flotilla()
        .arg("--state-dir")
        .arg(store)
        .args(["history", "--host", "h03"])
        .arg(f.path()));
    assert_eq!(h.code, 0, "{}", h.stderr);
    assert_eq!(h.stdout.matches("host-applied").count(), 3, "{}", h.stdout);
    assert_eq!(h.stdout.matches("rolled-back").count(), 1, "{}", h.stdout);
}

#[test]
fn an_unreachable_host_fails_the_run_and_the_others_are_planned_and_applied() {
    let Some(mut lab) = lab(
        "an_unreachable_host_fails_the_run_and_the_others_are_planned_and_applied",
        5,
    ) else {
        return;
    };
    let (f, _keys, _) = ssh_fleet(&lab, &env_text("1.0.0", TOLERANT), &lab_hosts(&lab, 5), "");
    let store = tempfile::tempdir().unwrap();
    let store = store.path();
    lab.hosts[2].kill();
    let down = &lab.hosts[2];

    let (code, p) = plan_json(&f, store, &[]);
    assert_eq!(code, 1, "{p:#}");
    assert_eq!(p["summary"]["hosts_unreachable"], 1, "{p:#}");
    assert_eq!(p["summary"]["add"], 8, "{p:#}");
    let err = host_error(&p, "h03");
    assert!(
        err.contains("h03") && err.contains(&down.address) && err.contains(&down.port.to_string()),
        "names the host, its address and port: {err}"
    );
    for i in [0, 1, 3, 4] {
        let h = host_entry(&p, &name(i));
        assert!(h["error"].is_null(), "{h:#}");
        assert_eq!(h["changes"].as_array().unwrap().len(), 2, "{h:#}");
    }
    let r = plan(&f, store, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("# host h03 could not be observed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Plan: 8 to add, 0 to change, 0 to destroy."),
        "{}",
        r.stdout
    );

    let r = apply(&f, store, &[]);
    assert_eq!(r.code, 1, "{}", both(&r));
    assert!(both(&r).contains("h03"), "{}", both(&r));
    for i in [0, 1, 3, 4] {
        assert_eq!(
            current(&lab.hosts[i].root).as_deref(),
            Some("1.0.0"),
            "{}",
            name(i)
        );
    }
    assert!(untouched(&lab.hosts[2].root), "nothing changed on h03");

    // Back up, the host converges and the fleet is clean.
    lab.hosts[2].restart();
    let r = apply(&f, store, &[]);
    assert_eq!(r.code, 0, "{}", both(&r));
    assert_eq!(current(&lab.hosts[2].root).as_deref(), Some("1.0.0"));
    let r = plan(&f, store, &["--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", both(&r));
}

#[test]
fn a_changed_host_key_is_refused_and_the_error_says_how_to_fix_it() {
    let Some(mut lab) = lab(
        "a_changed_host_key_is_refused_and_the_error_says_how_to_fix_it",
        2,
    ) else {
        return;
    };
    let (f, _keys, _) = ssh_fleet(&lab, &env_text("1.0.0", TOLERANT), &lab_hosts(&lab, 2), "");
    let store = tempfile::tempdir().unwrap();
    let store = store.path();
    let r = apply(&f, store, &[]);
    assert_eq!(r.code, 0, "{}", both(&r));

    lab.hosts[1].regenerate_host_key();
    let known = std::fs::read(&lab.known_hosts).unwrap();
    let h02_state = std::fs::read(lab.hosts[1].root.join("var/lib/flotilla/state.json")).unwrap();
    f.write("environments/staging.toml", &env_text("2.0.0", TOLERANT));
    f.commit("2.0.0");
    let (code, p) = plan_json(&f, store, &[]);
    assert_eq!(code, 1, "{p:#}");
    let err = host_error(&p, "h02");
    assert!(err.contains("h02"), "{err}");
    assert!(err.contains("host key"), "{err}");
    assert!(
        err.contains("ssh-keygen -R") || err.contains("ssh-keyscan"),
        "says how to fix it: {err}"
    );
    assert!(
        err.contains(&lab.known_hosts.display().to_string()),
        "names the known_hosts file: {err}"
    );
    assert!(host_entry(&p, "h01")["error"].is_null(), "{p:#}");

    let r = apply(&f, store, &[]);
    assert_eq!(r.code, 1, "{}", both(&r));
    assert!(both(&r).contains("host key"), "{}", both(&r));
    assert_eq!(current(&lab.hosts[0].root).as_deref(), Some("2.0.0"));
    assert_eq!(
        current(&lab.hosts[1].root).as_deref(),
        Some("1.0.0"),
        "nothing changed on h02"
    );
    assert_eq!(
        std::fs::read(lab.hosts[1].root.join("var/lib/flotilla/state.json")).unwrap(),
        h02_state,
        "h02's state.json untouched"
    );
    assert_eq!(
        std::fs::read(&lab.known_hosts).unwrap(),
        known,
        "known_hosts untouched"
    );
}

#[test]
fn an_unknown_host_key_is_never_accepted() {
    let Some(lab) = lab("an_unknown_host_key_is_never_accepted", 2) else {
        return;
    };
    // known_hosts names h01 only.
    let partial = lab.path().join("known_hosts_h01");
    let line = format!("{} {}\n", lab.hosts[0].known_hosts_name(), lab.hosts[0].host_pub);
    std::fs::write(&partial, &line).unwrap();
    let hosts = format!(
        "{}{}",
        lab.host_toml(
            0,
            "h01",
            "staging",
            &format!("known_hosts = \"{}\"", partial.display())
        ),
        lab.host_toml(
            1,
            "h02",
            "staging",
            &format!("known_hosts = \"{}\"", partial.display())
        )
    );
    let (f, _keys, _) = ssh_fleet(&lab, &env_text("1.0.0", TOLERANT), &hosts, "");
    let store = tempfile::tempdir().unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}", both(&r));
    let (_, p) = plan_json(&f, store.path(), &[]);
    let err = host_error(&p, "h02");
    assert!(
        err.contains("h02") && err.contains("host key") && err.contains("ssh-keyscan"),
        "{err}"
    );
    assert_eq!(current(&lab.hosts[0].root).as_deref(), Some("1.0.0"));
    assert!(untouched(&lab.hosts[1].root), "nothing changed on h02");
    assert_eq!(
        std::fs::read_to_string(&partial).unwrap(),
        line,
        "the unknown key was not added"
    );
}

#[test]
fn an_authentication_failure_names_the_user_and_the_identity_file() {
    let Some(lab) = lab(
        "an_authentication_failure_names_the_user_and_the_identity_file",
        1,
    ) else {
        return;
    };
    let stranger = lab.keygen("stranger_key");
    let other_root = lab.new_root("root-h02");
    let hosts = format!(
        "{}[[host]]\nname = \"h02\"\nenvironment = \"staging\"\naddress = \"{}\"\nport = {}\nroot = \"{}\"\nidentity_file = \"{}\"\n",
        lab.host_toml(0, "h01", "staging", ""),
        lab.hosts[0].address,
        lab.hosts[0].port,
        other_root.display(),
        stranger.display()
    );
    let (f, _keys, _) = ssh_fleet(&lab, &env_text("1.0.0", TOLERANT), &hosts, "");
    let store = tempfile::tempdir().unwrap();
    let (code, p) = plan_json(&f, store.path(), &[]);
    assert_eq!(code, 1, "{p:#}");
    let err = host_error(&p, "h02");
    assert!(err.contains("h02"), "{err}");
    assert!(err.to_lowercase().contains("authentication failed"), "{err}");
    assert!(
        err.contains("user") && err.contains("root"),
        "names the user: {err}"
    );
    assert!(
        err.contains(&stranger.display().to_string()),
        "names the identity file: {err}"
    );
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}", both(&r));
    assert_eq!(current(&lab.hosts[0].root).as_deref(), Some("1.0.0"));
    assert!(untouched(&other_root), "nothing changed on h02");

    // `--identity-file` overrides the manifests for every host.
    let key = lab.client_key.display().to_string();
    let (code, p) = plan_json(&f, store.path(), &["--identity-file", &key]);
    assert_eq!(code, 0, "{p:#}");
    assert!(host_entry(&p, "h02")["error"].is_null(), "{p:#}");
}

#[test]
fn bad_connection_settings_are_per_host_errors_that_name_the_setting() {
    let Some(lab) = lab(
        "bad_connection_settings_are_per_host_errors_that_name_the_setting",
        1,
    ) else {
        return;
    };
    let h = &lab.hosts[0];
    let closed_port = sshd::free_port(&h.address);
    let missing_key = lab.path().join("no_such_key");
    // A directory cannot be read as a file, even by root (whom file modes do not stop).
    let unreadable_kh = lab.path().join("hostkeys.d");
    std::fs::create_dir(&unreadable_kh).unwrap();
    let (missing_key, unreadable_kh) = (missing_key.display(), unreadable_kh.display());
    let (addr, port) = (&h.address, h.port);
    // Neutral host and root names, so that only the error itself can name the setting.
    // (host, the setting at fault, words the error must hold, the host's settings)
    let cases: [(&str, &str, Vec<String>, String); 5] = [
        (
            "bad1",
            "address",
            vec!["no-such-host.invalid".into(), "resolve".into()],
            "address = \"no-such-host.invalid\"\nport = 22\n".into(),
        ),
        (
            "bad2",
            "port",
            vec![closed_port.to_string(), "refused".into()],
            format!("address = \"{addr}\"\nport = {closed_port}\n"),
        ),
        (
            "bad3",
            "user",
            vec!["no-such-user".into(), "authentication failed".into()],
            format!("address = \"{addr}\"\nport = {port}\nuser = \"no-such-user\"\n"),
        ),
        (
            "bad4",
            "identity_file",
            vec![missing_key.to_string()],
            format!("address = \"{addr}\"\nport = {port}\nidentity_file = \"{missing_key}\"\n"),
        ),
        (
            "bad5",
            "known_hosts",
            vec![unreadable_kh.to_string()],
            format!("address = \"{addr}\"\nport = {port}\nknown_hosts = \"{unreadable_kh}\"\n"),
        ),
    ];
    let mut hosts = lab.host_toml(0, "ok", "staging", "");
    let mut roots = Vec::new();
    for (n, _, _, extra) in &cases {
        let root = lab.new_root(&format!("x{n}"));
        hosts.push_str(&format!(
            "\n[[host]]\nname = \"{n}\"\nenvironment = \"staging\"\nroot = \"{}\"\n{extra}",
            root.display()
        ));
        roots.push((*n, root));
    }
    let (f, _keys, _) = ssh_fleet(&lab, &env_text("1.0.0", TOLERANT), &hosts, "");
    let store = tempfile::tempdir().unwrap();
    let (code, p) = plan_json(&f, store.path(), &[]);
    assert_eq!(code, 1, "{p:#}");
    assert_eq!(p["summary"]["hosts_unreachable"], 5, "{p:#}");
    assert!(host_entry(&p, "ok")["error"].is_null(), "{p:#}");
    let mut wrong = Vec::new();
    for (host, setting, words, _) in &cases {
        let err = host_error(&p, host);
        let lower = err.to_lowercase();
        let missing: Vec<&str> = [*host, *setting]
            .into_iter()
            .chain(words.iter().map(String::as_str))
            .filter(|w| !lower.contains(&w.to_lowercase()))
            .collect();
        if !missing.is_empty() {
            wrong.push(format!("{host} (bad `{setting}`): lacks {missing:?} in: {err:?}"));
        }
    }
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}", both(&r));
    assert_eq!(
        current(&lab.hosts[0].root).as_deref(),
        Some("1.0.0"),
        "the good host applied"
    );
    for (n, root) in &roots {
        assert!(untouched(root), "nothing changed for {n}");
        assert!(both(&r).contains(n), "{n} named: {}", both(&r));
    }
    assert!(wrong.is_empty(), "per-host errors:\n{}", wrong.join("\n"));
}

#[test]
fn killing_sshd_mid_apply_the_host_finishes_by_itself_and_the_next_run_converges() {
    let Some(mut lab) = lab(
        "killing_sshd_mid_apply_the_host_finishes_by_itself_and_the_next_run_converges",
        2,
    ) else {
        return;
    };
    let rollout = "waves = [\"100%\"]\nmax_parallel = 2\non_failure = \"halt\"\n";
    let (f, _keys, _) = ssh_fleet(
        &lab,
        &env_text("2.0.0", rollout),
        &lab_hosts(&lab, 2),
        "[hooks]\nactivate = \"sleep 2\"\n",
    );
    let store = tempfile::tempdir().unwrap();
    let out = lab.path().join("apply.out");
    let err = lab.path().join("apply.err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .env("NO_COLOR", "1")
        .arg("--state-dir")
        .arg(store.path())
        .args(["apply", "--auto-approve"])
        .arg(f.path())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let root = lab.hosts[0].root.clone();
    let steps = || -> String {
        std::fs::read_dir(root.join("var/lib/flotilla/txn"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("steps")).ok())
            .collect()
    };
    let started = Instant::now();
    while !steps().contains("activate greeter") && started.elapsed() < Duration::from_secs(60) {
        if child.try_wait().unwrap().is_some() {
            panic!(
                "apply ended before the hook: {}{}",
                std::fs::read_to_string(&out).unwrap(),
                std::fs::read_to_string(&err).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        steps().contains("activate greeter"),
        "the transaction reached the hook"
    );
    lab.hosts[0].kill();

    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("apply hangs after sshd died");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&err).unwrap()
    );
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("h01"), "names the host: {text}");
    assert_eq!(
        current(&lab.hosts[1].root).as_deref(),
        Some("2.0.0"),
        "h02 applied"
    );

    // The on-host transaction ran on without its connection and finished.
    let started = Instant::now();
    while (has_pending(&root) || current(&root).as_deref() != Some("2.0.0"))
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!has_pending(&root), "{:#}", state(&root));
    assert_eq!(current(&root).as_deref(), Some("2.0.0"));

    lab.hosts[0].restart();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}", both(&r));
    let r = plan(&f, store.path(), &["--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", both(&r));
    for h in &lab.hosts {
        assert_eq!(current(&h.root).as_deref(), Some("2.0.0"));
        assert!(!has_pending(&h.root));
    }
}

/// Creates `user` (login shell sh, an unlocked account: without PAM sshd refuses locked ones)
/// and gives it a password-less sudo right or makes sure it has none.
fn test_user(user: &str, sudo_right: bool) {
    let exists = Command::new("id")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    if !exists {
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", user])
            .output()
            .expect("useradd");
        // Another test binary may have created it meanwhile.
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("already exists"),
            "useradd {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("usermod")
        .args(["-p", "*", user])
        .output()
        .expect("usermod");
    assert!(
        out.status.success(),
        "usermod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sudoers = Path::new("/etc/sudoers.d").join(user);
    if sudo_right {
        let tmp = sudoers.with_extension("tmp");
        std::fs::write(&tmp, format!("{user} ALL=(ALL) NOPASSWD: ALL\n")).unwrap();
        common::set_mode(&tmp, 0o440);
        std::fs::rename(&tmp, &sudoers).unwrap();
    } else {
        let _ = std::fs::remove_file(&sudoers);
    }
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn become_sudo_as_a_non_root_user_and_a_missing_sudo_right_is_a_clear_error() {
    let test = "become_sudo_as_a_non_root_user_and_a_missing_sudo_right_is_a_clear_error";
    if !Path::new("/usr/bin/sudo").is_file() {
        common::skip(test, "sudo is not installed (apt-get install sudo)");
        return;
    }
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        common::skip(test, "creating test users needs root");
        return;
    }
    let Some(lab) = lab(test, 1) else {
        return;
    };
    test_user("flotilla-test", true);
    test_user("flotilla-nosudo", false);
    // The harness's own check: both users log in, only one may sudo.
    let out = lab.ssh(0, "flotilla-test", &lab.client_key, "id -un; sudo -n id -u");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "flotilla-test\n0\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab.ssh(0, "flotilla-nosudo", &lab.client_key, "id -un; sudo -n true");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "flotilla-nosudo\n");
    assert!(!out.status.success());

    let nosudo_root = lab.new_root("root-nosudo");
    let hosts = format!(
        "{}[[host]]\nname = \"h02\"\nenvironment = \"staging\"\naddress = \"{}\"\nport = {}\nroot = \"{}\"\nuser = \"flotilla-nosudo\"\nbecome = \"sudo\"\n",
        lab.host_toml(0, "h01", "staging", "user = \"flotilla-test\"\nbecome = \"sudo\""),
        lab.hosts[0].address,
        lab.hosts[0].port,
        nosudo_root.display()
    );
    let (f, _keys, _) = ssh_fleet(&lab, &env_text("1.0.0", TOLERANT), &hosts, "");
    let store = tempfile::tempdir().unwrap();
    let (code, p) = plan_json(&f, store.path(), &[]);
    assert_eq!(code, 1, "{p:#}");
    assert!(host_entry(&p, "h01")["error"].is_null(), "{p:#}");
    let err = host_error(&p, "h02");
    assert!(
        err.contains("h02") && err.contains("flotilla-nosudo") && err.contains("sudo"),
        "{err}"
    );
    assert!(
        err.contains("password") || err.contains("sudo right"),
        "says sudo needs a password / no sudo right: {err}"
    );

    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}", both(&r));
    let root = &lab.hosts[0].root;
    assert_eq!(current(root).as_deref(), Some("1.0.0"));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(root.join("opt/flotilla/runtimes/greeter/1.0.0")).unwrap();
    assert_eq!(meta.uid(), 0, "installed as root through sudo");
    assert!(untouched(&nosudo_root), "nothing changed on h02");
    let r = plan(&f, store.path(), &["--detailed-exitcode", "--host", "h01"]);
    assert_eq!(r.code, 0, "{}", both(&r));
    // DESIGN 2.2: a file's owner defaults to the connecting user, sudo or not.
    let conf = std::fs::metadata(root.join("etc/app.conf")).unwrap();
    assert_eq!(
        conf.uid(),
        uid_of("flotilla-test"),
        "/etc/app.conf (no `owner`) belongs to the connecting user flotilla-test"
    );
}

#[test]
fn fan_out_to_fifty_hosts() {
    let Some(lab) = lab("fan_out_to_fifty_hosts", 50) else {
        return;
    };
    let rollout = "waves = [\"100%\"]\nmax_parallel = 50\n";
    let (f, _keys, _) = ssh_fleet(&lab, &env_text("1.0.0", rollout), &lab_hosts(&lab, 50), "");
    let store = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let (code, p) = plan_json(&f, store.path(), &["--parallel", "50"]);
    let plan_time = t.elapsed();
    assert_eq!(code, 0, "{p:#}");
    assert_eq!(p["summary"]["hosts_total"], 50, "{p:#}");
    assert_eq!(p["summary"]["hosts_unreachable"], 0, "{p:#}");
    assert_eq!(p["summary"]["add"], 100, "{p:#}");

    let t = Instant::now();
    let r = apply(&f, store.path(), &["--parallel", "50"]);
    let apply_time = t.elapsed();
    assert_eq!(r.code, 0, "{}", both(&r));
    assert!(
        r.stdout
            .contains("Apply complete: 50 applied, 0 failed, 0 rolled back, 0 skipped."),
        "{}",
        r.stdout
    );
    for (i, h) in lab.hosts.iter().enumerate() {
        assert_eq!(current(&h.root).as_deref(), Some("1.0.0"), "{}", name(i));
    }
    let t = Instant::now();
    let r = plan(&f, store.path(), &["--detailed-exitcode", "--parallel", "50"]);
    let noop_time = t.elapsed();
    assert_eq!(r.code, 0, "{}", both(&r));
    eprintln!("50 hosts: plan {plan_time:?}, apply {apply_time:?}, no-op plan {noop_time:?}");
}

#[test]
fn a_failing_canary_over_ssh_halts_the_rollout_and_rolls_back() {
    let Some(lab) = lab("a_failing_canary_over_ssh_halts_the_rollout_and_rolls_back", 3) else {
        return;
    };
    let hosts: String = (0..3)
        .map(|i| lab.host_toml(i, &name(i), "staging", if i == 0 { "canary = true" } else { "" }))
        .collect();
    let rollout = "waves = [1, \"100%\"]\nmax_failures = 0\non_failure = \"rollback\"\n";
    // 2.0.0 is unhealthy on the canary only.
    let health = "[health]\ncommand = \"test \\\"$FLOTILLA_HOST\\\" != h01 || test \\\"$FLOTILLA_VERSION\\\" = 1.0.0\"\n";
    let (f, _keys, _versions) = ssh_fleet(&lab, &env_text("1.0.0", rollout), &hosts, health);
    let store = tempfile::tempdir().unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}", both(&r));
    f.write("environments/staging.toml", &env_text("2.0.0", rollout));
    f.commit("2.0.0");
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}", both(&r));
    assert!(
        r.stderr.contains("h01: rolled back") && r.stderr.contains("HALTED"),
        "{}",
        both(&r)
    );
    for i in 0..3 {
        assert_eq!(
            current(&lab.hosts[i].root).as_deref(),
            Some("1.0.0"),
            "{}",
            name(i)
        );
        assert!(!has_pending(&lab.hosts[i].root));
    }
    assert!(
        r.stdout.contains("h02 skipped: the rollout in staging halted"),
        "{}",
        r.stdout
    );
}

/// The OpenSSH masters (`ssh -M -S SOCKET ... -p PORT ...`) on this machine that reach `port`,
/// with their pid and argv.
fn masters_for_port(port: u16) -> Vec<(u32, Vec<String>)> {
    let port = port.to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_ssh = args.first().is_some_and(|a| a == "ssh" || a.ends_with("/ssh"));
            let on_port = args.windows(2).any(|w| w[0] == "-p" && w[1] == port);
            (is_ssh && on_port && args.iter().any(|a| a == "-M")).then_some((pid, args))
        })
        .collect()
}

#[test]
fn a_killed_controller_leaves_no_ssh_master_behind_and_its_control_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    // A short bound, so the test need not wait the default two minutes. The master also
    // stays while the command it carries runs on the host (the hook, HOOK seconds).
    const PERSIST: u64 = 3;
    const HOOK: u64 = 4;
    let Some(lab) = lab(
        "a_killed_controller_leaves_no_ssh_master_behind_and_its_control_directory_is_private",
        1,
    ) else {
        return;
    };
    let (f, _keys, _) = ssh_fleet(
        &lab,
        &env_text("2.0.0", ""),
        &lab_hosts(&lab, 1),
        &format!("[hooks]\nactivate = \"sleep {HOOK}\"\n"),
    );
    let store = tempfile::tempdir().unwrap();
    let mut child = flotilla()
        .env("FLOTILLA_SSH_CONTROL_PERSIST", PERSIST.to_string())
        .arg("--state-dir")
        .arg(store.path())
        .args(["apply", "--auto-approve"])
        .arg(f.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let root = lab.hosts[0].root.clone();
    let steps = || -> String {
        std::fs::read_dir(root.join("var/lib/flotilla/txn"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("steps")).ok())
            .collect()
    };
    let started = Instant::now();
    while !steps().contains("activate greeter") && started.elapsed() < Duration::from_secs(60) {
        assert!(child.try_wait().unwrap().is_none(), "apply ended before the hook");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        steps().contains("activate greeter"),
        "the transaction reached the hook"
    );

    // Mid-session: one master, bounded, its control directory private.
    let masters = masters_for_port(lab.hosts[0].port);
    assert_eq!(masters.len(), 1, "{masters:?}");
    let (pid, args) = &masters[0];
    assert!(
        args.iter().any(|a| *a == format!("ControlPersist={PERSIST}s")),
        "the bound reaches ssh: {args:?}"
    );
    let socket = args
        .windows(2)
        .find(|w| w[0] == "-S")
        .map(|w| std::path::PathBuf::from(&w[1]))
        .expect("the master's control socket");
    // The socket is in the crate's `.ssh-connection*` directory inside Flotilla's control
    // directory, which must be private (0700): the socket is a logged-in connection.
    let control_dir = socket.parent().and_then(Path::parent).expect("control directory");
    let mode = std::fs::metadata(control_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is private", control_dir.display());

    // SIGKILL: the controller cannot close its master; the bound must.
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    while alive() && killed.elapsed() < Duration::from_secs(HOOK + PERSIST + 15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = !alive();
    if !gone {
        // Do not leave it behind for the next test.
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    assert!(
        gone,
        "the master of the killed controller still runs {:?} later",
        killed.elapsed()
    );
}
