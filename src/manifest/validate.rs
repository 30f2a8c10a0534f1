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

fn parse_toml<T: DeserializeOwned>(file: &ManifestFile) -> Result<T, Diagnostic> {
    toml::from_str::<T>(&file.text).map_err(|e| {
        let message = e.message().trim().to_owned();
        let key = error_key(&e);
        if let Some(d) = type_error(file, &message, key.as_deref(), e.span()) {
            return d;
        }
        let mut d = Diagnostic::new(message.lines().next().unwrap_or("invalid TOML").to_owned());
        if let Some(span) = e.span() {
            d = d.at(&file.path, span.clone());
            if let Some(unknown) = unknown_field_hint(&message) {
                d = d.label(unknown);
            }
        }
        let rest: Vec<&str> = message.lines().skip(1).collect();
        if !rest.is_empty() {
            d = d.help(rest.join(" "));
        }
        d
    })
}

/// The key a deserialization error is about (the innermost table key), when toml knows it.
/// toml keeps the key path private but prints it as "in `a.b`" when it has no input to quote.
fn error_key(e: &toml::de::Error) -> Option<String> {
    let mut bare = e.clone();
    bare.set_input(None);
    let text = bare.to_string();
    let path = text.lines().last()?.strip_prefix("in `")?.strip_suffix('`')?;
    path.rsplit('.').next().map(str::to_owned)
}

/// Keys that are arrays of tables (`[[host]]`): written as `[host]` they are one table.
const ARRAY_TABLES: &[&str] = &["host", "version", "file", "window", "freeze", "group"];

/// serde describes types the Rust way ("expected u16", "expected struct RawFleet"); this
/// turns the common type errors into plain words, using the key for a precise description
/// and a hint on how to write the value. `None`: not a type error, keep serde's message.
fn type_error(
    file: &ManifestFile,
    message: &str,
    key: Option<&str>,
    span: Option<std::ops::Range<usize>>,
) -> Option<Diagnostic> {
    // `[[fleet]]` where `[fleet]` was meant: serde reads an array as a struct's fields in
    // order, so the error names whatever the first field expected; the header tells.
    if let Some(key) = key
        && !key.is_empty()
        && !ARRAY_TABLES.contains(&key)
        && let Some(h) = header_span(&file.text, key, true)
    {
        return Some(
            Diagnostic::new(format!("use [{key}] (a single table), not [[{key}]]"))
                .at(&file.path, h)
                .label(format!("there is only one [{key}]"))
                .help(format!("write the header with single brackets: [{key}]")),
        );
    }
    let first = message.lines().next()?;
    let (out_of_range, rest) = match first.strip_prefix("invalid type: ") {
        Some(rest) => (false, rest),
        None => (true, first.strip_prefix("invalid value: ")?),
    };
    let (found, expected) = rest.rsplit_once(", expected ")?;
    let key = key.unwrap_or("");
    let at = |d: Diagnostic| match &span {
        Some(s) => d.at(&file.path, s.clone()),
        None => d.at(&file.path, 0..0),
    };
    // `[host]` where `[[host]]` was meant.
    if found == "map" && expected == "a sequence" && ARRAY_TABLES.contains(&key) {
        let d = Diagnostic::new(format!("use [[{key}]] (an array of tables), not [{key}]"))
            .label(format!(
                "[{key}] is a single table; each {key} needs its own [[{key}]] header"
            ))
            .help(format!("write the header with double brackets: [[{key}]]"));
        return Some(match header_span(&file.text, key, false) {
            Some(h) => d.at(&file.path, h),
            None => at(d),
        });
    }
    let wanted = plain_expected(key, expected);
    let found_words = plain_found(found);
    let title = match (out_of_range, key.is_empty()) {
        (true, false) => format!("`{key}` is out of range: expected {wanted}, found {found_words}"),
        (true, true) => format!("value out of range: expected {wanted}, found {found_words}"),
        (false, false) => format!("wrong type for `{key}`: expected {wanted}, found {found_words}"),
        (false, true) => format!("wrong type: expected {wanted}, found {found_words}"),
    };
    let mut d = at(Diagnostic::new(title));
    if let Some(help) = type_help(key, expected, found) {
        d = d.help(help);
    }
    Some(d)
}

