//! A preview as a pull-request comment (markdown), text, or JSON. The markdown is the plan's
//! (`plan::markdown`) with the revisions, notices and forecast above it; like the plan's, it
//! stays under the comment size limit by cutting per-host detail only.

use std::fmt::Write as _;

use super::notices::code;
use super::{Against, Notice, Preview, Side};
use crate::plan::markdown::{MAX_COMMENT, MarkdownHeader, longest_backtick_run};

/// The hidden line every preview comment starts with, so CI finds and edits its one comment
/// instead of adding another.
pub const MARKER: &str = "<!-- flotilla-preview -->";

fn against_text(a: Against) -> &'static str {
    match a {
        Against::Manifests => "the manifests: every host assumed at base's desired state",
        Against::Fleet => {
            "the fleet: hosts observed with base's connection settings; hosts new in head not contacted"
        }
    }
}

fn title(p: &Preview) -> String {
    format!(
        "Flotilla preview: {} → {}",
        code(p.base.short()),
        code(p.head.short())
    )
}

fn notice_location(n: &Notice) -> String {
    let side = match n.revision {
        Side::Head => "",
        Side::Base => " at base",
    };
    format!("{}:{}{side}", n.file, n.line)
}

/// The pull-request comment.
pub fn markdown(p: &Preview) -> String {
    let lead = vec![
        format!("Base: {} {}", code(p.base.short()), code(&p.base.subject)),
        format!("Head: {} {}", code(p.head.short()), code(&p.head.subject)),
        format!("Against {}.", against_text(p.against)),
    ];
    let Some(plan) = &p.plan else {
        return invalid_markdown(p, &lead);
    };
    let header = MarkdownHeader {
        marker: Some(MARKER.to_owned()),
        title: title(p),
        lead,
        errors: errors_shown(p),
        notices: p
            .notices
            .iter()
            .map(|n| format!("{} — {}", n.message, code(&notice_location(n))))
            .collect(),
        earliest: p
            .forecast
            .iter()
            .filter(|f| f.hosts_changed > 0)
            .map(|f| (f.environment.clone(), f.summary.clone()))
            .collect(),
    };
    crate::plan::markdown::render(plan, &header)
}

/// The problems of a valid head for the comment: the first few (each quotes head's text),
/// then how many more, so the comment keeps its size limit and the notices after them.
fn errors_shown(p: &Preview) -> Vec<String> {
    const SHOWN: usize = 20;
    let mut out: Vec<String> = p.errors.iter().take(SHOWN).map(problem_line).collect();
    if p.errors.len() > SHOWN {
        out.push(format!(
            "…and {} more (in the JSON form, or `flotilla validate --rev {}`)",
            p.errors.len() - SHOWN,
            p.head.short()
        ));
    }
    out
}

/// A problem of a valid head (an artifact that fails its checks), for markdown: its message
/// as code (it quotes head's text), and where.
fn problem_line(e: &super::Problem) -> String {
    match (&e.file, e.line) {
        (Some(file), Some(line)) => format!("{} — {}", code(&e.message), code(&format!("{file}:{line}"))),
        _ => code(&e.message),
    }
}

/// An invalid head: its problems, located, in a fenced block (cut to fit, with a note).
fn invalid_markdown(p: &Preview, lead: &[String]) -> String {
    let mut out = format!("{MARKER}\n### {}\n\n", title(p));
    for l in lead {
        let _ = writeln!(out, "{l}  ");
    }
    let _ = writeln!(
        out,
        "\n**Head is invalid: {} problem(s). Nothing can be planned until they are fixed.**\n",
        p.errors.len()
    );
    let budget = MAX_COMMENT.saturating_sub(out.len() + 400);
    let mut body = String::new();
    let mut left_out = 0;
    for line in p.errors_text.lines() {
        if body.len() + line.len() + 1 > budget {
            left_out += 1;
            continue;
        }
        body.push_str(line);
        body.push('\n');
    }
    let fence = "`".repeat(longest_backtick_run(&body).max(2) + 1);
    let _ = writeln!(out, "{fence}text\n{body}{fence}\n");
    if left_out > 0 {
        let _ = writeln!(
            out,
            "_Cut to stay under the comment size limit: {left_out} line(s) left out. Run `flotilla validate --rev {}` for all of them._",
            p.head.short()
        );
    }
    out
}

/// For a terminal: the revisions, notices and forecast, then the text plan.
pub fn text(p: &Preview, color: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Preview: {} → {}", p.base.short(), p.head.short());
    for (side, r) in [("base", &p.base), ("head", &p.head)] {
        let _ = writeln!(out, "  {side}: {} {} ({})", r.short(), r.subject, r.rev);
    }
    let _ = writeln!(out, "  against {}\n", against_text(p.against));
    let Some(plan) = &p.plan else {
        let _ = writeln!(out, "Head is invalid: {} problem(s).\n", p.errors.len());
        out.push_str(&p.errors_text);
        return out;
    };
    if !p.errors.is_empty() {
        let _ = writeln!(
            out,
            "{} artifact(s) of head fail their checks; apply would refuse the whole run:\n",
            p.errors.len()
        );
        out.push_str(&p.errors_text);
    }
    if !p.notices.is_empty() {
        let _ = writeln!(out, "To review ({}):", p.notices.len());
        for n in &p.notices {
            let _ = writeln!(out, "  ! {}\n      at {}", n.message, notice_location(n));
        }
        out.push('\n');
    }
    let width = p.forecast.iter().map(|f| f.environment.len()).max().unwrap_or(0);
    if !p.forecast.is_empty() {
        let _ = writeln!(out, "Forecast (earliest first wave):");
        for f in &p.forecast {
            let _ = writeln!(out, "  {:width$}  {}", f.environment, f.summary);
        }
        out.push('\n');
    }
    out.push_str(&crate::plan::text::render(
        plan,
        crate::plan::text::TextOptions { color, detail: false },
    ));
    out
}

/// One JSON document (`schema/preview.schema.json`).
pub fn json(p: &Preview) -> String {
    serde_json::to_string_pretty(p).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
