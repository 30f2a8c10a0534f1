//! Reading the probe's output: length-prefixed records, so nothing a host returns can be
//! taken for structure, and `df`'s lines.

use super::{FreeSpace, Observation, ObservedFile};
use crate::hoststate::HostState;
use crate::manifest::model::HostPath;

/// Reads the probe's records. `paths` are the file requests, in the order they were sent.
pub fn parse(out: &[u8], paths: &[&HostPath]) -> Result<Observation, String> {
    let mut r = Reader { buf: out, pos: 0 };
    if r.line()? != b"flotilla-probe 1" {
        return Err("it does not start with the probe header (is `sh` a POSIX shell?)".into());
    }
    let mut obs = Observation::default();
    let mut current_runtime: Option<String> = None;
    let mut file_index = 0usize;
    let mut last_file: Option<HostPath> = None;
    loop {
        let line = r.line()?;
        if line == b"flotilla-probe end" {
            break;
        }
        let line = std::str::from_utf8(line).map_err(|_| "a record header is not text")?;
        let (tag, len) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("unexpected line {line:?}"))?;
        let len: usize = len.parse().map_err(|_| format!("bad length in {line:?}"))?;
        let payload = r.payload(len)?;
        let text = || String::from_utf8_lossy(payload).into_owned();
        match tag {
            "clock" => obs.clock = text().trim().parse().ok(),
            "missing" => obs.missing_tools.push(text()),
            "pipes" => obs.large_pipes = payload == b"perl",
            "state" => {
                obs.state_sha256 = Some(crate::resolve::sha256_hex(payload));
                obs.state_raw = Some(std::sync::Arc::from(payload));
                match HostState::parse(payload) {
                    Ok(s) => obs.state = Some(s),
                    Err(e) => obs.state_error = Some(e),
                }
            }
            "df" => obs.free_space = parse_df(payload),
            "usage" => obs.usage = super::usage::parse(payload),
            "state-too-large" => {
                obs.state_error = Some(format!("state.json is {} bytes, too large to read", text()));
            }
            "runtime" => {
                let name = text();
                current_runtime = crate::names::check_name(&name).is_ok().then(|| name.clone());
                if let Some(n) = &current_runtime {
                    obs.runtimes.entry(n.clone()).or_default();
                }
            }
            "current" | "version" => {
                let value = text();
                if let Some(rt) = current_runtime.as_ref().and_then(|n| obs.runtimes.get_mut(n)) {
                    if crate::names::check_name(&value).is_ok() {
                        if tag == "current" {
                            rt.current = Some(value);
                        } else {
                            rt.versions.insert(value);
                        }
                    } else if tag == "current" {
                        rt.current = Some(String::from("(invalid link)"));
                    }
                }
            }
            "file" | "file-missing" | "file-other" => {
                let path = *paths.get(file_index).ok_or("more file records than requests")?;
                file_index += 1;
                let observed = match tag {
                    "file-missing" => ObservedFile::Missing,
                    "file-other" => ObservedFile::Other {
                        what: crate::text::sanitize(&text()),
                    },
                    _ => parse_file(&text())?,
                };
                obs.files.insert(path.clone(), observed);
                last_file = Some(path.clone());
            }
            "key" => {
                let path = last_file.as_ref().ok_or("key without a file record")?;
                // Only what a stat prints: digits, colons and the ctime's dot.
                let key = text();
                if key.len() <= 128 && key.bytes().all(|b| b.is_ascii_digit() || b == b':' || b == b'.') {
                    obs.file_keys.insert(path.clone(), key);
                }
            }
            "content" => {
                let path = last_file.as_ref().ok_or("content without a file record")?;
                // Kept only if it is what was hashed: a file that changed between the two reads
                // (or a FIFO swapped in, which the probe pads with zeros) shows no diff.
                if let Some(ObservedFile::Regular { content, sha256, .. }) = obs.files.get_mut(path)
                    && crate::resolve::sha256_hex(payload) == *sha256
                {
                    *content = Some(payload.to_vec());
                }
            }
            _ => return Err(format!("unknown record `{tag}`")),
        }
    }
    if file_index != paths.len() {
        return Err(format!("{} file requests but {file_index} answers", paths.len()));
    }
    Ok(obs)
}

