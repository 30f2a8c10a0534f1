//! Tarball inspection: every entry of a `.tar.gz` is checked before any host unpacks it, so a
//! bad artifact is refused once, on the controller, instead of half-unpacked on a fleet.
//!
//! What the inspection accepts must be exactly what GNU tar (1.34) on the hosts unpacks. The
//! archive is read as a stream with the `tar` crate in raw mode, only to cut it into headers and
//! data; everything in a header is read here, from its raw bytes, as GNU tar reads it: names
//! (the ustar prefix whenever the magic is "ustar\0"), GNU long names and links, pax records.
//! Where readers differ, the archive is refused instead of guessed at: numeric fields other
//! than plain octal (or GNU base-256 sizes), a checksum that does not match, non-regular entries
//! that carry data (GNU tar reads it as further headers; the crate skips it), regular files
//! named `dir/` (GNU tar makes a directory), conflicting names, a pax `size` that disagrees with
//! the header, data after the end-of-archive marker. All gzip members are read, as `gzip -d`
//! does.
//!
//! Memory does not depend on names: they are bounded ([`NAME_LIMIT`] bytes,
//! [`COMPONENT_LIMIT`] components), and only 64-bit keyed hashes of directory and symlink names
//! are kept, at most [`PATH_LIMIT`] of them.

use std::cell::Cell;
use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use flate2::bufread::MultiGzDecoder;
use tar::Archive;

use super::error::TarProblem;

mod header;
mod names;

use header::*;
use names::*;

/// A refused tarball: the offending entry's name (shown safely) when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", super::error::entry_prefix(.entry))]
pub struct TarballRefused {
    pub entry: Option<String>,
    pub problem: TarProblem,
}

pub(crate) type Rejection = TarballRefused;

fn whole(problem: TarProblem) -> Rejection {
    Rejection { entry: None, problem }
}

/// What an accepted entry is, as GNU tar unpacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarEntryKind {
    File,
    Directory,
    Symlink,
}

/// An entry that passed its checks, as GNU tar names it (pax `path`, GNU long name, or the
/// header's prefix and name). The archive as a whole may still be refused later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarEntry<'a> {
    pub name: &'a [u8],
    pub kind: TarEntryKind,
    /// A symlink's target.
    pub link: Option<&'a [u8]>,
    /// A regular file's size (0 for the others, which must not carry data).
    pub size: u64,
}

/// Names and link targets longer than this are refused: Linux's PATH_MAX is 4096 (with the
/// NUL), so GNU tar could not unpack them anyway, and the bound keeps inspection small.
pub const NAME_LIMIT: usize = 4096;
/// Names with more components than this are refused.
pub const COMPONENT_LIMIT: usize = 512;
/// Distinct directories and symlinks the inspection keeps track of (8 bytes each, hashed, so
/// memory does not depend on how long names are).
pub const PATH_LIMIT: usize = 2_000_000;
/// GNU tar writes a long name's data as the name and one NUL.
const LONG_NAME_DATA_LIMIT: u64 = NAME_LIMIT as u64 + 1;
/// Pax headers carry a few keywords; a bigger one is an attack on memory, not an archive.
const PAX_LIMIT: u64 = 1024 * 1024;
/// Zero padding accepted after the end-of-archive marker (tar pads to its record size, 10 KiB
/// by default; `-b 2048` gives 1 MiB).
const TRAILER_LIMIT: u64 = 16 * 1024 * 1024;

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
    inspect_tarball(input, max_unpacked, &mut |_| {})
}

/// Checks a gzip-compressed tarball as [`ArtifactCache::prepare`](super::ArtifactCache::prepare)
/// does, calling `visit` with each entry that passed its checks, in archive order; returns the
/// total size of the regular files. Memory stays bounded whatever the names: they are limited
/// to [`NAME_LIMIT`] bytes and [`COMPONENT_LIMIT`] components, and only hashes of directory
/// and symlink names are kept (at most [`PATH_LIMIT`]).
pub fn inspect_tarball(
    input: impl Read,
    max_unpacked: u64,
    visit: &mut dyn FnMut(&TarEntry<'_>),
) -> Result<u64, TarballRefused> {
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
        hasher: RandomState::new(),
        symlinks: HashSet::new(),
        dirs: HashSet::new(),
        visit,
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
    // The tar crate stops at the first zero block. GNU tar 1.34 stops there too (after "a lone
    // zero block" warning), but other readers and `--ignore-zeros` read on. Whatever follows
    // must therefore be zero padding, or it could hide entries from this check.
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

struct State<'v> {
    gzip_failed: Rc<Cell<bool>>,
    max_unpacked: u64,
    total: u64,
    members: u64,
    /// Keyed per inspection, so names cannot be chosen to collide. A collision could only
    /// refuse a good archive (both sets are only asked "was this seen?"), never accept a bad one.
    hasher: RandomState,
    /// Hashes of the normalised names of symlink entries: nothing may be unpacked beneath one.
    symlinks: HashSet<u64>,
    /// Hashes of normalised names used as directories (explicitly, or as a parent of an
    /// entry): none may later become a symlink.
    dirs: HashSet<u64>,
    visit: &'v mut dyn FnMut(&TarEntry<'_>),
}

