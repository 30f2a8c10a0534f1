//! Shared test fixtures: fleets written to temporary directories, committed with git2, and
//! host roots arranged as a real host would look after an apply.
#![allow(dead_code)]

pub mod pg;
pub mod sshd;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Skips a test this machine cannot run (no sshd, no sudo, not root), or fails it where the
/// environment variable `CI` is set: CI must never skip. The line goes straight to the
/// process's stderr, which libtest does not capture, so `cargo test` shows every skip even
/// though the test itself is reported `ok`.
#[track_caller]
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test} cannot run here: {why}; CI is set, and CI must never skip a test");
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {test}: {why} (with CI set this fails)"
    );
}

/// Hook text that records the hook's PID in `$FLOTILLA_ROOT/hook.pid`, then becomes `cmd`
/// (`exec`, so the PID stays that of the command): a test kills exactly that process and
/// never one it did not start.
pub fn recording_pid(cmd: &str) -> String {
    format!("echo $$ > \\\"$FLOTILLA_ROOT/hook.pid\\\"; exec {cmd}")
}

/// Sends SIGKILL to the process whose PID a hook wrote to `pid_file` (see [`recording_pid`]),
/// if it still runs `cmd`: a PID reused since by another process is left alone. Whether it
/// was found running `cmd` (and killed).
#[must_use]
pub fn kill_recorded(pid_file: &Path, cmd: &str) -> bool {
    let pid = std::fs::read_to_string(pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
    let pid = pid.trim();
    assert!(
        !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()),
        "{}: not a PID: {pid:?}",
        pid_file.display()
    );
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false; // already gone
    };
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    argv.join(" ") == cmd
        && Command::new("kill")
            .args(["-9", pid])
            .status()
            .is_ok_and(|s| s.success())
}

