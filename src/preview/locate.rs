//! Where a setting is written: the line of a key path (`rollout.bake`, `window[1]`) in a
//! manifest, found with a span-keeping TOML parse of the text the loader read, so a notice
//! can say `environments/prod.toml:14`. Pure.

use toml_edit::{Document, Item};

use crate::diagnostic::Sources;

/// One step of a key path: a key, or an element of an array (of tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// A file and a 1-based line in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: String,
    pub line: usize,
}

/// The line of the deepest part of `path` that `file` holds (the key itself when it is
/// there, else the table that would hold it, else line 1); `None` when the file was not read.
pub fn line_of(sources: &Sources, file: &str, path: &[Seg<'_>]) -> Option<Place> {
    let text = sources.get(file)?;
    let place = |offset: usize| Place {
        file: file.to_owned(),
        line: sources.line_col(file, offset).map_or(1, |(l, _)| l),
    };
    let Ok(doc) = Document::parse(text) else {
        return Some(place(0));
    };
    let mut item: &Item = doc.as_item();
    let mut best: Option<usize> = None;
    for seg in path {
        let next = match *seg {
            Seg::Key(k) => match item.as_table_like().and_then(|t| t.get_key_value(k)) {
                Some((key, value)) => {
                    best = key.span().map(|s| s.start).or(best);
                    Some(value)
                }
                None => None,
            },
            Seg::Index(i) => {
                let span = match item {
                    // A `[[table]]` element's span starts at its header.
                    Item::ArrayOfTables(a) => a.get(i).and_then(|t| t.span()),
                    Item::Value(v) => v.as_array().and_then(|a| a.get(i)).and_then(|v| v.span()),
                    _ => None,
                };
                best = span.map(|s| s.start).or(best);
                item.get(i)
            }
        };
        match next {
            Some(n) => item = n,
            None => break,
        }
    }
    Some(place(best.unwrap_or(0)))
}

/// The line of the `[[host]]` table named `host` in `file`, or of the host's key `key` in it.
pub fn host_line(sources: &Sources, file: &str, host: &str, key: Option<&str>) -> Option<Place> {
    let text = sources.get(file)?;
    let doc = Document::parse(text).ok()?;
    let hosts = doc.as_item().get("host")?.as_array_of_tables()?;
    let index = hosts
        .iter()
        .position(|t| t.get("name").and_then(Item::as_str) == Some(host))?;
    match key {
        Some(k) => line_of(sources, file, &[Seg::Key("host"), Seg::Index(index), Seg::Key(k)]),
        None => line_of(sources, file, &[Seg::Key("host"), Seg::Index(index)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(text: &str) -> Sources {
        let mut s = Sources::default();
        s.insert("e.toml", text);
        s
    }

    #[test]
    fn keys_tables_and_array_elements_are_found_on_their_lines() {
        let s = sources(
            "description = \"x\"\n\n[rollout]\nwaves = [1, \"100%\"]\nbake = \"1h\"\n\n[[window]]\nstart = \"02:00\"\n\n[[window]]\nstart = \"03:00\"\nduration = \"1h\"\n",
        );
        let line = |p: &[Seg]| line_of(&s, "e.toml", p).unwrap().line;
        assert_eq!(line(&[Seg::Key("rollout"), Seg::Key("bake")]), 5);
        assert_eq!(line(&[Seg::Key("rollout")]), 3);
        assert_eq!(line(&[Seg::Key("rollout"), Seg::Key("missing")]), 3, "the table");
        assert_eq!(line(&[Seg::Key("window"), Seg::Index(1)]), 10);
        assert_eq!(
            line(&[Seg::Key("window"), Seg::Index(1), Seg::Key("duration")]),
            12
        );
        assert_eq!(line(&[Seg::Key("nothing")]), 1);
        assert!(line_of(&s, "other.toml", &[]).is_none());
    }

    #[test]
    fn a_host_table_and_its_keys_are_found_by_name() {
        let mut s = Sources::default();
        s.insert(
            "hosts/a.toml",
            "[[host]]\nname = \"a\"\nenvironment = \"e\"\n\n[[host]]\nname = \"b\"\nenvironment = \"e\"\nport = 2222\n",
        );
        assert_eq!(host_line(&s, "hosts/a.toml", "b", None).unwrap().line, 5);
        assert_eq!(host_line(&s, "hosts/a.toml", "b", Some("port")).unwrap().line, 8);
        assert!(host_line(&s, "hosts/a.toml", "c", None).is_none());
    }
}