/// A `file` record: "SHA256 MODE OWNER GROUP SIZE". Owner and group are the host's names, and
/// a group may hold a space (an AD group such as "domain users"): the owner is the word after
/// the mode, the group the rest up to the size (the probe reports an owner whose name has a
/// space as "?"). A name Flotilla could not have set is unknown
/// (`None`), never an error that would cost the host its whole observation.
fn parse_file(fields: &str) -> Result<ObservedFile, String> {
    let bad = || format!("bad file record {fields:?}");
    let (sha, rest) = fields.split_once(' ').ok_or_else(bad)?;
    let (mode, rest) = rest.split_once(' ').ok_or_else(bad)?;
    let (names, size) = rest.rsplit_once(' ').ok_or_else(bad)?;
    let (owner, group) = names.split_once(' ').ok_or_else(bad)?;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a file's sha256 could not be read".into());
    }
    let name = |s: &str| crate::names::check_name(s).is_ok().then(|| s.to_owned());
    Ok(ObservedFile::Regular {
        sha256: sha.to_owned(),
        mode: u32::from_str_radix(mode, 8).ok(),
        owner: name(owner),
        group: name(group),
        size: size.parse().unwrap_or(0),
        content: None,
    })
}

/// `df -Pk A B`'s output: a header, then one line per directory ("device blocks used
/// available capacity% mount point"; device and mount point may hold spaces). Anything else —
/// a missing or failed `df`, a line too many or too few, a number that is not one — is
/// unknown, never an error: free space only ever adds a warning.
pub fn parse_df(out: &[u8]) -> Option<FreeSpace> {
    if out.len() > 8192 {
        return None;
    }
    let text = std::str::from_utf8(out).ok()?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    lines.next()?; // the header
    let (rt, st) = (df_line(lines.next()?)?, df_line(lines.next()?)?);
    if lines.next().is_some() {
        return None;
    }
    Some(FreeSpace {
        runtimes: rt.0,
        state: st.0,
        shared: rt.1 == st.1,
        runtimes_used_percent: rt.2,
    })
}

