//! Tarball inspection: every entry of a `.tar.gz` is checked before any host unpacks it, so a
//! bad artifact is refused once, on the controller, instead of half-unpacked on a fleet.
//!
//! The archive is read as a stream (constant memory) with the `tar` crate in raw mode: GNU long
//! names and pax headers are interpreted here rather than by the crate, so that the checks see
//! exactly what GNU tar on the host will unpack, and anything the two could read differently
//! (conflicting names, a pax `size` that disagrees with the header, data after the
//! end-of-archive marker) is refused instead of guessed at. All gzip members are read, as
//! `gzip -d` does.

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use flate2::bufread::MultiGzDecoder;
use tar::{Archive, PaxExtensions};

use super::error::TarProblem;

/// A refused tarball: the offending entry's name (shown safely) when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub entry: Option<String>,
    pub problem: TarProblem,
}

fn whole(problem: TarProblem) -> Rejection {
    Rejection { entry: None, problem }
}

/// GNU long names and link targets longer than this are refused (Linux's PATH_MAX is 4096).
const LONG_NAME_LIMIT: u64 = 64 * 1024;
/// Pax headers carry a few keywords; a bigger one is an attack on memory, not an archive.
const PAX_LIMIT: u64 = 1024 * 1024;
/// Zero padding accepted after the end-of-archive marker (tar pads to its record size, 10 KiB
/// by default; `-b 2048` gives 1 MiB).
const TRAILER_LIMIT: u64 = 16 * 1024 * 1024;

/// pax keywords that either the `tar` crate and GNU tar read the same way (`path`, `linkpath`,
/// `size`, checked below) or that change nothing `tar --no-same-owner` unpacks. Anything else
/// (`GNU.sparse.*` above all, which renames entries) is refused.
fn pax_key_allowed(key: &str, global: bool) -> bool {
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
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

/// Extension headers waiting for the entry they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Pax>,
}

/// Checks a gzip-compressed tarball read from `input`; returns the total size of its regular
/// files. Reads `input` to its end (so gzip's CRC is checked).
pub(crate) fn inspect(input: impl Read, max_unpacked: u64) -> Result<u64, Rejection> {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let head = input.fill_buf().map_err(|e| {
        whole(TarProblem::Corrupt {
            reason: e.to_string(),
        })
    })?;
    if !head.starts_with(&[0x1f, 0x8b]) {
        return Err(whole(TarProblem::NotGzip {
            detected: detect(head),
        }));
    }
    let gzip_failed = Rc::new(Cell::new(false));
    let mut archive = Archive::new(Tracked {
        inner: MultiGzDecoder::new(input),
        failed: Rc::clone(&gzip_failed),
    });
    let mut state = State {
        gzip_failed,
        max_unpacked,
        total: 0,
        members: 0,
        symlinks: HashSet::new(),
        dirs: HashSet::new(),
    };
    {
        let entries = archive
            .entries()
            .map_err(|e| whole(state.read_error(e)))?
            .raw(true);
        let mut pending = Pending::default();
        for entry in entries {
            let mut entry = entry.map_err(|e| whole(state.read_error(e)))?;
            state.entry(&mut entry, &mut pending)?;
        }
        if let Some(what) = dangling(&pending) {
            return Err(whole(TarProblem::DanglingExtension { what }));
        }
    }
    if state.members == 0 {
        return Err(whole(TarProblem::Empty));
    }
    // The tar crate stops at the first zero block; other readers may not (GNU tar warns about
    // "a lone zero block" and, with --ignore-zeros, reads on). Whatever follows must therefore
    // be zero padding, or it could hide entries from this check.
    let mut rest = archive.into_inner().take(TRAILER_LIMIT + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = 0u64;
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(whole(TarProblem::Corrupt {
                    reason: e.to_string(),
                }));
            }
        };
        seen += n as u64;
        if seen > TRAILER_LIMIT || buf[..n].iter().any(|&b| b != 0) {
            return Err(whole(TarProblem::TrailingData));
        }
    }
    Ok(state.total)
}

fn dangling(p: &Pending) -> Option<&'static str> {
    if p.pax.is_some() {
        Some("pax")
    } else if p.long_name.is_some() {
        Some("GNU long name")
    } else if p.long_link.is_some() {
        Some("GNU long link")
    } else {
        None
    }
}

