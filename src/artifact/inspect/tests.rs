//! Unit tests of the header readers: symlink targets, names, pax keywords and records, numeric
//! fields, component limits, format detection.

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
fn numeric_fields_are_read_strictly() {
    assert_eq!(strict_octal(b"0000644\0"), Some(0o644));
    assert_eq!(strict_octal(b"  644 \0\0"), Some(0o644));
    assert_eq!(strict_octal(b"00000001000"), Some(0o1000));
    assert_eq!(strict_octal(b"+0001000\0"), None);
    assert_eq!(strict_octal(b"12 34\0"), None);
    assert_eq!(strict_octal(b"0009\0"), None);
    assert_eq!(strict_octal(b"        "), None);
    assert_eq!(strict_octal(b"\0\0\0\0"), None);
    let mut big = [0u8; 12];
    big[0] = 0x80;
    big[4..].copy_from_slice(&(10u64 << 30).to_be_bytes());
    assert_eq!(strict_size(&big), Some(10 << 30));
    big[0] = 0xff;
    assert_eq!(strict_size(&big), None);
}

#[test]
fn pax_records_are_read_by_length() {
    assert_eq!(
        pax_records(b"12 path=a\nb\n"),
        Ok(vec![(&b"path"[..], &b"a\nb"[..])])
    );
    assert!(pax_records(b"+12 path=ab\n").is_err());
    assert!(pax_records(b"13 path=abc\n").is_err());
    assert!(pax_records(b"11 path=abc\n").is_err());
    assert!(pax_records(b"5 =a\n").is_err());
    assert!(pax_records(b"12 path=ab\n\0").is_err());
}

#[test]
fn component_count_is_bounded() {
    let at = vec!["c"; COMPONENT_LIMIT].join("/");
    assert_eq!(components(at.as_bytes()).map(|p| p.len()), Ok(COMPONENT_LIMIT));
    let over = format!("{at}/c");
    assert_eq!(
        components(over.as_bytes()),
        Err(TarProblem::TooManyComponents {
            limit: COMPONENT_LIMIT
        })
    );
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
