//! `state.json` on a host: what Flotilla last applied there (DESIGN §4). It is how Flotilla
//! knows what it manages — it removes only what this file lists — and how drift is told apart
//! from change. It comes from a host, so it is parsed as untrusted input and bounded in size.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The largest `state.json` Flotilla will read; a bigger one is reported, not parsed.
pub const MAX_STATE_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    pub format_version: u32,
    pub fleet: String,
    pub host: String,
    pub revision: Option<String>,
    pub applied_at: String,
    pub store_id: String,
    pub epoch: u64,
    #[serde(default)]
    pub runtimes: BTreeMap<String, RuntimeState>,
    #[serde(default)]
    pub files: BTreeMap<String, FileState>,
    /// Set while a transaction is under way: the state to return to.
    #[serde(default)]
    pub pending: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeState {
    pub active: String,
    #[serde(default)]
    pub previous: Option<String>,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub sha256: String,
    pub mode: u32,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// The file existed before Flotilla took it over; its original is in `backup/` and is
    /// restored, not deleted, when the file leaves the manifests.
    #[serde(default)]
    pub took_over: bool,
}

impl HostState {
    pub fn parse(bytes: &[u8]) -> Result<HostState, String> {
        if bytes.len() > MAX_STATE_BYTES {
            return Err(format!(
                "state.json is {} bytes, more than the {MAX_STATE_BYTES} Flotilla reads",
                bytes.len()
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("state.json is not valid: {e}"))
    }
}