/// What a key expects, in words.
fn plain_expected(key: &str, expected: &str) -> String {
    let number = |what: &str| format!("a whole number of {what}");
    match expected {
        "u16" if key == "port" => "a port number (1-65535)".to_owned(),
        "u32" | "u64" | "usize" => match key {
            "max_parallel" => number("hosts, such as 10"),
            "keep_versions" => number("versions to keep, such as 2"),
            "retries" => number("retries, such as 3"),
            _ => "a whole number (0 or more)".to_owned(),
        },
        "u8" | "u16" => "a whole number (0 or more)".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a string" => match key {
            "connect_timeout" | "command_timeout" | "bake" | "promotion_soak" | "timeout" | "interval"
            | "duration" | "min_interval" | "max_duration" => {
                "a duration in quotes, such as \"10s\"".to_owned()
            }
            "start" | "end" => "a time in quotes, such as \"02:00\"".to_owned(),
            "from" | "until" => "an RFC 3339 date in quotes, such as \"2026-12-20T00:00:00Z\"".to_owned(),
            "mode" => "octal permission bits in quotes, such as \"0644\"".to_owned(),
            _ => "a string in double quotes".to_owned(),
        },
        "a sequence" => match key {
            "waves" => "an array of waves, such as [1, \"50%\"]".to_owned(),
            "days" => "an array of days, such as [\"mon\", \"tue\"]".to_owned(),
            "promotion" => "an array of environment names, such as [\"staging\", \"prod\"]".to_owned(),
            "keys" => "an array of public keys in quotes".to_owned(),
            _ => "an array, such as [\"a\", \"b\"]".to_owned(),
        },
        e if e == "a map" || e.starts_with("struct ") => "a table".to_owned(),
        // Descriptions written for people (custom visitors) are kept as they are.
        other => other.to_owned(),
    }
}

/// serde's description of the value found, in words.
fn plain_found(found: &str) -> String {
    if let Some(s) = found.strip_prefix("string ") {
        return format!("the string {s}");
    }
    let ticked = |prefix: &str| found.strip_prefix(prefix).map(|v| v.trim_matches('`').to_owned());
    if let Some(n) = ticked("integer ").or_else(|| ticked("floating point ")) {
        return format!("the number {n}");
    }
    if let Some(b) = ticked("boolean ") {
        return format!("`{b}`");
    }
    match found {
        "sequence" => "an array".to_owned(),
        "map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// How to write the value instead, when the mistake is a common one.
fn type_help(key: &str, expected: &str, found: &str) -> Option<String> {
    let key = if key.is_empty() { "key" } else { key };
    let string = found.strip_prefix("string \"").and_then(|s| s.strip_suffix('"'));
    let number = expected.starts_with('u') || expected.starts_with('i');
    match (expected, string) {
        (_, Some(s)) if number && s.trim().parse::<i64>().is_ok() => {
            Some(format!("remove the quotes: {key} = {}", s.trim()))
        }
        ("a boolean", Some(s)) if matches!(s, "true" | "false") => {
            Some(format!("remove the quotes: {key} = {s}"))
        }
        ("a boolean", _) => Some(format!("write {key} = true or {key} = false, without quotes")),
        ("a string", None) => {
            let value = found
                .split_once(' ')
                .map(|(_, v)| v.trim_matches('`'))
                .filter(|_| !matches!(found, "sequence" | "map"))?;
            Some(format!("put it in double quotes: {key} = \"{value}\""))
        }
        _ => None,
    }
}

/// The byte range of a `[key]` (or, with `double`, `[[key]]`) header line in `text`.
fn header_span(text: &str, key: &str, double: bool) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let start = offset + (line.len() - trimmed.len());
        offset += line.len();
        let body = trimmed.split('#').next().unwrap_or("").trim_end();
        let inner = if double {
            body.strip_prefix("[[").and_then(|b| b.strip_suffix("]]"))
        } else {
            body.strip_prefix('[')
                .filter(|b| !b.starts_with('['))
                .and_then(|b| b.strip_suffix(']'))
        };
        if inner.is_some_and(|i| i.trim() == key) {
            return Some(start..start + body.len());
        }
    }
    None
}

