//! `flotilla watch` end to end (DESIGN §10): real Git repositories (a work tree, and a bare
//! remote over file://), hosts on the local transport, signed artifacts, the real binary, its
//! HTTP endpoints queried over loopback, SIGTERM. Each test says what a user would see.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestFleet, apply, flotilla, run, signed_fleet, wait_for};

/// A fleet with one `auto_apply` environment (`web`, hosts w1 and w2) and one without
/// (`db`, host d1), each managing a file; no promotion order.
fn fleet(web_content: &str) -> TestFleet {
    let (f, keys) = signed_fleet("");
    f.write("flotilla.toml", &common::fleet_toml_without_promotion(&keys));
    std::fs::remove_file(f.path().join("environments/staging.toml")).unwrap();
    std::fs::remove_file(f.path().join("environments/prod.toml")).unwrap();
    write_web(&f, web_content, "");
    f.write(
        "environments/db.toml",
        "[[file]]\npath = \"/etc/db.conf\"\ncontent = \"max = 1\\n\"\n",
    );
    f.host("hosts/web.toml", "w1", "web", "");
    f.host("hosts/web.toml", "w2", "web", "");
    f.host("hosts/db.toml", "d1", "db", "");
    f.commit("init");
    f
}

fn write_web(f: &TestFleet, content: &str, extra: &str) {
    f.write(
        "environments/web.toml",
        &format!(
            "auto_apply = true\n\n[[file]]\npath = \"/etc/web.conf\"\ncontent = \"{content}\\n\"\n{extra}"
        ),
    );
}

fn web_conf(f: &TestFleet, host: &str) -> Option<String> {
    std::fs::read_to_string(f.root(host).join("etc/web.conf")).ok()
}

fn watch_once(f: &TestFleet, store: &Path, extra: &[&str]) -> common::Run {
    run(flotilla()
        .arg("--state-dir")
        .arg(store)
        .args(["watch", "--once"])
        .args(extra)
        .arg(f.path()))
}

