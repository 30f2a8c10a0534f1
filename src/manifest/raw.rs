//! The manifests exactly as written: serde-only structs that mirror the TOML, with spans kept
//! for every value a later check may need to point at. Nothing here is checked beyond TOML
//! types and unknown keys; `validate` turns these into the checked [`super::model`] types.
//! The JSON Schemas in `schema/` are generated from these structs, so editors see the same
//! keys the loader accepts.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::model::{Become, CountOrPercent, OnFailure, TransportKind};

/// A value with the byte range it came from, so errors can point at it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(transparent)]
pub struct Sp<T>(pub toml::Spanned<T>);

impl<T> Sp<T> {
    pub fn get(&self) -> &T {
        self.0.get_ref()
    }
    pub fn span(&self) -> Range<usize> {
        self.0.span()
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

pub type Str = Sp<String>;

/// Declares a struct that carries every key of `[defaults]` besides its own, because TOML
/// hosts and groups may set any default inline and serde's `flatten` cannot be combined
/// with `deny_unknown_fields`.
macro_rules! with_settings {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// "ssh" or "local" (run on this machine).
            #[serde(default)]
            pub transport: Option<Sp<TransportKind>>,
            /// The SSH user.
            #[serde(default)]
            pub user: Option<Str>,
            /// The SSH port.
            #[serde(default)]
            pub port: Option<Sp<u16>>,
            /// "none", or "sudo" to run host commands through `sudo -n`.
            #[serde(default, rename = "become")]
            pub become_: Option<Sp<Become>>,
            /// Prefix put in front of every host-side path.
            #[serde(default)]
            pub root: Option<Str>,
            #[serde(default)]
            pub runtimes_dir: Option<Str>,
            #[serde(default)]
            pub state_dir: Option<Str>,
            /// Absolute or `~/`, never inside the repository.
            #[serde(default)]
            pub identity_file: Option<Str>,
            /// Absolute or `~/`, never inside the repository.
            #[serde(default)]
            pub known_hosts: Option<Str>,
            /// A duration such as "10s".
            #[serde(default)]
            pub connect_timeout: Option<Str>,
            /// Bound on every host command, such as "5m".
            #[serde(default)]
            pub command_timeout: Option<Str>,
            /// Versions kept per runtime on a host, the active one included.
            #[serde(default)]
            pub keep_versions: Option<Sp<u32>>,
        }

        impl $name {
            /// The `[defaults]` keys set in this table.
            pub fn settings(&self) -> RawSettings {
                RawSettings {
                    transport: self.transport.clone(),
                    user: self.user.clone(),
                    port: self.port.clone(),
                    become_: self.become_.clone(),
                    root: self.root.clone(),
                    runtimes_dir: self.runtimes_dir.clone(),
                    state_dir: self.state_dir.clone(),
                    identity_file: self.identity_file.clone(),
                    known_hosts: self.known_hosts.clone(),
                    connect_timeout: self.connect_timeout.clone(),
                    command_timeout: self.command_timeout.clone(),
                    keep_versions: self.keep_versions.clone(),
                }
            }
        }
    };
}

with_settings! {
    /// Host settings: `[defaults]` in flotilla.toml or an environment.
    #[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawSettings {}
}

/// `flotilla.toml`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "flotilla.toml")]
pub struct RawFleetFile {
    pub fleet: RawFleet,
    #[serde(default)]
    pub defaults: RawSettings,
    #[serde(default)]
    pub trust: RawTrust,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub name: Str,
    /// Environments in promotion order.
    #[serde(default)]
    pub promotion: Vec<Str>,
}

#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    /// minisign public keys (base64).
    #[serde(default)]
    pub keys: Vec<Str>,
    /// Default true.
    #[serde(default)]
    pub require_signatures: Option<bool>,
}

/// `environments/<name>.toml`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "environment")]
pub struct RawEnvironment {
    #[serde(default)]
    pub description: Option<String>,
    /// `watch` applies here without a human only when true.
    #[serde(default)]
    pub auto_apply: bool,
    #[serde(default)]
    pub defaults: RawSettings,
    /// Runtime name -> version (or false to remove it) for every host of the environment.
    #[serde(default)]
    pub runtimes: BTreeMap<Str, Sp<RuntimePin>>,
    #[serde(default, rename = "file")]
    pub files: Vec<RawFile>,
    #[serde(default, rename = "group")]
    pub groups: Vec<RawGroup>,
    #[serde(default)]
    pub rollout: RawRollout,
    #[serde(default, rename = "window")]
    pub windows: Vec<RawWindow>,
    #[serde(default, rename = "freeze")]
    pub freezes: Vec<RawFreeze>,
}

