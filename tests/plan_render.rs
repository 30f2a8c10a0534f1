//! Plan rendering, pure: desired state from a real fleet on disk, observations made by hand,
//! a fixed clock, and snapshots of the text, markdown and JSON forms.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::TestFleet;
use flotilla::hoststate::{FileState, HostState, RuntimeState};
use flotilla::manifest::model::HostPath;
use flotilla::observe::{Observation, ObservedFile, ObservedRuntime};
use flotilla::plan::{self, HostInput, PlanInput, text::TextOptions};

const NOW: &str = "2026-11-23T10:00:00Z";

fn load(f: &TestFleet) -> flotilla::load::LoadedFleet {
    let repo = flotilla::repo::FleetRepo::open(f.path(), None).expect("open");
    match flotilla::load::load(&repo) {
        Ok(l) => l,
        Err(flotilla::load::LoadError::Invalid {
            diagnostics, sources, ..
        }) => {
            panic!("{}", flotilla::diagnostic::render(&diagnostics, &sources, false))
        }
        Err(e) => panic!("{e}"),
    }
}

fn state(host: &str, runtimes: &[(&str, &str)], files: &[(&str, &str)]) -> HostState {
    HostState {
        format_version: 1,
        fleet: "acme".into(),
        host: host.into(),
        revision: None,
        applied_at: "2026-11-01T00:00:00Z".into(),
        store_id: "s".into(),
        epoch: 1,
        runtimes: runtimes
            .iter()
            .map(|(n, v)| {
                (
                    (*n).to_owned(),
                    RuntimeState {
                        active: (*v).into(),
                        previous: None,
                        sha256: "1".repeat(64),
                    },
                )
            })
            .collect(),
        files: files
            .iter()
            .map(|(p, content)| {
                let fs = FileState {
                    sha256: flotilla::resolve::sha256_hex(content.as_bytes()),
                    mode: 0o644,
                    owner: None,
                    group: None,
                    took_over: false,
                };
                ((*p).to_owned(), fs)
            })
            .collect(),
        pending: None,
    }
}

fn runtime(current: &str, versions: &[&str]) -> ObservedRuntime {
    ObservedRuntime {
        versions: versions.iter().map(|v| (*v).to_owned()).collect::<BTreeSet<_>>(),
        current: Some(current.into()),
    }
}

fn file(content: &str, with_content: bool) -> ObservedFile {
    ObservedFile::Regular {
        sha256: flotilla::resolve::sha256_hex(content.as_bytes()),
        mode: Some(0o644),
        owner: Some("root".into()),
        group: Some("root".into()),
        size: content.len() as u64,
        content: with_content.then(|| content.as_bytes().to_vec()),
    }
}

fn path(p: &str) -> HostPath {
    HostPath::new(p).unwrap()
}

fn build(
    loaded: &flotilla::load::LoadedFleet,
    observed: &BTreeMap<String, Result<Observation, String>>,
) -> plan::Plan {
    build_with(loaded, observed, &Extra::default())
}

/// What a caller knows beyond the observations: refusals, `--take-over`.
#[derive(Default)]
struct Extra {
    refused: BTreeMap<&'static str, String>,
    take_over: bool,
    halts: BTreeMap<String, plan::Halt>,
}

fn build_with(
    loaded: &flotilla::load::LoadedFleet,
    observed: &BTreeMap<String, Result<Observation, String>>,
    extra: &Extra,
) -> plan::Plan {
    let now: jiff::Timestamp = NOW.parse().unwrap();
    let hosts = loaded
        .desired
        .iter()
        .map(|d| HostInput {
            desired: d,
            observed: match observed.get(d.name.as_str()) {
                Some(Ok(o)) => Ok(o),
                Some(Err(e)) => Err(e.clone()),
                None => Err("not observed".into()),
            },
            refused: extra.refused.get(d.name.as_str()).cloned(),
            take_over: extra.take_over,
        })
        .collect();
    plan::build(&PlanInput {
        fleet: &loaded.fleet,
        revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
        hosts,
        at: now,
        observed_at: now,
        all_desired: &loaded.desired,
        promotions: &[],
        halts: &extra.halts,
    })
}