/// serde says "unknown field `x`, expected one of `a`, `b`"; turn that into "did you mean".
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    match closest(field, candidates.iter().copied()) {
        Some(c) => Some(format!("did you mean `{c}`?")),
        None => Some("unknown key".to_owned()),
    }
}

/// `/a/b/../c` → `/a/c`, without touching the disk (the path is on the controller, and may
/// not exist yet).
fn lexically_normal(p: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Resolves every link in `p` that exists on this machine; the part that does not exist yet
/// is appended as written (normalised).
fn resolve_links(p: &Path) -> std::path::PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return lexically_normal(&out);
        }
        match (existing.file_name().map(ToOwned::to_owned), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return lexically_normal(p),
        }
    }
}

/// Where `value` (absolute, or `~/` under `home`) really points when that is inside `repo`,
/// for the message; `None` when it is outside. Both spellings are compared: as written
/// (normalised) and with `~` expanded and every link resolved, against the resolved `repo`.
fn inside_repository(value: &str, repo: &Path, home: Option<&Path>) -> Option<String> {
    let expanded = match value.strip_prefix("~/") {
        Some(rest) => home?.join(rest),
        None => std::path::PathBuf::from(value),
    };
    let repo_real = resolve_links(repo);
    let as_written = lexically_normal(&expanded);
    if as_written.starts_with(repo) || as_written.starts_with(&repo_real) {
        return Some(format!("{} is inside {}", as_written.display(), repo.display()));
    }
    let real = resolve_links(&expanded);
    if real.starts_with(&repo_real) {
        return Some(format!(
            "{value} resolves to {}, inside {}",
            real.display(),
            repo_real.display()
        ));
    }
    None
}

