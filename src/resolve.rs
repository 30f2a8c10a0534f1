//! Desired state per host: the layers of DESIGN §2.3 (fleet defaults → environment → matching
//! groups in file order → host) folded into one value per setting, runtime and file, each
//! remembering the layer it came from so `show` can explain it. Also the checks that only make
//! sense per host: a relative `root` for ssh, files under Flotilla's own directories, labels a
//! template needs, and hosts that would share (address, port, root).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::diagnostic::Diagnostic;
use crate::manifest::model::{Become, TransportKind};
use crate::manifest::model::{Environment, FileBody, FileSpec, Fleet, Host, HostPath, Pin, Settings};
use crate::manifest::template::Vars;
use crate::names::{EnvName, HostName, RuntimeName};

/// Where a resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Flotilla's built-in default.
    Default,
    /// `[defaults]` in flotilla.toml.
    Fleet,
    Environment(EnvName),
    /// The n-th `[[group]]` (1-based) of the environment.
    Group(EnvName, usize),
    Host,
    /// `--identity-file` / `--known-hosts`, which override the manifests.
    CommandLine,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Default => f.write_str("built-in default"),
            Layer::Fleet => f.write_str("flotilla.toml [defaults]"),
            Layer::Environment(e) => write!(f, "environments/{e}.toml"),
            Layer::Group(e, n) => write!(f, "environments/{e}.toml [[group]] #{n}"),
            Layer::Host => f.write_str("host"),
            Layer::CommandLine => f.write_str("command line"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub from: Layer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedSettings {
    pub transport: Sourced<TransportKind>,
    pub user: Sourced<String>,
    pub port: Sourced<u16>,
    #[serde(rename = "become")]
    pub become_: Sourced<Become>,
    pub root: Sourced<String>,
    pub runtimes_dir: Sourced<HostPath>,
    pub state_dir: Sourced<HostPath>,
    pub identity_file: Sourced<Option<String>>,
    pub known_hosts: Sourced<Option<String>>,
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Sourced<Duration>,
    #[serde(serialize_with = "ser_duration")]
    pub command_timeout: Sourced<Duration>,
    pub keep_versions: Sourced<u32>,
}

fn ser_duration<S: serde::Serializer>(d: &Sourced<Duration>, s: S) -> Result<S::Ok, S::Error> {
    Sourced {
        value: crate::duration::format_duration(d.value),
        from: d.from.clone(),
    }
    .serialize(s)
}

/// A managed file as it should be on one host, template rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredFile {
    pub path: HostPath,
    #[serde(skip)]
    pub content: Arc<[u8]>,
    pub sha256: String,
    pub mode: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub sensitive: bool,
    pub on_change: Option<String>,
    /// For content rendered from a template: which template (its manifest location), so that
    /// plans can fold hosts whose files differ only by the host's template variables.
    #[serde(skip)]
    pub template: Option<String>,
}

/// Everything one host should have, per the manifests at one revision.
#[derive(Debug, Clone, Serialize)]
pub struct DesiredHost {
    pub name: HostName,
    pub environment: EnvName,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub canary: bool,
    pub decommission: bool,
    pub settings: ResolvedSettings,
    pub runtimes: BTreeMap<RuntimeName, Sourced<Pin>>,
    pub files: BTreeMap<HostPath, Sourced<DesiredFile>>,
}

/// Command-line connection settings (`--identity-file`, `--known-hosts`) override the
/// manifests for `hosts` (DESIGN §2.1); each one given is sourced from the command line.
pub fn override_connection(
    hosts: &mut [DesiredHost],
    identity_file: Option<&str>,
    known_hosts: Option<&str>,
) {
    let flag = |v: Option<&str>| {
        v.map(|v| Sourced {
            value: Some(v.to_owned()),
            from: Layer::CommandLine,
        })
    };
    for h in hosts {
        if let Some(v) = flag(identity_file) {
            h.settings.identity_file = v;
        }
        if let Some(v) = flag(known_hosts) {
            h.settings.known_hosts = v;
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        use fmt::Write as _;
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn layer_settings<'a>(fleet: &'a Fleet, env: &'a Environment, host: &'a Host) -> Vec<(&'a Settings, Layer)> {
    let mut layers = vec![
        (&fleet.defaults, Layer::Fleet),
        (&env.defaults, Layer::Environment(env.name.clone())),
    ];
    for g in matching_groups(env, host) {
        layers.push((&g.defaults, Layer::Group(env.name.clone(), g.index + 1)));
    }
    layers.push((&host.settings, Layer::Host));
    layers
}

fn matching_groups<'a>(
    env: &'a Environment,
    host: &'a Host,
) -> impl Iterator<Item = &'a crate::manifest::model::Group> {
    env.groups
        .iter()
        .filter(|g| g.matches.iter().all(|(k, v)| host.labels.get(k) == Some(v)))
}

