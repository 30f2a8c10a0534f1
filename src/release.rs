//! Releasing a runtime version (`flotilla release`) and the minisign keys it signs with.
//!
//! A release adds one `[[version]]` table to `runtimes/<runtime>.toml`, editing the file with
//! `toml_edit` so every other line, comment and blank line stays as written; copies the
//! tarball to `artifacts/<runtime>-<version>.tar.gz` (or records an `https://`/`file://` URL);
//! records its sha256; and writes a prehashed minisign signature beside it. Files are written
//! to temporary names and renamed into place, the manifest last, and the copies are removed
//! again if the manifest cannot be written, so a failed release leaves the fleet as it was.
//!
//! Secret keys are minisign secret key files. Keys made by the minisign CLI with `-W` (no
//! password) carry an all-zero checksum the minisign crate refuses, so unencrypted keys are
//! decoded here directly; password-protected keys are decrypted by the crate with the password
//! from `FLOTILLA_SIGN_PASSWORD`, else one asked for on the terminal.

use std::fs::{self, File};
use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::manifest::raw::{RawFleetFile, RawRuntime};

/// The environment variable a password-protected secret key's password is read from.
pub const PASSWORD_ENV: &str = "FLOTILLA_SIGN_PASSWORD";

/// Why a key could not be made, read or used; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the secret key {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a minisign secret key ({reason}); make one with `minisign -G` or `flotilla init`")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path} is password-protected and there is no terminal to ask on: set {PASSWORD_ENV}")]
    NeedsPassword { path: PathBuf },
    #[error("{path}: cannot decrypt the secret key ({reason}); check the password")]
    Decrypt { path: PathBuf, reason: String },
    #[error("writing the secret key {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("signing with {path}: {reason}")]
    Sign { path: PathBuf, reason: String },
    #[error("making a key pair: {0}")]
    Generate(String),
}

/// A minisign secret key and its public half.
pub struct SigningKey {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
    path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public_base64())
            .field("path", &self.path)
            .finish()
    }
}

impl SigningKey {
    /// A new unencrypted key pair, not yet written anywhere.
    pub fn generate(path: &Path) -> Result<SigningKey, KeyError> {
        let kp = minisign::KeyPair::generate_unencrypted_keypair()
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Ok(SigningKey {
            sk: kp.sk,
            pk: kp.pk,
            path: path.to_owned(),
        })
    }

