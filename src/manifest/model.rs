//! The validated fleet: what the manifests mean once every check has passed. Every name is a
//! checked newtype, every duration parsed, every path normalised, every template compiled, so
//! `resolve` and `plan` never see raw strings from the TOML.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::template::Template;
use crate::diagnostic::Location;
use crate::names::{EnvName, FleetName, HostName, RuntimeName, Version};
use crate::schedule::waves::WaveTarget;
use crate::schedule::window::{Freeze, Window};

#[derive(Debug, Clone)]
pub struct Fleet {
    pub name: FleetName,
    pub promotion: Vec<EnvName>,
    pub defaults: Settings,
    pub trust: Trust,
    pub environments: BTreeMap<EnvName, Environment>,
    /// Sorted by name.
    pub hosts: Vec<Host>,
    pub runtimes: BTreeMap<RuntimeName, Runtime>,
}

impl Fleet {
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts
            .binary_search_by(|h| h.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.hosts[i])
    }
}

/// One layer of host settings; `None` means "not set here, ask the layer below".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub transport: Option<TransportKind>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub become_: Option<Become>,
    pub root: Option<String>,
    pub runtimes_dir: Option<HostPath>,
    pub state_dir: Option<HostPath>,
    pub identity_file: Option<String>,
    pub known_hosts: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub command_timeout: Option<Duration>,
    pub keep_versions: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// minisign public keys as written (base64), each checked to parse.
    pub keys: Vec<String>,
    pub require_signatures: bool,
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: EnvName,
    pub description: Option<String>,
    pub auto_apply: bool,
    pub defaults: Settings,
    pub runtimes: BTreeMap<RuntimeName, Pin>,
    pub files: Vec<FileSpec>,
    pub groups: Vec<Group>,
    pub rollout: Rollout,
    pub windows: Vec<Window>,
    pub freezes: Vec<Freeze>,
}

/// What a layer says about one runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Pin {
    Version(Version),
    /// `false`: remove it where Flotilla manages it.
    Remove,
}

#[derive(Debug, Clone)]
pub struct Group {
    /// Position in the environment file, for `show`'s provenance.
    pub index: usize,
    pub matches: BTreeMap<String, String>,
    pub defaults: Settings,
    pub runtimes: BTreeMap<RuntimeName, Pin>,
    pub files: Vec<FileSpec>,
}

#[derive(Debug, Clone)]
pub struct Rollout {
    pub waves: Vec<WaveTarget>,
    /// Where `waves` was written, when it was: waves that decrease once evaluated against
    /// the environment's hosts are reported there.
    pub waves_at: Option<crate::diagnostic::Location>,
    pub max_parallel: u32,
    pub max_failures: CountOrPercent,
    pub bake: Duration,
    pub on_failure: OnFailure,
    pub health_command: Option<String>,
    pub promotion_soak: Duration,
    /// A new rollout starts at least this long after the last one ended.
    pub min_interval: Duration,
    /// A rollout still running after this long halts; `None`: no limit.
    pub max_duration: Option<Duration>,
    /// Hosts busier than this wait (DESIGN §6.4).
    pub host_limits: HostLimits,
}

/// `host_limits`, in percent; `None`: no limit on that resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostLimits {
    pub cpu: Option<u32>,
    pub memory: Option<u8>,
    pub disk: Option<u8>,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            waves: vec![WaveTarget::Count(1), WaveTarget::Percent(100)],
            waves_at: None,
            max_parallel: 10,
            max_failures: CountOrPercent::Count(0),
            bake: Duration::ZERO,
            on_failure: OnFailure::Rollback,
            health_command: None,
            promotion_soak: Duration::ZERO,
            min_interval: Duration::ZERO,
            max_duration: None,
            host_limits: HostLimits::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: HostName,
    pub environment: EnvName,
    pub address: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub canary: bool,
    pub decommission: bool,
    pub settings: Settings,
    pub runtimes: BTreeMap<RuntimeName, Pin>,
    pub files: Vec<FileSpec>,
    /// Where the `[[host]]` table is, for errors found while resolving it.
    pub origin: Location,
}

/// An absolute, normalised path on a host (before the host's `root` is put in front).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct HostPath(String);

