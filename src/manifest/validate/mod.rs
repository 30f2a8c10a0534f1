//! Raw manifests to a validated [`Fleet`]: parses every file, runs every check of DESIGN §3
//! that does not depend on a particular host, and collects all problems instead of stopping at
//! the first. Checks that need a host's layered settings live in `resolve`. Repository access
//! goes through [`RepoFiles`]; the only other I/O is resolving the links of `identity_file` and
//! `known_hosts` on this machine, so that one pointing into the repository is caught.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::model::*;
use super::raw::{self, Sp, Str};
use super::template::{Template, TemplateError, VARIABLES};
use crate::diagnostic::{Diagnostic, Location, Sources, closest};
use crate::duration::parse_duration;
use crate::names::{EnvName, FleetName, HostName, RuntimeName, Version};
use crate::schedule::waves::WaveTarget;
use crate::schedule::window::{Freeze, Window, WindowLength, window_length_ok};

mod files;
mod paths;
mod runtimes;
mod schedule;
mod toml_errors;

use paths::*;
use toml_errors::*;

/// The most bytes of a `source` file (or manifest) Flotilla reads; 16 MiB.
pub const MAX_SOURCE_BYTES: u64 = 16 << 20;

/// A manifest file's path (relative to the fleet root, `/`-separated) and text.
#[derive(Debug, Clone)]
pub struct ManifestFile {
    pub path: String,
    pub text: String,
}

/// What the repository holds at a path, as far as validation needs to know.
#[derive(Debug, Clone)]
pub enum RepoEntry {
    Missing,
    /// A symlink in some component of the path; the component (the path up to and including
    /// the link) is given, since links are never followed.
    Symlink(String),
    Directory,
    /// A FIFO, device, socket or submodule: what it is.
    NotRegular(String),
    /// A regular file larger than Flotilla reads (its size), when its content was asked for.
    TooLarge(u64),
    /// A regular file; its bytes when they were asked for.
    File(Option<Arc<[u8]>>),
    Unreadable(String),
}

/// Read access to the fleet's files at the revision being loaded.
pub trait RepoFiles {
    /// `read`: return the content (for `source` files); otherwise only whether it is there.
    fn entry(&self, path: &str, read: bool) -> RepoEntry;
}

/// Facts about where the fleet lives that some checks need.
#[derive(Debug, Clone, Default)]
pub struct LoadContext<'a> {
    /// The repository's working directory, so `identity_file` inside it can be refused.
    pub repo_dir: Option<&'a Path>,
    /// `$HOME`, to expand `~/` in `identity_file` and `known_hosts` the way ssh will.
    pub home: Option<&'a Path>,
}

pub struct Loaded {
    pub fleet: Fleet,
    pub sources: Sources,
}

pub struct Failed {
    pub diagnostics: Vec<Diagnostic>,
    pub sources: Sources,
    /// What could be built despite the problems (the files and entries that were valid), so
    /// that per-host problems are reported alongside (DESIGN §3); `None` when `flotilla.toml`
    /// itself is broken.
    pub partial: Option<Box<Fleet>>,
}

/// Parses and checks every manifest file. All problems are reported together.
pub fn load(files: &[ManifestFile], repo: &dyn RepoFiles, ctx: &LoadContext<'_>) -> Result<Loaded, Failed> {
    let stems = |dir: &str| {
        files
            .iter()
            .filter_map(|f| file_stem(&f.path, dir))
            .map(str::to_owned)
            .collect()
    };
    let mut v = Validator {
        diags: Vec::new(),
        env_files: stems("environments/"),
        runtime_files: stems("runtimes/"),
        broken_versions: BTreeSet::new(),
        repo,
        ctx,
        sources: Sources::default(),
    };
    for f in files {
        v.sources.insert(f.path.clone(), f.text.clone());
    }
    let fleet = v.load(files);
    match fleet {
        Some(fleet) if v.diags.is_empty() => Ok(Loaded {
            fleet,
            sources: v.sources,
        }),
        partial => Err(Failed {
            diagnostics: v.diags,
            sources: v.sources,
            partial: partial.map(Box::new),
        }),
    }
}

struct Validator<'a> {
    diags: Vec<Diagnostic>,
    /// Environments and runtimes that have a file, parsed or not: a reference to one whose
    /// file has errors is not reported again.
    env_files: BTreeSet<String>,
    runtime_files: BTreeSet<String>,
    /// (runtime, version) pairs defined with errors of their own, reported once.
    broken_versions: BTreeSet<(String, String)>,
    repo: &'a dyn RepoFiles,
    ctx: &'a LoadContext<'a>,
    sources: Sources,
}

