//! What the cache already verified, so an unchanged artifact is not hashed, verified and
//! inspected again (DESIGN §3): `validate` and `plan` check every repository artifact on every
//! run, and a fleet's artifacts can be gigabytes.
//!
//! Two kinds of small marker files in the cache directory, written after a full check passed:
//! - `verified/<key>`: the cached copy `<sha256>` passed the signature check under the trust
//!   that chose the key, and the inspection under the size limit. The key digests all of that,
//!   so a change of signature, key, `require_signatures` or limit misses the marker.
//! - `sources/<id>`: a repository file with this content identity (a Git blob id, or a stat
//!   fingerprint of a working-tree file: device, inode, size, mtime and ctime, which every
//!   write changes) had this sha256, so it need not be read again to know it.
//!
//! Markers are only ever written after the check they stand for, into the store's own
//! directory; a missing or unreadable marker just means checking again.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Bump when what a check covers changes (a new inspection rule): old markers then miss.
const VERSION: &str = "flotilla-verified-2";

/// What a full check found, kept for the next call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Verified {
    pub size: u64,
    pub unpacked_size: u64,
    pub signed_by: Option<String>,
}

/// The marker key for a cached copy checked under this signature (its file's digest, or
/// unsigned), trust mode and size limit.
pub(super) fn key(
    sha256: &str,
    signature: Option<&str>,
    require_signatures: bool,
    max_unpacked: u64,
) -> String {
    crate::resolve::sha256_hex(
        format!(
            "{VERSION}\0{sha256}\0{}\0{require_signatures}\0{max_unpacked}",
            signature.unwrap_or("unsigned")
        )
        .as_bytes(),
    )
}

pub(super) fn load(cache: &Path, key: &str) -> Option<Verified> {
    let bytes = fs::read(cache.join("verified").join(key)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub(super) fn save(cache: &Path, key: &str, v: &Verified) {
    if let Ok(json) = serde_json::to_vec(v) {
        write(&cache.join("verified"), key, &json);
    }
}

/// Whether the repository file with content identity `id` is known to have `sha256`.
pub(super) fn source_is(cache: &Path, id: &str, sha256: &str) -> bool {
    fs::read_to_string(cache.join("sources").join(id_name(id))).is_ok_and(|s| s == sha256)
}

pub(super) fn remember_source(cache: &Path, id: &str, sha256: &str) {
    write(&cache.join("sources"), &id_name(id), sha256.as_bytes());
}

/// The HTTPS signature at `url` as last fetched, so `plan` can check a cached artifact
/// without the network (`apply` always fetches it again). Untrusted bytes like any
/// signature: they are verified against the trusted keys before anything relies on them.
pub(super) fn saved_signature(cache: &Path, url: &str) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let path = cache.join("signatures").join(id_name(url));
    // Read no more than a signature can be, whatever sits there.
    let mut bytes = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(super::SIGNATURE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    (bytes.len() as u64 <= super::SIGNATURE_LIMIT).then_some(bytes)
}

pub(super) fn save_signature(cache: &Path, url: &str, bytes: &[u8]) {
    write(&cache.join("signatures"), &id_name(url), bytes);
}

fn id_name(id: &str) -> String {
    crate::resolve::sha256_hex(format!("{VERSION}\0{id}").as_bytes())
}

/// Best effort, atomic: a temporary file renamed into place. A failure only costs a re-check.
fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let result = fs::create_dir_all(dir).and_then(|()| {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.persist(dir.join(name)).map_err(|e| e.error)?;
        Ok(())
    });
    if let Err(e) = result {
        tracing::debug!(dir = %dir.display(), error = %e, "could not record a verified artifact");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_of_a_check_changes_the_key() {
        let base = key("ab", Some("sig"), true, 10);
        for other in [
            key("ac", Some("sig"), true, 10),
            key("ab", Some("sig2"), true, 10),
            key("ab", None, true, 10),
            key("ab", Some("sig"), false, 10),
            key("ab", Some("sig"), true, 11),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn markers_round_trip_and_a_missing_one_means_check_again() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "k"), None);
        let v = Verified {
            size: 3,
            unpacked_size: 9,
            signed_by: Some("AB".into()),
        };
        save(dir.path(), "k", &v);
        assert_eq!(load(dir.path(), "k"), Some(v));
        assert!(!source_is(dir.path(), "blob:1", "ab"));
        remember_source(dir.path(), "blob:1", "ab");
        assert!(source_is(dir.path(), "blob:1", "ab"));
        assert!(!source_is(dir.path(), "blob:1", "cd"));
    }
}
