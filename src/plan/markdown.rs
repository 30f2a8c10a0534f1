//! The markdown plan: a pull-request comment (DESIGN §8). Summary and notices always fit;
//! per-host detail is cut, with a note, to stay under the comment size limit.

use std::fmt::Write as _;

use super::text::{change_line, diff_lines, fold_hosts, group_header, refused_header};
use super::{HostPlan, Plan};

/// A pull-request comment's limit is 65,536 characters; stay clearly below it.
pub const MAX_COMMENT: usize = 65_000;

/// What goes above the per-environment detail (previews add base/head, notices and the
/// forecast). Everything here is kept whatever the size: only per-host detail is cut.
#[derive(Debug, Clone, Default)]
pub struct MarkdownHeader {
    /// Put before everything, as is (a preview's hidden `<!-- … -->` marker).
    pub marker: Option<String>,
    pub title: String,
    /// Markdown lines under the title (base and head, what the plan is made against).
    pub lead: Vec<String>,
    /// Shown together in one warning, one list item each.
    pub notices: Vec<String>,
    /// Problems that make `apply` refuse the run (artifacts failing their checks), shown
    /// first, one list item each, never cut (callers keep the list short).
    pub errors: Vec<String>,
    /// Environment → the "Earliest start" cell, instead of the one the plan alone gives.
    pub earliest: std::collections::BTreeMap<String, String>,
}

pub fn render(plan: &Plan, header: &MarkdownHeader) -> String {
    let mut head = String::new();
    if let Some(m) = &header.marker {
        let _ = writeln!(head, "{m}");
    }
    let _ = writeln!(head, "### {}\n", header.title);
    for l in &header.lead {
        let _ = writeln!(head, "{l}  ");
    }
    if !header.lead.is_empty() {
        head.push('\n');
    }
    let _ = writeln!(head, "**{}**\n", plan.summary_line());
    let errors = format!(
        "{} artifact(s) fail their checks; apply would refuse the whole run:",
        header.errors.len()
    );
    callout(&mut head, "CAUTION", &errors, &header.errors);
    let notices = format!("{} change(s) to review:", header.notices.len());
    callout(&mut head, "WARNING", &notices, &header.notices);
    if !plan.no_longer_managed.is_empty() {
        let names = super::fold::join_limited(&super::fold::fold_names(&plan.no_longer_managed), 10);
        let _ = writeln!(
            head,
            "> [!NOTE]\n> No longer in the manifests (left as they are): {}\n",
            cell(&names)
        );
    }
    if plan.summary.hosts_unreachable > 0 {
        let _ = writeln!(
            head,
            "> [!CAUTION]\n> {} host(s) could not be observed.\n",
            plan.summary.hosts_unreachable
        );
    }
    for env in &plan.environments {
        if let Some(h) = &env.halted {
            let _ = writeln!(
                head,
                "> [!CAUTION]\n> The rollout in {} is halted at wave {} ({}, since {}); `flotilla apply --retry REASON` starts it again.\n",
                cell(&env.name),
                h.wave,
                cell(&h.reason),
                h.at.strftime("%Y-%m-%d %H:%M UTC")
            );
        }
    }
    let refused = plan.hosts.iter().filter(|h| h.refused.is_some()).count();
    if refused > 0 {
        let _ = writeln!(
            head,
            "> [!CAUTION]\n> {refused} host(s) will be refused by apply; they count no changes.\n"
        );
    }
    let _ = writeln!(
        head,
        "| Environment | Hosts changed | Waves | Window | Earliest start |\n|---|---|---|---|---|"
    );
    for env in &plan.environments {
        let changed = plan
            .hosts
            .iter()
            .filter(|h| h.environment == env.name && !h.changes.is_empty())
            .count();
        let earliest = match (changed, env.waiting.is_some(), env.window.next_open) {
            _ if header.earliest.contains_key(&env.name) => cell(&header.earliest[&env.name]),
            (0, _, _) => "—".to_owned(),
            _ if env.halted.is_some() => "halted".to_owned(),
            _ if !env.promotion_holds.is_empty() => cell(&env.promotion_holds.join("; ")),
            (_, false, _) => "now".to_owned(),
            (_, true, Some(t)) => t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
            (_, true, None) => "not within the horizon".to_owned(),
        };
        let _ = writeln!(
            head,
            "| {} | {changed} | {} | {} | {earliest} |",
            cell(&env.name),
            env.waves.len(),
            cell(&env.view.window)
        );
    }
    head.push('\n');

    // Every environment's entries (folded host groups), then cut to fit: diffs of the largest
    // entries first, then their change lines; headers and every environment always stay.
    let mut envs: Vec<Section> = Vec::new();
    for env in &plan.environments {
        let hosts: Vec<&HostPlan> = plan
            .hosts
            .iter()
            .filter(|h| {
                h.environment == env.name
                    && (!h.changes.is_empty() || h.error.is_some() || h.refused.is_some())
            })
            .collect();
        if hosts.is_empty() {
            continue;
        }
        let entries = fold_hosts(hosts.iter().copied(), false)
            .iter()
            .map(|group| Entry::new(group))
            .collect();
        envs.push(Section {
            name: env.name.clone(),
            hosts: hosts.len(),
            entries,
            dropped: 0,
        });
    }
    let size = |envs: &[Section]| -> usize { envs.iter().map(|s| s.render().len()).sum() };
    // Room for the note about what was cut.
    let budget = MAX_COMMENT.saturating_sub(head.len() + 400);
    let mut total = size(&envs);
    let mut cut = Cut::default();
    for level in [Detail::NoDiffs, Detail::HeaderOnly] {
        if total <= budget {
            break;
        }
        let mut order: Vec<(usize, usize)> = envs
            .iter()
            .enumerate()
            .flat_map(|(e, s)| (0..s.entries.len()).map(move |i| (e, i)))
            .collect();
        order.sort_by_key(|&(e, i)| std::cmp::Reverse(envs[e].entries[i].render().len()));
        for (e, i) in order {
            if total <= budget {
                break;
            }
            let entry = &mut envs[e].entries[i];
            let before = entry.render().len();
            if entry.detail >= level || !entry.cut_to(level, &mut cut) {
                continue;
            }
            total = total.saturating_sub(before.saturating_sub(entry.render().len()));
        }
        total = size(&envs);
    }
    // Still too big (thousands of host groups that do not fold): the last groups of the
    // largest environments go, counted; every environment keeps its first group.
    while total > budget {
        let Some(s) = envs
            .iter_mut()
            .filter(|s| s.entries.len() > 1)
            .max_by_key(|s| s.entries.len())
        else {
            break;
        };
        if let Some(e) = s.entries.pop() {
            total = total.saturating_sub(e.render().len());
            s.dropped += 1;
            cut.groups += 1;
        }
    }
    let mut out = head;
    for s in &envs {
        out.push_str(&s.render());
    }
    if cut.diffs + cut.changes + cut.groups > 0 {
        let _ = writeln!(
            out,
            "_Cut to stay under the comment size limit, largest first: {} diff(s) ({} lines), {} change line(s) and {} host group(s) left out; every environment is listed. Run `flotilla plan` for the full detail._",
            cut.diffs, cut.diff_lines, cut.changes, cut.groups
        );
    }
    out
}

