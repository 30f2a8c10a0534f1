//! A hostile host against the controller (DESIGN §1: "its output is bounded in size and
//! parsed, never executed"), with real processes on the local transport.

mod common;

use std::os::unix::fs::FileTypeExt as _;

use common::{apply, flotilla, run, signed_fleet};

#[test]
fn a_host_that_floods_its_output_is_failed_not_buffered() {
    let (f, _keys) = signed_fleet("");
    f.host("hosts/a.toml", "h1", "staging", "");
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("one host");
    let store = tempfile::tempdir().unwrap();
    assert_eq!(apply(&f, store.path(), &[]).code, 0);
    // The host's `readlink` (run by the probe for `current`) prints 100 MB.
    let evil = tempfile::tempdir().unwrap();
    let readlink = evil.path().join("readlink");
    std::fs::write(
        &readlink,
        "#!/bin/sh\nhead -c 100000000 /dev/zero | tr '\\000' a\n",
    )
    .unwrap();
    common::set_mode(&readlink, 0o755);
    let path = format!(
        "{}:{}",
        evil.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = std::time::Instant::now();
    let r = run(flotilla().env("PATH", path).arg("plan").arg(f.path()));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("wrote more than") || r.stderr.contains("wrote more than"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert!(started.elapsed().as_secs() < 30);
}

#[test]
fn setuid_and_setgid_modes_stick_and_the_next_plan_has_no_changes() {
    let (f, _keys) = signed_fleet("");
    f.host("hosts/a.toml", "h1", "staging", "");
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/usr/local/bin/tool\"\ncontent = \"#!/bin/sh\\n\"\nmode = \"6755\"\nowner = \"root\"\ngroup = \"root\"\n",
    );
    f.commit("a setuid file");
    let store = tempfile::tempdir().unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(f.root("h1").join("usr/local/bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o6755, "{mode:o}");
    let r = run(flotilla().arg("plan").arg(f.path()));
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
}

#[test]
fn a_fifo_at_a_managed_path_fails_the_host_instead_of_jamming_its_lock() {
    let (f, _keys) = signed_fleet("");
    f.host("hosts/a.toml", "h1", "staging", "");
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/etc/app.conf\"\ncontent = \"x = 1\\n\"\n",
    );
    f.commit("a file");
    let etc = f.root("h1").join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(etc.join("app.conf"))
        .status()
        .unwrap();
    assert!(st.success());
    let store = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let r = apply(&f, store.path(), &[]);
    assert!(started.elapsed().as_secs() < 60, "did not hang");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("regular files only"), "{}", r.stderr);
    assert!(
        std::fs::symlink_metadata(etc.join("app.conf"))
            .unwrap()
            .file_type()
            .is_fifo(),
        "left as it was"
    );
}

#[test]
fn a_symlinked_parent_directory_is_never_followed_to_read_or_write() {
    let (f, _keys) = signed_fleet("");
    f.host("hosts/a.toml", "h1", "staging", "");
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/home/alice/.ssh/authorized_keys\"\ncontent = \"ssh-ed25519 AAAA deploy\\n\"\n",
    );
    f.commit("a file in a user's directory");
    let store = tempfile::tempdir().unwrap();
    assert_eq!(
        apply(&f, store.path(), &[]).code,
        0,
        "managed once, in a real directory"
    );
    // Alice swaps her .ssh for a link to root's; the manifests then change the file.
    let root = f.root("h1");
    let victim = root.join("root/.ssh");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("authorized_keys"), "root's own key\n").unwrap();
    std::fs::remove_dir_all(root.join("home/alice/.ssh")).unwrap();
    std::os::unix::fs::symlink(&victim, root.join("home/alice/.ssh")).unwrap();
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/home/alice/.ssh/authorized_keys\"\ncontent = \"ssh-ed25519 BBBB deploy\\n\"\n",
    );
    f.commit("a new key");
    let p = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .arg("plan")
        .arg(f.path()));
    assert!(
        !p.stdout.contains("root's own key"),
        "the plan never shows root's file: {}",
        p.stdout
    );
    assert!(p.stdout.contains("/home/alice/.ssh"), "{}", p.stdout);
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("/home/alice/.ssh is a symlink"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(victim.join("authorized_keys")).unwrap(),
        "root's own key\n",
        "root's file untouched"
    );
}

/// Every file under `dir`, concatenated (the store: audit log, rollouts, caches).
fn all_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn hook_output_reaches_the_terminal_and_audit_log_only_as_a_bounded_tail() {
    // The hook prints a secret first, then a lot, then a 10 KB line, and fails.
    let (f, _keys) = signed_fleet(
        "[hooks]\nactivate = '''\necho SECRET=s3cr3t-early\ni=0\nwhile [ $i -lt 40 ]; do echo progress $i; i=$((i+1)); done\nhead -c 10000 /dev/zero | tr '\\0' x\necho\nexit 1\n'''\n",
    );
    f.host("hosts/a.toml", "h1", "staging", "");
    f.write("environments/staging.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.commit("a noisy hook");
    let store = tempfile::tempdir().unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let shown = format!("{}{}", r.stdout, r.stderr);
    assert!(shown.contains("activate hook of greeter 1.0.0 failed"), "{shown}");
    assert!(shown.contains("xxxx"), "the tail is shown: {shown}");
    let audit = all_text(store.path());
    for (what, text) in [("terminal", &shown), ("store", &audit)] {
        assert!(!text.contains("s3cr3t-early"), "{what}: {text}");
        assert!(
            !text.contains(&"x".repeat(4097)),
            "{what}: at most 4 KiB of a host's log"
        );
    }
}

#[test]
fn a_failing_on_change_of_a_sensitive_file_shows_none_of_its_output() {
    let (f, _keys) = signed_fleet("");
    f.host("hosts/a.toml", "h1", "staging", "");
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/etc/app.secret\"\ncontent = \"token = 1\\n\"\nsensitive = true\non_change = \"echo password=hunter2; exit 3\"\n",
    );
    f.commit("a sensitive file");
    let store = tempfile::tempdir().unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let shown = format!("{}{}", r.stdout, r.stderr);
    assert!(shown.contains("output not shown: sensitive"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        !all_text(store.path()).contains("hunter2"),
        "the store never holds it"
    );
}
