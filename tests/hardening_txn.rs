//! Host transactions against hostile hosts and artifacts (DESIGN §1, §4, §6.1), on the local
//! transport with real host roots, tarballs built byte by byte with the tar crate, the real
//! `tar`, real FIFOs and links. The artifacts go to the transaction directly, past the
//! controller's inspection: what these tests check is the host's own defence.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestFleet;
use flotilla::transaction::{self, Outcome, Report, Upload};
use flotilla::transport::{self, Target};

/// One tarball entry: a regular file (content), a symlink (target), a FIFO or a directory.
enum E<'a> {
    File(&'a str, &'a str),
    Link(&'a str, &'a str),
    Fifo(&'a str),
    Dir(&'a str),
}

/// A .tar.gz of `entries`, each with `mtime` (seconds since 1970).
fn tgz(entries: &[E<'_>], mtime: u64) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        let (path, data): (&str, &[u8]) = match e {
            E::File(p, c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o755);
                (p, c.as_bytes())
            }
            E::Link(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_link_name(t).unwrap();
                (p, b"")
            }
            E::Fifo(p) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o644);
                (p, b"")
            }
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (p, b"")
            }
        };
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }
    let raw = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    gz.finish().unwrap()
}

/// A plain version: `./`, `bin/hello` printing the version.
fn plain(version: &str, mtime: u64) -> Vec<u8> {
    let hello = format!("#!/bin/sh\necho {version}\n");
    tgz(
        &[E::Dir("./"), E::Dir("./bin/"), E::File("./bin/hello", &hello)],
        mtime,
    )
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct World {
    fleet: TestFleet,
    artifacts: BTreeMap<(String, String), Upload>,
    _dir: tempfile::TempDir,
}

/// A fleet whose runtime `greeter` has the given versions (tarball bytes), host h1 with
/// `host_extra` settings, and `env` as the staging environment's manifest.
fn world(versions: &[(&str, Vec<u8>)], host_extra: &str, env: &str) -> World {
    let f = TestFleet::new();
    let dir = tempfile::tempdir().unwrap();
    let mut artifacts = BTreeMap::new();
    let mut rt = String::new();
    for (v, bytes) in versions {
        let path = dir.path().join(format!("greeter-{v}.tar.gz"));
        std::fs::write(&path, bytes).unwrap();
        let sha = flotilla::resolve::sha256_hex(bytes);
        rt.push_str(&format!("[[version]]\nversion = \"{v}\"\nartifact = \"https://example.invalid/{v}.tgz\"\nsha256 = \"{sha}\"\n\n"));
        artifacts.insert(
            ("greeter".to_owned(), (*v).to_owned()),
            Upload {
                sha256: sha,
                local_path: path,
            },
        );
    }
    f.write("runtimes/greeter.toml", &rt);
    f.write("environments/staging.toml", env);
    f.host("hosts/a.toml", "h1", "staging", host_extra);
    World {
        fleet: f,
        artifacts,
        _dir: dir,
    }
}

/// Observes, plans and applies host h1 once; returns the report and the transaction's id.
async fn apply_txn(w: &World) -> (Report, String) {
    common::apply_txn_once(&w.fleet, &w.artifacts).await
}

/// Rolls back transaction `txn` on h1 (what a halted rollout does).
async fn recover(w: &World, txn: &str) -> Report {
    let repo = flotilla::repo::FleetRepo::open(w.fleet.path(), None).unwrap();
    let loaded = flotilla::load::load(&repo).expect("valid fleet");
    let d = &loaded.desired[0];
    let target = Target::for_host(d, repo.fleet_dir());
    let mut session = transport::connect(&target).await.unwrap();
    let r = transaction::recover(session.as_mut(), d, txn).await.unwrap();
    session.close().await.unwrap();
    r
}

fn runtime_dir(w: &World) -> PathBuf {
    w.fleet.root("h1").join("opt/flotilla/runtimes/greeter")
}

/// Version directories and anything else in the runtime directory, `current` left out.
fn entries(w: &World) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(runtime_dir(w))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "current")
        .collect();
    v.sort();
    v
}

fn env_version(v: &str) -> String {
    format!("[runtimes]\ngreeter = \"{v}\"\n")
}

fn mkfifo(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let st = std::process::Command::new("mkfifo").arg(p).status().unwrap();
    assert!(st.success());
}

/// The host lock is free: nothing jams it.
fn lock_is_free(w: &World) -> bool {
    std::process::Command::new("flock")
        .args(["-n", "-E", "99"])
        .arg(w.fleet.root("h1").join("var/lib/flotilla/lock"))
        .arg("true")
        .status()
        .unwrap()
        .success()
}

