//! The tarball inspection against hostile archives, built byte by byte (512-byte headers written
//! here: name, mode, size in octal, typeflag, checksum), gzip'ed like real artifacts, and
//! compared with what the real GNU `tar` (1.34) lists and unpacks. What the inspection accepts
//! must be exactly what `tar` will unpack on the hosts (DESIGN §1, §6.1).

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use flotilla::artifact::{
    ArtifactCache, ArtifactError, ArtifactRequest, DEFAULT_MAX_UNPACKED, NAME_LIMIT, RepoReader,
    TarEntryKind, TarProblem, TarballRefused, TrustPolicy, inspect_tarball,
};
use flotilla::manifest::model::ArtifactRef;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Archives byte by byte

/// A GNU-format header ("ustar  \0" magic): name, mode 0644 (0755 for directories), owner 0,
/// size in octal, typeflag, link name, and the checksum over all of it.
fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> [u8; 512] {
    header_with(name, typeflag, size, link, |_| {})
}

/// As [`header`], with `edit` changing raw fields before the checksum is computed.
fn header_with(
    name: &[u8],
    typeflag: u8,
    size: u64,
    link: &[u8],
    edit: impl FnOnce(&mut [u8; 512]),
) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    let mode: &[u8] = if typeflag == b'5' {
        b"0000755\0"
    } else {
        b"0000644\0"
    };
    h[100..108].copy_from_slice(mode);
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"15133546000\0");
    h[156] = typeflag;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..265].copy_from_slice(b"ustar  \0");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    edit(&mut h);
    checksum(&mut h);
    h
}

fn checksum(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Data padded to whole blocks.
fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(512) * 512, 0);
    v
}

/// A GNU long name ('L') or long link ('K') header with its data, as GNU tar writes it (the
/// name and one NUL).
fn long(typeflag: u8, value: &[u8]) -> Vec<u8> {
    let mut data = value.to_vec();
    data.push(0);
    let mut v = header(b"././@LongLink", typeflag, data.len() as u64, b"").to_vec();
    v.extend(padded(&data));
    v
}

/// A pax extended header ('x') with these records.
fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let body_len = 1 + k.len() + 1 + v.len() + 1;
        let mut len = body_len + 1;
        while format!("{len}").len() + body_len != len {
            len += 1;
        }
        data.extend_from_slice(format!("{len} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    let mut v = header(b"./PaxHeaders/x", b'x', data.len() as u64, b"").to_vec();
    v.extend(padded(&data));
    v
}

/// A regular file entry with its data.
fn file(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = header(name, b'0', data.len() as u64, b"").to_vec();
    v.extend(padded(data));
    v
}

/// The end-of-archive marker: two zero blocks.
fn end() -> Vec<u8> {
    vec![0u8; 1024]
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip finish")
}

/// An entry as the inspection saw it or `tar -tv` listed it: name, type letter (as in `ls -l`),
/// symlink target.
type Seen = (String, char, Option<String>);

fn inspect(tgz: &[u8]) -> Result<Vec<Seen>, TarballRefused> {
    let mut seen = Vec::new();
    inspect_tarball(tgz, DEFAULT_MAX_UNPACKED, &mut |e| {
        let kind = match e.kind {
            TarEntryKind::File => '-',
            TarEntryKind::Directory => 'd',
            TarEntryKind::Symlink => 'l',
        };
        seen.push((
            String::from_utf8_lossy(e.name).into_owned(),
            kind,
            e.link.map(|l| String::from_utf8_lossy(l).into_owned()),
        ));
    })?;
    Ok(seen)
}

fn refusal(tgz: &[u8]) -> TarballRefused {
    match inspect(tgz) {
        Err(r) => {
            eprintln!("{r}");
            r
        }
        Ok(seen) => panic!("hostile archive accepted: {seen:?}"),
    }
}

/// What GNU tar lists: `tar -tvzf`, parsed (names in these tests have no spaces).
fn gnu_list(tgz: &[u8]) -> Result<Vec<Seen>, String> {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("a.tar.gz");
    fs::write(&path, tgz).expect("write archive");
    let out = Command::new("tar")
        .arg("-tvzf")
        .arg(&path)
        .output()
        .expect("run tar -tvzf");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let t: Vec<&str> = line.split_whitespace().collect();
            let kind = t[0].chars().next().expect("mode column");
            let link = match t.get(6) {
                Some(&"->") => Some(t[7..].join(" ")),
                Some(&"link") => Some(t[8..].join(" ")),
                _ => None,
            };
            (t[5].to_owned(), kind, link)
        })
        .collect())
}

