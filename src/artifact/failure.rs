//! An artifact check that failed, as the engine carries it to the views: which runtime
//! version, which of its manifest keys the problem is about, and the message. Unlike
//! [`ArtifactError`] it can be cloned and serialised (it rides in reports), and it can point
//! at the line of `runtimes/<name>.toml` that needs fixing (DESIGN §3: file and line, like
//! every other problem).

use std::ops::Range;

use serde::Serialize;
use toml_edit::{Document, Item};

use super::ArtifactError;
use crate::diagnostic::{Diagnostic, Sources};

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
        };
        ArtifactFailure {
            runtime: e.origin().map(|o| o.runtime.clone()),
            version: e.origin().map(|o| o.version.clone()),
            field,
            message: e.to_string(),
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

    /// The failure as a located diagnostic: at the key it is about in the version's
    /// `[[version]]` table (at `artifact` when `signature` is left to its default, at the
    /// table when neither is written), or unlocated when the file was not read.
    pub fn diagnostic(&self, sources: &Sources) -> Diagnostic {
        let d = Diagnostic::new(self.message.clone());
        match self.place(sources) {
            Some((file, span)) => d.at(file, span),
            None => d,
        }
    }

    /// The file and byte range [`diagnostic`](Self::diagnostic) points at.
    pub fn place(&self, sources: &Sources) -> Option<(String, Range<usize>)> {
        let (file, version) = (self.manifest()?, self.version.as_deref()?);
        let doc = Document::parse(sources.get(&file)?).ok()?;
        let table = doc
            .as_item()
            .get("version")?
            .as_array_of_tables()?
            .iter()
            .find(|t| t.get("version").and_then(Item::as_str) == Some(version))?;
        let keys: &[&str] = match self.field {
            ArtifactField::Sha256 => &["sha256"],
            ArtifactField::Signature => &["signature", "artifact"],
            ArtifactField::Artifact | ArtifactField::Trust => &["artifact"],
        };
        let span = keys
            .iter()
            .find_map(|k| table.get(k).and_then(Item::span))
            .or_else(|| table.span())?;
        Some((file, span))
    }
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
        let (file, span) = f.place(&s)?;
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
        assert!(unknown.diagnostic(&sources()).location.is_none());
        let trust = ArtifactFailure::from(ArtifactError::NoPinnedKeys);
        assert_eq!((trust.field, trust.manifest()), (ArtifactField::Trust, None));
        let placed = ArtifactFailure::from(ArtifactError::InvalidSha256 {
            at: at("1.0.0"),
            given: "00".into(),
        })
        .diagnostic(&sources());
        let rendered = crate::diagnostic::render(&[placed], &sources(), false);
        assert!(rendered.contains("--> runtimes/app.toml:6:"), "{rendered}");
    }
}