/// One `df -P` line: bytes available, the filesystem's identity (device and mount point) and
/// how full it is (capacity, `None` for "-").
fn df_line(line: &str) -> Option<(u64, (String, String), Option<u8>)> {
    let t: Vec<&str> = line.split_whitespace().collect();
    let num = |s: &str| s.parse::<u64>().ok();
    let count = |s: &str| s == "-" || num(s).is_some();
    let i = (1..t.len().saturating_sub(4)).find(|&i| {
        count(t[i])
            && count(t[i + 1])
            && num(t[i + 2]).is_some()
            && (t[i + 3] == "-" || t[i + 3].strip_suffix('%').is_some_and(|p| num(p).is_some()))
    })?;
    let available = num(t[i + 2])?.checked_mul(1024)?;
    let used = t[i + 3]
        .strip_suffix('%')
        .and_then(|p| p.parse::<u8>().ok())
        .filter(|p| *p <= 100);
    Some((available, (t[..i].join(" "), t[i + 4..].join(" ")), used))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn line(&mut self) -> Result<&'a [u8], String> {
        let rest = &self.buf[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("the output ended early")?;
        if end > 4096 {
            return Err("a record header is too long".into());
        }
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn payload(&mut self, len: usize) -> Result<&'a [u8], String> {
        let rest = &self.buf[self.pos..];
        if rest.len() < len + 1 || rest[len] != b'\n' {
            return Err("a record is shorter than its length".into());
        }
        self.pos += len + 1;
        Ok(&rest[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_name_with_a_space_costs_the_group_not_the_host() {
        let sha = "a".repeat(64);
        match parse_file(&format!("{sha} 644 alice domain users 12")) {
            Ok(ObservedFile::Regular {
                owner,
                group,
                size,
                mode,
                ..
            }) => {
                assert_eq!(
                    (owner.as_deref(), group, size, mode),
                    (Some("alice"), None, 12, Some(0o644))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_file(&format!("{sha} 644 root root 7")),
            Ok(ObservedFile::Regular { size: 7, .. })
        ));
        assert!(
            parse_file(&format!("{sha} 644 root 7")).is_err(),
            "a name is missing"
        );
    }

    #[test]
    fn content_is_kept_only_when_it_is_what_was_hashed() {
        let path = HostPath::new("/etc/app.conf").unwrap();
        let probe = |content: &str| {
            let sha = crate::resolve::sha256_hex(b"x = 1\n");
            let file = format!("{sha} 644 root root 6");
            format!(
                "flotilla-probe 1\nfile {}\n{file}\ncontent {}\n{content}\nflotilla-probe end\n",
                file.len(),
                content.len()
            )
        };
        let content_of = |out: String| match parse(out.as_bytes(), &[&path]).unwrap().files.remove(&path) {
            Some(ObservedFile::Regular { content, .. }) => content,
            other => panic!("{other:?}"),
        };
        assert_eq!(content_of(probe("x = 1\n")).as_deref(), Some(&b"x = 1\n"[..]));
        // Changed between the hash and the read, or the zeros a FIFO swapped in is padded with.
        assert_eq!(content_of(probe("x = 2\n")), None);
        assert_eq!(content_of(probe("\0\0\0\0\0\0")), None);
    }

    const HEADER: &str = "Filesystem     1024-blocks    Used Available Capacity Mounted on\n";

    #[test]
    fn df_lines_give_bytes_available_and_whether_the_filesystem_is_shared() {
        let two = format!("{HEADER}tmpfs 40960 1024 39936 3% /srv/my root\n/dev/sda1 1000 - 500 50% /\n");
        let fs = parse_df(two.as_bytes()).unwrap();
        assert_eq!(fs.runtimes, 39936 * 1024);
        assert_eq!(fs.state, 500 * 1024);
        assert!(!fs.shared);
        let one = format!("{HEADER}my dev 10 2 8 20% /\nmy dev 10 2 8 20% /\n");
        assert_eq!(
            parse_df(one.as_bytes()),
            Some(FreeSpace {
                runtimes: 8192,
                state: 8192,
                shared: true,
                runtimes_used_percent: Some(20),
            })
        );
    }

    #[test]
    fn garbage_from_a_host_is_unknown_free_space_not_an_error() {
        let huge = format!("{HEADER}d 1 1 {} 1% /\nd 1 1 1 1% /\n", u64::MAX);
        for bad in [
            "",
            HEADER,
            "df: /x: No such file or directory\n",
            &format!("{HEADER}d 1 1 1 1% /\n"),
            &format!("{HEADER}d 1 1 1 1% /\nd 1 1 1 1% /\nd 1 1 1 1% /\n"),
            &format!("{HEADER}d x 1 1 1% /\nd 1 1 1 1% /\n"),
            &format!("{HEADER}d 1 1 -5 1% /\nd 1 1 1 1% /\n"),
            &huge,
            &"x".repeat(10_000),
        ] {
            assert_eq!(parse_df(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_df(&[0xff, 0xfe, b'\n']), None);
        // A probe that reports garbage free space is still a good observation.
        let out = b"flotilla-probe 1\ndf 3\n1 2\nflotilla-probe end\n";
        let obs = parse(out, &[]).unwrap();
        assert_eq!(obs.free_space, None);
    }

    #[test]
    fn large_pipes_only_when_the_probe_names_the_tool() {
        let parsed = |records: &str| {
            parse(
                format!("flotilla-probe 1\n{records}flotilla-probe end\n").as_bytes(),
                &[],
            )
            .unwrap()
            .large_pipes
        };
        assert!(parsed("pipes 4\nperl\n"));
        assert!(!parsed(""));
        assert!(!parsed("pipes 6\npython\n"), "a tool launch.sh does not use");
    }
}