    /// Reads a minisign secret key file. `password`: the password of a protected key; `None`
    /// reads [`PASSWORD_ENV`], else asks on the terminal, else fails.
    pub fn load(path: &Path, password: Option<String>) -> Result<SigningKey, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let malformed = |reason: &str| KeyError::Malformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let line = text
            .lines()
            .nth(1)
            .map(str::trim)
            .ok_or_else(|| malformed("it has no key line"))?;
        let bytes = decode_base64(line).ok_or_else(|| malformed("its key line is not base64"))?;
        // sig_alg (2) kdf_alg (2) chk_alg (2) salt (32) opslimit (8) memlimit (8) keynum (8)
        // secret key (64) checksum (32).
        if bytes.len() != 158 || &bytes[..2] != b"Ed" {
            return Err(malformed("unexpected length or algorithm"));
        }
        let sk = if bytes[2..4] == [0, 0] {
            minisign::SecretKey::from_bytes(&bytes).map_err(|e| malformed(&e.to_string()))?
        } else {
            let password = match password.or_else(|| std::env::var(PASSWORD_ENV).ok()) {
                Some(p) => p,
                None if io::IsTerminal::is_terminal(&io::stdin()) => {
                    rpassword::prompt_password(format!("Password for {}: ", path.display())).map_err(|e| {
                        KeyError::Decrypt {
                            path: path.to_owned(),
                            reason: e.to_string(),
                        }
                    })?
                }
                None => {
                    return Err(KeyError::NeedsPassword {
                        path: path.to_owned(),
                    });
                }
            };
            minisign::SecretKeyBox::from_string(&text)
                .and_then(|b| b.into_secret_key(Some(password)))
                .map_err(|e| KeyError::Decrypt {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?
        };
        let pk = minisign::PublicKey::from_secret_key(&sk).map_err(|e| malformed(&e.to_string()))?;
        Ok(SigningKey {
            sk,
            pk,
            path: path.to_owned(),
        })
    }

    /// Writes the secret key (mode 0600, never over an existing file) and the public key
    /// beside it as `<path>.pub`, creating the parent directory (mode 0700).
    pub fn write_new(&self) -> Result<(), KeyError> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let err = |source| KeyError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(err)?;
        }
        let boxed = self
            .sk
            .to_box(Some("flotilla secret key"))
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(err)?;
        f.write_all(boxed.to_string().as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        let pub_text = format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.key_id(),
            self.public_base64()
        );
        let pub_path = pub_path(&self.path);
        fs::write(&pub_path, pub_text).map_err(|source| KeyError::Write {
            path: pub_path,
            source,
        })
    }

    /// The public key as `[trust] keys` holds it.
    pub fn public_base64(&self) -> String {
        self.pk.to_base64()
    }

    /// The key id as minisign prints it.
    pub fn key_id(&self) -> String {
        let mut id = [0u8; 8];
        id.copy_from_slice(&self.pk.keynum()[..8]);
        format!("{:X}", u64::from_le_bytes(id))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A prehashed minisign signature of `data`, as the text of a `.minisig` file.
    pub fn sign(&self, data: impl Read, trusted_comment: &str) -> Result<String, KeyError> {
        minisign::sign(Some(&self.pk), &self.sk, data, Some(trusted_comment), None)
            .map(|b| b.into_string())
            .map_err(|e| KeyError::Sign {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }
}

/// `<path>.pub`.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Standard base64 with full padding, as minisign writes key files (the shared decoder also
/// takes unpadded text; a key line must be whole quads).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(4) {
        return None;
    }
    crate::artifact::base64_decode(s)
}

/// Lower-case hex sha256 of everything `r` yields.
pub fn sha256_of(mut r: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

mod edit;
pub use edit::{ReleaseError, ReleaseRequest, Released, release};

/// Whether the fleet at `fleet_dir` trusts `public` and requires signatures, read leniently
/// from flotilla.toml (a broken file is `validate`'s to report): (trusted, required).
pub fn fleet_trust(fleet_dir: &Path, public: Option<&str>) -> (bool, bool) {
    let Ok(text) = fs::read_to_string(fleet_dir.join("flotilla.toml")) else {
        return (false, true);
    };
    let Ok(raw) = toml::from_str::<RawFleetFile>(&text) else {
        return (false, true);
    };
    let trusted = public.is_some_and(|p| raw.trust.keys.iter().any(|k| k.get().trim() == p));
    (trusted, raw.trust.require_signatures.unwrap_or(true))
}

/// The line (1-based) of the `version = "<version>"` key of `version` in a runtime manifest,
/// if the manifest has that version.
pub fn existing_version_line(text: &str, version: &str) -> Result<Option<usize>, String> {
    let raw: RawRuntime = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    Ok(raw
        .versions
        .iter()
        .find(|v| v.version.get() == version)
        .map(|v| text[..v.version.span().start].lines().count().max(1)))
}

/// Opens `path` for reading if it is a regular file (following a symlink the user gave).
pub fn open_regular(path: &Path) -> Result<File, String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(format!("it is {kind}"));
    }
    File::open(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_minisign_key_lines() {
        assert_eq!(decode_base64("AAEC").unwrap(), vec![0, 1, 2]);
        assert_eq!(decode_base64("AAE=").unwrap(), vec![0, 1]);
        assert_eq!(decode_base64("AA==").unwrap(), vec![0]);
        assert!(decode_base64("AA=").is_none());
        assert!(decode_base64("A!==").is_none());
    }

    #[test]
    fn version_lines_point_at_the_version_key() {
        let text = "# c\ndescription = \"x\"\n\n[[version]]\nversion = \"1.0.0\"\nartifact = \"a\"\nsha256 = \"b\"\n";
        assert_eq!(existing_version_line(text, "1.0.0").unwrap(), Some(5));
        assert_eq!(existing_version_line(text, "2.0.0").unwrap(), None);
    }
}
