//! JSON Schemas for every manifest kind and for the JSON plan, generated from the very types
//! the loader and the renderer use, so the schemas cannot drift from the code.

use schemars::{JsonSchema, schema_for};

use crate::manifest::raw::{RawEnvironment, RawFleetFile, RawHostFile, RawRuntime};

/// The plan as `--format json` prints it (mirrors [`crate::plan::Plan`]).
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(title = "Flotilla plan", deny_unknown_fields)]
struct PlanSchema {
    /// Always "1" for this layout.
    format_version: String,
    fleet: String,
    /// Full commit id; null for an uncommitted tree.
    revision: Option<String>,
    /// RFC 3339.
    created_at: String,
    summary: SummarySchema,
    environments: Vec<EnvironmentSchema>,
    hosts: Vec<HostSchema>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct SummarySchema {
    add: u64,
    change: u64,
    destroy: u64,
    hosts_changed: u64,
    hosts_total: u64,
    hosts_unreachable: u64,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct EnvironmentSchema {
    name: String,
    window: WindowSchema,
    frozen: bool,
    /// The rollout of this revision halted: where, why and when; null when not.
    halted: Option<HaltSchema>,
    /// Why changes wait, or null.
    waiting: Option<String>,
    /// Host names per wave.
    waves: Vec<Vec<String>>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct HaltSchema {
    /// The wave (1-based) the rollout halted in.
    wave: u32,
    /// Why it halted.
    reason: String,
    /// When it halted, RFC 3339.
    at: String,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct WindowSchema {
    open: bool,
    closes_at: Option<String>,
    next_open: Option<String>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct HostSchema {
    name: String,
    environment: String,
    /// 1-based; null when unchanged.
    wave: Option<u32>,
    fingerprint: Option<String>,
    /// Why the host could not be observed, or null.
    error: Option<String>,
    /// Why apply will refuse the host, or null; a refused host has no changes and no wave.
    refused: Option<String>,
    changes: Vec<ChangeSchema>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct ChangeSchema {
    action: crate::plan::Action,
    kind: crate::plan::Kind,
    name: String,
    /// Runtime version, or a file's sha256; for `sensitive` files and files leaving the
    /// manifests, `hmac-sha256:` and an HMAC of it under the store's key instead.
    before: Option<String>,
    /// As `before`, for what the change makes.
    after: Option<String>,
    /// Unified diff; files only, absent when sensitive.
    #[schemars(default)]
    diff: Option<String>,
    drift: bool,
}

/// (file name, pretty JSON) for every schema in `schema/`.
pub fn all() -> Vec<(&'static str, String)> {
    let render = |s: schemars::Schema| serde_json::to_string_pretty(&s).unwrap_or_default() + "\n";
    vec![
        ("flotilla.schema.json", render(schema_for!(RawFleetFile))),
        ("environment.schema.json", render(schema_for!(RawEnvironment))),
        ("host.schema.json", render(schema_for!(RawHostFile))),
        ("runtime.schema.json", render(schema_for!(RawRuntime))),
        ("plan.schema.json", render(schema_for!(PlanSchema))),
    ]
}