/// A fleet that exercises every kind of change.
fn mixed() -> (TestFleet, BTreeMap<String, Result<Observation, String>>) {
    let f = TestFleet::new();
    f.write(
        "environments/prod.toml",
        "[runtimes]\ngreeter = \"1.0.0\"\n\n[[file]]\npath = \"/etc/token\"\ncontent = \"new-secret\\n\"\nsensitive = true\n\n[[file]]\npath = \"/etc/motd\"\ncontent = \"welcome\\n\"\nmode = \"0640\"\n\n[rollout]\nwaves = [1, \"50%\"]\n\n[[window]]\ndays = [\"sat\", \"sun\"]\nstart = \"02:00\"\nduration = \"3h\"\ntimezone = \"Europe/Berlin\"\n",
    );
    f.write(
        "runtimes/clock.toml",
        &format!(
            "[[version]]\nversion = \"0.1\"\nartifact = \"https://example.invalid/c.tgz\"\nsha256 = \"{}\"\n",
            "3".repeat(64)
        ),
    );
    f.host("hosts/s.toml", "stg-01", "staging", "canary = true");
    f.host("hosts/s.toml", "stg-02", "staging", "");
    f.host("hosts/p.toml", "prod-01", "prod", "canary = true");
    f.host("hosts/p.toml", "prod-02", "prod", "");
    f.host("hosts/p.toml", "prod-03", "prod", "");
    let mut obs = BTreeMap::new();
    // stg-01: upgrade; its managed config drifted and differs.
    let mut o = Observation::default();
    o.runtimes.insert("greeter".into(), runtime("1.0.0", &["1.0.0"]));
    o.runtimes.insert("clock".into(), runtime("0.1", &["0.1"]));
    o.files
        .insert(path("/etc/app.conf"), file("name = stg-01\nworkers = 4\n", true));
    o.state = Some(state(
        "stg-01",
        &[("greeter", "1.0.0"), ("clock", "0.1")],
        &[("/etc/app.conf", "name = stg-01\nworkers = 8\n")],
    ));
    o.clock = Some(NOW.parse::<jiff::Timestamp>().unwrap().as_second() + 600);
    obs.insert("stg-01".to_owned(), Ok(o));
    // stg-02: nothing installed yet.
    obs.insert("stg-02".to_owned(), Ok(Observation::default()));
    // prod hosts: converged runtime, files to take over / change.
    for (i, h) in ["prod-01", "prod-02", "prod-03"].iter().enumerate() {
        let mut o = Observation::default();
        o.runtimes.insert("greeter".into(), runtime("1.0.0", &["1.0.0"]));
        o.files.insert(path("/etc/token"), file("old-secret\n", false));
        o.files.insert(path("/etc/motd"), file("hello\n", false));
        o.state = Some(state(
            h,
            &[("greeter", "1.0.0")],
            &[("/etc/token", "old-secret\n")],
        ));
        if i == 2 {
            obs.insert((*h).to_owned(), Err("host prod-03: connection refused".into()));
        } else {
            obs.insert((*h).to_owned(), Ok(o));
        }
    }
    (f, obs)
}

#[test]
fn text_plan_shows_every_kind_of_change() {
    let (f, obs) = mixed();
    let loaded = load(&f);
    let p = build(&loaded, &obs);
    let text = plan::text::render(&p, TextOptions::default());
    insta::assert_snapshot!(text);
    assert!(!text.contains("secret"), "sensitive content leaked");
    assert!(
        text.ends_with("Plan: 2 to add, 6 to change, 1 to destroy.\n"),
        "{text}"
    );
}

