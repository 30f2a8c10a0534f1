//! Where artifact bytes come from: the repository (through [`RepoReader`]), a `file:///` path,
//! or `https://` (ureq with rustls). Everything is handed out as a reader so the caller can
//! stream it; nothing here holds an artifact in memory.

use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::manifest::model::ArtifactRef;

use super::RepoReader;

/// A parsed location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source<'a> {
    Repo(&'a str),
    File(PathBuf),
    Https(&'a str),
}

/// Parses an artifact or signature location. The error is the rest of a sentence that starts
/// with the URL.
pub(crate) fn source(r: &ArtifactRef) -> Result<Source<'_>, String> {
    match r {
        ArtifactRef::Repo(p) => Ok(Source::Repo(p)),
        ArtifactRef::Url(u) => {
            if let Some(rest) = u.strip_prefix("file://") {
                file_path(rest).map(Source::File)
            } else if u.starts_with("https://") {
                Ok(Source::Https(u))
            } else {
                Err(
                    "has an unsupported scheme; use https://, file:///ABSOLUTE/PATH or a repository path"
                        .into(),
                )
            }
        }
    }
}

/// The path of a `file://` URL: `file:///abs/path` only, percent-escapes decoded. A host part
/// (`file://server/x`) is refused rather than guessed at, since it would mean a network share.
fn file_path(rest: &str) -> Result<PathBuf, String> {
    if !rest.starts_with('/') {
        return Err(
            "has a host part or a relative path; file URLs must be file:///ABSOLUTE/PATH (three slashes)"
                .into(),
        );
    }
    if rest.contains(['?', '#']) {
        return Err("has a query or fragment; write `?` as %3F and `#` as %23 in file URLs".into());
    }
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "has a `%` that is not followed by two hexadecimal digits".to_owned())?;
            if hex == 0 {
                return Err("contains %00, which no path can".into());
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(PathBuf::from(std::ffi::OsString::from_vec(out)))
}

/// Why a source could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The file does not exist (HTTP 404 or 410): for a signature this means "unsigned".
    NotFound(String),
    Status(u16),
    Other(String),
}

/// The most bytes one HTTPS download may bring (the manifests give no size). The sha256 is
/// only known at the end, so without a cap a URL serving endless bytes would fill the store's
/// disk first. 4 GiB: a compressed runtime within the default 10 GiB unpacked-size limit is
/// well below it; a bigger artifact can come from the repository or a `file://` path.
pub const MAX_HTTPS_DOWNLOAD: u64 = 4 << 30;

/// The most time one HTTPS download (signature or artifact, from the request to the last
/// byte) may take: 4 GiB at about 1.2 MiB/s. A stalled read fails sooner (the per-read
/// timeout); this bounds a server that trickles bytes forever.
pub const HTTPS_DOWNLOAD_BUDGET: Duration = Duration::from_secs(3600);

/// What ends a download that ran past its time budget (inside an `io::Error`).
#[derive(Debug)]
pub(crate) struct OverBudget(pub Duration);

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the download took longer than {:?}", self.0)
    }
}

impl std::error::Error for OverBudget {}

impl OverBudget {
    /// The budget, when `e` is a download that ran out of time.
    pub(crate) fn of(e: &io::Error) -> Option<Duration> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<OverBudget>())
            .map(|b| b.0)
    }
}

/// A reader that fails once its deadline has passed (checked before every read).
struct Budgeted<R> {
    inner: R,
    deadline: Instant,
    budget: Duration,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, OverBudget(self.budget)));
        }
        self.inner.read(buf)
    }
}

/// Builds the HTTP agent: rustls, https only (a redirect to http:// is refused), and bounded
/// waits for connecting, for the response and for each read. The whole download is bounded
/// by [`open`]'s budget. `roots`: the certificate authorities to trust instead of the
/// bundled Mozilla roots (tests use their own).
pub(crate) fn agent(timeout: Duration, roots: Option<&ureq::tls::RootCerts>) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(roots) = roots {
        tls = tls.root_certs(roots.clone());
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .https_only(true)
        .http_status_as_error(false)
        .timeout_resolve(Some(timeout))
        .timeout_connect(Some(timeout))
        .timeout_send_request(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .timeout_per_read(Some(timeout))
        .user_agent(concat!("flotilla/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// Opens a source for streaming. An HTTPS body fails once `budget` has passed since the
/// request was sent.
pub(crate) fn open<'r>(
    src: &Source<'_>,
    repo: &'r dyn RepoReader,
    agent: &ureq::Agent,
    budget: Duration,
) -> Result<Box<dyn Read + 'r>, OpenError> {
    let deadline = Instant::now() + budget;
    match src {
        Source::Repo(p) => match repo.open(p) {
            Ok(r) => Ok(r),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(OpenError::NotFound(format!(
                "not in the repository at this revision ({e}); commit it, or fix the path"
            ))),
            Err(e) => Err(OpenError::Other(format!(
                "cannot read it from the repository: {e}"
            ))),
        },
        Source::File(path) => match std::fs::File::open(path) {
            Ok(f) => match f.metadata() {
                Ok(m) if m.is_dir() => Err(OpenError::Other(format!(
                    "{} is a directory, not a file",
                    path.display()
                ))),
                Ok(_) => Ok(Box::new(f)),
                Err(e) => Err(OpenError::Other(format!("{}: {e}", path.display()))),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(OpenError::NotFound(format!(
                "{} does not exist on this machine",
                path.display()
            ))),
            Err(e) => Err(OpenError::Other(format!("{}: {e}", path.display()))),
        },
        Source::Https(url) => match agent.get(*url).call() {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if resp.status().is_success() {
                    Ok(Box::new(Budgeted {
                        inner: resp.into_body().into_reader(),
                        deadline,
                        budget,
                    }))
                } else if status == 404 || status == 410 {
                    Err(OpenError::NotFound(format!("the server answered HTTP {status}")))
                } else {
                    Err(OpenError::Status(status))
                }
            }
            Err(e) => Err(OpenError::Other(http_reason(&e))),
        },
    }
}

fn http_reason(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t}); check the network, or raise the HTTP timeout"),
        ureq::Error::HostNotFound => "the host name does not resolve; check the URL and DNS".into(),
        ureq::Error::RequireHttpsOnly(_) => {
            "the server redirected to a plain http:// URL, which is refused".into()
        }
        ureq::Error::Io(io) => format!("{io}; check the URL, that the server is up, and the network"),
        other => format!("{other}; check the URL, that the server is up, and the network"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_absolute_and_decoded() {
        let r = ArtifactRef::Url("file:///srv/a%20b/x.tar.gz".into());
        assert_eq!(source(&r), Ok(Source::File(PathBuf::from("/srv/a b/x.tar.gz"))));
        for bad in [
            "file://host/x.tar.gz",
            "file://x.tar.gz",
            "file:///x?y",
            "file:///x%2",
            "file:///x%00",
            "http://example.com/x",
        ] {
            assert!(source(&ArtifactRef::Url(bad.into())).is_err(), "{bad}");
        }
        let r = ArtifactRef::Url("https://example.com/x.tar.gz".into());
        assert_eq!(source(&r), Ok(Source::Https("https://example.com/x.tar.gz")));
    }
}
