//! An artifact check that failed, as the engine carries it to the views: which runtime
//! version, which of its manifest keys the problem is about, and the message. Unlike
//! [`ArtifactError`] it can be cloned and serialised (it rides in reports), and it can point
//! at the line of `runtimes/<name>.toml` that needs fixing (DESIGN §3: file and line, like
//! every other problem).

use std::collections::HashMap;
use std::ops::Range;

use serde::Serialize;
use toml_edit::{Document, Item};

use super::ArtifactError;
use crate::diagnostic::{Diagnostic, Sources};

/// The most failures shown with their place: a manifest (a pull request's) can declare
/// thousands of versions, and each shown one quotes its file.
pub const MAX_SHOWN: usize = 100;

/// What to say about failures past [`MAX_SHOWN`], if there are any.
fn more_failures(total: usize) -> Option<String> {
    (total > MAX_SHOWN).then(|| {
        format!(
            "{} more artifact(s) fail their checks, not shown; fix the ones above and run `flotilla validate` again",
            total - MAX_SHOWN
        )
    })
}

/// Which key of a runtime's `[[version]]` a failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactField {
    /// `artifact`: fetching it, its size, its tarball, the cache holding it.
    Artifact,
    /// `sha256`: malformed, or not what the artifact hashes to.
    Sha256,
    /// `signature`: missing, malformed, by an untrusted key, or not verifying.
    Signature,
    /// The trusted keys themselves (`[trust] keys`, or the pinned keys file).
    Trust,
}

/// One failed artifact check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactFailure {
    /// The runtime and version whose artifact failed (none for a trust problem).
    pub runtime: Option<String>,
    pub version: Option<String>,
    pub field: ArtifactField,
    /// What is wrong and how to fix it, naming runtime, version and artifact.
    pub message: String,
    /// Found with a saved copy of a URL signature that `apply` fetches again: a warning
    /// (the URL may serve a newer signature), not a reason to fail.
    pub provisional: bool,
}

impl std::fmt::Display for ArtifactFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<&ArtifactError> for ArtifactFailure {
    fn from(e: &ArtifactError) -> ArtifactFailure {
        use ArtifactError as E;
        let field = match e {
            E::ManifestKey { .. } | E::PinnedKey { .. } | E::NoPinnedKeys => ArtifactField::Trust,
            E::InvalidSha256 { .. } | E::Sha256Mismatch { .. } => ArtifactField::Sha256,
            E::BadUrl { what, .. } | E::Fetch { what, .. } | E::HttpStatus { what, .. }
                if *what == "signature" =>
            {
                ArtifactField::Signature
            }
            E::MissingSignature { .. }
            | E::SignatureTooLarge { .. }
            | E::MalformedSignature { .. }
            | E::LegacySignature { .. }
            | E::UntrustedKey { .. }
            | E::BadSignature { .. } => ArtifactField::Signature,
            E::BadUrl { .. }
            | E::Fetch { .. }
            | E::HttpStatus { .. }
            | E::DownloadTooLarge { .. }
            | E::HttpsTooLarge { .. }
            | E::DownloadTimedOut { .. }
            | E::Cache { .. }
            | E::Tarball { .. }
            | E::NotCached { .. } => ArtifactField::Artifact,
            E::SavedSignature { .. } => ArtifactField::Signature,
        };
        ArtifactFailure {
            runtime: e.origin().map(|o| o.runtime.clone()),
            version: e.origin().map(|o| o.version.clone()),
            field,
            message: e.to_string(),
            provisional: matches!(e, E::SavedSignature { .. }),
        }
    }
}

impl From<ArtifactError> for ArtifactFailure {
    fn from(e: ArtifactError) -> ArtifactFailure {
        ArtifactFailure::from(&e)
    }
}

impl ArtifactFailure {
    /// The runtime manifest that declares the version, relative to the fleet root.
    pub fn manifest(&self) -> Option<String> {
        self.runtime.as_ref().map(|r| format!("runtimes/{r}.toml"))
    }

    /// The first [`MAX_SHOWN`] failures as located diagnostics (see [`locate`]), then one
    /// saying how many more there are, if any.
    pub fn diagnostics(failures: &[ArtifactFailure], sources: &Sources) -> Vec<Diagnostic> {
        let shown = &failures[..failures.len().min(MAX_SHOWN)];
        let mut out: Vec<Diagnostic> = shown
            .iter()
            .zip(locate(shown, sources))
            .map(|(f, at)| {
                let d = Diagnostic::new(f.message.clone());
                match at {
                    Some((file, span)) => d.at(file, span),
                    None => d,
                }
            })
            .collect();
        out.extend(more_failures(failures.len()).map(Diagnostic::new));
        out
    }
}