#[test]
fn json_plan_has_exactly_the_documented_keys() {
    let (f, obs) = mixed();
    let loaded = load(&f);
    let p = build(&loaded, &obs);
    let json: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&json),
        [
            "created_at",
            "environments",
            "fleet",
            "format_version",
            "hosts",
            "no_longer_managed",
            "revision",
            "summary"
        ]
    );
    assert_eq!(
        keys(&json["summary"]),
        [
            "add",
            "change",
            "destroy",
            "hosts_changed",
            "hosts_total",
            "hosts_unreachable"
        ]
    );
    assert_eq!(
        keys(&json["environments"][0]),
        [
            "frozen",
            "halted",
            "name",
            "promotion_holds",
            "waiting",
            "waves",
            "window"
        ]
    );
    assert_eq!(
        keys(&json["environments"][0]["window"]),
        ["closes_at", "next_open", "open"]
    );
    assert_eq!(
        keys(&json["hosts"][0]),
        [
            "changes",
            "environment",
            "error",
            "fingerprint",
            "interrupted",
            "name",
            "refused",
            "warnings",
            "wave"
        ]
    );
    for h in json["hosts"].as_array().unwrap() {
        for c in h["changes"].as_array().unwrap() {
            let k = keys(c);
            assert!(
                k == ["action", "after", "before", "drift", "kind", "name"]
                    || k == ["action", "after", "before", "diff", "drift", "kind", "name"],
                "{k:?}"
            );
        }
    }
    assert_eq!(json["format_version"], "1");
    assert!(!p.to_json().contains("secret"));
    insta::assert_json_snapshot!(json);
    // The JSON plan reads back into the same value (saved plans depend on it).
    let back: plan::Plan = serde_json::from_str(&p.to_json()).unwrap();
    assert_eq!(back.summary, p.summary);
    assert_valid_against_the_shipped_schema(&json);

    // An interrupted transaction and the warnings the text shows are in the JSON too.
    let (f, mut obs) = mixed();
    if let Some(Ok(o)) = obs.get_mut("stg-01") {
        o.state.as_mut().unwrap().pending = Some(serde_json::json!({}));
    }
    let p = build(&load(&f), &obs);
    let json: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
    let stg = json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "stg-01")
        .unwrap();
    assert_eq!(stg["interrupted"], true, "{stg}");
    let warnings = stg["warnings"].to_string();
    assert!(
        warnings.contains("interrupted") && warnings.contains("clock is"),
        "{warnings}"
    );
    assert_valid_against_the_shipped_schema(&json);
}

/// Validates a real JSON plan against `schema/plan.schema.json` as committed (which another
/// test keeps equal to what `flotilla schema` generates from the `Plan` type).
fn assert_valid_against_the_shipped_schema(json: &serde_json::Value) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/plan.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the plan schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(json)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // And the schema is strict: an unknown key is refused.
    let mut extra = json.clone();
    extra["hosts"][0]["surprise"] = serde_json::json!(1);
    assert!(!validator.is_valid(&extra), "the schema must refuse unknown keys");
}

#[test]
fn markdown_plan_for_pull_requests() {
    let (f, obs) = mixed();
    let loaded = load(&f);
    let p = build(&loaded, &obs);
    let md = plan::markdown::render(
        &p,
        &plan::markdown::MarkdownHeader {
            title: "Flotilla plan".into(),
            ..Default::default()
        },
    );
    insta::assert_snapshot!(md);
}

