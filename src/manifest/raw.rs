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
            #[schemars(extend("default" = "ssh"))]
            pub transport: Option<Sp<TransportKind>>,
            /// The SSH user.
            #[serde(default)]
            #[schemars(extend("default" = "root"))]
            pub user: Option<Str>,
            /// The SSH port.
            #[serde(default)]
            #[schemars(extend("default" = 22))]
            pub port: Option<Sp<u16>>,
            /// "none", or "sudo" to run host commands through `sudo -n`.
            #[serde(default, rename = "become")]
            #[schemars(extend("default" = "none"))]
            pub become_: Option<Sp<Become>>,
            /// Prefix put in front of every host-side path; must be absolute for ssh, and for local
            /// a relative root is relative to the fleet root.
            #[serde(default)]
            #[schemars(extend("default" = "/"))]
            pub root: Option<Str>,
            /// Where runtimes are unpacked on the host (under `root`).
            #[serde(default)]
            #[schemars(extend("default" = "/opt/flotilla/runtimes"))]
            pub runtimes_dir: Option<Str>,
            /// Where Flotilla keeps state.json, its lock and backups on the host (under `root`).
            #[serde(default)]
            #[schemars(extend("default" = "/var/lib/flotilla"))]
            pub state_dir: Option<Str>,
            /// SSH private key: absolute or `~/`, never inside the repository; unset: ssh's own
            /// choice. `--identity-file` overrides it.
            #[serde(default)]
            #[schemars(extend("default" = null))]
            pub identity_file: Option<Str>,
            /// known_hosts file: absolute or `~/`, never inside the repository; unset: ssh's
            /// own. Host keys are always checked. `--known-hosts` overrides it.
            #[serde(default)]
            #[schemars(extend("default" = null))]
            pub known_hosts: Option<Str>,
            /// Bound on opening a connection, a duration such as "10s".
            #[serde(default)]
            #[schemars(extend("default" = "10s"))]
            pub connect_timeout: Option<Str>,
            /// Bound on every host command (hooks, health checks, unpacking), such as "5m".
            #[serde(default)]
            #[schemars(extend("default" = "5m"))]
            pub command_timeout: Option<Str>,
            /// Versions kept per runtime on a host, the active one included.
            #[serde(default)]
            #[schemars(extend("default" = 2))]
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
    /// The fleet's name and promotion order.
    pub fleet: RawFleet,
    /// Host settings for every host; environments, groups and hosts override them.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub defaults: RawSettings,
    /// Which minisign keys artifacts must be signed with.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub trust: RawTrust,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// The fleet's name: recorded on every host and naming the default store directory.
    pub name: Str,
    /// Environments in promotion order: a version reaches an environment only after every
    /// earlier one that uses the runtime ran it.
    #[serde(default)]
    #[schemars(extend("default" = []))]
    pub promotion: Vec<Str>,
}

#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    /// Trusted minisign public keys (the base64 line of a .pub file).
    #[serde(default)]
    #[schemars(extend("default" = []))]
    pub keys: Vec<Str>,
    /// Artifacts must carry a valid signature by a trusted key.
    #[serde(default)]
    #[schemars(extend("default" = true))]
    pub require_signatures: Option<bool>,
}

/// `environments/<name>.toml`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "environment")]
pub struct RawEnvironment {
    /// What this environment is, for people.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub description: Option<String>,
    /// `watch` applies changes here without a person only when true.
    #[serde(default)]
    pub auto_apply: bool,
    /// Host settings for this environment's hosts, over flotilla.toml's [defaults].
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub defaults: RawSettings,
    /// Runtime name -> version (or false to remove it) for every host of the environment.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub runtimes: BTreeMap<Str, Sp<RuntimePin>>,
    /// Managed files for every host of the environment, keyed by path.
    #[serde(default, rename = "file")]
    #[schemars(extend("default" = []))]
    pub files: Vec<RawFile>,
    /// Extra settings for the hosts whose labels match, applied in file order.
    #[serde(default, rename = "group")]
    #[schemars(extend("default" = []))]
    pub groups: Vec<RawGroup>,
    /// How changes roll out: waves, parallelism, failure budget, health.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub rollout: RawRollout,
    /// Weekly maintenance windows; none: changes may start at any time.
    #[serde(default, rename = "window")]
    #[schemars(extend("default" = []))]
    pub windows: Vec<RawWindow>,
    /// Dated ranges in which nothing changes, windows notwithstanding.
    #[serde(default, rename = "freeze")]
    #[schemars(extend("default" = []))]
    pub freezes: Vec<RawFreeze>,
}

