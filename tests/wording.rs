//! What a user reads when the fleet directory, its Git repository or the targeting flags are
//! wrong: the real binary against real Git repositories and plain directories. Every message
//! is asserted in full, so libgit2's `class=…; code=…`, OS error codes or a cause printed
//! twice cannot creep back in.

mod common;

use common::{TestFleet, flotilla, run};

/// A fleet whose hosts need nothing from the network: one managed file, no runtime.
fn offline_fleet() -> TestFleet {
    let f = TestFleet::new();
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/etc/motd\"\ncontent = \"hello\\n\"\n",
    );
    f.write("environments/prod.toml", "");
    std::fs::remove_file(f.path().join("runtimes/greeter.toml")).unwrap();
    f.host("hosts/a.toml", "web-01", "staging", "labels = { role = \"web\" }");
    f.host("hosts/a.toml", "web-02", "staging", "labels = { role = \"web\" }");
    f.host("hosts/a.toml", "db-01", "staging", "labels = { role = \"db\" }");
    f
}

/// The `error:` lines of stderr (notes left out).
fn errors(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error: ")).collect()
}

/// No libgit2 or OS noise, and one error line only.
#[track_caller]
fn assert_one_plain_error(stderr: &str, expected: &str) {
    assert_eq!(errors(stderr), [expected], "stderr:\n{stderr}");
    for noise in ["class=", "code=", "revspec", "os error", "(-3)"] {
        assert!(!stderr.contains(noise), "`{noise}` reached the user:\n{stderr}");
    }
}

#[test]
fn an_unknown_revision_is_one_plain_sentence() {
    let f = offline_fleet();
    f.commit("initial");
    let expected = "error: unknown revision `nope`: no branch, tag or commit by that name \
                    (`git log --oneline`, `git branch -a` and `git tag` list the ones there are)";
    for cmd in [&["validate"][..], &["plan"], &["apply", "--auto-approve"]] {
        let r = run(flotilla().args(cmd).args(["--rev", "nope"]).arg(f.path()));
        assert_eq!(r.code, 1, "{cmd:?}: {}{}", r.stdout, r.stderr);
        assert_one_plain_error(&r.stderr, expected);
    }
    // Something that exists but is no commit.
    let r = run(flotilla()
        .args(["validate", "--rev", "HEAD^{tree}"])
        .arg(f.path()));
    assert_eq!(r.code, 1);
    assert_one_plain_error(
        &r.stderr,
        "error: `HEAD^{tree}` names a tree, not a commit: give a branch, a tag or a commit id",
    );
    let r = run(flotilla()
        .args(["validate", "--rev", "HEAD:flotilla.toml"])
        .arg(f.path()));
    assert_one_plain_error(
        &r.stderr,
        "error: `HEAD:flotilla.toml` names a blob (a file's content), not a commit: give a branch, a tag or a commit id",
    );
}

#[test]
fn a_missing_fleet_directory_names_the_os_error_once() {
    for cmd in ["validate", "plan", "status"] {
        let r = run(flotilla().args([cmd, "/no/such/fleet"]));
        assert_eq!(r.code, 1, "{cmd}: {}", r.stderr);
        assert_one_plain_error(
            &r.stderr,
            "error: cannot read the fleet directory /no/such/fleet: no such file or directory",
        );
    }
}

#[test]
fn a_directory_outside_git_is_called_that_by_every_command() {
    let f = offline_fleet();
    let note = format!(
        "note: {} is not inside a Git repository; plans of it have no revision",
        f.path().display()
    );
    // validate and plan read the files as they are, and say so.
    let r = run(flotilla().arg("validate").arg(f.path()));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stderr.trim_end(), note);
    let r = run(flotilla().arg("plan").arg(f.path()));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stderr.trim_end(), note);
    // apply refuses, for what it is (not "uncommitted changes"), with both ways out.
    let r = run(flotilla().args(["apply", "--auto-approve"]).arg(f.path()));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let canonical = f.path().canonicalize().unwrap();
    assert_one_plain_error(
        &r.stderr,
        &format!(
            "error: {} is not a Git repository (nor inside one), so there is no commit to apply and \
             record: run `git init && git add -A && git commit` there, or pass --allow-dirty to apply \
             the files as they are (audited as dirty)",
            canonical.display()
        ),
    );
    assert!(!r.stderr.contains("uncommitted"), "{}", r.stderr);
    assert!(!f.root("web-01").join("etc/motd").exists(), "nothing applied");
    // --rev has nothing to read.
    let r = run(flotilla().args(["plan", "--rev", "HEAD"]).arg(f.path()));
    assert_eq!(r.code, 1);
    assert_one_plain_error(
        &r.stderr,
        &format!(
            "error: {} is not a Git repository (nor inside one), so there is no revision to read \
             with --rev: run `git init` and commit the fleet, or leave out --rev to read the files \
             as they are",
            canonical.display()
        ),
    );
    // The way out the message names works.
    let store = tempfile::tempdir().unwrap();
    let r = common::apply(&f, store.path(), &["--allow-dirty"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        std::fs::read_to_string(f.root("web-01").join("etc/motd")).unwrap(),
        "hello\n"
    );
}

#[test]
fn a_repository_without_commits_says_so() {
    let f = offline_fleet();
    git2::Repository::init(f.path()).unwrap();
    let r = run(flotilla().args(["apply", "--auto-approve"]).arg(f.path()));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_one_plain_error(
        &r.stderr,
        &format!(
            "error: the Git repository at {} has no commits yet: commit the fleet \
             (`git add -A && git commit`), or pass --allow-dirty to apply the files as they are \
             (audited as dirty)",
            f.path().canonicalize().unwrap().display()
        ),
    );
    // Committed, then edited: the familiar message.
    f.commit("initial");
    f.write("environments/prod.toml", "description = \"edited\"\n");
    let r = run(flotilla().args(["apply", "--auto-approve"]).arg(f.path()));
    assert_eq!(r.code, 1);
    assert_one_plain_error(
        &r.stderr,
        "error: the fleet directory has uncommitted changes: commit them, or pass --allow-dirty \
         to apply the working tree as it is",
    );
}

#[test]
fn a_host_glob_matching_part_of_names_suggests_the_star() {
    let f = offline_fleet();
    f.commit("initial");
    let plan = |flags: &[&str]| run(flotilla().arg("plan").args(flags).arg(f.path()));
    let cases: [(&[&str], &str); 5] = [
        (
            &["--host", "web"],
            "--host web matches no host name (a glob matches whole host names, not parts of them); \
             to pick web-01, web-02, write --host 'web*'",
        ),
        (
            &["--host", "01"],
            "--host 01 matches no host name (a glob matches whole host names, not parts of them); \
             to pick db-01, web-01, write --host '*01*'",
        ),
        (
            &["--host", "web-1"],
            "--host web-1 matches no host name (a glob matches whole host names, not parts of them); \
             did you mean `web-01`?",
        ),
        (&["--label", "role=cache"], "no host has the label role=cache"),
        (
            &["--host", "web-01", "--exclude", "web*"],
            "--exclude left out every host the other flags picked",
        ),
    ];
    for (flags, why) in cases {
        let r = plan(flags);
        assert_eq!(r.code, 1, "{flags:?}: {}{}", r.stdout, r.stderr);
        assert_one_plain_error(
            &r.stderr,
            &format!("error: no host matches the targeting flags: {why}"),
        );
    }
    // The suggestion is right: it picks the hosts it names.
    let r = plan(&["--host", "web*"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("web-01") && r.stdout.contains("web-02"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("db-01"), "{}", r.stdout);
}