impl Validator<'_> {
    fn err(
        &mut self,
        file: &str,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diags.push(Diagnostic::new(message).at(file, span));
        let last = self.diags.len() - 1;
        &mut self.diags[last]
    }

    fn name<T: FromStr<Err = crate::names::NameError>>(
        &mut self,
        file: &str,
        s: &Str,
        what: &str,
    ) -> Option<T> {
        match s.get().parse() {
            Ok(n) => Some(n),
            Err(e) => {
                self.err(file, s.span(), format!("invalid {what} `{}`", s.get()))
                    .label = Some(e.to_string());
                None
            }
        }
    }

    fn duration(&mut self, file: &str, s: &Option<Str>) -> Option<std::time::Duration> {
        let s = s.as_ref()?;
        match parse_duration(s.get()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(file, s.span(), format!("invalid duration `{}`", s.get()))
                    .label = Some(e.why.to_owned());
                if let Some(d) = self.diags.last_mut() {
                    d.help = Some(if e.why == crate::duration::TOO_LONG {
                        "durations may be at most 100 years (\"36525d\"); use a shorter one".into()
                    } else {
                        "write durations like \"90s\", \"5m\", \"2h\" or \"1h30m\"".into()
                    });
                }
                None
            }
        }
    }

    fn load(&mut self, files: &[ManifestFile]) -> Option<Fleet> {
        let mut fleet_file = None;
        let mut envs = Vec::new();
        let mut host_files = Vec::new();
        let mut runtimes = Vec::new();
        for f in files {
            let p = f.path.as_str();
            if p == "flotilla.toml" {
                match parse_toml::<raw::RawFleetFile>(f) {
                    Ok(r) => fleet_file = Some((f, r)),
                    Err(d) => self.diags.push(d),
                }
            } else if let Some(stem) = file_stem(p, "environments/") {
                match parse_toml::<raw::RawEnvironment>(f) {
                    Ok(r) => envs.push((f, stem, r)),
                    Err(d) => self.diags.push(d),
                }
            } else if p.starts_with("hosts/") {
                match parse_toml::<raw::RawHostFile>(f) {
                    Ok(r) => host_files.push((f, r)),
                    Err(d) => self.diags.push(d),
                }
            } else if let Some(stem) = file_stem(p, "runtimes/") {
                match parse_toml::<raw::RawRuntime>(f) {
                    Ok(r) => runtimes.push((f, stem, r)),
                    Err(d) => self.diags.push(d),
                }
            }
        }
        if fleet_file.is_none() && !files.iter().any(|f| f.path == "flotilla.toml") {
            self.diags.push(
                Diagnostic::new("no flotilla.toml in the fleet directory")
                    .help("point Flotilla at the directory that holds flotilla.toml (the fleet root)"),
            );
            return None;
        }

        // Runtimes first: environments and hosts refer to them.
        let mut runtime_map = BTreeMap::new();
        for (f, stem, r) in &runtimes {
            let name: Option<RuntimeName> = match stem.parse() {
                Ok(n) => Some(n),
                Err(e) => {
                    self.diags.push(
                        Diagnostic::new(format!("invalid runtime name `{stem}` (from the file name)"))
                            .at(&f.path, 0..0)
                            .label(e.to_string()),
                    );
                    None
                }
            };
            if let Some(rt) = name.and_then(|name| self.runtime(f, name, r)) {
                runtime_map.insert(rt.name.clone(), rt);
            }
        }

        // A broken flotilla.toml must not hide the other files' problems: they are checked
        // against empty fleet settings, and only a partial fleet is returned.
        let (fleet_name, defaults, trust, promotion_raw, ff_path) = match &fleet_file {
            Some((ff, raw_fleet)) => (
                self.name::<FleetName>(&ff.path, &raw_fleet.fleet.name, "fleet name"),
                self.settings(&ff.path, &raw_fleet.defaults),
                self.trust(&ff.path, &raw_fleet.trust),
                raw_fleet.fleet.promotion.clone(),
                ff.path.clone(),
            ),
            None => (
                None,
                Settings::default(),
                Trust {
                    keys: Vec::new(),
                    require_signatures: true,
                },
                Vec::new(),
                String::new(),
            ),
        };

        let mut environments = BTreeMap::new();
        for (f, stem, r) in &envs {
            match stem.parse::<EnvName>() {
                Ok(name) => {
                    let env = self.environment(f, name, r, &runtime_map);
                    environments.insert(env.name.clone(), env);
                }
                Err(e) => self.diags.push(
                    Diagnostic::new(format!("invalid environment name `{stem}` (from the file name)"))
                        .at(&f.path, 0..0)
                        .label(e.to_string()),
                ),
            }
        }

        let mut promotion = Vec::new();
        let mut seen = BTreeSet::new();
        for p in &promotion_raw {
            if !seen.insert(p.get().clone()) {
                self.err(
                    &ff_path,
                    p.span(),
                    format!("`{}` appears twice in `promotion`", p.get()),
                )
                .label = Some("each environment may appear once".into());
                continue;
            }
            match environments.keys().find(|e: &&EnvName| e.as_str() == p.get()) {
                Some(e) => promotion.push(e.clone()),
                None if self.env_files.contains(p.get()) => {}
                None => {
                    let hint = closest(p.get(), environments.keys().map(EnvName::as_str))
                        .map_or("no such environment".to_owned(), |c| {
                            format!("did you mean `{c}`?")
                        });
                    self.err(
                        &ff_path,
                        p.span(),
                        format!("`promotion` names unknown environment `{}`", p.get()),
                    )
                    .label = Some(hint);
                    if let Some(d) = self.diags.last_mut() {
                        d.help = Some("environments are the files under environments/".into());
                    }
                }
            }
        }

        let mut hosts: BTreeMap<HostName, Host> = BTreeMap::new();
        let mut host_origin: BTreeMap<String, Location> = BTreeMap::new();
        for (f, hf) in &host_files {
            for h in &hf.host {
                let Some(host) = self.host(f, h, &environments, &runtime_map) else {
                    continue;
                };
                if let Some(first) = host_origin.get(host.name.as_str()) {
                    let first = self
                        .sources
                        .line_col(&first.file, first.span.start)
                        .map_or(first.file.clone(), |(l, c)| format!("{}:{l}:{c}", first.file));
                    self.err(&f.path, h.name.span(), format!("duplicate host `{}`", host.name))
                        .label = Some(format!("first defined at {first}"));
                    continue;
                }
                host_origin.insert(
                    host.name.as_str().to_owned(),
                    Location {
                        file: f.path.clone(),
                        span: h.name.span(),
                    },
                );
                hosts.insert(host.name.clone(), host);
            }
        }

        // Without a valid fleet name (a broken flotilla.toml, already reported) the fleet is
        // still built under a placeholder name: it only ever serves as the partial fleet whose
        // hosts are resolved for their own problems, since a reported problem means no fleet
        // is returned.
        let name = match fleet_name {
            Some(n) => n,
            None if !self.diags.is_empty() => "unnamed".parse().ok()?,
            None => return None,
        };
        Some(Fleet {
            name,
            promotion,
            defaults,
            trust,
            environments,
            hosts: hosts.into_values().collect(),
            runtimes: runtime_map,
        })
    }

    fn trust(&mut self, file: &str, t: &raw::RawTrust) -> Trust {
        let mut keys = Vec::new();
        for k in &t.keys {
            match minisign_verify::PublicKey::from_base64(k.get().trim()) {
                Ok(_) => keys.push(k.get().trim().to_owned()),
                Err(e) => {
                    self.err(
                        file,
                        k.span(),
                        "trust key does not parse as a minisign public key",
                    )
                    .label = Some(e.to_string());
                    if let Some(d) = self.diags.last_mut() {
                        d.help =
                            Some("use the base64 line of a minisign .pub file (it starts with RW)".into());
                    }
                }
            }
        }
        Trust {
            keys,
            require_signatures: t.require_signatures.unwrap_or(true),
        }
    }

    fn settings(&mut self, file: &str, s: &raw::RawSettings) -> Settings {
        let host_path = |v: &mut Self, p: &Option<Str>, key: &str| -> Option<HostPath> {
            let p = p.as_ref()?;
            match HostPath::new(p.get()) {
                Ok(hp) => Some(hp),
                Err(why) => {
                    v.err(
                        file,
                        p.span(),
                        format!("`{key}` is not a normalised absolute path"),
                    )
                    .label = Some(why.into());
                    None
                }
            }
        };
        let runtimes_dir = host_path(self, &s.runtimes_dir, "runtimes_dir");
        let state_dir = host_path(self, &s.state_dir, "state_dir");
        let identity_file = self.local_path(file, &s.identity_file, "identity_file");
        let known_hosts = self.local_path(file, &s.known_hosts, "known_hosts");
        if let Some(root) = &s.root
            && (root.get().is_empty() || root.get().chars().any(char::is_control))
        {
            self.err(
                file,
                root.span(),
                "`root` must be a non-empty path without control characters",
            );
        }
        if let Some(k) = &s.keep_versions
            && *k.get() == 0
        {
            self.err(file, k.span(), "`keep_versions` must be at least 1")
                .label = Some("the active version is always kept".into());
        }
        if let Some(p) = &s.port
            && *p.get() == 0
        {
            self.err(file, p.span(), "`port` must be a port number (1-65535), not 0")
                .label = Some("port 0 cannot be connected to".into());
        }
        if let Some(u) = &s.user
            && let Err(e) = crate::names::check_name(u.get())
        {
            self.err(file, u.span(), format!("invalid user `{}`", u.get()))
                .label = Some(e.to_string());
        }
        Settings {
            transport: s.transport.as_ref().map(|t| *t.get()),
            user: s.user.as_ref().map(|u| u.get().clone()),
            port: s.port.as_ref().map(|p| *p.get()),
            become_: s.become_.as_ref().map(|b| *b.get()),
            root: s.root.as_ref().map(|r| r.get().clone()),
            runtimes_dir,
            state_dir,
            identity_file,
            known_hosts,
            connect_timeout: self.duration(file, &s.connect_timeout),
            command_timeout: self.duration(file, &s.command_timeout),
            keep_versions: s.keep_versions.as_ref().map(|k| *k.get()),
        }
    }

    fn environment(
        &mut self,
        f: &ManifestFile,
        name: EnvName,
        r: &raw::RawEnvironment,
        runtimes: &BTreeMap<RuntimeName, Runtime>,
    ) -> Environment {
        let file = f.path.as_str();
        let defaults = self.settings(file, &r.defaults);
        let env_runtimes = self.runtime_pins(file, &r.runtimes, runtimes);
        let files = self.files(file, &r.files);
        let mut groups = Vec::new();
        for (index, g) in r.groups.iter().enumerate() {
            for k in g.match_.get().keys() {
                if crate::names::check_name(k).is_err() {
                    self.err(
                        file,
                        g.match_.span(),
                        format!("invalid label key `{k}` in `match`"),
                    );
                }
            }
            groups.push(Group {
                index,
                matches: g.match_.get().clone(),
                defaults: self.settings(file, &g.settings()),
                runtimes: self.runtime_pins(file, &g.runtimes, runtimes),
                files: self.files(file, &g.files),
            });
        }
        let rollout = self.rollout(file, &r.rollout);
        let windows = r.windows.iter().filter_map(|w| self.window(file, w)).collect();
        let freezes = r.freezes.iter().filter_map(|fr| self.freeze(file, fr)).collect();
        Environment {
            name,
            description: r.description.clone(),
            auto_apply: r.auto_apply,
            defaults,
            runtimes: env_runtimes,
            files,
            groups,
            rollout,
            windows,
            freezes,
        }
    }

    fn host(
        &mut self,
        f: &ManifestFile,
        h: &raw::RawHost,
        environments: &BTreeMap<EnvName, Environment>,
        runtimes: &BTreeMap<RuntimeName, Runtime>,
    ) -> Option<Host> {
        let file = f.path.as_str();
        let name = self.name::<HostName>(file, &h.name, "host name");
        let environment = match environments.keys().find(|e| e.as_str() == h.environment.get()) {
            Some(e) => Some(e.clone()),
            None if self.env_files.contains(h.environment.get()) => None,
            None => {
                let hint = closest(h.environment.get(), environments.keys().map(EnvName::as_str))
                    .map_or("no environments/<name>.toml defines it".to_owned(), |c| {
                        format!("did you mean `{c}`?")
                    });
                self.err(
                    file,
                    h.environment.span(),
                    format!("unknown environment `{}`", h.environment.get()),
                )
                .label = Some(hint);
                None
            }
        };
        let mut labels = BTreeMap::new();
        for (k, v) in &h.labels {
            if let Err(e) = crate::names::check_name(k.get()) {
                self.err(file, k.span(), format!("invalid label key `{}`", k.get()))
                    .label = Some(e.to_string());
            }
            labels.insert(k.get().clone(), v.clone());
        }
        if let Some(a) = &h.address {
            let s = a.get();
            if s.is_empty()
                || s.starts_with('-')
                || s.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '@' || c == '/')
            {
                self.err(file, a.span(), format!("invalid address `{}`", s.escape_debug()))
                    .label = Some("use a host name or an IP address".into());
            }
        }
        let settings = self.settings(file, &h.settings());
        let host_runtimes = self.runtime_pins(file, &h.runtimes, runtimes);
        let files = self.files(file, &h.files);
        Some(Host {
            name: name?,
            environment: environment?,
            address: h.address.as_ref().map(|a| a.get().clone()),
            labels,
            canary: h.canary,
            decommission: h.decommission,
            settings,
            runtimes: host_runtimes,
            files,
            origin: Location {
                file: file.to_owned(),
                span: h.name.span(),
            },
        })
    }
}