/// Polls `ready` every 20 ms until it holds; fails the test naming `what` after `secs`.
#[track_caller]
pub fn wait_for(what: &str, secs: u64, mut ready: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !ready() {
        assert!(
            started.elapsed().as_secs() < secs,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub const DEMO_KEY: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";

/// A fleet directory (also a Git repository) in a temp dir.
pub struct TestFleet {
    pub dir: tempfile::TempDir,
}

impl TestFleet {
    /// A small valid fleet: environments staging and prod, runtime `greeter` 1.0.0 and 2.0.0,
    /// hosts on the local transport with roots under `roots/`.
    pub fn new() -> TestFleet {
        let f = TestFleet {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        f.write(
            "flotilla.toml",
            "[fleet]\nname = \"acme\"\npromotion = [\"staging\", \"prod\"]\n\n[defaults]\ntransport = \"local\"\n",
        );
        f.write(
            "environments/staging.toml",
            "[runtimes]\ngreeter = \"2.0.0\"\n\n[[file]]\npath = \"/etc/app.conf\"\ntemplate = true\ncontent = \"name = {{ host.name }}\\nworkers = 8\\n\"\n",
        );
        f.write(
            "environments/prod.toml",
            "[runtimes]\ngreeter = \"1.0.0\"\n\n[rollout]\nwaves = [1, \"50%\"]\n",
        );
        f.write(
            "runtimes/greeter.toml",
            &format!(
                "[[version]]\nversion = \"1.0.0\"\nartifact = \"https://example.invalid/greeter-1.0.0.tgz\"\nsha256 = \"{}\"\n\n[[version]]\nversion = \"2.0.0\"\nartifact = \"https://example.invalid/greeter-2.0.0.tgz\"\nsha256 = \"{}\"\n",
                "1".repeat(64),
                "2".repeat(64)
            ),
        );
        f
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    /// Adds a host whose root is `roots/<name>` (created).
    pub fn host(&self, file: &str, name: &str, env: &str, extra: &str) {
        let root = format!("roots/{name}");
        std::fs::create_dir_all(self.path().join(&root)).expect("mkdir root");
        let p = self.path().join(file);
        let mut text = std::fs::read_to_string(&p).unwrap_or_default();
        text.push_str(&format!(
            "\n[[host]]\nname = \"{name}\"\nenvironment = \"{env}\"\nroot = \"{root}\"\n{extra}\n"
        ));
        self.write(file, &text);
    }

    pub fn root(&self, host: &str) -> PathBuf {
        self.path().join("roots").join(host)
    }

    /// `git init` (if needed), add everything, commit; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        let repo = git2::Repository::open(self.path())
            .or_else(|_| git2::Repository::init(self.path()))
            .expect("git init");
        std::fs::write(self.path().join(".gitignore"), "roots/\n").expect("gitignore");
        let mut index = repo.index().expect("index");
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .expect("add");
        index.update_all(["*"], None).expect("update");
        index.write().expect("write index");
        let tree = repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("find tree");
        let sig = git2::Signature::now("Test", "test@example.invalid").expect("sig");
        let parents: Vec<git2::Commit> = repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .expect("commit")
            .to_string()
    }

    /// Makes a host look as if Flotilla had installed `runtime` at `version` and written
    /// `files` (path, content) there, with a matching state.json.
    pub fn converge(&self, host: &str, runtimes: &[(&str, &str)], files: &[(&str, &str)]) {
        let root = self.root(host);
        let mut rt_json = Vec::new();
        for (rt, v) in runtimes {
            let dir = root.join("opt/flotilla/runtimes").join(rt);
            std::fs::create_dir_all(dir.join(v)).expect("mkdir version");
            let _ = std::fs::remove_file(dir.join("current"));
            std::os::unix::fs::symlink(v, dir.join("current")).expect("symlink");
            rt_json.push(format!(
                "\"{rt}\": {{\"active\": \"{v}\", \"previous\": null, \"sha256\": \"{}\"}}",
                "1".repeat(64)
            ));
        }
        let mut file_json = Vec::new();
        for (path, content) in files {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write file");
            set_mode(&p, 0o644);
            file_json.push(format!(
                "\"{path}\": {{\"sha256\": \"{}\", \"mode\": 420, \"took_over\": false}}",
                flotilla::resolve::sha256_hex(content.as_bytes())
            ));
        }
        let state = format!(
            "{{\"format_version\": 1, \"fleet\": \"acme\", \"host\": \"{host}\", \"revision\": null, \"applied_at\": \"2026-11-01T00:00:00Z\", \"store_id\": \"test\", \"epoch\": 1, \"runtimes\": {{{}}}, \"files\": {{{}}}}}",
            rt_json.join(", "),
            file_json.join(", ")
        );
        let sd = root.join("var/lib/flotilla");
        std::fs::create_dir_all(&sd).expect("mkdir state");
        std::fs::write(sd.join("state.json"), state).expect("write state");
    }
}

/// A store directory whose id is `test`, the `store_id` that [`TestFleet::converge`] writes
/// into state.json: a plan with `--state-dir` on it trusts those hosts' state.json (and shows
/// diffs of the files it lists).
pub fn converged_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("id"), "{\"format_version\":1,\"id\":\"test\"}").expect("write store id");
    std::fs::write(dir.path().join("epoch"), "1").expect("write store epoch");
    dir
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

thread_local! {
    /// Each test (libtest runs each on its own thread) gets its own default store location:
    /// every test fleet is named "acme", and a store shared between tests (or with the
    /// user's own `~/.local/state`) makes hosts of one test "owned by another store" in the
    /// next.
    static STATE_HOME: tempfile::TempDir = tempfile::tempdir().expect("temp state home");
}

/// The real `flotilla` binary, with colour and the environment kept out of the way.
pub fn flotilla() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    c.env("NO_COLOR", "1")
        .env_remove("FLOTILLA_STATE_DIR")
        .env_remove("FLOTILLA_STATE")
        .env_remove("FLOTILLA_LOG");
    STATE_HOME.with(|d| c.env("XDG_STATE_HOME", d.path()));
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("run flotilla");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A minisign key pair made by the real `minisign` CLI (no password).
pub struct Keys {
    pub dir: tempfile::TempDir,
}

impl Keys {
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(dir.path().join("k.pub"))
            .arg("-s")
            .arg(dir.path().join("k.sec"))
            .output()
            .expect("run minisign (apt-get install minisign)");
        assert!(
            st.status.success(),
            "minisign -G: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        Keys { dir }
    }

    /// The base64 public key line.
    pub fn public(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("k.pub")).expect("pub");
        text.lines().last().unwrap_or_default().trim().to_owned()
    }

    /// Signs `file` (prehashed, the default), writing `file.minisig`.
    pub fn sign(&self, file: &Path) {
        let st = Command::new("minisign")
            .args(["-S", "-s"])
            .arg(self.dir.path().join("k.sec"))
            .arg("-m")
            .arg(file)
            .output()
            .expect("minisign -S");
        assert!(
            st.status.success(),
            "minisign -S: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
}

/// Builds `artifacts/<runtime>-<version>.tar.gz` in the fleet with the real `tar`, holding
/// `bin/<runtime>` (prints the version) and `VERSION`; signs it; returns its sha256.
pub fn real_artifact(f: &TestFleet, keys: &Keys, runtime: &str, version: &str) -> String {
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(src.path().join("bin")).expect("mkdir");
    let bin = src.path().join("bin").join(runtime);
    std::fs::write(&bin, format!("#!/bin/sh\necho {version}\n")).expect("write");
    set_mode(&bin, 0o755);
    std::fs::write(src.path().join("VERSION"), format!("{version}\n")).expect("write");
    std::fs::create_dir_all(f.path().join("artifacts")).expect("mkdir");
    let out = f.path().join(format!("artifacts/{runtime}-{version}.tar.gz"));
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(src.path())
        .args(["bin", "VERSION"])
        .status()
        .expect("tar");
    assert!(st.success());
    keys.sign(&out);
    flotilla::resolve::sha256_hex(&std::fs::read(&out).expect("read"))
}

/// A fleet whose runtime `greeter` (1.0.0 and 2.0.0) has real, signed artifacts in the
/// repository, trusted through `[trust]`.
pub fn signed_fleet(runtime_extra: &str) -> (TestFleet, Keys) {
    let f = TestFleet::new();
    let keys = Keys::new();
    let mut rt = String::new();
    for v in ["1.0.0", "2.0.0"] {
        let sha = real_artifact(&f, &keys, "greeter", v);
        rt.push_str(&format!(
            "[[version]]\nversion = \"{v}\"\nartifact = \"artifacts/greeter-{v}.tar.gz\"\nsha256 = \"{sha}\"\n\n"
        ));
    }
    rt.push_str(runtime_extra);
    f.write("runtimes/greeter.toml", &rt);
    f.write(
        "flotilla.toml",
        &format!(
            "[fleet]\nname = \"acme\"\npromotion = [\"staging\", \"prod\"]\n\n[defaults]\ntransport = \"local\"\n\n[trust]\nkeys = [\"{}\"]\n",
            keys.public()
        ),
    );
    (f, keys)
}

/// A `flotilla.toml` for fleet "acme" on the local transport, trusting `keys`, with no
/// promotion order (environments wait on nothing but their own rules).
pub fn fleet_toml_without_promotion(keys: &Keys) -> String {
    format!(
        "[fleet]\nname = \"acme\"\n\n[defaults]\ntransport = \"local\"\n\n[trust]\nkeys = [\"{}\"]\n",
        keys.public()
    )
}

/// `flotilla --state-dir STORE apply --auto-approve EXTRA… FLEET`.
pub fn apply(f: &TestFleet, store: &Path, extra: &[&str]) -> Run {
    run(flotilla()
        .arg("--state-dir")
        .arg(store)
        .args(["apply", "--auto-approve"])
        .args(extra)
        .arg(f.path()))
}

/// Starts `flotilla apply --auto-approve` in the background.
pub fn spawn_apply(f: &TestFleet, store: &Path, output: fn() -> std::process::Stdio) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .env("NO_COLOR", "1")
        .arg("--state-dir")
        .arg(store)
        .args(["apply", "--auto-approve"])
        .arg(f.path())
        .stdout(output())
        .stderr(output())
        .spawn()
        .expect("spawn flotilla")
}

/// Where `greeter`'s `current` link points on a host, if anywhere.
pub fn current(f: &TestFleet, host: &str) -> Option<String> {
    std::fs::read_link(f.root(host).join("opt/flotilla/runtimes/greeter/current"))
        .ok()
        .map(|p| p.display().to_string())
}

/// Observes, plans and applies host h1 (the fleet's first host) once with one transaction,
/// as the engine would; returns the report and the transaction's id.
pub async fn apply_txn_once(
    fleet: &TestFleet,
    artifacts: &std::collections::BTreeMap<(String, String), flotilla::transaction::Upload>,
) -> (flotilla::transaction::Report, String) {
    use flotilla::plan::{self, HostInput, PlanInput};
    use flotilla::transaction::{self, Context};
    use flotilla::transport::{self, Target};
    let repo = flotilla::repo::FleetRepo::open(fleet.path(), None).unwrap();
    let loaded = flotilla::load::load(&repo).expect("valid fleet");
    let d = &loaded.desired[0];
    let target = Target::for_host(d, repo.fleet_dir());
    let mut session = transport::connect(&target).await.unwrap();
    let obs = flotilla::observe::observe(session.as_mut(), d, Some("test-store"), true, None)
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
    let cx = Context {
        fleet: &loaded.fleet,
        revision: None,
        store_id: "test-store",
        epoch: 1,
        now,
        artifacts,
        detail: Default::default(),
    };
    let txn = transaction::build(d, &obs, &p.hosts[0].changes, &cx);
    let report = transaction::run(session.as_mut(), d, &target.root, &txn, &|_| {})
        .await
        .unwrap();
    session.close().await.unwrap();
    (report, txn.id)
}

/// An event channel for a view that shows nothing: its task reads every event and ends with
/// the channel.
pub fn discard_events() -> (
    tokio::sync::mpsc::UnboundedSender<flotilla::rollout::Event>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    (
        tx,
        tokio::spawn(async move { while rx.recv().await.is_some() {} }),
    )
}
