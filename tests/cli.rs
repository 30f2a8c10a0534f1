//! The real `flotilla` binary against real fleets in real Git repositories.

mod common;

use common::{TestFleet, flotilla, run};

fn two_hosts() -> TestFleet {
    let f = TestFleet::new();
    f.host("hosts/staging.toml", "stg-01", "staging", "canary = true");
    f.host("hosts/prod/web.toml", "prod-01", "prod", "");
    f
}

#[test]
fn plan_of_fresh_hosts_reads_the_working_tree() {
    let f = two_hosts();
    f.commit("initial");
    let r = run(flotilla().arg("plan").arg(f.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("# host stg-01 (wave 1)"), "{}", r.stdout);
    assert!(
        r.stdout.contains("+ runtime \"greeter\": \"2.0.0\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("+ runtime \"greeter\": \"1.0.0\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("+ name = stg-01"),
        "template rendered per host: {}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with("Plan: 3 to add, 0 to change, 0 to destroy.\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stderr.contains("uncommitted"), "{}", r.stderr);
}

#[test]
fn plan_says_when_the_tree_has_uncommitted_changes() {
    let f = two_hosts();
    f.commit("initial");
    f.write("environments/prod.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    let r = run(flotilla().args(["plan", "--format", "json"]).arg(f.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("uncommitted changes"), "{}", r.stderr);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert!(plan["revision"].is_null(), "an uncommitted tree has no revision");
}

#[test]
fn plan_at_a_revision_ignores_the_working_tree() {
    let f = two_hosts();
    let first = f.commit("prod on 1.0.0");
    f.write("environments/prod.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    let second = f.commit("prod on 2.0.0");
    f.write("environments/prod.toml", "this is not toml [");

    let r = run(flotilla()
        .args(["plan", "--format", "json", "--rev", &first[..8]])
        .arg(f.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(plan["revision"], first.as_str());
    let prod = plan["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "prod-01")
        .unwrap()
        .clone();
    assert_eq!(prod["changes"][0]["after"], "1.0.0");

    let r = run(flotilla()
        .args(["plan", "--format", "json", "--rev", "HEAD"])
        .arg(f.path()));
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(plan["revision"], second.as_str());

    // The working tree itself is broken, and says so with a location.
    let r = run(flotilla().arg("validate").arg(f.path()));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--> environments/prod.toml:1:"), "{}", r.stderr);
}

#[test]
fn fleet_root_may_be_a_subdirectory_of_the_repository() {
    let f = TestFleet::new();
    // Move the fleet one level down and commit the repository around it.
    let outer = tempfile::tempdir().unwrap();
    let fleet = outer.path().join("manifests");
    std::fs::rename(f.path(), &fleet).unwrap();
    std::fs::create_dir_all(fleet.join("roots/h1")).unwrap();
    std::fs::create_dir_all(fleet.join("hosts")).unwrap();
    std::fs::write(
        fleet.join("hosts/h.toml"),
        "[[host]]\nname = \"h1\"\nenvironment = \"staging\"\nroot = \"roots/h1\"\n",
    )
    .unwrap();
    let repo = git2::Repository::init(outer.path()).unwrap();
    std::fs::write(outer.path().join(".gitignore"), "roots/\n").unwrap();
    let mut index = repo.index().unwrap();
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[]).unwrap();
    index.write().unwrap();

    let r = run(flotilla().current_dir(outer.path()).args(["plan", "manifests"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("# host h1"), "{}", r.stdout);
    let r = run(flotilla()
        .current_dir(outer.path())
        .args(["validate", "manifests", "--rev", "HEAD"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("The manifests are valid: fleet acme, 2 environments, 1 host, 1 runtime"),
        "{}",
        r.stdout
    );
}

#[test]
fn unknown_revision_and_missing_fleet_are_clear_errors() {
    let f = two_hosts();
    f.commit("initial");
    let r = run(flotilla().args(["plan", "--rev", "no-such-branch"]).arg(f.path()));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("unknown revision `no-such-branch`"),
        "{}",
        r.stderr
    );

    let empty = tempfile::tempdir().unwrap();
    let r = run(flotilla().arg("validate").arg(empty.path()));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no flotilla.toml here"), "{}", r.stderr);

    let r = run(flotilla().args(["validate", "/no/such/dir"]));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("/no/such/dir"), "{}", r.stderr);

    let r = run(flotilla().args(["validate", "--rev", "HEAD"]).arg(empty.path()));
    assert_eq!(r.code, 1);
}

#[test]
fn converged_hosts_give_no_changes_and_detailed_exitcode() {
    let f = two_hosts();
    f.commit("initial");
    let r = run(flotilla().args(["plan", "--detailed-exitcode"]).arg(f.path()));
    assert_eq!(r.code, 2, "changes -> 2: {}", r.stderr);

    f.converge(
        "stg-01",
        &[("greeter", "2.0.0")],
        &[("/etc/app.conf", "name = stg-01\nworkers = 8\n")],
    );
    f.converge("prod-01", &[("greeter", "1.0.0")], &[]);
    let r = run(flotilla().args(["plan", "--detailed-exitcode"]).arg(f.path()));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .ends_with("No changes. The fleet matches the manifests.\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn drift_is_marked_and_diffed() {
    let f = two_hosts();
    f.commit("initial");
    f.converge(
        "stg-01",
        &[("greeter", "2.0.0")],
        &[("/etc/app.conf", "name = stg-01\nworkers = 8\n")],
    );
    f.converge("prod-01", &[("greeter", "1.0.0")], &[]);
    // Someone edits the managed file by hand.
    std::fs::write(
        f.root("stg-01").join("etc/app.conf"),
        "name = stg-01\nworkers = 4\n",
    )
    .unwrap();
    // The diff needs the store that wrote state.json: only then is its list of managed
    // files trusted enough to print their old content (hardening item 1b(ii)).
    let store = common::converged_store();
    let r = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .arg("plan")
        .arg(f.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("~ file \"/etc/app.conf\" (changed outside Flotilla)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("      - workers = 4\n      + workers = 8\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{}",
        r.stdout
    );
}

#[test]
fn unmanaged_and_sensitive_file_content_never_reaches_the_plan() {
    let f = two_hosts();
    f.write(
        "environments/prod.toml",
        "[runtimes]\ngreeter = \"1.0.0\"\n\n[[file]]\npath = \"/etc/shadow\"\ncontent = \"root:x:1::\\n\"\n\n[[file]]\npath = \"/etc/token\"\ncontent = \"hunter2-new\\n\"\nsensitive = true\n",
    );
    f.commit("initial");
    let root = f.root("prod-01");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/shadow"), "root:SECRET-HASH:19000::\n").unwrap();
    f.converge(
        "prod-01",
        &[("greeter", "1.0.0")],
        &[("/etc/token", "hunter2-old\n")],
    );
    for format in ["text", "json", "markdown"] {
        let r = run(flotilla().args(["plan", "--format", format]).arg(f.path()));
        assert_eq!(r.code, 0, "{}", r.stderr);
        for secret in ["SECRET-HASH", "hunter2"] {
            assert!(
                !r.stdout.contains(secret),
                "{format} plan leaked {secret}: {}",
                r.stdout
            );
        }
        if format == "text" {
            assert!(
                r.stdout
                    .contains("~ file \"/etc/shadow\" (take over existing file"),
                "{}",
                r.stdout
            );
            assert!(r.stdout.contains("~ file \"/etc/token\""), "{}", r.stdout);
        }
    }
}

#[test]
fn an_unobservable_host_is_reported_and_the_rest_planned() {
    let f = two_hosts();
    f.commit("initial");
    std::fs::remove_dir(f.root("prod-01")).unwrap();
    let r = run(flotilla().arg("plan").arg(f.path()));
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("# host prod-01 could not be observed"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("root directory"), "{}", r.stdout);
    assert!(r.stdout.contains("# host stg-01 (wave 1)"), "{}", r.stdout);
    assert!(
        r.stdout.contains("Plan: 2 to add, 0 to change, 0 to destroy."),
        "{}",
        r.stdout
    );

    let r = run(flotilla()
        .args(["plan", "--skip-unreachable", "--format", "json"])
        .arg(f.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["summary"]["hosts_unreachable"], 1);
}

#[test]
fn targeting_flags_widen_within_and_narrow_across() {
    let f = TestFleet::new();
    f.host("hosts/a.toml", "web-01", "staging", "labels = { role = \"web\" }");
    f.host("hosts/a.toml", "web-02", "staging", "labels = { role = \"web\" }");
    f.host("hosts/a.toml", "db-01", "staging", "labels = { role = \"db\" }");
    f.host("hosts/a.toml", "web-03", "prod", "labels = { role = \"web\" }");
    f.commit("initial");
    let names = |args: &[&str]| -> Vec<String> {
        let r = run(flotilla()
            .arg("plan")
            .args(["--format", "json"])
            .args(args)
            .arg(f.path()));
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let mut n: Vec<String> = plan["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&["--env", "prod"]), ["web-03"]);
    assert_eq!(
        names(&["--host", "web-*", "--env", "staging"]),
        ["web-01", "web-02"]
    );
    assert_eq!(
        names(&["--host", "db-01", "--host", "web-03"]),
        ["db-01", "web-03"]
    );
    assert_eq!(
        names(&["--label", "role=web", "--exclude", "web-0[12]"]),
        ["web-03"]
    );
    let r = run(flotilla().args(["plan", "--env", "qa"]).arg(f.path()));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--env qa: no such environment"), "{}", r.stderr);
    let r = run(flotilla().args(["plan", "--host", "nothing-*"]).arg(f.path()));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no host matches"), "{}", r.stderr);
}

#[test]
fn show_explains_where_each_value_comes_from() {
    let f = TestFleet::new();
    f.write(
        "environments/staging.toml",
        "[defaults]\ncommand_timeout = \"2m\"\n\n[runtimes]\ngreeter = \"2.0.0\"\n\n[[group]]\nmatch = { role = \"web\" }\nruntimes = { greeter = \"1.0.0\" }\n",
    );
    f.host(
        "hosts/a.toml",
        "web-01",
        "staging",
        "labels = { role = \"web\" }\nkeep_versions = 3",
    );
    f.commit("initial");
    let r = run(flotilla().args(["show", "web-01"]).arg(f.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = |key: &str| {
        r.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("transport").ends_with("flotilla.toml [defaults]"),
        "{}",
        r.stdout
    );
    assert!(
        line("command_timeout").contains("2m")
            && line("command_timeout").ends_with("environments/staging.toml")
    );
    assert!(line("keep_versions").contains('3') && line("keep_versions").ends_with("host"));
    assert!(line("port").ends_with("built-in default"));
    assert!(
        line("greeter").contains("1.0.0") && line("greeter").ends_with("[[group]] #1"),
        "{}",
        r.stdout
    );

    let r = run(flotilla().args(["show", "web-1"]).arg(f.path()));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("unknown host `web-1`; did you mean `web-01`?"),
        "{}",
        r.stderr
    );
}

#[test]
fn invalid_manifests_exit_1_before_touching_any_host() {
    let f = two_hosts();
    f.write("environments/prod.toml", "[rollout]\nwavez = [1]\n");
    f.commit("broken");
    for cmd in ["validate", "plan"] {
        let r = run(flotilla().arg(cmd).arg(f.path()));
        assert_eq!(r.code, 1, "{cmd}");
        assert!(
            r.stderr.contains("--> environments/prod.toml:2:1"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("did you mean `waves`?"), "{}", r.stderr);
        assert!(r.stdout.is_empty(), "{cmd} printed a plan for invalid manifests");
    }
}

#[test]
fn committed_schemas_are_up_to_date() {
    let root = env!("CARGO_MANIFEST_DIR");
    let r = run(flotilla()
        .current_dir(root)
        .args(["schema", "--check", "--out-dir", "schema"]));
    assert_eq!(
        r.code, 0,
        "run `cargo run -- schema` and commit schema/: {}",
        r.stderr
    );
}

#[test]
fn every_shipped_manifest_carries_a_schema_directive() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut stack = vec![root.join("manifests"), root.join("examples")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml")
                && (p.ends_with("flotilla.toml")
                    || ["environments", "hosts", "runtimes"]
                        .iter()
                        .any(|d| p.components().any(|c| c.as_os_str() == *d)))
            {
                let text = std::fs::read_to_string(&p).unwrap();
                assert!(
                    text.starts_with("#:schema "),
                    "{} has no #:schema directive",
                    p.display()
                );
                let target = text
                    .lines()
                    .next()
                    .unwrap()
                    .trim_start_matches("#:schema ")
                    .trim();
                assert!(
                    p.parent().unwrap().join(target).is_file(),
                    "{}: {target} does not exist",
                    p.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} manifests found");
}

#[test]
fn demo_fleet_is_valid_and_plans() {
    let root = env!("CARGO_MANIFEST_DIR");
    let r = run(flotilla().current_dir(root).args(["validate", "manifests"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Every demo host must be observable as shipped: no --skip-unreachable.
    let store = tempfile::tempdir().unwrap();
    let r = run(flotilla()
        .current_dir(root)
        .arg("--state-dir")
        .arg(store.path())
        .args(["plan", "manifests"]));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Environment staging"), "{}", r.stdout);
    assert!(!r.stdout.contains("could not be observed"), "{}", r.stdout);
    let last = r.stdout.lines().last().unwrap();
    assert!(
        last.starts_with("Plan: ") && !last.starts_with("Plan: 0 to add"),
        "a fresh demo installs runtimes and files: {}",
        r.stdout
    );
}

#[test]
fn no_changes_is_never_claimed_for_hosts_not_observed() {
    let f = two_hosts();
    f.commit("initial");
    std::fs::remove_dir(f.root("prod-01")).unwrap();
    std::fs::remove_dir(f.root("stg-01")).unwrap();
    let r = run(flotilla().args(["plan", "--skip-unreachable"]).arg(f.path()));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout.lines().last(),
        Some("No changes on the 0 hosts observed; 2 could not be observed."),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("The fleet matches"), "{}", r.stdout);
    // --detailed-exitcode: 0 would tell a script the fleet is converged.
    let r = run(flotilla()
        .args(["plan", "--skip-unreachable", "--detailed-exitcode"])
        .arg(f.path()));
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
}

#[test]
fn at_evaluates_windows_at_another_time() {
    let f = two_hosts();
    f.write(
        "environments/prod.toml",
        "[runtimes]\ngreeter = \"1.0.0\"\n\n[[window]]\ndays = [\"sat\"]\nstart = \"02:00\"\nduration = \"3h\"\ntimezone = \"Europe/Berlin\"\n",
    );
    f.commit("window");
    // No promotion order here: this test is about windows alone.
    f.write(
        "flotilla.toml",
        "[fleet]\nname = \"acme\"\n\n[defaults]\ntransport = \"local\"\n",
    );
    f.commit("no promotion");
    let prod = |at: &str| -> serde_json::Value {
        let r = run(flotilla()
            .args(["plan", "--format", "json", "--env", "prod", "--at", at])
            .arg(f.path()));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        plan["environments"][0].clone()
    };
    // Saturday 2026-11-28 03:00 CET is inside the window.
    let open = prod("2026-11-28T03:00:00+01:00");
    assert_eq!(open["window"]["open"], true);
    assert_eq!(open["window"]["closes_at"], "2026-11-28T04:00:00Z");
    assert!(open["waiting"].is_null());
    // Friday is outside it: the changes wait, and the plan says until when.
    let closed = prod("2026-11-27T12:00:00Z");
    assert_eq!(closed["window"]["open"], false);
    assert_eq!(closed["window"]["next_open"], "2026-11-28T01:00:00Z");
    assert!(
        closed["waiting"]
            .as_str()
            .unwrap()
            .contains("opens Sat 2026-11-28 02:00 CET"),
        "{closed}"
    );
    let r = run(flotilla().args(["plan", "--at", "next tuesday"]).arg(f.path()));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--at next tuesday: not a time"), "{}", r.stderr);
}

#[test]
fn interrupted_transactions_and_hostile_names_are_reported_safely() {
    let f = two_hosts();
    f.commit("initial");
    f.converge(
        "stg-01",
        &[("greeter", "2.0.0")],
        &[("/etc/app.conf", "name = stg-01\nworkers = 8\n")],
    );
    let state_path = f.root("stg-01").join("var/lib/flotilla/state.json");
    let state = std::fs::read_to_string(&state_path).unwrap();
    std::fs::write(
        &state_path,
        state.replacen('{', "{\"pending\": {\"epoch\": 2},", 1),
    )
    .unwrap();
    // A directory name with a newline and an escape sequence must not break the probe's output.
    let rt = f.root("stg-01").join("opt/flotilla/runtimes");
    std::fs::create_dir_all(rt.join("evil\nruntime \u{1b}[2J 5")).unwrap();
    std::fs::create_dir_all(rt.join("greeter/bad\nversion")).unwrap();
    let r = run(flotilla().args(["plan", "--host", "stg-01"]).arg(f.path()));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("warning: a transaction was interrupted here"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains('\u{1b}'), "{:?}", r.stdout);
    // Restoring the pending state is the host's first step (DESIGN §6.1): never "No changes"
    // (§5), and a drift check does not pass.
    assert!(
        r.stdout
            .trim_end()
            .ends_with("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{}",
        r.stdout
    );
    let r = run(flotilla()
        .args(["plan", "--detailed-exitcode", "--host", "stg-01"])
        .arg(f.path()));
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);

    // A corrupt state.json is reported, not trusted.
    std::fs::write(&state_path, "{ not json").unwrap();
    let r = run(flotilla().args(["plan", "--host", "stg-01"]).arg(f.path()));
    assert!(r.stdout.contains("state.json is not valid"), "{}", r.stdout);
}

#[test]
fn plan_says_what_waits_on_promotion() {
    let f = two_hosts();
    f.commit("initial");
    let r = run(flotilla().args(["plan", "--format", "json"]).arg(f.path()));
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let prod = plan["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "prod")
        .unwrap()
        .clone();
    assert_eq!(prod["waiting"], "greeter 1.0.0 waits on staging", "{prod}");
    let text = run(flotilla().arg("plan").arg(f.path()));
    assert!(
        text.stdout.contains("promotion: greeter 1.0.0 waits on staging"),
        "{}",
        text.stdout
    );
}

#[test]
fn every_promotion_hold_is_in_the_text_and_the_json() {
    let f = TestFleet::new();
    f.write(
        "environments/staging.toml",
        "[runtimes]\ngreeter = \"2.0.0\"\nclock = \"0.1\"\n",
    );
    f.write("environments/prod.toml", "[rollout]\nwaves = [1, \"50%\"]\n");
    f.write(
        "runtimes/clock.toml",
        &format!(
            "[[version]]\nversion = \"0.1\"\nartifact = \"https://example.invalid/c.tgz\"\nsha256 = \"{}\"\n",
            "3".repeat(64)
        ),
    );
    f.host("hosts/staging.toml", "stg-01", "staging", "canary = true");
    f.host(
        "hosts/prod.toml",
        "prod-01",
        "prod",
        "runtimes = { greeter = \"1.0.0\" }",
    );
    f.host(
        "hosts/prod.toml",
        "prod-02",
        "prod",
        "runtimes = { clock = \"0.1\" }",
    );
    f.commit("two holds");
    let r = run(flotilla().args(["plan", "--format", "json"]).arg(f.path()));
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let prod = plan["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "prod")
        .unwrap()
        .clone();
    assert_eq!(
        prod["promotion_holds"],
        serde_json::json!(["greeter 1.0.0 waits on staging", "clock 0.1 waits on staging"]),
        "{prod}"
    );
    let text = run(flotilla().arg("plan").arg(f.path())).stdout;
    for hold in ["greeter 1.0.0 waits on staging", "clock 0.1 waits on staging"] {
        assert!(text.contains(&format!("promotion: {hold}")), "{text}");
    }
}

#[test]
fn hosts_dropped_from_the_manifests_are_listed_in_text_and_json() {
    let f = TestFleet::new();
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\n",
    );
    f.write("environments/prod.toml", "");
    f.host("hosts/staging.toml", "stg-01", "staging", "");
    f.host("hosts/old.toml", "stg-02", "staging", "");
    f.commit("two hosts");
    let store = tempfile::tempdir().unwrap();
    let with_store = || {
        let mut c = flotilla();
        c.arg("--state-dir").arg(store.path());
        c
    };
    let r = run(with_store().args(["apply", "--auto-approve"]).arg(f.path()));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    std::fs::remove_file(f.path().join("hosts/old.toml")).unwrap();
    f.commit("stg-02 retired");
    let r = run(with_store().arg("plan").arg(f.path()));
    assert!(
        r.stdout
            .contains("No longer in the manifests (left as they are): stg-02"),
        "{}",
        r.stdout
    );
    let r = run(with_store().args(["plan", "--format", "json"]).arg(f.path()));
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        plan["no_longer_managed"],
        serde_json::json!(["stg-02"]),
        "{}",
        r.stdout
    );
}

/// `validate` and `plan` only read the store: in a bare container or CI job with neither HOME
/// nor XDG_STATE_HOME (and no --state-dir) they go without it instead of failing; `apply`,
/// which must record what it does, still asks for one.
#[test]
fn validate_and_plan_need_no_store_location() {
    let f = two_hosts();
    f.commit("initial");
    let bare = |args: &[&str]| {
        let mut c = flotilla();
        c.args(args)
            .arg(f.path())
            .env_remove("HOME")
            .env_remove("XDG_STATE_HOME")
            .env_remove("FLOTILLA_STATE_DIR")
            .env_remove("FLOTILLA_STATE");
        run(&mut c)
    };
    for args in [&["validate"][..], &["plan"][..]] {
        let r = bare(args);
        assert_eq!(r.code, 0, "{args:?}: {}{}", r.stdout, r.stderr);
    }
    let r = bare(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("no store directory"), "{}", r.stderr);
}