#[test]
fn two_hundred_identical_hosts_fold_into_one_entry() {
    let f = TestFleet::new();
    let mut hosts = String::new();
    for i in 1..=200 {
        hosts.push_str(&format!("[[host]]\nname = \"web-{i:03}\"\nenvironment = \"prod\"\nroot = \"roots/web-{i:03}\"\ncanary = {}\n\n", i == 1));
    }
    f.write("hosts/web.toml", &hosts);
    let loaded = load(&f);
    let obs: BTreeMap<String, Result<Observation, String>> = loaded
        .desired
        .iter()
        .map(|d| {
            let mut o = Observation::default();
            o.runtimes.insert("greeter".into(), runtime("0.9.0", &["0.9.0"]));
            (d.name.to_string(), Ok(o))
        })
        .collect();
    let p = build(&loaded, &obs);
    let text = plan::text::render(&p, TextOptions::default());
    insta::assert_snapshot!(text);
    assert!(
        text.contains("# hosts web-[001-200] (200 hosts, waves 1-3)"),
        "{text}"
    );
    let detail = plan::text::render(
        &p,
        TextOptions {
            detail: true,
            color: false,
        },
    );
    assert_eq!(detail.matches("# host web-").count(), 200);
    assert_eq!(
        p.environments[0].waves.iter().map(Vec::len).collect::<Vec<_>>(),
        [1, 99, 100]
    );
}

#[test]
fn a_thousand_hosts_with_a_templated_file_fold_into_one_entry() {
    let f = TestFleet::new();
    let mut hosts = String::new();
    for i in 1..=1000 {
        hosts.push_str(&format!(
            "[[host]]\nname = \"stg-{i:04}\"\nenvironment = \"staging\"\nroot = \"roots/stg-{i:04}\"\n\n"
        ));
    }
    f.write("hosts/staging.toml", &hosts);
    let loaded = load(&f);
    // Every host already runs greeter 2.0.0 and has last year's rendering of the template.
    let obs: BTreeMap<String, Result<Observation, String>> = loaded
        .desired
        .iter()
        .map(|d| {
            let mut o = Observation::default();
            o.runtimes.insert("greeter".into(), runtime("2.0.0", &["2.0.0"]));
            let old = format!("name = {}\nworkers = 4\n", d.name);
            o.files.insert(path("/etc/app.conf"), file(&old, true));
            o.state = Some(state(
                d.name.as_str(),
                &[("greeter", "2.0.0")],
                &[("/etc/app.conf", &old)],
            ));
            (d.name.to_string(), Ok(o))
        })
        .collect();
    let p = build(&loaded, &obs);
    assert_eq!(p.summary.change, 1000);
    let text = plan::text::render(&p, TextOptions::default());
    let lines = text.lines().count();
    assert!(lines < 200, "{lines} lines:\n{text}");
    assert!(
        text.contains("# hosts stg-[0001-1000] (1000 hosts, waves 1-2)"),
        "{text}"
    );
    assert!(
        text.contains("~ file \"/etc/app.conf\" (rendered per host; diff of stg-0001 shown)"),
        "{text}"
    );
    insta::assert_snapshot!(text);
    // Every host keeps its own rendered content in JSON, and --detail shows each.
    let json: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
    let afters: BTreeSet<&str> = json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["changes"][0]["after"].as_str().unwrap())
        .collect();
    assert_eq!(afters.len(), 1000);
    let detail = plan::text::render(
        &p,
        TextOptions {
            detail: true,
            color: false,
        },
    );
    assert_eq!(detail.matches("# host stg-").count(), 1000);
    assert!(detail.contains("  name = stg-0999"), "{detail}");
}

