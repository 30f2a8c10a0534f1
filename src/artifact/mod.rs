//! Artifacts: getting a runtime's tarball onto the controller, verified, before any host is
//! touched (DESIGN §6.1, §9).
//!
//! [`ArtifactCache::prepare`] fetches an artifact (a repository path through [`RepoReader`], a
//! `file:///` path, or `https://`) into a content-addressed cache, checks its sha256 against the
//! manifest, verifies its minisign signature against the [`TrustPolicy`], and inspects every
//! entry of the tarball (no absolute names, `..`, hardlinks, devices, FIFOs, setuid/setgid/
//! sticky bits, escaping symlinks, or more than the unpacked-size limit). Only then may the
//! rollout stream it to hosts; a failure here blocks every host that needs the artifact.
//!
//! Artifacts can be many gigabytes, so nothing here holds one in memory: the fetch streams into
//! a temporary file while hashing and feeding minisign's streaming verifier in the same pass,
//! and the inspection streams the file through gzip and tar.
//!
//! Order of checks, and why: the signature file is read first (it is small), so an untrusted or
//! missing signature fails before a big download; then the artifact's sha256 (the manifest pins
//! the exact bytes), then the signature (was it signed by a trusted key), and only then is the
//! tarball parsed, so the tar parser never sees bytes that are not authenticated (when
//! signatures are in use).

mod error;
mod failure;
mod fetch;
mod inspect;
mod repository;
mod signature;
mod stream;
mod trust;
mod verified;

use stream::*;

pub use repository::{RepositoryCheck, check_repository};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use minisign_verify::StreamVerifier;
use sha2::{Digest, Sha256};

pub use error::{ArtifactError, Origin, TarProblem};
pub use failure::{ArtifactFailure, ArtifactField, locate};
pub use inspect::{
    COMPONENT_LIMIT, NAME_LIMIT, PATH_LIMIT, TarEntry, TarEntryKind, TarballRefused, inspect_tarball,
};
pub(crate) use trust::base64_decode;
pub use trust::{KeyId, TrustPolicy};

use crate::manifest::model::ArtifactRef;
use fetch::{OpenError, Source};

/// Read access to repository files at the revision being applied (implemented by
/// `crate::repo::FleetRepo`). Paths are relative to the fleet root, as written in manifests.
/// A missing file must be reported as [`io::ErrorKind::NotFound`]: for a signature that means
/// "unsigned", which `require_signatures = false` accepts.
pub trait RepoReader {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send + '_>>;

    /// An identity of the file's content that is cheaper than reading it (a Git blob id, a
    /// stat fingerprint), so a file already checked is not hashed again; `None` when there is
    /// none, and then the file is read every time.
    fn content_id(&self, _path: &str) -> Option<String> {
        None
    }
}

/// Whether a check may open URLs (`https://`, `file://`) for what the cache does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Network {
    Allowed,
    /// Only the repository and the cache (saved copies of URL signatures).
    Refused,
}

/// The default limit on an artifact's unpacked size (DESIGN §6.1: 10 GiB).
pub const DEFAULT_MAX_UNPACKED: u64 = 10 << 30;

/// Signature files are a few hundred bytes; anything bigger is a mistake (or the artifact).
const SIGNATURE_LIMIT: u64 = 64 * 1024;

/// Connecting, waiting for a response, and each read of an HTTPS download are bounded by this.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// One artifact to prepare: a runtime version as the manifests describe it.
#[derive(Debug, Clone, Copy)]
pub struct ArtifactRequest<'a> {
    pub runtime: &'a str,
    pub version: &'a str,
    pub artifact: &'a ArtifactRef,
    pub signature: &'a ArtifactRef,
    /// As in the manifest: 64 hex digits (either case).
    pub sha256: &'a str,
}

/// A verified artifact in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The verified tarball in the cache, named by its sha256. Hosts still check the sha256
    /// of what they receive, so the file may be streamed from here as is.
    pub path: PathBuf,
    /// Lower-case hex.
    pub sha256: String,
    /// Bytes of the (compressed) tarball.
    pub size: u64,
    /// Total bytes of the regular files in the tarball.
    pub unpacked_size: u64,
    /// The id of the trusted key that signed it; `None` when it is unsigned, which only
    /// `require_signatures = false` allows (worth recording in the audit log).
    pub signed_by: Option<String>,
    /// Whether the bytes were fetched by this call (false: the cached copy was reused).
    pub fetched: bool,
}

