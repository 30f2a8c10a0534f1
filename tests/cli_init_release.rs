//! `flotilla init` and `flotilla release` as a user runs them: the real binary, real Git
//! repositories, real tarballs and real minisign signatures, in temporary directories.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Run, run};

/// A sandbox: its own HOME, XDG config and state directories, so keys and stores written by
/// the commands stay in it.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let s = Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for d in ["home", "config", "state"] {
            std::fs::create_dir_all(s.path().join(d)).expect("mkdir");
        }
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn fleet(&self) -> PathBuf {
        self.path().join("fleet")
    }

    fn key(&self) -> PathBuf {
        self.path().join("config/flotilla/keys/fleet.key")
    }

    fn flotilla(&self) -> Command {
        let mut c = common::flotilla();
        c.env("HOME", self.path().join("home"))
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_STATE_HOME", self.path().join("state"))
            .env_remove("FLOTILLA_SIGN_PASSWORD")
            .env_remove("FLOTILLA_TRUSTED_KEYS");
        c
    }

    fn init(&self) -> Run {
        let r = run(self.flotilla().arg("init").arg(self.fleet()));
        assert_eq!(r.code, 0, "init: {}{}", r.stdout, r.stderr);
        r
    }

    fn cmd(&self, args: &[&str]) -> Run {
        run(self.flotilla().args(args).arg(self.fleet()))
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.fleet().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// `name-version.tar.gz` built by the real `tar`, holding bin/<name>.
    fn tarball(&self, name: &str, version: &str) -> PathBuf {
        let src = self.path().join(format!("src-{name}-{version}"));
        std::fs::create_dir_all(src.join("bin")).expect("mkdir");
        let bin = src.join("bin").join(name);
        std::fs::write(&bin, format!("#!/bin/sh\necho {name} {version}\n")).expect("write");
        common::set_mode(&bin, 0o755);
        let out = self.path().join(format!("{name}-{version}.tar.gz"));
        let st = Command::new("tar")
            .arg("-czf")
            .arg(&out)
            .arg("-C")
            .arg(&src)
            .arg("bin")
            .status()
            .expect("tar");
        assert!(st.success());
        out
    }

    fn release(&self, version: &str, file: &Path, extra: &[&str]) -> Run {
        run(self
            .flotilla()
            .args(["release", "example", version])
            .arg(file)
            .arg(self.fleet())
            .args(extra))
    }
}

fn pin(s: &Sandbox, version: &str) {
    let env = s.read("environments/example.toml");
    let pinned = env.replace("example = \"1.0.0\"", &format!("example = \"{version}\""));
    assert_ne!(env, pinned);
    std::fs::write(s.fleet().join("environments/example.toml"), pinned).expect("write");
}