/// What GNU tar unpacks: the names `tar -xv` prints, as the hosts run it
/// (`--no-same-owner --no-same-permissions`), into a directory of its own.
fn gnu_extract(tgz: &[u8], root: &Path) -> (bool, Vec<String>) {
    let path = root.join("a.tar.gz");
    fs::write(&path, tgz).expect("write archive");
    let into = root.join("x");
    fs::create_dir(&into).expect("mkdir");
    let out = Command::new("tar")
        .args(["--no-same-owner", "--no-same-permissions", "-xvzf"])
        .arg(&path)
        .arg("-C")
        .arg(&into)
        .output()
        .expect("run tar -xvzf");
    let names = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    (out.status.success(), names)
}

// ---------------------------------------------------------------------------------------------
// Non-regular entries that carry data

/// A symlink out of the version directory, hidden as the "data" of another entry.
fn hidden() -> Vec<u8> {
    header(b"hidden", b'2', 0, b"/etc").to_vec()
}

#[test]
fn directory_with_a_size_hiding_an_escaping_symlink_is_refused() {
    let mut t = header(b"d/", b'5', 512, b"").to_vec();
    t.extend(hidden());
    t.extend(file(b"after", b"x"));
    t.extend(end());
    let tgz = gzip(&t);
    // GNU tar reads the directory's "data" as a header: it sees the symlink.
    let listed = gnu_list(&tgz).expect("GNU tar lists it");
    assert!(
        listed.iter().any(|(n, k, _)| n == "hidden" && *k == 'l'),
        "{listed:?}"
    );
    let r = refusal(&tgz);
    assert_eq!(r.entry.as_deref(), Some("d/"));
    assert_eq!(
        r.problem,
        TarProblem::NonRegularWithData {
            kind: "directory",
            size: 512
        }
    );
}

#[test]
fn every_non_regular_entry_with_a_size_is_refused() {
    for (typeflag, kind) in [
        (b'1', "hardlink"),
        (b'2', "symlink"),
        (b'3', "character device"),
        (b'4', "block device"),
        (b'5', "directory"),
        (b'6', "FIFO"),
        (b'V', "special"),
    ] {
        let mut t = header(b"x", typeflag, 512, b"target").to_vec();
        t.extend(hidden());
        t.extend(end());
        let tgz = gzip(&t);
        // GNU tar unpacks the hidden entry for each of these types (`tar -t` skips some).
        let tmp = TempDir::new().expect("temp dir");
        let (_, unpacked) = gnu_extract(&tgz, tmp.path());
        if typeflag != b'V' {
            assert!(
                unpacked.iter().any(|n| n == "hidden"),
                "type {}: {unpacked:?}",
                typeflag as char
            );
        }
        let r = refusal(&tgz);
        assert_eq!(
            r.problem,
            TarProblem::NonRegularWithData { kind, size: 512 },
            "type {}",
            typeflag as char
        );
    }
}

#[test]
fn regular_file_named_like_a_directory_is_refused() {
    for typeflag in [b'0', 0] {
        let mut t = header(b"d/", typeflag, 512, b"").to_vec();
        t.extend(hidden());
        t.extend(end());
        let tgz = gzip(&t);
        let tmp = TempDir::new().expect("temp dir");
        let (_, unpacked) = gnu_extract(&tgz, tmp.path());
        assert!(
            tmp.path().join("x/d").is_dir() && unpacked.iter().any(|n| n == "hidden"),
            "GNU tar makes a directory and reads the data as headers: {unpacked:?}"
        );
        assert_eq!(refusal(&tgz).problem, TarProblem::FileNamedAsDirectory);
    }
}

