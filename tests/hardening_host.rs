//! A hostile host against the controller (DESIGN §1: "its output is bounded in size and
//! parsed, never executed"), with real processes on the local transport.

mod common;

use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::fs::OpenOptionsExt as _;

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

/// `dir` first on the controller's PATH, which the local transport hands to the host scripts:
/// a stand-in command there runs in place of the host's own.
fn path_with(dir: &std::path::Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

/// An executable shell script `name` in `dir`.
fn stand_in(dir: &std::path::Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    common::set_mode(&p, 0o755);
}

fn is_root() -> bool {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// `command -v NAME`: the host's own command a stand-in wraps.
fn real(name: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v \"$1\"", "sh", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_temporary_file_swapped_for_a_link_never_passes_its_mode_or_owner_on() {
    let test = "a_temporary_file_swapped_for_a_link_never_passes_its_mode_or_owner_on";
    if !is_root() {
        return common::skip(test, "a directory owned by another user needs root");
    }
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let (f, _keys) = signed_fleet("");
    f.host("hosts/a.toml", "h1", "staging", "");
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/home/alice/app.conf\"\ncontent = \"x = 1\\n\"\nmode = \"0666\"\nowner = \"nobody\"\n",
    );
    f.commit("a file in a user's directory");
    // Alice (uid 65534 here) owns her home directory; root's secret is elsewhere.
    let home = f.root("h1").join("home/alice");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let secret = tempfile::tempdir().unwrap();
    let victim = secret.path().join("shadow");
    std::fs::write(&victim, "root:secret\n").unwrap();
    common::set_mode(&victim, 0o600);
    // Alice wins the race every time: the moment Flotilla's copy lands at the temporary name
    // in her directory, she (setpriv: as uid 65534) swaps it for a link to the victim.
    let bin = tempfile::tempdir().unwrap();
    stand_in(
        bin.path(),
        "cp",
        &format!(
            "#!/bin/sh\n{} \"$@\" || exit\nfor last; do :; done\ncase $last in\n  */alice/app.conf.flotilla-undo | */alice/app.conf.flotilla-restore) ;;\n  */alice/app.conf.flotilla-*)\n    setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'rm -f \"$1\" && ln -s \"$2\" \"$1\"' swap \"$last\" '{}' ;;\nesac\n",
            real("cp"),
            victim.display()
        ),
    );
    let store = tempfile::tempdir().unwrap();
    let r = run(flotilla()
        .env("PATH", path_with(bin.path()))
        .arg("--state-dir")
        .arg(store.path())
        .args(["apply", "--auto-approve"])
        .arg(f.path()));
    let meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "the victim's mode is untouched: {}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "the victim's owner is untouched"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:secret\n");
    assert!(
        std::fs::symlink_metadata(home.join("app.conf"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "what lands at the managed path is Alice's link, which she could have put there anyway"
    );
}

#[test]
fn a_chown_whose_name_lookup_hangs_fails_the_host_within_command_timeout() {
    let (f, _keys) = signed_fleet("");
    f.host("hosts/a.toml", "h1", "staging", "command_timeout = \"2s\"");
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/etc/app.conf\"\ncontent = \"x = 1\\n\"\nowner = \"root\"\ngroup = \"root\"\n",
    );
    f.commit("a file with an owner");
    // The host's user directory (LDAP, sssd) stops answering: chown waits for it. The stand-in
    // waits 30 s, then does nothing.
    let bin = tempfile::tempdir().unwrap();
    stand_in(bin.path(), "chown", "#!/bin/sh\nexec sleep 30\n");
    let store = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let r = run(flotilla()
        .env("PATH", path_with(bin.path()))
        .arg("--state-dir")
        .arg(store.path())
        .args(["apply", "--auto-approve"])
        .arg(f.path()));
    assert!(
        started.elapsed().as_secs() < 25,
        "bounded by command_timeout, not the lookup"
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("/etc/app.conf: chown root:root failed (did not finish within command_timeout, 2s)"),
        "{}",
        r.stderr
    );
    assert!(!f.root("h1").join("etc/app.conf").exists(), "rolled back");
    // With the directory answering again, a retry goes through: the lock was freed.
    let r = apply(&f, store.path(), &["--retry", "the user directory answers again"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

#[test]
fn a_fifo_swapped_in_while_the_probe_looks_at_a_file_neither_stalls_nor_is_read() {
    let test = "a_fifo_swapped_in_while_the_probe_looks_at_a_file_neither_stalls_nor_is_read";
    if !is_root() {
        return common::skip(test, "a directory owned by another user needs root");
    }
    let (f, _keys) = signed_fleet("");
    f.host("hosts/a.toml", "h1", "staging", "");
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/home/alice/app.conf\"\ncontent = \"x = 1\\n\"\n",
    );
    f.commit("a file in a user's directory");
    let home = f.root("h1").join("home/alice");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let store = tempfile::tempdir().unwrap();
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let plan = |path: Option<&str>| {
        let mut c = flotilla();
        if let Some(p) = path {
            c.env("PATH", p);
        }
        c.arg("--state-dir").arg(store.path()).arg("plan").arg(f.path());
        c
    };
    // A file in a user's directory is read the careful way (dd, no blocking open): unchanged,
    // it is no change; edited by Alice, its diff shows.
    let r = run(&mut plan(None));
    assert!(r.stdout.contains("No changes."), "{}{}", r.stdout, r.stderr);
    std::fs::write(home.join("app.conf"), "x = 2\n").unwrap();
    let r = run(&mut plan(None));
    assert!(r.stdout.contains("- x = 2"), "{}{}", r.stdout, r.stderr);

    // Alice hits the window every time: right after the probe's `stat` has seen a regular
    // file, she (setpriv: as uid 65534) puts a FIFO at its name. A blocking open of it waits
    // for a writer that never comes.
    let file = home.join("app.conf");
    let armed = f.root("h1").join("armed");
    std::fs::write(&armed, "").unwrap();
    let bin = tempfile::tempdir().unwrap();
    stand_in(
        bin.path(),
        "stat",
        &format!(
            "#!/bin/sh\n{} \"$@\"; rc=$?\nfor a; do\n  if [ \"$a\" = '{file}' ] && rm '{armed}' 2>/dev/null; then\n    setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'rm -f \"$1\" && mkfifo \"$1\"' swap '{file}'\n  fi\ndone\nexit $rc\n",
            real("stat"),
            file = file.display(),
            armed = armed.display()
        ),
    );
    let child = plan(Some(&path_with(bin.path())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // Stalled: a writer (opened without blocking) frees the probe, so that nothing is
            // left behind, and the test fails.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc_o_nonblock())
                .open(&file);
            let _ = rx.recv_timeout(std::time::Duration::from_secs(30));
            panic!("the probe stalled on the FIFO");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!armed.exists(), "the swap happened");
    assert!(
        std::fs::symlink_metadata(&file).unwrap().file_type().is_fifo(),
        "left as it was"
    );
    assert!(
        stdout.contains("/home/alice/app.conf")
            && stdout.contains("replaces a file that changed while it was read"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// O_NONBLOCK on Linux (no libc dependency for one constant).
fn libc_o_nonblock() -> i32 {
    0o4000
}
