//! HTTPS artifact downloads are bounded in size and in time (hardening, also-to-check list):
//! a URL that serves endless bytes, or trickles them forever, must not make the controller
//! download gigabytes or hang before the sha256 check could refuse them. Against a real HTTPS
//! server on 127.0.0.1 (Python's http.server behind TLS, with a certificate authority made
//! by the `openssl` CLI for the test), with small caps set through the cache's knobs.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Keys;
use flotilla::artifact::{
    ArtifactCache, ArtifactError, ArtifactRequest, DEFAULT_MAX_UNPACKED, RepoReader, TrustPolicy,
};
use flotilla::manifest::model::ArtifactRef;

/// Serves, over TLS on 127.0.0.1: `/endless` (bytes until the client stops reading, no
/// Content-Length), `/trickle` (1 KiB every 50 ms, forever), `/good` (the file named by
/// argv[3]) and `/good.minisig` (its signature).
const SERVER: &str = r#"
import http.server, ssl, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        try:
            if self.path in ("/good", "/good.minisig"):
                data = open(sys.argv[3] + self.path[5:], "rb").read()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.end_headers()
            while True:
                if self.path == "/trickle":
                    self.wfile.write(b"x" * 1024)
                    self.wfile.flush()
                    time.sleep(0.05)
                else:
                    self.wfile.write(b"\0" * 65536)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

struct Server {
    child: Child,
    port: u16,
    /// The test certificate authority (PEM), to trust.
    ca: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority and a server certificate for 127.0.0.1, then the server.
fn https_server(good: &Path) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=flotilla test CA",
        "-days",
        "2",
    ]);
    openssl(d, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(d, &csr);
    std::fs::write(
        d.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SERVER)
        .arg(d.join("leaf.pem"))
        .arg(d.join("leaf.key"))
        .arg(good)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("the HTTPS server did not start: {line:?}")
    });
    Server {
        child,
        port,
        ca: std::fs::read(d.join("ca.pem")).unwrap(),
        _dir: dir,
    }
}

struct DirRepo(PathBuf);

impl RepoReader for DirRepo {
    fn open(&self, path: &str) -> std::io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(std::fs::File::open(self.0.join(path))?))
    }
}

/// A repository holding a small signed file `artifacts/good.tgz` (its signature is read from
/// the repository; the artifact from the server), and an artifact cache.
struct Fx {
    repo: tempfile::TempDir,
    cache: tempfile::TempDir,
    keys: Keys,
    server: Server,
}