fn file_stem<'p>(path: &'p str, dir: &str) -> Option<&'p str> {
    path.strip_prefix(dir)?.strip_suffix(".toml")
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

    /// `identity_file` and `known_hosts`: absolute or `~/`, never inside the repository (a
    /// commit must not be able to choose the credentials or host keys it is checked with).
    fn local_path(&mut self, file: &str, p: &Option<Str>, key: &str) -> Option<String> {
        let p = p.as_ref()?;
        let s = p.get();
        if !(s.starts_with('/') || s.starts_with("~/")) {
            self.err(
                file,
                p.span(),
                format!("`{key}` must be an absolute path or start with `~/`"),
            )
            .label = Some("relative paths would point into the repository".into());
            return None;
        }
        if let Some(repo) = self.ctx.repo_dir
            && let Some(inside) = inside_repository(s, repo, self.ctx.home)
        {
            self.err(
                file,
                p.span(),
                format!("`{key}` may not point inside the repository"),
            )
            .label = Some(inside);
            if let Some(d) = self.diags.last_mut() {
                d.help = Some("keep keys outside the fleet repository, e.g. under ~/.ssh/".into());
            }
            return None;
        }
        Some(s.clone())
    }

    fn runtime_pins(
        &mut self,
        file: &str,
        pins: &BTreeMap<Str, Sp<raw::RuntimePin>>,
        runtimes: &BTreeMap<RuntimeName, Runtime>,
    ) -> BTreeMap<RuntimeName, Pin> {
        let mut out = BTreeMap::new();
        for (name, pin) in pins {
            let Some(rt) = runtimes
                .iter()
                .find(|(n, _)| n.as_str() == name.get())
                .map(|(_, r)| r)
            else {
                if self.runtime_files.contains(name.get()) {
                    continue;
                }
                let hint = closest(name.get(), runtimes.keys().map(RuntimeName::as_str))
                    .map_or("no runtimes/<name>.toml defines it".to_owned(), |c| {
                        format!("did you mean `{c}`?")
                    });
                self.err(file, name.span(), format!("unknown runtime `{}`", name.get()))
                    .label = Some(hint);
                continue;
            };
            match pin.get() {
                raw::RuntimePin::Remove => {
                    out.insert(rt.name.clone(), Pin::Remove);
                }
                raw::RuntimePin::Version(v) => match rt.versions.keys().find(|k| k.as_str() == v) {
                    Some(ver) => {
                        out.insert(rt.name.clone(), Pin::Version(ver.clone()));
                    }
                    None if self.broken_versions.contains(&(rt.name.to_string(), v.clone())) => {}
                    None => {
                        let known: Vec<&str> = rt.versions.keys().map(Version::as_str).collect();
                        self.err(
                            file,
                            pin.span(),
                            format!("runtime `{}` has no version `{v}`", rt.name),
                        )
                        .label = Some(format!("known versions: {}", known.join(", ")));
                        if let Some(d) = self.diags.last_mut() {
                            d.help = Some(format!(
                                "add a [[version]] to runtimes/{}.toml or pick a known one",
                                rt.name
                            ));
                        }
                    }
                },
            }
        }
        out
    }

    fn files(&mut self, file: &str, raw_files: &[raw::RawFile]) -> Vec<FileSpec> {
        let mut out: Vec<FileSpec> = Vec::new();
        for f in raw_files {
            let path = match HostPath::new(f.path.get()) {
                Ok(p) => Some(p),
                Err(why) => {
                    self.err(
                        file,
                        f.path.span(),
                        format!(
                            "file path `{}` is not a normalised absolute path",
                            f.path.get().escape_debug()
                        ),
                    )
                    .label = Some(why.into());
                    None
                }
            };
            if let Some(p) = &path
                && out.iter().any(|o| &o.path == p)
            {
                self.err(
                    file,
                    f.path.span(),
                    format!("file `{p}` is listed twice in this table"),
                )
                .label = Some("files are keyed by path".into());
            }
            let bytes: Option<Arc<[u8]>> = match (&f.content, &f.source) {
                (Some(c), None) => Some(Arc::from(c.get().as_bytes())),
                (None, Some(s)) => self.repo_file(file, s, "source", true).flatten(),
                (Some(c), Some(_)) => {
                    self.err(
                        file,
                        c.span(),
                        "a file takes exactly one of `content` and `source`, not both",
                    );
                    None
                }
                (None, None) => {
                    self.err(
                        file,
                        f.path.span(),
                        format!("file `{}` has neither `content` nor `source`", f.path.get()),
                    )
                    .help = Some("add content = \"...\" or source = \"files/...\"".into());
                    None
                }
            };
            let body = bytes.and_then(|b| {
                if !f.template {
                    return Some(FileBody::Literal(b));
                }
                let span = f
                    .content
                    .as_ref()
                    .or(f.source.as_ref())
                    .map_or(f.path.span(), Sp::span);
                let Ok(text) = std::str::from_utf8(&b) else {
                    self.err(file, span, "a template must be UTF-8 text");
                    return None;
                };
                match Template::parse(text) {
                    Ok(t) => Some(FileBody::Template(Arc::new(t))),
                    Err(e) => {
                        let d = self.err(file, span, e.to_string());
                        if let TemplateError::UnknownVariable(_) = e {
                            d.help = Some(format!("templates may use {VARIABLES}"));
                        }
                        None
                    }
                }
            });
            let mode = match &f.mode {
                None => Some(0o644),
                Some(m) => match u32::from_str_radix(m.get(), 8) {
                    Ok(n) if n <= 0o7777 && (3..=4).contains(&m.get().len()) => Some(n),
                    _ => {
                        self.err(file, m.span(), format!("invalid mode `{}`", m.get()))
                            .label = Some("write an octal mode such as \"0644\"".into());
                        None
                    }
                },
            };
            for (who, v) in [("owner", &f.owner), ("group", &f.group)] {
                if let Some(v) = v
                    && crate::names::check_name(v.get()).is_err()
                {
                    self.err(file, v.span(), format!("invalid {who} `{}`", v.get()))
                        .label = Some("use a user or group name".into());
                }
            }
            if let (Some(path), Some(body), Some(mode)) = (path, body, mode) {
                out.push(FileSpec {
                    path,
                    body,
                    mode,
                    owner: f.owner.as_ref().map(|o| o.get().clone()),
                    group: f.group.as_ref().map(|o| o.get().clone()),
                    sensitive: f.sensitive,
                    on_change: f
                        .on_change
                        .as_ref()
                        .map(|c| c.get().clone())
                        .filter(|c| !c.trim().is_empty()),
                    origin: Location {
                        file: file.to_owned(),
                        span: f.path.span(),
                    },
                });
            }
        }
        out
    }

    /// A path inside the repository (`source`, `artifact`): relative, normalised, present, and
    /// not a symlink. Returns the content when `read`.
    fn repo_file(&mut self, file: &str, p: &Str, key: &str, read: bool) -> Option<Option<Arc<[u8]>>> {
        let s = p.get();
        let bad = s.is_empty()
            || s.starts_with('/')
            || s.chars().any(char::is_control)
            || s.split('/').any(|c| c.is_empty() || c == "." || c == "..");
        if bad {
            self.err(
                file,
                p.span(),
                format!("`{key}` must be a normalised path relative to the fleet root"),
            )
            .label = Some("no leading `/`, no `.` or `..`, no `//`".into());
            return None;
        }
        let missing = |v: &mut Self, what: String| {
            v.err(file, p.span(), what).label = Some(format!("`{key}` must name a file in the repository"));
        };
        match self.repo.entry(s, read) {
            RepoEntry::File(bytes) => Some(bytes),
            RepoEntry::Missing => {
                missing(self, format!("`{s}` does not exist"));
                None
            }
            RepoEntry::Directory => {
                missing(self, format!("`{s}` is a directory"));
                None
            }
            RepoEntry::Symlink(link) => {
                let message = if link == *s {
                    format!("`{s}` is a symlink")
                } else {
                    format!("`{s}` passes through a symlink: `{link}`")
                };
                self.err(file, p.span(), message).label =
                    Some("symlinks are refused: they could point outside the repository".into());
                if let Some(d) = self.diags.last_mut() {
                    d.help = Some(format!("commit the file itself instead of the link `{link}`"));
                }
                None
            }
            RepoEntry::NotRegular(what) => {
                self.err(file, p.span(), format!("`{s}` is {what}, not a regular file"))
                    .label = Some(format!("`{key}` must name a regular file in the repository"));
                None
            }
            RepoEntry::TooLarge(size) => {
                self.err(
                    file,
                    p.span(),
                    format!("`{s}` is {size} bytes, more than the {MAX_SOURCE_BYTES} Flotilla reads"),
                )
                .label = Some(format!("`{key}` files are read whole and shown in plans"));
                if let Some(d) = self.diags.last_mut() {
                    d.help =
                        Some("ship large content as a runtime artifact instead of a managed file".into());
                }
                None
            }
            RepoEntry::Unreadable(why) => {
                self.err(file, p.span(), format!("`{s}` cannot be read: {why}"));
                None
            }
        }
    }

    fn artifact_ref(&mut self, file: &str, p: &Str, key: &str) -> Option<ArtifactRef> {
        let s = p.get();
        if s.starts_with("https://") || s.starts_with("file://") {
            if s.chars().any(|c| c.is_control() || c == ' ') {
                self.err(
                    file,
                    p.span(),
                    format!("`{key}` URL contains spaces or control characters"),
                );
                return None;
            }
            return Some(ArtifactRef::Url(s.clone()));
        }
        if s.contains("://") {
            self.err(file, p.span(), format!("unsupported URL scheme in `{key}`"))
                .label = Some("use https://, file:// or a repository path".into());
            return None;
        }
        self.repo_file(file, p, key, false)
            .map(|_| ArtifactRef::Repo(s.clone()))
    }

    fn runtime(&mut self, f: &ManifestFile, name: RuntimeName, r: &raw::RawRuntime) -> Option<Runtime> {
        let file = f.path.as_str();
        let mut versions = BTreeMap::new();
        if r.versions.is_empty() {
            self.diags.push(
                Diagnostic::new(format!("runtime `{name}` has no [[version]]"))
                    .at(file, 0..0)
                    .help("add a [[version]] table with version, artifact and sha256"),
            );
        }
        for v in &r.versions {
            let version = self.name::<Version>(file, &v.version, "version");
            let sha_ok = v.sha256.get().len() == 64 && v.sha256.get().bytes().all(|b| b.is_ascii_hexdigit());
            if !sha_ok {
                self.err(file, v.sha256.span(), "`sha256` must be 64 hexadecimal digits")
                    .label = Some(format!("{} characters given", v.sha256.get().chars().count()));
            }
            let artifact = self.artifact_ref(file, &v.artifact, "artifact");
            let signature = match &v.signature {
                Some(s) => self.artifact_ref(file, s, "signature"),
                None => match &artifact {
                    Some(ArtifactRef::Url(u)) => Some(ArtifactRef::Url(format!("{u}.minisig"))),
                    Some(ArtifactRef::Repo(p)) => {
                        // The default signature sits beside the artifact; it must exist when
                        // signatures are required, which the apply step checks against trust.
                        Some(ArtifactRef::Repo(format!("{p}.minisig")))
                    }
                    None => None,
                },
            };
            let complete = version.is_some() && artifact.is_some() && signature.is_some() && sha_ok;
            if !complete {
                self.broken_versions
                    .insert((name.to_string(), v.version.get().clone()));
            }
            if let (Some(version), Some(artifact), Some(signature), true) =
                (version, artifact, signature, sha_ok)
            {
                if versions.contains_key(&version) {
                    self.err(
                        file,
                        v.version.span(),
                        format!("version `{version}` is defined twice"),
                    );
                    continue;
                }
                versions.insert(
                    version.clone(),
                    RuntimeVersion {
                        version,
                        artifact,
                        sha256: v.sha256.get().to_ascii_lowercase(),
                        signature,
                    },
                );
            }
        }
        let health = r.health.as_ref().map(|h| Health {
            command: h.command.get().clone(),
            timeout: self
                .duration(file, &h.timeout)
                .unwrap_or(std::time::Duration::from_secs(30)),
            retries: h.retries.unwrap_or(0),
            interval: self
                .duration(file, &h.interval)
                .unwrap_or(std::time::Duration::from_secs(1)),
        });
        let hooks = Hooks {
            activate: r.hooks.activate.as_ref().map(|s| s.get().clone()),
            remove: r.hooks.remove.as_ref().map(|s| s.get().clone()),
        };
        Some(Runtime {
            name,
            description: r.description.clone(),
            versions,
            health,
            hooks,
        })
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

    fn rollout(&mut self, file: &str, r: &raw::RawRollout) -> Rollout {
        let mut out = Rollout::default();
        if let Some(waves) = &r.waves {
            let mut targets = Vec::new();
            let mut last: Option<(CountOrPercent, std::ops::Range<usize>)> = None;
            for w in waves.get() {
                let target = match *w.get() {
                    CountOrPercent::Count(0) | CountOrPercent::Percent(0) => {
                        self.err(file, w.span(), "a wave must contain at least one host")
                            .label = Some("use 1 or more, or 1% to 100%".into());
                        continue;
                    }
                    CountOrPercent::Count(n) => WaveTarget::Count(n),
                    CountOrPercent::Percent(p) => WaveTarget::Percent(p),
                };
                if let Some((prev, _)) = &last {
                    let decreases = match (prev, w.get()) {
                        (CountOrPercent::Count(a), CountOrPercent::Count(b)) => b < a,
                        (CountOrPercent::Percent(a), CountOrPercent::Percent(b)) => b < a,
                        _ => false,
                    };
                    if decreases {
                        self.err(
                            file,
                            w.span(),
                            format!("waves must not decrease: {} comes after {prev}", w.get()),
                        )
                        .help = Some("each wave is a cumulative target: [1, \"25%\", \"100%\"]".into());
                    }
                }
                last = Some((*w.get(), w.span()));
                targets.push(target);
            }
            if !targets.is_empty() {
                out.waves = targets;
                out.waves_at = Some(Location {
                    file: file.to_owned(),
                    span: waves.span(),
                });
            }
        }
        if let Some(m) = &r.max_parallel {
            if *m.get() == 0 {
                self.err(file, m.span(), "`max_parallel` must be at least 1");
            } else {
                out.max_parallel = *m.get();
            }
        }
        if let Some(m) = &r.max_failures {
            out.max_failures = *m.get();
        }
        if let Some(b) = self.duration(file, &r.bake) {
            out.bake = b;
        }
        if let Some(o) = &r.on_failure {
            out.on_failure = *o.get();
        }
        out.health_command = r
            .health_command
            .as_ref()
            .map(|c| c.get().clone())
            .filter(|c| !c.trim().is_empty());
        if let Some(s) = self.duration(file, &r.promotion_soak) {
            out.promotion_soak = s;
        }
        if let Some(s) = self.duration(file, &r.min_interval) {
            out.min_interval = s;
        }
        let limit = r
            .max_duration
            .as_ref()
            .filter(|d| !d.get().trim().is_empty())
            .cloned();
        if let Some(d) = self.duration(file, &limit) {
            if d.is_zero() {
                if let Some(s) = &limit {
                    self.err(file, s.span(), "`max_duration` must be longer than 0s")
                        .help = Some("leave it out (or \"\") for no limit".into());
                }
            } else {
                out.max_duration = Some(d);
            }
        }
        if let Some(l) = &r.host_limits {
            let mut percent = |key: &str, v: &Option<Str>, max: u32| -> Option<u32> {
                let v = v.as_ref()?;
                let n = v
                    .get()
                    .trim()
                    .strip_suffix('%')
                    .and_then(|n| n.trim().parse::<u32>().ok());
                match n {
                    Some(n) if (1..=max).contains(&n) => Some(n),
                    _ => {
                        self.err(
                            file,
                            v.span(),
                            format!("invalid `host_limits.{key}` `{}`", v.get()),
                        )
                        .help = Some(format!("write a percentage from 1% to {max}%, such as \"80%\""));
                        None
                    }
                }
            };
            out.host_limits = crate::manifest::model::HostLimits {
                // Load per CPU can exceed 100%.
                cpu: percent("cpu", &l.cpu, 1000),
                memory: percent("memory", &l.memory, 100).map(|n| n as u8),
                disk: percent("disk", &l.disk, 100).map(|n| n as u8),
            };
        }
        out
    }

    fn clock_time(&mut self, file: &str, s: &Str, key: &str) -> Option<jiff::civil::Time> {
        let ok = s.get().len() == 5 && s.get().as_bytes()[2] == b':';
        match jiff::civil::Time::strptime("%H:%M", s.get()) {
            Ok(t) if ok => Some(t),
            _ => {
                self.err(file, s.span(), format!("invalid `{key}` time `{}`", s.get()))
                    .label = Some("write a 24-hour time such as \"02:00\"".into());
                None
            }
        }
    }

    fn window(&mut self, file: &str, w: &raw::RawWindow) -> Option<Window> {
        let mut ok = true;
        let days = w.days.as_ref().map(|days| {
            let mut out = Vec::new();
            for d in days {
                use jiff::civil::Weekday::*;
                let day = match d.get().to_ascii_lowercase().as_str() {
                    "mon" => Monday,
                    "tue" => Tuesday,
                    "wed" => Wednesday,
                    "thu" => Thursday,
                    "fri" => Friday,
                    "sat" => Saturday,
                    "sun" => Sunday,
                    _ => {
                        self.err(file, d.span(), format!("invalid day `{}`", d.get()))
                            .label = Some("use mon, tue, wed, thu, fri, sat or sun".into());
                        ok = false;
                        continue;
                    }
                };
                out.push(day);
            }
            out
        });
        let start = self.clock_time(file, &w.start, "start");
        let length = match (&w.duration, &w.end) {
            (Some(_), Some(e)) => {
                self.err(file, e.span(), "a window takes `duration` or `end`, not both");
                None
            }
            (None, None) => {
                self.err(file, w.start.span(), "a window needs `duration` or `end`")
                    .help = Some("add duration = \"3h\" or end = \"05:00\"".into());
                None
            }
            (Some(_), None) => self.duration(file, &w.duration).map(|d| {
                WindowLength::Duration(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
            }),
            (None, Some(e)) => match (self.clock_time(file, e, "end"), start) {
                (Some(end), Some(s)) if end == s => {
                    self.err(
                        file,
                        e.span(),
                        "a window whose `end` equals its `start` has no length",
                    )
                    .help = Some("for a window of a whole day, write duration = \"24h\"".into());
                    None
                }
                (end, _) => end.map(WindowLength::End),
            },
        };
        let tz_name = w.timezone.as_ref().map_or("UTC", |t| t.get().as_str());
        let timezone = match jiff::tz::TimeZone::get(tz_name) {
            Ok(tz) => Some(tz),
            Err(_) => {
                let span = w.timezone.as_ref().map_or(w.start.span(), Sp::span);
                self.err(file, span, format!("unknown time zone `{tz_name}`"))
                    .label = Some("use an IANA name such as \"Europe/Berlin\"".into());
                None
            }
        };
        let window = Window {
            days,
            start: start?,
            length: length?,
            timezone: timezone?,
        };
        if let Err(e) = window_length_ok(&window) {
            let span = w
                .duration
                .as_ref()
                .or(w.end.as_ref())
                .map_or(w.start.span(), Sp::span);
            self.err(file, span, format!("invalid window: {e}"));
            return None;
        }
        ok.then_some(window)
    }

    fn freeze(&mut self, file: &str, fr: &raw::RawFreeze) -> Option<Freeze> {
        let mut ts = |s: &Str, key: &str| match s.get().parse::<jiff::Timestamp>() {
            Ok(t) => Some(t),
            Err(_) => {
                self.err(file, s.span(), format!("invalid `{key}` date `{}`", s.get()))
                    .label = Some("write an RFC 3339 date such as \"2026-12-20T00:00:00Z\"".into());
                None
            }
        };
        let from = ts(&fr.from, "from");
        let until = ts(&fr.until, "until");
        let (from, until) = (from?, until?);
        if until <= from {
            self.err(
                file,
                fr.until.span(),
                "a freeze's `until` must be after its `from`",
            );
            return None;
        }
        Some(Freeze {
            from,
            until,
            reason: fr.reason.clone().unwrap_or_default(),
        })
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
