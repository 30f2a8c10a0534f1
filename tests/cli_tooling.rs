//! The CLI a newcomer meets: help with exit codes and examples, the version, completions, the
//! man page, usage errors, closed output pipes, and schemas that describe every key.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};

use clap::CommandFactory as _;
use common::{flotilla, run};

const COMMANDS: &[&str] = &[
    "validate",
    "store",
    "plan",
    "preview",
    "apply",
    "show",
    "history",
    "status",
    "watch",
    "pause",
    "resume",
    "schema",
    "init",
    "release",
    "completions",
    "man",
];

#[test]
fn every_command_has_exit_codes_and_two_examples_in_its_help() {
    // The list above is every command there is.
    let cli = flotilla::cli::Cli::command();
    let mut names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
    names.sort_unstable();
    let mut expected = COMMANDS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);

    for cmd in COMMANDS {
        for flag in ["--help", "-h"] {
            let r = run(flotilla().args([cmd, flag]));
            assert_eq!(r.code, 0, "{cmd} {flag}: {}", r.stderr);
            assert!(
                r.stdout.contains("Exit codes:\n  0  "),
                "{cmd} {flag}:\n{}",
                r.stdout
            );
            let examples = r
                .stdout
                .split("Examples:\n")
                .nth(1)
                .unwrap_or_else(|| panic!("{cmd}: no examples"));
            let count = examples
                .lines()
                .filter(|l| l.starts_with(&format!("  flotilla {cmd}")))
                .count();
            assert!(count >= 2, "{cmd} {flag}: {count} examples:\n{examples}");
        }
    }
    let r = run(flotilla().args(["plan", "--help"]));
    assert!(
        r.stdout
            .contains("  2  there are changes (only with --detailed-exitcode)"),
        "{}",
        r.stdout
    );
    let r = run(flotilla().args(["apply", "--help"]));
    assert!(
        r.stdout.contains("  3  nothing failed, but changes wait"),
        "{}",
        r.stdout
    );
}

#[test]
fn options_are_grouped_and_each_command_takes_only_the_flags_it_uses() {
    let r = run(flotilla().args(["plan", "--help"]));
    let out = &r.stdout;
    let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("`{s}` missing:\n{out}"));
    // Command options first, then targeting, connection and global options.
    assert!(at("Options:\n") < at("Targeting"));
    assert!(at("Targeting") < at("Connection options:\n"));
    assert!(at("Connection options:\n") < at("Global options:\n"));
    assert!(at("--detailed-exitcode") < at("Targeting"));
    assert!(at("--identity-file") > at("Connection options:\n"));
    assert!(at("--state-dir") > at("Global options:\n"));

    for (cmd, absent) in [
        (
            "validate",
            &["--identity-file", "--env <", "--detailed-exitcode"][..],
        ),
        ("show", &["--known-hosts", "--env <"][..]),
        ("schema", &["--identity-file", "--env <", "--rev"][..]),
        ("init", &["--identity-file", "--env <", "--rev"][..]),
        ("release", &["--identity-file", "--env <", "--rev"][..]),
        ("completions", &["--identity-file", "--env <"][..]),
    ] {
        let r = run(flotilla().args([cmd, "--help"]));
        for flag in absent {
            assert!(
                !r.stdout.contains(flag),
                "{cmd} --help shows {flag}:\n{}",
                r.stdout
            );
        }
    }
    // The connection flags work after the command, where they now live.
    let r = run(flotilla().args(["plan", "--identity-file", "/nonexistent", "/no/such/fleet"]));
    assert_eq!(r.code, 1);
    assert!(!r.stderr.contains("unexpected argument"), "{}", r.stderr);
}

#[test]
fn every_argument_and_command_is_described() {
    fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        if cmd.get_about().is_none() && !path.is_empty() {
            missing.push(format!("command `{path}`"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("`{path}` argument `{id}`"));
            }
        }
        for sub in cmd.get_subcommands() {
            check(sub, format!("{path} {}", sub.get_name()).trim(), missing);
        }
    }
    let mut cli = flotilla::cli::Cli::command();
    cli.build();
    let mut missing = Vec::new();
    check(&cli, "", &mut missing);
    assert!(missing.is_empty(), "undescribed: {missing:#?}");
}