/// The fields of a raw 512-byte header, as GNU tar 1.34 reads them.
mod field {
    pub const NAME: std::ops::Range<usize> = 0..100;
    pub const MODE: std::ops::Range<usize> = 100..108;
    pub const SIZE: std::ops::Range<usize> = 124..136;
    pub const CHKSUM: std::ops::Range<usize> = 148..156;
    pub const LINKNAME: std::ops::Range<usize> = 157..257;
    pub const MAGIC: std::ops::Range<usize> = 257..263;
    pub const PREFIX: std::ops::Range<usize> = 345..500;
}

impl State<'_> {
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

    /// Checks the numeric fields every reader must read alike before anything else is
    /// believed: the checksum (GNU tar skips a block with a bad one and reads on, looking for
    /// a header), and the size (which says where the next header is). Returns the size.
    fn header_fields(&self, raw: &[u8; 512], crate_size: io::Result<u64>) -> Result<u64, Rejection> {
        let bad = |field: &'static str, value: &[u8]| {
            whole(TarProblem::HeaderField {
                field,
                value: show(value),
            })
        };
        let sum: u64 = raw
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if field::CHKSUM.contains(&i) {
                    u64::from(b' ')
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if strict_octal(&raw[field::CHKSUM]) != Some(sum) {
            return Err(bad("checksum", &raw[field::CHKSUM]));
        }
        let size = strict_size(&raw[field::SIZE]);
        match (size, crate_size) {
            (Some(s), Ok(c)) if s == c => Ok(s),
            _ => Err(bad("size", &raw[field::SIZE])),
        }
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        pending: &mut Pending,
    ) -> Result<(), Rejection> {
        let raw: [u8; 512] = *entry.header().as_bytes();
        let size = self.header_fields(&raw, entry.header().entry_size())?;
        let kind = raw[156];
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
                let mut data = read_small(entry, size, LONG_NAME_DATA_LIMIT, what)?;
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
                let data = read_small(entry, size, PAX_LIMIT, "pax")?;
                pending.pax = Some(parse_pax(&data, false)?);
                Ok(())
            }
            b'g' => {
                let data = read_small(entry, size, PAX_LIMIT, "pax global")?;
                parse_pax(&data, true)?;
                Ok(())
            }
            _ => {
                let taken = std::mem::take(pending);
                self.member(&raw, size, kind, taken)
            }
        }
    }

    fn member(&mut self, raw: &[u8; 512], header_size: u64, kind: u8, ext: Pending) -> Result<(), Rejection> {
        self.members += 1;
        // GNU tar joins prefix and name whenever the magic is "ustar\0", whatever the version
        // field says (the `tar` crate also wants version "00").
        let header_name = || {
            let name = cstr(&raw[field::NAME]);
            let prefix = cstr(&raw[field::PREFIX]);
            if &raw[field::MAGIC] == b"ustar\0" && !prefix.is_empty() {
                [prefix, b"/", name].concat()
            } else {
                name.to_vec()
            }
        };
        let name = pick(
            "name",
            ext.pax.as_ref().and_then(|p| p.path.clone()),
            ext.long_name,
            header_name,
        )
        .map_err(whole)?;
        let shown = show(&name);
        let fail = |problem| Rejection {
            entry: Some(shown.clone()),
            problem,
        };
        if name.len() > NAME_LIMIT {
            return Err(fail(TarProblem::NameTooLong {
                what: "name",
                len: name.len(),
                limit: NAME_LIMIT,
            }));
        }
        if let Some(pax) = ext.pax.as_ref().and_then(|p| p.size) {
            // The crate skips data by the header's size; GNU tar by pax's. They must agree.
            if pax != header_size {
                return Err(fail(TarProblem::PaxSize {
                    pax,
                    header: header_size,
                }));
            }
        }

        let type_name = match kind {
            b'0' | b'\0' | b'7' => None,
            b'1' => Some("hardlink"),
            b'2' => Some("symlink"),
            b'3' => Some("character device"),
            b'4' => Some("block device"),
            b'5' => Some("directory"),
            b'6' => Some("FIFO"),
            _ => Some("special"),
        };
        // GNU tar reads the data of a directory or hardlink entry, and on extraction of every
        // entry that is not a regular file, as further headers; the `tar` crate skips it.
        if let Some(kind) = type_name
            && header_size != 0
        {
            return Err(fail(TarProblem::NonRegularWithData {
                kind,
                size: header_size,
            }));
        }

        let parts = components(&name).map_err(&fail)?;

        match kind {
            b'0' | b'\0' | b'7' => {
                // GNU tar unpacks a "regular file" named `dir/` as a directory, reading its
                // data as further headers.
                if name.ends_with(b"/") {
                    return Err(fail(TarProblem::FileNamedAsDirectory));
                }
            }
            b'5' | b'2' => {}
            b'1' => {
                let target = pick(
                    "link target",
                    ext.pax.as_ref().and_then(|p| p.linkpath.clone()),
                    ext.long_link,
                    || cstr(&raw[field::LINKNAME]).to_vec(),
                )
                .unwrap_or_default();
                return Err(fail(TarProblem::Hardlink {
                    target: show(&target),
                }));
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

        let mode = strict_octal(&raw[field::MODE]).ok_or_else(|| {
            fail(TarProblem::HeaderField {
                field: "mode",
                value: show(&raw[field::MODE]),
            })
        })?;
        if mode & 0o7000 != 0 {
            return Err(fail(TarProblem::SpecialBits {
                mode: (mode & 0o7777) as u32,
            }));
        }

        // Nothing may be unpacked through or over a symlink from earlier in the archive:
        // unpacking would follow it, and lexical checks of later names would no longer describe
        // the disk. Only hashes of the prefixes are kept, one per component.
        let mut hasher = self.hasher.build_hasher();
        let mut key = 0;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                hasher.write(b"/");
            }
            hasher.write(part);
            key = hasher.clone().finish();
            let last = i + 1 == parts.len();
            if self.symlinks.contains(&key) {
                return Err(fail(if last {
                    TarProblem::ReplacesSymlink
                } else {
                    TarProblem::ThroughSymlink {
                        symlink: show(&parts[..=i].join(&b'/')),
                    }
                }));
            }
            if !last || kind == b'5' {
                self.dirs.insert(key);
            }
        }
        if self.dirs.len() + self.symlinks.len() > PATH_LIMIT {
            return Err(fail(TarProblem::TooManyPaths { limit: PATH_LIMIT }));
        }

        match kind {
            b'2' => {
                if self.dirs.contains(&key) {
                    return Err(fail(TarProblem::SymlinkOverDirectory));
                }
                let target = pick(
                    "link target",
                    ext.pax.as_ref().and_then(|p| p.linkpath.clone()),
                    ext.long_link,
                    || cstr(&raw[field::LINKNAME]).to_vec(),
                )
                .map_err(&fail)?;
                if target.len() > NAME_LIMIT {
                    return Err(fail(TarProblem::NameTooLong {
                        what: "link target",
                        len: target.len(),
                        limit: NAME_LIMIT,
                    }));
                }
                check_symlink(parts.len().saturating_sub(1), &target).map_err(&fail)?;
                if !parts.is_empty() {
                    self.symlinks.insert(key);
                }
                (self.visit)(&TarEntry {
                    name: &name,
                    kind: TarEntryKind::Symlink,
                    link: Some(&target),
                    size: 0,
                });
            }
            b'5' => (self.visit)(&TarEntry {
                name: &name,
                kind: TarEntryKind::Directory,
                link: None,
                size: 0,
            }),
            _ => {
                self.total = self.total.saturating_add(header_size);
                if self.total > self.max_unpacked {
                    return Err(fail(TarProblem::TooLarge {
                        limit: self.max_unpacked,
                    }));
                }
                (self.visit)(&TarEntry {
                    name: &name,
                    kind: TarEntryKind::File,
                    link: None,
                    size: header_size,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
