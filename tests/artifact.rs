//! The artifact checks against real things: tarballs built with the `tar` crate and the GNU
//! `tar` CLI, signatures made by the real `minisign` CLI, files in temporary directories, and a
//! real (closed) TCP port for HTTPS. No mocks.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use flotilla::artifact::{
    ArtifactCache, ArtifactError, ArtifactRequest, DEFAULT_MAX_UNPACKED, Prepared, RepoReader, TarProblem,
    TrustPolicy,
};
use flotilla::manifest::model::ArtifactRef;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Repository files read from a directory, as `FleetRepo` reads a working tree.
struct DirRepo(PathBuf);

impl RepoReader for DirRepo {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(fs::File::open(self.0.join(path))?))
    }
}

/// A minisign key pair made by the real CLI.
struct Key {
    /// The base64 line, as in `[trust] keys`.
    b64: String,
    /// The whole .pub file.
    pub_file: String,
    sec: PathBuf,
    /// The id from the .pub file's comment, as minisign prints it.
    id: String,
}

fn keygen(dir: &Path, name: &str) -> Key {
    let pub_path = dir.join(format!("{name}.pub"));
    let sec = dir.join(format!("{name}.sec"));
    let out = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&pub_path)
        .arg("-s")
        .arg(&sec)
        .output()
        .expect("run minisign -G");
    assert!(
        out.status.success(),
        "minisign -G: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pub_file = fs::read_to_string(&pub_path).expect("read .pub");
    let mut lines = pub_file.lines();
    let comment = lines.next().expect("comment line");
    let b64 = lines.next().expect("key line").trim().to_owned();
    let id = comment.rsplit(' ').next().expect("key id").to_owned();
    Key {
        b64,
        pub_file,
        sec,
        id,
    }
}

