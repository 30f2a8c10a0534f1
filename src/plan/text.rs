//! The text plan for terminals and logs (DESIGN §5): grouped by environment, hosts with
//! identical changes folded into one entry, the exact `Plan:` line last.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};

use super::fold::{fold_names, join_limited};
use super::{Action, Change, HostPlan, Kind, Plan};

#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    pub color: bool,
    /// Every host on its own instead of folded.
    pub detail: bool,
}

struct Paint {
    on: bool,
}

impl Paint {
    fn paint(&self, style: Style, s: &str) -> String {
        if self.on {
            format!("{style}{s}{style:#}")
        } else {
            s.to_owned()
        }
    }
    fn action(&self, a: Action, s: &str) -> String {
        let color = match a {
            Action::Create => AnsiColor::Green,
            Action::Update => AnsiColor::Yellow,
            Action::Delete => AnsiColor::Red,
        };
        self.paint(Style::new().fg_color(Some(color.into())), s)
    }
    fn bold(&self, s: &str) -> String {
        self.paint(Style::new().bold(), s)
    }
    fn dim(&self, s: &str) -> String {
        self.paint(Style::new().dimmed(), s)
    }
}

/// One line for a change, as in `~ runtime "x": "1.0" -> "2.0"`. `group` is the folded entry
/// the change is shown for: a templated file shown once for several hosts says so.
pub fn change_line(c: &Change, group: &[&HostPlan]) -> String {
    let mut line = match (c.kind, c.action) {
        (Kind::Runtime, Action::Create) => {
            format!("+ runtime {:?}: {:?}", c.name, c.after.as_deref().unwrap_or(""))
        }
        (Kind::Runtime, Action::Update) => format!(
            "~ runtime {:?}: {:?} -> {:?}",
            c.name,
            c.before.as_deref().unwrap_or(""),
            c.after.as_deref().unwrap_or("")
        ),
        (Kind::Runtime, Action::Delete) => {
            format!("- runtime {:?}: {:?}", c.name, c.before.as_deref().unwrap_or(""))
        }
        (Kind::File, a) => format!("{} file {:?}", a.symbol(), c.name),
    };
    let mut notes: Vec<&str> = Vec::new();
    if c.drift {
        notes.push("changed outside Flotilla");
    }
    notes.extend(c.notes.iter().map(String::as_str));
    let per_host;
    if c.template.is_some() && group.len() > 1 {
        per_host = format!("rendered per host; diff of {} shown", group[0].name);
        notes.push(&per_host);
    }
    if !notes.is_empty() {
        let _ = write!(line, " ({})", notes.join("; "));
    }
    line
}

/// The diff lines under a file change, as `- old` / `+ new`, indented.
pub fn diff_lines(diff: &str) -> impl Iterator<Item = String> + '_ {
    diff.lines().map(|l| {
        if l.starts_with("@@") {
            l.to_owned()
        } else {
            let (sign, rest) = l.split_at(l.chars().next().map_or(0, char::len_utf8));
            if rest.is_empty() {
                sign.to_owned()
            } else {
                format!("{sign} {rest}")
            }
        }
    })
}

/// What hosts must share to fold into one entry: their changes, except that a file rendered
/// from a template is compared by template, not content, so a templated `host = {{ host.name
/// }}` does not make every host an entry of its own (DESIGN §5).
fn fold_key(h: &HostPlan) -> String {
    let changes: Vec<serde_json::Value> = h
        .changes
        .iter()
        .map(|c| match &c.template {
            Some(t) => serde_json::json!([c.action, c.kind, c.name, c.drift, c.notes, t]),
            None => serde_json::json!([c, c.notes]),
        })
        .collect();
    serde_json::to_string(&(&h.refused, &h.warnings, changes)).unwrap_or_default()
}

/// Groups of hosts with identical changes (up to template variables), in plan order.
pub fn fold_hosts<'a>(hosts: impl Iterator<Item = &'a HostPlan>, detail: bool) -> Vec<Vec<&'a HostPlan>> {
    let mut groups: Vec<Vec<&HostPlan>> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for h in hosts {
        if detail || h.error.is_some() {
            groups.push(vec![h]);
            continue;
        }
        let key = fold_key(h);
        match index.get(&key) {
            Some(&i) => groups[i].push(h),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![h]);
            }
        }
    }
    groups
}

/// "# host web-01 refused: REASON", "# hosts web-[01-03] (3 hosts) refused: REASON": a group
/// of hosts that apply will refuse, which all share the reason of the first.
pub fn refused_header(group: &[&HostPlan]) -> String {
    let why = group[0].refused.as_deref().unwrap_or_default();
    if group.len() == 1 {
        format!("# host {} refused: {why}", group[0].name)
    } else {
        let names: Vec<&str> = group.iter().map(|h| h.name.as_str()).collect();
        let folded = join_limited(&fold_names(&names), 10);
        format!("# hosts {folded} ({} hosts) refused: {why}", group.len())
    }
}