/// Names a format from its first bytes, so "not a gzip" says what it is instead.
fn detect(head: &[u8]) -> String {
    let what = if head.is_empty() {
        "the file is empty"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "it is zstd-compressed"
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "it is xz-compressed"
    } else if head.starts_with(b"BZh") {
        "it is bzip2-compressed"
    } else if head.starts_with(b"PK\x03\x04") {
        "it is a zip archive"
    } else if head.get(257..262) == Some(b"ustar") {
        "it is an uncompressed tar archive; compress it with gzip"
    } else if head.starts_with(b"<") || head.starts_with(b"\xef\xbb\xbf<") {
        "it looks like HTML, perhaps an error page served instead of the artifact"
    } else {
        "it does not start with the gzip magic bytes 1f 8b"
    };
    what.to_owned()
}

/// Remembers whether the gzip layer failed, so a damaged download is not reported as "not tar".
struct Tracked<R> {
    inner: R,
    failed: Rc<Cell<bool>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        if matches!(&r, Err(e) if e.kind() != io::ErrorKind::Interrupted) {
            self.failed.set(true);
        }
        r
    }
}

struct State {
    gzip_failed: Rc<Cell<bool>>,
    max_unpacked: u64,
    total: u64,
    members: u64,
    /// Normalised names of symlink entries: nothing may be unpacked beneath one.
    symlinks: HashSet<Vec<u8>>,
    /// Normalised names used as directories (explicitly, or as a parent of an entry): none may
    /// later become a symlink.
    dirs: HashSet<Vec<u8>>,
}

impl State {
    /// A gzip error, or a tar error after the first entry, means the archive is damaged; a tar
    /// error before it, that the content is not tar at all.
    fn read_error(&self, e: io::Error) -> TarProblem {
        if self.gzip_failed.get() {
            TarProblem::Corrupt {
                reason: format!("gzip: {e}"),
            }
        } else if self.members == 0 {
            TarProblem::NotTar {
                reason: e.to_string(),
            }
        } else {
            TarProblem::Corrupt {
                reason: e.to_string(),
            }
        }
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        pending: &mut Pending,
    ) -> Result<(), Rejection> {
        let kind = entry.header().entry_type().as_byte();
        match kind {
            b'L' | b'K' => {
                let (slot, what) = if kind == b'L' {
                    (&mut pending.long_name, "GNU long name")
                } else {
                    (&mut pending.long_link, "GNU long link")
                };
                if slot.is_some() {
                    return Err(whole(TarProblem::DuplicateExtension { what }));
                }
                let mut data = read_small(entry, LONG_NAME_LIMIT, what)?;
                // GNU tar reads the name as a C string.
                if let Some(nul) = data.iter().position(|&b| b == 0) {
                    data.truncate(nul);
                }
                *slot = Some(data);
                Ok(())
            }
            b'x' => {
                if pending.pax.is_some() {
                    return Err(whole(TarProblem::DuplicateExtension { what: "pax" }));
                }
                let data = read_small(entry, PAX_LIMIT, "pax")?;
                pending.pax = Some(parse_pax(&data, false)?);
                Ok(())
            }
            b'g' => {
                let data = read_small(entry, PAX_LIMIT, "pax global")?;
                parse_pax(&data, true)?;
                Ok(())
            }
            _ => {
                let taken = std::mem::take(pending);
                self.member(entry, kind, taken)
            }
        }
    }

