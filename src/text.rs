//! Untrusted text made safe to show: what hosts, tarballs and store files say may contain
//! control characters that would move a terminal's cursor, recolour it or rewrite what a
//! reviewer sees. A leaf module: it depends on nothing else in the crate.

/// Escapes control characters (`\n`, `\u{1b}`) so untrusted text stays on one line and cannot
/// drive a terminal, while still showing what was there.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Strips control characters (but newlines and tabs) from text that came from a host, so it
/// cannot move the cursor, recolour or rewrite what a reviewer sees.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}
