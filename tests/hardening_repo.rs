//! An unmerged pull request is untrusted input to the machine that previews it (DESIGN §1):
//! each test commits an attack to a real Git repository (links, FIFOs, oversized files,
//! forged host state) and runs the real `flotilla` binary on it, working tree and `--rev`
//! alike. Nothing from outside the repository may be read or printed, and every refusal points
//! at the manifest line that caused it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, TestFleet, flotilla};

/// What a CI runner keeps outside the repository, and must never see in a plan.
const SECRET: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRET-KEY-MATERIAL-4242\n";

fn outside_secret() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("id_ed25519"), SECRET).unwrap();
    dir
}

fn link(target: &Path, at: &Path) {
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, at).unwrap();
}

/// Runs the binary, killing it when it takes longer than `limit` (a read of a FIFO or of
/// /dev/zero would hang forever).
fn run_bounded(cmd: &mut Command, limit: Duration) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flotilla");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flotilla did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn validate(f: &TestFleet, rev: Option<&str>) -> Run {
    let mut cmd = flotilla();
    cmd.arg("validate");
    if let Some(rev) = rev {
        cmd.args(["--rev", rev]);
    }
    cmd.arg(f.path());
    run_bounded(&mut cmd, Duration::from_secs(60))
}

fn plan(f: &TestFleet) -> Run {
    run_bounded(flotilla().arg("plan").arg(f.path()), Duration::from_secs(60))
}

/// A staging file whose content comes from `source`; the `source` line is line 9 of
/// environments/staging.toml.
fn with_source(f: &TestFleet, source: &str) {
    f.write(
        "environments/staging.toml",
        &format!(
            "[runtimes]\ngreeter = \"2.0.0\"\n\n[[file]]\npath = \"/etc/app.conf\"\ncontent = \"x\\n\"\n\n[[file]]\nsource = \"{source}\"\npath = \"/etc/leak\"\n"
        ),
    );
    f.host("hosts/staging.toml", "stg-01", "staging", "");
}

