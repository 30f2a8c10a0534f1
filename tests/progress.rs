//! The run as a person sees it (DESIGN §6.5): the on-host step of a host in flight arrives
//! while the host runs, and `-v` shows the end of each hook's, health check's and on_change's
//! output, never a sensitive file's. The real binary, real Git repositories and signed
//! tarballs, hosts under temp roots on the local transport.

mod common;

use std::io::{BufRead as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::sshd::{self, SshLab};
use common::{Keys, TestFleet, apply, flotilla, signed_fleet};

/// A health check that blocks until the test writes to the FIFO `$FLOTILLA_ROOT/gate`, then
/// says so: the host is in flight, in its health step, for as long as the test wants.
const GATED_HEALTH: &str = r#"[health]
command = "read x < \"$FLOTILLA_ROOT/gate\"; echo health-passed-the-gate"
"#;

fn gated_fleet() -> (TestFleet, Keys, tempfile::TempDir) {
    let (f, keys) = signed_fleet(GATED_HEALTH);
    f.host("hosts/a.toml", "h1", "staging", "");
    f.commit("initial");
    mkfifo(&f.root("h1").join("gate"));
    (f, keys, tempfile::tempdir().unwrap())
}

fn mkfifo(path: &std::path::Path) {
    let st = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(st.success(), "mkfifo {}", path.display());
}

/// A running apply whose stderr arrives line by line; on drop, the gate is opened (so the
/// host's health check never waits on a failed test) and the process is killed.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    gate: std::path::PathBuf,
    opened: bool,
}

impl Running {
    /// `flotilla --state-dir STORE EXTRA… apply --auto-approve FLEET`, whose host's health
    /// check waits on the FIFO `gate`.
    fn start(f: &TestFleet, store: &std::path::Path, extra: &[&str], gate: std::path::PathBuf) -> Running {
        let mut child = flotilla()
            .arg("--state-dir")
            .arg(store)
            .args(extra)
            .args(["apply", "--auto-approve"])
            .arg(f.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn flotilla");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stderr).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            gate,
            opened: false,
        }
    }

    /// Stderr lines until one satisfies `want` (returned last); fails after 60 s.
    fn until(&self, what: &str, want: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => {
                    let done = want(&l);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no {what} in stderr; it said:\n{}", seen.join("\n")),
            }
        }
    }

    /// Waits for the plain line of `host`'s on-host step `step`, and checks that it came while
    /// the host was in flight: no result of it yet, the apply still running. The lines until
    /// then.
    fn in_flight_at(&mut self, host: &str, step: &str) -> Vec<String> {
        let line = format!("  {host}: {step}");
        let before = self.until(&format!("on-host step `{step}`"), |l| l == line);
        let applied = format!("{host}: applied");
        assert!(
            !before.iter().any(|l| l.contains(&applied)),
            "{}",
            before.join("\n")
        );
        assert!(self.child.try_wait().unwrap().is_none(), "apply is still running");
        before
    }

    fn open_gate(&mut self) {
        if !self.opened {
            self.opened = true;
            // Opening a FIFO for writing waits for its reader: the health check.
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(&self.gate)
                .expect("gate");
            w.write_all(b"go\n").expect("write gate");
        }
    }

    /// Opens the gate, waits for the end; the exit code, the rest of stderr, and stdout.
    fn finish(mut self) -> (i32, Vec<String>, String) {
        self.open_gate();
        let mut stdout = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        // The reader thread may not have passed on the last lines yet (CI once missed the
        // final events): take lines until stderr's end, or 5 s without one (a process left
        // on a host may hold the pipe open).
        let mut rest = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(l);
        }
        (code, rest, stdout)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.opened {
            // A failed test: the health check may wait on the gate (on the host, in its own
            // session, so it outlives the apply). Opened from a thread left behind, since with
            // no check waiting the open would block.
            let gate = self.gate.clone();
            std::thread::spawn(move || {
                if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(gate) {
                    let _ = w.write_all(b"go\n");
                }
            });
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn with_v_the_on_host_step_arrives_while_the_host_is_in_flight() {
    let (f, _keys, store) = gated_fleet();
    let mut run = Running::start(&f, store.path(), &["-v"], f.root("h1").join("gate"));
    // The health check waits for the gate: this line can only come from the host while it
    // runs, not from the report at its end.
    let before = run.in_flight_at("h1", "health greeter 2.0.0");
    assert!(
        before.iter().any(|l| l == "  h1: install greeter 2.0.0"),
        "the steps before it were streamed too:\n{}",
        before.join("\n")
    );
    run.open_gate();
    let (code, rest, stdout) = run.finish();
    assert_eq!(code, 0, "{}\n{stdout}", rest.join("\n"));
    let rest = rest.join("\n");
    assert!(rest.contains("  h1: commit"), "the later steps follow:\n{rest}");
    assert!(rest.contains("  h1: applied"), "{rest}");
    assert!(stdout.contains("Apply complete: 1 applied"), "{stdout}");
}

#[test]
fn a_json_log_gets_the_on_host_steps_while_the_host_is_in_flight() {
    let (f, _keys, store) = gated_fleet();
    let mut run = Running::start(
        &f,
        store.path(),
        &["--log-format", "json"],
        f.root("h1").join("gate"),
    );
    let events = |lines: &[String]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect()
    };
    let before = run.until("a host_running event for the health step", |l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|e| {
            e["event"] == "host_running" && e["host"] == "h1" && e["step"] == "health greeter 2.0.0"
        })
    });
    assert!(
        !events(&before).iter().any(|e| e["event"] == "host_applied"),
        "{}",
        before.join("\n")
    );
    run.open_gate();
    let (code, rest, stdout) = run.finish();
    assert_eq!(code, 0, "{}\n{stdout}", rest.join("\n"));
    let after = events(&rest);
    assert!(
        after.iter().any(|e| e["event"] == "host_applied"),
        "{}",
        rest.join("\n")
    );
    // Without -v, no command output is asked for.
    assert!(
        !after.iter().any(|e| e["event"] == "host_output"),
        "{}",
        rest.join("\n")
    );
}

