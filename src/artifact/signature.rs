//! Reading an artifact's minisign signature (DESIGN §9): from the repository, a URL, or —
//! for checks that open no URL — the copy saved when `apply` last fetched it; then finding
//! the trusted key that made it.

use std::io::Read;

use super::fetch::{self, OpenError, Source};
use super::{
    ArtifactCache, ArtifactError, ArtifactRequest, Network, Origin, RepoReader, SIGNATURE_LIMIT, TrustPolicy,
};
use super::{open_error, trust, verified};

impl ArtifactCache {
    /// Reads and decodes the signature, and finds the trusted key that made it. `None` when
    /// there is no signature and none is required.
    pub(super) fn signature<'t>(
        &self,
        req: &ArtifactRequest<'_>,
        repo: &dyn RepoReader,
        trust: &'t TrustPolicy,
        at: &dyn Fn() -> Box<Origin>,
        network: Network,
    ) -> Result<Option<(trust::SignatureFile, &'t minisign_verify::PublicKey)>, ArtifactError> {
        let location = req.signature.to_string();
        let src = fetch::source(req.signature).map_err(|reason| ArtifactError::BadUrl {
            at: at(),
            what: "signature",
            url: location.clone(),
            reason,
        })?;
        let url = !matches!(src, Source::Repo(_));
        let bytes = if url && network == Network::Refused {
            verified::saved_signature(&self.dir, &location).ok_or(ArtifactError::NotCached { at: at() })?
        } else {
            match self.read_signature(&src, repo, trust, req, at, &location)? {
                Some(bytes) => bytes,
                None => return Ok(None),
            }
        };
        if url && network == Network::Allowed {
            verified::save_signature(&self.dir, &location, &bytes);
        }
        let malformed = |reason: String| ArtifactError::MalformedSignature {
            at: at(),
            signature: location.clone(),
            reason,
        };
        let text = String::from_utf8(bytes).map_err(|_| malformed("it is not text".into()))?;
        let file = trust::parse_signature(&text).map_err(malformed)?;
        let Some(key) = trust.key(file.key_id) else {
            return Err(ArtifactError::UntrustedKey {
                at: at(),
                signature: location,
                key_id: file.key_id.to_string(),
                trusted: trust.key_ids(),
                pinned: trust.is_pinned(),
            });
        };
        if !file.prehashed {
            return Err(ArtifactError::LegacySignature {
                at: at(),
                signature: location,
            });
        }
        Ok(Some((file, key)))
    }

    /// The signature's bytes (at most [`SIGNATURE_LIMIT`]); `None` when there is none and
    /// none is required.
    fn read_signature(
        &self,
        src: &Source<'_>,
        repo: &dyn RepoReader,
        trust: &TrustPolicy,
        req: &ArtifactRequest<'_>,
        at: &dyn Fn() -> Box<Origin>,
        location: &str,
    ) -> Result<Option<Vec<u8>>, ArtifactError> {
        let location = location.to_owned();
        let reader = match fetch::open(src, repo, &self.agent, self.https_budget) {
            Ok(r) => r,
            Err(OpenError::NotFound(reason)) => {
                if trust.require_signatures() {
                    return Err(ArtifactError::MissingSignature {
                        at: at(),
                        signature: location,
                        pinned: trust.is_pinned(),
                    });
                }
                tracing::warn!(
                    runtime = req.runtime,
                    version = req.version,
                    signature = %location,
                    "artifact is unsigned ({reason}); accepted because require_signatures is false"
                );
                return Ok(None);
            }
            Err(e) => return Err(open_error(e, at, "signature", &location)),
        };
        let mut bytes = Vec::new();
        reader
            .take(SIGNATURE_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ArtifactError::Fetch {
                at: at(),
                what: "signature",
                location: location.clone(),
                reason: e.to_string(),
            })?;
        if bytes.len() as u64 > SIGNATURE_LIMIT {
            return Err(ArtifactError::SignatureTooLarge {
                at: at(),
                signature: location,
            });
        }
        Ok(Some(bytes))
    }
}