/// A managed file on a host.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Absolute, normalised host path.
    pub path: Str,
    #[serde(default)]
    pub content: Option<Str>,
    /// A path in the repository, relative to the fleet root.
    #[serde(default)]
    pub source: Option<Str>,
    #[serde(default)]
    pub template: bool,
    /// Octal, e.g. "0644".
    #[serde(default)]
    pub mode: Option<Str>,
    #[serde(default)]
    pub owner: Option<Str>,
    #[serde(default)]
    pub group: Option<Str>,
    #[serde(default)]
    pub sensitive: bool,
    #[serde(default)]
    pub on_change: Option<Str>,
}

with_settings! {
    /// Extra settings for the hosts whose labels all match.
    #[derive(Clone, Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawGroup {
        #[serde(rename = "match")]
        pub match_: Sp<BTreeMap<String, String>>,
        #[serde(default)]
        pub runtimes: BTreeMap<Str, Sp<RuntimePin>>,
        #[serde(default, rename = "file")]
        pub files: Vec<RawFile>,
    }
}

/// `[rollout]`; every key optional.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// Cumulative targets: a host count or "N%".
    #[serde(default)]
    pub waves: Option<Sp<Vec<Sp<CountOrPercent>>>>,
    #[serde(default)]
    pub max_parallel: Option<Sp<u32>>,
    /// A count or "N%" (rounded down).
    #[serde(default)]
    pub max_failures: Option<Sp<CountOrPercent>>,
    #[serde(default)]
    pub bake: Option<Str>,
    #[serde(default)]
    pub on_failure: Option<Sp<OnFailure>>,
    #[serde(default)]
    pub health_command: Option<Str>,
    #[serde(default)]
    pub promotion_soak: Option<Str>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// Days on which the window starts (mon..sun); omitted: every day.
    #[serde(default)]
    pub days: Option<Vec<Str>>,
    /// Local wall-clock "HH:MM".
    pub start: Str,
    #[serde(default)]
    pub duration: Option<Str>,
    /// Local wall-clock "HH:MM"; before `start` crosses midnight.
    #[serde(default)]
    pub end: Option<Str>,
    /// IANA name; default "UTC".
    #[serde(default)]
    pub timezone: Option<Str>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFreeze {
    /// RFC 3339.
    pub from: Str,
    /// RFC 3339; exclusive.
    pub until: Str,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A file under `hosts/`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "hosts file")]
pub struct RawHostFile {
    #[serde(default)]
    pub host: Vec<RawHost>,
}

with_settings! {
    #[derive(Clone, Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawHost {
        pub name: Str,
        pub environment: Str,
        /// Default: the name.
        #[serde(default)]
        pub address: Option<Str>,
        #[serde(default)]
        pub labels: BTreeMap<Str, String>,
        #[serde(default)]
        pub canary: bool,
        #[serde(default)]
        pub decommission: bool,
        #[serde(default)]
        pub runtimes: BTreeMap<Str, Sp<RuntimePin>>,
        #[serde(default, rename = "file")]
        pub files: Vec<RawFile>,
    }
}

/// `runtimes/<name>.toml`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "runtime")]
pub struct RawRuntime {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, rename = "version")]
    pub versions: Vec<RawVersion>,
    #[serde(default)]
    pub health: Option<RawHealth>,
    #[serde(default)]
    pub hooks: RawHooks,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVersion {
    pub version: Str,
    /// A repository path, or a file:// or https:// URL.
    pub artifact: Str,
    pub sha256: Str,
    /// Default: artifact + ".minisig".
    #[serde(default)]
    pub signature: Option<Str>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub command: Str,
    #[serde(default)]
    pub timeout: Option<Str>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub interval: Option<Str>,
}

#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHooks {
    #[serde(default)]
    pub activate: Option<Str>,
    #[serde(default)]
    pub remove: Option<Str>,
}

/// A runtime's version in an environment, group or host, or `false` to remove it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[schemars(untagged)]
pub enum RuntimePin {
    Version(String),
    #[schemars(with = "bool")]
    Remove,
}

impl<'de> Deserialize<'de> for RuntimePin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PinVisitor;
        impl<'de> Visitor<'de> for PinVisitor {
            type Value = RuntimePin;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a version string, or false to remove the runtime")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RuntimePin, E> {
                Ok(RuntimePin::Version(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RuntimePin, E> {
                if v {
                    Err(E::custom(
                        "`true` is not a version: give a version string, or false to remove the runtime",
                    ))
                } else {
                    Ok(RuntimePin::Remove)
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<RuntimePin, A::Error> {
                Err(de::Error::custom(
                    "expected a version but found a table: a bare key with dots such as \
                     python-3.11-ml = \"2.0.0\" is read by TOML as nested tables; quote it: \
                     \"python-3.11-ml\" = \"2.0.0\"",
                ))
            }
        }
        d.deserialize_any(PinVisitor)
    }
}