/// A managed file on a host.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Absolute, normalised host path.
    pub path: Str,
    /// The file's content; exactly one of `content` and `source`.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub content: Option<Str>,
    /// A path in the repository, relative to the fleet root; exactly one of `content` and
    /// `source`.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub source: Option<Str>,
    /// Substitute {{ host.name }}, {{ host.address }}, {{ host.environment }},
    /// {{ host.labels.KEY }} and {{ fleet.name }}; without it the content is written as is.
    #[serde(default)]
    pub template: bool,
    /// Octal permission bits, e.g. "0644".
    #[serde(default)]
    #[schemars(extend("default" = "0644"))]
    pub mode: Option<Str>,
    /// Owning user; unset: the connecting user.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub owner: Option<Str>,
    /// Owning group; unset: the connecting user's group.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub group: Option<Str>,
    /// Never show the content in plans, previews or logs.
    #[serde(default)]
    pub sensitive: bool,
    /// A host command (sh -c) run once after the file changed.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub on_change: Option<Str>,
}

with_settings! {
    /// Extra settings for the hosts whose labels all match.
    #[derive(Clone, Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawGroup {
        /// Labels a host must all have for the group to apply, e.g. { role = "worker" }.
        #[serde(rename = "match")]
        pub match_: Sp<BTreeMap<String, String>>,
        /// Runtime name -> version (or false to remove it) for the matching hosts.
        #[serde(default)]
        #[schemars(extend("default" = {}))]
        pub runtimes: BTreeMap<Str, Sp<RuntimePin>>,
        /// Managed files for the matching hosts.
        #[serde(default, rename = "file")]
        #[schemars(extend("default" = []))]
        pub files: Vec<RawFile>,
    }
}

/// `[rollout] host_limits`: usage limits, each "N%".
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHostLimits {
    /// One-minute load average per CPU, e.g. "90%" (may be over 100%).
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub cpu: Option<Str>,
    /// Memory in use, e.g. "85%".
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub memory: Option<Str>,
    /// The filesystem holding runtimes_dir, e.g. "80%".
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub disk: Option<Str>,
}

/// `[rollout]`; every key optional.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// Cumulative targets: a host count or "N%" of the changing hosts; the first wave is
    /// the canary and a final "100%" is implied.
    #[serde(default)]
    #[schemars(extend("default" = [1, "100%"]))]
    pub waves: Option<Sp<Vec<Sp<CountOrPercent>>>>,
    /// Hosts changed at once within a wave.
    #[serde(default)]
    #[schemars(extend("default" = 10))]
    pub max_parallel: Option<Sp<u32>>,
    /// Failed hosts tolerated before the rollout halts: a count or "N%" (rounded down).
    #[serde(default)]
    #[schemars(extend("default" = 0))]
    pub max_failures: Option<Sp<CountOrPercent>>,
    /// Wait after each wave, then re-check the health of every changed host, e.g. "10m".
    #[serde(default)]
    #[schemars(extend("default" = "0s"))]
    pub bake: Option<Str>,
    /// When the rollout halts: "rollback" every host it changed, or "halt" where it is.
    #[serde(default)]
    #[schemars(extend("default" = "rollback"))]
    pub on_failure: Option<Sp<OnFailure>>,
    /// A host command (sh -c) run after each host's changes; failing it fails the host.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub health_command: Option<Str>,
    /// How long ago every earlier environment in `promotion` must have converged on a
    /// version before it may start here.
    #[serde(default)]
    #[schemars(extend("default" = "0s"))]
    pub promotion_soak: Option<Str>,
    /// A new rollout of this environment starts at least this long after the last one
    /// ended, so a burst of commits does not churn the fleet.
    #[serde(default)]
    #[schemars(extend("default" = "0s"))]
    pub min_interval: Option<Str>,
    /// A rollout still running after this long halts (reason `max_duration`); "" or unset:
    /// no limit.
    #[serde(default)]
    #[schemars(extend("default" = ""))]
    pub max_duration: Option<Str>,
    /// A host busier than this does not start (it waits as busy, the rest of its wave goes
    /// on): `cpu` (one-minute load per CPU), `memory` (in use) and `disk` (the filesystem
    /// holding runtimes_dir), each "N%".
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub host_limits: Option<RawHostLimits>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// Days on which the window starts (mon..sun); omitted: every day.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub days: Option<Vec<Str>>,
    /// Local wall-clock "HH:MM".
    pub start: Str,
    /// How long the window stays open (elapsed time), e.g. "3h"; exactly one of `duration`
    /// and `end`.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub duration: Option<Str>,
    /// Local wall-clock "HH:MM"; before `start` crosses midnight. Exactly one of
    /// `duration` and `end`.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub end: Option<Str>,
    /// IANA time zone name, e.g. "Europe/Berlin".
    #[serde(default)]
    #[schemars(extend("default" = "UTC"))]
    pub timezone: Option<Str>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFreeze {
    /// RFC 3339.
    pub from: Str,
    /// RFC 3339; exclusive.
    pub until: Str,
    /// Why, shown in plans.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub reason: Option<String>,
}