#[tokio::test]
async fn an_unpacked_version_holding_a_fifo_or_an_escaping_link_is_refused_and_nothing_switches() {
    let t = now_secs();
    let hello = "#!/bin/sh\necho bad\n";
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "2.0.0",
            tgz(
                &[E::Dir("./"), E::File("./bin/hello", hello), E::Fifo("./bin/pipe")],
                t,
            ),
            "bin/pipe",
        ),
        (
            "2.0.1",
            tgz(
                &[
                    E::Dir("./"),
                    E::File("./bin/hello", hello),
                    E::Link("./etc", "/etc"),
                ],
                t,
            ),
            "etc",
        ),
        (
            "2.0.2",
            tgz(
                &[
                    E::Dir("./"),
                    E::Dir("./share/"),
                    E::Link("./share/up", "../../../../root"),
                ],
                t,
            ),
            "share/up",
        ),
        // Each link stays inside as text; resolved, `q` climbs out through `p`.
        (
            "2.0.3",
            tgz(
                &[E::Dir("./"), E::Link("./p", "."), E::Link("./q", "p/p/p/..")],
                t,
            ),
            "q",
        ),
    ];
    let mut versions = vec![("1.0.0", plain("1.0.0", t))];
    versions.extend(bad.iter().map(|(v, b, _)| (*v, b.clone())));
    let w = world(&versions, "", &env_version("1.0.0"));
    assert_eq!(apply_txn(&w).await.0.outcome, Outcome::Applied);
    for (v, _, entry) in &bad {
        w.fleet.write("environments/staging.toml", &env_version(v));
        let (r, _) = apply_txn(&w).await;
        assert!(
            matches!(&r.outcome, Outcome::RolledBack(why)
                if why.contains(&format!("install greeter {v}")) && why.contains(entry) && why.contains("refused")),
            "{v}: {r:?}"
        );
        assert_eq!(
            common::current(&w.fleet, "h1").as_deref(),
            Some("1.0.0"),
            "{v}: nothing switched"
        );
        assert_eq!(
            entries(&w),
            ["1.0.0"],
            "{v}: no version directory, no .incoming left"
        );
    }
}

#[tokio::test]
async fn unpacked_files_reach_the_disk_before_the_commit_names_them() {
    // A power cut cannot be staged here; the step log shows the order: the unpacked version
    // is flushed (`sync` of its files and directories) before the commit writes state.json.
    let w = world(
        &[("1.0.0", plain("1.0.0", now_secs()))],
        "",
        &env_version("1.0.0"),
    );
    let (r, _) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    let pos = |s: &str| r.steps.iter().position(|x| x == s);
    let flushed = pos("unpacked and flushed greeter 1.0.0").expect("flush step");
    let commit = pos("commit").expect("commit step");
    assert!(flushed < commit, "{:?}", r.steps);
}

#[tokio::test]
async fn pruning_follows_the_install_order_not_the_mtimes_a_tarball_sets() {
    let year_2100 = 4_102_444_800;
    let w = world(
        &[
            ("1.0.0", plain("1.0.0", year_2100)),
            ("2.0.0", plain("2.0.0", now_secs())),
            ("3.0.0", plain("3.0.0", 1)),
            ("4.0.0", plain("4.0.0", now_secs())),
        ],
        "keep_versions = 3",
        &env_version("1.0.0"),
    );
    for v in ["1.0.0", "2.0.0", "3.0.0", "4.0.0"] {
        w.fleet.write("environments/staging.toml", &env_version(v));
        let (r, _) = apply_txn(&w).await;
        assert_eq!(r.outcome, Outcome::Applied, "{v}: {r:?}");
    }
    // 4.0.0 active, 3.0.0 previous (kept for a rollback), and the most recently installed
    // other: 2.0.0. 1.0.0's directory claims to be from 2100; it was installed first.
    assert_eq!(entries(&w), ["2.0.0", "3.0.0", "4.0.0"]);
}

