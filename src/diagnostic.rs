//! Located problems in manifests and their rustc-style rendering: one message, the file, line
//! and column, the source line with a caret, and a hint on how to fix it. Every check in
//! `manifest` reports through this type so all problems can be shown at once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

/// A file of the fleet and a byte range in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Path relative to the fleet root, with `/` separators.
    pub file: String,
    pub span: Range<usize>,
}

/// One problem found while loading or validating manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub location: Option<Location>,
    /// Printed under the caret, e.g. "did you mean `waves`?".
    pub label: Option<String>,
    /// Printed after the snippet as `= help: …`.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            location: None,
            label: None,
            help: None,
        }
    }

    pub fn at(mut self, file: impl Into<String>, span: Range<usize>) -> Self {
        self.location = Some(Location {
            file: file.into(),
            span,
        });
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// The text of every manifest file that was read, so diagnostics can quote their lines.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    files: BTreeMap<String, String>,
}

impl Sources {
    pub fn insert(&mut self, path: impl Into<String>, text: impl Into<String>) {
        self.files.insert(path.into(), text.into());
    }

    pub fn get(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(String::as_str)
    }

    /// 1-based line and column (in characters) of a byte offset, for plain one-line reports.
    pub fn line_col(&self, path: &str, offset: usize) -> Option<(usize, usize)> {
        let text = self.get(path)?;
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Some((line, col))
    }
}

/// Diagnostics print in file order, then position; those without a place come first.
fn sort_key(d: &Diagnostic) -> Option<(&str, usize)> {
    d.location.as_ref().map(|l| (l.file.as_str(), l.span.start))
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Renders diagnostics in file order, followed by a count line, the way rustc does.
pub fn render(diagnostics: &[Diagnostic], sources: &Sources, color: bool) -> String {
    let mut out = render_each(diagnostics, sources, color);
    let n = diagnostics.len();
    let _ = writeln!(
        out,
        "error: the manifests have {n} problem{}; nothing was changed",
        if n == 1 { "" } else { "s" }
    );
    out
}

/// Renders each diagnostic, in file order, without the count line (for callers that end
/// with their own).
pub fn render_each(diagnostics: &[Diagnostic], sources: &Sources, color: bool) -> String {
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    let mut sorted: Vec<&Diagnostic> = diagnostics.iter().collect();
    sorted.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    let mut out = String::new();
    for d in sorted {
        let title = Level::ERROR.primary_title(d.message.as_str());
        let mut group = Group::with_title(title);
        match d.location.as_ref().and_then(|l| Some((l, sources.get(&l.file)?))) {
            Some((loc, text)) => {
                let start = floor_char_boundary(text, loc.span.start.min(text.len()));
                let end = floor_char_boundary(text, loc.span.end.clamp(start, text.len()));
                let mut annotation = AnnotationKind::Primary.span(start..end);
                if let Some(label) = &d.label {
                    annotation = annotation.label(label.as_str());
                }
                group = group.element(
                    Snippet::source(text)
                        .path(loc.file.as_str())
                        .annotation(annotation),
                );
            }
            None => {
                if let Some(loc) = &d.location {
                    group = group.element(Level::NOTE.message(format!("in {}", loc.file)));
                }
                if let Some(label) = &d.label {
                    group = group.element(Level::NOTE.message(label.as_str()));
                }
            }
        }
        if let Some(help) = &d.help {
            group = group.element(Level::HELP.message(help.as_str()));
        }
        let _ = writeln!(out, "{}\n", renderer.render(&[group]));
    }
    out
}

/// An error and its causes on one line, `outer: cause: cause`, the way `{:#}` prints an
/// `anyhow::Error`, except that a cause whose text the line already holds is left out: a
/// message that words its cause (`cannot read x: No such file or directory`) is not followed
/// by the same words again.
pub fn error_line<I, S>(chain: I) -> String
where
    I: IntoIterator<Item = S>,
    S: std::fmt::Display,
{
    let mut line = String::new();
    for cause in chain {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

/// Edit distance, for "did you mean" hints on unknown keys and names.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: like Levenshtein, but a swap of two neighbouring
/// letters (`prot` for `port`) counts as one edit.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let keys = ["waves", "max_parallel", "max_failures", "bake"];
        assert_eq!(closest("wavez", keys), Some("waves"));
        assert_eq!(closest("max_paralel", keys), Some("max_parallel"));
        assert_eq!(closest("timezone", keys), None);
        assert_eq!(closest("baek", keys), Some("bake"));
    }

    #[test]
    fn error_line_leaves_out_causes_already_said() {
        let os = "No such file or directory (os error 2)";
        assert_eq!(
            error_line([format!("cannot read x: {os}"), os.to_owned()]),
            format!("cannot read x: {os}")
        );
        assert_eq!(error_line(["outer", "inner"]), "outer: inner");
    }

    #[test]
    fn line_col_counts_characters() {
        let mut s = Sources::default();
        s.insert("a.toml", "x = 1\nné = 2\n");
        assert_eq!(s.line_col("a.toml", 0), Some((1, 1)));
        assert_eq!(s.line_col("a.toml", 10), Some((2, 4)));
    }
}
