//! JSON Schemas for every manifest kind and for the JSON plan, generated from the very types
//! the loader and the renderer use (the plan's from [`crate::plan::Plan`] itself), so the
//! schemas cannot drift from the code.

use schemars::schema_for;

use crate::manifest::raw::{RawEnvironment, RawFleetFile, RawHostFile, RawRuntime};

/// (file name, pretty JSON) for every schema in `schema/`.
pub fn all() -> Vec<(&'static str, String)> {
    let render = |s: schemars::Schema| serde_json::to_string_pretty(&s).unwrap_or_default() + "\n";
    vec![
        ("flotilla.schema.json", render(schema_for!(RawFleetFile))),
        ("environment.schema.json", render(schema_for!(RawEnvironment))),
        ("host.schema.json", render(schema_for!(RawHostFile))),
        ("runtime.schema.json", render(schema_for!(RawRuntime))),
        ("plan.schema.json", render(schema_for!(crate::plan::Plan))),
        (
            "preview.schema.json",
            render(schema_for!(crate::preview::Preview)),
        ),
    ]
}