#[tokio::test]
async fn a_fifo_at_a_managed_path_or_in_staging_fails_the_host_within_the_timeout_and_frees_the_lock() {
    let t = now_secs();
    let w = world(
        &[("1.0.0", plain("1.0.0", t))],
        "command_timeout = \"3s\"",
        "[runtimes]\ngreeter = \"1.0.0\"\n\n[[file]]\npath = \"/etc/app.conf\"\ncontent = \"x = 1\\n\"\n",
    );
    let root = w.fleet.root("h1");
    // A FIFO in staging named as the artifact's record of which version it is.
    let sha = &w.artifacts[&("greeter".to_owned(), "1.0.0".to_owned())].sha256;
    let planted = root.join(format!("var/lib/flotilla/staging/{sha}.for"));
    mkfifo(&planted);
    let started = Instant::now();
    let (r, _) = apply_txn(&w).await;
    assert!(started.elapsed() < Duration::from_secs(30), "did not hang");
    assert!(
        matches!(&r.outcome, Outcome::RolledBack(why)
            if why.contains(&format!("staging/{sha}.for is not a regular file")) && why.contains("remove it")),
        "{r:?}"
    );
    assert!(lock_is_free(&w), "the host lock is released");
    assert!(
        std::fs::symlink_metadata(&planted).unwrap().file_type().is_fifo(),
        "left as it was"
    );
    assert_eq!(common::current(&w.fleet, "h1"), None, "nothing switched");
    std::fs::remove_file(&planted).unwrap();

    // A FIFO at the managed path.
    mkfifo(&root.join("etc/app.conf"));
    let started = Instant::now();
    let (r, _) = apply_txn(&w).await;
    assert!(started.elapsed() < Duration::from_secs(30), "did not hang");
    assert!(
        matches!(&r.outcome, Outcome::RolledBack(why) if why.contains("/etc/app.conf") && why.contains("regular files only")),
        "{r:?}"
    );
    assert!(lock_is_free(&w), "the host lock is released");
    std::fs::remove_file(root.join("etc/app.conf")).unwrap();
    assert_eq!(
        apply_txn(&w).await.0.outcome,
        Outcome::Applied,
        "the next apply gets the lock"
    );
}

const RESOLV: &str = "[[file]]\npath = \"/etc/resolv.conf\"\ncontent = \"nameserver 10.0.0.53\\n\"\n";

#[tokio::test]
async fn a_symlink_taken_over_comes_back_as_the_link_on_rollback_and_on_removal() {
    let w = world(&[("1.0.0", plain("1.0.0", now_secs()))], "", RESOLV);
    let root = w.fleet.root("h1");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    // The link's target is a FIFO: following it to back it up would block.
    mkfifo(&root.join("run/resolv.conf"));
    std::os::unix::fs::symlink("../run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
    let is_the_link = || {
        std::fs::symlink_metadata(root.join("etc/resolv.conf"))
            .unwrap()
            .file_type()
            .is_symlink()
            && std::fs::read_link(root.join("etc/resolv.conf")).unwrap() == Path::new("../run/resolv.conf")
    };
    let fifo_intact = || {
        std::fs::symlink_metadata(root.join("run/resolv.conf"))
            .unwrap()
            .file_type()
            .is_fifo()
    };

    let (r, a) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
        "nameserver 10.0.0.53\n"
    );
    assert!(
        !std::fs::symlink_metadata(root.join("etc/resolv.conf"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(fifo_intact(), "the link's target was not written through");

    // The rollout halts and rolls the host back: the link comes back as a link.
    let r = recover(&w, &a).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    assert!(is_the_link(), "restored as the link it was");
    assert!(fifo_intact());

    // Applied again, then dropped from the manifests: the original (the link) comes back.
    assert_eq!(apply_txn(&w).await.0.outcome, Outcome::Applied);
    w.fleet.write("environments/staging.toml", "");
    let (r, _) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");
    assert!(
        is_the_link(),
        "removal restores the taken-over link, not a deletion"
    );
    assert!(fifo_intact());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("var/lib/flotilla/state.json")).unwrap()).unwrap();
    assert!(state["files"].get("/etc/resolv.conf").is_none(), "{state}");
}

#[tokio::test]
async fn a_rollback_never_writes_through_a_parent_swapped_for_a_link() {
    let env = "[[file]]\npath = \"/home/alice/.ssh/authorized_keys\"\ncontent = \"ssh-ed25519 AAAA deploy\\n\"\n\n[[file]]\npath = \"/home/alice/.ssh/config\"\ncontent = \"Host *\\n\"\n";
    let w = world(&[("1.0.0", plain("1.0.0", now_secs()))], "", env);
    let root = w.fleet.root("h1");
    std::fs::create_dir_all(root.join("home/alice/.ssh")).unwrap();
    std::fs::write(root.join("home/alice/.ssh/authorized_keys"), "alice's own key\n").unwrap();
    let (r, a) = apply_txn(&w).await;
    assert_eq!(r.outcome, Outcome::Applied, "{r:?}");

    // After the apply, Alice swaps her .ssh for a link to a directory outside the host root.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("authorized_keys"), "root's own key\n").unwrap();
    std::fs::write(outside.path().join("config"), "root's config\n").unwrap();
    std::fs::remove_dir_all(root.join("home/alice/.ssh")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("home/alice/.ssh")).unwrap();

    let r = recover(&w, &a).await;
    assert!(
        matches!(&r.outcome, Outcome::Broken(why) if why.contains("/home/alice/.ssh is a symlink")),
        "{r:?}"
    );
    let mut names: Vec<String> = std::fs::read_dir(outside.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["authorized_keys", "config"],
        "nothing written or removed outside the root"
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("authorized_keys")).unwrap(),
        "root's own key\n"
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("config")).unwrap(),
        "root's config\n"
    );
}
