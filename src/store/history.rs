//! `flotilla history`: the audit log as aligned text, one line per event, or as JSON lines.
//! Pure, so the CLI decides where it goes and what to say when nothing matched.

use std::fmt::Write as _;

use super::AuditEvent;

/// How much of a commit id to show; the same length as plans use.
const SHORT_REVISION: usize = 12;

/// Renders audit events for `flotilla history`, in the order given (the store returns them
/// oldest first).
///
/// Text: one line per event — time (UTC, whole seconds), actor, event, `environment/host`,
/// short revision (`+dirty` for an uncommitted working tree, `-` when unknown), then the number
/// of changes, the error and the reason when present — in aligned columns. Values from the log
/// are printed with control characters escaped, so an event's text can neither break the
/// one-line-per-event layout nor send escape sequences to the terminal.
///
/// JSON (`json`): each event as one compact JSON object per line, the audit log's own format.
///
/// No events render as the empty string in both forms.
pub fn render_history(events: &[AuditEvent], json: bool) -> String {
    if json {
        return render_json(events);
    }
    let rows: Vec<[String; 5]> = events
        .iter()
        .map(|e| {
            [
                format!("{:.0}", e.time),
                clean(&e.actor),
                clean(&e.event),
                target(e),
                revision(e),
            ]
        })
        .collect();
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (event, row) in events.iter().zip(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = write!(line, "{cell:<w$}");
        }
        let details = details(event);
        if !details.is_empty() {
            line.push_str("  ");
            line.push_str(&details);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_json(events: &[AuditEvent]) -> String {
    let mut out = String::new();
    for event in events {
        match serde_json::to_string(event) {
            Ok(line) => {
                out.push_str(&line);
                out.push('\n');
            }
            // Unreachable for these types (every map key is a string); never drop silently.
            Err(e) => tracing::warn!("an audit event could not be rendered as JSON: {e}"),
        }
    }
    out
}

/// `env/host`, either alone, or `-` for a fleet-wide event.
fn target(e: &AuditEvent) -> String {
    match (&e.environment, &e.host) {
        (Some(env), Some(host)) => format!("{}/{}", clean(env), clean(host)),
        (Some(env), None) => clean(env),
        (None, Some(host)) => clean(host),
        (None, None) => "-".to_owned(),
    }
}

fn revision(e: &AuditEvent) -> String {
    let short = e
        .revision
        .as_deref()
        .map(|r| clean(&r.chars().take(SHORT_REVISION).collect::<String>()));
    match (short, e.dirty) {
        (Some(r), false) => r,
        (Some(r), true) => format!("{r}+dirty"),
        (None, true) => "dirty".to_owned(),
        (None, false) => "-".to_owned(),
    }
}

fn details(e: &AuditEvent) -> String {
    let mut parts = Vec::new();
    match (e.event.as_str(), e.changes.as_slice()) {
        // A run's start and end carry one summary object, not changes.
        ("apply-started" | "apply-finished", [serde_json::Value::Object(summary)]) => {
            let fields: Vec<String> = summary
                .iter()
                .filter(|(_, v)| !matches!(v, serde_json::Value::Bool(false)))
                .map(|(k, v)| match v {
                    serde_json::Value::Bool(true) => clean(k),
                    v => format!("{} {}", clean(k), clean(&v.to_string())),
                })
                .collect();
            parts.push(fields.join(", "));
        }
        (_, []) => {}
        (_, [_]) => parts.push("1 change".to_owned()),
        (_, c) => parts.push(format!("{} changes", c.len())),
    }
    if let Some(error) = &e.error {
        parts.push(format!("error: {}", clean(error)));
    }
    if let Some(reason) = &e.reason {
        parts.push(format!("reason: {}", clean(reason)));
    }
    parts.join("; ")
}

/// Escapes control characters (newlines, tabs, terminal escapes) so one event stays one line.
fn clean(s: &str) -> String {
    crate::text::escape_controls(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\nb\tc\u{1b}[31m"), "a\\nb\\tc\\u{1b}[31m");
    }

    #[test]
    fn nothing_renders_as_nothing() {
        assert_eq!(render_history(&[], false), "");
        assert_eq!(render_history(&[], true), "");
    }

    #[test]
    fn dirty_and_missing_revisions_are_marked() {
        let mut e = AuditEvent::new("2026-01-01T00:00:00Z".parse().unwrap(), "a", "apply-started");
        assert_eq!(revision(&e), "-");
        e.dirty = true;
        assert_eq!(revision(&e), "dirty");
        e.revision = Some("0123456789abcdef0123".into());
        assert_eq!(revision(&e), "0123456789ab+dirty");
    }
}