#[test]
fn a_markdown_plan_over_the_comment_limit_cuts_detail_never_environments() {
    // Two environments of 150 hosts, each host with its own 60-line file: about 1 MB of diffs.
    let f = TestFleet::new();
    let mut hosts = String::new();
    for env in ["staging", "prod"] {
        for i in 1..=150 {
            let body: String = (0..60).map(|l| format!("line {l} of {env}-{i:03}\\n")).collect();
            hosts.push_str(&format!(
                "[[host]]\nname = \"{env}-{i:03}\"\nenvironment = \"{env}\"\nroot = \"roots/{env}-{i:03}\"\n\n[[host.file]]\npath = \"/etc/own\"\ncontent = \"{body}\"\n\n"
            ));
        }
    }
    f.write("hosts/all.toml", &hosts);
    let loaded = load(&f);
    let obs: BTreeMap<String, Result<Observation, String>> = loaded
        .desired
        .iter()
        .map(|d| (d.name.to_string(), Ok(Observation::default())))
        .collect();
    let p = build(&loaded, &obs);
    let md = plan::markdown::render(&p, &Default::default());
    assert!(md.len() <= plan::markdown::MAX_COMMENT, "{} characters", md.len());
    for env in ["staging", "prod"] {
        assert!(
            md.contains(&format!(
                "<details><summary>{env} · 150 host(s) changing</summary>"
            )),
            "{env} is missing"
        );
    }
    // The summary stays, and the note says what was cut.
    assert!(
        md.contains("**Plan: 750 to add, 0 to change, 0 to destroy.**"),
        "{md}"
    );
    assert!(md.contains("left out; every environment is listed"), "{md}");
    assert!(md.contains("diff of 61 lines left out here"), "{md}");
    // A small plan is not cut.
    let small = plan::markdown::render(
        &build(&loaded, &obs.into_iter().take(3).collect()),
        &Default::default(),
    );
    assert!(!small.contains("left out"), "{small}");
}

#[test]
fn host_text_cannot_inject_control_characters() {
    let f = TestFleet::new();
    f.host("hosts/a.toml", "h1", "staging", "");
    let loaded = load(&f);
    let mut o = Observation::default();
    o.runtimes
        .insert("greeter".into(), runtime("1.0.0\u{1b}[2J", &[]));
    o.files
        .insert(path("/etc/app.conf"), file("\u{1b}]0;pwned\u{7}x\n", true));
    o.state = Some(state("h1", &[("greeter", "1.0.0")], &[("/etc/app.conf", "x")]));
    let obs = BTreeMap::from([("h1".to_owned(), Ok(o))]);
    let p = build(&loaded, &obs);
    for out in [
        plan::text::render(&p, TextOptions::default()),
        plan::markdown::render(&p, &Default::default()),
    ] {
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    }
}

#[test]
fn no_changes_line_is_exact() {
    let f = TestFleet::new();
    f.host("hosts/a.toml", "h1", "prod", "");
    let loaded = load(&f);
    let mut o = Observation::default();
    o.runtimes.insert("greeter".into(), runtime("1.0.0", &["1.0.0"]));
    let p = build(&loaded, &BTreeMap::from([("h1".to_owned(), Ok(o))]));
    assert!(!p.has_changes());
    assert!(
        plan::text::render(&p, TextOptions::default())
            .ends_with("No changes. The fleet matches the manifests.\n")
    );
}

/// Five prod hosts that all want greeter 1.0.0 over 0.9.0.
fn five_prod_hosts() -> (TestFleet, BTreeMap<String, Result<Observation, String>>) {
    let f = TestFleet::new();
    for i in 1..=5 {
        f.host("hosts/p.toml", &format!("web-0{i}"), "prod", "");
    }
    let obs = (1..=5)
        .map(|i| {
            let mut o = Observation::default();
            o.runtimes.insert("greeter".into(), runtime("0.9.0", &["0.9.0"]));
            (format!("web-0{i}"), Ok(o))
        })
        .collect();
    (f, obs)
}

