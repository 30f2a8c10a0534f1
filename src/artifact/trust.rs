//! Which minisign keys are trusted, and reading minisign signature files.
//!
//! Trust comes from the manifests' `[trust]` table unless the operator pins keys out of band
//! (`--trusted-keys FILE` or `FLOTILLA_TRUSTED_KEYS`): then only the pinned keys count and
//! signatures are always required, so a commit cannot make its own artifacts trusted (DESIGN §9).

use std::fmt;

use minisign_verify::{PublicKey, Signature};

use super::error::ArtifactError;

/// A minisign key id: the 8 bytes that tie a signature to the key that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl fmt::Display for KeyId {
    /// The form minisign prints (`minisign public key E7620F1842B4E81F`): the id read as a
    /// little-endian integer, in upper-case hex without leading zeros. Using the same form lets
    /// an operator match the id in an error with the comment line of their `.pub` file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}", u64::from_le_bytes(self.0))
    }
}

struct TrustedKey {
    id: KeyId,
    key: PublicKey,
    /// sha256 of the key's bytes: which key a cached verification was made with (key ids are
    /// chosen by whoever makes the key, so two keys may share one).
    digest: String,
}

/// The keys artifacts may be signed with, and whether a signature is required at all.
pub struct TrustPolicy {
    keys: Vec<TrustedKey>,
    require_signatures: bool,
    pinned: bool,
}

impl fmt::Debug for TrustPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustPolicy")
            .field("keys", &self.key_ids())
            .field("require_signatures", &self.require_signatures)
            .field("pinned", &self.pinned)
            .finish()
    }
}

