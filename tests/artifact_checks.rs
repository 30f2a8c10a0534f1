//! Which commands check which artifacts, and how a failure reads (DESIGN §3): `validate` and
//! `plan` check repository artifacts; `plan` also checks the URL artifacts it needs that the
//! store's cache holds, without the network; each failure points at the line of
//! `runtimes/<name>.toml` to fix. Real tarballs, real minisign keys, the real binary.

mod common;

use common::{Keys, TestFleet, apply, current, flotilla, real_artifact, run};

/// The line `--> FILE:LINE:COL` of rustc-style output names, and the text of that line.
fn pointed_line(stderr: &str, f: &TestFleet, file: &str) -> Option<String> {
    let at = stderr.split(&format!("--> {file}:")).nth(1)?;
    let line: usize = at.split(':').next()?.parse().ok()?;
    let text = std::fs::read_to_string(f.path().join(file)).ok()?;
    text.lines().nth(line - 1).map(str::to_owned)
}

/// A fleet whose runtime `greeter` 2.0.0 comes from a `file://` URL outside the repository
/// (signature beside it), signed by `keys`; environment staging wants it on `hosts`.
fn url_fleet(keys: &Keys, trusted: &Keys, hosts: &[&str]) -> (TestFleet, tempfile::TempDir) {
    let f = TestFleet::new();
    let sha = real_artifact(&f, keys, "greeter", "2.0.0");
    // Published outside the repository, as a URL artifact is.
    let mirror = tempfile::tempdir().unwrap();
    for name in ["greeter-2.0.0.tar.gz", "greeter-2.0.0.tar.gz.minisig"] {
        std::fs::rename(f.path().join("artifacts").join(name), mirror.path().join(name)).unwrap();
    }
    let url = format!("file://{}/greeter-2.0.0.tar.gz", mirror.path().display());
    write_fleet(&f, trusted, &url, &sha, hosts);
    (f, mirror)
}

fn write_fleet(f: &TestFleet, trusted: &Keys, url: &str, sha: &str, hosts: &[&str]) {
    f.write(
        "runtimes/greeter.toml",
        &format!(
            "description = \"greets\"\n\n[[version]]\nversion = \"2.0.0\"\nartifact = \"{url}\"\nsha256 = \"{sha}\"\n"
        ),
    );
    f.write("flotilla.toml", &common::fleet_toml_without_promotion(trusted));
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    let _ = std::fs::remove_file(f.path().join("environments/prod.toml"));
    let _ = std::fs::remove_dir_all(f.path().join("hosts"));
    for h in hosts {
        f.host(&format!("hosts/{h}.toml"), h, "staging", "");
    }
    f.commit("fleet");
}

#[test]
fn plan_checks_a_cached_url_artifact_it_needs_with_the_saved_signature() {
    let keys = Keys::new();
    let (f, _mirror) = url_fleet(&keys, &keys, &["h1"]);
    let store = tempfile::tempdir().unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(current(&f, "h1").as_deref(), Some("2.0.0"));

    // A second host needs the artifact, and the fleet now trusts another key only: the
    // artifact in the cache no longer passes, and plan says so before anyone applies.
    let other = Keys::new();
    let url = std::fs::read_to_string(f.path().join("runtimes/greeter.toml")).unwrap();
    let url = url
        .split("artifact = \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let sha = flotilla::resolve::sha256_hex(&std::fs::read(url.strip_prefix("file://").unwrap()).unwrap());
    write_fleet(&f, &other, &url, &sha, &["h1", "h2"]);
    let plan =
        |store: &std::path::Path| run(flotilla().arg("--state-dir").arg(store).arg("plan").arg(f.path()));
    // Checked with the signature saved when apply fetched it: the URL might serve a newer
    // one now, so this is a warning, and the plan goes on.
    let r = plan(store.path());
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("warning: runtime `greeter` version `2.0.0`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("signature by untrusted key"), "{}", r.stderr);
    assert!(
        r.stderr.contains("saved when apply last fetched it"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("h2"), "the plan is shown: {}", r.stdout);

    // A store whose cache does not hold the artifact: plan stays off the URL (apply checks).
    let fresh = tempfile::tempdir().unwrap();
    let r = plan(fresh.path());
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("untrusted"), "{}", r.stderr);

    // apply fetches and checks it again, and refuses the run before any host.
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("signature by untrusted key"), "{}", r.stderr);
    assert!(r.stdout.contains("no host was touched"), "{}", r.stdout);
    assert_eq!(current(&f, "h2"), None);
}

#[test]
fn validate_points_a_repository_artifact_failure_at_its_sha256_line() {
    let (f, keys) = common::signed_fleet("");
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    f.host("hosts/a.toml", "h1", "staging", "");
    // Rebuilt after the manifest pinned its sha256.
    real_artifact(&f, &keys, "greeter", "2.0.0");
    let mut bytes = std::fs::read(f.path().join("artifacts/greeter-2.0.0.tar.gz")).unwrap();
    bytes.extend_from_slice(&[0; 512]);
    std::fs::write(f.path().join("artifacts/greeter-2.0.0.tar.gz"), bytes).unwrap();
    f.commit("tampered");
    let r = run(flotilla().arg("validate").arg(f.path()));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("sha256 mismatch"), "{}", r.stderr);
    let line = pointed_line(&r.stderr, &f, "runtimes/greeter.toml");
    assert!(
        line.as_deref().is_some_and(|l| l.starts_with("sha256 = ")),
        "{line:?}\n{}",
        r.stderr
    );
    // The one for 2.0.0, not 1.0.0's.
    let text = std::fs::read_to_string(f.path().join("runtimes/greeter.toml")).unwrap();
    let at: usize = r
        .stderr
        .split("--> runtimes/greeter.toml:")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        text.lines()
            .take(at)
            .collect::<Vec<_>>()
            .join("\n")
            .contains("version = \"2.0.0\""),
        "{}",
        r.stderr
    );
}