/// Resolves one host; `Err` holds every per-host problem found.
pub fn resolve_host(fleet: &Fleet, host: &Host) -> Result<DesiredHost, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let Some(env) = fleet.environments.get(&host.environment) else {
        return Err(vec![Diagnostic::new(format!(
            "host `{}` names unknown environment `{}`",
            host.name, host.environment
        ))]);
    };
    let layers = layer_settings(fleet, env, host);
    macro_rules! pick {
        ($field:ident, $default:expr) => {{
            let mut v = Sourced {
                value: $default,
                from: Layer::Default,
            };
            for (s, layer) in &layers {
                if let Some(x) = &s.$field {
                    v = Sourced {
                        value: x.clone(),
                        from: layer.clone(),
                    };
                }
            }
            v
        }};
    }
    let fixed = |s: &str| HostPath::new(s).unwrap_or_else(|_| unreachable!("built-in paths are normalised"));
    let settings = ResolvedSettings {
        transport: pick!(transport, TransportKind::Ssh),
        user: pick!(user, "root".to_owned()),
        port: pick!(port, 22),
        become_: pick!(become_, Become::None),
        root: pick!(root, "/".to_owned()),
        runtimes_dir: pick!(runtimes_dir, fixed("/opt/flotilla/runtimes")),
        state_dir: pick!(state_dir, fixed("/var/lib/flotilla")),
        identity_file: {
            let s = pick!(identity_file, String::new());
            Sourced {
                value: Some(s.value).filter(|v| !v.is_empty()),
                from: s.from,
            }
        },
        known_hosts: {
            let s = pick!(known_hosts, String::new());
            Sourced {
                value: Some(s.value).filter(|v| !v.is_empty()),
                from: s.from,
            }
        },
        connect_timeout: pick!(connect_timeout, Duration::from_secs(10)),
        command_timeout: pick!(command_timeout, Duration::from_secs(300)),
        keep_versions: pick!(keep_versions, 2),
    };
    let here = |msg: String| Diagnostic::new(msg).at(&host.origin.file, host.origin.span.clone());
    if settings.transport.value == TransportKind::Ssh && !settings.root.value.starts_with('/') {
        diags.push(
            here(format!(
                "host `{}`: `root` must be absolute for the ssh transport",
                host.name
            ))
            .label(format!(
                "root = {:?} comes from {}",
                settings.root.value, settings.root.from
            ))
            .help("only the local transport reads a relative root (relative to the fleet root)"),
        );
    }
    if settings.transport.value == TransportKind::Local
        && !settings.root.value.starts_with('/')
        && climbs_out(&settings.root.value)
    {
        diags.push(
            here(format!(
                "host `{}`: relative `root` {:?} leads outside the fleet directory",
                host.name, settings.root.value
            ))
            .label(format!(
                "root = {:?} comes from {}; a relative root is confined to the fleet directory",
                settings.root.value, settings.root.from
            ))
            .help("remove the `..` that climb out, or use an absolute root for a host outside the fleet"),
        );
    }

    let mut runtimes: BTreeMap<RuntimeName, Sourced<Pin>> = BTreeMap::new();
    let mut pin_layer = |pins: &BTreeMap<RuntimeName, Pin>, layer: Layer| {
        for (name, pin) in pins {
            runtimes.insert(
                name.clone(),
                Sourced {
                    value: pin.clone(),
                    from: layer.clone(),
                },
            );
        }
    };
    pin_layer(&env.runtimes, Layer::Environment(env.name.clone()));
    for g in matching_groups(env, host) {
        pin_layer(&g.runtimes, Layer::Group(env.name.clone(), g.index + 1));
    }
    pin_layer(&host.runtimes, Layer::Host);

    let address = host.address.clone().unwrap_or_else(|| host.name.to_string());
    let vars = Vars {
        host_name: host.name.as_str(),
        host_address: &address,
        host_environment: host.environment.as_str(),
        labels: &host.labels,
        fleet_name: fleet.name.as_str(),
    };
    let mut files = BTreeMap::new();
    let mut file_layer = |specs: &[FileSpec], layer: Layer, diags: &mut Vec<Diagnostic>| {
        for spec in specs {
            let content: Arc<[u8]> = match &spec.body {
                FileBody::Literal(b) => b.clone(),
                FileBody::Template(t) => match t.render(&vars) {
                    Ok(s) => Arc::from(s.into_bytes()),
                    Err(label) => {
                        diags.push(
                            Diagnostic::new(format!(
                                "host `{}` has no label `{label}`, which this template uses",
                                host.name
                            ))
                            .at(&spec.origin.file, spec.origin.span.clone())
                            .label(format!("uses {{{{ host.labels.{label} }}}}"))
                            .help(format!(
                                "add `{label}` to the labels of host `{}`, or stop using it here",
                                host.name
                            )),
                        );
                        continue;
                    }
                },
            };
            for (dir, key) in [
                (&settings.runtimes_dir.value, "runtimes_dir"),
                (&settings.state_dir.value, "state_dir"),
            ] {
                if spec.path.is_within(dir) {
                    diags.push(
                        Diagnostic::new(format!(
                            "file `{}` lies under `{key}` ({dir}) on host `{}`",
                            spec.path, host.name
                        ))
                        .at(&spec.origin.file, spec.origin.span.clone())
                        .label(format!("Flotilla owns everything under {key}"))
                        .help("manage files outside Flotilla's own directories"),
                    );
                }
            }
            let file = DesiredFile {
                path: spec.path.clone(),
                sha256: sha256_hex(&content),
                content,
                mode: spec.mode,
                owner: spec.owner.clone(),
                group: spec.group.clone(),
                sensitive: spec.sensitive,
                on_change: spec.on_change.clone(),
                template: matches!(spec.body, FileBody::Template(_))
                    .then(|| format!("{}:{}", spec.origin.file, spec.origin.span.start)),
            };
            files.insert(
                spec.path.clone(),
                Sourced {
                    value: file,
                    from: layer.clone(),
                },
            );
        }
    };
    file_layer(&env.files, Layer::Environment(env.name.clone()), &mut diags);
    for g in matching_groups(env, host) {
        file_layer(&g.files, Layer::Group(env.name.clone(), g.index + 1), &mut diags);
    }
    file_layer(&host.files, Layer::Host, &mut diags);

    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(DesiredHost {
        name: host.name.clone(),
        environment: host.environment.clone(),
        address,
        labels: host.labels.clone(),
        canary: host.canary,
        decommission: host.decommission,
        settings,
        runtimes,
        files,
    })
}