/// The person's first apply: approves the web environment's connection settings and commands.
fn person_applies(f: &TestFleet, store: &Path) {
    let r = apply(f, store, &["--env", "web"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

/// The usual start: `fleet("v = 1")`, with a store in which a person applied `web` once.
fn applied_fleet() -> (TestFleet, tempfile::TempDir) {
    let f = fleet("v = 1");
    let store = tempfile::tempdir().unwrap();
    person_applies(&f, store.path());
    (f, store)
}

#[test]
fn once_applies_a_new_content_revision_to_auto_apply_environments_only() {
    let (f, store) = applied_fleet();
    write_web(&f, "v = 2", "");
    let rev = f.commit("web v2");

    let r = watch_once(&f, store.path(), &[]);
    assert_eq!(
        r.code, 3,
        "db's changes wait for a person: {}{}",
        r.stdout, r.stderr
    );
    // The plan is logged before anything is applied.
    let plan_at = r.stdout.find("plan at ").expect("plan logged");
    let applied_at = r.stdout.find("w1: applied").expect("w1 applied");
    assert!(plan_at < applied_at, "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("new revision {}", &rev[..12])),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("db: auto_apply is off: changes wait for a person's `flotilla apply --env db`"),
        "{}",
        r.stdout
    );
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 2\n"));
    assert_eq!(web_conf(&f, "w2").as_deref(), Some("v = 2\n"));
    assert!(
        !f.root("d1").join("etc/db.conf").exists(),
        "db is left to a person"
    );

    let h = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["history", "--json", "--host", "w1"])
        .arg(f.path()));
    assert!(
        h.stdout.contains("\"actor\":\"watch:"),
        "watch applies are audited as watch: {}",
        h.stdout
    );
}

#[test]
fn a_revision_that_changes_commands_waits_for_a_person_and_then_goes() {
    let (f, store) = applied_fleet();
    write_web(
        &f,
        "v = 2",
        "on_change = \"touch /tmp/flotilla-watch-should-not-run\"\n",
    );
    f.commit("web v2 with an on_change command");

    let r = watch_once(&f, store.path(), &[]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("web: commands (hooks, on_change, health) changed since a person last applied web"),
        "{}",
        r.stdout
    );
    assert_eq!(
        web_conf(&f, "w1").as_deref(),
        Some("v = 1\n"),
        "nothing applied unattended"
    );

    person_applies(&f, store.path());
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 2\n"));
    write_web(
        &f,
        "v = 3",
        "on_change = \"touch /tmp/flotilla-watch-should-not-run\"\n",
    );
    f.commit("web v3, same command");
    let r = watch_once(&f, store.path(), &[]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        web_conf(&f, "w1").as_deref(),
        Some("v = 3\n"),
        "approved commands: applied"
    );
}

#[test]
fn an_invalid_revision_is_reported_and_never_applied() {
    let (f, store) = applied_fleet();
    f.write(
        "environments/web.toml",
        "auto_apply = true\n[rollout]\nwavez = [1]\n",
    );
    let bad = f.commit("typo");
    let r = watch_once(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "revision {} is invalid and will not be applied",
            &bad[..12]
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("environments/web.toml:3:1"),
        "file:line:col shown: {}",
        r.stdout
    );
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 1\n"));
}

#[test]
fn a_second_watch_waits_for_the_store_while_once_and_apply_are_refused_naming_the_holder() {
    let f = fleet("v = 1");
    let store = tempfile::tempdir().unwrap();
    let mut first = spawn_watch(&f, store.path(), &[]);
    wait_for("the first watch to hold the lock", 20, || {
        std::fs::read_to_string(store.path().join("lock")).is_ok_and(|t| t.contains("flotilla watch"))
    });
    let r = watch_once(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("flotilla watch"),
        "names the holder: {}",
        r.stderr
    );
    let a = apply(&f, store.path(), &[]);
    assert_eq!(
        a.code, 1,
        "apply beside watch is refused: {}{}",
        a.stdout, a.stderr
    );

    // A second long-running watch waits for the store, says so, and takes over when free.
    let port = common::sshd::free_port("127.0.0.1");
    let mut second = spawn_watch(&f, store.path(), &["--listen", &format!(":{port}")]);
    let status = || json_at(port, "/status");
    wait_for("the second watch to report the held store", 20, || {
        status()["store_problem"]
            .as_str()
            .is_some_and(|p| p.contains("flotilla watch"))
    });
    let (code, _) = stop(&mut first);
    assert_eq!(code, Some(0));
    wait_for("the second watch to take the store over", 30, || {
        let s = status();
        s["store_problem"].is_null() && s["last_cycle"].is_object()
    });
    let (code, out) = stop(&mut second);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("watch waits for it"), "{out}");
}