fn assert_no_secret(r: &Run) {
    assert!(
        !r.stdout.contains("SECRET-KEY-MATERIAL") && !r.stderr.contains("SECRET-KEY-MATERIAL"),
        "the secret leaked:\n{}\n{}",
        r.stdout,
        r.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// 1(a): a link in any component of a `source`, artifact or signature path.

#[test]
fn source_through_a_linked_directory_is_refused_in_the_working_tree() {
    let f = TestFleet::new();
    let secret = outside_secret();
    link(secret.path(), &f.path().join("keys"));
    with_source(&f, "keys/id_ed25519");
    f.commit("a pull request that links keys -> ~/.ssh");
    for r in [validate(&f, None), plan(&f)] {
        assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
        assert!(
            r.stderr
                .contains("`keys/id_ed25519` passes through a symlink: `keys`"),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("environments/staging.toml:9:10"),
            "points at the source line: {}",
            r.stderr
        );
        assert_no_secret(&r);
    }
}

#[test]
fn source_through_a_linked_directory_is_refused_at_a_revision() {
    let f = TestFleet::new();
    let secret = outside_secret();
    link(secret.path(), &f.path().join("keys"));
    with_source(&f, "keys/id_ed25519");
    let rev = f.commit("a pull request that links keys -> ~/.ssh");
    // The working tree no longer has the link: only the commit does.
    std::fs::remove_file(f.path().join("keys")).unwrap();
    let r = validate(&f, Some(&rev));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("`keys/id_ed25519` passes through a symlink: `keys`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("environments/staging.toml:9:10"),
        "{}",
        r.stderr
    );
    assert_no_secret(&r);
}

#[test]
fn links_to_proc_and_dev_are_refused_without_reading_them() {
    let f = TestFleet::new();
    link(Path::new("/proc"), &f.path().join("proc"));
    link(Path::new("/dev"), &f.path().join("dev"));
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/etc/env\"\nsource = \"proc/self/environ\"\n\n[[file]]\npath = \"/etc/zero\"\nsource = \"dev/zero\"\n",
    );
    f.host("hosts/staging.toml", "stg-01", "staging", "");
    f.commit("links to /proc and /dev");
    let r = run_bounded(
        flotilla()
            .env("FLOTILLA_CANARY_SECRET", "ENV-SECRET-31337")
            .arg("validate")
            .arg(f.path()),
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("`proc/self/environ` passes through a symlink: `proc`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("`dev/zero` passes through a symlink: `dev`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("environments/staging.toml:3:10"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("environments/staging.toml:7:10"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("ENV-SECRET-31337"), "{}", r.stderr);
}

#[test]
fn a_fifo_source_is_refused_and_validate_does_not_hang() {
    let f = TestFleet::new();
    std::fs::create_dir_all(f.path().join("files")).unwrap();
    let status = Command::new("mkfifo")
        .arg(f.path().join("files/pipe"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    with_source(&f, "files/pipe");
    let r = validate(&f, None);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("`files/pipe` is a FIFO, not a regular file"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("environments/staging.toml:9:10"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_oversized_source_is_refused_with_its_size() {
    let f = TestFleet::new();
    std::fs::create_dir_all(f.path().join("files")).unwrap();
    // Sparse: the size is what counts, not the bytes on disk.
    let big = std::fs::File::create(f.path().join("files/big")).unwrap();
    big.set_len((16 << 20) + 1).unwrap();
    with_source(&f, "files/big");
    let r = validate(&f, None);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("`files/big` is 16777217 bytes, more than the 16777216 Flotilla reads"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("environments/staging.toml:9:10"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_oversized_source_is_refused_at_a_revision() {
    let f = TestFleet::new();
    std::fs::create_dir_all(f.path().join("files")).unwrap();
    std::fs::write(f.path().join("files/big"), vec![b'a'; (16 << 20) + 1]).unwrap();
    with_source(&f, "files/big");
    let rev = f.commit("a 16 MiB + 1 source");
    let r = validate(&f, Some(&rev));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("`files/big` is 16777217 bytes"), "{}", r.stderr);
}

#[test]
fn artifact_and_signature_through_linked_directories_are_refused() {
    let f = TestFleet::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("greeter.tgz"), "not really").unwrap();
    std::fs::write(outside.path().join("greeter.tgz.minisig"), "not really").unwrap();
    link(outside.path(), &f.path().join("art"));
    f.write(
        "runtimes/other.toml",
        &format!(
            "[[version]]\nversion = \"1.0.0\"\nartifact = \"art/greeter.tgz\"\nsha256 = \"{}\"\nsignature = \"art/greeter.tgz.minisig\"\n",
            "3".repeat(64)
        ),
    );
    let rev = f.commit("artifacts behind a link");
    for r in [validate(&f, None), validate(&f, Some(&rev))] {
        assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
        assert!(
            r.stderr
                .contains("`art/greeter.tgz` passes through a symlink: `art`")
                && r.stderr.contains("runtimes/other.toml:3:12"),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr
                .contains("`art/greeter.tgz.minisig` passes through a symlink: `art`")
                && r.stderr.contains("runtimes/other.toml:5:13"),
            "{}",
            r.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1(b)i: a relative local root is confined to the fleet directory.

#[test]
fn a_relative_local_root_that_climbs_out_is_refused() {
    let f = TestFleet::new();
    f.write(
        "hosts/escape.toml",
        "[[host]]\nname = \"escape\"\nenvironment = \"staging\"\nroot = \"roots/../../../../..\"\n",
    );
    f.commit("root escapes");
    let r = validate(&f, None);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "host `escape`: relative `root` \"roots/../../../../..\" leads outside the fleet directory"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hosts/escape.toml:2:8"), "{}", r.stderr);
    // Inside the fleet, `..` is fine.
    f.write(
        "hosts/escape.toml",
        "[[host]]\nname = \"escape\"\nenvironment = \"staging\"\nroot = \"roots/a/../b\"\n",
    );
    let r = validate(&f, None);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

#[test]
fn a_relative_local_root_through_a_link_is_refused() {
    let f = TestFleet::new();
    link(Path::new("/"), &f.path().join("hostroots/slash"));
    f.write(
        "hosts/linked.toml",
        "[[host]]\nname = \"linked\"\nenvironment = \"staging\"\nroot = \"hostroots/slash/tmp\"\n",
    );
    let rev = f.commit("root through a link");
    for r in [validate(&f, None), validate(&f, Some(&rev))] {
        assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
        assert!(
            r.stderr
                .contains("host `linked`: `root` passes through a symlink: `hostroots/slash`"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("hosts/linked.toml:2:8"), "{}", r.stderr);
    }
}

// ---------------------------------------------------------------------------------------------
// 1(b)ii: a committed state.json cannot make the probe fetch a file's content.

fn state_json(host: &str, files: &[(&str, &str)]) -> String {
    let files: Vec<String> = files
        .iter()
        .map(|(p, sha)| format!("\"{p}\": {{\"sha256\": \"{sha}\", \"mode\": 420}}"))
        .collect();
    format!(
        "{{\"format_version\": 1, \"fleet\": \"acme\", \"host\": \"{host}\", \"revision\": null, \"applied_at\": \"2026-11-01T00:00:00Z\", \"store_id\": \"test\", \"epoch\": 1, \"files\": {{{}}}}}",
        files.join(", ")
    )
}

#[test]
fn a_forged_state_json_does_not_put_a_victim_file_in_the_plan() {
    let f = TestFleet::new();
    // The pull request adds a host whose root is committed, with a state.json that claims
    // Flotilla manages files the manifests do not desire. Their removal is planned, but their
    // content is never asked for, so it cannot reach the plan.
    f.write(
        "pr-root/etc/passwd",
        "root:x:0:0:VICTIM-PASSWD-SECRET:/root:/bin/sh\n",
    );
    f.write("pr-root/etc/shadow", "root:VICTIM-SHADOW-SECRET:19000::::::\n");
    f.write(
        "pr-root/var/lib/flotilla/state.json",
        &state_json(
            "victim",
            &[("/etc/passwd", &"a".repeat(64)), ("/etc/shadow", &"b".repeat(64))],
        ),
    );
    f.write(
        "hosts/victim.toml",
        "[[host]]\nname = \"victim\"\nenvironment = \"staging\"\nroot = \"pr-root\"\n",
    );
    f.commit("a pull request with a forged host state");
    for format in ["text", "json"] {
        let r = run_bounded(
            flotilla().args(["plan", "--format", format]).arg(f.path()),
            Duration::from_secs(60),
        );
        // Host state is never committed: validation refuses the host before it is read.
        assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
        assert!(
            r.stderr
                .contains("committed to the repository: `pr-root/var/lib/flotilla/state.json`"),
            "{}",
            r.stderr
        );
        assert!(
            !r.stdout.contains("VICTIM-") && !r.stderr.contains("VICTIM-"),
            "victim content in the plan:\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }
}

/// A pull request adds a `local` host with the absolute root `/`, whose `state_dir` is a
/// directory of the checkout holding a committed state.json. `victim` is a controller file
/// outside the repository that the manifests desire (with other content); `forged` says
/// whether the committed state.json claims Flotilla manages it.
fn pr_host_desiring(f: &TestFleet, victim: &Path, forged: bool) {
    let state_dir = f.path().join("pr-state");
    std::fs::create_dir_all(&state_dir).unwrap();
    if forged {
        let sha = "c".repeat(64);
        f.write(
            "pr-state/state.json",
            &state_json("victim", &[(victim.to_str().unwrap(), &sha)]),
        );
    }
    // An environment of its own, so the host desires nothing on this machine but the victim.
    f.write(
        "environments/pr.toml",
        "description = \"added by the pull request\"\n",
    );
    f.write(
        "hosts/victim.toml",
        &format!(
            "[[host]]\nname = \"victim\"\nenvironment = \"pr\"\nroot = \"/\"\nstate_dir = \"{}\"\n\n[[host.file]]\npath = \"{}\"\ncontent = \"attacker\\n\"\n",
            state_dir.display(),
            victim.display()
        ),
    );
    f.commit("a pull request that desires a controller file");
}

fn plan_formats(f: &TestFleet, store: Option<&Path>) -> Vec<(&'static str, Run)> {
    ["text", "json", "markdown"]
        .into_iter()
        .map(|format| {
            let mut cmd = flotilla();
            if let Some(store) = store {
                cmd.arg("--state-dir").arg(store);
            }
            cmd.args(["plan", "--host", "victim", "--format", format])
                .arg(f.path());
            (format, run_bounded(&mut cmd, Duration::from_secs(60)))
        })
        .collect()
}

/// A store directory with the given id, as `flotilla apply` would have made it.
fn store_with_id(id: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("id"),
        format!("{{\"format_version\":1,\"id\":\"{id}\"}}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("epoch"), "1").unwrap();
    dir
}

#[test]
fn a_forged_state_json_cannot_print_a_controller_file_the_manifests_desire() {
    let secret = outside_secret();
    let victim = secret.path().join("id_ed25519");
    let f = TestFleet::new();
    pr_host_desiring(&f, &victim, true);
    // The forged state.json is committed: validation refuses it before any host is read,
    // whatever store id it claims — without a store (a CI runner that previews pull
    // requests), with this runner's own store, and when it names that store's id (store ids
    // appear in plans, so a pull request can learn one).
    let store = store_with_id("ci-runner-store");
    for forged_id in ["victim-store", "ci-runner-store"] {
        let sha = "c".repeat(64);
        f.write(
            "pr-state/state.json",
            &state_json("victim", &[(victim.to_str().unwrap(), &sha)]).replace(
                "\"store_id\": \"test\"",
                &format!("\"store_id\": \"{forged_id}\""),
            ),
        );
        f.commit("forged state");
        for store in [None, Some(store.path())] {
            for (format, r) in plan_formats(&f, store) {
                assert_eq!(r.code, 1, "{format}: {}{}", r.stdout, r.stderr);
                assert!(
                    r.stderr
                        .contains("its state directory holds a file committed to the repository"),
                    "{format}: {}",
                    r.stderr
                );
                assert_no_secret(&r);
            }
        }
        let r = run_bounded(
            flotilla().args(["validate", "--rev", "HEAD"]).arg(f.path()),
            Duration::from_secs(60),
        );
        assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("pr-state/state.json"), "{}", r.stderr);
    }
}

#[test]
fn a_state_json_not_written_by_this_store_never_shows_old_content() {
    // The second line of defence, for a state.json that is not committed (planted on disk):
    // its content is trusted for diffs only when it carries this store's id.
    let secret = outside_secret();
    let victim = secret.path().join("id_ed25519");
    let f = TestFleet::new();
    pr_host_desiring(&f, &victim, false);
    let sha = "c".repeat(64);
    f.write(
        "pr-state/state.json",
        &state_json("victim", &[(victim.to_str().unwrap(), &sha)]),
    );
    std::fs::write(f.path().join(".git/info/exclude"), "pr-state/\n").unwrap();
    let store = store_with_id("ci-runner-store");
    for store in [None, Some(store.path())] {
        for (format, r) in plan_formats(&f, store) {
            assert_eq!(r.code, 0, "{format}: {}{}", r.stdout, r.stderr);
            let expected = match store {
                None => victim.to_str().unwrap(),
                Some(_) => "another store",
            };
            assert!(r.stdout.contains(expected), "{format}: {}", r.stdout);
            assert_no_secret(&r);
        }
    }
    let r = &plan_formats(&f, None)[0].1;
    assert!(r.stdout.contains("old content not shown"), "{}", r.stdout);
}

#[test]
fn taking_over_a_controller_file_never_prints_its_content() {
    // Without a state.json the file is a take-over: only its size and sha256 are observed.
    let secret = outside_secret();
    let victim = secret.path().join("id_ed25519");
    let f = TestFleet::new();
    pr_host_desiring(&f, &victim, false);
    for (format, r) in plan_formats(&f, None) {
        assert_eq!(r.code, 0, "{format}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains(victim.to_str().unwrap()), "{}", r.stdout);
        assert_no_secret(&r);
    }
    let r = &plan_formats(&f, None)[0].1;
    assert!(r.stdout.contains("take over existing file"), "{}", r.stdout);
}

#[test]
fn a_file_flotilla_wrote_still_shows_its_diff() {
    // The control for the tests above: when state.json was written by this store, the plan
    // shows the old content against the new.
    let f = TestFleet::new();
    f.host("hosts/staging.toml", "stg-01", "staging", "");
    f.converge(
        "stg-01",
        &[("greeter", "2.0.0")],
        &[("/etc/app.conf", "name = stg-01\nworkers = 4\n")],
    );
    f.commit("initial");
    let store = common::converged_store();
    let r = run_bounded(
        flotilla()
            .arg("--state-dir")
            .arg(store.path())
            .arg("plan")
            .arg(f.path()),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("- workers = 4"), "{}", r.stdout);
    assert!(r.stdout.contains("+ workers = 8"), "{}", r.stdout);
    // The same host planned without the store: the change, but not the old content.
    let r = plan(&f);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("- workers = 4"), "{}", r.stdout);
    assert!(r.stdout.contains("old content not shown"), "{}", r.stdout);
}

// ---------------------------------------------------------------------------------------------
// 10: identity_file and known_hosts never inside the repository, after `~` and links.

#[test]
fn identity_file_through_a_link_into_the_repository_is_refused() {
    let f = TestFleet::new();
    f.write("keys/id_ed25519", "committed key\n");
    let elsewhere = tempfile::tempdir().unwrap();
    link(&f.path().join("keys"), &elsewhere.path().join("innocent"));
    let id = elsewhere.path().join("innocent/id_ed25519");
    f.write(
        "environments/prod.toml",
        &format!(
            "[defaults]\nidentity_file = \"{}\"\n\n[runtimes]\ngreeter = \"1.0.0\"\n",
            id.display()
        ),
    );
    f.commit("identity through a link");
    let r = validate(&f, None);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("`identity_file` may not point inside the repository"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("environments/prod.toml:2:17"), "{}", r.stderr);
    assert!(r.stderr.contains("resolves to"), "{}", r.stderr);
}

#[test]
fn tilde_paths_with_home_inside_the_repository_are_refused() {
    let f = TestFleet::new();
    f.write("home/.ssh/known_hosts", "\n");
    f.write(
        "flotilla.toml",
        "[fleet]\nname = \"acme\"\n\n[defaults]\ntransport = \"local\"\nidentity_file = \"~/.ssh/id_ed25519\"\nknown_hosts = \"~/.ssh/known_hosts\"\n",
    );
    f.commit("HOME inside");
    let home = f.path().join("home");
    let r = run_bounded(
        flotilla().env("HOME", &home).arg("validate").arg(f.path()),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("`identity_file` may not point inside the repository")
            && r.stderr.contains("flotilla.toml:6:17"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("`known_hosts` may not point inside the repository")
            && r.stderr.contains("flotilla.toml:7:15"),
        "{}",
        r.stderr
    );
    // The same manifests with HOME elsewhere are fine.
    let away = tempfile::tempdir().unwrap();
    let r = run_bounded(
        flotilla().env("HOME", away.path()).arg("validate").arg(f.path()),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

// ---------------------------------------------------------------------------------------------
// 12 (part): manifest files that cannot be read are reported, not skipped.

#[test]
fn a_symlinked_manifest_file_is_reported() {
    let f = TestFleet::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("hosts.toml"),
        "[[host]]\nname = \"smuggled\"\nenvironment = \"staging\"\n",
    )
    .unwrap();
    link(
        &outside.path().join("hosts.toml"),
        &f.path().join("hosts/evil.toml"),
    );
    link(outside.path(), &f.path().join("hosts/evil-dir"));
    let rev = f.commit("symlinked manifests");
    for r in [validate(&f, None), validate(&f, Some(&rev))] {
        assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
        assert!(
            r.stderr
                .contains("hosts/evil.toml is a symlink, which Flotilla does not follow"),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr
                .contains("hosts/evil-dir is a symlink, which Flotilla does not follow"),
            "{}",
            r.stderr
        );
        assert!(!r.stdout.contains("smuggled"), "{}", r.stdout);
    }
}

#[test]
fn a_manifest_with_a_non_utf8_name_is_reported() {
    use std::os::unix::ffi::OsStrExt;
    let f = TestFleet::new();
    let name = std::ffi::OsStr::from_bytes(b"web-\xff.toml");
    std::fs::create_dir_all(f.path().join("hosts")).unwrap();
    std::fs::write(
        f.path().join("hosts").join(name),
        "[[host]]\nname = \"hidden\"\nenvironment = \"nowhere\"\n",
    )
    .unwrap();
    let r = validate(&f, None);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("hosts/web-\u{fffd}.toml has a name that is not UTF-8"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_fifo_manifest_is_reported_without_hanging() {
    let f = TestFleet::new();
    std::fs::create_dir_all(f.path().join("hosts")).unwrap();
    let status = Command::new("mkfifo")
        .arg(f.path().join("hosts/pipe.toml"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let r = validate(&f, None);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("hosts/pipe.toml is a FIFO, not a regular file"),
        "{}",
        r.stderr
    );
}

/// A fleet directory given as a path inside the repository that a commit made a link (say
/// `manifests -> /elsewhere`) is refused, working tree and `--rev` alike: Flotilla would
/// otherwise read, validate and plan a fleet from outside the repository under review.
#[test]
fn a_fleet_directory_linked_out_of_the_repository_is_refused() {
    let f = TestFleet::new();
    let elsewhere = TestFleet::new();
    link(elsewhere.path(), &f.path().join("manifests"));
    f.commit("a pull request that makes manifests a link");
    let dir = f.path().join("manifests");
    for rev in [None, Some("HEAD")] {
        for cmd in ["validate", "plan"] {
            let mut c = flotilla();
            c.arg(cmd);
            if let Some(rev) = rev {
                c.args(["--rev", rev]);
            }
            let r = run_bounded(c.arg(&dir), Duration::from_secs(60));
            assert_eq!(r.code, 1, "{cmd} {rev:?}: {}{}", r.stdout, r.stderr);
            assert!(
                r.stderr.contains("is a symbolic link inside the repository"),
                "{cmd} {rev:?}: {}",
                r.stderr
            );
        }
    }
    // The directory it points to, given directly, is that other fleet, and fine.
    let r = run_bounded(
        flotilla().arg("validate").arg(elsewhere.path()),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}
