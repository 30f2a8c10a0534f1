//! The markdown plan: a pull-request comment (DESIGN §8). Summary and notices always fit;
//! per-host detail is cut, with a note, to stay under the comment size limit.

use std::fmt::Write as _;

use super::text::{change_line, diff_lines, fold_hosts, group_header, refused_header};
use super::{HostPlan, Plan};

/// A pull-request comment's limit is 65,536 characters; stay clearly below it.
pub const MAX_COMMENT: usize = 65_000;

/// What goes above the per-environment detail (previews add base/head and notices).
#[derive(Debug, Clone, Default)]
pub struct MarkdownHeader {
    pub title: String,
    pub notices: Vec<String>,
}

pub fn render(plan: &Plan, header: &MarkdownHeader) -> String {
    let mut head = String::new();
    let _ = writeln!(head, "### {}\n", header.title);
    let _ = writeln!(head, "**{}**\n", plan.summary_line());
    for n in &header.notices {
        let _ = writeln!(head, "> [!WARNING]\n> {}\n", n.replace('\n', " "));
    }
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

    let mut sections = Vec::new();
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
        let mut body = String::new();
        for group in fold_hosts(hosts.iter().copied(), false) {
            let h = group[0];
            if let Some(e) = &h.error {
                let _ = writeln!(body, "# host {}: could not be observed: {e}", h.name);
                continue;
            }
            if h.refused.is_some() {
                let _ = writeln!(body, "{}\n", refused_header(&group));
                continue;
            }
            let _ = writeln!(body, "{}", group_header(&group));
            for c in &h.changes {
                let _ = writeln!(body, "{}", change_line(c, &group));
                if let Some(d) = &c.diff {
                    for l in diff_lines(d) {
                        let _ = writeln!(body, "    {l}");
                    }
                }
            }
            body.push('\n');
        }
        let fence = "`".repeat(longest_backtick_run(&body).max(2) + 1);
        sections.push(format!(
            "<details><summary>{} · {} host(s) changing</summary>\n\n{fence}diff\n{}{fence}\n\n</details>\n\n",
            cell(&env.name),
            hosts.len(),
            body
        ));
    }

    let mut out = head;
    let mut left_out = 0;
    for (i, s) in sections.iter().enumerate() {
        // Reserve room for the note about what was cut.
        if out.len() + s.len() + 200 > MAX_COMMENT {
            left_out = sections.len() - i;
            break;
        }
        out.push_str(s);
    }
    if left_out > 0 {
        let _ = writeln!(
            out,
            "_{left_out} environment section(s) left out to stay under the comment size limit; run `flotilla plan` for the full detail._"
        );
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn longest_backtick_run(s: &str) -> usize {
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
