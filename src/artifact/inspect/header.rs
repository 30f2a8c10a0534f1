//! A tar header's fields and pax records, read strictly from their raw bytes as GNU tar reads
//! them (and refused where readers could differ).

use super::*;

/// pax keywords that either GNU tar and this check read the same way (`path`, `linkpath`,
/// `size`, checked below) or that change nothing `tar --no-same-owner` unpacks. Anything else
/// (`GNU.sparse.*` above all, which renames entries) is refused.
pub(super) fn pax_key_allowed(key: &str, global: bool) -> bool {
    const ALWAYS: &[&str] = &[
        "atime",
        "mtime",
        "ctime",
        "uid",
        "gid",
        "uname",
        "gname",
        "comment",
        "charset",
        "hdrcharset",
        "SCHILY.dev",
        "SCHILY.ino",
        "SCHILY.nlink",
        "LIBARCHIVE.creationtime",
    ];
    const PREFIXES: &[&str] = &["SCHILY.xattr.", "LIBARCHIVE.xattr.", "SCHILY.acl."];
    ALWAYS.contains(&key)
        || PREFIXES.iter().any(|p| key.starts_with(p))
        || (!global && matches!(key, "path" | "linkpath" | "size"))
}

/// What the pax header before an entry says about it.
#[derive(Default)]
pub(super) struct Pax {
    pub(super) path: Option<Vec<u8>>,
    pub(super) linkpath: Option<Vec<u8>>,
    pub(super) size: Option<u64>,
}

/// A C string in a fixed-size field.
pub(super) fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// An octal number as every reader reads it alike: leading spaces, at least one octal digit,
/// then only NULs and spaces. GNU tar reads more (base-64 after `+` or `-`, digits after a
/// space), the `tar` crate reads some of those differently, so anything else is refused.
pub(super) fn strict_octal(field: &[u8]) -> Option<u64> {
    let digits_start = field.iter().position(|&b| b != b' ')?;
    let mut value: u64 = 0;
    let mut i = digits_start;
    while let Some(&b) = field.get(i) {
        if !(b'0'..=b'7').contains(&b) {
            break;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
        i += 1;
    }
    if i == digits_start || !field[i..].iter().all(|&b| b == 0 || b == b' ') {
        return None;
    }
    Some(value)
}

/// The size field: strict octal, or GNU's base-256 for sizes of 8 GiB and more (a first byte
/// of 0x80, a positive value that fits in 63 bits).
pub(super) fn strict_size(field: &[u8]) -> Option<u64> {
    if field[0] == 0x80 {
        if field[1..4].iter().any(|&b| b != 0) {
            return None;
        }
        let mut be = [0u8; 8];
        be.copy_from_slice(&field[4..12]);
        let v = u64::from_be_bytes(be);
        return (v <= i64::MAX as u64).then_some(v);
    }
    strict_octal(field)
}

/// Chooses between a pax value, a GNU long value and the header's own, as GNU tar does (pax
/// first), refusing a pax value and a long value that disagree.
pub(super) fn pick(
    what: &'static str,
    pax: Option<Vec<u8>>,
    long: Option<Vec<u8>>,
    header: impl FnOnce() -> Vec<u8>,
) -> Result<Vec<u8>, TarProblem> {
    match (pax, long) {
        (Some(p), Some(l)) if p != l => Err(TarProblem::ConflictingNames { what }),
        (Some(p), _) => Ok(p),
        (None, Some(l)) => Ok(l),
        (None, None) => Ok(header()),
    }
}

/// Reads an extension header's data, refusing one too big to be honest.
pub(super) fn read_small<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    size: u64,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, Rejection> {
    if size > limit {
        return Err(whole(TarProblem::ExtensionTooLarge { what, size, limit }));
    }
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry.take(limit).read_to_end(&mut data).map_err(|e| {
        whole(TarProblem::Corrupt {
            reason: e.to_string(),
        })
    })?;
    Ok(data)
}

/// A pax record's keyword and value.
pub(super) type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// Splits pax data into its records, "LENGTH KEYWORD=VALUE\n" with LENGTH counting the whole
/// record, read strictly (GNU tar's reader takes more, such as `+` or spaces before LENGTH).
pub(super) fn pax_records(mut data: &[u8]) -> Result<Vec<PaxRecord<'_>>, String> {
    let mut records = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or("a record does not start with its length")?;
        let digits = &data[..space];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err("a record length is not a decimal number".into());
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("a record length is too large")?;
        if len < space + 3 || len > data.len() {
            return Err(format!("a record length of {len} does not fit the header"));
        }
        let body = match data[space + 1..len].split_last() {
            Some((b'\n', body)) => body,
            _ => return Err("a record does not end with a newline".into()),
        };
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or("a record has no `=`")?;
        if eq == 0 {
            return Err("a record has an empty keyword".into());
        }
        records.push((&body[..eq], &body[eq + 1..]));
        data = &data[len..];
    }
    Ok(records)
}

pub(super) fn parse_pax(data: &[u8], global: bool) -> Result<Pax, Rejection> {
    let mut pax = Pax::default();
    let malformed = |reason: String| whole(TarProblem::PaxMalformed { reason });
    for (key, value) in pax_records(data).map_err(malformed)? {
        let key = std::str::from_utf8(key).map_err(|_| malformed("a keyword is not UTF-8".into()))?;
        if !pax_key_allowed(key, global) {
            return Err(whole(TarProblem::PaxKeyword {
                key: show(key.as_bytes()),
            }));
        }
        let slot_taken = match key {
            "path" => pax.path.replace(value.to_vec()).is_some(),
            "linkpath" => pax.linkpath.replace(value.to_vec()).is_some(),
            "size" => {
                let size = Some(value)
                    .filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| malformed(format!("size `{}` is not a number", show(value))))?;
                pax.size.replace(size).is_some()
            }
            _ => false,
        };
        if slot_taken {
            return Err(malformed(format!("`{key}` is given twice")));
        }
    }
    Ok(pax)
}