/// How much room an artifact takes on a host: its upload (into `state_dir/staging`) and its
/// unpacked files (into `runtimes_dir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactSize {
    /// Bytes of the (compressed) tarball.
    pub upload: u64,
    /// Total bytes of its regular files.
    pub unpacked: u64,
}

impl ArtifactSize {
    /// The sizes of a verified artifact.
    pub fn of(p: &Prepared) -> ArtifactSize {
        ArtifactSize {
            upload: p.size,
            unpacked: p.unpacked_size,
        }
    }
}

/// The content-addressed artifact cache: `<store>/cache/artifacts/<sha256>`.
///
/// A file is only renamed to its sha256 name after its content was hashed and matched, so a
/// file of that name holds those bytes (it is hashed again on reuse, against disk corruption).
/// Downloads in progress are `.partial-<random>` files in the same directory, removed on
/// failure; one left behind by a crash is garbage and safe to delete. Several processes may
/// prepare the same artifact at once: each writes its own temporary file and the renames are
/// atomic.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    agent: ureq::Agent,
    http_timeout: Duration,
    roots: Option<ureq::tls::RootCerts>,
    /// The most bytes, and the most time, one HTTPS download may take.
    https_max: u64,
    https_budget: Duration,
}

pub use fetch::{HTTPS_DOWNLOAD_BUDGET, MAX_HTTPS_DOWNLOAD};

impl ArtifactCache {
    /// A cache rooted at `dir`, created on first use.
    pub fn new(dir: PathBuf) -> ArtifactCache {
        ArtifactCache {
            dir,
            agent: fetch::agent(DEFAULT_HTTP_TIMEOUT, None),
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            roots: None,
            https_max: MAX_HTTPS_DOWNLOAD,
            https_budget: HTTPS_DOWNLOAD_BUDGET,
        }
    }

    /// Bounds connecting, waiting for a response, and each read of HTTPS downloads (default
    /// [`DEFAULT_HTTP_TIMEOUT`]): a stalled download fails after this long.
    pub fn with_http_timeout(mut self, timeout: Duration) -> ArtifactCache {
        self.http_timeout = timeout;
        self.agent = fetch::agent(timeout, self.roots.as_ref());
        self
    }

    /// Bounds each HTTPS download: at most `max_bytes` (default [`MAX_HTTPS_DOWNLOAD`]) and
    /// `budget` from request to last byte (default [`HTTPS_DOWNLOAD_BUDGET`]).
    pub fn with_https_limits(mut self, max_bytes: u64, budget: Duration) -> ArtifactCache {
        self.https_max = max_bytes;
        self.https_budget = budget;
        self
    }