/// A fleet whose apply runs an activate hook, a health check, an on_change of a plain file and
/// one of a sensitive file, each printing a line of its own.
fn talkative_fleet() -> (TestFleet, Keys, tempfile::TempDir) {
    let (f, keys) = signed_fleet(
        r#"[health]
command = "echo health-said-hello; echo health-line-2"

[hooks]
activate = "echo activate-said-hi"
"#,
    );
    f.write(
        "environments/staging.toml",
        r#"[runtimes]
greeter = "2.0.0"

[[file]]
path = "/etc/app.conf"
content = "workers = 8\n"
on_change = "echo reloaded-app"

[[file]]
path = "/etc/token"
content = "s3cr3t-value\n"
mode = "0600"
sensitive = true
on_change = "echo SECRET-ONCHANGE-OUTPUT; cat \"$FLOTILLA_ROOT/etc/token\""
"#,
    );
    f.host("hosts/a.toml", "h1", "staging", "");
    f.commit("initial");
    (f, keys, tempfile::tempdir().unwrap())
}

#[test]
fn with_v_a_succeeding_hook_health_check_and_on_change_show_their_output() {
    let (f, _keys, store) = talkative_fleet();
    // -v is a global flag: given after the command here.
    let r = apply(&f, store.path(), &["-v"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let block = |label: &str, line: &str| {
        let head = format!("  h1: output of {label}:\n");
        let at = r
            .stderr
            .find(&head)
            .unwrap_or_else(|| panic!("no {head:?} in:\n{}", r.stderr));
        let body = &r.stderr[at + head.len()..];
        assert!(
            body.starts_with(&format!("    | {line}\n")),
            "{label}: {line:?} expected under it:\n{}",
            r.stderr
        );
    };
    block("activate hook of greeter 2.0.0", "activate-said-hi");
    block("health check of greeter 2.0.0", "health-said-hello");
    assert!(r.stderr.contains("    | health-line-2\n"), "{}", r.stderr);
    block("on_change /etc/app.conf", "reloaded-app");
    // After the host's result.
    let applied = r.stderr.find("h1: applied").expect("applied line");
    assert!(r.stderr.find("h1: output of").unwrap() > applied, "{}", r.stderr);
    // The sensitive file's on_change ran (its output stays in a root-only file on the host),
    // and nothing of it reached the terminal.
    for text in [&r.stdout, &r.stderr] {
        assert!(!text.contains("SECRET-ONCHANGE-OUTPUT"), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!text.contains("on_change /etc/token"), "{text}");
    }
    let audit = std::fs::read_to_string(store.path().join("audit.jsonl")).unwrap();
    assert!(!audit.contains("SECRET-ONCHANGE-OUTPUT") && !audit.contains("s3cr3t"));
}

#[test]
fn without_v_nothing_of_the_commands_output_or_on_host_steps_is_printed() {
    let (f, _keys, store) = talkative_fleet();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for quiet in [
        "activate-said-hi",
        "health-said-hello",
        "reloaded-app",
        "output of",
        "SECRET",
    ] {
        assert!(!r.stderr.contains(quiet), "{quiet}:\n{}", r.stderr);
        assert!(!r.stdout.contains(quiet), "{quiet}:\n{}", r.stdout);
    }
    assert!(!r.stderr.contains("h1: health greeter"), "{}", r.stderr);
    assert!(r.stderr.contains("h1: applied"), "{}", r.stderr);
}

#[test]
fn with_v_a_failing_health_checks_output_is_shown_and_the_host_rolls_back() {
    let (f, _keys) = signed_fleet("[health]\ncommand = \"echo health-is-sad; exit 3\"\nretries = 0\n");
    f.host("hosts/a.toml", "h1", "staging", "");
    f.commit("initial");
    let store = tempfile::tempdir().unwrap();
    let r = apply(&f, store.path(), &["-v"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("  h1: output of health check of greeter 2.0.0:\n    | health-is-sad\n"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("h1 rolled back"), "{}", r.stdout);
}

/// [`gated_fleet`] with its one host, h01, reached over SSH in `lab`.
fn gated_ssh_fleet(lab: &SshLab) -> (TestFleet, Keys) {
    let (f, keys) = signed_fleet(GATED_HEALTH);
    let trust = format!("[trust]\nkeys = [\"{}\"]\n", keys.public());
    let defaults = lab.defaults_toml();
    f.write(
        "flotilla.toml",
        &format!("[fleet]\nname = \"acme\"\n\n[defaults]\n{defaults}\n{trust}"),
    );
    std::fs::remove_file(f.path().join("environments/prod.toml")).unwrap();
    f.write("hosts/lab.toml", &lab.host_toml(0, "h01", "staging", ""));
    f.commit("ssh fleet");
    mkfifo(&lab.hosts[0].root.join("gate"));
    (f, keys)
}

#[test]
fn over_ssh_the_on_host_step_arrives_while_the_host_runs_and_v_shows_the_output() {
    const TEST: &str = "over_ssh_the_on_host_step_arrives_while_the_host_runs_and_v_shows_the_output";
    if !sshd::available(TEST) {
        return;
    }
    let lab = SshLab::start(1);
    let (f, _keys) = gated_ssh_fleet(&lab);
    let store = tempfile::tempdir().unwrap();
    let mut run = Running::start(&f, store.path(), &["-v"], lab.hosts[0].root.join("gate"));
    run.in_flight_at("h01", "health greeter 2.0.0");
    run.open_gate();
    let (code, rest, stdout) = run.finish();
    let rest = rest.join("\n");
    assert_eq!(code, 0, "{rest}\n{stdout}");
    assert!(
        rest.contains("  h01: output of health check of greeter 2.0.0:\n    | health-passed-the-gate"),
        "{rest}"
    );
}

/// The processes on this machine whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if argv.contains(needle) {
            found.push(format!("{}: {argv}", e.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn a_connection_dropped_while_steps_stream_leaves_the_host_to_finish_and_nothing_behind() {
    const TEST: &str = "a_connection_dropped_while_steps_stream_leaves_the_host_to_finish_and_nothing_behind";
    if !sshd::available(TEST) {
        return;
    }
    let mut lab = SshLab::start(1);
    let (f, _keys) = gated_ssh_fleet(&lab);
    let root = lab.hosts[0].root.clone();
    let store = tempfile::tempdir().unwrap();
    let mut run = Running::start(&f, store.path(), &["-v"], root.join("gate"));
    run.in_flight_at("h01", "health greeter 2.0.0");
    let txn_dir = std::fs::read_dir(root.join("var/lib/flotilla/txn"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let steps = txn_dir.join("steps").display().to_string();
    assert_eq!(
        processes_mentioning(&steps).len(),
        1,
        "one tail follows the steps"
    );
    // The connection drops mid-stream; the transaction runs on in its own session.
    lab.hosts[0].kill();
    run.open_gate();
    let (code, rest, stdout) = run.finish();
    let rest = rest.join("\n");
    assert_eq!(code, 1, "{rest}\n{stdout}");
    assert!(rest.contains("h01"), "names the host: {rest}");
    // `result` is written by one `printf >`: it exists (empty) a moment before it holds
    // its line, so wait for the whole line (CI once read it empty in between).
    common::wait_for("the host's transaction to finish", 60, || {
        std::fs::read_to_string(txn_dir.join("result")).is_ok_and(|r| r.ends_with('\n'))
    });
    assert_eq!(std::fs::read_to_string(txn_dir.join("result")).unwrap(), "ok\n");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("var/lib/flotilla/state.json")).unwrap())
            .unwrap();
    assert!(state["pending"].is_null(), "{state:#}");
    // The follower ends with the script that started it.
    common::wait_for("the step follower to end", 10, || {
        processes_mentioning(&steps).is_empty()
    });
}

#[test]
fn with_v_a_bakes_health_re_check_shows_its_output() {
    let (f, _keys) = signed_fleet("[health]\ncommand = \"echo \\\"health says $FLOTILLA_VERSION\\\"\"\n");
    f.write(
        "environments/staging.toml",
        "[runtimes]\ngreeter = \"2.0.0\"\n\n[rollout]\nbake = \"1s\"\n",
    );
    f.host("hosts/a.toml", "h1", "staging", "");
    f.commit("initial");
    let store = tempfile::tempdir().unwrap();
    let r = apply(&f, store.path(), &["-v"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let apply_check = "  h1: output of health check of greeter 2.0.0:\n    | health says 2.0.0\n";
    let re_check = "  h1: output of health check of greeter 2.0.0 (re-check):\n    | health says 2.0.0\n";
    let (a, b) = (r.stderr.find(apply_check), r.stderr.find(re_check));
    assert!(a.is_some() && b.is_some() && a < b, "{}", r.stderr);
    assert!(
        r.stderr.find("baking after wave 1") < b,
        "the re-check comes after the bake:\n{}",
        r.stderr
    );
}
