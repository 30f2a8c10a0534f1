//! TOML's own errors (syntax, types, unknown keys) as located diagnostics with a hint.

use super::*;

pub(super) fn parse_toml<T: DeserializeOwned>(file: &ManifestFile) -> Result<T, Diagnostic> {
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
pub(super) fn error_key(e: &toml::de::Error) -> Option<String> {
    let mut bare = e.clone();
    bare.set_input(None);
    let text = bare.to_string();
    let path = text.lines().last()?.strip_prefix("in `")?.strip_suffix('`')?;
    path.rsplit('.').next().map(str::to_owned)
}

/// Keys that are arrays of tables (`[[host]]`): written as `[host]` they are one table.
pub(super) const ARRAY_TABLES: &[&str] = &["host", "version", "file", "window", "freeze", "group"];

/// serde describes types the Rust way ("expected u16", "expected struct RawFleet"); this
/// turns the common type errors into plain words, using the key for a precise description
/// and a hint on how to write the value. `None`: not a type error, keep serde's message.
pub(super) fn type_error(
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
pub(super) fn plain_expected(key: &str, expected: &str) -> String {
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
pub(super) fn plain_found(found: &str) -> String {
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
pub(super) fn type_help(key: &str, expected: &str, found: &str) -> Option<String> {
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
pub(super) fn header_span(text: &str, key: &str, double: bool) -> Option<std::ops::Range<usize>> {
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
pub(super) fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    match closest(field, candidates.iter().copied()) {
        Some(c) => Some(format!("did you mean `{c}`?")),
        None => Some("unknown key".to_owned()),
    }
}