/// Where each failure is written: the key it is about in its version's `[[version]]` table
/// (`sha256`; `signature`, or `artifact` when `signature` is left to its default; `artifact`
/// for the rest), the table when neither is written, `None` when the file was not read.
/// Each manifest is parsed once, however many failures it has (a pull request can declare
/// thousands of versions).
pub fn locate(failures: &[ArtifactFailure], sources: &Sources) -> Vec<Option<(String, Range<usize>)>> {
    let mut files: HashMap<String, Option<HashMap<String, Spans>>> = HashMap::new();
    failures
        .iter()
        .map(|f| {
            let (file, version) = (f.manifest()?, f.version.as_deref()?);
            let versions = files
                .entry(file.clone())
                .or_insert_with(|| index(sources.get(&file)?));
            let spans = versions.as_ref()?.get(version)?;
            let keys: &[&Option<Range<usize>>] = match f.field {
                ArtifactField::Sha256 => &[&spans.sha256],
                ArtifactField::Signature => &[&spans.signature, &spans.artifact],
                ArtifactField::Artifact | ArtifactField::Trust => &[&spans.artifact],
            };
            let span = keys
                .iter()
                .find_map(|k| (*k).clone())
                .or_else(|| spans.table.clone())?;
            Some((file, span))
        })
        .collect()
}

/// The spans of one `[[version]]` table and of its keys.
struct Spans {
    table: Option<Range<usize>>,
    artifact: Option<Range<usize>>,
    sha256: Option<Range<usize>>,
    signature: Option<Range<usize>>,
}

/// Version → spans, for a runtime manifest's text (the first table of a version wins, as
/// validation reports duplicates).
fn index(text: &str) -> Option<HashMap<String, Spans>> {
    let doc = Document::parse(text).ok()?;
    let tables = doc.as_item().get("version")?.as_array_of_tables()?;
    let mut out = HashMap::new();
    for t in tables.iter() {
        let Some(version) = t.get("version").and_then(Item::as_str) else {
            continue;
        };
        let span = |k: &str| t.get(k).and_then(Item::span);
        out.entry(version.to_owned()).or_insert(Spans {
            table: t.span(),
            artifact: span("artifact"),
            sha256: span("sha256"),
            signature: span("signature"),
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::Origin;

    const RUNTIME: &str = "description = \"x\"\n\n[[version]]\nversion = \"1.0.0\"\nartifact = \"a-1.tar.gz\"\nsha256 = \"00\"\n\n[[version]]\nversion = \"2.0.0\"\nartifact = \"a-2.tar.gz\"\nsha256 = \"11\"\nsignature = \"a-2.sig\"\n";

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.insert("runtimes/app.toml", RUNTIME);
        s
    }

    fn at(version: &str) -> Box<Origin> {
        Box::new(Origin {
            runtime: "app".into(),
            version: version.into(),
            location: "a.tar.gz".into(),
        })
    }

    fn line(f: &ArtifactFailure) -> Option<usize> {
        let s = sources();
        let (file, span) = locate(std::slice::from_ref(f), &s).pop()??;
        s.line_col(&file, span.start).map(|(l, _)| l)
    }

    #[test]
    fn each_failure_points_at_the_key_of_its_version() {
        let sha = ArtifactFailure::from(ArtifactError::Sha256Mismatch {
            at: at("2.0.0"),
            expected: "11".into(),
            actual: "22".into(),
        });
        assert_eq!(sha.field, ArtifactField::Sha256);
        assert_eq!(line(&sha), Some(11));
        let untrusted = ArtifactFailure::from(ArtifactError::UntrustedKey {
            at: at("2.0.0"),
            signature: "a-2.sig".into(),
            key_id: "AB".into(),
            trusted: Vec::new(),
            pinned: false,
        });
        assert_eq!(line(&untrusted), Some(12));
        // Version 1.0.0 leaves `signature` to its default: its artifact line says where.
        let missing = ArtifactFailure::from(ArtifactError::MissingSignature {
            at: at("1.0.0"),
            signature: "a-1.tar.gz.minisig".into(),
            pinned: false,
        });
        assert_eq!(line(&missing), Some(5));
        let fetch = ArtifactFailure::from(ArtifactError::Fetch {
            at: at("1.0.0"),
            what: "signature",
            location: "a-1.tar.gz.minisig".into(),
            reason: "gone".into(),
        });
        assert_eq!(fetch.field, ArtifactField::Signature);
        let tar = ArtifactFailure::from(ArtifactError::Tarball {
            at: at("2.0.0"),
            entry: None,
            problem: crate::artifact::TarProblem::Empty,
        });
        assert_eq!(line(&tar), Some(10));
        assert_eq!(
            tar.message,
            ArtifactError::Tarball {
                at: at("2.0.0"),
                entry: None,
                problem: crate::artifact::TarProblem::Empty,
            }
            .to_string()
        );
    }

    #[test]
    fn what_cannot_be_placed_stays_a_plain_error() {
        let unknown = ArtifactFailure::from(ArtifactError::Sha256Mismatch {
            at: at("9.9.9"),
            expected: "11".into(),
            actual: "22".into(),
        });
        assert_eq!(line(&unknown), None);
        assert!(
            ArtifactFailure::diagnostics(&[unknown], &sources())[0]
                .location
                .is_none()
        );
        let trust = ArtifactFailure::from(ArtifactError::NoPinnedKeys);
        assert_eq!((trust.field, trust.manifest()), (ArtifactField::Trust, None));
        let placed = ArtifactFailure::from(ArtifactError::InvalidSha256 {
            at: at("1.0.0"),
            given: "00".into(),
        });
        let placed = ArtifactFailure::diagnostics(&[placed], &sources());
        let rendered = crate::diagnostic::render(&placed, &sources(), false);
        assert!(rendered.contains("--> runtimes/app.toml:6:"), "{rendered}");
    }
}
