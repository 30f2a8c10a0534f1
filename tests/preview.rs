//! `flotilla preview` end to end (DESIGN §8): real Git repositories with a base and a head
//! branch, the real binary, and the comment a reviewer would read.

mod common;

use common::{DEMO_KEY, Keys, Run, TestFleet, flotilla, run};

/// A Wednesday morning: prod's Saturday window is closed.
const AT: &str = "2026-11-25T10:00:00Z";

const FLEET: &str = "[fleet]\nname = \"acme\"\npromotion = [\"staging\", \"prod\"]\n\n[defaults]\ntransport = \"local\"\n\n[trust]\nkeys = [\"KEY\"]\nrequire_signatures = false\n";

const STAGING: &str = "[runtimes]\ngreeter = \"VERSION\"\n\n[rollout]\nbake = \"1h\"\n";

const PROD: &str = "[runtimes]\ngreeter = \"VERSION\"\n\n[[file]]\npath = \"/etc/app.conf\"\ncontent = \"workers = 4\\nlog = info\\n\"\n\n[rollout]\nwaves = [1, \"50%\"]\nbake = \"30m\"\npromotion_soak = \"24h\"\n\n[[window]]\ndays = [\"sat\", \"sun\"]\nstart = \"02:00\"\nduration = \"3h\"\ntimezone = \"Europe/Berlin\"\n";

/// staging (staging-01) and prod (prod-01..04) at greeter 1.0.0, committed on branch `main`.
fn fleet() -> (TestFleet, String) {
    let f = TestFleet::new();
    f.write("flotilla.toml", &FLEET.replace("KEY", DEMO_KEY));
    f.write("environments/staging.toml", &STAGING.replace("VERSION", "1.0.0"));
    f.write("environments/prod.toml", &PROD.replace("VERSION", "1.0.0"));
    f.host("hosts/staging.toml", "staging-01", "staging", "");
    for i in 1..=4 {
        f.host("hosts/prod.toml", &format!("prod-0{i}"), "prod", "");
    }
    let base = f.commit("base: greeter 1.0.0 everywhere");
    branch(&f, "main", &base);
    (f, base)
}

fn branch(f: &TestFleet, name: &str, commit: &str) {
    let repo = git2::Repository::open(f.path()).unwrap();
    let c = repo.find_commit(git2::Oid::from_str(commit).unwrap()).unwrap();
    repo.branch(name, &c, true).unwrap();
}

/// Writes `files` on top of what is there, commits, and points branch `pr` at it.
fn change(f: &TestFleet, message: &str, files: &[(&str, &str)]) -> String {
    for (path, text) in files {
        f.write(path, text);
    }
    let head = f.commit(message);
    branch(f, "pr", &head);
    head
}