/// A file under `hosts/`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "hosts file")]
pub struct RawHostFile {
    /// The hosts this file defines.
    #[serde(default)]
    #[schemars(extend("default" = []))]
    pub host: Vec<RawHost>,
}

with_settings! {
    #[derive(Clone, Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawHost {
        /// The host's name, unique in the fleet.
        pub name: Str,
        /// The environment it belongs to (a file stem under environments/).
        pub environment: Str,
        /// Where to connect; unset: the name.
        #[serde(default)]
        #[schemars(extend("default" = null))]
        pub address: Option<Str>,
        /// Labels, matched by [[group]] `match` and `--label`, and usable in templates.
        #[serde(default)]
        #[schemars(extend("default" = {}))]
        pub labels: BTreeMap<Str, String>,
        /// Canary hosts are ordered first, into the first wave.
        #[serde(default)]
        pub canary: bool,
        /// Remove every runtime and file Flotilla manages on this host.
        #[serde(default)]
        pub decommission: bool,
        /// Runtime name -> version (or false to remove it), over the environment's and the
        /// groups'.
        #[serde(default)]
        #[schemars(extend("default" = {}))]
        pub runtimes: BTreeMap<Str, Sp<RuntimePin>>,
        /// Managed files for this host, over the environment's and the groups'.
        #[serde(default, rename = "file")]
        #[schemars(extend("default" = []))]
        pub files: Vec<RawFile>,
    }
}

/// `runtimes/<name>.toml`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "runtime")]
pub struct RawRuntime {
    /// What the runtime is, for people.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub description: Option<String>,
    /// The released versions (add one with `flotilla release`).
    #[serde(default, rename = "version")]
    #[schemars(extend("default" = []))]
    pub versions: Vec<RawVersion>,
    /// A check run on the host after activation, in the version's directory.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub health: Option<RawHealth>,
    /// Host commands run when the runtime's active version changes or it is removed.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub hooks: RawHooks,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVersion {
    /// The version's name (a directory name on hosts; not `current`).
    pub version: Str,
    /// The .tar.gz/.tgz: a repository path, or a file:// or https:// URL.
    pub artifact: Str,
    /// The artifact's sha256, 64 hex digits.
    pub sha256: Str,
    /// The minisign signature: a repository path or URL; unset: artifact + ".minisig".
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub signature: Option<Str>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// A host command (sh -c) run in the version's directory; exit 0 means healthy.
    pub command: Str,
    /// Bound on one run of the command.
    #[serde(default)]
    #[schemars(extend("default" = "30s"))]
    pub timeout: Option<Str>,
    /// Tries after the first failure before the host fails.
    #[serde(default)]
    #[schemars(extend("default" = 0))]
    pub retries: Option<u32>,
    /// Wait between tries.
    #[serde(default)]
    #[schemars(extend("default" = "1s"))]
    pub interval: Option<Str>,
}

#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHooks {
    /// A host command (sh -c) run after `current` moves (install, upgrade, rollback).
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub activate: Option<Str>,
    /// A host command (sh -c) run before the runtime is removed from a host.
    #[serde(default)]
    #[schemars(extend("default" = null))]
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