#[test]
fn version_names_the_commit() {
    let r = run(flotilla().arg("--version"));
    assert_eq!(r.code, 0);
    let line = r.stdout.trim();
    let commit = line
        .strip_prefix(&format!("flotilla {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{line}"
    );
    // Built from a Git checkout, it is a real commit of this repository.
    if commit != "unknown" {
        let repo = git2::Repository::discover(env!("CARGO_MANIFEST_DIR")).expect("built in git");
        assert!(
            repo.revparse_single(commit).is_ok(),
            "{commit} is not a commit here"
        );
    }
}

#[test]
fn usage_errors_exit_1_not_2() {
    for args in [
        &["no-such-command"][..],
        &["plan", "--no-such-flag"][..],
        &["plan", "--format", "xml"][..],
        &["release", "example"][..],
        &["completions", "tcsh"][..],
        &["--parallel", "0", "plan"][..],
        &[][..],
    ] {
        let r = run(flotilla().args(args));
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("Usage:") || r.stderr.contains("error:"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    assert_eq!(run(flotilla().arg("--help")).code, 0);
}

#[test]
fn completions_for_each_shell_mention_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let r = run(flotilla().args(["completions", shell]));
        assert_eq!(r.code, 0, "{shell}: {}", r.stderr);
        assert!(r.stdout.len() > 1000, "{shell}: {} bytes", r.stdout.len());
        for cmd in COMMANDS {
            assert!(r.stdout.contains(cmd), "{shell} completion lacks {cmd}");
        }
        assert!(r.stdout.contains("detailed-exitcode"), "{shell}: flags too");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("flotilla.bash");
    std::fs::write(&script, run(flotilla().args(["completions", "bash"])).stdout).unwrap();
    let out = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And it really completes: COMPREPLY for `flotilla rel<TAB>`.
    let probe = format!(
        "source {}; COMP_WORDS=(flotilla rel); COMP_CWORD=1; COMP_LINE='flotilla rel'; COMP_POINT=12; _flotilla flotilla rel flotilla; echo \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash").arg("-c").arg(probe).output().expect("bash");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("release"),
        "{:?}",
        out
    );
}

#[test]
fn man_page_documents_every_command() {
    let r = run(flotilla().arg("man"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(".TH flotilla 1"),
        "{}",
        &r.stdout[..200.min(r.stdout.len())]
    );
    for cmd in COMMANDS {
        assert!(
            r.stdout.contains(&format!("flotilla\\-{cmd}")) || r.stdout.contains(cmd),
            "man lacks {cmd}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let r = run(flotilla().args(["man", "--out-dir"]).arg(dir.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    for cmd in ["flotilla.1", "flotilla-plan.1", "flotilla-release.1"] {
        let page = std::fs::read_to_string(dir.path().join(cmd)).unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert!(page.contains(".TH"), "{cmd}");
    }
    let page = std::fs::read_to_string(dir.path().join("flotilla-plan.1")).unwrap();
    assert!(
        page.contains("Exit codes"),
        "the per-command page carries its exit codes"
    );
}

/// Runs `flotilla ARGS` with stdout a pipe whose reading end is closed before the command
/// writes anything; returns (exit code, stderr).
fn closed_pipe(args: &[&str], cwd: &std::path::Path) -> (i32, String) {
    let mut child = flotilla()
        .args(args)
        .current_dir(cwd)
        .env("XDG_STATE_HOME", cwd.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_closed_output_pipe_ends_every_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    let r = run(flotilla()
        .env("XDG_CONFIG_HOME", &cfg)
        .args(["init", "fleet"])
        .current_dir(dir.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let tarball = dir.path().join("fleet/artifacts/example-1.0.0.tar.gz");
    let key = cfg.join("flotilla/keys/fleet.key");
    let empty = dir.path().join("empty");
    let release_fleet = dir.path().join("fleet2");
    let r = run(flotilla()
        .env("XDG_CONFIG_HOME", &cfg)
        .arg("init")
        .arg(&release_fleet));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cases: Vec<Vec<String>> = vec![
        vec!["--help".into()],
        vec!["plan".into(), "--help".into()],
        vec!["--version".into()],
        vec!["plan".into(), "fleet".into()],
        vec!["plan".into(), "fleet".into(), "--format".into(), "json".into()],
        vec!["validate".into(), "fleet".into()],
        vec!["show".into(), "example".into(), "fleet".into()],
        vec!["status".into(), "fleet".into()],
        vec!["schema".into(), "--out-dir".into(), "out".into()],
        vec!["completions".into(), "bash".into()],
        vec!["man".into()],
        vec![
            "init".into(),
            empty.display().to_string(),
            "--secret-key".into(),
            cfg.join("k2").display().to_string(),
        ],
        vec![
            "release".into(),
            "example".into(),
            "9.9.9".into(),
            tarball.display().to_string(),
            release_fleet.display().to_string(),
            "--sign".into(),
            key.display().to_string(),
        ],
    ];
    for args in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = closed_pipe(&args, dir.path());
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert!(!stderr.contains("RUST_BACKTRACE"), "{args:?}: {stderr}");
        assert_ne!(code, 101, "{args:?}: {stderr}");
        assert!(code == 141 || code == 0, "{args:?}: exit {code}: {stderr}");
    }
    // Commands that work before they print end with 141, the shell's code for SIGPIPE.
    let (code, _) = closed_pipe(&["plan", "fleet"], dir.path());
    assert_eq!(code, 141);

    // Through a real shell pipeline too: `flotilla plan fleet | head -1`.
    let out = Command::new("sh")
        .arg("-c")
        .arg("\"$0\" plan fleet | head -c 0; \"$0\" --help | head -1 >/dev/null; \"$0\" schema --out-dir out | head -1 >/dev/null")
        .arg(env!("CARGO_BIN_EXE_flotilla"))
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .output()
        .expect("sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

#[test]
fn every_manifest_schema_key_has_a_description_and_every_optional_key_a_default() {
    fn walk(node: &serde_json::Value, at: &str, problems: &mut Vec<String>, count: &mut usize) {
        match node {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(props)) = map.get("properties") {
                    let required: Vec<&str> = map
                        .get("required")
                        .and_then(|r| r.as_array())
                        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
                        .unwrap_or_default();
                    for (key, prop) in props {
                        *count += 1;
                        let described = prop
                            .get("description")
                            .and_then(|d| d.as_str())
                            .is_some_and(|d| d.len() > 5);
                        if !described {
                            problems.push(format!("{at}.{key}: no description"));
                        }
                        if !required.contains(&key.as_str()) && prop.get("default").is_none() {
                            problems.push(format!("{at}.{key}: optional but no default"));
                        }
                    }
                }
                for (k, v) in map {
                    walk(v, &format!("{at}/{k}"), problems, count);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, at, problems, count)),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    let mut count = 0;
    for (name, text) in flotilla::schema::all() {
        // Output formats, not manifests: their keys are always present.
        if name == "plan.schema.json" || name == "preview.schema.json" {
            continue;
        }
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        walk(&schema, name, &mut problems, &mut count);
    }
    assert!(count > 60, "only {count} keys found");
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn quiet_apply_shows_no_progress_and_plain_progress_counts_each_wave() {
    let root = env!("CARGO_MANIFEST_DIR");
    let demo = tempfile::tempdir().unwrap();
    let copy = std::process::Command::new("cp")
        .args([
            "-r",
            &format!("{root}/manifests"),
            demo.path().join("fleet").to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(copy.success());
    let fleet = demo.path().join("fleet");
    let store = demo.path().join("store");
    let apply = |extra: &[&str]| {
        let mut c = common::flotilla();
        c.arg("--state-dir").arg(&store).args(extra);
        c.args(["apply", "--auto-approve", "--allow-dirty", "--env", "staging"])
            .arg(&fleet);
        common::run(&mut c)
    };
    let r = apply(&[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("[wave 1/2: 1/1 done]"), "{}", r.stderr);
    assert!(r.stderr.contains("[wave 2/2: 1/1 done]"), "{}", r.stderr);
    // Start over and apply quietly: the summary, and no progress lines.
    std::fs::remove_dir_all(&store).unwrap();
    for h in ["staging-web-01", "staging-worker-01"] {
        let root = fleet.join(".demo-hosts").join(h);
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::create_dir_all(&root).unwrap();
    }
    let r = apply(&["-q"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Apply complete: 2 applied"), "{}", r.stdout);
    assert!(
        !r.stderr.contains("applied 1 change"),
        "progress under -q: {}",
        r.stderr
    );
}