/// One environment's collapsible block of the markdown plan.
struct Section {
    name: String,
    hosts: usize,
    entries: Vec<Entry>,
    /// Host groups left out to fit the comment.
    dropped: usize,
}

impl Section {
    fn render(&self) -> String {
        let mut body: String = self.entries.iter().map(Entry::render).collect();
        if self.dropped > 0 {
            let _ = writeln!(body, "… and {} more host group(s) left out here\n", self.dropped);
        }
        let fence = "`".repeat(longest_backtick_run(&body).max(2) + 1);
        format!(
            "<details><summary>{} · {} host(s) changing</summary>\n\n{fence}diff\n{body}{fence}\n\n</details>\n\n",
            cell(&self.name),
            self.hosts,
        )
    }
}

/// How much of an entry the comment shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Detail {
    Full,
    NoDiffs,
    HeaderOnly,
}

/// What was left out, for the note under the comment.
#[derive(Default)]
struct Cut {
    diffs: usize,
    diff_lines: usize,
    changes: usize,
    groups: usize,
}

/// One folded host group of the markdown plan: its header and change lines, with diffs.
struct Entry {
    header: String,
    changes: Vec<(String, Option<String>)>,
    detail: Detail,
}

impl Entry {
    fn new(group: &[&HostPlan]) -> Entry {
        let h = group[0];
        let header = if let Some(e) = &h.error {
            format!("# host {}: could not be observed: {e}", h.name)
        } else if h.refused.is_some() {
            refused_header(group)
        } else {
            group_header(group)
        };
        let changes = if h.error.is_some() || h.refused.is_some() {
            Vec::new()
        } else {
            h.changes
                .iter()
                .map(|c| {
                    let diff = c.diff.as_deref().map(|d| {
                        diff_lines(d).fold(String::new(), |mut acc, l| {
                            let _ = writeln!(acc, "    {l}");
                            acc
                        })
                    });
                    (change_line(c, group), diff)
                })
                .collect()
        };
        Entry {
            header,
            changes,
            detail: Detail::Full,
        }
    }

    /// Cuts the entry down to `level`; false when there was nothing to cut.
    fn cut_to(&mut self, level: Detail, cut: &mut Cut) -> bool {
        let diffs: Vec<usize> = self
            .changes
            .iter()
            .filter_map(|(_, d)| d.as_ref().map(|d| d.lines().count()))
            .collect();
        let cuts_something = match level {
            Detail::Full => false,
            Detail::NoDiffs => !diffs.is_empty(),
            Detail::HeaderOnly => !self.changes.is_empty(),
        };
        if !cuts_something {
            return false;
        }
        if self.detail < Detail::NoDiffs {
            cut.diffs += diffs.len();
            cut.diff_lines += diffs.iter().sum::<usize>();
        }
        if level == Detail::HeaderOnly {
            cut.changes += self.changes.len();
        }
        self.detail = level;
        true
    }

    fn render(&self) -> String {
        let mut out = format!("{}\n", self.header);
        match self.detail {
            Detail::HeaderOnly if !self.changes.is_empty() => {
                let _ = writeln!(out, "({} change(s) left out here)", self.changes.len());
            }
            _ => {
                for (line, diff) in &self.changes {
                    let _ = writeln!(out, "{line}");
                    match (diff, self.detail) {
                        (Some(d), Detail::Full) => out.push_str(d),
                        (Some(d), _) => {
                            let _ = writeln!(out, "    (diff of {} lines left out here)", d.lines().count());
                        }
                        (None, _) => {}
                    }
                }
            }
        }
        out.push('\n');
        out
    }
}

/// A GitHub alert of kind `kind` titled `title` (bold), one list item per entry; nothing
/// without entries.
fn callout(out: &mut String, kind: &str, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "> [!{kind}]\n> **{title}**");
    for i in items {
        let _ = writeln!(out, "> - {}", i.replace('\n', " "));
    }
    out.push('\n');
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The longest run of backticks in `s`: a fence around it must be longer.
pub fn longest_backtick_run(s: &str) -> usize {
    let mut best = 0;
    let mut run = 0;
    for c in s.chars() {
        if c == '`' {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}