impl TrustPolicy {
    /// From the manifests' `[trust]` (keys as base64 strings), unless `pinned` — the contents of
    /// a `--trusted-keys` / `FLOTILLA_TRUSTED_KEYS` file — is given: then only the pinned keys
    /// count and signatures are required whatever the manifests say.
    ///
    /// The pinned file holds one public key per line: either the bare base64 line or a whole
    /// minisign `.pub` file (its `untrusted comment:` line is skipped). Blank lines and lines
    /// starting with `#` are ignored. A pinned file with no key is an error: it would refuse
    /// every artifact, which is never what an operator means.
    pub fn new(
        manifest_keys: &[String],
        require_signatures: bool,
        pinned: Option<&str>,
    ) -> Result<TrustPolicy, ArtifactError> {
        match pinned {
            Some(text) => {
                let mut keys = Vec::new();
                for (index, raw) in text.lines().enumerate() {
                    let line = raw.trim();
                    if line.is_empty() || line.starts_with('#') || line.starts_with("untrusted comment:") {
                        continue;
                    }
                    let key = parse_key(line).map_err(|reason| ArtifactError::PinnedKey {
                        line: index + 1,
                        reason,
                    })?;
                    keys.push(key);
                }
                if keys.is_empty() {
                    return Err(ArtifactError::NoPinnedKeys);
                }
                Ok(TrustPolicy {
                    keys,
                    require_signatures: true,
                    pinned: true,
                })
            }
            None => {
                let keys = manifest_keys
                    .iter()
                    .enumerate()
                    .map(|(index, k)| {
                        parse_key(k.trim()).map_err(|reason| ArtifactError::ManifestKey {
                            index: index + 1,
                            reason,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(TrustPolicy {
                    keys,
                    require_signatures,
                    pinned: false,
                })
            }
        }
    }

    /// Whether an artifact without a signature is refused (always true when keys are pinned).
    pub fn require_signatures(&self) -> bool {
        self.require_signatures
    }

    /// Whether the keys came from a pinned file rather than the manifests.
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// The trusted keys' ids, as minisign prints them, for messages and the audit log.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.to_string()).collect()
    }

    pub(crate) fn key(&self, id: KeyId) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.id == id).map(|k| &k.key)
    }

    /// The digest of the trusted key with this id, for remembering what verified an artifact.
    pub(crate) fn key_digest(&self, id: KeyId) -> Option<&str> {
        self.keys.iter().find(|k| k.id == id).map(|k| k.digest.as_str())
    }
}

/// Parses one base64 public key, keeping its id (which `minisign_verify` does not expose).
fn parse_key(b64: &str) -> Result<TrustedKey, String> {
    let short: String = b64.chars().take(60).collect();
    let key =
        PublicKey::from_base64(b64).map_err(|e| format!("`{short}` is not a minisign public key ({e})"))?;
    let bytes = base64_decode(b64).ok_or_else(|| format!("`{short}` is not base64"))?;
    let id = bytes
        .get(2..10)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .ok_or_else(|| format!("`{short}` is too short for a minisign public key"))?;
    Ok(TrustedKey {
        id: KeyId(id),
        key,
        digest: crate::resolve::sha256_hex(&bytes),
    })
}

/// A decoded `.minisig` file.
pub(crate) struct SignatureFile {
    pub signature: Signature,
    pub key_id: KeyId,
    /// Prehashed (`ED`) signatures are verified while streaming; legacy (`Ed`) ones would need
    /// the whole artifact in memory, and are refused.
    pub prehashed: bool,
    /// sha256 of the signature file's text: which signature a cached verification was of.
    pub digest: String,
}

/// Decodes a signature file; the error is a reason for a message.
pub(crate) fn parse_signature(text: &str) -> Result<SignatureFile, String> {
    let signature = Signature::decode(text).map_err(|e| e.to_string())?;
    // `Signature::decode` accepted the text, so line 2 is base64 of algorithm (2 bytes), key id
    // (8) and signature (64).
    let bin = text
        .lines()
        .nth(1)
        .and_then(|l| base64_decode(l.trim()))
        .ok_or_else(|| "the signature line is not base64".to_owned())?;
    let key_id = bin
        .get(2..10)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .ok_or_else(|| "the signature line is too short".to_owned())?;
    let prehashed = bin.get(..2) == Some(b"ED");
    Ok(SignatureFile {
        signature,
        key_id: KeyId(key_id),
        prehashed,
        digest: crate::resolve::sha256_hex(text.as_bytes()),
    })
}

/// Standard base64 with optional `=` padding; `None` for anything else. Only used on short
/// key and signature lines (here and in `release`), to read the key ids.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let data = s.trim_end_matches('=').as_bytes();
    if s.len() - data.len() > 2 || data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGVsbG8h").as_deref(), Some(&b"hello!"[..]));
        assert_eq!(base64_decode("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode("a"), None);
        assert_eq!(base64_decode("a*bc"), None);
        assert_eq!(base64_decode("aGk==="), None);
    }

    #[test]
    fn key_id_is_printed_as_minisign_does() {
        // minisign-verify's own test key: its .pub comment says E7620F1842B4E81F.
        let key = parse_key(KEY).map_err(|e| e.to_string());
        assert_eq!(key.map(|k| k.id.to_string()), Ok("E7620F1842B4E81F".to_owned()));
        // minisign prints no leading zeros.
        assert_eq!(
            KeyId([0x85, 0x56, 0x1a, 0x84, 0xa4, 0x04, 0x36, 0x0b]).to_string(),
            "B3604A4841A5685"
        );
    }

    #[test]
    fn pinned_file_accepts_bare_lines_pub_files_and_comments() {
        let text = format!(
            "# fleet signing keys\n\nuntrusted comment: minisign public key E7620F1842B4E81F\n{KEY}\n"
        );
        let policy = TrustPolicy::new(&[], false, Some(&text)).map_err(|e| e.to_string());
        let policy = match policy {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert!(policy.require_signatures());
        assert!(policy.is_pinned());
        assert_eq!(policy.key_ids(), vec!["E7620F1842B4E81F".to_owned()]);
    }

    #[test]
    fn pinned_file_errors_name_the_line() {
        let err = TrustPolicy::new(&[], true, Some(&format!("{KEY}\n\nnot-a-key\n"))).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("line 3"), "{msg}");
        let err = TrustPolicy::new(&[], true, Some("# nothing here\n")).err();
        assert!(matches!(err, Some(ArtifactError::NoPinnedKeys)));
    }
}
