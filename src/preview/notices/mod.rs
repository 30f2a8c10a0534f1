//! What reviewers must see in a pull request (DESIGN §8): hosts added, removed or
//! decommissioned, and changes to `[trust]`, connection settings, commands (hooks,
//! `on_change`, health), rollout policy, windows, freezes and existing artifacts — each with
//! the file and line that says so. Pure: two loaded fleets in, notices out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use super::locate::{Place, Seg, host_line, line_of};
use super::{Notice, NoticeKind, Side};
use crate::load::LoadedFleet;
use crate::manifest::model::{Environment, FileSpec, Fleet, Rollout};
use crate::plan::fold::{fold_names, join_limited};
use crate::resolve::{DesiredHost, Layer};
use crate::schedule::window::{Freeze, Window, WindowLength};
use crate::text::escape_controls;

mod rollout;

/// Every notice for the change from `base` to `head`, in a stable order: hosts, trust,
/// connections, commands, rollout policy, schedule, environments, artifacts.
/// `contacted`: whether hosts are observed (`--against fleet`), so new hosts say they were not.
pub fn compare(base: &LoadedFleet, head: &LoadedFleet, contacted: bool) -> Vec<Notice> {
    let cx = Cx { base, head };
    let mut out = Vec::new();
    cx.hosts(&mut out, contacted);
    cx.trust(&mut out);
    cx.connections(&mut out);
    cx.commands(&mut out);
    cx.policy(&mut out);
    cx.schedule(&mut out);
    cx.artifacts(&mut out);
    out.sort_by_key(|n| n.kind);
    out
}

/// A place and the revision it is in, when known.
type Located = Option<(Place, Side)>;

struct Cx<'a> {
    base: &'a LoadedFleet,
    head: &'a LoadedFleet,
}

/// `value` as inline markdown code, fenced with more backticks than it holds, with control
/// characters escaped: commands and paths come from an unmerged pull request.
pub fn code(value: &str) -> String {
    let value = escape_controls(value);
    let longest = crate::plan::markdown::longest_backtick_run(&value);
    let fence = "`".repeat(longest + 1);
    let pad = if value.starts_with('`') || value.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{value}{pad}{fence}")
}

fn shown<T: Debug>(v: &T) -> String {
    code(&format!("{v:?}"))
}

fn env_file(env: &str) -> String {
    format!("environments/{env}.toml")
}