#[test]
fn empty_non_regular_entries_stay_accepted_and_match_gnu_tar() {
    let mut t = header(b"d/", b'5', 0, b"").to_vec();
    t.extend(header(b"d/l", b'2', 0, b"f"));
    t.extend(file(b"d/f", b"hello\n"));
    t.extend(end());
    let tgz = gzip(&t);
    let seen = inspect(&tgz).expect("accepted");
    assert_eq!(seen, gnu_list(&tgz).expect("GNU tar lists it"));
}

// ---------------------------------------------------------------------------------------------
// Header fields read as GNU tar reads them

#[test]
fn ustar_prefix_is_joined_as_gnu_tar_does_even_without_version_00() {
    // Magic "ustar\0" with version "  ": GNU tar joins prefix and name, the `tar` crate would not.
    let h = header_with(b"name", b'0', 0, b"", |h| {
        h[257..265].copy_from_slice(b"ustar\0  ");
        h[345..348].copy_from_slice(b"pre");
    });
    let mut t = h.to_vec();
    t.extend(end());
    let tgz = gzip(&t);
    let seen = inspect(&tgz).expect("accepted");
    assert_eq!(seen, vec![("pre/name".to_owned(), '-', None)]);
    assert_eq!(seen, gnu_list(&tgz).expect("GNU tar lists it"));
}

#[test]
fn ustar_prefix_cannot_smuggle_dotdot_past_the_check() {
    let h = header_with(b"passwd", b'0', 0, b"", |h| {
        h[257..265].copy_from_slice(b"ustar\0  ");
        h[345..354].copy_from_slice(b"../../etc");
    });
    let mut t = h.to_vec();
    t.extend(end());
    let r = refusal(&gzip(&t));
    assert_eq!(r.problem, TarProblem::ParentDir);
    assert_eq!(r.entry.as_deref(), Some("../../etc/passwd"));
}

#[test]
fn size_fields_read_differently_by_readers_are_refused() {
    // "+..." is base-64 to GNU tar and octal to the `tar` crate; 0xff is a negative base-256.
    for field in [
        &b"+0000001000\0"[..],
        b"0000001000x\0",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\x00",
    ] {
        let h = header_with(b"f", b'0', 0, b"", |h| h[124..136].copy_from_slice(field));
        let mut t = h.to_vec();
        t.extend(padded(&[b'a'; 512]));
        t.extend(end());
        let r = refusal(&gzip(&t));
        assert!(
            matches!(
                r.problem,
                TarProblem::HeaderField { field: "size", .. } | TarProblem::NotTar { .. }
            ),
            "{r}"
        );
    }
}

#[test]
fn a_bad_checksum_is_refused_where_gnu_tar_would_skip_to_the_next_header() {
    let mut h = header(b"f", b'0', 512, b"");
    h[148..156].copy_from_slice(b"+0001234");
    let mut t = h.to_vec();
    t.extend(hidden());
    t.extend(end());
    let r = refusal(&gzip(&t));
    assert!(
        matches!(
            r.problem,
            TarProblem::HeaderField {
                field: "checksum",
                ..
            } | TarProblem::NotTar { .. }
        ),
        "{r}"
    );
}

// ---------------------------------------------------------------------------------------------
// Long names and pax headers

#[test]
fn gnu_long_name_and_long_link_are_read_as_gnu_tar_reads_them() {
    let dir = "d".repeat(150);
    let name = format!("{dir}/link");
    let target = format!("{}/file", "t".repeat(140));
    // GNU tar writes a directory's long name with its trailing slash.
    let mut t = long(b'L', format!("{dir}/").as_bytes());
    t.extend(header(dir.as_bytes(), b'5', 0, b""));
    t.extend(long(b'L', name.as_bytes()));
    t.extend(long(b'K', target.as_bytes()));
    t.extend(header(name.as_bytes(), b'2', 0, target.as_bytes()));
    t.extend(end());
    let tgz = gzip(&t);
    let seen = inspect(&tgz).expect("accepted");
    assert_eq!(
        seen,
        vec![
            (format!("{dir}/"), 'd', None),
            (name.clone(), 'l', Some(target.clone()))
        ]
    );
    assert_eq!(seen, gnu_list(&tgz).expect("GNU tar lists it"));
}

