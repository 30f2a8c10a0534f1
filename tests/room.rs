//! Room on the host (DESIGN §6.1), against real filesystems: a 40 MiB tmpfs as a host's root,
//! a real 30 MB signed tarball made with `tar`. The plan warns about a host without room for
//! the upload plus the unpacked files, apply refuses it before uploading (the others go on),
//! and an unpack that still runs out of room says so and leaves nothing behind. Mounting needs
//! root: elsewhere these tests skip visibly.

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Keys, TestFleet};
use flotilla::transaction::{Outcome, Upload};

/// A tmpfs mounted on a directory, unmounted when dropped (declare it after the `TestFleet`
/// it lives in, so it goes first).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `artifacts/big-1.0.0.tar.gz`: 30 MB of random bytes (gzip cannot shrink them) and a
/// script, made with the real `tar` and signed; returns its path and sha256.
fn big_artifact(f: &TestFleet, keys: &Keys) -> (PathBuf, String) {
    let src = tempfile::tempdir().unwrap();
    let mut payload = Vec::with_capacity(30_000_000);
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(30_000_000)
        .read_to_end(&mut payload)
        .unwrap();
    std::fs::write(src.path().join("payload"), payload).unwrap();
    std::fs::write(src.path().join("check"), "#!/bin/sh\nexit 0\n").unwrap();
    common::set_mode(&src.path().join("check"), 0o755);
    std::fs::create_dir_all(f.path().join("artifacts")).unwrap();
    let out = f.path().join("artifacts/big-1.0.0.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(src.path())
        .args(["check", "payload"])
        .status()
        .unwrap();
    assert!(st.success());
    keys.sign(&out);
    let sha = flotilla::resolve::sha256_hex(&std::fs::read(&out).unwrap());
    (out, sha)
}

/// A fleet whose environment `prod` wants runtime `big` 1.0.0 (the 30 MB artifact) on `hosts`.
fn fleet(hosts: &[&str]) -> (TestFleet, Keys, PathBuf, String) {
    let f = TestFleet::new();
    let keys = Keys::new();
    let (path, sha) = big_artifact(&f, &keys);
    f.write(
        "flotilla.toml",
        &format!(
            "[fleet]\nname = \"acme\"\n\n[defaults]\ntransport = \"local\"\n\n[trust]\nkeys = [\"{}\"]\n",
            keys.public()
        ),
    );
    std::fs::remove_file(f.path().join("runtimes/greeter.toml")).unwrap();
    std::fs::remove_file(f.path().join("environments/staging.toml")).unwrap();
    f.write(
        "runtimes/big.toml",
        &format!(
            "[[version]]\nversion = \"1.0.0\"\nartifact = \"artifacts/big-1.0.0.tar.gz\"\nsha256 = \"{sha}\"\n"
        ),
    );
    f.write("environments/prod.toml", "[runtimes]\nbig = \"1.0.0\"\n");
    for h in hosts {
        f.host("hosts/all.toml", h, "prod", "");
    }
    f.commit("big runtime");
    (f, keys, path, sha)
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn a_host_without_room_is_warned_about_in_the_plan_and_refused_by_apply_before_uploading() {
    let test = "a_host_without_room_is_warned_about_in_the_plan_and_refused_by_apply_before_uploading";
    let (f, _keys, _, _) = fleet(&["h1", "h2"]);
    let _tmpfs = match Tmpfs::mount(&f.root("h1"), "40m") {
        Ok(t) => t,
        Err(why) => return common::skip(test, &why),
    };
    // h1's root (runtimes and state alike) is one 40 MiB filesystem: the 30 MB upload and the
    // 30 MB it unpacks to cannot both fit. h2 has room.
    let plan = common::run(common::flotilla().arg("plan").arg(f.path()));
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    let warning = "warning: host h1 has 40 MiB free in /opt/flotilla/runtimes, needs 58 MiB for runtime big 1.0.0 (29 MiB upload into /var/lib/flotilla/staging and 29 MiB unpacked, one filesystem); free space there or make the artifact smaller";
    assert!(plan.stdout.contains(warning), "{}", plan.stdout);
    assert_eq!(plan.stdout.matches("warning: host").count(), 1, "{}", plan.stdout);

    let json = common::run(
        common::flotilla()
            .args(["plan", "--format", "json"])
            .arg(f.path()),
    );
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let warnings = |host: &str| -> Vec<String> {
        let h = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == host)
            .unwrap();
        serde_json::from_value(h["warnings"].clone()).unwrap()
    };
    assert_eq!(
        warnings("h1"),
        vec![warning.trim_start_matches("warning: ").to_owned()]
    );
    assert!(warnings("h2").is_empty());

    let store = tempfile::tempdir().unwrap();
    let apply = common::apply(&f, store.path(), &[]);
    assert_eq!(apply.code, 1, "{}{}", apply.stdout, apply.stderr);
    assert!(
        apply
            .stdout
            .contains("Apply failed: 1 applied, 1 failed, 0 rolled back, 0 skipped."),
        "{}",
        apply.stdout
    );
    assert!(
        apply.stdout.contains(
            "h1 failed (no room): not started, nothing uploaded: host h1 has 40 MiB free in /opt/flotilla/runtimes, needs 58 MiB"
        ),
        "{}",
        apply.stdout
    );
    // h1 untouched: not even a staging directory; h2 went on.
    assert_eq!(files_under(&f.root("h1")), Vec::<String>::new());
    let current = std::fs::read_link(f.root("h2").join("opt/flotilla/runtimes/big/current")).unwrap();
    assert_eq!(current, Path::new("1.0.0"));
    let audit = std::fs::read_to_string(store.path().join("audit.jsonl")).unwrap();
    let line = audit
        .lines()
        .find(|l| l.contains("\"host-failed\"") && l.contains("\"h1\""))
        .unwrap_or_else(|| panic!("no host-failed line for h1 in\n{audit}"));
    assert!(line.contains("needs 58 MiB for runtime big 1.0.0"), "{line}");
}

#[tokio::test]
async fn an_unpack_that_runs_out_of_room_names_the_cause_and_leaves_nothing_behind() {
    let test = "an_unpack_that_runs_out_of_room_names_the_cause_and_leaves_nothing_behind";
    let (f, _keys, path, sha) = fleet(&["h1"]);
    let _tmpfs = match Tmpfs::mount(&f.root("h1"), "40m") {
        Ok(t) => t,
        Err(why) => return common::skip(test, &why),
    };
    // The transaction itself, as the engine runs it, without apply's check of free space
    // (the case of space used up after the probe): the 30 MB upload fits, unpacking it does
    // not, and the log sits on the same full filesystem.
    let artifacts: BTreeMap<(String, String), Upload> = [(
        ("big".to_owned(), "1.0.0".to_owned()),
        Upload {
            sha256: sha.clone(),
            local_path: path,
        },
    )]
    .into_iter()
    .collect();
    let (report, txn) = common::apply_txn_once(&f, &artifacts).await;
    let Outcome::RolledBack(why) = &report.outcome else {
        panic!("expected a rollback, got {:?}", report.outcome);
    };
    assert!(
        why.starts_with("install big 1.0.0: unpacking failed: No space left on device in /opt/flotilla/runtimes (tar: payload: Wrote only"),
        "{why}"
    );
    assert!(
        why.contains(
            "the partial version and the upload were removed: free space there, or make the artifact smaller"
        ),
        "{why}"
    );
    // Nothing behind: no version, no partial unpack, no upload, no state; only the
    // transaction's journal, whose log now holds tar's messages.
    let root = f.root("h1");
    assert!(!root.join("opt/flotilla/runtimes/big").exists());
    assert_eq!(
        files_under(&root.join("var/lib/flotilla/staging")),
        Vec::<String>::new()
    );
    assert!(!root.join("var/lib/flotilla/state.json").exists());
    let log = std::fs::read_to_string(root.join(format!("var/lib/flotilla/txn/{txn}/log"))).unwrap();
    assert!(log.contains("tar: payload: Wrote only"), "{log}");
}
