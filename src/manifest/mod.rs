//! Manifests: the TOML files of a fleet repository, parsed ([`raw`]), checked ([`validate`])
//! and turned into the validated [`model`]. Pure: repository access is behind
//! [`validate::RepoFiles`].

pub mod model;
pub mod raw;
pub mod template;
pub mod validate;

pub use model::Fleet;
pub use validate::{Failed, LoadContext, Loaded, ManifestFile, RepoEntry, RepoFiles, load};