#[test]
fn init_writes_a_fleet_that_validates_and_plans_with_no_setup() {
    let s = Sandbox::new();
    let r = s.init();
    assert!(r.stdout.contains("Next steps:"), "{}", r.stdout);
    assert!(r.stdout.contains("flotilla plan"), "{}", r.stdout);
    assert!(r.stdout.contains(&s.key().display().to_string()), "{}", r.stdout);

    // The secret key is outside the fleet, private, and appears nowhere inside it.
    let key_text = std::fs::read_to_string(s.key()).expect("secret key written");
    let secret_line = key_text.lines().nth(1).expect("key line").trim().to_owned();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(s.key()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "secret key mode {mode:o}");
    let mut files = vec![s.fleet()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            if p.ends_with(".git") {
                continue;
            }
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&secret_line),
                "{} holds the secret key",
                p.display()
            );
        }
    }

    // Every manifest points at a schema file that init wrote.
    for rel in [
        "flotilla.toml",
        "environments/example.toml",
        "hosts/example.toml",
        "runtimes/example.toml",
    ] {
        let text = s.read(rel);
        let first = text.lines().next().unwrap();
        let target = first
            .strip_prefix("#:schema ")
            .unwrap_or_else(|| panic!("{rel}: {first}"));
        let schema = s.fleet().join(rel).parent().unwrap().join(target);
        assert!(schema.is_file(), "{rel}: {} missing", schema.display());
    }
    assert!(s.read("README.md").contains("flotilla release"));

    // A new repository, everything committed, nothing left over.
    let repo = git2::Repository::open(s.fleet()).expect("a Git repository");
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    assert!(
        head.tree()
            .unwrap()
            .get_path(Path::new("artifacts/example-1.0.0.tar.gz.minisig"))
            .is_ok()
    );
    let statuses = repo.statuses(None).unwrap();
    assert_eq!(statuses.len(), 0, "the working tree is clean after init");

    let r = s.cmd(&["validate"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("The manifests are valid: fleet fleet, 1 environment, 1 host, 1 runtime"),
        "{}",
        r.stdout
    );

    let r = s.cmd(&["plan"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("# host example (wave 1)"), "{}", r.stdout);
    assert!(
        r.stdout.contains("+ runtime \"example\": \"1.0.0\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("+ file \"/etc/example/example.conf\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with("Plan: 2 to add, 0 to change, 0 to destroy.\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stderr.contains("uncommitted"), "{}", r.stderr);
}

#[test]
fn init_refuses_a_non_empty_directory_and_writes_nothing() {
    let s = Sandbox::new();
    std::fs::create_dir_all(s.fleet()).unwrap();
    std::fs::write(s.fleet().join("notes.txt"), "mine\n").unwrap();
    let r = run(s.flotilla().arg("init").arg(s.fleet()));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("is not empty"), "{}", r.stderr);
    assert!(r.stderr.contains("choose another DIR"), "{}", r.stderr);
    assert!(!s.fleet().join("flotilla.toml").exists());
    assert!(!s.key().exists(), "no key made for a refused init");
    assert_eq!(
        std::fs::read_to_string(s.fleet().join("notes.txt")).unwrap(),
        "mine\n"
    );
}

#[test]
fn init_inside_a_repository_commits_nothing_and_keeps_keys_out_of_it() {
    let s = Sandbox::new();
    let outer = s.path().join("outer");
    git2::Repository::init(&outer).unwrap();
    let fleet = outer.join("fleet");
    let key_inside = outer.join("signing.key");
    let r = run(s
        .flotilla()
        .arg("init")
        .arg(&fleet)
        .arg("--secret-key")
        .arg(&key_inside));
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stderr.contains("never belongs in the repository"),
        "{}",
        r.stderr
    );
    assert!(!key_inside.exists() && !fleet.exists());

    let r = run(s.flotilla().arg("init").arg(&fleet).args(["--name", "acme"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("nothing committed"), "{}", r.stdout);
    assert!(!fleet.join(".git").exists());
    assert!(s.path().join("config/flotilla/keys/acme.key").is_file());
    let r = run(s.flotilla().arg("validate").arg(&fleet));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("fleet acme"), "{}", r.stdout);
}

#[test]
fn release_adds_a_version_that_validates_and_plans_when_pinned() {
    let s = Sandbox::new();
    s.init();
    let before = s.read("runtimes/example.toml");
    let file = s.tarball("example", "1.1.0");
    let key = s.key();
    let r = s.release("1.1.0", &file, &["--sign", key.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("Released example 1.1.0: runtimes/example.toml:"),
        "{}",
        r.stdout
    );
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);

    // The rest of the file is kept as written, comments included; the new table follows.
    let after = s.read("runtimes/example.toml");
    let mut rest = after.lines();
    for line in before.lines() {
        assert!(rest.any(|l| l == line), "line `{line}` lost or moved:\n{after}");
    }
    let sha = flotilla::release::sha256_of(std::fs::File::open(&file).unwrap()).unwrap();
    assert!(
        after.contains(&format!(
            "[[version]]\nversion = \"1.1.0\"\nartifact = \"artifacts/example-1.1.0.tar.gz\"\nsha256 = \"{sha}\"\n"
        )),
        "{after}"
    );
    assert_eq!(
        std::fs::read(s.fleet().join("artifacts/example-1.1.0.tar.gz")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    // The signature verifies with the real minisign CLI against the fleet's key.
    let public = std::fs::read_to_string(flotilla::release::pub_path(&key)).unwrap();
    assert!(s.read("flotilla.toml").contains(public.lines().nth(1).unwrap()));
    let st = Command::new("minisign")
        .arg("-Vq")
        .arg("-p")
        .arg(flotilla::release::pub_path(&key))
        .arg("-m")
        .arg(s.fleet().join("artifacts/example-1.1.0.tar.gz"))
        .status()
        .expect("minisign");
    assert!(st.success(), "minisign -V");

    let r = s.cmd(&["validate"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    // Still 1.0.0 is planned until the new version is pinned.
    let r = s.cmd(&["plan"]);
    assert!(
        r.stdout.contains("+ runtime \"example\": \"1.0.0\""),
        "{}",
        r.stdout
    );
    pin(&s, "1.1.0");
    let r = s.cmd(&["plan"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("+ runtime \"example\": \"1.1.0\""),
        "{}",
        r.stdout
    );
}

#[test]
fn release_refuses_an_existing_version_naming_its_file_and_line() {
    let s = Sandbox::new();
    s.init();
    let before = s.read("runtimes/example.toml");
    let line = before
        .lines()
        .position(|l| l == "version = \"1.0.0\"")
        .expect("1.0.0 in the manifest")
        + 1;
    let file = s.tarball("example", "1.0.0");
    let key = s.key();
    let r = s.release("1.0.0", &file, &["--sign", key.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stderr.contains(&format!(
            "runtimes/example.toml:{line}: version `1.0.0` of `example` exists already"
        )),
        "{}",
        r.stderr
    );
    assert_eq!(s.read("runtimes/example.toml"), before, "nothing changed");
    let repo = git2::Repository::open(s.fleet()).unwrap();
    assert_eq!(repo.statuses(None).unwrap().len(), 0, "no file was added");
}

#[test]
fn release_refuses_what_is_not_a_regular_tarball() {
    let s = Sandbox::new();
    s.init();
    let before = s.read("runtimes/example.toml");
    let dir = s.path().join("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let r = s.release("2.0.0", &dir, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("it is a directory"), "{}", r.stderr);

    let r = s.release("2.0.0", Path::new("/dev/null"), &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);

    let r = s.release("2.0.0", &s.path().join("missing.tar.gz"), &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("missing.tar.gz: cannot release it"),
        "{}",
        r.stderr
    );

    let text = s.path().join("notes.tar.gz");
    std::fs::write(&text, "not a tarball\n").unwrap();
    let r = s.release("2.0.0", &text, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("is not a tarball Flotilla would unpack"),
        "{}",
        r.stderr
    );

    let file = s.tarball("example", "2.0.0");
    let r = s.release("../2.0.0", &file, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not a valid version name"), "{}", r.stderr);
    assert_eq!(s.read("runtimes/example.toml"), before);
}

#[test]
fn a_tampered_or_untrusted_release_fails_validate() {
    let s = Sandbox::new();
    s.init();
    let file = s.tarball("example", "1.1.0");
    let key = s.key();
    let r = s.release("1.1.0", &file, &["--sign", key.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let copy = s.fleet().join("artifacts/example-1.1.0.tar.gz");
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes.push(0);
    std::fs::write(&copy, &bytes).unwrap();
    let r = s.cmd(&["validate"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("sha256 mismatch"), "{}", r.stderr);
    assert!(
        r.stderr.contains("artifacts/example-1.1.0.tar.gz"),
        "{}",
        r.stderr
    );

    // A key the fleet does not trust (made by the minisign CLI, no password): release warns,
    // validate refuses.
    let other = common::Keys::new();
    let file = s.tarball("example", "1.2.0");
    let r = s.release(
        "1.2.0",
        &file,
        &["--sign", other.dir.path().join("k.sec").to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("is not in flotilla.toml [trust] keys"),
        "{}",
        r.stderr
    );
    std::fs::write(&copy, &bytes[..bytes.len() - 1]).unwrap();
    let r = s.cmd(&["validate"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("example-1.2.0"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("example-1.1.0"),
        "the restored copy passes: {}",
        r.stderr
    );
}

#[test]
fn release_with_a_url_records_it_and_keeps_the_signature_in_the_repository() {
    let s = Sandbox::new();
    s.init();
    let file = s.tarball("example", "1.1.0");
    let url = format!("file://{}", file.display());
    let key = s.key();
    let r = s.release("1.1.0", &file, &["--url", &url, "--sign", key.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = s.read("runtimes/example.toml");
    assert!(text.contains(&format!("artifact = \"{url}\"")), "{text}");
    assert!(
        text.contains("signature = \"artifacts/example-1.1.0.tar.gz.minisig\""),
        "{text}"
    );
    assert!(
        !s.fleet().join("artifacts/example-1.1.0.tar.gz").exists(),
        "a URL is not copied"
    );
    assert!(s.fleet().join("artifacts/example-1.1.0.tar.gz.minisig").is_file());
    let r = s.cmd(&["validate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let r = s.release("1.2.0", &file, &["--url", "ftp://example.com/x.tar.gz"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("give an https:// or file:// URL"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_password_protected_key_without_a_password_is_a_clear_error() {
    let s = Sandbox::new();
    s.init();
    // The key file's KDF marked as scrypt: it now needs a password, and there is no terminal.
    let text = std::fs::read_to_string(s.key()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut bytes = decode(&lines[1]);
    bytes[2..4].copy_from_slice(b"Sc");
    lines[1] = encode(&bytes);
    let locked = s.path().join("locked.key");
    std::fs::write(&locked, lines.join("\n") + "\n").unwrap();
    let file = s.tarball("example", "1.1.0");
    let r = run(s
        .flotilla()
        .args(["release", "example", "1.1.0"])
        .arg(&file)
        .arg(s.fleet())
        .arg("--sign")
        .arg(&locked)
        .stdin(std::process::Stdio::null()));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("password-protected"), "{}", r.stderr);
    assert!(r.stderr.contains("FLOTILLA_SIGN_PASSWORD"), "{}", r.stderr);
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let vals: Vec<u32> = chunk
            .iter()
            .filter(|&&c| c != b'=')
            .map(|&c| B64.iter().position(|&b| b == c).unwrap() as u32)
            .collect();
        let n = vals
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &v)| n | v << (18 - 6 * i));
        for i in 0..vals.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[test]
fn releasing_a_new_runtime_writes_its_header_above_the_version() {
    let s = Sandbox::new();
    s.init();
    let file = s.tarball("example", "1.1.0");
    let key = s.key();
    let r = run(s
        .flotilla()
        .args(["release", "fresh", "0.1.0"])
        .arg(&file)
        .arg(s.fleet())
        .args(["--sign", key.to_str().unwrap()]));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let text = s.read("runtimes/fresh.toml");
    assert!(
        text.starts_with("#:schema ../schema/runtime.schema.json\n# Versions of `fresh`"),
        "{text}"
    );
    assert!(
        text.find("# Versions of").unwrap() < text.find("[[version]]").unwrap(),
        "{text}"
    );
    let r = s.cmd(&["validate"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}