fn spawn_watch(f: &TestFleet, store: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .env("NO_COLOR", "1")
        .arg("--state-dir")
        .arg(store)
        .args(["watch", "--interval", "1s"])
        .args(extra)
        .arg(f.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch")
}

/// SIGTERM, then the exit status and everything the process printed.
fn stop(child: &mut Child) -> (Option<i32>, String) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let mut waited = 0;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(waited < 300, "watch did not exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    };
    let mut out = String::new();
    use std::io::Read as _;
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    (status.code(), out)
}

/// The JSON a running watch serves at `path`; null while it does not answer yet (the moments
/// before its server listens).
fn json_at(port: u16, path: &str) -> serde_json::Value {
    ureq::get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// Makes the hosts' roots absolute and commits: a remote's manifests are read from the mirror
/// in the store, where relative roots would point elsewhere.
fn absolute_roots(f: &TestFleet) {
    for file in ["hosts/web.toml", "hosts/db.toml"] {
        let text = std::fs::read_to_string(f.path().join(file)).unwrap();
        let root = format!("root = \"{}/roots/", f.path().display());
        f.write(file, &text.replace("root = \"roots/", &root));
    }
    f.commit("absolute roots");
}

/// Runs `git -C dir ARGS`; a failure fails the test with git's message.
fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn get(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(ureq::Error::StatusCode(c)) => (c, String::new()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

#[test]
fn a_commit_is_applied_while_watch_runs_and_the_endpoints_tell_the_story() {
    let (f, store) = applied_fleet();
    let port = common::sshd::free_port("127.0.0.1");
    let listen = format!(":{port}");
    let mut w = spawn_watch(&f, store.path(), &["--listen", &listen]);
    let base = format!("http://127.0.0.1:{port}");
    wait_for("/healthz", 20, || {
        ureq::get(&format!("{base}/healthz")).call().is_ok()
    });
    wait_for("the first cycle", 30, || get(&format!("{base}/readyz")).0 == 200);

    write_web(&f, "v = 2", "");
    let rev = f.commit("web v2");
    let started = std::time::Instant::now();
    wait_for("w2 to get v = 2", 30, || {
        web_conf(&f, "w2").as_deref() == Some("v = 2\n")
    });
    let took = started.elapsed();

    let (code, status) = get(&format!("{base}/status"));
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    wait_for("the status to name the new revision", 10, || {
        let (_, s) = get(&format!("{base}/status"));
        serde_json::from_str::<serde_json::Value>(&s).unwrap()["revision"] == rev.as_str()
    });
    let db = v["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "db")
        .unwrap()
        .clone();
    assert!(
        db["needs_person"].as_str().unwrap().contains("auto_apply is off"),
        "{db}"
    );

    let (code, metrics) = get(&format!("{base}/metrics"));
    assert_eq!(code, 200);
    for needle in [
        "flotilla_cycles_total",
        "flotilla_host_applies_total",
        &format!("flotilla_revision_info{{revision=\"{rev}\"}} 1"),
        "flotilla_hosts{environment=\"web\",status=\"converged\"} 2",
        "flotilla_window_open{environment=\"db\"} 1",
        "flotilla_cycle_duration_seconds_bucket",
        "flotilla_last_sync_timestamp_seconds",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    let (code, plan) = get(&format!("{base}/plan"));
    assert_eq!(code, 200);
    assert!(plan.contains("\"format_version\""), "{plan}");

    let (code, out) = stop(&mut w);
    assert_eq!(code, Some(0), "SIGTERM ends watch with 0:\n{out}");
    assert!(out.contains("stopping"), "{out}");
    eprintln!("commit → w2 converged in {took:?}");
}

#[test]
fn a_remote_is_followed_through_a_mirror_and_a_force_push_is_not() {
    let f = fleet("v = 1");
    // The manifests are read from the mirror, so host roots are absolute here.
    absolute_roots(&f);
    let store = tempfile::tempdir().unwrap();
    person_applies(&f, store.path());
    let remote = tempfile::tempdir().unwrap();
    git(remote.path(), &["init", "--bare", "--quiet", "-b", "main"]);
    let url = format!("file://{}", remote.path().display());
    git(f.path(), &["push", "--quiet", &url, "HEAD:refs/heads/main"]);
    write_web(&f, "v = 2", "");
    f.commit("web v2");
    git(f.path(), &["push", "--quiet", &url, "HEAD:refs/heads/main"]);

    let r = watch_once(&f, store.path(), &["--remote", &url]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 2\n"));
    assert!(
        store.path().join("cache/mirror.git").is_dir(),
        "the mirror lives in the store"
    );

    // A running watch follows fast-forwards only.
    let port = common::sshd::free_port("127.0.0.1");
    let mut w = spawn_watch(
        &f,
        store.path(),
        &["--remote", &url, "--listen", &format!(":{port}")],
    );
    let status = || json_at(port, "/status");
    wait_for("the first cycle", 30, || status()["last_cycle"].is_object());
    write_web(&f, "v = 3", "");
    f.commit("web v3");
    git(f.path(), &["push", "--quiet", &url, "HEAD:refs/heads/main"]);
    wait_for("v = 3 from the remote", 30, || {
        web_conf(&f, "w1").as_deref() == Some("v = 3\n")
    });
    // Rewrite history: a commit on top of the first one, force-pushed.
    git(f.path(), &["reset", "--quiet", "--hard", "HEAD~2"]);
    std::fs::write(f.path().join("roots/.keep"), "").ok();
    write_web(&f, "v = 666", "");
    let forced = f.commit("rewritten");
    git(
        f.path(),
        &["push", "--quiet", "--force", &url, "HEAD:refs/heads/main"],
    );
    wait_for("the force push to be reported", 30, || {
        status()["latest_problem"]
            .as_str()
            .is_some_and(|p| p.contains("force-pushed"))
    });
    assert_eq!(status()["latest"], forced.as_str());
    assert_eq!(
        web_conf(&f, "w1").as_deref(),
        Some("v = 3\n"),
        "the rewritten history is not applied"
    );
    let (code, out) = stop(&mut w);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("the branch was force-pushed"), "{out}");

    let r = watch_once(
        &f,
        store.path(),
        &["--remote", &format!("file://{}/nope", remote.path().display())],
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot fetch branch `main`"), "{}", r.stderr);
}

#[test]
fn watch_without_a_store_for_a_remote_says_how_to_fix_it() {
    let f = fleet("v = 1");
    let r = run(flotilla()
        .args(["watch", "--once", "--remote", "file:///nonexistent"])
        .arg(f.path()));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("--remote needs a store: pass --state-dir"),
        "{}",
        r.stderr
    );
}

#[test]
fn drift_made_by_hand_is_corrected_by_the_next_drift_check() {
    let (f, store) = applied_fleet();
    let mut w = spawn_watch(&f, store.path(), &["--drift-interval", "1s"]);
    std::fs::write(f.root("w1").join("etc/web.conf"), "edited by hand\n").unwrap();
    wait_for("the drift check to restore w1", 30, || {
        web_conf(&f, "w1").as_deref() == Some("v = 1\n")
    });
    let (code, out) = stop(&mut w);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("w1: applied"), "{out}");
}

#[test]
fn sigterm_during_a_bake_ends_watch_with_0_and_the_bake_is_remembered() {
    let (f, store) = applied_fleet();
    write_web(&f, "v = 2", "\n[rollout]\nwaves = [1, \"100%\"]\nbake = \"1h\"\n");
    f.commit("v2, baked for an hour after the canary");
    let mut w = spawn_watch(&f, store.path(), &[]);
    wait_for("the canary w1 to get v = 2", 30, || {
        web_conf(&f, "w1").as_deref() == Some("v = 2\n")
    });
    wait_for("the bake to be recorded", 30, || {
        std::fs::read_to_string(store.path().join("rollouts/web.json"))
            .is_ok_and(|t| t.contains("\"bake_deadline\": \"20"))
    });
    let started = std::time::Instant::now();
    let (code, out) = stop(&mut w);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM ends a bake promptly"
    );
    assert_eq!(
        web_conf(&f, "w2").as_deref(),
        Some("v = 1\n"),
        "wave 2 never started"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_the_revision() {
    let (f, store) = applied_fleet();
    write_web(&f, "v = 2", "");
    let rev = f.commit("web v2");
    let r = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["--log-format", "json", "watch", "--once"])
        .arg(f.path()));
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    let lines: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let plan = lines.iter().find(|l| l["event"] == "plan").expect("a plan event");
    assert_eq!(plan["revision"], rev.as_str());
    assert_eq!(plan["plan"]["revision"], rev.as_str());
    let applied = lines
        .iter()
        .find(|l| l["event"] == "host_applied" && l["host"] == "w1")
        .expect("w1's event");
    assert_eq!(applied["revision"], rev.as_str());
    assert_eq!(applied["environment"], "web");
    assert!(
        lines.iter().all(|l| l["time"].is_string()),
        "every line has a time"
    );
}

#[test]
fn a_paused_environment_is_not_applied_by_watch() {
    let (f, store) = applied_fleet();
    let p = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["pause", "--env", "web", "INC-9"])
        .arg(f.path()));
    assert_eq!(p.code, 0, "{}", p.stderr);
    write_web(&f, "v = 2", "");
    f.commit("web v2");
    let r = watch_once(&f, store.path(), &[]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("paused: INC-9"), "{}", r.stdout);
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 1\n"));
}

#[test]
fn an_ssh_remote_is_fetched_with_a_deploy_key_and_strict_host_keys() {
    if !common::sshd::available("an_ssh_remote_is_fetched_with_a_deploy_key_and_strict_host_keys") {
        return;
    }
    let lab = common::sshd::SshLab::start(1);
    let f = fleet("v = 1");
    absolute_roots(&f);
    let store = tempfile::tempdir().unwrap();
    person_applies(&f, store.path());
    let remote = lab.path().join("fleet.git");
    git(
        lab.path(),
        &["init", "--bare", "--quiet", "-b", "main", "fleet.git"],
    );
    write_web(&f, "v = 2", "");
    f.commit("web v2");
    git(
        f.path(),
        &[
            "push",
            "--quiet",
            &remote.display().to_string(),
            "HEAD:refs/heads/main",
        ],
    );
    let h = &lab.hosts[0];
    let url = format!("ssh://root@{}:{}{}", h.address, h.port, remote.display());
    let key = lab.client_key.display().to_string();

    // An unknown host key is never accepted.
    let empty = lab.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let r = watch_once(
        &f,
        store.path(),
        &[
            "--remote",
            &url,
            "--remote-identity",
            &key,
            "--remote-known-hosts",
            &empty.display().to_string(),
        ],
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("Host key verification failed"), "{}", r.stderr);
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 1\n"));

    let known = lab.known_hosts.display().to_string();
    let r = watch_once(
        &f,
        store.path(),
        &[
            "--remote",
            &url,
            "--remote-identity",
            &key,
            "--remote-known-hosts",
            &known,
        ],
    );
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        web_conf(&f, "w1").as_deref(),
        Some("v = 2\n"),
        "applied from the ssh:// remote"
    );
}

#[test]
fn a_host_whose_connection_settings_change_is_observed_through_a_new_session() {
    let (f, store) = applied_fleet();
    let port = common::sshd::free_port("127.0.0.1");
    let mut w = spawn_watch(
        &f,
        store.path(),
        &["--drift-interval", "1s", "--listen", &format!(":{port}")],
    );
    let plan = || json_at(port, "/plan");
    wait_for("the first plan", 30, || plan()["revision"].is_string());
    // w1 moves to a new, empty root: a connection change (watch waits for a person), and the
    // plan must be of the new root, not of a session kept open on the old one.
    std::fs::create_dir_all(f.root("w1-new")).unwrap();
    let hosts = std::fs::read_to_string(f.path().join("hosts/web.toml")).unwrap();
    f.write("hosts/web.toml", &hosts.replace("roots/w1\"", "roots/w1-new\""));
    let rev = f.commit("w1 moves");
    wait_for("a plan of the new revision", 30, || {
        plan()["revision"] == rev.as_str()
    });
    let p = plan();
    let w1 = p["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "w1")
        .unwrap()
        .clone();
    assert!(
        !w1["changes"].as_array().unwrap().is_empty(),
        "the new root lacks /etc/web.conf: {w1}"
    );
    assert!(
        !f.root("w1-new").join("etc/web.conf").exists(),
        "nothing applied unattended"
    );
    let (code, out) = stop(&mut w);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("connection settings changed since a person last applied web"),
        "{out}"
    );
}

#[test]
fn watch_leaves_a_busy_host_waiting_and_says_which_limit() {
    let (f, store) = applied_fleet();
    // Memory in use is always over 1%: both web hosts are busy.
    write_web(&f, "v = 2", "\n[rollout]\nhost_limits = { memory = \"1%\" }\n");
    f.commit("web v2, with a memory limit no host meets");
    let r = watch_once(&f, store.path(), &[]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("w1: waits, busy: memory"), "{}", r.stdout);
    assert!(r.stdout.contains("is over host_limits.memory 1%"), "{}", r.stdout);
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 1\n"));
}

#[test]
fn a_fix_after_an_invalid_revision_is_applied() {
    let (f, store) = applied_fleet();
    f.write(
        "environments/web.toml",
        "auto_apply = true\n[rollout]\nwavez = [1]\n",
    );
    f.commit("typo");
    assert_eq!(watch_once(&f, store.path(), &[]).code, 1);
    write_web(&f, "v = 2", "");
    f.commit("fixed");
    let r = watch_once(&f, store.path(), &[]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 2\n"));
}

#[test]
fn a_deleted_branch_and_a_corrupt_mirror_are_reported_or_repaired_never_a_crash() {
    let f = fleet("v = 1");
    absolute_roots(&f);
    let store = tempfile::tempdir().unwrap();
    person_applies(&f, store.path());
    let remote = tempfile::tempdir().unwrap();
    git(remote.path(), &["init", "--bare", "--quiet", "-b", "main"]);
    let url = format!("file://{}", remote.path().display());
    git(f.path(), &["push", "--quiet", &url, "HEAD:refs/heads/main"]);
    assert_eq!(
        watch_once(&f, store.path(), &["--remote", &url]).code,
        3,
        "db waits for a person"
    );

    // The mirror is damaged: it is cloned again, and the next revision applies.
    let mirror = store.path().join("cache/mirror.git");
    std::fs::remove_file(mirror.join("HEAD")).unwrap();
    std::fs::write(mirror.join("config"), "not a config").unwrap();
    write_web(&f, "v = 2", "");
    f.commit("web v2");
    git(f.path(), &["push", "--quiet", &url, "HEAD:refs/heads/main"]);
    let r = watch_once(&f, store.path(), &["--remote", &url]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 2\n"));

    // The branch is deleted on the remote: reported, nothing changes.
    git(remote.path(), &["update-ref", "-d", "refs/heads/main"]);
    let r = watch_once(&f, store.path(), &["--remote", &url]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("cannot fetch branch `main`"), "{}", r.stderr);
    assert!(r.stderr.contains("couldn't find remote ref"), "{}", r.stderr);
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 2\n"));
}

#[test]
fn a_running_watch_holds_a_paused_environment_and_goes_on_after_resume() {
    let (f, store) = applied_fleet();
    let cli = |args: &[&str]| {
        let r = run(flotilla()
            .arg("--state-dir")
            .arg(store.path())
            .args(args)
            .arg(f.path()));
        assert_eq!(r.code, 0, "{args:?}: {}{}", r.stdout, r.stderr);
    };
    cli(&["pause", "--env", "web", "INC-12"]);
    let port = common::sshd::free_port("127.0.0.1");
    let mut w = spawn_watch(&f, store.path(), &["--listen", &format!(":{port}")]);
    let status = || json_at(port, "/status");
    write_web(&f, "v = 2", "");
    let rev = f.commit("web v2");
    wait_for("a cycle of the new revision that finds web paused", 30, || {
        let s = status();
        s["revision"] == rev.as_str()
            && s["environments"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["name"] == "web" && e["paused"].is_string()))
    });
    // More cycles pass (paused changes are looked at again every interval, 1 s here).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 1\n"), "paused");
    cli(&["resume", "--env", "web"]);
    wait_for("w1 to get v = 2 after resume", 30, || {
        web_conf(&f, "w1").as_deref() == Some("v = 2\n")
    });
    let (code, out) = stop(&mut w);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("paused: INC-12"), "{out}");
}

/// A halted rollout stays halted for its revision (DESIGN §6.3): watch never retries it on
/// its own, even once the cause is gone; only `apply --retry REASON` does.
#[test]
fn watch_never_retries_a_rollout_halted_at_its_revision() {
    let (f, store) = applied_fleet();
    write_web(
        &f,
        "v = 2",
        "\n[rollout]\nwaves = [1, \"100%\"]\nmax_failures = 0\non_failure = \"halt\"\n",
    );
    f.commit("v = 2, halting on the first failure");
    // Both web hosts have a directory where the file goes: the first wave's host fails.
    for h in ["w1", "w2"] {
        let conf = f.root(h).join("etc/web.conf");
        std::fs::remove_file(&conf).unwrap();
        std::fs::create_dir(&conf).unwrap();
    }
    let r = watch_once(&f, store.path(), &[]);
    assert_ne!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.to_lowercase().contains("halt"), "{out}");
    // The cause is gone; the same revision is not tried again.
    for h in ["w1", "w2"] {
        let conf = f.root(h).join("etc/web.conf");
        std::fs::remove_dir(&conf).unwrap();
        std::fs::write(&conf, "v = 1\n").unwrap();
    }
    let r = watch_once(&f, store.path(), &[]);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains("--retry"), "says how to retry: {out}");
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 1\n"), "{out}");
    assert_eq!(web_conf(&f, "w2").as_deref(), Some("v = 1\n"), "{out}");
    // A person's retry starts it again.
    let r = apply(
        &f,
        store.path(),
        &["--env", "web", "--retry", "the directories are gone"],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(web_conf(&f, "w1").as_deref(), Some("v = 2\n"));
}