/// A pull request that adds a version signed by a key it also adds to `[trust] keys`: with
/// the operator's keys pinned, `preview` says apply would refuse it, at the line to look at,
/// and still shows the plan (DESIGN §3, §8, §9).
#[test]
fn preview_checks_heads_artifacts_against_pinned_keys() {
    let (f, keys) = common::signed_fleet("");
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    let _ = std::fs::remove_file(f.path().join("environments/prod.toml"));
    f.write("flotilla.toml", &common::fleet_toml_without_promotion(&keys));
    f.host("hosts/a.toml", "h1", "staging", "");
    let base = f.commit("base");

    let mallory = Keys::new();
    let sha = real_artifact(&f, &mallory, "greeter", "3.0.0");
    let mut rt = std::fs::read_to_string(f.path().join("runtimes/greeter.toml")).unwrap();
    rt.push_str(&format!(
        "[[version]]\nversion = \"3.0.0\"\nartifact = \"artifacts/greeter-3.0.0.tar.gz\"\nsha256 = \"{sha}\"\n"
    ));
    f.write("runtimes/greeter.toml", &rt);
    let toml = std::fs::read_to_string(f.path().join("flotilla.toml")).unwrap();
    f.write(
        "flotilla.toml",
        &toml.replace("keys = [\"", &format!("keys = [\"{}\", \"", mallory.public())),
    );
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"3.0.0\"\n");
    let head = f.commit("head: greeter 3.0.0, signed by a key the PR trusts");

    let pinned = keys.dir.path().join("pinned.pub");
    std::fs::write(&pinned, format!("{}\n", keys.public())).unwrap();
    let store = tempfile::tempdir().unwrap();
    let preview = |format: &str, pin: bool| {
        let mut c = flotilla();
        c.arg("--state-dir")
            .arg(store.path())
            .args(["preview", "--base", &base, "--head", &head, "--format", format])
            .arg(f.path());
        if pin {
            c.env("FLOTILLA_TRUSTED_KEYS", &pinned);
        } else {
            c.env_remove("FLOTILLA_TRUSTED_KEYS");
        }
        run(&mut c)
    };
    let r = preview("json", false);
    assert_eq!(
        r.code, 0,
        "head's own keys trust its artifact: {}{}",
        r.stdout, r.stderr
    );

    let r = preview("json", true);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v["summary"].is_object(), "the plan is still there: {v:#}");
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("untrusted key"),
        "{errors:#?}"
    );
    assert_eq!(errors[0]["file"], "runtimes/greeter.toml");
    let line = errors[0]["line"].as_u64().unwrap() as usize;
    assert!(
        rt.lines()
            .nth(line - 1)
            .unwrap()
            .starts_with("artifact = \"artifacts/greeter-3.0.0"),
        "{line}"
    );

    let r = preview("markdown", true);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("> [!CAUTION]\n> **1 artifact(s) fail their checks"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("`runtimes/greeter.toml:{line}`")),
        "{}",
        r.stdout
    );
    let r = preview("text", true);
    assert!(r.stdout.contains("--> runtimes/greeter.toml:"), "{}", r.stdout);
}