/// Signs `file` into `file.minisig` with the real CLI (prehashed, or legacy with `-l`).
fn sign(key: &Key, file: &Path, legacy: bool) {
    let mut cmd = Command::new("minisign");
    cmd.arg("-S");
    if legacy {
        cmd.arg("-l");
    }
    let out = cmd
        .arg("-s")
        .arg(&key.sec)
        .arg("-m")
        .arg(file)
        .output()
        .expect("run minisign -S");
    assert!(
        out.status.success(),
        "minisign -S: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256(path: &Path) -> String {
    let mut h = Sha256::new();
    h.update(fs::read(path).expect("read for sha256"));
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn trust(keys: &[&Key], require: bool) -> TrustPolicy {
    let keys: Vec<String> = keys.iter().map(|k| k.b64.clone()).collect();
    TrustPolicy::new(&keys, require, None).expect("trust policy")
}

/// A fleet repository directory, a store with an artifact cache, and a key pair.
struct Fx {
    tmp: TempDir,
    key: Key,
}

impl Fx {
    fn new() -> Fx {
        let tmp = TempDir::new().expect("temp dir");
        fs::create_dir_all(tmp.path().join("repo/artifacts")).expect("mkdir");
        fs::create_dir_all(tmp.path().join("keys")).expect("mkdir");
        let key = keygen(&tmp.path().join("keys"), "fleet");
        Fx { tmp, key }
    }

    fn repo(&self) -> DirRepo {
        DirRepo(self.tmp.path().join("repo"))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join("repo").join(rel)
    }

    fn cache_dir(&self) -> PathBuf {
        self.tmp.path().join("store/cache/artifacts")
    }

    fn cache(&self) -> ArtifactCache {
        ArtifactCache::new(self.cache_dir())
    }

    fn other_key(&self, name: &str) -> Key {
        keygen(&self.tmp.path().join("keys"), name)
    }

    /// Writes `artifacts/<name>` into the repository and signs it with the fleet key.
    fn add(&self, name: &str, bytes: &[u8]) -> String {
        let rel = format!("artifacts/{name}");
        fs::write(self.path(&rel), bytes).expect("write artifact");
        sign(&self.key, &self.path(&rel), false);
        rel
    }

    /// Prepares a repository artifact with its default `.minisig`, sha256 taken from the file
    /// as it is now.
    fn prepare(&self, rel: &str, trust: &TrustPolicy, max: u64) -> Result<Prepared, ArtifactError> {
        let sha = sha256(&self.path(rel));
        self.prepare_with(
            &ArtifactRef::Repo(rel.to_owned()),
            &ArtifactRef::Repo(format!("{rel}.minisig")),
            &sha,
            trust,
            max,
        )
    }

    fn prepare_with(
        &self,
        artifact: &ArtifactRef,
        signature: &ArtifactRef,
        sha: &str,
        trust: &TrustPolicy,
        max: u64,
    ) -> Result<Prepared, ArtifactError> {
        let req = ArtifactRequest {
            runtime: "python",
            version: "3.11.9",
            artifact,
            signature,
            sha256: sha,
        };
        self.cache().prepare(&req, &self.repo(), trust, max)
    }

    fn trusted(&self) -> TrustPolicy {
        trust(&[&self.key], true)
    }

    /// Entries left in the cache directory (downloads in progress must never remain).
    fn cache_entries(&self) -> Vec<String> {
        match fs::read_dir(self.cache_dir()) {
            Ok(rd) => {
                // Cached artifacts; the `verified/` and `sources/` marker directories aside.
                let mut v: Vec<String> = rd
                    .map(|e| e.expect("dir entry"))
                    .filter(|e| !e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                v
            }
            Err(_) => Vec::new(),
        }
    }
}

/// One tar entry, written with raw header fields so that hostile names can be built (the `tar`
/// crate's path setters refuse them, as they should).
enum Kind<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
    Hardlink(&'a str),
    CharDevice,
    Fifo,
    /// A raw pax extended header ('x') with these records.
    Pax(&'a [(&'a str, &'a str)]),
}

fn entry(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: Kind<'_>, mode: u32) {
    let mut h = tar::Header::new_gnu();
    let (ty, data, link): (tar::EntryType, Vec<u8>, &str) = match kind {
        Kind::File(d) => (tar::EntryType::Regular, d.to_vec(), ""),
        Kind::Dir => (tar::EntryType::Directory, Vec::new(), ""),
        Kind::Symlink(t) => (tar::EntryType::Symlink, Vec::new(), t),
        Kind::Hardlink(t) => (tar::EntryType::Link, Vec::new(), t),
        Kind::CharDevice => (tar::EntryType::Char, Vec::new(), ""),
        Kind::Fifo => (tar::EntryType::Fifo, Vec::new(), ""),
        Kind::Pax(records) => {
            let mut data = Vec::new();
            for (k, v) in records {
                // "LEN key=value\n", LEN counting itself.
                let body = format!(" {k}={v}\n");
                let mut len = body.len() + 1;
                while format!("{len}").len() + body.len() != len {
                    len += 1;
                }
                data.extend_from_slice(format!("{len}{body}").as_bytes());
            }
            (tar::EntryType::XHeader, data, "")
        }
    };
    {
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name[..name.len()].copy_from_slice(name);
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(ty);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_mtime(1_767_225_600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append(&h, &data[..]).expect("append entry");
}

/// An uncompressed tarball (ending with the two zero blocks).
fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().expect("finish tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip finish")
}

/// A small, ordinary runtime: directories, files, an inside symlink.
fn good_tarball() -> Vec<u8> {
    gzip(&tar_of(|b| {
        entry(b, b"./", Kind::Dir, 0o755);
        entry(b, b"bin/", Kind::Dir, 0o755);
        entry(
            b,
            b"bin/python3.11",
            Kind::File(b"#!/bin/sh\necho python\n"),
            0o755,
        );
        entry(b, b"bin/python3", Kind::Symlink("python3.11"), 0o777);
        entry(b, b"VERSION", Kind::File(b"3.11.9\n"), 0o644);
    }))
}

fn tarball_with(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    gzip(&tar_of(|b| {
        entry(b, b"bin/", Kind::Dir, 0o755);
        entry(b, b"bin/tool", Kind::File(b"#!/bin/sh\n"), 0o755);
        f(b);
    }))
}

/// Prepares a signed tarball built by `f` and returns the refusal.
fn refused(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> (Option<String>, TarProblem, String) {
    let fx = Fx::new();
    let rel = fx.add("evil.tar.gz", &tarball_with(f));
    match fx.prepare(&rel, &fx.trusted(), DEFAULT_MAX_UNPACKED) {
        Err(e) => {
            let msg = e.to_string();
            eprintln!("{msg}");
            assert_names_artifact(&msg, &rel);
            match e {
                ArtifactError::Tarball { entry, problem, .. } => (entry, problem, msg),
                other => panic!("expected a tarball refusal, got: {other}"),
            }
        }
        Ok(p) => panic!("hostile tarball accepted: {p:?}"),
    }
}

/// Every per-artifact message names the runtime, the version and the artifact.
fn assert_names_artifact(msg: &str, location: &str) {
    assert!(
        msg.contains("runtime `python` version `3.11.9`"),
        "message does not name runtime and version: {msg}"
    );
    assert!(
        msg.contains(location),
        "message does not name `{location}`: {msg}"
    );
}

fn err(r: Result<Prepared, ArtifactError>) -> ArtifactError {
    match r {
        Err(e) => {
            // Shown with --nocapture, to read the messages as an operator would.
            eprintln!("{e}");
            e
        }
        Ok(p) => panic!("expected an error, got {p:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Good artifacts and the cache

#[test]
fn good_artifact_from_the_repository_then_from_the_cache() {
    let fx = Fx::new();
    let bytes = good_tarball();
    let rel = fx.add("python-3.11.9.tar.gz", &bytes);
    let sha = sha256(&fx.path(&rel));

    let p = fx
        .prepare(&rel, &fx.trusted(), DEFAULT_MAX_UNPACKED)
        .expect("prepare");
    assert_eq!(p.sha256, sha);
    assert_eq!(p.path, fx.cache_dir().join(&sha));
    assert_eq!(p.size, bytes.len() as u64);
    assert_eq!(p.unpacked_size, 22 + 7);
    assert_eq!(p.signed_by.as_deref(), Some(fx.key.id.as_str()));
    assert!(p.fetched);
    assert_eq!(fs::read(&p.path).expect("cached"), bytes);
    assert_eq!(fx.cache_entries(), vec![sha.clone()]);

    // The source is gone: the second prepare must not read it.
    fs::remove_file(fx.path(&rel)).expect("remove source");
    let again = fx
        .prepare_with(
            &ArtifactRef::Repo(rel.clone()),
            &ArtifactRef::Repo(format!("{rel}.minisig")),
            &sha.to_uppercase(),
            &fx.trusted(),
            DEFAULT_MAX_UNPACKED,
        )
        .expect("prepare from cache");
    assert!(!again.fetched);
    assert_eq!(again.path, p.path);
    assert_eq!(again.sha256, sha, "sha256 is reported in lower case");

    // The cache is still checked on reuse: a smaller limit refuses the cached copy too.
    let e = err(fx.prepare_with(
        &ArtifactRef::Repo(rel.clone()),
        &ArtifactRef::Repo(format!("{rel}.minisig")),
        &sha,
        &fx.trusted(),
        10,
    ));
    assert!(
        matches!(
            e,
            ArtifactError::Tarball {
                problem: TarProblem::TooLarge { limit: 10 },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn good_artifact_built_by_the_tar_cli_from_a_file_url() {
    let fx = Fx::new();
    let src = fx.tmp.path().join("runtime src");
    fs::create_dir_all(src.join("bin")).expect("mkdir");
    fs::create_dir_all(src.join("lib/python3.11")).expect("mkdir");
    fs::write(src.join("bin/python3.11"), "#!/bin/sh\n").expect("write");
    fs::write(src.join("lib/python3.11/os.py"), "# os\n").expect("write");
    let long = "a".repeat(150);
    fs::write(src.join(format!("lib/python3.11/{long}.py")), "").expect("write");
    std::os::unix::fs::symlink("python3.11", src.join("bin/python3")).expect("symlink");
    std::os::unix::fs::symlink("../lib/python3.11", src.join("bin/lib")).expect("symlink");
    let outdir = fx.tmp.path().join("published artifacts");
    fs::create_dir_all(&outdir).expect("mkdir");
    // GNU tar's default format (gnu: long names as `L` entries) and pax (long names in pax
    // headers).
    for format in ["gnu", "pax"] {
        let out = outdir.join(format!("python-{format}.tar.gz"));
        let status = Command::new("tar")
            .arg(format!("--format={format}"))
            .arg("-czf")
            .arg(&out)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(status.success());
        sign(&fx.key, &out, false);
        let sha = sha256(&out);
        let url = format!("file://{}", out.display()).replace(' ', "%20");
        let artifact = ArtifactRef::Url(url.clone());
        let signature = ArtifactRef::Url(format!("{url}.minisig"));

        let p = fx
            .prepare_with(&artifact, &signature, &sha, &fx.trusted(), DEFAULT_MAX_UNPACKED)
            .expect("prepare");
        assert!(p.fetched);
        assert_eq!(p.unpacked_size, 10 + 5);

        fs::remove_file(&out).expect("remove source");
        let again = fx
            .prepare_with(&artifact, &signature, &sha, &fx.trusted(), DEFAULT_MAX_UNPACKED)
            .expect("prepare again");
        assert!(!again.fetched);
    }
}

#[test]
fn the_demo_fleet_artifacts_verify_with_the_demo_key() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let text = fs::read_to_string(demo.join("flotilla.toml")).expect("demo flotilla.toml");
    let doc: toml::Table = toml::from_str(&text).expect("toml");
    let keys: Vec<String> = doc["trust"]["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("key").to_owned())
        .collect();
    let trust = TrustPolicy::new(&keys, true, None).expect("demo trust");
    let tmp = TempDir::new().expect("tmp");
    let cache = ArtifactCache::new(tmp.path().join("cache"));
    let repo = DirRepo(demo.clone());
    let mut seen = 0;
    for e in fs::read_dir(demo.join("artifacts")).expect("demo artifacts") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".tar.gz") else {
            continue;
        };
        let rel = format!("artifacts/{name}");
        let artifact = ArtifactRef::Repo(rel.clone());
        let signature = ArtifactRef::Repo(format!("{rel}.minisig"));
        let sha = sha256(&demo.join(&rel));
        let req = ArtifactRequest {
            runtime: stem,
            version: stem,
            artifact: &artifact,
            signature: &signature,
            sha256: &sha,
        };
        let p = cache
            .prepare(&req, &repo, &trust, DEFAULT_MAX_UNPACKED)
            .expect("demo artifact");
        assert!(p.signed_by.is_some());
        seen += 1;
    }
    assert!(seen > 0, "no demo artifacts found");
}

#[test]
fn a_corrupted_cache_entry_is_fetched_again() {
    let fx = Fx::new();
    let rel = fx.add("python.tar.gz", &good_tarball());
    let sha = sha256(&fx.path(&rel));
    fs::create_dir_all(fx.cache_dir()).expect("mkdir");
    fs::write(fx.cache_dir().join(&sha), b"bit rot").expect("corrupt");
    let p = fx
        .prepare(&rel, &fx.trusted(), DEFAULT_MAX_UNPACKED)
        .expect("prepare");
    assert!(p.fetched);
    assert_eq!(sha256(&p.path), sha);
}

// ---------------------------------------------------------------------------------------------
// sha256 and signatures

#[test]
fn tampered_artifact_is_a_sha256_mismatch_and_leaves_nothing_in_the_cache() {
    let fx = Fx::new();
    let rel = fx.add("python.tar.gz", &good_tarball());
    let sha = sha256(&fx.path(&rel));
    // The mirror serves something else.
    let mut other = good_tarball();
    other.extend_from_slice(b"tampered");
    fs::write(fx.path(&rel), &other).expect("tamper");
    let e = err(fx.prepare_with(
        &ArtifactRef::Repo(rel.clone()),
        &ArtifactRef::Repo(format!("{rel}.minisig")),
        &sha,
        &fx.trusted(),
        DEFAULT_MAX_UNPACKED,
    ));
    let msg = e.to_string();
    assert!(matches!(e, ArtifactError::Sha256Mismatch { .. }), "{msg}");
    assert_names_artifact(&msg, &rel);
    assert!(msg.contains(&format!("manifest says {sha}")), "{msg}");
    assert!(
        msg.contains(&format!("file has {}", sha256(&fx.path(&rel)))),
        "{msg}"
    );
    assert!(
        msg.contains("update sha256 in runtimes/python.toml or rebuild the artifact"),
        "{msg}"
    );
    assert_eq!(
        fx.cache_entries(),
        Vec::<String>::new(),
        "no partial download may remain"
    );
}

#[test]
fn signature_by_an_untrusted_key_is_refused_even_with_the_right_sha256() {
    let fx = Fx::new();
    let mallory = fx.other_key("mallory");
    let rel = "artifacts/python.tar.gz";
    fs::write(fx.path(rel), good_tarball()).expect("write");
    sign(&mallory, &fx.path(rel), false);
    let e = err(fx.prepare(rel, &fx.trusted(), DEFAULT_MAX_UNPACKED));
    let msg = e.to_string();
    assert!(matches!(e, ArtifactError::UntrustedKey { .. }), "{msg}");
    assert_names_artifact(&msg, rel);
    assert!(
        msg.contains(&format!("signature by untrusted key {}", mallory.id)),
        "{msg}"
    );
    assert!(msg.contains(&fx.key.id), "the trusted keys are listed: {msg}");
    assert!(msg.contains("[trust] keys"), "{msg}");
}

#[test]
fn artifact_changed_after_signing_fails_the_signature_even_with_sha256_updated() {
    let fx = Fx::new();
    let rel = fx.add("python.tar.gz", &good_tarball());
    // Rebuilt after signing (different content), and the manifest's sha256 updated to match.
    let rebuilt = gzip(&tar_of(|b| entry(b, b"VERSION", Kind::File(b"3.11.10\n"), 0o644)));
    fs::write(fx.path(&rel), rebuilt).expect("rebuild");
    let e = err(fx.prepare(&rel, &fx.trusted(), DEFAULT_MAX_UNPACKED));
    let msg = e.to_string();
    assert!(matches!(e, ArtifactError::BadSignature { .. }), "{msg}");
    assert_names_artifact(&msg, &rel);
    assert!(msg.contains("does not verify"), "{msg}");
}

#[test]
fn missing_signature_is_refused_when_required() {
    let fx = Fx::new();
    let rel = "artifacts/python.tar.gz";
    fs::write(fx.path(rel), good_tarball()).expect("write");
    let e = err(fx.prepare(rel, &fx.trusted(), DEFAULT_MAX_UNPACKED));
    let msg = e.to_string();
    assert!(
        matches!(e, ArtifactError::MissingSignature { pinned: false, .. }),
        "{msg}"
    );
    assert_names_artifact(&msg, rel);
    assert!(
        msg.contains("no signature at `artifacts/python.tar.gz.minisig` and require_signatures is true"),
        "{msg}"
    );
}

#[test]
fn missing_signature_is_accepted_when_not_required_but_a_present_one_must_verify() {
    let fx = Fx::new();
    let rel = "artifacts/python.tar.gz";
    fs::write(fx.path(rel), good_tarball()).expect("write");
    let lax = trust(&[&fx.key], false);
    let p = fx
        .prepare(rel, &lax, DEFAULT_MAX_UNPACKED)
        .expect("unsigned accepted");
    assert_eq!(p.signed_by, None);

    // A signature that is there is still checked.
    let mallory = fx.other_key("mallory");
    sign(&mallory, &fx.path(rel), false);
    let e = err(fx.prepare(rel, &lax, DEFAULT_MAX_UNPACKED));
    assert!(matches!(e, ArtifactError::UntrustedKey { .. }), "{e}");
    // Even with no trusted key at all.
    let e = err(fx.prepare(rel, &trust(&[], false), DEFAULT_MAX_UNPACKED));
    assert!(e.to_string().contains("no key is trusted"), "{e}");
    // And a garbled one is not taken for "unsigned".
    fs::write(
        fx.path(&format!("{rel}.minisig")),
        "untrusted comment: x\nnot base64\n",
    )
    .expect("write");
    let e = err(fx.prepare(rel, &lax, DEFAULT_MAX_UNPACKED));
    assert!(matches!(e, ArtifactError::MalformedSignature { .. }), "{e}");
}

#[test]
fn legacy_signature_is_refused() {
    let fx = Fx::new();
    let rel = "artifacts/python.tar.gz";
    fs::write(fx.path(rel), good_tarball()).expect("write");
    sign(&fx.key, &fx.path(rel), true);
    let e = err(fx.prepare(rel, &fx.trusted(), DEFAULT_MAX_UNPACKED));
    let msg = e.to_string();
    assert!(matches!(e, ArtifactError::LegacySignature { .. }), "{msg}");
    assert_names_artifact(&msg, rel);
    assert!(
        msg.contains(
            "legacy (non-prehashed) minisign signature refused: re-sign with a current minisign (prehashed, the default)"
        ),
        "{msg}"
    );
}

#[test]
fn pinned_keys_override_the_manifest_keys() {
    let fx = Fx::new();
    let ops = fx.other_key("ops");
    let rel = fx.add("python.tar.gz", &good_tarball());

    // The commit trusts its own key, but the operator pinned another: not enough.
    let pinned = format!("# operator keys\n{}\n", ops.b64);
    let policy = TrustPolicy::new(std::slice::from_ref(&fx.key.b64), true, Some(&pinned)).expect("pinned");
    let e = err(fx.prepare(&rel, &policy, DEFAULT_MAX_UNPACKED));
    let msg = e.to_string();
    assert!(
        matches!(e, ArtifactError::UntrustedKey { pinned: true, .. }),
        "{msg}"
    );
    assert!(msg.contains(&fx.key.id) && msg.contains(&ops.id), "{msg}");
    assert!(msg.contains("pinned keys file"), "{msg}");

    // Pinned keys require signatures whatever the manifests say.
    let unsigned = "artifacts/unsigned.tar.gz";
    fs::write(fx.path(unsigned), good_tarball()).expect("write");
    let policy = TrustPolicy::new(&[], false, Some(&pinned)).expect("pinned");
    assert!(policy.require_signatures());
    let e = err(fx.prepare(unsigned, &policy, DEFAULT_MAX_UNPACKED));
    assert!(
        matches!(e, ArtifactError::MissingSignature { pinned: true, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("pinned"), "{e}");

    // A whole .pub file of the fleet key, pinned, is accepted.
    let pinned = format!("{}\n\n{}", ops.pub_file, fx.key.pub_file);
    let policy = TrustPolicy::new(&[], false, Some(&pinned)).expect("pinned .pub files");
    let p = fx
        .prepare(&rel, &policy, DEFAULT_MAX_UNPACKED)
        .expect("signed by a pinned key");
    assert_eq!(p.signed_by.as_deref(), Some(fx.key.id.as_str()));
}

#[test]
fn malformed_pinned_keys_file_is_an_error() {
    let fx = Fx::new();
    let text = format!("{}\n# next is a typo\nRWQnot-a-key\n", fx.key.b64);
    let e = TrustPolicy::new(&[], true, Some(&text)).expect_err("malformed");
    let msg = e.to_string();
    assert!(matches!(e, ArtifactError::PinnedKey { line: 3, .. }), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
    let e = TrustPolicy::new(&[], true, Some("\n# nothing\n")).expect_err("empty");
    assert!(matches!(e, ArtifactError::NoPinnedKeys), "{e}");
    let e = TrustPolicy::new(&["nope".to_owned()], true, None).expect_err("bad manifest key");
    assert!(matches!(e, ArtifactError::ManifestKey { index: 1, .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Hostile tarballs: each is signed by the trusted key, so only the inspection stands in the way.

#[test]
fn absolute_name_is_refused() {
    let (entry, problem, msg) = refused(|b| entry(b, b"/etc/cron.d/evil", Kind::File(b"x"), 0o644));
    assert_eq!(entry.as_deref(), Some("/etc/cron.d/evil"));
    assert_eq!(problem, TarProblem::Absolute);
    assert!(
        msg.contains("tar entry `/etc/cron.d/evil`: absolute names are refused"),
        "{msg}"
    );
}

#[test]
fn dotdot_component_is_refused() {
    let (entry, problem, msg) = refused(|b| entry(b, b"bin/../../x", Kind::File(b"x"), 0o644));
    assert_eq!(entry.as_deref(), Some("bin/../../x"));
    assert_eq!(problem, TarProblem::ParentDir);
    assert!(
        msg.contains("tar entry `bin/../../x`: `..` components are refused"),
        "{msg}"
    );
}

#[test]
fn dotdot_in_a_pax_path_is_refused() {
    // The header says `harmless`, the pax header (which tar honours) says `../x`.
    let (entry, problem, _) = refused(|b| {
        entry(b, b"PaxHeaders/harmless", Kind::Pax(&[("path", "../x")]), 0o644);
        entry(b, b"harmless", Kind::File(b"x"), 0o644);
    });
    assert_eq!(entry.as_deref(), Some("../x"));
    assert_eq!(problem, TarProblem::ParentDir);
}

#[test]
fn gnu_sparse_pax_keywords_are_refused() {
    let (_, problem, _) = refused(|b| {
        entry(
            b,
            b"PaxHeaders/f",
            Kind::Pax(&[("GNU.sparse.name", "../../etc/x")]),
            0o644,
        );
        entry(b, b"f", Kind::File(b"x"), 0o644);
    });
    assert_eq!(
        problem,
        TarProblem::PaxKeyword {
            key: "GNU.sparse.name".into()
        }
    );
}

#[test]
fn hardlink_is_refused() {
    let (entry, problem, msg) = refused(|b| entry(b, b"bin/passwd", Kind::Hardlink("/etc/shadow"), 0o644));
    assert_eq!(entry.as_deref(), Some("bin/passwd"));
    assert!(matches!(problem, TarProblem::Hardlink { .. }), "{problem}");
    assert!(msg.contains("hardlinks are refused"), "{msg}");
}

#[test]
fn device_file_is_refused() {
    let (entry, problem, _) = refused(|b| entry(b, b"dev/mem", Kind::CharDevice, 0o600));
    assert_eq!(entry.as_deref(), Some("dev/mem"));
    assert_eq!(
        problem,
        TarProblem::Device {
            kind: "character device"
        }
    );
}

#[test]
fn fifo_is_refused() {
    let (_, problem, _) = refused(|b| entry(b, b"run/pipe", Kind::Fifo, 0o600));
    assert_eq!(problem, TarProblem::Fifo);
}

#[test]
fn setuid_bit_is_refused() {
    let (entry, problem, msg) = refused(|b| entry(b, b"bin/su", Kind::File(b"x"), 0o4755));
    assert_eq!(entry.as_deref(), Some("bin/su"));
    assert_eq!(problem, TarProblem::SpecialBits { mode: 0o4755 });
    assert!(msg.contains("4755"), "{msg}");
}

#[test]
fn setgid_directory_from_the_tar_cli_is_refused() {
    let fx = Fx::new();
    let src = fx.tmp.path().join("src");
    fs::create_dir_all(src.join("shared")).expect("mkdir");
    fs::write(src.join("shared/file"), "x").expect("write");
    let status = Command::new("chmod")
        .arg("2775")
        .arg(src.join("shared"))
        .status()
        .expect("chmod");
    assert!(status.success());
    let out = fx.path("artifacts/setgid.tar.gz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .arg("shared")
        .status()
        .expect("tar");
    assert!(status.success());
    sign(&fx.key, &out, false);
    let e = err(fx.prepare("artifacts/setgid.tar.gz", &fx.trusted(), DEFAULT_MAX_UNPACKED));
    assert!(
        matches!(&e, ArtifactError::Tarball { entry: Some(n), problem: TarProblem::SpecialBits { mode: 0o2775 }, .. } if n == "shared/"),
        "{e}"
    );
}

#[test]
fn symlink_escaping_the_version_directory_is_refused() {
    let (entry, problem, msg) = refused(|b| entry(b, b"bin/etc", Kind::Symlink("../../etc"), 0o777));
    assert_eq!(entry.as_deref(), Some("bin/etc"));
    assert_eq!(
        problem,
        TarProblem::SymlinkEscapes {
            target: "../../etc".into()
        }
    );
    assert!(msg.contains("points outside the version directory"), "{msg}");
}

#[test]
fn absolute_symlink_is_refused() {
    let (_, problem, _) = refused(|b| entry(b, b"bin/sh", Kind::Symlink("/bin/bash"), 0o777));
    assert_eq!(
        problem,
        TarProblem::SymlinkAbsolute {
            target: "/bin/bash".into()
        }
    );
}

#[test]
fn symlink_climbing_through_another_symlink_is_refused() {
    // `here -> .` is inside; `up -> here/../x` looks inside lexically but resolves to ../x.
    let (entry, problem, _) = refused(|b| {
        entry(b, b"here", Kind::Symlink("."), 0o777);
        entry(b, b"up", Kind::Symlink("here/../x"), 0o777);
    });
    assert_eq!(entry.as_deref(), Some("up"));
    assert!(
        matches!(problem, TarProblem::SymlinkClimbsAfterName { .. }),
        "{problem}"
    );
}

#[test]
fn entry_beneath_a_symlink_is_refused() {
    let (entry, problem, _) = refused(|b| {
        entry(b, b"lib", Kind::Symlink("bin"), 0o777);
        entry(b, b"lib/x", Kind::File(b"x"), 0o644);
    });
    assert_eq!(entry.as_deref(), Some("lib/x"));
    assert_eq!(
        problem,
        TarProblem::ThroughSymlink {
            symlink: "lib".into()
        }
    );
}

#[test]
fn symlinks_inside_the_version_directory_are_accepted() {
    let fx = Fx::new();
    let rel = fx.add(
        "links.tar.gz",
        &tarball_with(|b| {
            entry(b, b"lib/", Kind::Dir, 0o755);
            entry(b, b"lib/python3/", Kind::Dir, 0o755);
            entry(b, b"lib/python3/tool", Kind::Symlink("../../bin/tool"), 0o777);
            entry(b, b"lib/self", Kind::Symlink(".."), 0o777);
            entry(b, b"current", Kind::Symlink("./bin"), 0o777);
            entry(b, b"dangling", Kind::Symlink("not/there"), 0o777);
        }),
    );
    let p = fx
        .prepare(&rel, &fx.trusted(), DEFAULT_MAX_UNPACKED)
        .expect("inside symlinks");
    assert_eq!(p.unpacked_size, 10);
}

#[test]
fn symlink_replacing_a_directory_is_refused() {
    let (entry, problem, _) = refused(|b| entry(b, b"bin", Kind::Symlink("lib"), 0o777));
    assert_eq!(entry.as_deref(), Some("bin"));
    assert_eq!(problem, TarProblem::SymlinkOverDirectory);
}

#[test]
fn truncated_archive_is_refused() {
    let fx = Fx::new();
    let whole = gzip(&tar_of(|b| entry(b, b"data", Kind::File(&[7u8; 50_000]), 0o644)));
    // Signed as it is, so only the inspection can notice.
    let rel = fx.add("cut.tar.gz", &whole[..whole.len() / 2]);
    let e = err(fx.prepare(&rel, &fx.trusted(), DEFAULT_MAX_UNPACKED));
    assert!(
        matches!(
            &e,
            ArtifactError::Tarball {
                problem: TarProblem::Corrupt { .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn control_characters_in_names_are_refused_and_shown_escaped() {
    let (entry, problem, msg) = refused(|b| entry(b, b"bin/\x1b[2Jevil", Kind::File(b"x"), 0o644));
    assert_eq!(problem, TarProblem::ControlCharacter);
    assert_eq!(entry.as_deref(), Some("bin/\\u{1b}[2Jevil"));
    assert!(!msg.contains('\x1b'), "{msg:?}");
}

#[test]
fn oversize_is_refused() {
    let fx = Fx::new();
    let big = vec![b'x'; 4000];
    let rel = fx.add(
        "big.tar.gz",
        &gzip(&tar_of(|b| entry(b, b"data", Kind::File(&big), 0o644))),
    );
    let e = err(fx.prepare(&rel, &fx.trusted(), 3999));
    let msg = e.to_string();
    assert!(
        matches!(
            &e,
            ArtifactError::Tarball {
                problem: TarProblem::TooLarge { limit: 3999 },
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("3999"), "{msg}");
    fx.prepare(&rel, &fx.trusted(), 4000)
        .expect("exactly at the limit");
}

#[test]
fn not_a_gzip_is_refused_with_a_clear_message() {
    let fx = Fx::new();
    let plain = tar_of(|b| entry(b, b"VERSION", Kind::File(b"1\n"), 0o644));
    let rel = fx.add("plain.tar.gz", &plain);
    let e = err(fx.prepare(&rel, &fx.trusted(), DEFAULT_MAX_UNPACKED));
    let msg = e.to_string();
    assert!(
        matches!(
            &e,
            ArtifactError::Tarball {
                problem: TarProblem::NotGzip { .. },
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("not a gzip-compressed tar archive"), "{msg}");
    assert!(msg.contains("uncompressed tar"), "{msg}");

    let rel = fx.add(
        "text.tar.gz",
        &gzip(b"this is not a tar archive at all, just text"),
    );
    let e = err(fx.prepare(&rel, &fx.trusted(), DEFAULT_MAX_UNPACKED));
    assert!(
        matches!(
            &e,
            ArtifactError::Tarball {
                problem: TarProblem::NotTar { .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn entries_hidden_after_the_end_of_archive_are_refused() {
    // A lone zero block, then more entries: some tar readers carry on and unpack them.
    let mut raw = tar_of(|b| entry(b, b"VERSION", Kind::File(b"1\n"), 0o644));
    raw.truncate(raw.len() - 512);
    raw.extend(tar_of(|b| entry(b, b"../../etc/evil", Kind::File(b"x"), 0o644)));
    let fx = Fx::new();
    let rel = fx.add("hidden.tar.gz", &gzip(&raw));
    let e = err(fx.prepare(&rel, &fx.trusted(), DEFAULT_MAX_UNPACKED));
    assert!(
        matches!(
            &e,
            ArtifactError::Tarball {
                problem: TarProblem::TrailingData,
                ..
            }
        ),
        "{e}"
    );

    // The same through a second gzip member, which `gzip -d` (and so `tar -z`) also reads.
    let mut two = gzip(&tar_of(|b| entry(b, b"VERSION", Kind::File(b"1\n"), 0o644)));
    two.extend(gzip(&tar_of(|b| {
        entry(b, b"../../etc/evil", Kind::File(b"x"), 0o644)
    })));
    let rel = fx.add("members.tar.gz", &two);
    let e = err(fx.prepare(&rel, &fx.trusted(), DEFAULT_MAX_UNPACKED));
    assert!(
        matches!(
            &e,
            ArtifactError::Tarball {
                problem: TarProblem::TrailingData,
                ..
            }
        ),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// HTTPS (no external network: a closed port on loopback)

#[test]
fn https_to_a_closed_port_is_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let fx = Fx::new();
    let url = format!("https://127.0.0.1:{port}/python-3.11.9.tar.gz");

    // The signature is fetched first.
    let e = err(fx.prepare_with(
        &ArtifactRef::Url(url.clone()),
        &ArtifactRef::Url(format!("{url}.minisig")),
        &"0".repeat(64),
        &fx.trusted(),
        DEFAULT_MAX_UNPACKED,
    ));
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            ArtifactError::Fetch {
                what: "signature",
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains(&format!("{url}.minisig")), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");

    // A signature that is there (in the repository), the artifact behind the closed port.
    let rel = fx.add("python.tar.gz", &good_tarball());
    let e = err(fx.prepare_with(
        &ArtifactRef::Url(url.clone()),
        &ArtifactRef::Repo(format!("{rel}.minisig")),
        &sha256(&fx.path(&rel)),
        &fx.trusted(),
        DEFAULT_MAX_UNPACKED,
    ));
    let msg = e.to_string();
    assert!(
        matches!(e, ArtifactError::Fetch { what: "artifact", .. }),
        "{msg}"
    );
    assert_names_artifact(&msg, &url);
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    assert_eq!(fx.cache_entries(), Vec::<String>::new());
}

#[test]
fn bad_file_urls_and_missing_files_are_clear_errors() {
    let fx = Fx::new();
    let e = err(fx.prepare_with(
        &ArtifactRef::Url("file://server/share/x.tar.gz".into()),
        &ArtifactRef::Url("file://server/share/x.tar.gz.minisig".into()),
        &"0".repeat(64),
        &fx.trusted(),
        DEFAULT_MAX_UNPACKED,
    ));
    assert!(matches!(e, ArtifactError::BadUrl { .. }), "{e}");
    assert!(e.to_string().contains("file:///ABSOLUTE/PATH"), "{e}");

    // Signed, but the artifact itself is not there.
    let rel = fx.add("python.tar.gz", &good_tarball());
    let e = err(fx.prepare_with(
        &ArtifactRef::Repo("artifacts/missing.tar.gz".into()),
        &ArtifactRef::Repo(format!("{rel}.minisig")),
        &"0".repeat(64),
        &fx.trusted(),
        DEFAULT_MAX_UNPACKED,
    ));
    assert!(matches!(e, ArtifactError::Fetch { what: "artifact", .. }), "{e}");
    assert!(e.to_string().contains("not in the repository"), "{e}");

    let e = err(fx.prepare_with(
        &ArtifactRef::Repo(rel.clone()),
        &ArtifactRef::Repo(format!("{rel}.minisig")),
        "abc",
        &fx.trusted(),
        DEFAULT_MAX_UNPACKED,
    ));
    assert!(matches!(e, ArtifactError::InvalidSha256 { .. }), "{e}");
}

#[test]
fn a_cached_verification_does_not_vouch_for_another_key_with_the_same_id() {
    let fx = Fx::new();
    let rel = fx.add("python-3.11.9.tar.gz", &good_tarball());
    fx.prepare(&rel, &fx.trusted(), DEFAULT_MAX_UNPACKED)
        .expect("verified once, and remembered");
    // A different key carrying the fleet key's id (ids are chosen by whoever makes a key).
    let other = fx.other_key("other");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import base64,sys; a=base64.b64decode(sys.argv[1]); b=base64.b64decode(sys.argv[2]); print(base64.b64encode(b[:2]+a[2:10]+b[10:]).decode())",
            &fx.key.b64,
            &other.b64,
        ])
        .output()
        .expect("python3");
    assert!(out.status.success());
    let forged = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let trust = TrustPolicy::new(&[forged], true, None).expect("a well-formed key");
    match fx.prepare(&rel, &trust, DEFAULT_MAX_UNPACKED) {
        Err(ArtifactError::BadSignature { .. }) => {}
        other => panic!("expected a bad signature, got {other:?}"),
    }
}