#[test]
fn refused_hosts_are_shown_with_why_and_count_no_changes() {
    let (f, obs) = five_prod_hosts();
    let loaded = load(&f);
    let other = "state.json names fleet \"evil\u{1b}[2J\" and host \"web-01\": this host belongs to another fleet or name".to_owned();
    let extra = Extra {
        refused: BTreeMap::from([
            ("web-01", other.clone()),
            ("web-02", other.clone()),
            ("web-03", other),
            (
                "web-05",
                "written by a newer apply of this store (epoch 9 > 3); left untouched".into(),
            ),
        ]),
        ..Extra::default()
    };
    let p = build_with(&loaded, &obs, &extra);

    assert_eq!(p.summary.hosts_total, 5);
    assert_eq!(p.summary.hosts_changed, 1);
    assert_eq!(p.summary.hosts_unreachable, 0);
    assert_eq!(p.summary.change, 1, "refused hosts count no changes");
    assert_eq!(p.environments[0].waves, [vec!["web-04".to_owned()]]);
    let json: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
    for h in json["hosts"].as_array().unwrap() {
        if h["name"] == "web-04" {
            assert_eq!(h["refused"], serde_json::Value::Null);
            assert_eq!(h["wave"], 1);
        } else {
            assert!(h["refused"].is_string(), "{h}");
            assert_eq!(h["wave"], serde_json::Value::Null, "{h}");
            assert_eq!(h["changes"], serde_json::json!([]), "{h}");
            assert!(h["fingerprint"].is_string(), "a refused host was observed: {h}");
        }
    }
    assert!(!p.to_json().contains('\u{1b}'));
    // A saved plan confirms no changes for a refused host.
    let saved = plan::SavedPlan::new(p.clone());
    assert_eq!(saved.digests.keys().collect::<Vec<_>>(), ["web-04"]);

    let text = plan::text::render(&p, TextOptions::default());
    insta::assert_snapshot!(text);
    assert!(
        text.contains("  # hosts web-[01-03] (3 hosts) refused: state.json names fleet \"evil\\u{1b}[2J\""),
        "{text}"
    );
    assert!(
        text.contains("  # host web-05 refused: written by a newer apply"),
        "{text}"
    );
    let md = plan::markdown::render(&p, &Default::default());
    assert!(md.contains("# hosts web-[01-03] (3 hosts) refused: "), "{md}");
    assert!(md.contains("4 host(s) will be refused by apply"), "{md}");
    for out in [&text, &md] {
        assert!(!out.contains('\u{1b}'), "{out:?}");
    }
}

#[test]
fn an_unreadable_state_json_is_refused_unless_taking_over() {
    let (f, mut obs) = five_prod_hosts();
    let loaded = load(&f);
    if let Some(Ok(o)) = obs.get_mut("web-02") {
        o.state_error = Some("state.json is not valid JSON: expected value at line 1\u{7}".into());
    }
    let p = build(&loaded, &obs);
    let h = p.hosts.iter().find(|h| h.name == "web-02").unwrap();
    assert_eq!(
        h.refused.as_deref(),
        Some(
            "state.json cannot be read (state.json is not valid JSON: expected value at line 1\\u{7}); run `flotilla apply --take-over REASON` to start this host over"
        )
    );
    assert!(h.changes.is_empty() && h.wave.is_none());
    assert_eq!(p.summary.hosts_changed, 4);
    assert!(!p.environments[0].waves.concat().contains(&"web-02".to_owned()));

    // The caller's reason wins over the unreadable state.json.
    let extra = Extra {
        refused: BTreeMap::from([("web-02", "another store".to_owned())]),
        ..Extra::default()
    };
    let p = build_with(&loaded, &obs, &extra);
    let h = p.hosts.iter().find(|h| h.name == "web-02").unwrap();
    assert_eq!(h.refused.as_deref(), Some("another store"));

    // With --take-over the host is planned as fresh, and the plan still says why.
    let extra = Extra {
        take_over: true,
        ..Extra::default()
    };
    let p = build_with(&loaded, &obs, &extra);
    let h = p.hosts.iter().find(|h| h.name == "web-02").unwrap();
    assert_eq!(h.refused, None);
    assert_eq!(h.changes.len(), 1);
    assert!(h.wave.is_some());
    assert!(
        h.warnings.iter().any(|w| w.contains("not valid JSON")),
        "{:?}",
        h.warnings
    );
    assert_eq!(p.summary.hosts_changed, 5);

    // A host that could not be observed is unreachable, not refused.
    obs.insert("web-03".into(), Err("connection refused".into()));
    let extra = Extra {
        refused: BTreeMap::from([("web-03", "another store".to_owned())]),
        ..Extra::default()
    };
    let p = build_with(&loaded, &obs, &extra);
    let h = p.hosts.iter().find(|h| h.name == "web-03").unwrap();
    assert_eq!(
        (h.refused.as_deref(), h.error.as_deref()),
        (None, Some("connection refused"))
    );
    assert_eq!(p.summary.hosts_unreachable, 1);
}