#[test]
fn pax_path_and_linkpath_are_read_as_gnu_tar_reads_them() {
    let mut t = pax(&[("path", b"real/name"), ("mtime", b"1767225600")]);
    t.extend(file(b"decoy", b"x"));
    t.extend(pax(&[("linkpath", b"name")]));
    t.extend(header(b"real/l", b'2', 0, b"decoy"));
    t.extend(end());
    let tgz = gzip(&t);
    let seen = inspect(&tgz).expect("accepted");
    assert_eq!(
        seen,
        vec![
            ("real/name".to_owned(), '-', None),
            ("real/l".to_owned(), 'l', Some("name".to_owned()))
        ]
    );
    assert_eq!(seen, gnu_list(&tgz).expect("GNU tar lists it"));
}

#[test]
fn pax_records_read_loosely_by_some_readers_are_refused() {
    for data in [
        &b"+16 path=evil\n"[..],
        b"16 path=evil\nX",
        b"99 path=x\n",
        b" 15 path=evil\n",
    ] {
        let mut t = header(b"./PaxHeaders/x", b'x', data.len() as u64, b"").to_vec();
        t.extend(padded(data));
        t.extend(file(b"f", b""));
        t.extend(end());
        let r = refusal(&gzip(&t));
        assert!(matches!(r.problem, TarProblem::PaxMalformed { .. }), "{r}");
    }
}