impl Fx {
    fn new() -> Fx {
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(repo.path().join("artifacts")).unwrap();
        let good = repo.path().join("artifacts/good.tgz");
        // Archived from a directory of its own: tarring the directory the archive is being
        // written into made tar exit 1 ("file changed as we read it") now and then.
        std::fs::create_dir_all(repo.path().join("content/bin")).unwrap();
        std::fs::write(repo.path().join("content/bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
        let st = Command::new("tar")
            .arg("-czf")
            .arg(&good)
            .arg("-C")
            .arg(repo.path().join("content"))
            .arg("bin")
            .status()
            .unwrap();
        assert!(st.success());
        let keys = Keys::new();
        keys.sign(&good);
        let server = https_server(&good);
        Fx {
            repo,
            cache: tempfile::tempdir().unwrap(),
            keys,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.server.port)
    }

    /// The store's artifact cache, trusting the test CA.
    fn cache(&self) -> ArtifactCache {
        ArtifactCache::new(self.cache.path().join("artifacts"))
            .with_tls_roots_pem(&self.server.ca)
            .expect("the test CA")
    }

    /// The sha256 of the artifact the server serves at `/good`.
    fn sha(&self) -> String {
        flotilla::resolve::sha256_hex(&std::fs::read(self.repo.path().join("artifacts/good.tgz")).unwrap())
    }

    fn prepare(&self, path: &str, max_bytes: u64, budget: Duration) -> Result<(), ArtifactError> {
        let cache = self.cache().with_https_limits(max_bytes, budget);
        let sha = self.sha();
        let trust = TrustPolicy::new(&[self.keys.public()], true, None).expect("trust");
        let artifact = ArtifactRef::Url(self.url(path));
        let signature = ArtifactRef::Repo("artifacts/good.tgz.minisig".into());
        let req = ArtifactRequest {
            runtime: "python",
            version: "3.11.9",
            artifact: &artifact,
            signature: &signature,
            sha256: &sha,
        };
        cache
            .prepare(
                &req,
                &DirRepo(self.repo.path().to_owned()),
                &trust,
                DEFAULT_MAX_UNPACKED,
            )
            .map(|_| ())
    }

    /// Files left in the cache: a refused download leaves nothing.
    fn cache_entries(&self) -> usize {
        std::fs::read_dir(self.cache.path().join("artifacts"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }
}

fn names_the_artifact(msg: &str, url: &str) {
    assert!(msg.contains("runtime `python` version `3.11.9`"), "{msg}");
    assert!(msg.contains(url), "{msg}");
}

#[test]
fn the_test_server_serves_a_real_artifact_within_the_caps() {
    // The control: TLS to the test server works and the caps do not cut a real artifact.
    let fx = Fx::new();
    fx.prepare("/good", 1 << 20, Duration::from_secs(60))
        .expect("fetched and verified");
}

#[test]
fn an_endless_https_body_is_cut_off_at_the_cap() {
    let fx = Fx::new();
    let started = Instant::now();
    let e = fx
        .prepare("/endless", 1 << 20, Duration::from_secs(120))
        .expect_err("an endless body is refused");
    let msg = e.to_string();
    assert!(
        matches!(e, ArtifactError::HttpsTooLarge { limit, .. } if limit == 1 << 20),
        "{msg}"
    );
    names_the_artifact(&msg, &fx.url("/endless"));
    assert!(msg.contains("1048576 bytes"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "it stopped reading at once: {:?}",
        started.elapsed()
    );
    assert_eq!(fx.cache_entries(), 0, "no partial download is left");
}

#[test]
fn a_trickling_https_body_is_cut_off_at_the_time_budget() {
    let fx = Fx::new();
    let started = Instant::now();
    let e = fx
        .prepare("/trickle", 1 << 30, Duration::from_secs(2))
        .expect_err("a download past its budget is refused");
    let msg = e.to_string();
    assert!(matches!(e, ArtifactError::DownloadTimedOut { .. }), "{msg}");
    names_the_artifact(&msg, &fx.url("/trickle"));
    assert!(msg.contains("took longer than 2s"), "{msg}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "ended near its budget: {took:?}");
    assert_eq!(fx.cache_entries(), 0, "no partial download is left");
}

/// `plan` checks a URL artifact the cache holds without the network (DESIGN §3): with the
/// HTTPS signature saved when `apply` last fetched it, under today's trust. An artifact the
/// cache lacks is not checked (only `apply` can fetch it).
#[test]
fn a_cached_https_artifact_is_checked_again_without_the_network() {
    let mut fx = Fx::new();
    let sha = fx.sha();
    let (artifact, signature) = (
        ArtifactRef::Url(fx.url("/good")),
        ArtifactRef::Url(fx.url("/good.minisig")),
    );
    let req = ArtifactRequest {
        runtime: "python",
        version: "3.11.9",
        artifact: &artifact,
        signature: &signature,
        sha256: &sha,
    };
    let repo = DirRepo(fx.repo.path().to_owned());
    let trusted = TrustPolicy::new(&[fx.keys.public()], true, None).unwrap();
    assert!(
        fx.cache()
            .check_cached(&req, &repo, &trusted, DEFAULT_MAX_UNPACKED)
            .is_none(),
        "nothing cached yet: not checked, and nothing fetched"
    );
    assert_eq!(fx.cache_entries(), 0);
    fx.cache()
        .prepare(&req, &repo, &trusted, DEFAULT_MAX_UNPACKED)
        .expect("fetched and verified");

    // The server goes away: the check runs on what the cache holds.
    let _ = fx.server.child.kill();
    let _ = fx.server.child.wait();
    let ok = fx
        .cache()
        .check_cached(&req, &repo, &trusted, DEFAULT_MAX_UNPACKED)
        .expect("held")
        .expect("still good");
    assert_eq!(ok.sha256, sha);
    // The trusted keys changed since: the cached artifact fails, naming the key.
    let other = Keys::new();
    let rotated = TrustPolicy::new(&[other.public()], true, None).unwrap();
    // Found with the saved copy (the URL might serve a newer signature): a warning's error.
    match fx
        .cache()
        .check_cached(&req, &repo, &rotated, DEFAULT_MAX_UNPACKED)
    {
        Some(Err(e @ ArtifactError::SavedSignature { .. })) => {
            assert!(e.to_string().contains("signature by untrusted key"), "{e}");
            names_the_artifact(&e.to_string(), "/good");
        }
        other => panic!("expected an untrusted key, got {other:?}"),
    }
    // A smaller unpacked-size limit is checked too (the tarball is read again from the cache).
    match fx.cache().check_cached(&req, &repo, &trusted, 4) {
        Some(Err(ArtifactError::Tarball { .. })) => {}
        other => panic!("expected the size limit, got {other:?}"),
    }
}