#[test]
fn a_halted_rollout_is_shown_with_wave_reason_and_when() {
    let (f, obs) = five_prod_hosts();
    let loaded = load(&f);
    let extra = Extra {
        halts: BTreeMap::from([(
            "prod".to_owned(),
            plan::Halt {
                wave: 2,
                reason: "2 failures (max 1): web-03: health check failed\u{1b}[31m".into(),
                at: "2026-11-23T09:15:00Z".parse().unwrap(),
            },
        )]),
        ..Extra::default()
    };
    let p = build_with(&loaded, &obs, &extra);
    let env = &p.environments[0];
    let reason = "2 failures (max 1): web-03: health check failed\\u{1b}[31m";
    assert_eq!(
        env.halted.as_ref().map(|h| (h.wave, h.reason.as_str())),
        Some((2, reason))
    );
    assert_eq!(
        env.waiting.as_deref(),
        Some(
            format!("halted at wave 2: {reason}; run `flotilla apply --retry REASON` to start it again")
                .as_str()
        )
    );
    // The changes still count: they wait.
    assert_eq!(p.summary.change, 5);

    let json: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
    assert_eq!(
        json["environments"][0]["halted"],
        serde_json::json!({"wave": 2, "reason": reason, "at": "2026-11-23T09:15:00Z"})
    );
    let back: plan::Plan = serde_json::from_str(&p.to_json()).unwrap();
    assert_eq!(back.environments[0].halted, env.halted);

    let text = plan::text::render(&p, TextOptions::default());
    insta::assert_snapshot!(text);
    assert!(
        text.starts_with(&format!(
            "Environment prod · HALTED at wave 2 ({reason}, since 2026-11-23 09:15 UTC) · "
        )),
        "{text}"
    );
    let md = plan::markdown::render(&p, &Default::default());
    assert!(md.contains("The rollout in prod is halted at wave 2"), "{md}");
    assert!(
        md.contains("| prod | 5 | 3 | no window (any time) | halted |"),
        "{md}"
    );
    for out in [&text, &md] {
        assert!(!out.contains('\u{1b}'), "{out:?}");
    }

    // Only the environment that halted; without changes nothing waits on it.
    let mut converged = obs.clone();
    for o in converged.values_mut().flatten() {
        o.runtimes.insert("greeter".into(), runtime("1.0.0", &["1.0.0"]));
    }
    let p = build_with(&loaded, &converged, &extra);
    assert!(p.environments[0].halted.is_some());
    assert_eq!(p.environments[0].waiting, None);
}