impl Cx<'_> {
    fn push(&self, out: &mut Vec<Notice>, kind: NoticeKind, message: String, place: Option<(Place, Side)>) {
        let (place, side) = place.unwrap_or((
            Place {
                file: "flotilla.toml".into(),
                line: 1,
            },
            Side::Head,
        ));
        out.push(Notice {
            kind,
            message,
            file: place.file,
            line: place.line,
            revision: side,
        });
    }

    /// Where `path` is in `file` at head, or at base when head no longer has the file.
    fn at(&self, file: &str, path: &[Seg<'_>]) -> Option<(Place, Side)> {
        line_of(&self.head.sources, file, path)
            .map(|p| (p, Side::Head))
            .or_else(|| line_of(&self.base.sources, file, path).map(|p| (p, Side::Base)))
    }

    fn hosts(&self, out: &mut Vec<Notice>, contacted: bool) {
        let (base, head) = (&self.base.fleet, &self.head.fleet);
        // Grouped per file, so a thousand new hosts are one notice.
        let mut added: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for h in &head.hosts {
            match base.host(h.name.as_str()) {
                None => added.entry(&h.origin.file).or_default().push(h.name.as_str()),
                Some(b) if h.decommission && !b.decommission => {
                    let place = host_line(
                        &self.head.sources,
                        &h.origin.file,
                        h.name.as_str(),
                        Some("decommission"),
                    );
                    self.push(
                        out,
                        NoticeKind::HostDecommissioned,
                        format!(
                            "host {} is decommissioned: every runtime and file Flotilla manages there is removed",
                            code(h.name.as_str())
                        ),
                        place.map(|p| (p, Side::Head)),
                    );
                }
                Some(_) => {}
            }
        }
        for (file, names) in added {
            let place = host_line(&self.head.sources, file, names[0], None);
            let note = if contacted {
                "new in head: not contacted, planned as empty hosts"
            } else {
                "planned as empty hosts"
            };
            self.push(
                out,
                NoticeKind::HostAdded,
                format!(
                    "{} host(s) added: {} ({note})",
                    names.len(),
                    join_limited(&fold_names(&names), 10)
                ),
                place.map(|p| (p, Side::Head)),
            );
        }
        let mut removed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for h in base.hosts.iter().filter(|h| head.host(h.name.as_str()).is_none()) {
            removed.entry(&h.origin.file).or_default().push(h.name.as_str());
        }
        for (file, names) in removed {
            let place = host_line(&self.base.sources, file, names[0], None);
            self.push(
                out,
                NoticeKind::HostRemoved,
                format!(
                    "{} host(s) removed from the manifests: {} (left as they are; `decommission = true` removes what Flotilla installed)",
                    names.len(),
                    join_limited(&fold_names(&names), 10)
                ),
                place.map(|p| (p, Side::Base)),
            );
        }
    }

    fn trust(&self, out: &mut Vec<Notice>) {
        let (b, h) = (&self.base.fleet.trust, &self.head.fleet.trust);
        let (bk, hk): (BTreeSet<&String>, BTreeSet<&String>) =
            (b.keys.iter().collect(), h.keys.iter().collect());
        let mut parts = Vec::new();
        for k in hk.difference(&bk) {
            parts.push(format!("key {} added", code(k)));
        }
        for k in bk.difference(&hk) {
            parts.push(format!("key {} removed", code(k)));
        }
        let mut key = "keys";
        if b.require_signatures != h.require_signatures {
            parts.push(format!(
                "require_signatures {} -> {}",
                b.require_signatures, h.require_signatures
            ));
            if bk == hk {
                key = "require_signatures";
            }
        }
        if !parts.is_empty() {
            let place = self.at("flotilla.toml", &[Seg::Key("trust"), Seg::Key(key)]);
            self.push(
                out,
                NoticeKind::Trust,
                format!("[trust] changes: {}", parts.join("; ")),
                place,
            );
        }
    }

    /// Where a host's setting `key` comes from at head (or at base, when head dropped it).
    fn setting_place(
        &self,
        d: &DesiredHost,
        from: &Layer,
        key: &str,
        fleet: &LoadedFleet,
        side: Side,
    ) -> Option<(Place, Side)> {
        let place = match from {
            Layer::Fleet => line_of(
                &fleet.sources,
                "flotilla.toml",
                &[Seg::Key("defaults"), Seg::Key(key)],
            ),
            Layer::Environment(e) => line_of(
                &fleet.sources,
                &env_file(e.as_str()),
                &[Seg::Key("defaults"), Seg::Key(key)],
            ),
            Layer::Group(e, n) => line_of(
                &fleet.sources,
                &env_file(e.as_str()),
                &[Seg::Key("group"), Seg::Index(n.saturating_sub(1)), Seg::Key(key)],
            ),
            Layer::Host => {
                let file = &fleet.fleet.host(d.name.as_str())?.origin.file;
                host_line(&fleet.sources, file, d.name.as_str(), Some(key))
            }
            Layer::Default | Layer::CommandLine => None,
        };
        place.map(|p| (p, side))
    }

    fn connections(&self, out: &mut Vec<Notice>) {
        // (setting, before, after) → hosts and a place; one notice per distinct change.
        let mut changes: BTreeMap<(String, String, String), (Vec<&str>, Located)> = BTreeMap::new();
        let base: BTreeMap<&str, &DesiredHost> =
            self.base.desired.iter().map(|d| (d.name.as_str(), d)).collect();
        for h in &self.head.desired {
            let Some(b) = base.get(h.name.as_str()) else {
                continue;
            };
            let (hs, bs) = (&h.settings, &b.settings);
            let mut diff = |key: &str, before: String, after: String, from: &Layer, base_from: &Layer| {
                if before == after {
                    return;
                }
                let entry = changes
                    .entry((key.to_owned(), before, after))
                    .or_insert_with(|| (Vec::new(), None));
                entry.0.push(h.name.as_str());
                if entry.1.is_none() {
                    entry.1 = self
                        .setting_place(h, from, key, self.head, Side::Head)
                        .or_else(|| self.setting_place(b, base_from, key, self.base, Side::Base));
                }
            };
            macro_rules! setting {
                ($key:literal, $field:ident) => {
                    diff(
                        $key,
                        shown(&bs.$field.value),
                        shown(&hs.$field.value),
                        &hs.$field.from,
                        &bs.$field.from,
                    )
                };
            }
            let host_layer = Layer::Host;
            diff(
                "address",
                shown(&b.address),
                shown(&h.address),
                &host_layer,
                &host_layer,
            );
            setting!("transport", transport);
            setting!("user", user);
            setting!("port", port);
            setting!("become", become_);
            setting!("root", root);
            setting!("identity_file", identity_file);
            setting!("known_hosts", known_hosts);
            setting!("runtimes_dir", runtimes_dir);
            setting!("state_dir", state_dir);
        }
        for ((key, before, after), (hosts, place)) in changes {
            self.push(
                out,
                NoticeKind::Connection,
                format!(
                    "connection: {key} {before} -> {after} on {} ({} host(s))",
                    join_limited(&fold_names(&hosts), 10),
                    hosts.len()
                ),
                place,
            );
        }
    }

    fn commands(&self, out: &mut Vec<Notice>) {
        let (base, head) = (&self.base.fleet, &self.head.fleet);
        let names: BTreeSet<&str> = base
            .runtimes
            .keys()
            .chain(head.runtimes.keys())
            .map(|n| n.as_str())
            .collect();
        for name in names {
            let (b, h) = (base.runtimes.get(name), head.runtimes.get(name));
            let file = format!("runtimes/{name}.toml");
            let hooks = |r: Option<&crate::manifest::model::Runtime>| {
                [
                    ("hooks", "activate", r.and_then(|r| r.hooks.activate.clone())),
                    ("hooks", "remove", r.and_then(|r| r.hooks.remove.clone())),
                    (
                        "health",
                        "command",
                        r.and_then(|r| r.health.as_ref().map(|h| h.command.clone())),
                    ),
                ]
            };
            for ((table, key, before), (_, _, after)) in hooks(b).into_iter().zip(hooks(h)) {
                if before != after && (b.is_some() || after.is_some()) {
                    self.push(
                        out,
                        NoticeKind::Commands,
                        format!(
                            "command: runtime {} {table}.{key} {} -> {}",
                            code(name),
                            opt_code(before.as_deref()),
                            opt_code(after.as_deref())
                        ),
                        self.at(&file, &[Seg::Key(table), Seg::Key(key)]),
                    );
                }
            }
        }
        for (env, b, h) in self.env_pairs() {
            let (bc, hc) = (
                b.and_then(|e| e.rollout.health_command.clone()),
                h.and_then(|e| e.rollout.health_command.clone()),
            );
            if bc != hc {
                self.push(
                    out,
                    NoticeKind::Commands,
                    format!(
                        "command: {} rollout.health_command {} -> {}",
                        code(env),
                        opt_code(bc.as_deref()),
                        opt_code(hc.as_deref())
                    ),
                    self.at(&env_file(env), &[Seg::Key("rollout"), Seg::Key("health_command")]),
                );
            }
        }
        // on_change, per layer that writes files: environments, their groups, hosts.
        let layers =
            |f: &Fleet| -> BTreeMap<(String, String), (Option<String>, crate::diagnostic::Location)> {
                let mut m = BTreeMap::new();
                let mut add = |layer: String, files: &[FileSpec]| {
                    for s in files {
                        m.insert(
                            (layer.clone(), s.path.to_string()),
                            (s.on_change.clone(), s.origin.clone()),
                        );
                    }
                };
                for (name, e) in &f.environments {
                    add(format!("environment {name}"), &e.files);
                    for g in &e.groups {
                        add(format!("environment {name} [[group]] #{}", g.index + 1), &g.files);
                    }
                }
                for host in &f.hosts {
                    add(format!("host {}", host.name), &host.files);
                }
                m
            };
        let (bl, hl) = (layers(base), layers(head));
        let keys: BTreeSet<&(String, String)> = bl.keys().chain(hl.keys()).collect();
        for key in keys {
            let (before, after) = (bl.get(key), hl.get(key));
            let (bc, hc) = (before.and_then(|b| b.0.clone()), after.and_then(|a| a.0.clone()));
            if bc == hc {
                continue;
            }
            let (loc, fleet, side) = match (after, before) {
                (Some(a), _) => (&a.1, self.head, Side::Head),
                (None, Some(b)) => (&b.1, self.base, Side::Base),
                (None, None) => continue,
            };
            let place = fleet
                .sources
                .line_col(&loc.file, loc.span.start)
                .map(|(line, _)| {
                    (
                        Place {
                            file: loc.file.clone(),
                            line,
                        },
                        side,
                    )
                });
            self.push(
                out,
                NoticeKind::Commands,
                format!(
                    "command: on_change of {} ({}) {} -> {}",
                    code(&key.1),
                    key.0,
                    opt_code(bc.as_deref()),
                    opt_code(hc.as_deref())
                ),
                place,
            );
        }
    }

    /// Every environment of either revision, with its definition at base and at head.
    fn env_pairs(&self) -> Vec<(&str, Option<&Environment>, Option<&Environment>)> {
        let names: BTreeSet<&str> = self
            .base
            .fleet
            .environments
            .keys()
            .chain(self.head.fleet.environments.keys())
            .map(|n| n.as_str())
            .collect();
        names
            .into_iter()
            .map(|n| {
                (
                    n,
                    self.base.fleet.environments.get(n),
                    self.head.fleet.environments.get(n),
                )
            })
            .collect()
    }

    /// A version both revisions name whose artifact, digest or signature changed: the same
    /// version number would install different bytes.
    fn artifacts(&self, out: &mut Vec<Notice>) {
        for (name, h) in &self.head.fleet.runtimes {
            let Some(b) = self.base.fleet.runtimes.get(name) else {
                continue;
            };
            for (i, (v, hv)) in h.versions.iter().enumerate() {
                let Some(bv) = b.versions.get(v) else { continue };
                if bv == hv {
                    continue;
                }
                let file = format!("runtimes/{name}.toml");
                let key = if bv.sha256 != hv.sha256 {
                    "sha256"
                } else {
                    "artifact"
                };
                let index = version_index(&self.head.sources, &file, v.as_str()).unwrap_or(i);
                self.push(
                    out,
                    NoticeKind::Artifact,
                    format!(
                        "artifact: runtime {} version {} now installs other bytes (sha256 {} -> {}, artifact {} -> {})",
                        code(name.as_str()),
                        code(v.as_str()),
                        code(&bv.sha256),
                        code(&hv.sha256),
                        code(&bv.artifact.to_string()),
                        code(&hv.artifact.to_string())
                    ),
                    self.at(&file, &[Seg::Key("version"), Seg::Index(index), Seg::Key(key)]),
                );
            }
        }
    }
}

/// The position of `[[version]]` `version` in a runtime file, as written.
fn version_index(sources: &crate::diagnostic::Sources, file: &str, version: &str) -> Option<usize> {
    let doc = toml_edit::Document::parse(sources.get(file)?).ok()?;
    doc.as_item()
        .get("version")?
        .as_array_of_tables()?
        .iter()
        .position(|t| t.get("version").and_then(toml_edit::Item::as_str) == Some(version))
}

fn names(envs: &[crate::names::EnvName]) -> Vec<&str> {
    envs.iter().map(|e| e.as_str()).collect()
}

fn opt_code(v: Option<&str>) -> String {
    v.map_or_else(|| "(none)".to_owned(), code)
}