    /// Trusts the certificate authorities in `pem` for HTTPS instead of the bundled Mozilla
    /// roots. For tests against a local HTTPS server.
    #[doc(hidden)]
    pub fn with_tls_roots_pem(mut self, pem: &[u8]) -> Result<ArtifactCache, String> {
        let cert = ureq::tls::Certificate::from_pem(pem).map_err(|e| e.to_string())?;
        self.roots = Some(ureq::tls::RootCerts::new_with_certs(&[cert]));
        self.agent = fetch::agent(self.http_timeout, self.roots.as_ref());
        Ok(self)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fetches the artifact into the cache (reusing a cached copy whose sha256 matches), checks
    /// its sha256, verifies its minisign signature against `trust`, and inspects every tarball
    /// entry against `max_unpacked` (bytes of regular files).
    ///
    /// The signature and the tarball are checked on every call, cached or not: trust and the
    /// limit may have changed since the artifact was fetched.
    ///
    /// A download is cut off past `max_unpacked` + 1/8 + 64 MiB: a real tarball within the
    /// limit is not that big, and the cut keeps a broken or hostile server from filling the
    /// store's disk before the sha256 check could refuse the bytes.
    ///
    /// Blocking (file and network I/O): call it from `spawn_blocking` in async code.
    pub fn prepare(
        &self,
        req: &ArtifactRequest<'_>,
        repo: &dyn RepoReader,
        trust: &TrustPolicy,
        max_unpacked: u64,
    ) -> Result<Prepared, ArtifactError> {
        self.check(req, repo, trust, max_unpacked, Network::Allowed)
    }

    /// Checks a URL artifact the cache already holds, exactly as [`prepare`](Self::prepare)
    /// would, reading nothing but the repository and the cache (DESIGN §3: `plan` and
    /// `preview` check the URL artifacts they need when the cache holds them). A URL
    /// signature is the copy saved when the artifact was last prepared; `apply` fetches it
    /// again. `None` when the cache lacks the artifact or that signature (then only `apply`
    /// can check it), and for repository artifacts, which [`check_repository`] covers.
    ///
    /// Blocking (file I/O, hashing when the cache has no record of a check that passed).
    pub fn check_cached(
        &self,
        req: &ArtifactRequest<'_>,
        repo: &dyn RepoReader,
        trust: &TrustPolicy,
        max_unpacked: u64,
    ) -> Option<Result<Prepared, ArtifactError>> {
        if matches!(req.artifact, ArtifactRef::Repo(_)) {
            return None;
        }
        // Not held: nothing else is looked at.
        let expected = req.sha256.to_ascii_lowercase();
        if is_sha256_hex(&expected)
            && !fs::symlink_metadata(self.dir.join(&expected)).is_ok_and(|m| m.is_file())
        {
            return None;
        }
        self.check_offline(req, repo, trust, max_unpacked)
    }

    /// [`prepare`](Self::prepare) without opening any URL, `file://` included: only the
    /// repository and the cache are read (saved copies of URL signatures). What cannot be
    /// checked so is `None`. `validate`, `plan` and `preview` check this way, so a manifest
    /// (an unmerged pull request's, say) cannot make them read the controller's files or
    /// reach the network. It adds no artifact copy to the cache, only the small markers of
    /// checks that passed (then [`Prepared::path`] may name no file: use the sizes).
    pub fn check_offline(
        &self,
        req: &ArtifactRequest<'_>,
        repo: &dyn RepoReader,
        trust: &TrustPolicy,
        max_unpacked: u64,
    ) -> Option<Result<Prepared, ArtifactError>> {
        match self.check(req, repo, trust, max_unpacked, Network::Refused) {
            Err(ArtifactError::NotCached { .. }) => None,
            // The saved copy may be older than what the URL serves now (re-signed in place
            // after a key rotation): only `apply`, which fetches it again, can tell.
            Err(
                e @ (ArtifactError::UntrustedKey { .. }
                | ArtifactError::BadSignature { .. }
                | ArtifactError::MalformedSignature { .. }
                | ArtifactError::LegacySignature { .. }),
            ) if !matches!(req.signature, ArtifactRef::Repo(_)) => Some(Err(ArtifactError::SavedSignature {
                url: req.signature.to_string(),
                source: Box::new(e),
            })),
            other => Some(other),
        }
    }

    fn check(
        &self,
        req: &ArtifactRequest<'_>,
        repo: &dyn RepoReader,
        trust: &TrustPolicy,
        max_unpacked: u64,
        network: Network,
    ) -> Result<Prepared, ArtifactError> {
        let at = || {
            Box::new(Origin {
                runtime: req.runtime.to_owned(),
                version: req.version.to_owned(),
                location: req.artifact.to_string(),
            })
        };
        let expected = req.sha256.to_ascii_lowercase();
        if !is_sha256_hex(&expected) {
            return Err(ArtifactError::InvalidSha256 {
                at: at(),
                given: req.sha256.chars().take(80).collect(),
            });
        }

        let signature = self.signature(req, repo, trust, &at, network)?;
        let cached = self.dir.join(&expected);

        // Checked before under the same signature, trust and limit, and (for a repository
        // artifact) the repository file is the one that hashed to `expected` then: nothing to
        // read again. Anything else goes the whole way below.
        // Which signature, made by which trusted key (ids alone can collide).
        let signed = signature
            .as_ref()
            .map(|(f, _)| format!("{}:{}", f.digest, trust.key_digest(f.key_id).unwrap_or("?")));
        let marker = verified::key(
            &expected,
            signed.as_deref(),
            trust.require_signatures(),
            max_unpacked,
        );
        let source = match req.artifact {
            ArtifactRef::Repo(path) => Some(repo.content_id(path)),
            _ => None,
        };
        // A reader that cannot tell a file's identity cheaply keeps the old rule: the copy
        // cached under its sha256 stands for it (`FleetRepo` always can).
        let source_known = match &source {
            None | Some(None) => true,
            Some(Some(id)) => verified::source_is(&self.dir, id, &expected),
        };
        // A check that opens no URL adds no copies to the cache (an unmerged pull request's
        // blobs could fill its disk), so for a repository file of known identity the marker
        // alone stands for the check; `apply` needs the copy it uploads and makes it.
        let copy_needed = network == Network::Allowed || !matches!(source, Some(Some(_)));
        if source_known
            && let Some(v) = verified::load(&self.dir, &marker)
            && (!copy_needed || fs::symlink_metadata(&cached).is_ok_and(|m| m.is_file() && m.len() == v.size))
        {
            return Ok(Prepared {
                path: cached,
                sha256: expected,
                size: v.size,
                unpacked_size: v.unpacked_size,
                signed_by: v.signed_by,
                fetched: false,
            });
        }
        let verifier = match &signature {
            Some((file, key)) => Some(key.verify_stream(&file.signature).map_err(|e| {
                // The key was chosen by id and legacy signatures were refused, so this is
                // not expected; report it as a malformed signature rather than panic.
                ArtifactError::MalformedSignature {
                    at: at(),
                    signature: req.signature.to_string(),
                    reason: e.to_string(),
                }
            })?),
            None => None,
        };

        // A repository file not known to hash to `expected` is read again even when a good
        // copy is cached: `validate` must notice a tampered file in the repository.
        let reused = if source_known {
            self.reuse(&cached, &expected, verifier.clone(), &at)?
        } else {
            None
        };
        let (mut file, mut digests, fetched) = match reused {
            Some((file, digests)) => (file, digests, false),
            None if network == Network::Refused && !matches!(req.artifact, ArtifactRef::Repo(_)) => {
                return Err(ArtifactError::NotCached { at: at() });
            }
            None => {
                let limit = max_unpacked
                    .saturating_add(max_unpacked / 8)
                    .saturating_add(64 << 20);
                let keep = network == Network::Allowed;
                let (file, digests) =
                    self.fetch(req, repo, &cached, &expected, verifier, limit, keep, &at)?;
                (file, digests, true)
            }
        };

        let signed_by = match (&mut digests.verifier, &signature) {
            (Some(v), Some((sig, _))) => {
                v.finalize().map_err(|_| ArtifactError::BadSignature {
                    at: at(),
                    signature: req.signature.to_string(),
                    key_id: sig.key_id.to_string(),
                })?;
                Some(sig.key_id.to_string())
            }
            _ => None,
        };

        file.rewind().map_err(|source| ArtifactError::Cache {
            at: at(),
            path: cached.clone(),
            source,
        })?;
        let unpacked_size =
            inspect::inspect(&mut file, max_unpacked).map_err(|r| ArtifactError::Tarball {
                at: at(),
                entry: r.entry,
                problem: r.problem,
            })?;
        verified::save(
            &self.dir,
            &marker,
            &verified::Verified {
                size: digests.size,
                unpacked_size,
                signed_by: signed_by.clone(),
            },
        );
        if let Some(Some(id)) = &source {
            verified::remember_source(&self.dir, id, &expected);
        }
        Ok(Prepared {
            path: cached,
            sha256: expected,
            size: digests.size,
            unpacked_size,
            signed_by,
            fetched,
        })
    }

    /// Hashes a cached copy; returns it, positioned anywhere, when its sha256 matches. A copy
    /// that does not match (disk corruption, or an interrupted writer from an older version) is
    /// deleted so that it is fetched again.
    fn reuse<'v>(
        &self,
        path: &Path,
        expected: &str,
        verifier: Option<StreamVerifier<'v>>,
        at: &dyn Fn() -> Box<Origin>,
    ) -> Result<Option<(File, Digests<'v>)>, ArtifactError> {
        let cache_err = |source| ArtifactError::Cache {
            at: at(),
            path: path.to_owned(),
            source,
        };
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(cache_err(io::Error::other(
                    "is not a regular file; remove it so the artifact can be fetched again",
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cache_err(e)),
        }
        let mut file = File::open(path).map_err(cache_err)?;
        let mut digests = Digests::new(verifier);
        pump(&mut file, None, &mut digests, u64::MAX).map_err(|e| match e {
            PumpError::Read(e) | PumpError::Write(e) => cache_err(e),
            PumpError::TooLarge => cache_err(io::Error::other("too large")),
        })?;
        if digests.hex() == expected {
            return Ok(Some((file, digests)));
        }
        tracing::warn!(path = %path.display(), "cached artifact does not match its sha256; fetching it again");
        fs::remove_file(path).map_err(cache_err)?;
        Ok(None)
    }

    /// Streams the artifact into a temporary file in the cache while hashing it, checks the
    /// sha256, then makes it durable (fsync, rename, fsync of the directory) — or, without
    /// `keep`, hands back the open temporary file, already unlinked, so the check leaves no
    /// copy behind.
    #[allow(clippy::too_many_arguments)]
    fn fetch<'v>(
        &self,
        req: &ArtifactRequest<'_>,
        repo: &dyn RepoReader,
        cached: &Path,
        expected: &str,
        verifier: Option<StreamVerifier<'v>>,
        limit: u64,
        keep: bool,
        at: &dyn Fn() -> Box<Origin>,
    ) -> Result<(File, Digests<'v>), ArtifactError> {
        let location = req.artifact.to_string();
        let src = fetch::source(req.artifact).map_err(|reason| ArtifactError::BadUrl {
            at: at(),
            what: "artifact",
            url: location.clone(),
            reason,
        })?;
        let reader = fetch::open(&src, repo, &self.agent, self.https_budget)
            .map_err(|e| open_error(e, at, "artifact", &location))?;
        let https = matches!(src, Source::Https(_));
        let https_cap = https && self.https_max < limit;
        let limit = if https_cap { self.https_max } else { limit };

        fs::create_dir_all(&self.dir).map_err(|source| ArtifactError::Cache {
            at: at(),
            path: self.dir.clone(),
            source,
        })?;
        let mut partial = Partial::create(&self.dir).map_err(|(path, source)| ArtifactError::Cache {
            at: at(),
            path,
            source,
        })?;
        let cache_err = |path: &Path, source| ArtifactError::Cache {
            at: at(),
            path: path.to_owned(),
            source,
        };
        let mut digests = Digests::new(verifier);
        pump(reader, Some(&mut partial.file), &mut digests, limit).map_err(|e| match e {
            PumpError::Read(e) if fetch::OverBudget::of(&e).is_some() => ArtifactError::DownloadTimedOut {
                at: at(),
                url: location.clone(),
                budget: self.https_budget,
            },
            PumpError::TooLarge if https_cap => ArtifactError::HttpsTooLarge {
                at: at(),
                url: location.clone(),
                limit,
            },
            PumpError::Read(e) => ArtifactError::Fetch {
                at: at(),
                what: "artifact",
                location: location.clone(),
                reason: if https {
                    format!("the download failed: {e}")
                } else {
                    e.to_string()
                },
            },
            PumpError::Write(e) => cache_err(&partial.path, e),
            PumpError::TooLarge => ArtifactError::DownloadTooLarge { at: at(), limit },
        })?;
        let actual = digests.hex();
        if actual != expected {
            return Err(ArtifactError::Sha256Mismatch {
                at: at(),
                expected: expected.to_owned(),
                actual,
            });
        }
        if !keep {
            let file = partial
                .file
                .try_clone()
                .map_err(|e| cache_err(&partial.path, e))?;
            drop(partial); // removes the name; the open file lives on until the check ends
            return Ok((file, digests));
        }
        partial.file.sync_all().map_err(|e| cache_err(&partial.path, e))?;
        let file = partial.persist(cached).map_err(|e| cache_err(cached, e))?;
        // The rename is only durable once the directory is synced.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| cache_err(&self.dir, e))?;
        Ok((file, digests))
    }
}

/// 64 hexadecimal digits: a sha256 as manifests write it, and a safe name in the cache.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn open_error(
    e: OpenError,
    at: &dyn Fn() -> Box<Origin>,
    what: &'static str,
    location: &str,
) -> ArtifactError {
    match e {
        OpenError::NotFound(reason) | OpenError::Other(reason) => ArtifactError::Fetch {
            at: at(),
            what,
            location: location.to_owned(),
            reason,
        },
        OpenError::Status(status) => ArtifactError::HttpStatus {
            at: at(),
            what,
            url: location.to_owned(),
            status,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers share the cache and the policy across threads and wrap errors in `anyhow`.
    #[test]
    fn shareable_across_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<ArtifactCache>();
        send_sync::<TrustPolicy>();
        send_sync::<ArtifactError>();
        send_sync::<Prepared>();
    }

    #[test]
    fn digests_hex_is_lower_case_sha256() {
        let mut d = Digests::new(None);
        d.update(b"abc");
        assert_eq!(
            d.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.size, 3);
    }
}