#[test]
fn pax_size_on_a_directory_is_refused() {
    let mut t = pax(&[("size", b"512")]);
    t.extend(header(b"d/", b'5', 512, b""));
    t.extend(hidden());
    t.extend(end());
    assert!(matches!(
        refusal(&gzip(&t)).problem,
        TarProblem::NonRegularWithData { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Memory and time do not depend on names

/// The artifact that took 1 GB and 25 s (debug build) before names were bounded: about 200
/// bytes of gzip holding a GNU long name of 32,768 components.
fn deep_name_artifact(components: usize) -> Vec<u8> {
    let mut name = b"a/".repeat(components - 1);
    name.push(b'a');
    let mut t = long(b'L', &name);
    t.extend(header(b"a", b'0', 0, b""));
    t.extend(end());
    gzip(&t)
}

#[test]
fn a_name_of_32k_components_is_refused_at_once() {
    let tgz = deep_name_artifact(32_768);
    assert!(tgz.len() < 300, "{} bytes", tgz.len());
    let t0 = Instant::now();
    let r = refusal(&tgz);
    assert!(t0.elapsed() < Duration::from_secs(1), "took {:?}", t0.elapsed());
    assert!(
        matches!(
            r.problem,
            TarProblem::ExtensionTooLarge {
                what: "GNU long name",
                ..
            }
        ),
        "{r}"
    );
}

#[test]
fn names_and_link_targets_are_bounded() {
    // The longest name within the limit is accepted; one byte more is refused.
    let name = format!("{}/f", "n".repeat(NAME_LIMIT - 2));
    let mut t = long(b'L', name.as_bytes());
    t.extend(file(b"f", b""));
    t.extend(end());
    let ok = inspect(&gzip(&t)).expect("a 4096-byte name is accepted");
    assert_eq!(ok[0].0.len(), NAME_LIMIT);

    let mut t = pax(&[("path", format!("{name}x").as_bytes())]);
    t.extend(file(b"f", b""));
    t.extend(end());
    assert_eq!(
        refusal(&gzip(&t)).problem,
        TarProblem::NameTooLong {
            what: "name",
            len: NAME_LIMIT + 1,
            limit: NAME_LIMIT
        }
    );

    let mut t = pax(&[("linkpath", "t".repeat(NAME_LIMIT + 1).as_bytes())]);
    t.extend(header(b"l", b'2', 0, b""));
    t.extend(end());
    assert!(matches!(
        refusal(&gzip(&t)).problem,
        TarProblem::NameTooLong {
            what: "link target",
            ..
        }
    ));
}

#[test]
fn names_with_too_many_components_are_refused() {
    let within = vec!["c"; flotilla::artifact::COMPONENT_LIMIT].join("/");
    let mut t = long(b'L', within.as_bytes());
    t.extend(file(b"f", b""));
    t.extend(end());
    inspect(&gzip(&t)).expect("the limit itself is accepted");

    let over = format!("{within}/c");
    let mut t = long(b'L', over.as_bytes());
    t.extend(file(b"f", b""));
    t.extend(end());
    assert!(matches!(
        refusal(&gzip(&t)).problem,
        TarProblem::TooManyComponents { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// After the end-of-archive marker

#[test]
fn entries_after_a_lone_zero_block_or_the_end_marker_are_refused() {
    for zeros in [512, 1024, 10240] {
        let mut t = file(b"f", b"x");
        t.extend(vec![0u8; zeros]);
        t.extend(hidden());
        t.extend(end());
        assert_eq!(refusal(&gzip(&t)).problem, TarProblem::TrailingData, "{zeros}");
    }
    // Padding to tar's record size is fine.
    let mut t = file(b"f", b"x");
    t.extend(vec![0u8; 10240]);
    inspect(&gzip(&t)).expect("zero padding is accepted");
}

#[test]
fn a_hidden_second_gzip_member_is_inspected_too() {
    let mut tgz = gzip(&[file(b"f", b"x"), end()].concat());
    let mut more = hidden();
    more.extend(end());
    tgz.extend(gzip(&more));
    assert_eq!(refusal(&tgz).problem, TarProblem::TrailingData);
}

#[test]
fn garbage_after_the_gzip_stream_is_refused() {
    let mut tgz = gzip(&[file(b"f", b"x"), end()].concat());
    tgz.extend_from_slice(&padded(&hidden()));
    assert!(matches!(
        refusal(&tgz).problem,
        TarProblem::Corrupt { .. } | TarProblem::TrailingData
    ));
}

// ---------------------------------------------------------------------------------------------
// Through `prepare`, as an operator sees it

struct OneFile(Vec<u8>);

impl RepoReader for OneFile {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send + '_>> {
        if path.ends_with(".minisig") {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(Box::new(&self.0[..]))
    }
}

#[test]
fn the_refusal_names_runtime_version_artifact_entry_and_fix() {
    let mut t = header(b"bin/", b'5', 512, b"").to_vec();
    t.extend(hidden());
    t.extend(end());
    let tgz = gzip(&t);
    let sha: String = Sha256::digest(&tgz).iter().map(|b| format!("{b:02x}")).collect();
    let tmp = TempDir::new().expect("temp dir");
    let artifact = ArtifactRef::Repo("artifacts/py.tar.gz".into());
    let signature = ArtifactRef::Repo("artifacts/py.tar.gz.minisig".into());
    let req = ArtifactRequest {
        runtime: "python",
        version: "3.11.9",
        artifact: &artifact,
        signature: &signature,
        sha256: &sha,
    };
    let trust = TrustPolicy::new(&[], false, None).expect("trust policy");
    let e = ArtifactCache::new(tmp.path().join("cache"))
        .prepare(&req, &OneFile(tgz), &trust, DEFAULT_MAX_UNPACKED)
        .expect_err("refused");
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, ArtifactError::Tarball { .. }));
    for part in [
        "runtime `python` version `3.11.9`",
        "artifacts/py.tar.gz",
        "tar entry `bin/`",
        "directory entry whose header gives a size of 512 bytes",
        "rebuild the archive",
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// Property: what the inspection accepts is what GNU tar lists and unpacks

#[derive(Debug, Clone)]
enum Gen {
    File { name: String, len: usize },
    Dir { name: String, size: u64 },
    Symlink { name: String, target: String, size: u64 },
    Hardlink { name: String, target: String },
    Fifo { name: String, size: u64 },
}

fn gen_name() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned),
        1 => Just("l".repeat(120)),
    ];
    (prop::collection::vec(part, 1..=3), any::<bool>()).prop_map(|(parts, slash)| {
        let mut s = parts.join("/");
        if slash {
            s.push('/');
        }
        s
    })
}

fn gen_target() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a".to_owned(),
        "b/c".to_owned(),
        "../a".to_owned(),
        "../../x".to_owned(),
        "/etc".to_owned(),
        ".".to_owned(),
        format!("{}/x", "t".repeat(110)),
    ])
}

/// Non-regular entries mostly carry no data; sometimes one block, which hides a header.
fn gen_size() -> impl Strategy<Value = u64> {
    prop_oneof![6 => Just(0u64), 1 => Just(512u64)]
}

fn gen_entry() -> impl Strategy<Value = Gen> {
    prop_oneof![
        5 => (gen_name(), 0usize..700).prop_map(|(name, len)| Gen::File { name, len }),
        3 => (gen_name(), gen_size()).prop_map(|(name, size)| Gen::Dir { name, size }),
        3 => (gen_name(), gen_target(), gen_size())
            .prop_map(|(name, target, size)| Gen::Symlink { name, target, size }),
        1 => (gen_name(), gen_target()).prop_map(|(name, target)| Gen::Hardlink { name, target }),
        1 => (gen_name(), gen_size()).prop_map(|(name, size)| Gen::Fifo { name, size }),
    ]
}

/// Writes the generated entries as GNU tar would (long names and targets through 'L' and 'K'
/// headers); the "data" of a non-regular entry is a header for a hidden escaping symlink.
fn build(entries: &[Gen]) -> Vec<u8> {
    let mut t = Vec::new();
    let mut put = |name: &str, typeflag: u8, size: u64, link: &str, data: Vec<u8>| {
        if name.len() > 100 {
            t.extend(long(b'L', name.as_bytes()));
        }
        if link.len() > 100 {
            t.extend(long(b'K', link.as_bytes()));
        }
        t.extend(header(name.as_bytes(), typeflag, size, link.as_bytes()));
        t.extend(padded(&data));
    };
    let smuggled = |size: u64| if size == 0 { Vec::new() } else { hidden() };
    for e in entries {
        match e {
            Gen::File { name, len } => put(name, b'0', *len as u64, "", vec![b'x'; *len]),
            Gen::Dir { name, size } => put(name, b'5', *size, "", smuggled(*size)),
            Gen::Symlink { name, target, size } => put(name, b'2', *size, target, smuggled(*size)),
            Gen::Hardlink { name, target } => put(name, b'1', 0, target, Vec::new()),
            Gen::Fifo { name, size } => put(name, b'6', *size, "", smuggled(*size)),
        }
    }
    t.extend(end());
    gzip(&t)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn accepted_archives_are_exactly_what_gnu_tar_lists_and_unpacks(
        entries in prop::collection::vec(gen_entry(), 1..6)
    ) {
        let tgz = build(&entries);
        if let Ok(seen) = inspect(&tgz) {
            let listed = gnu_list(&tgz).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&seen, &listed);
            let tmp = TempDir::new().expect("temp dir");
            let (_, unpacked) = gnu_extract(&tgz, tmp.path());
            let names: Vec<String> = seen.iter().map(|s| s.0.clone()).collect();
            prop_assert_eq!(&names, &unpacked);
            // Nothing lands beside the extraction directory.
            let mut beside: Vec<String> = fs::read_dir(tmp.path())
                .expect("read temp dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            beside.sort();
            prop_assert_eq!(beside, vec!["a.tar.gz".to_owned(), "x".to_owned()]);
        }
    }
}

/// The generator must reach both verdicts, or the property says nothing.
#[test]
fn the_generator_makes_both_accepted_and_refused_archives() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(gen_entry(), 1..6);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..200 {
        let entries = strategy.new_tree(&mut runner).expect("generate").current();
        match inspect(&build(&entries)) {
            Ok(_) => ok += 1,
            Err(_) => refused += 1,
        }
    }
    eprintln!("accepted {ok}, refused {refused}");
    assert!(ok >= 25 && refused >= 25, "accepted {ok}, refused {refused}");
}