    fn member<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        kind: u8,
        ext: Pending,
    ) -> Result<(), Rejection> {
        self.members += 1;
        let header = entry.header();
        let name = pick(
            "name",
            ext.pax.as_ref().and_then(|p| p.path.clone()),
            ext.long_name,
            || header.path_bytes().into_owned(),
        )
        .map_err(whole)?;
        let shown = show(&name);
        let fail = |problem| Rejection {
            entry: Some(shown.clone()),
            problem,
        };
        let header_size = header.entry_size().map_err(|e| {
            fail(TarProblem::Corrupt {
                reason: e.to_string(),
            })
        })?;
        if let Some(pax) = ext.pax.as_ref().and_then(|p| p.size) {
            // Raw mode skips data by the header's size; GNU tar by pax's. They must agree.
            if pax != header_size {
                return Err(fail(TarProblem::PaxSize {
                    pax,
                    header: header_size,
                }));
            }
        }

        let parts = components(&name).map_err(&fail)?;
        let normalised = parts.join(&b'/');

        match kind {
            b'0' | b'\0' | b'7' | b'5' | b'2' => {}
            b'1' => {
                let target = header
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target = show(&ext.long_link.clone().unwrap_or(target));
                return Err(fail(TarProblem::Hardlink { target }));
            }
            b'3' => {
                return Err(fail(TarProblem::Device {
                    kind: "character device",
                }));
            }
            b'4' => return Err(fail(TarProblem::Device { kind: "block device" })),
            b'6' => return Err(fail(TarProblem::Fifo)),
            b'S' => {
                return Err(fail(TarProblem::Unsupported {
                    kind: "GNU sparse file".into(),
                }));
            }
            other => {
                let kind = if other.is_ascii_graphic() {
                    format!("type `{}`", other as char)
                } else {
                    format!("type {other:#04x}")
                };
                return Err(fail(TarProblem::Unsupported { kind }));
            }
        }
        if parts.is_empty() && kind != b'5' {
            return Err(fail(TarProblem::RootNotDirectory));
        }

        let mode = header.mode().map_err(|e| {
            fail(TarProblem::Corrupt {
                reason: e.to_string(),
            })
        })?;
        if mode & 0o7000 != 0 {
            return Err(fail(TarProblem::SpecialBits { mode: mode & 0o7777 }));
        }

        // Nothing may be unpacked through or over a symlink from earlier in the archive:
        // unpacking would follow it, and lexical checks of later names would no longer describe
        // the disk.
        let mut prefix = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(part);
            let last = i + 1 == parts.len();
            if self.symlinks.contains(&prefix) {
                return Err(fail(if last {
                    TarProblem::ReplacesSymlink
                } else {
                    TarProblem::ThroughSymlink {
                        symlink: show(&prefix),
                    }
                }));
            }
            if (!last || kind == b'5') && !self.dirs.contains(&prefix) {
                self.dirs.insert(prefix.clone());
            }
        }

        match kind {
            b'2' => {
                if self.dirs.contains(&normalised) {
                    return Err(fail(TarProblem::SymlinkOverDirectory));
                }
                let target = pick(
                    "link target",
                    ext.pax.as_ref().and_then(|p| p.linkpath.clone()),
                    ext.long_link,
                    || {
                        header
                            .link_name_bytes()
                            .map(|t| t.into_owned())
                            .unwrap_or_default()
                    },
                )
                .map_err(&fail)?;
                check_symlink(parts.len().saturating_sub(1), &target).map_err(&fail)?;
                self.symlinks.insert(normalised);
            }
            b'5' => {}
            _ => {
                self.total = self.total.saturating_add(header_size);
                if self.total > self.max_unpacked {
                    return Err(fail(TarProblem::TooLarge {
                        limit: self.max_unpacked,
                    }));
                }
            }
        }
        Ok(())
    }
}