/// A broken environment file does not hide a broken artifact (DESIGN §3: every problem in one
/// run); a broken `flotilla.toml` does, since its `[trust]` is what signatures are checked
/// against.
#[test]
fn a_manifest_problem_does_not_hide_an_artifact_problem() {
    let (f, keys) = common::signed_fleet("");
    f.write("flotilla.toml", &common::fleet_toml_without_promotion(&keys));
    let _ = std::fs::remove_file(f.path().join("environments/prod.toml"));
    f.write(
        "environments/staging.toml",
        "[runtimes]\ngreeter = \"2.0.0\"\n\n[rollout]\nwavez = [1]\n",
    );
    f.host("hosts/a.toml", "h1", "staging", "");
    let mut bytes = std::fs::read(f.path().join("artifacts/greeter-1.0.0.tar.gz")).unwrap();
    bytes.extend_from_slice(&[0; 512]);
    std::fs::write(f.path().join("artifacts/greeter-1.0.0.tar.gz"), bytes).unwrap();
    f.commit("two problems");
    for args in [vec!["validate"], vec!["plan"]] {
        let r = run(flotilla().args(&args).arg(f.path()));
        assert_eq!(r.code, 1, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("unknown field `wavez`"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.stderr.contains("sha256 mismatch"), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("--> runtimes/greeter.toml:"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("the manifests have 2 problems"),
            "{args:?}: {}",
            r.stderr
        );
    }

    // With flotilla.toml broken, its own problem is reported and artifacts are left alone.
    let toml = std::fs::read_to_string(f.path().join("flotilla.toml")).unwrap();
    f.write("flotilla.toml", &format!("{toml}\n[defaults]\nbogus = 1\n"));
    f.commit("flotilla.toml broken too");
    let r = run(flotilla().arg("validate").arg(f.path()));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("sha256 mismatch"), "{}", r.stderr);
}

/// `validate`, `plan` and `preview` open no URL a manifest names, `file://` included (an
/// unmerged pull request could point one at the controller's files, a FIFO, or the internal
/// network): a repository artifact whose signature is a URL `apply` never fetched is left to
/// `apply`, with a note. Here the URL names a file that does not exist: opening it would be
/// "no signature at …", exit 1.
#[test]
fn checks_without_the_network_open_no_url_a_manifest_names() {
    let (f, keys) = common::signed_fleet("");
    f.write("flotilla.toml", &common::fleet_toml_without_promotion(&keys));
    let _ = std::fs::remove_file(f.path().join("environments/prod.toml"));
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.host("hosts/a.toml", "h1", "staging", "");
    let base = f.commit("base");
    let rt = std::fs::read_to_string(f.path().join("runtimes/greeter.toml")).unwrap();
    let probe = "file:///nonexistent/flotilla-probe.minisig";
    f.write(
        "runtimes/greeter.toml",
        &rt.replace(
            "artifact = \"artifacts/greeter-2.0.0.tar.gz\"\n",
            &format!("artifact = \"artifacts/greeter-2.0.0.tar.gz\"\nsignature = \"{probe}\"\n"),
        ),
    );
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    let head = f.commit("head: a signature URL on the controller");
    let store = tempfile::tempdir().unwrap();
    let cmd = |args: &[&str]| {
        run(flotilla()
            .arg("--state-dir")
            .arg(store.path())
            .args(args)
            .arg(f.path()))
    };
    let r = cmd(&["validate"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("note: runtime `greeter` version `2.0.0`: its signature is a URL"),
        "{}",
        r.stderr
    );
    let r = cmd(&["plan"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("no signature"), "{}", r.stderr);
    let r = cmd(&["preview", "--base", &base, "--head", &head, "--format", "json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("no signature"), "{}", r.stdout);
    // apply opens it, and refuses the run.
    let r = common::apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("no signature at"), "{}", r.stderr);
}

/// `validate` (and `plan`, `preview`) add no artifact copy to the store's cache, only the
/// markers of checks that passed: a pull request's blobs cannot fill the cache's disk, and an
/// unchanged artifact is still not hashed again. `apply` keeps the copy it uploads.
#[test]
fn checks_without_apply_add_no_artifact_copy_to_the_cache() {
    let (f, keys) = common::signed_fleet("");
    f.write("flotilla.toml", &common::fleet_toml_without_promotion(&keys));
    let _ = std::fs::remove_file(f.path().join("environments/prod.toml"));
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    f.host("hosts/a.toml", "h1", "staging", "");
    f.commit("fleet");
    let store = tempfile::tempdir().unwrap();
    let cache = store.path().join("cache/artifacts");
    let copies = || -> Vec<String> {
        std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect()
    };
    let validate = || {
        run(flotilla()
            .arg("--state-dir")
            .arg(store.path())
            .arg("validate")
            .arg(f.path()))
    };
    for round in 0..2 {
        let r = validate();
        assert_eq!(r.code, 0, "round {round}: {}{}", r.stdout, r.stderr);
        assert_eq!(copies(), Vec::<String>::new(), "round {round}");
        assert!(
            std::fs::read_dir(cache.join("verified")).is_ok_and(|d| d.count() == 2),
            "a marker per version"
        );
    }
    let r = common::apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(copies().len(), 1, "apply keeps the copy it uploaded (2.0.0)");
}
