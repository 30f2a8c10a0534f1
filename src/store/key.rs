//! The store's digest key: what plans, saved plans and the audit log publish instead of the
//! sha256 of a `sensitive` file (DESIGN §9). A plain sha256 lets anyone who reads a plan (a
//! pull-request comment, a CI log) confirm a guess of the secret offline; an HMAC-SHA256 under
//! a key only the store holds does not, and two plans of the same store still show the same
//! value for the same content, so a reader can tell "changed" from "unchanged".
//!
//! The key is 32 random bytes, created on first use and kept in the store (for the directory
//! store: `digest-key`, mode 0600). Without a store, a per-process random key is used: its
//! digests match nothing else, which is the point.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::StoreError;
use super::fsutil::{io_err, sync_dir};

/// The file of the directory store that holds the key.
pub(crate) const KEY_FILE: &str = "digest-key";

/// What a keyed digest starts with, so nobody mistakes it for a sha256.
pub const KEYED_PREFIX: &str = "hmac-sha256:";

/// A 32-byte HMAC-SHA256 key. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestKey([u8; 32]);

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

impl DigestKey {
    pub fn random() -> DigestKey {
        DigestKey(rand::random())
    }

    /// This process's key, for runs without a store.
    pub fn process() -> &'static DigestKey {
        static KEY: OnceLock<DigestKey> = OnceLock::new();
        KEY.get_or_init(DigestKey::random)
    }

    /// The published form of a sha256 (hex): `hmac-sha256:` and 64 hex digits.
    pub fn keyed(&self, sha256_hex: &str) -> String {
        let mac = hmac_sha256(&self.0, sha256_hex.as_bytes());
        let mut out = String::with_capacity(KEYED_PREFIX.len() + 64);
        out.push_str(KEYED_PREFIX);
        out.push_str(&hex(&mac));
        out
    }

    /// The key as 64 hex digits, as stored.
    pub(crate) fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Reads [`DigestKey::to_hex`]'s form.
    pub(crate) fn from_hex(text: &str) -> Option<DigestKey> {
        DigestKey::parse(text)
    }

    fn parse(text: &str) -> Option<DigestKey> {
        let text = text.trim();
        if text.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(DigestKey(key))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// HMAC-SHA256 (RFC 2104) with sha2, which the crate already uses.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
    for i in 0..64 {
        ipad[i] ^= block[i];
        opad[i] ^= block[i];
    }
    let inner = Sha256::new().chain_update(ipad).chain_update(message).finalize();
    let outer = Sha256::new().chain_update(opad).chain_update(inner).finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer);
    out
}

/// Reads the directory store's key, creating it (0600, durably, without ever replacing one
/// another process made first) when there is none.
pub(crate) fn load_or_create(dir: &Path) -> Result<DigestKey, StoreError> {
    let path = dir.join(KEY_FILE);
    let corrupt = || StoreError::Corrupt {
        path: path.clone(),
        problem: "the digest key is not 64 hexadecimal digits".to_owned(),
        fix: "delete it: a new key is made on the next run (published digests of sensitive files then change once)",
    };
    match fs::read_to_string(&path) {
        Ok(text) => return DigestKey::parse(&text).ok_or_else(corrupt),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path, "read")(e)),
    }
    let key = DigestKey::random();
    let tmp = dir.join(format!(".{KEY_FILE}.tmp-{:016x}", rand::random::<u64>()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format!("{}\n", hex(&key.0)).as_bytes())?;
        f.sync_all()?;
        // A hard link fails when the target exists: a concurrent first use keeps its key.
        fs::hard_link(&tmp, &path)
    })();
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(&path).map_err(io_err(&path, "read"))?;
            DigestKey::parse(&text).ok_or_else(corrupt)
        }
        Err(e) => Err(io_err(&path, "create")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than a block is hashed first.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_key_is_created_private_once_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(dir.path()).unwrap(), a);
        assert_eq!(a.keyed(&"0".repeat(64)), a.keyed(&"0".repeat(64)));
        assert_ne!(
            a.keyed(&"0".repeat(64)),
            DigestKey::random().keyed(&"0".repeat(64))
        );
        fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        assert!(load_or_create(dir.path()).is_err());
    }
}
