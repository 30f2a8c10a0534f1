//! The CI recipes in examples/ci/ (GitHub Actions, GitLab CI): they parse as YAML, every
//! `flotilla COMMAND --flag` they run exists, and they keep to the contract a reviewer relies
//! on (one sticky comment found by the preview's marker, validate, a drift job).

mod common;

use std::path::Path;

use common::{flotilla, run};

const FILES: &[&str] = &["github-actions.yml", "gitlab-ci.yml"];

/// The file as JSON, parsed by python3's yaml module (PyYAML); `None` (a visible skip) when
/// this machine has neither.
fn parse(path: &Path) -> Option<serde_json::Value> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(serde_json::from_slice(&o.stdout).expect("python's JSON")),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named 'yaml'") => {
            common::skip(
                "ci_examples",
                "python3 has no yaml module (apt-get install python3-yaml)",
            );
            None
        }
        Ok(o) => panic!(
            "{} is not valid YAML: {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            common::skip("ci_examples", &format!("python3 cannot run: {e}"));
            None
        }
    }
}

fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(m) => m.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Every `flotilla WORD …` invocation in shell text: (command, flags), up to the first shell
/// operator.
fn invocations(text: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let Some(cmd) = words.get(i + 1) else { continue };
            // A command is a bare lowercase word (`apply"` in an echoed message is not run).
            if *w != "flotilla" || !cmd.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                continue;
            }
            let flags = words[i + 2..]
                .iter()
                .take_while(|w| !matches!(**w, "|" | "||" | "&&" | ">" | ";" | ">>"))
                .filter(|w| w.starts_with("--"))
                .map(|w| w.split('=').next().unwrap_or(w).to_owned())
                .collect();
            found.push(((*cmd).to_owned(), flags));
        }
    }
    found
}

#[test]
fn ci_recipes_parse_and_run_only_commands_and_flags_that_exist() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci");
    for file in FILES {
        let path = dir.join(file);
        let Some(doc) = parse(&path) else { return };
        let mut texts = Vec::new();
        strings(&doc, &mut texts);
        let all: Vec<(String, Vec<String>)> = texts.iter().flat_map(|t| invocations(t)).collect();
        let commands: Vec<&str> = all.iter().map(|(c, _)| c.as_str()).collect();
        for needed in ["validate", "preview", "plan"] {
            assert!(
                commands.contains(&needed),
                "{file} never runs flotilla {needed}: {commands:?}"
            );
        }
        for (cmd, flags) in &all {
            let help = run(flotilla().args([cmd.as_str(), "--help"]));
            assert_eq!(
                help.code, 0,
                "{file}: `flotilla {cmd}` is not a command: {}",
                help.stderr
            );
            for flag in flags {
                assert!(
                    help.stdout.contains(&format!("{flag} ")) || help.stdout.contains(&format!("{flag}\n")),
                    "{file}: `flotilla {cmd}` has no flag {flag}"
                );
            }
        }
        let text = texts.join("\n");
        assert!(
            all.iter()
                .any(|(c, f)| c == "plan" && f.iter().any(|f| f == "--detailed-exitcode")),
            "{file}: the drift job runs plan --detailed-exitcode"
        );
        assert!(
            text.contains(flotilla::preview::render::MARKER),
            "{file}: finds its one comment by the preview's marker"
        );
    }
}