/// Plans are pure functions of time: whatever the durations (validated ones stop at 100 years,
/// but the model holds any), instants and host clocks, building and rendering never panics.
#[test]
fn plans_never_panic_on_extreme_durations_and_times() {
    use flotilla::plan::promotion::PromotionRecord;
    use flotilla::schedule::window::{Freeze, WindowLength};
    use jiff::{SignedDuration, Timestamp};
    use proptest::prelude::*;

    let f = TestFleet::new();
    f.write(
        "environments/prod.toml",
        "[runtimes]\ngreeter = \"1.0.0\"\n\n[rollout]\nwaves = [1, \"50%\"]\n\n[[window]]\nstart = \"02:00\"\nduration = \"3h\"\ntimezone = \"Europe/Berlin\"\n",
    );
    f.host("hosts/s.toml", "stg-01", "staging", "");
    f.host("hosts/p.toml", "prod-01", "prod", "");
    f.host("hosts/p.toml", "prod-02", "prod", "");
    let loaded = load(&f);
    let mut obs = Observation::default();
    obs.runtimes
        .insert("greeter".into(), runtime("0.9.0", &["0.9.0"]));

    let instant = (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())
        .prop_map(|s| Timestamp::from_second(s).unwrap());
    let extreme_secs = prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0i64),
        any::<i64>(),
        -10_000i64..10_000
    ];
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        at in instant.clone(),
        record_at in instant.clone(),
        halt_at in instant,
        soak in any::<u64>(),
        bake in any::<u64>(),
        window_len in extreme_secs.clone(),
        clock in extreme_secs,
        freeze in prop::option::of((-400i64..400, 0i64..400)),
    )| {
        let mut fleet = loaded.fleet.clone();
        for env in fleet.environments.values_mut() {
            env.rollout.promotion_soak = std::time::Duration::from_secs(soak);
            env.rollout.bake = std::time::Duration::from_secs(bake);
            for w in &mut env.windows {
                w.length = WindowLength::Duration(SignedDuration::from_secs(window_len));
            }
            if let Some((from_days, len_days)) = freeze {
                let day = SignedDuration::from_hours(24);
                let from = at.checked_add(day * from_days as i32).unwrap_or(at);
                let until = from.checked_add(day * len_days as i32).unwrap_or(from);
                env.freezes.push(Freeze { from, until, reason: "x".into() });
            }
        }
        let mut o = obs.clone();
        o.clock = Some(clock);
        o.state_error = (clock % 3 == 0).then(|| "state.json is not valid".to_owned());
        let records = [PromotionRecord {
            environment: "staging".into(),
            runtime: "greeter".into(),
            version: "1.0.0".into(),
            at: record_at,
        }];
        let halts = BTreeMap::from([(
            "prod".to_owned(),
            plan::Halt { wave: usize::MAX, reason: "r".into(), at: halt_at },
        )]);
        let p = plan::build(&PlanInput {
            fleet: &fleet,
            revision: None,
            hosts: loaded
                .desired
                .iter()
                .map(|d| HostInput { desired: d, observed: Ok(&o), refused: None, take_over: clock % 2 == 0 })
                .collect(),
            at,
            observed_at: at,
            all_desired: &loaded.desired,
            promotions: &records,
            halts: &halts,
        });
        let _ = plan::text::render(&p, TextOptions::default());
        let _ = plan::markdown::render(&p, &Default::default());
        let back: plan::Plan = serde_json::from_str(&p.to_json()).unwrap();
        prop_assert_eq!(back.summary, p.summary);
    });
}

#[test]
fn manifest_text_cannot_inject_control_characters_either() {
    // An unmerged pull request's `content` with ESC[2K and a carriage return would erase the
    // line before it on a reviewer's terminal.
    let f = TestFleet::new();
    f.host("hosts/a.toml", "h1", "staging", "");
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/etc/app.conf\"\ncontent = \"rm -rf /\\u001b[2K\\rlooks harmless\\n\"\n",
    );
    let loaded = load(&f);
    let mut o = Observation::default();
    o.files.insert(path("/etc/app.conf"), file("old\n", true));
    o.state = Some(state("h1", &[], &[("/etc/app.conf", "x")]));
    let obs = BTreeMap::from([("h1".to_owned(), Ok(o))]);
    let p = build(&loaded, &obs);
    for out in [
        plan::text::render(&p, TextOptions::default()),
        plan::markdown::render(&p, &Default::default()),
        p.to_json(),
    ] {
        assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
        assert!(!out.contains("\\u001b"), "not in JSON either: {out}");
        assert!(
            out.contains("rm -rf /"),
            "the dangerous part stays visible: {out}"
        );
    }
}