fn bump() -> [(&'static str, String); 2] {
    [
        ("environments/staging.toml", STAGING.replace("VERSION", "2.0.0")),
        (
            "environments/prod.toml",
            PROD.replace("VERSION", "2.0.0")
                .replace("workers = 4", "workers = 8"),
        ),
    ]
}

/// `--against fleet --format json` with the store whose id converged hosts carry.
fn preview_fleet(f: &TestFleet, store: &std::path::Path, base: &str, head: &str) -> Run {
    run(flotilla()
        .arg("--state-dir")
        .arg(store)
        .args([
            "preview",
            "--base",
            base,
            "--head",
            head,
            "--against",
            "fleet",
            "--format",
            "json",
            "--at",
            AT,
        ])
        .arg(f.path()))
}

fn preview(f: &TestFleet, base: &str, head: &str, extra: &[&str]) -> Run {
    run(flotilla()
        .args(["preview", "--base", base, "--head", head, "--at", AT])
        .args(extra)
        .arg(f.path()))
}

/// The markdown with both commit ids replaced, for snapshots.
fn stable(r: &Run, base: &str, head: &str) -> String {
    r.stdout
        .replace(&base[..8], "BASE0000")
        .replace(&head[..8], "HEAD0000")
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", r.stdout, r.stderr))
}

fn refs(files: &[(&str, String)]) -> Vec<(String, String)> {
    files.iter().map(|(p, t)| ((*p).to_owned(), t.clone())).collect()
}

fn change_owned(f: &TestFleet, message: &str, files: &[(String, String)]) -> String {
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    change(f, message, &files)
}

#[test]
fn a_version_bump_shows_the_plan_and_when_each_environment_can_start() {
    let (f, base) = fleet();
    let head = change_owned(&f, "greeter 2.0.0, 8 workers", &refs(&bump()));
    let r = preview(&f, "main", "pr", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let md = stable(&r, &base, &head);
    assert!(md.starts_with("<!-- flotilla-preview -->\n"), "{md}");
    assert!(md.contains("Plan: 0 to add, 9 to change, 0 to destroy."), "{md}");
    assert!(
        md.contains("| prod | 4 | 3 | window closed; opens Sat 2026-11-28 02:00 CET (in 2d 15h) | Sat 2026-11-28 02:00 CET (in 2d 15h), after staging converges and soaks 1d and the window opens |"),
        "{md}"
    );
    assert!(
        md.contains("| staging | 1 | 1 | no window (any time) | at once |"),
        "{md}"
    );
    assert!(
        !md.contains("change(s) to review"),
        "a version bump is no notice: {md}"
    );
    insta::assert_snapshot!(md);

    let doc = json(&preview(&f, "main", "pr", &["--format", "json"]));
    assert_eq!(doc["base"]["commit"], base.as_str());
    assert_eq!(doc["head"]["subject"], "greeter 2.0.0, 8 workers");
    assert_eq!(doc["summary"]["change"], 9);
    let prod = &doc["forecast"][1];
    assert_eq!(prod["environment"], "prod");
    assert_eq!(prod["first_wave"], "2026-11-28T01:00:00Z");
    assert_eq!(
        prod["last_wave"], "2026-11-28T02:00:00Z",
        "three waves, 30m bakes between"
    );
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/preview.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");

    let text = preview(&f, "main", "pr", &["--format", "text"]);
    assert_eq!(text.code, 0);
    assert!(
        text.stdout.contains(
            "Forecast (earliest first wave):\n  staging  at once\n  prod     Sat 2026-11-28 02:00 CET"
        ),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("Plan: 0 to add, 9 to change, 0 to destroy."));
}

#[test]
fn a_window_change_moves_the_forecast_and_is_a_notice() {
    let (f, _) = fleet();
    let [staging, (_, prod)] = bump();
    let moved = prod.replace(
        "days = [\"sat\", \"sun\"]\nstart = \"02:00\"",
        "days = [\"sun\"]\nstart = \"04:00\"",
    );
    change(
        &f,
        "prod on Sundays",
        &[(staging.0, &staging.1), ("environments/prod.toml", &moved)],
    );
    let doc = json(&preview(&f, "main", "pr", &["--format", "json"]));
    assert_eq!(
        doc["forecast"][1]["first_wave"], "2026-11-29T03:00:00Z",
        "{:#}",
        doc["forecast"]
    );
    let notice = &doc["notices"][0];
    assert_eq!(notice["kind"], "schedule");
    assert_eq!(
        (notice["file"].as_str(), notice["line"].as_u64()),
        (Some("environments/prod.toml"), Some(13))
    );
    let msg = notice["message"].as_str().unwrap();
    assert!(
        msg.contains("`sat,sun 02:00 for 3h Europe/Berlin` -> `sun 04:00 for 3h Europe/Berlin`"),
        "{msg}"
    );
}

#[test]
fn trust_keys_hooks_and_new_hosts_are_notices_with_file_and_line() {
    let (f, base) = fleet();
    let other = Keys::new().public();
    f.host("hosts/prod.toml", "prod-05", "prod", "canary = true");
    let rt = std::fs::read_to_string(f.path().join("runtimes/greeter.toml")).unwrap()
        + "\n[hooks]\nactivate = \"systemctl restart greeter\"\n";
    let head = change(
        &f,
        "new key, a hook, a host",
        &[
            ("flotilla.toml", &FLEET.replace("KEY", &other)),
            ("runtimes/greeter.toml", &rt),
        ],
    );
    let r = preview(&f, &base, &head, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let md = stable(&r, &base, &head).replace(&other, "RW-NEW-KEY");
    assert!(md.contains("> **3 change(s) to review:**"), "{md}");
    assert!(
        md.contains("1 host(s) added: prod-05 (planned as empty hosts) — `hosts/prod.toml:26`"),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "[trust] changes: key `RW-NEW-KEY` added; key `{DEMO_KEY}` removed — `flotilla.toml:9`"
        )),
        "{md}"
    );
    assert!(
        md.contains("command: runtime `greeter` hooks.activate (none) -> `systemctl restart greeter` — `runtimes/greeter.toml:12`"),
        "{md}"
    );
    assert!(
        md.contains("+ runtime \"greeter\": \"1.0.0\""),
        "the new host installs: {md}"
    );
    insta::assert_snapshot!(md);
}

#[test]
fn an_invalid_head_exits_1_with_located_errors_in_every_format() {
    let (f, base) = fleet();
    let head = change(
        &f,
        "typo",
        &[(
            "environments/prod.toml",
            &PROD.replace("bake", "bkae").replace("VERSION", "2.0.0"),
        )],
    );
    let r = preview(&f, "main", "pr", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let md = stable(&r, &base, &head);
    assert!(
        md.contains("**Head is invalid: 1 problem(s). Nothing can be planned until they are fixed.**"),
        "{md}"
    );
    assert!(md.contains("--> environments/prod.toml:10:1"), "{md}");
    assert!(md.contains("did you mean `bake`?"), "{md}");
    insta::assert_snapshot!(md);
    let j = preview(&f, "main", "pr", &["--format", "json"]);
    assert_eq!(j.code, 1);
    let e = &json(&j)["errors"][0];
    assert_eq!(
        (e["file"].as_str(), e["line"].as_u64()),
        (Some("environments/prod.toml"), Some(10))
    );
    let t = preview(&f, "main", "pr", &["--format", "text"]);
    assert_eq!(t.code, 1);
    assert!(t.stdout.contains("environments/prod.toml:10:1"), "{}", t.stdout);
    // Unknown revisions are errors that say which flag.
    let u = preview(&f, "main", "no-such-branch", &[]);
    assert_eq!(u.code, 1);
    assert!(
        u.stderr.contains("--head no-such-branch: unknown revision"),
        "{}",
        u.stderr
    );
}

#[test]
fn a_huge_change_is_cut_largest_first_and_keeps_summary_notices_and_forecast() {
    let (f, base) = fleet();
    // 120 hosts, each with a 40-line file of its own: far more diff than a comment holds.
    let mut hosts = String::new();
    for i in 0..120 {
        let body: String = (0..40)
            .map(|l| format!("host {i} line {l} {}\\n", "x".repeat(20)))
            .collect();
        hosts.push_str(&format!(
            "[[host]]\nname = \"bulk-{i:03}\"\nenvironment = \"prod\"\nroot = \"roots/bulk-{i:03}\"\n[[host.file]]\npath = \"/etc/bulk\"\ncontent = \"{body}\"\n\n"
        ));
    }
    let [staging, prod] = bump();
    let head = change(
        &f,
        "bulk",
        &[
            ("hosts/bulk.toml", &hosts),
            (staging.0, &staging.1),
            (prod.0, &prod.1),
        ],
    );
    let r = preview(&f, "main", "pr", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let md = stable(&r, &base, &head);
    assert!(md.chars().count() < 65_000, "{} characters", md.chars().count());
    assert!(
        md.contains("Plan: 360 to add, 9 to change, 0 to destroy."),
        "the summary stays: {}",
        &md[..1500]
    );
    assert!(
        md.contains("120 host(s) added: bulk-[000-119]"),
        "the notices stay: {}",
        &md[..2000]
    );
    assert!(
        md.contains("after staging converges and soaks 1d"),
        "the forecast stays"
    );
    assert!(
        md.contains("_Cut to stay under the comment size limit, largest first:"),
        "{}",
        &md[md.len() - 500..]
    );
}

#[test]
fn content_with_backtick_runs_gets_a_longer_fence() {
    let (f, _) = fleet();
    let prod = PROD
        .replace("VERSION", "1.0.0")
        .replace("log = info", "```````\\nlog = debug");
    change(&f, "backticks", &[("environments/prod.toml", &prod)]);
    let r = preview(&f, "main", "pr", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("+ ```````"), "{}", r.stdout);
    assert!(
        r.stdout.contains("\n````````diff\n"),
        "a fence of 8: {}",
        r.stdout
    );
}

#[test]
fn against_the_fleet_observes_base_hosts_where_base_reaches_them_and_never_new_ones() {
    let (f, _) = fleet();
    // Base's hosts really have base's state.
    f.converge("staging-01", &[("greeter", "1.0.0")], &[]);
    for i in 1..=4 {
        f.converge(
            &format!("prod-0{i}"),
            &[("greeter", "1.0.0")],
            &[("/etc/app.conf", "workers = 4\nlog = info\n")],
        );
    }
    // Head moves staging-01 to another root (nothing there) and adds a host.
    let staging_hosts = std::fs::read_to_string(f.path().join("hosts/staging.toml"))
        .unwrap()
        .replace("roots/staging-01", "roots/elsewhere")
        + "\n[[host]]\nname = \"staging-02\"\nenvironment = \"staging\"\nroot = \"roots/staging-02\"\n";
    let [staging, prod] = bump();
    change(
        &f,
        "move and add",
        &[
            ("hosts/staging.toml", &staging_hosts),
            (staging.0, &staging.1),
            (prod.0, &prod.1),
        ],
    );
    let store = common::converged_store();
    let r = preview_fleet(&f, store.path(), "main", "pr");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc = json(&r);
    let host = |n: &str| {
        doc["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == n)
            .unwrap()
            .clone()
    };
    let moved = host("staging-01");
    assert_eq!(
        moved["changes"][0]["before"], "1.0.0",
        "observed at base's root: {moved:#}"
    );
    assert_eq!(moved["changes"][0]["action"], "update");
    assert_eq!(host("staging-02")["changes"][0]["action"], "create");
    assert!(!f.root("staging-02").exists(), "never contacted");
    assert!(!f.path().join("roots/elsewhere").exists());
    let prod = host("prod-01");
    let diff = prod["changes"][1]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-workers = 4\n+workers = 8"),
        "observed content, as this store wrote it: {diff}"
    );
    let notices = doc["notices"].to_string();
    assert!(notices.contains("new in head: not contacted"), "{notices}");
    assert!(
        notices.contains("connection: root `\\\"roots/staging-01\\\"` -> `\\\"roots/elsewhere\\\"`"),
        "{notices}"
    );
}

#[test]
fn against_the_fleet_over_ssh_a_host_new_in_head_is_never_contacted() {
    const TEST: &str = "against_the_fleet_over_ssh_a_host_new_in_head_is_never_contacted";
    if !common::sshd::available(TEST) {
        return;
    }
    let mut lab = common::sshd::SshLab::start(2);
    let key = lab.client_key.clone();
    for h in &mut lab.hosts {
        h.log_connections(&key);
    }
    lab.write_known_hosts();
    let f = TestFleet::new();
    f.write(
        "flotilla.toml",
        &format!(
            "[fleet]\nname = \"acme\"\n\n[defaults]\n{}\n[trust]\nrequire_signatures = false\n",
            lab.defaults_toml()
        ),
    );
    f.write("environments/prod.toml", "[runtimes]\ngreeter = \"1.0.0\"\n");
    f.write("hosts/a.toml", &lab.host_toml(0, "web-a", "prod", ""));
    let base = f.commit("one ssh host");
    // Head points web-a at the second sshd and adds web-b there: neither may be contacted.
    let moved = lab
        .host_toml(0, "web-a", "prod", "")
        .replace(&lab.hosts[0].port.to_string(), &lab.hosts[1].port.to_string())
        .replace(&lab.hosts[0].address, &lab.hosts[1].address);
    f.write(
        "hosts/a.toml",
        &(moved + "\n" + &lab.host_toml(1, "web-b", "prod", "")),
    );
    f.write("environments/prod.toml", "[runtimes]\ngreeter = \"2.0.0\"\n");
    let head = f.commit("move web-a, add web-b");
    // The harness's own readiness checks connect too: only what comes after counts.
    let quiet_before = lab.hosts[1].log_text().len();
    let r = preview(&f, &base, &head, &["--against", "fleet", "--format", "text"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("connection: address"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("1 host(s) added: web-b (new in head: not contacted"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Plan: 2 to add, 0 to change, 0 to destroy."),
        "{}",
        r.stdout
    );
    let (first, second) = (lab.hosts[0].log_text(), lab.hosts[1].log_text());
    assert!(
        first.contains("Accepted publickey"),
        "base's host was observed where base reaches it: {first}"
    );
    assert!(
        !second[quiet_before..].contains("Connection from"),
        "head's address was contacted: {second}"
    );
}

#[test]
fn against_the_fleet_head_cannot_unmask_a_sensitive_file_of_base() {
    let (f, _) = fleet();
    let secret =
        "[[host.file]]\npath = \"/etc/secret\"\ncontent = \"token = new\\n\"\nsensitive = SENSITIVE\n";
    let hosts = std::fs::read_to_string(f.path().join("hosts/staging.toml")).unwrap();
    f.write(
        "hosts/staging.toml",
        &(hosts.clone() + &secret.replace("SENSITIVE", "true")),
    );
    let base = f.commit("a secret");
    f.converge(
        "staging-01",
        &[("greeter", "1.0.0")],
        &[("/etc/secret", "token = on-the-host\n")],
    );
    let head = change(
        &f,
        "unmask it",
        &[(
            "hosts/staging.toml",
            &(hosts + &secret.replace("SENSITIVE", "false")),
        )],
    );
    let store = common::converged_store();
    let r = preview_fleet(&f, store.path(), &base, &head);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !r.stdout.contains("on-the-host"),
        "the host's secret leaked: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("/etc/secret"),
        "the change is still shown: {}",
        r.stdout
    );
}