/// Chooses between a pax value, a GNU long value and the header's own, as GNU tar does (pax
/// first), refusing a pax value and a long value that disagree.
fn pick(
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
fn read_small<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, Rejection> {
    let size = entry.size();
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

fn parse_pax(data: &[u8], global: bool) -> Result<Pax, Rejection> {
    let mut pax = Pax::default();
    let malformed = |reason: String| whole(TarProblem::PaxMalformed { reason });
    for ext in PaxExtensions::new(data) {
        let ext = ext.map_err(|e| malformed(e.to_string()))?;
        let key = ext
            .key()
            .map_err(|_| malformed("a keyword is not UTF-8".into()))?;
        if !pax_key_allowed(key, global) {
            return Err(whole(TarProblem::PaxKeyword {
                key: show(key.as_bytes()),
            }));
        }
        let value = ext.value_bytes();
        let slot_taken = match key {
            "path" => pax.path.replace(value.to_vec()).is_some(),
            "linkpath" => pax.linkpath.replace(value.to_vec()).is_some(),
            "size" => {
                let size = std::str::from_utf8(value)
                    .ok()
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

/// Splits an entry name into its normal components (dropping `.` and empty ones), refusing
/// empty, absolute and `..` names and control characters.
fn components(name: &[u8]) -> Result<Vec<&[u8]>, TarProblem> {
    if name.is_empty() {
        return Err(TarProblem::EmptyName);
    }
    if has_control(name) {
        return Err(TarProblem::ControlCharacter);
    }
    if name.starts_with(b"/") {
        return Err(TarProblem::Absolute);
    }
    let mut parts = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(TarProblem::ParentDir),
            _ => parts.push(part),
        }
    }
    Ok(parts)
}

/// Checks a symlink's target, given the depth of the directory the symlink is in (0 for the
/// version directory itself).
///
/// Resolved lexically, the target must stay inside the version directory. That alone is not
/// enough when other symlinks are on the way (`a -> .` then `b -> a/../x` looks inside but is
/// not), so `..` is only accepted at the start of a target: leading `..`s climb through real
/// directories (nothing is unpacked beneath a symlink), and from there only names follow, each
/// a real directory or a symlink that by the same rule stays inside.
fn check_symlink(depth: usize, target: &[u8]) -> Result<(), TarProblem> {
    let shown = || show(target);
    if target.is_empty() {
        return Err(TarProblem::EmptyLinkTarget);
    }
    if has_control(target) {
        return Err(TarProblem::ControlCharacter);
    }
    if target.starts_with(b"/") {
        return Err(TarProblem::SymlinkAbsolute { target: shown() });
    }
    let mut ups = 0usize;
    let mut named = false;
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if named => return Err(TarProblem::SymlinkClimbsAfterName { target: shown() }),
            b".." => ups += 1,
            _ => named = true,
        }
    }
    if ups > depth {
        return Err(TarProblem::SymlinkEscapes { target: shown() });
    }
    Ok(())
}

/// C0 controls and DEL as bytes, and C1 controls in UTF-8 names.
fn has_control(name: &[u8]) -> bool {
    name.iter().any(|&b| b < 0x20 || b == 0x7f) || String::from_utf8_lossy(name).chars().any(char::is_control)
}

/// A name for messages: lossy UTF-8 with control characters escaped, so a hostile name cannot
/// rewrite the terminal it is shown on. Long names are cut.
fn show(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    let cut: String = text.chars().take(200).collect();
    let mut out = crate::text::escape_controls(&cut);
    if text.chars().nth(200).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets() {
        assert_eq!(check_symlink(0, b"bin/python3"), Ok(()));
        assert_eq!(check_symlink(0, b"."), Ok(()));
        assert_eq!(check_symlink(1, b"../lib/x"), Ok(()));
        assert_eq!(check_symlink(2, b"./../../x"), Ok(()));
        assert!(matches!(
            check_symlink(0, b"../x"),
            Err(TarProblem::SymlinkEscapes { .. })
        ));
        assert!(matches!(
            check_symlink(1, b"../../etc"),
            Err(TarProblem::SymlinkEscapes { .. })
        ));
        assert!(matches!(
            check_symlink(3, b"/etc"),
            Err(TarProblem::SymlinkAbsolute { .. })
        ));
        assert!(matches!(
            check_symlink(3, b"a/../x"),
            Err(TarProblem::SymlinkClimbsAfterName { .. })
        ));
        assert!(matches!(check_symlink(0, b""), Err(TarProblem::EmptyLinkTarget)));
    }

    #[test]
    fn names() {
        assert_eq!(components(b"./a//b/"), Ok(vec![&b"a"[..], &b"b"[..]]));
        assert_eq!(components(b"./"), Ok(vec![]));
        assert_eq!(components(b"/a"), Err(TarProblem::Absolute));
        assert_eq!(components(b"a/../b"), Err(TarProblem::ParentDir));
        assert_eq!(components(b"a\nb"), Err(TarProblem::ControlCharacter));
        assert_eq!(
            components("a\u{85}b".as_bytes()),
            Err(TarProblem::ControlCharacter)
        );
        assert_eq!(components(b""), Err(TarProblem::EmptyName));
        assert_eq!(show(b"a\x1b[2Jb"), "a\\u{1b}[2Jb");
    }

    #[test]
    fn pax_keywords() {
        assert!(pax_key_allowed("path", false));
        assert!(!pax_key_allowed("path", true));
        assert!(pax_key_allowed("SCHILY.xattr.user.x", true));
        assert!(!pax_key_allowed("GNU.sparse.name", false));
        assert!(!pax_key_allowed("SCHILY.fflags", false));
    }

    #[test]
    fn formats_are_named() {
        assert!(detect(b"").contains("empty"));
        assert!(detect(b"PK\x03\x04rest").contains("zip"));
        assert!(detect(b"<!DOCTYPE html>").contains("HTML"));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(detect(&tar).contains("uncompressed tar"));
    }
}