/// "(wave 1)", "(39 hosts, waves 2-3)".
pub fn group_header(group: &[&HostPlan]) -> String {
    let names: Vec<&str> = group.iter().map(|h| h.name.as_str()).collect();
    let waves: Vec<usize> = group.iter().filter_map(|h| h.wave).collect();
    let wave = match (waves.iter().min(), waves.iter().max()) {
        (Some(a), Some(b)) if a == b => format!("wave {a}"),
        (Some(a), Some(b)) => format!("waves {a}-{b}"),
        _ => String::new(),
    };
    if group.len() == 1 {
        let suffix = if wave.is_empty() {
            String::new()
        } else {
            format!(" ({wave})")
        };
        format!("# host {}{suffix}", names[0])
    } else {
        let folded = join_limited(&fold_names(&names), 10);
        let wave = if wave.is_empty() {
            String::new()
        } else {
            format!(", {wave}")
        };
        format!("# hosts {folded} ({} hosts{wave})", group.len())
    }
}

pub fn render(plan: &Plan, opts: TextOptions) -> String {
    let p = Paint { on: opts.color };
    let mut out = String::new();
    for env in &plan.environments {
        let halted = env.halted.as_ref().map_or(String::new(), |h| {
            let text = format!(
                "HALTED at wave {} ({}, since {})",
                h.wave,
                h.reason,
                h.at.strftime("%Y-%m-%d %H:%M UTC")
            );
            format!(" · {}", p.action(Action::Delete, &text))
        });
        let halted = match &env.paused {
            Some(why) => format!(
                "{halted} · {}",
                p.action(Action::Delete, &format!("PAUSED: {why}"))
            ),
            None => halted,
        };
        let _ = writeln!(
            out,
            "{} {}{halted} · {} · waves {}",
            p.bold("Environment"),
            p.bold(&env.name),
            env.view.window,
            env.view.wave_targets
        );
        for hold in &env.promotion_holds {
            let _ = writeln!(out, "  {}", p.dim(&format!("promotion: {hold}")));
        }
        if let Some(promo) = &env.view.promotion {
            let _ = writeln!(out, "  {}", p.dim(promo));
        }
        let hosts: Vec<&HostPlan> = plan
            .hosts
            .iter()
            .filter(|h| {
                h.environment == env.name
                    && (!h.changes.is_empty()
                        || h.error.is_some()
                        || h.refused.is_some()
                        || !h.warnings.is_empty())
            })
            .collect();
        if hosts.is_empty() {
            let _ = writeln!(out, "\n  {}", p.dim("no changes"));
        }
        for group in fold_hosts(hosts.into_iter(), opts.detail) {
            let _ = writeln!(out);
            let head = &group[0];
            if let Some(err) = &head.error {
                let _ = writeln!(
                    out,
                    "  {} {}",
                    p.bold(&format!("# host {}", head.name)),
                    p.action(Action::Delete, "could not be observed")
                );
                let _ = writeln!(out, "      {err}");
                continue;
            }
            if head.refused.is_some() {
                let _ = writeln!(out, "  {}", p.action(Action::Delete, &refused_header(&group)));
                continue;
            }
            let _ = writeln!(out, "  {}", p.bold(&group_header(&group)));
            for w in &head.warnings {
                let _ = writeln!(out, "  {} {w}", p.action(Action::Update, "warning:"));
            }
            for c in &head.changes {
                let _ = writeln!(out, "  {}", p.action(c.action, &change_line(c, &group)));
                if let Some(diff) = &c.diff {
                    for l in diff_lines(diff) {
                        let styled = match l.chars().next() {
                            Some('+') => p.action(Action::Create, &l),
                            Some('-') => p.action(Action::Delete, &l),
                            _ => p.dim(&l),
                        };
                        let _ = writeln!(out, "      {styled}");
                    }
                }
            }
        }
        let _ = writeln!(out);
    }
    if !plan.no_longer_managed.is_empty() {
        let names = join_limited(&fold_names(&plan.no_longer_managed), 10);
        let _ = writeln!(
            out,
            "{} {names}\n",
            p.dim("No longer in the manifests (left as they are):")
        );
    }
    if plan.summary.hosts_unreachable > 0 {
        let n = plan.summary.hosts_unreachable;
        let _ = writeln!(
            out,
            "{} {n} host{} could not be observed; {} not counted below.",
            p.action(Action::Delete, "error:"),
            if n == 1 { "" } else { "s" },
            if n == 1 {
                "its changes are"
            } else {
                "their changes are"
            }
        );
    }
    let refused = plan.hosts.iter().filter(|h| h.refused.is_some()).count();
    if refused > 0 {
        let _ = writeln!(
            out,
            "{} {refused} host{} will be refused by apply (see above); {} no changes.",
            p.action(Action::Update, "warning:"),
            if refused == 1 { "" } else { "s" },
            if refused == 1 { "it counts" } else { "they count" }
        );
    }
    let _ = writeln!(out, "{}", p.bold(&plan.summary_line()));
    out
}
