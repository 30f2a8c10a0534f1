//! Artifacts: fetch, cache, sha256, minisign, tarball inspection (being written).