/// Whether a relative path's `..` climb above where it starts.
fn climbs_out(rel: &str) -> bool {
    let mut depth = 0usize;
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." if depth == 0 => return true,
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    false
}

fn normal_root(root: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in root.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    if root.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Resolves every host and checks fleet-wide uniqueness of (address, port, root).
pub fn resolve_all(fleet: &Fleet) -> Result<Vec<DesiredHost>, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut out = Vec::with_capacity(fleet.hosts.len());
    let mut endpoints: BTreeMap<(String, u16, String), &Host> = BTreeMap::new();
    for host in &fleet.hosts {
        match resolve_host(fleet, host) {
            Ok(d) => {
                // The same machine and directory, however the root is spelled; local hosts
                // all share this machine, so only their roots tell them apart.
                let root = normal_root(&d.settings.root.value);
                let key = match d.settings.transport.value {
                    TransportKind::Local => (String::new(), 0, root),
                    TransportKind::Ssh => (d.address.clone(), d.settings.port.value, root),
                };
                if let Some(first) = endpoints.get(&key) {
                    diags.push(
                        Diagnostic::new(match d.settings.transport.value {
                            TransportKind::Local => format!(
                                "hosts `{}` and `{}` share root {} on this machine (local transport)",
                                first.name, host.name, key.2
                            ),
                            TransportKind::Ssh => format!(
                                "hosts `{}` and `{}` share address {}, port {} and root {}",
                                first.name, host.name, key.0, key.1, key.2
                            ),
                        })
                        .at(&host.origin.file, host.origin.span.clone())
                        .label("two hosts would manage the same machine and directories")
                        .help("give each host its own address, port or root"),
                    );
                } else {
                    endpoints.insert(key, host);
                }
                out.push(d);
            }
            Err(mut d) => diags.append(&mut d),
        }
    }
    if diags.is_empty() { Ok(out) } else { Err(diags) }
}