impl HostPath {
    /// Accepts `/`-rooted paths without `.`, `..`, empty components, a trailing `/` or
    /// control characters, so that a path names exactly one place on every host.
    pub fn new(s: &str) -> Result<HostPath, &'static str> {
        if !s.starts_with('/') {
            return Err("it must be absolute (start with `/`)");
        }
        if s.chars().any(char::is_control) {
            return Err("it contains a control character");
        }
        if s == "/" {
            return Ok(HostPath(s.to_owned()));
        }
        if s.ends_with('/') {
            return Err("it ends with `/`");
        }
        for part in s[1..].split('/') {
            match part {
                "" => return Err("it contains `//`"),
                "." | ".." => return Err("it contains a `.` or `..` component"),
                _ => {}
            }
        }
        Ok(HostPath(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` is `dir` or lies below it.
    pub fn is_within(&self, dir: &HostPath) -> bool {
        dir.0 == "/"
            || self.0 == dir.0
            || (self.0.starts_with(&dir.0) && self.0.as_bytes().get(dir.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for HostPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone)]
pub struct FileSpec {
    pub path: HostPath,
    pub body: FileBody,
    /// Permission bits, e.g. 0o644.
    pub mode: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub sensitive: bool,
    pub on_change: Option<String>,
    pub origin: Location,
}

#[derive(Debug, Clone)]
pub enum FileBody {
    /// Written as is (inline `content`, or a `source` file's bytes).
    Literal(Arc<[u8]>),
    /// `template = true`: rendered per host.
    Template(Arc<Template>),
}

#[derive(Debug, Clone)]
pub struct Runtime {
    pub name: RuntimeName,
    pub description: Option<String>,
    pub versions: BTreeMap<Version, RuntimeVersion>,
    pub health: Option<Health>,
    pub hooks: Hooks,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    pub version: Version,
    pub artifact: ArtifactRef,
    /// Lower-case hex.
    pub sha256: String,
    pub signature: ArtifactRef,
}

/// Where an artifact (or its signature) comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "location", rename_all = "lowercase")]
pub enum ArtifactRef {
    /// A path in the repository, relative to the fleet root.
    Repo(String),
    Url(String),
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactRef::Repo(p) | ArtifactRef::Url(p) => f.write_str(p),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub command: String,
    pub timeout: Duration,
    pub retries: u32,
    pub interval: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub activate: Option<String>,
    pub remove: Option<String>,
}

// Small serde enums the manifests use and the rest of the code matches on. They live here,
// not in `raw`, so code past validation never names a raw type.

/// How Flotilla reaches a host (`transport`): `ssh` (openssh), or `local` (`sh` on the
/// controller itself).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Ssh,
    Local,
}

/// How commands on a host gain root (`become`): `none` (they run as the connecting user) or
/// `sudo` (`sudo -n`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Become {
    None,
    Sudo,
}

/// What a rollout does past `max_failures` (`on_failure`): `halt`, or `rollback` (halt and roll
/// back every host the rollout changed in the environment, last wave first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    Rollback,
    Halt,
}

/// A host count (`3`) or a share of hosts (`"25%"`), as `waves` and `max_failures` take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema)]
#[schemars(untagged)]
pub enum CountOrPercent {
    Count(u32),
    /// "N%"
    #[schemars(with = "String")]
    Percent(u8),
}

impl<'de> serde::Deserialize<'de> for CountOrPercent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CpVisitor;
        impl<'de> serde::de::Visitor<'de> for CpVisitor {
            type Value = CountOrPercent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a host count such as 1, or a percentage such as \"25%\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<CountOrPercent, E> {
                u32::try_from(v).map(CountOrPercent::Count).map_err(|_| {
                    E::custom(format!(
                        "{v} is not a host count: use a number from 0 up, or \"N%\""
                    ))
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<CountOrPercent, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CountOrPercent, E> {
                let bad = || {
                    E::custom(format!(
                        "`{v}` is not a percentage: write \"N%\" with N from 0 to 100"
                    ))
                };
                let n = v.strip_suffix('%').ok_or_else(bad)?;
                let n: u8 = n.trim().parse().map_err(|_| bad())?;
                if n > 100 {
                    return Err(bad());
                }
                Ok(CountOrPercent::Percent(n))
            }
        }
        d.deserialize_any(CpVisitor)
    }
}

impl fmt::Display for CountOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CountOrPercent::Count(n) => write!(f, "{n}"),
            CountOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}
