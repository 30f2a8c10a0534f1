//! Validation (DESIGN §3) and layering (§2.3) through the public API, with fleets held in
//! memory: every check has a test that asserts the message, the file:line:col it points at and
//! the hint; layering tests check values and their provenance; snapshots fix the rendered
//! report of a few broken fleets; property tests feed garbage and mangled manifests to the
//! loader and the renderer, which must never panic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use flotilla::diagnostic::{Diagnostic, Sources, render};
use flotilla::manifest::model::TransportKind;
use flotilla::manifest::model::{HostPath, Pin};
use flotilla::manifest::{Fleet, LoadContext, ManifestFile, RepoEntry, RepoFiles};
use flotilla::names::{EnvName, RuntimeName, Version};
use flotilla::resolve::{DesiredHost, Layer, resolve_all};

// ---------------------------------------------------------------------------------------------
// An in-memory fleet repository.

/// Repository content by path, plus the paths that are symlinks.
#[derive(Clone, Default)]
struct MemRepo {
    blobs: BTreeMap<String, Vec<u8>>,
    symlinks: BTreeSet<String>,
}

impl RepoFiles for MemRepo {
    fn entry(&self, path: &str, read: bool) -> RepoEntry {
        if self.symlinks.contains(path) {
            return RepoEntry::Symlink(path.to_owned());
        }
        if let Some(bytes) = self.blobs.get(path) {
            return RepoEntry::File(read.then(|| Arc::from(bytes.as_slice())));
        }
        let dir = format!("{path}/");
        if self
            .blobs
            .keys()
            .chain(&self.symlinks)
            .any(|p| p.starts_with(&dir))
        {
            return RepoEntry::Directory;
        }
        RepoEntry::Missing
    }
}

const REPO_DIR: &str = "/srv/fleet";
const KEY: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
const SHA1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const SHA2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

const FLEET: &str = r#"[fleet]
name = "acme"
promotion = ["staging", "prod"]

[trust]
keys = ["RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"]
"#;

const STAGING: &str = r#"description = "Staging — Prüfumgebung"

[runtimes]
greeter = "1.0.0"
"#;

const PROD: &str = r#"description = "Production"

[runtimes]
greeter = "1.0.0"
"#;

const STAGING_HOSTS: &str = r#"[[host]]
name = "stg-01"
environment = "staging"
address = "10.0.0.1"
labels = { role = "web" }
"#;

const PROD_HOSTS: &str = r#"[[host]]
name = "prod-01"
environment = "prod"
address = "10.0.1.1"
labels = { role = "web", zone = "eu-1" }
"#;

fn greeter() -> String {
    format!(
        r#"description = "Says hello"

[[version]]
version = "1.0.0"
artifact = "artifacts/greeter-1.0.0.tgz"
sha256 = "{SHA1}"

[[version]]
version = "2.0.0"
artifact = "https://example.invalid/greeter-2.0.0.tgz"
sha256 = "{SHA2}"
"#
    )
}

/// A fleet's manifests and repository, built up and mutated per test.
#[derive(Clone)]
struct Manifests {
    files: BTreeMap<String, String>,
    repo: MemRepo,
}

impl Manifests {
    /// A small valid fleet: environments staging and prod, runtime `greeter` 1.0.0 (artifact
    /// in the repository) and 2.0.0 (a URL), one ssh host in each environment.
    fn minimal() -> Manifests {
        Manifests {
            files: BTreeMap::new(),
            repo: MemRepo::default(),
        }
        .set("flotilla.toml", FLEET)
        .set("environments/staging.toml", STAGING)
        .set("environments/prod.toml", PROD)
        .set("runtimes/greeter.toml", &greeter())
        .set("hosts/staging.toml", STAGING_HOSTS)
        .set("hosts/prod.toml", PROD_HOSTS)
        .blob("artifacts/greeter-1.0.0.tgz", b"not really a tarball")
        .blob("files/motd", b"welcome to {{ host.name }}\n")
    }

    fn set(mut self, path: &str, text: &str) -> Self {
        self.files.insert(path.to_owned(), text.to_owned());
        self
    }

    fn append(mut self, path: &str, text: &str) -> Self {
        self.files.entry(path.to_owned()).or_default().push_str(text);
        self
    }

    #[track_caller]
    fn replace(mut self, path: &str, from: &str, to: &str) -> Self {
        let text = self.files.get_mut(path).expect("no such manifest");
        assert!(text.contains(from), "`{from}` is not in {path}:\n{text}");
        *text = text.replacen(from, to, 1);
        self
    }

    fn remove(mut self, path: &str) -> Self {
        self.files.remove(path);
        self
    }

    fn blob(mut self, path: &str, bytes: &[u8]) -> Self {
        self.repo.blobs.insert(path.to_owned(), bytes.to_vec());
        self
    }

    fn symlink(mut self, path: &str) -> Self {
        self.repo.blobs.remove(path);
        self.repo.symlinks.insert(path.to_owned());
        self
    }

    fn manifest_files(&self) -> Vec<ManifestFile> {
        self.files
            .iter()
            .map(|(path, text)| ManifestFile {
                path: path.clone(),
                text: text.clone(),
            })
            .collect()
    }

    /// Loads and resolves; `Err` is the rendered report (no colour).
    fn load(&self) -> Result<Loaded, String> {
        let (loaded, diags, sources) = load_files(&self.manifest_files(), &self.repo);
        loaded.ok_or_else(|| render(&diags, &sources, false))
    }

    /// The rendered report of a fleet that must be invalid.
    #[track_caller]
    fn errors(&self) -> String {
        match self.load() {
            Ok(_) => panic!("the fleet was expected to be invalid, but it loaded"),
            Err(report) => report,
        }
    }

    /// The desired state of a fleet that must be valid.
    #[track_caller]
    fn desired(&self) -> Vec<DesiredHost> {
        match self.load() {
            Ok((_, desired)) => desired,
            Err(report) => panic!("the fleet was expected to be valid:\n{report}"),
        }
    }

    #[track_caller]
    fn host(&self, name: &str) -> DesiredHost {
        self.desired()
            .into_iter()
            .find(|h| h.name.as_str() == name)
            .unwrap_or_else(|| panic!("no host `{name}`"))
    }

    /// `path:line:col` (1-based, columns in characters) of the first `needle` in a manifest.
    #[track_caller]
    fn at(&self, path: &str, needle: &str) -> String {
        self.at_nth(path, needle, 0)
    }

    /// Like [`Manifests::at`], for the `n`-th (0-based) occurrence.
    #[track_caller]
    fn at_nth(&self, path: &str, needle: &str, n: usize) -> String {
        let text = self.files.get(path).expect("no such manifest");
        let (offset, _) = text
            .match_indices(needle)
            .nth(n)
            .unwrap_or_else(|| panic!("`{needle}` (#{n}) is not in {path}:\n{text}"));
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{path}:{line}:{col}")
    }
}

/// A valid fleet and every host's desired state.
type Loaded = (Fleet, Vec<DesiredHost>);

/// Validation and resolution as every command does them (`flotilla::load::check`).
fn load_files(files: &[ManifestFile], repo: &MemRepo) -> (Option<Loaded>, Vec<Diagnostic>, Sources) {
    let repo_dir = PathBuf::from(REPO_DIR);
    let ctx = LoadContext {
        repo_dir: Some(&repo_dir),
        home: None,
    };
    let c = flotilla::load::check(files, repo, &ctx);
    (c.valid, c.diagnostics, c.sources)
}

// ---------------------------------------------------------------------------------------------
// Assertions on the rendered report.

/// The report split into one block per diagnostic (each starts with `error: `), without the
/// final count line.
fn blocks(report: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in report.lines() {
        if line.starts_with("error: ") {
            out.push(String::new());
        }
        if let Some(last) = out.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    out.retain(|b| !b.starts_with("error: the manifests have "));
    out
}

/// Asserts that one diagnostic has `message` in its title, points at `at` (`file:line:col`)
/// and shows every text of `hints` (labels under the caret, `help:` lines).
#[track_caller]
fn assert_diag(report: &str, message: &str, at: &str, hints: &[&str]) {
    let arrow = format!("--> {at}\n");
    let found = blocks(report)
        .into_iter()
        .find(|b| b.lines().next().is_some_and(|title| title.contains(message)) && b.contains(&arrow));
    let Some(block) = found else {
        panic!("no diagnostic `{message}` at {at} in the report:\n{report}");
    };
    for hint in hints {
        assert!(block.contains(hint), "the diagnostic lacks `{hint}`:\n{block}");
    }
}

/// Asserts the number of diagnostics and that the count line agrees.
#[track_caller]
fn assert_count(report: &str, n: usize) {
    let count = format!(
        "error: the manifests have {n} problem{}; nothing was changed",
        if n == 1 { "" } else { "s" }
    );
    assert_eq!(
        report.lines().last(),
        Some(count.as_str()),
        "wrong count line in:\n{report}"
    );
    assert_eq!(
        blocks(report).len(),
        n,
        "wrong number of diagnostics in:\n{report}"
    );
}

fn env(name: &str) -> EnvName {
    name.parse().expect("env name")
}

fn rt(name: &str) -> RuntimeName {
    name.parse().expect("runtime name")
}

fn version(v: &str) -> Pin {
    Pin::Version(v.parse::<Version>().expect("version"))
}

fn file_text(h: &DesiredHost, path: &str) -> String {
    let f = &h.files[&HostPath::new(path).expect("path")];
    String::from_utf8(f.value.content.to_vec()).expect("utf-8")
}

// ---------------------------------------------------------------------------------------------
// The baseline.

#[test]
fn minimal_fleet_is_valid() {
    let m = Manifests::minimal();
    let (fleet, desired) = m.load().unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(fleet.name.as_str(), "acme");
    assert_eq!(fleet.promotion, [env("staging"), env("prod")]);
    assert_eq!(fleet.trust.keys, [KEY]);
    assert!(fleet.trust.require_signatures);
    let names: Vec<&str> = desired.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["prod-01", "stg-01"]);
    let stg = m.host("stg-01");
    assert_eq!(stg.runtimes[&rt("greeter")].value, version("1.0.0"));
    assert_eq!(stg.settings.transport.value, TransportKind::Ssh);
    assert_eq!(stg.settings.root.value, "/");
}

#[test]
fn missing_flotilla_toml() {
    let report = Manifests::minimal().remove("flotilla.toml").errors();
    assert!(
        report.starts_with("error: no flotilla.toml in the fleet directory\n"),
        "{report}"
    );
    assert!(
        report.contains("help: point Flotilla at the directory that holds flotilla.toml"),
        "{report}"
    );
    assert_count(&report, 1);
}

// ---------------------------------------------------------------------------------------------
// TOML syntax, unknown keys, types.

#[test]
fn toml_syntax_error_is_located() {
    let m = Manifests::minimal().append("environments/prod.toml", "\n[rollout\nbake = \"1m\"\n");
    let report = m.errors();
    assert_diag(
        &report,
        "unclosed table, expected `]`",
        // The caret sits just after `[rollout`.
        &m.at("environments/prod.toml", "\nbake"),
        &[],
    );
    assert_count(&report, 1);
}

#[test]
fn unknown_key_suggests_closest() {
    let m = Manifests::minimal()
        .append("environments/prod.toml", "\n[rollout]\nwavez = [1, \"100%\"]\n")
        .append("runtimes/greeter.toml", "\n[hooks]\nfrobnicate = \"x\"\n");
    let report = m.errors();
    assert_diag(
        &report,
        "unknown field `wavez`, expected one of `waves`, `max_parallel`, `max_failures`",
        &m.at("environments/prod.toml", "wavez"),
        &["^^^^^ did you mean `waves`?"],
    );
    // Nothing close: no guess, but still a label.
    assert_diag(
        &report,
        "unknown field `frobnicate`, expected `activate` or `remove`",
        &m.at("runtimes/greeter.toml", "frobnicate"),
        &["unknown key"],
    );
    assert_count(&report, 2);
}

#[test]
fn every_table_rejects_unknown_keys() {
    let cases: [(&str, &str, &str); 13] = [
        ("flotilla.toml", "[fleet]\n", "[fleet]\nbogus = 1\n"),
        ("flotilla.toml", "[trust]\n", "[trust]\nbogus = 1\n"),
        ("flotilla.toml", "", "[defaults]\nbogus = 1\n"),
        ("environments/prod.toml", "description", "bogus = 1\ndescription"),
        (
            "environments/prod.toml",
            "",
            "\n[[file]]\npath = \"/etc/x\"\ncontent = \"\"\nbogus = 1\n",
        ),
        (
            "environments/prod.toml",
            "",
            "\n[[group]]\nmatch = { role = \"web\" }\nbogus = 1\n",
        ),
        ("environments/prod.toml", "", "\n[rollout]\nbogus = 1\n"),
        (
            "environments/prod.toml",
            "",
            "\n[[window]]\nstart = \"02:00\"\nend = \"03:00\"\nbogus = 1\n",
        ),
        (
            "environments/prod.toml",
            "",
            "\n[[freeze]]\nfrom = \"2026-12-20T00:00:00Z\"\nuntil = \"2027-01-04T00:00:00Z\"\nbogus = 1\n",
        ),
        ("hosts/prod.toml", "[[host]]\n", "[[host]]\nbogus = 1\n"),
        (
            "runtimes/greeter.toml",
            "[[version]]\n",
            "[[version]]\nbogus = 1\n",
        ),
        (
            "runtimes/greeter.toml",
            "",
            "\n[health]\ncommand = \"true\"\nbogus = 1\n",
        ),
        ("runtimes/greeter.toml", "", "\n[hooks]\nbogus = 1\n"),
    ];
    for (path, anchor, with) in cases {
        let m = if anchor.is_empty() {
            Manifests::minimal().append(path, with)
        } else {
            Manifests::minimal().replace(path, anchor, with)
        };
        let report = m.errors();
        assert_diag(&report, "unknown field `bogus`", &m.at(path, "bogus"), &[]);
        assert_count(&report, 1);
    }
}

#[test]
fn wrong_types() {
    let m = Manifests::minimal()
        .append("flotilla.toml", "\n[defaults]\nport = \"22\"\n")
        .replace(
            "environments/prod.toml",
            "description",
            "auto_apply = 1\ndescription",
        )
        .replace("hosts/staging.toml", "labels", "canary = \"yes\"\nlabels")
        .append(
            "runtimes/greeter.toml",
            "\n[health]\ncommand = \"true\"\nretries = \"3\"\n",
        );
    let report = m.errors();
    // Plain words, never Rust types (`u16`, `u32`), each with how to write it instead.
    assert_diag(
        &report,
        "wrong type for `port`: expected a port number (1-65535), found the string \"22\"",
        &m.at("flotilla.toml", "\"22\""),
        &["help: remove the quotes: port = 22"],
    );
    assert_diag(
        &report,
        "wrong type for `auto_apply`: expected true or false, found the number 1",
        &m.at("environments/prod.toml", "1\n"),
        &["help: write auto_apply = true or auto_apply = false, without quotes"],
    );
    assert_diag(
        &report,
        "wrong type for `canary`: expected true or false, found the string \"yes\"",
        &m.at("hosts/staging.toml", "\"yes\""),
        &[],
    );
    assert_diag(
        &report,
        "wrong type for `retries`: expected a whole number of retries, such as 3, found the string \"3\"",
        &m.at("runtimes/greeter.toml", "\"3\""),
        &["help: remove the quotes: retries = 3"],
    );
    assert_count(&report, 4);
    for rust in ["u16", "u32", "struct Raw", "a sequence", "a map", "invalid type"] {
        assert!(!report.contains(rust), "`{rust}` reached the user:\n{report}");
    }

    // A runtime pin is a version string or `false`.
    let m = Manifests::minimal().replace("environments/prod.toml", "\"1.0.0\"", "true");
    let report = m.errors();
    assert_diag(
        &report,
        "`true` is not a version: give a version string, or false to remove the runtime",
        &m.at("environments/prod.toml", "true"),
        &[],
    );
    assert_count(&report, 1);
}

#[test]
fn type_errors_name_the_key_and_what_it_takes() {
    // One broken value per file: TOML deserialization stops at a file's first error.
    let cases: [(&str, &str, &str, &str, &str); 9] = [
        (
            "flotilla.toml",
            "\n[defaults]\nport = 70000\n",
            "70000",
            "`port` is out of range: expected a port number (1-65535), found the number 70000",
            "",
        ),
        (
            "flotilla.toml",
            "\n[defaults]\nkeep_versions = -1\n",
            "-1",
            "`keep_versions` is out of range: expected a whole number of versions to keep, such as 2, found the number -1",
            "",
        ),
        (
            "flotilla.toml",
            "\n[defaults]\nuser = 5\n",
            "5\n",
            "wrong type for `user`: expected a string in double quotes, found the number 5",
            "help: put it in double quotes: user = \"5\"",
        ),
        (
            "environments/prod.toml",
            "\n[rollout]\nmax_parallel = \"4\"\n",
            "\"4\"",
            "wrong type for `max_parallel`: expected a whole number of hosts, such as 10, found the string \"4\"",
            "help: remove the quotes: max_parallel = 4",
        ),
        (
            "environments/prod.toml",
            "\n[rollout]\nbake = 10\n",
            "10",
            "wrong type for `bake`: expected a duration in quotes, such as \"10s\", found the number 10",
            "help: put it in double quotes: bake = \"10\"",
        ),
        (
            "environments/prod.toml",
            "\n[rollout]\nwaves = 5\n",
            "5\n",
            "wrong type for `waves`: expected an array of waves, such as [1, \"50%\"], found the number 5",
            "",
        ),
        (
            "environments/prod.toml",
            "\n[rollout]\nmax_parallel = 1.5\n",
            "1.5",
            "wrong type for `max_parallel`: expected a whole number of hosts, such as 10, found the number 1.5",
            "",
        ),
        (
            "environments/prod.toml",
            "\n[[file]]\npath = \"/etc/x\"\ncontent = \"\"\ntemplate = \"false\"\n",
            "\"false\"",
            "wrong type for `template`: expected true or false, found the string \"false\"",
            "help: remove the quotes: template = false",
        ),
        (
            "environments/prod.toml",
            "\nbroken = 5\n",
            "5\n",
            "wrong type for `broken`: expected a version string, or false to remove the runtime, found the number 5",
            "",
        ),
    ];
    for (path, text, at, message, hint) in cases {
        let m = Manifests::minimal().append(path, text);
        let report = m.errors();
        let hints: Vec<&str> = [hint].into_iter().filter(|h| !h.is_empty()).collect();
        assert_diag(&report, message, &m.at(path, at), &hints);
        assert_count(&report, 1);
    }
    let m = Manifests::minimal().replace(
        "environments/prod.toml",
        "description",
        "rollout = 5\ndescription",
    );
    let report = m.errors();
    assert_diag(
        &report,
        "wrong type for `rollout`: expected a table, found the number 5",
        &m.at("environments/prod.toml", "5\n"),
        &[],
    );
    assert_count(&report, 1);
    // Port 0 is a u16, but no port: the message promised 1-65535.
    let m = Manifests::minimal().append("flotilla.toml", "\n[defaults]\nport = 0\n");
    let report = m.errors();
    assert_diag(
        &report,
        "`port` must be a port number (1-65535), not 0",
        &m.at("flotilla.toml", "0\n"),
        &[],
    );
    assert_count(&report, 1);
}

#[test]
fn single_brackets_for_an_array_of_tables_say_use_double() {
    let cases: [(&str, &str, &str); 6] = [
        ("hosts/prod.toml", "[[host]]", "host"),
        ("runtimes/greeter.toml", "", "version"),
        (
            "environments/prod.toml",
            "",
            "\n[file]\npath = \"/etc/x\"\ncontent = \"\"\n",
        ),
        (
            "environments/prod.toml",
            "",
            "\n[window]\nstart = \"02:00\"\nduration = \"1h\"\n",
        ),
        (
            "environments/prod.toml",
            "",
            "\n[freeze]\nfrom = \"2026-12-20T00:00:00Z\"\nuntil = \"2027-01-04T00:00:00Z\"\n",
        ),
        (
            "environments/prod.toml",
            "",
            "\n[group]\nmatch = { role = \"web\" }\n",
        ),
    ];
    for (path, anchor, with) in cases {
        let (m, key) = if with == "version" {
            // Both versions under one `[version]` would be a duplicate key instead.
            let text = format!(
                "[version]\nversion = \"2.0.0\"\nartifact = \"https://example.invalid/g.tgz\"\nsha256 = \"{SHA2}\"\n"
            );
            (Manifests::minimal().set(path, &text), with.to_owned())
        } else if anchor.is_empty() {
            let key = with.trim_start().trim_start_matches('[');
            let key = &key[..key.find(']').unwrap()];
            (Manifests::minimal().append(path, with), key.to_owned())
        } else {
            (
                Manifests::minimal().replace(path, anchor, &format!("[{with}]")),
                with.to_owned(),
            )
        };
        let report = m.errors();
        assert_diag(
            &report,
            &format!("use [[{key}]] (an array of tables), not [{key}]"),
            &m.at(path, &format!("[{key}]")),
            &[
                &format!("^^^ [{key}] is a single table"),
                &format!("help: write the header with double brackets: [[{key}]]"),
            ],
        );
        assert_count(&report, 1);
    }
}

#[test]
fn double_brackets_for_a_single_table_say_use_single() {
    let cases: [(&str, &str); 5] = [
        ("flotilla.toml", "fleet"),
        ("flotilla.toml", "trust"),
        ("environments/prod.toml", "runtimes"),
        ("runtimes/greeter.toml", "health"),
        ("runtimes/greeter.toml", "hooks"),
    ];
    for (path, key) in cases {
        let m = match key {
            "fleet" | "trust" | "runtimes" => {
                Manifests::minimal().replace(path, &format!("[{key}]"), &format!("[[{key}]]"))
            }
            "health" => Manifests::minimal().append(path, "\n[[health]]\ncommand = \"true\"\n"),
            _ => Manifests::minimal().append(path, "\n[[hooks]]\nactivate = \"true\"\n"),
        };
        let report = m.errors();
        assert_diag(
            &report,
            &format!("use [{key}] (a single table), not [[{key}]]"),
            &m.at(path, &format!("[[{key}]]")),
            &[&format!("help: write the header with single brackets: [{key}]")],
        );
        assert_count(&report, 1);
    }
}

#[test]
fn dotted_bare_key_says_quote_it() {
    let m = Manifests::minimal()
        .append("environments/prod.toml", "python-3.11-ml = \"2.0.0\"\n")
        .append(
            "hosts/staging.toml",
            "runtimes = { python-3.11-ml = \"2.0.0\" }\n",
        );
    let report = m.errors();
    let message = "expected a version but found a table: a bare key with dots such as python-3.11-ml";
    let hint = "quote it: \"python-3.11-ml\" = \"2.0.0\"";
    assert_diag(
        &report,
        message,
        &m.at("environments/prod.toml", "python-3"),
        &[hint],
    );
    assert_diag(&report, message, &m.at("hosts/staging.toml", "python-3"), &[hint]);
    assert_count(&report, 2);

    // Quoted, it is an ordinary runtime name.
    let m = Manifests::minimal()
        .set(
            "runtimes/python-3.11-ml.toml",
            &greeter().replace("1.0.0", "2.0.1"),
        )
        .blob("artifacts/greeter-2.0.1.tgz", b"x")
        .append("environments/prod.toml", "\"python-3.11-ml\" = \"2.0.0\"\n");
    assert_eq!(
        m.host("prod-01").runtimes[&rt("python-3.11-ml")].value,
        version("2.0.0")
    );
}

// ---------------------------------------------------------------------------------------------
// Names.

#[test]
fn names_that_would_escape_a_directory() {
    let hosts = "[[host]]\nname = \"..\"\nenvironment = \"prod\"\n\n\
                 [[host]]\nname = \"a/b\"\nenvironment = \"prod\"\n\n\
                 [[host]]\nname = \".hidden\"\nenvironment = \"prod\"\n\n\
                 [[host]]\nname = \"ok-01\"\nenvironment = \"prod\"\nlabels = { \"../x\" = \"y\" }\n";
    let versions = format!(
        "\n[[version]]\nversion = \"..\"\nartifact = \"https://x.invalid/a.tgz\"\nsha256 = \"{SHA1}\"\n\
         \n[[version]]\nversion = \"1/2\"\nartifact = \"https://x.invalid/a.tgz\"\nsha256 = \"{SHA1}\"\n\
         \n[[version]]\nversion = \".1\"\nartifact = \"https://x.invalid/a.tgz\"\nsha256 = \"{SHA1}\"\n\
         \n[[version]]\nversion = \"current\"\nartifact = \"https://x.invalid/a.tgz\"\nsha256 = \"{SHA1}\"\n"
    );
    let m = Manifests::minimal()
        .set("hosts/odd.toml", hosts)
        .append("runtimes/greeter.toml", &versions)
        .set("runtimes/.sneaky.toml", &greeter())
        .set("environments/../etc.toml", PROD)
        .replace("flotilla.toml", "\"acme\"", "\"acme/../x\"");
    let report = m.errors();
    let start = "a name must start with a letter or digit";
    let slash = "'/' is not allowed in a name: use letters, digits and . _ + -";
    assert_diag(
        &report,
        "invalid host name `..`",
        &m.at("hosts/odd.toml", "\"..\""),
        &[start],
    );
    assert_diag(
        &report,
        "invalid host name `a/b`",
        &m.at("hosts/odd.toml", "\"a/b\""),
        &[slash],
    );
    assert_diag(
        &report,
        "invalid host name `.hidden`",
        &m.at("hosts/odd.toml", "\".hidden\""),
        &[start],
    );
    assert_diag(
        &report,
        "invalid label key `../x`",
        &m.at("hosts/odd.toml", "\"../x\""),
        &[start],
    );
    assert_diag(
        &report,
        "invalid version `..`",
        &m.at("runtimes/greeter.toml", "\"..\""),
        &[start],
    );
    assert_diag(
        &report,
        "invalid version `1/2`",
        &m.at("runtimes/greeter.toml", "\"1/2\""),
        &[slash],
    );
    assert_diag(
        &report,
        "invalid version `.1`",
        &m.at("runtimes/greeter.toml", "\".1\""),
        &[start],
    );
    assert_diag(
        &report,
        "invalid version `current`",
        &m.at("runtimes/greeter.toml", "\"current\""),
        &["`current` is reserved (it names the active-version link)"],
    );
    assert_diag(
        &report,
        "invalid runtime name `.sneaky` (from the file name)",
        "runtimes/.sneaky.toml:1:1",
        &[start],
    );
    assert_diag(
        &report,
        "invalid environment name `../etc` (from the file name)",
        "environments/../etc.toml:1:1",
        &[start],
    );
    assert_diag(
        &report,
        "invalid fleet name `acme/../x`",
        &m.at("flotilla.toml", "\"acme/../x\""),
        &[slash],
    );
    assert_count(&report, 11);

    // `..` anywhere in a name is refused, not only at the start.
    let m = Manifests::minimal().replace("hosts/prod.toml", "\"prod-01\"", "\"prod..01\"");
    let report = m.errors();
    assert_diag(
        &report,
        "invalid host name `prod..01`",
        &m.at("hosts/prod.toml", "\"prod..01\""),
        &["a name may not contain `..`"],
    );
    assert_count(&report, 1);
}

// ---------------------------------------------------------------------------------------------
// Hosts.

#[test]
fn duplicate_host_names_point_at_both() {
    let m = Manifests::minimal().append(
        "hosts/prod.toml",
        "\n[[host]]\nname = \"stg-01\"\nenvironment = \"prod\"\naddress = \"10.0.1.2\"\n",
    );
    let report = m.errors();
    // hosts/prod.toml is read before hosts/staging.toml, so the later one is the duplicate.
    let first = m.at("hosts/prod.toml", "\"stg-01\"");
    assert_diag(
        &report,
        "duplicate host `stg-01`",
        &m.at("hosts/staging.toml", "\"stg-01\""),
        &[&format!("first defined at {first}")],
    );
    assert_count(&report, 1);
}

#[test]
fn duplicate_address_port_root() {
    let m = Manifests::minimal().append(
        "hosts/prod.toml",
        "\n[[host]]\nname = \"prod-02\"\nenvironment = \"prod\"\naddress = \"10.0.1.1\"\n",
    );
    let report = m.errors();
    assert_diag(
        &report,
        "hosts `prod-01` and `prod-02` share address 10.0.1.1, port 22 and root /",
        &m.at("hosts/prod.toml", "\"prod-02\""),
        &[
            "two hosts would manage the same machine and directories",
            "help: give each host its own address, port or root",
        ],
    );
    assert_count(&report, 1);

    // The address defaults to the name.
    let m = Manifests::minimal().append(
        "hosts/prod.toml",
        "\n[[host]]\nname = \"db-01\"\nenvironment = \"prod\"\n\n\
         [[host]]\nname = \"db-02\"\nenvironment = \"prod\"\naddress = \"db-01\"\n",
    );
    let report = m.errors();
    assert_diag(
        &report,
        "hosts `db-01` and `db-02` share address db-01, port 22 and root /",
        &m.at("hosts/prod.toml", "\"db-02\""),
        &[],
    );
    assert_count(&report, 1);

    // Another port or another root is another endpoint.
    for extra in ["port = 2222\n", "root = \"/srv/b\"\n"] {
        Manifests::minimal()
            .append(
                "hosts/prod.toml",
                &format!(
                    "\n[[host]]\nname = \"prod-02\"\nenvironment = \"prod\"\naddress = \"10.0.1.1\"\n{extra}"
                ),
            )
            .desired();
    }
}

#[test]
fn duplicate_address_port_root_after_normalisation() {
    let m = Manifests::minimal().append(
        "hosts/prod.toml",
        "root = \"/srv/a\"\n\n[[host]]\nname = \"prod-02\"\nenvironment = \"prod\"\naddress = \"10.0.1.1\"\nroot = \"/srv/a/\"\n",
    );
    let report = m.errors();
    assert_diag(
        &report,
        "hosts `prod-01` and `prod-02` share address 10.0.1.1, port 22",
        &m.at("hosts/prod.toml", "\"prod-02\""),
        &[],
    );
    assert_count(&report, 1);
}

#[test]
fn host_with_unknown_environment() {
    let m = Manifests::minimal()
        .replace("hosts/staging.toml", "\"staging\"", "\"stagign\"")
        .replace("hosts/prod.toml", "\"prod\"", "\"qa\"");
    let report = m.errors();
    assert_diag(
        &report,
        "unknown environment `stagign`",
        &m.at("hosts/staging.toml", "\"stagign\""),
        &["did you mean `staging`?"],
    );
    assert_diag(
        &report,
        "unknown environment `qa`",
        &m.at("hosts/prod.toml", "\"qa\""),
        &["no environments/<name>.toml defines it"],
    );
    assert_count(&report, 2);
}

#[test]
fn unknown_runtime_and_unknown_version() {
    let m = Manifests::minimal()
        .append("environments/prod.toml", "greter = \"1.0.0\"\n")
        .append(
            "environments/staging.toml",
            "\n[[group]]\nmatch = { role = \"web\" }\nruntimes = { java-17 = \"17.0.9\" }\n",
        )
        .append("hosts/prod.toml", "runtimes = { greeter = \"9.9.9\" }\n");
    let report = m.errors();
    assert_diag(
        &report,
        "unknown runtime `greter`",
        &m.at("environments/prod.toml", "greter"),
        &["did you mean `greeter`?"],
    );
    assert_diag(
        &report,
        "unknown runtime `java-17`",
        &m.at("environments/staging.toml", "java-17"),
        &["no runtimes/<name>.toml defines it"],
    );
    assert_diag(
        &report,
        "runtime `greeter` has no version `9.9.9`",
        &m.at("hosts/prod.toml", "\"9.9.9\""),
        &[
            "known versions: 1.0.0, 2.0.0",
            "help: add a [[version]] to runtimes/greeter.toml or pick a known one",
        ],
    );
    assert_count(&report, 3);
}

#[test]
fn broken_version_is_not_reported_as_missing() {
    let m = Manifests::minimal().replace("runtimes/greeter.toml", SHA1, "abc");
    let report = m.errors();
    assert_diag(
        &report,
        "`sha256` must be 64 hexadecimal digits",
        &m.at("runtimes/greeter.toml", "\"abc\""),
        &[],
    );
    // Only the real problem: the pins in both environments name a version that exists.
    assert_count(&report, 1);
}

// ---------------------------------------------------------------------------------------------
// Fleet: promotion and trust.

#[test]
fn promotion_unknown_and_repeated() {
    let m = Manifests::minimal().replace(
        "flotilla.toml",
        "[\"staging\", \"prod\"]",
        "[\"staging\", \"prd\", \"prod\", \"staging\", \"qa\"]",
    );
    let report = m.errors();
    assert_diag(
        &report,
        "`promotion` names unknown environment `prd`",
        &m.at("flotilla.toml", "\"prd\""),
        &[
            "did you mean `prod`?",
            "help: environments are the files under environments/",
        ],
    );
    assert_diag(
        &report,
        "`staging` appears twice in `promotion`",
        &m.at_nth("flotilla.toml", "\"staging\"", 1),
        &["each environment may appear once"],
    );
    assert_diag(
        &report,
        "`promotion` names unknown environment `qa`",
        &m.at("flotilla.toml", "\"qa\""),
        &["no such environment"],
    );
    assert_count(&report, 3);
}

#[test]
fn trust_key_does_not_parse() {
    let m = Manifests::minimal().replace("flotilla.toml", "keys = [", "keys = [\"RWnot-a-key\", ");
    let report = m.errors();
    assert_diag(
        &report,
        "trust key does not parse as a minisign public key",
        &m.at("flotilla.toml", "\"RWnot-a-key\""),
        &["help: use the base64 line of a minisign .pub file (it starts with RW)"],
    );
    assert_count(&report, 1);

    // A well-formed base64 string that is not a minisign key is refused as well.
    let m = Manifests::minimal().replace("flotilla.toml", "keys = [", "keys = [\"aGVsbG8gd29ybGQ=\", ");
    let report = m.errors();
    assert_diag(
        &report,
        "trust key does not parse as a minisign public key",
        &m.at("flotilla.toml", "\"aGVsbG8gd29ybGQ=\""),
        &[],
    );
    assert_count(&report, 1);
}

// ---------------------------------------------------------------------------------------------
// Rollout policy, windows, freezes.

#[test]
fn waves_decreasing_and_out_of_range() {
    let m = Manifests::minimal().append(
        "environments/prod.toml",
        "\n[rollout]\nwaves = [5, 2, \"50%\", \"25%\", 0, \"0%\"]\n",
    );
    let report = m.errors();
    let help = "help: each wave is a cumulative target: [1, \"25%\", \"100%\"]";
    assert_diag(
        &report,
        "waves must not decrease: 2 comes after 5",
        &m.at("environments/prod.toml", "2,"),
        &[help],
    );
    assert_diag(
        &report,
        "waves must not decrease: 25% comes after 50%",
        &m.at("environments/prod.toml", "\"25%\""),
        &[help],
    );
    let at_least_one = ["use 1 or more, or 1% to 100%"];
    assert_diag(
        &report,
        "a wave must contain at least one host",
        &m.at("environments/prod.toml", "0,"),
        &at_least_one,
    );
    assert_diag(
        &report,
        "a wave must contain at least one host",
        &m.at("environments/prod.toml", "\"0%\""),
        &at_least_one,
    );
    assert_count(&report, 4);

    for bad in ["\"150%\"", "\"50\"", "-1"] {
        let m = Manifests::minimal().append(
            "environments/prod.toml",
            &format!("\n[rollout]\nwaves = [1, {bad}]\n"),
        );
        let report = m.errors();
        let message = if bad == "-1" {
            "-1 is not a host count".to_owned()
        } else {
            format!(
                "`{}` is not a percentage: write \"N%\" with N from 0 to 100",
                bad.trim_matches('"')
            )
        };
        assert_diag(&report, &message, &m.at("environments/prod.toml", bad), &[]);
        assert_count(&report, 1);
    }

    // Counts then percentages are not compared; equal targets are allowed.
    let m = Manifests::minimal().append(
        "environments/prod.toml",
        "\n[rollout]\nwaves = [1, 1, \"25%\", \"25%\", \"100%\"]\n",
    );
    m.desired();
}

#[test]
fn bad_duration() {
    let m = Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[rollout]\nbake = \"5x\"\npromotion_soak = \"1m1h\"\n",
        )
        .append("flotilla.toml", "\n[defaults]\nconnect_timeout = \"10\"\n")
        .append(
            "runtimes/greeter.toml",
            "\n[health]\ncommand = \"true\"\ntimeout = \"1.5s\"\n",
        );
    let report = m.errors();
    let help = "help: write durations like \"90s\", \"5m\", \"2h\" or \"1h30m\"";
    assert_diag(
        &report,
        "invalid duration `5x`",
        &m.at("environments/prod.toml", "\"5x\""),
        &["unknown unit (use d, h, m, s or ms)", help],
    );
    assert_diag(
        &report,
        "invalid duration `1m1h`",
        &m.at("environments/prod.toml", "\"1m1h\""),
        &["units must go from largest to smallest, each once", help],
    );
    assert_diag(
        &report,
        "invalid duration `10`",
        &m.at("flotilla.toml", "\"10\""),
        &["a unit is missing after the number", help],
    );
    assert_diag(
        &report,
        "invalid duration `1.5s`",
        &m.at("runtimes/greeter.toml", "\"1.5s\""),
        &[help],
    );
    assert_count(&report, 4);
}

#[test]
fn durations_over_a_hundred_years_are_rejected() {
    // Every duration key goes through the same check; a window's duration too.
    let m = Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[rollout]\nbake = \"99999999d\"\npromotion_soak = \"36525d1s\"\n\
             \n[[window]]\nstart = \"02:00\"\nduration = \"40000d\"\n",
        )
        .append(
            "flotilla.toml",
            "\n[defaults]\nconnect_timeout = \"36526d\"\ncommand_timeout = \"876601h\"\n",
        )
        .append(
            "runtimes/greeter.toml",
            "\n[health]\ncommand = \"true\"\ntimeout = \"5s\"\ninterval = \"18446744073709551615s\"\n",
        );
    let report = m.errors();
    let label = "it is over 100 years, longer than a timestamp can hold";
    let help = "help: durations may be at most 100 years (\"36525d\"); use a shorter one";
    for (file, value) in [
        ("environments/prod.toml", "99999999d"),
        ("environments/prod.toml", "36525d1s"),
        ("environments/prod.toml", "40000d"),
        ("flotilla.toml", "36526d"),
        ("flotilla.toml", "876601h"),
        ("runtimes/greeter.toml", "18446744073709551615s"),
    ] {
        assert_diag(
            &report,
            &format!("invalid duration `{value}`"),
            &m.at(file, &format!("\"{value}\"")),
            &[label, help],
        );
    }
    assert_count(&report, 6);

    // Exactly 100 years is allowed (and then planned without overflow).
    Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[rollout]\nbake = \"36525d\"\npromotion_soak = \"36525d\"\n",
        )
        .append("flotilla.toml", "\n[defaults]\ncommand_timeout = \"36525d\"\n")
        .desired();
}

#[test]
fn bad_time_day_timezone() {
    let m = Manifests::minimal().append(
        "environments/prod.toml",
        "\n[[window]]\ndays = [\"sat\", \"sunday\"]\nstart = \"25:00\"\nduration = \"3h\"\ntimezone = \"Europe/Bielefeld\"\n\
         \n[[window]]\nstart = \"2:00\"\nend = \"05:00:00\"\n",
    );
    let report = m.errors();
    let clock = "write a 24-hour time such as \"02:00\"";
    assert_diag(
        &report,
        "invalid day `sunday`",
        &m.at("environments/prod.toml", "\"sunday\""),
        &["use mon, tue, wed, thu, fri, sat or sun"],
    );
    assert_diag(
        &report,
        "invalid `start` time `25:00`",
        &m.at("environments/prod.toml", "\"25:00\""),
        &[clock],
    );
    assert_diag(
        &report,
        "unknown time zone `Europe/Bielefeld`",
        &m.at("environments/prod.toml", "\"Europe/Bielefeld\""),
        &["use an IANA name such as \"Europe/Berlin\""],
    );
    assert_diag(
        &report,
        "invalid `start` time `2:00`",
        &m.at("environments/prod.toml", "\"2:00\""),
        &[clock],
    );
    assert_diag(
        &report,
        "invalid `end` time `05:00:00`",
        &m.at("environments/prod.toml", "\"05:00:00\""),
        &[clock],
    );
    assert_count(&report, 5);

    // Day names in any case, and a real zone.
    Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[[window]]\ndays = [\"Sat\", \"SUN\"]\nstart = \"23:30\"\nend = \"01:00\"\ntimezone = \"America/New_York\"\n",
        )
        .desired();
}

#[test]
fn window_zero_length_and_over_a_week() {
    let m = Manifests::minimal().append(
        "environments/prod.toml",
        "\n[[window]]\nstart = \"02:00\"\nduration = \"0s\"\n\
         \n[[window]]\nstart = \"02:00\"\nduration = \"7d1s\"\n",
    );
    let report = m.errors();
    assert_diag(
        &report,
        "invalid window: duration must be more than zero",
        &m.at("environments/prod.toml", "\"0s\""),
        &[],
    );
    assert_diag(
        &report,
        "invalid window: duration must be at most 7 days",
        &m.at("environments/prod.toml", "\"7d1s\""),
        &[],
    );
    assert_count(&report, 2);

    // Exactly a week is not longer than a week.
    Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[[window]]\nstart = \"02:00\"\nduration = \"7d\"\n",
        )
        .desired();
}

#[test]
fn window_both_or_neither_duration_end() {
    let m = Manifests::minimal().append(
        "environments/prod.toml",
        "\n[[window]]\nstart = \"02:00\"\nduration = \"3h\"\nend = \"05:00\"\n\
         \n[[window]]\nstart = \"04:00\"\n",
    );
    let report = m.errors();
    assert_diag(
        &report,
        "a window takes `duration` or `end`, not both",
        &m.at("environments/prod.toml", "\"05:00\""),
        &[],
    );
    assert_diag(
        &report,
        "a window needs `duration` or `end`",
        &m.at("environments/prod.toml", "\"04:00\""),
        &["help: add duration = \"3h\" or end = \"05:00\""],
    );
    assert_count(&report, 2);
}

#[test]
fn freeze_until_not_after_from() {
    let m = Manifests::minimal().append(
        "environments/prod.toml",
        "\n[[freeze]]\nfrom = \"2026-12-20T00:00:00Z\"\nuntil = \"2026-12-20T00:00:00Z\"\n\
         \n[[freeze]]\nfrom = \"2027-01-04T00:00:00Z\"\nuntil = \"2026-12-20T01:00:00+01:00\"\nreason = \"backwards\"\n",
    );
    let report = m.errors();
    let message = "a freeze's `until` must be after its `from`";
    assert_diag(
        &report,
        message,
        &m.at_nth("environments/prod.toml", "\"2026-12-20T00:00:00Z\"", 1),
        &[],
    );
    assert_diag(
        &report,
        message,
        &m.at("environments/prod.toml", "\"2026-12-20T01:00:00+01:00\""),
        &[],
    );
    assert_count(&report, 2);

    Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[[freeze]]\nfrom = \"2026-12-20T00:00:00Z\"\nuntil = \"2026-12-20T00:00:01Z\"\n",
        )
        .desired();
}

#[test]
fn bad_rfc3339() {
    let m = Manifests::minimal().append(
        "environments/prod.toml",
        "\n[[freeze]]\nfrom = \"2026-12-20\"\nuntil = \"2026-13-01T00:00:00Z\"\n\
         \n[[freeze]]\nfrom = \"next friday\"\nuntil = \"2027-01-04T00:00:00Z\"\n",
    );
    let report = m.errors();
    let hint = "write an RFC 3339 date such as \"2026-12-20T00:00:00Z\"";
    assert_diag(
        &report,
        "invalid `from` date `2026-12-20`",
        &m.at("environments/prod.toml", "\"2026-12-20\""),
        &[hint],
    );
    assert_diag(
        &report,
        "invalid `until` date `2026-13-01T00:00:00Z`",
        &m.at("environments/prod.toml", "\"2026-13-01T00:00:00Z\""),
        &[hint],
    );
    assert_diag(
        &report,
        "invalid `from` date `next friday`",
        &m.at("environments/prod.toml", "\"next friday\""),
        &[hint],
    );
    assert_count(&report, 3);
}

// ---------------------------------------------------------------------------------------------
// Managed files.

#[test]
fn file_path_relative_or_not_normalised() {
    let cases = [
        ("etc/motd", "it must be absolute (start with `/`)"),
        ("/etc/./motd", "it contains a `.` or `..` component"),
        ("/etc/../motd", "it contains a `.` or `..` component"),
        ("/etc//motd", "it contains `//`"),
        ("/etc/motd/", "it ends with `/`"),
        ("/etc/mo\\ttd", "it contains a control character"),
        ("/etc/mo\\u0000td", "it contains a control character"),
    ];
    let mut m = Manifests::minimal();
    for (path, _) in cases {
        m = m.append(
            "environments/prod.toml",
            &format!("\n[[file]]\npath = \"{path}\"\ncontent = \"x\"\n"),
        );
    }
    let report = m.errors();
    for (path, why) in cases {
        // Shown escaped, as in the TOML (a NUL as `\0`).
        let shown = path.replace("\\u0000", "\\0");
        assert_diag(
            &report,
            &format!("file path `{shown}` is not a normalised absolute path"),
            &m.at("environments/prod.toml", &format!("\"{path}\"")),
            &[why],
        );
    }
    assert_count(&report, cases.len());
}

#[test]
fn file_under_runtimes_dir_or_state_dir() {
    let m = Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[[file]]\npath = \"/opt/flotilla/runtimes/greeter/current/x\"\ncontent = \"x\"\n\
             \n[[file]]\npath = \"/var/lib/flotilla\"\ncontent = \"x\"\n\
             \n[[file]]\npath = \"/opt/flotilla/runtimes-old/x\"\ncontent = \"fine\"\n",
        )
        .append("environments/staging.toml", "\n[defaults]\nstate_dir = \"/srv/state\"\n\n[[file]]\npath = \"/srv/state/state.json\"\ncontent = \"{}\"\n");
    let report = m.errors();
    assert_diag(
        &report,
        "file `/opt/flotilla/runtimes/greeter/current/x` lies under `runtimes_dir` (/opt/flotilla/runtimes) on host `prod-01`",
        &m.at("environments/prod.toml", "\"/opt/flotilla/runtimes/greeter"),
        &[
            "Flotilla owns everything under runtimes_dir",
            "help: manage files outside Flotilla's own directories",
        ],
    );
    assert_diag(
        &report,
        "file `/var/lib/flotilla` lies under `state_dir` (/var/lib/flotilla) on host `prod-01`",
        &m.at("environments/prod.toml", "\"/var/lib/flotilla\""),
        &["Flotilla owns everything under state_dir"],
    );
    assert_diag(
        &report,
        "file `/srv/state/state.json` lies under `state_dir` (/srv/state) on host `stg-01`",
        &m.at("environments/staging.toml", "\"/srv/state/state.json\""),
        &[],
    );
    assert_count(&report, 3);
}

#[test]
fn content_and_source_both_or_neither() {
    let m = Manifests::minimal().append(
        "environments/prod.toml",
        "\n[[file]]\npath = \"/etc/a\"\ncontent = \"x\"\nsource = \"files/motd\"\n\
         \n[[file]]\npath = \"/etc/b\"\nmode = \"0600\"\n",
    );
    let report = m.errors();
    assert_diag(
        &report,
        "a file takes exactly one of `content` and `source`, not both",
        &m.at("environments/prod.toml", "\"x\""),
        &[],
    );
    assert_diag(
        &report,
        "file `/etc/b` has neither `content` nor `source`",
        &m.at("environments/prod.toml", "\"/etc/b\""),
        &["help: add content = \"...\" or source = \"files/...\""],
    );
    assert_count(&report, 2);
}

#[test]
fn missing_source_and_artifact() {
    let m = Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[[file]]\npath = \"/etc/a\"\nsource = \"files/nope\"\n\
             \n[[file]]\npath = \"/etc/b\"\nsource = \"files\"\n",
        )
        .append(
            "runtimes/greeter.toml",
            &format!(
                "\n[[version]]\nversion = \"3.0.0\"\nartifact = \"artifacts/greeter-3.0.0.tgz\"\nsha256 = \"{SHA1}\"\n\
                 \n[[version]]\nversion = \"4.0.0\"\nartifact = \"artifacts/greeter-1.0.0.tgz\"\nsha256 = \"{SHA1}\"\nsignature = \"sigs/4.minisig\"\n"
            ),
        );
    let report = m.errors();
    assert_diag(
        &report,
        "`files/nope` does not exist",
        &m.at("environments/prod.toml", "\"files/nope\""),
        &["`source` must name a file in the repository"],
    );
    assert_diag(
        &report,
        "`files` is a directory",
        &m.at("environments/prod.toml", "\"files\""),
        &["`source` must name a file in the repository"],
    );
    assert_diag(
        &report,
        "`artifacts/greeter-3.0.0.tgz` does not exist",
        &m.at("runtimes/greeter.toml", "\"artifacts/greeter-3.0.0.tgz\""),
        &["`artifact` must name a file in the repository"],
    );
    assert_diag(
        &report,
        "`sigs/4.minisig` does not exist",
        &m.at("runtimes/greeter.toml", "\"sigs/4.minisig\""),
        &["`signature` must name a file in the repository"],
    );
    assert_count(&report, 4);
}

#[test]
fn source_and_artifact_paths_stay_inside_the_repository() {
    let m = Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[[file]]\npath = \"/etc/a\"\nsource = \"../secrets/key\"\n\
             \n[[file]]\npath = \"/etc/b\"\nsource = \"/etc/shadow\"\n\
             \n[[file]]\npath = \"/etc/c\"\nsource = \"files//motd\"\n",
        )
        .append(
            "runtimes/greeter.toml",
            &format!(
                "\n[[version]]\nversion = \"3.0.0\"\nartifact = \"./artifacts/greeter-1.0.0.tgz\"\nsha256 = \"{SHA1}\"\n\
                 \n[[version]]\nversion = \"4.0.0\"\nartifact = \"ftp://example.invalid/greeter.tgz\"\nsha256 = \"{SHA1}\"\n"
            ),
        );
    let report = m.errors();
    let label = "no leading `/`, no `.` or `..`, no `//`";
    for needle in ["\"../secrets/key\"", "\"/etc/shadow\"", "\"files//motd\""] {
        assert_diag(
            &report,
            "`source` must be a normalised path relative to the fleet root",
            &m.at("environments/prod.toml", needle),
            &[label],
        );
    }
    assert_diag(
        &report,
        "`artifact` must be a normalised path relative to the fleet root",
        &m.at("runtimes/greeter.toml", "\"./artifacts"),
        &[label],
    );
    assert_diag(
        &report,
        "unsupported URL scheme in `artifact`",
        &m.at("runtimes/greeter.toml", "\"ftp://"),
        &["use https://, file:// or a repository path"],
    );
    assert_count(&report, 5);
}

#[test]
fn symlinked_source_refused() {
    let m = Manifests::minimal()
        .symlink("files/motd")
        .symlink("artifacts/greeter-3.0.0.tgz")
        .append("environments/prod.toml", "\n[[file]]\npath = \"/etc/motd\"\nsource = \"files/motd\"\n")
        .append(
            "runtimes/greeter.toml",
            &format!(
                "\n[[version]]\nversion = \"3.0.0\"\nartifact = \"artifacts/greeter-3.0.0.tgz\"\nsha256 = \"{SHA1}\"\n"
            ),
        );
    let report = m.errors();
    let label = "symlinks are refused: they could point outside the repository";
    assert_diag(
        &report,
        "`files/motd` is a symlink",
        &m.at("environments/prod.toml", "\"files/motd\""),
        &[label],
    );
    assert_diag(
        &report,
        "`artifacts/greeter-3.0.0.tgz` is a symlink",
        &m.at("runtimes/greeter.toml", "\"artifacts/greeter-3.0.0.tgz\""),
        &[label],
    );
    assert_count(&report, 2);
}

#[test]
fn sha256_not_64_hex() {
    let m = Manifests::minimal().replace("runtimes/greeter.toml", SHA2, "abc123");
    let report = m.errors();
    assert_diag(
        &report,
        "`sha256` must be 64 hexadecimal digits",
        &m.at("runtimes/greeter.toml", "\"abc123\""),
        &["6 characters given"],
    );
    assert_count(&report, 1);

    let not_hex = format!("{}g", &SHA2[1..]);
    let m = Manifests::minimal().replace("runtimes/greeter.toml", SHA2, &not_hex);
    let report = m.errors();
    assert_diag(
        &report,
        "`sha256` must be 64 hexadecimal digits",
        &m.at("runtimes/greeter.toml", &format!("\"{not_hex}\"")),
        &["64 characters given"],
    );
    assert_count(&report, 1);

    let long = format!("{SHA2}2");
    let m = Manifests::minimal().replace("runtimes/greeter.toml", SHA2, &long);
    let report = m.errors();
    assert_diag(
        &report,
        "`sha256` must be 64 hexadecimal digits",
        &m.at("runtimes/greeter.toml", &format!("\"{long}\"")),
        &["65 characters given"],
    );
    assert_count(&report, 1);

    // Upper-case hex is accepted and stored lower-case.
    let (fleet, _) = Manifests::minimal()
        .replace("runtimes/greeter.toml", SHA2, &"AB".repeat(32))
        .load()
        .unwrap_or_else(|r| panic!("{r}"));
    let v2 = &fleet.runtimes[&rt("greeter")].versions[&"2.0.0".parse::<Version>().unwrap()];
    assert_eq!(v2.sha256, "ab".repeat(32));
}

// ---------------------------------------------------------------------------------------------
// Templates.

#[test]
fn unknown_template_variable() {
    let m = Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[[file]]\npath = \"/etc/a\"\ntemplate = true\ncontent = \"{{ host.secret }}\"\n\
             \n[[file]]\npath = \"/etc/b\"\ntemplate = true\ncontent = \"{{ env.HOME }}\"\n\
             \n[[file]]\npath = \"/etc/c\"\ntemplate = true\ncontent = \"{{ host.name \"\n",
        )
        .blob("files/bad.tmpl", b"hello {{ fleet.owner }}\n")
        .append(
            "hosts/prod.toml",
            "\n[[host.file]]\npath = \"/etc/d\"\ntemplate = true\nsource = \"files/bad.tmpl\"\n",
        );
    let report = m.errors();
    let help =
        "help: templates may use host.name, host.address, host.environment, host.labels.KEY and fleet.name";
    assert_diag(
        &report,
        "unknown template variable `host.secret`",
        &m.at("environments/prod.toml", "\"{{ host.secret }}\""),
        &[help],
    );
    assert_diag(
        &report,
        "unknown template variable `env.HOME`",
        &m.at("environments/prod.toml", "\"{{ env.HOME }}\""),
        &[help],
    );
    assert_diag(
        &report,
        "`{{` is not closed by `}}`",
        &m.at("environments/prod.toml", "\"{{ host.name \""),
        &[],
    );
    assert_diag(
        &report,
        "unknown template variable `fleet.owner`",
        &m.at("hosts/prod.toml", "\"files/bad.tmpl\""),
        &[help],
    );
    assert_count(&report, 4);
}

#[test]
fn template_label_missing_on_host() {
    let m = Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[[file]]\npath = \"/etc/zone\"\ntemplate = true\ncontent = \"zone={{ host.labels.zone }}\\n\"\n",
        )
        .append(
            "hosts/prod.toml",
            "\n[[host]]\nname = \"prod-02\"\nenvironment = \"prod\"\naddress = \"10.0.1.2\"\nlabels = { role = \"web\" }\n",
        );
    let report = m.errors();
    // prod-01 has the label; prod-02 does not.
    assert_diag(
        &report,
        "host `prod-02` has no label `zone`, which this template uses",
        &m.at("environments/prod.toml", "\"/etc/zone\""),
        &[
            "uses {{ host.labels.zone }}",
            "help: add `zone` to the labels of host `prod-02`, or stop using it here",
        ],
    );
    assert_count(&report, 1);
}

#[test]
fn template_variables_only_with_template_true() {
    let m = Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[[file]]\npath = \"/etc/literal\"\ncontent = \"{{ x }} {{ host.secret }} {{\"\n\
             \n[[file]]\npath = \"/etc/literal-source\"\nsource = \"files/motd\"\n\
             \n[[file]]\npath = \"/etc/rendered\"\ntemplate = true\n\
             content = \"{{host.name}} {{ host.address }} {{ host.environment }} {{ host.labels.zone }} {{ fleet.name }} ✓\\n\"\n\
             \n[[file]]\npath = \"/etc/rendered-source\"\ntemplate = true\nsource = \"files/motd\"\n",
        );
    let h = m.host("prod-01");
    assert_eq!(file_text(&h, "/etc/literal"), "{{ x }} {{ host.secret }} {{");
    assert_eq!(
        file_text(&h, "/etc/literal-source"),
        "welcome to {{ host.name }}\n"
    );
    assert_eq!(
        file_text(&h, "/etc/rendered"),
        "prod-01 10.0.1.1 prod eu-1 acme ✓\n"
    );
    assert_eq!(file_text(&h, "/etc/rendered-source"), "welcome to prod-01\n");
    let f = &h.files[&HostPath::new("/etc/rendered").unwrap()].value;
    assert_eq!(
        f.sha256,
        flotilla::resolve::sha256_hex("prod-01 10.0.1.1 prod eu-1 acme ✓\n".as_bytes())
    );
}

// ---------------------------------------------------------------------------------------------
// Connection settings.

#[test]
fn relative_root_for_ssh() {
    let m = Manifests::minimal().append("hosts/prod.toml", "root = \"roots/prod-01\"\n");
    let report = m.errors();
    assert_diag(
        &report,
        "host `prod-01`: `root` must be absolute for the ssh transport",
        &m.at("hosts/prod.toml", "\"prod-01\""),
        &[
            "root = \"roots/prod-01\" comes from host",
            "help: only the local transport reads a relative root (relative to the fleet root)",
        ],
    );
    assert_count(&report, 1);

    // From the fleet's defaults: every ssh host is reported, and the label names the layer.
    let m = Manifests::minimal().append("flotilla.toml", "\n[defaults]\nroot = \"roots\"\n");
    let report = m.errors();
    for (file, host) in [("hosts/prod.toml", "prod-01"), ("hosts/staging.toml", "stg-01")] {
        assert_diag(
            &report,
            &format!("host `{host}`: `root` must be absolute for the ssh transport"),
            &m.at(file, &format!("\"{host}\"")),
            &["root = \"roots\" comes from flotilla.toml [defaults]"],
        );
    }
    assert_count(&report, 2);

    // Accepted for local, and kept as written (relative to the fleet root).
    let m = Manifests::minimal().append(
        "hosts/prod.toml",
        "root = \"roots/prod-01\"\ntransport = \"local\"\n",
    );
    let h = m.host("prod-01");
    assert_eq!(h.settings.transport.value, TransportKind::Local);
    assert_eq!(h.settings.root.value, "roots/prod-01");
    assert_eq!(h.settings.root.from, Layer::Host);
}

#[test]
fn identity_file_inside_repository() {
    let m = Manifests::minimal()
        .append(
            "flotilla.toml",
            "\n[defaults]\nidentity_file = \"/srv/fleet/keys/id_ed25519\"\nknown_hosts = \"/srv/fleet/known_hosts\"\n",
        )
        .append("environments/prod.toml", "\n[defaults]\nidentity_file = \"keys/id_ed25519\"\n")
        .append("hosts/staging.toml", "known_hosts = \"./known_hosts\"\n");
    let report = m.errors();
    let help = "help: keep keys outside the fleet repository, e.g. under ~/.ssh/";
    assert_diag(
        &report,
        "`identity_file` may not point inside the repository",
        &m.at("flotilla.toml", "\"/srv/fleet/keys/id_ed25519\""),
        &["/srv/fleet/keys/id_ed25519 is inside /srv/fleet", help],
    );
    assert_diag(
        &report,
        "`known_hosts` may not point inside the repository",
        &m.at("flotilla.toml", "\"/srv/fleet/known_hosts\""),
        &["/srv/fleet/known_hosts is inside /srv/fleet", help],
    );
    let relative = "relative paths would point into the repository";
    assert_diag(
        &report,
        "`identity_file` must be an absolute path or start with `~/`",
        &m.at("environments/prod.toml", "\"keys/id_ed25519\""),
        &[relative],
    );
    assert_diag(
        &report,
        "`known_hosts` must be an absolute path or start with `~/`",
        &m.at("hosts/staging.toml", "\"./known_hosts\""),
        &[relative],
    );
    assert_count(&report, 4);

    // Outside the repository (a sibling directory with the same prefix included), or `~/`.
    let h = Manifests::minimal()
        .append(
            "flotilla.toml",
            "\n[defaults]\nidentity_file = \"/srv/fleet-keys/id\"\nknown_hosts = \"~/.ssh/known_hosts\"\n",
        )
        .host("prod-01");
    assert_eq!(
        h.settings.identity_file.value.as_deref(),
        Some("/srv/fleet-keys/id")
    );
    assert_eq!(
        h.settings.known_hosts.value.as_deref(),
        Some("~/.ssh/known_hosts")
    );
    assert_eq!(h.settings.known_hosts.from, Layer::Fleet);
}

#[test]
fn identity_file_inside_repository_via_dotdot() {
    let m = Manifests::minimal().append(
        "flotilla.toml",
        "\n[defaults]\nidentity_file = \"/srv/other/../fleet/keys/id\"\n",
    );
    let report = m.errors();
    assert_diag(
        &report,
        "`identity_file` may not point inside the repository",
        &m.at("flotilla.toml", "\"/srv/other/../fleet/keys/id\""),
        &[],
    );
    assert_count(&report, 1);
}

// ---------------------------------------------------------------------------------------------
// Everything at once.

#[test]
fn all_problems_reported_at_once() {
    let m = Manifests::minimal()
        .replace("flotilla.toml", "keys = [", "keys = [\"RWbroken\", ")
        .append("environments/prod.toml", "\n[rollout]\nwavez = [1]\n")
        .append("environments/staging.toml", "\n[rollout]\nbake = \"forever\"\n")
        .replace("hosts/staging.toml", "\"staging\"", "\"staing\"")
        .replace("runtimes/greeter.toml", SHA2, "123")
        .set(
            "hosts/more/extra.toml",
            "[[host]]\nname = \"x y\"\nenvironment = \"prod\"\n",
        );
    let report = m.errors();
    assert_diag(
        &report,
        "trust key does not parse as a minisign public key",
        &m.at("flotilla.toml", "\"RWbroken\""),
        &[],
    );
    assert_diag(
        &report,
        "unknown field `wavez`",
        &m.at("environments/prod.toml", "wavez"),
        &["did you mean `waves`?"],
    );
    assert_diag(
        &report,
        "invalid duration `forever`",
        &m.at("environments/staging.toml", "\"forever\""),
        &[],
    );
    assert_diag(
        &report,
        "unknown environment `staing`",
        &m.at("hosts/staging.toml", "\"staing\""),
        &["did you mean `staging`?"],
    );
    assert_diag(
        &report,
        "invalid host name `x y`",
        &m.at("hosts/more/extra.toml", "\"x y\""),
        &["' ' is not allowed in a name"],
    );
    assert_diag(
        &report,
        "`sha256` must be 64 hexadecimal digits",
        &m.at("runtimes/greeter.toml", "\"123\""),
        &["3 characters given"],
    );
    assert_count(&report, 6);

    // Sorted by file, then by position.
    let order: Vec<String> = blocks(&report)
        .iter()
        .filter_map(|b| b.lines().find(|l| l.contains("--> ")).map(str::to_owned))
        .collect();
    let files: Vec<&str> = order
        .iter()
        .map(|l| l.split("--> ").nth(1).unwrap().split(':').next().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "environments/prod.toml",
            "environments/staging.toml",
            "flotilla.toml",
            "hosts/more/extra.toml",
            "hosts/staging.toml",
            "runtimes/greeter.toml"
        ]
    );
}

#[test]
fn broken_flotilla_toml_does_not_hide_other_problems() {
    let m = Manifests::minimal()
        .append("flotilla.toml", "\nbogus = 1\n")
        .replace("hosts/staging.toml", "\"staging\"", "\"stage\"")
        .append("environments/prod.toml", "greter = \"1.0.0\"\n");
    let report = m.errors();
    assert_diag(
        &report,
        "unknown field `bogus`",
        &m.at("flotilla.toml", "bogus"),
        &[],
    );
    assert_diag(
        &report,
        "unknown environment `stage`",
        &m.at("hosts/staging.toml", "\"stage\""),
        &[],
    );
    assert_diag(
        &report,
        "unknown runtime `greter`",
        &m.at("environments/prod.toml", "greter"),
        &[],
    );
    assert_count(&report, 3);
}

#[test]
#[ignore = "library limitation: each file is deserialised with serde, which stops at the first error, so \
            a second typo in the same file is only reported after the first is fixed \
            (src/manifest/validate/toml_errors.rs parse_toml)"]
fn two_unknown_keys_in_one_file_both_reported() {
    let m = Manifests::minimal().append(
        "environments/prod.toml",
        "\n[rollout]\nwavez = [1]\nbaek = \"1m\"\n",
    );
    let report = m.errors();
    assert_diag(
        &report,
        "unknown field `wavez`",
        &m.at("environments/prod.toml", "wavez"),
        &[],
    );
    assert_diag(
        &report,
        "unknown field `baek`",
        &m.at("environments/prod.toml", "baek"),
        &[],
    );
    assert_count(&report, 2);
}

// ---------------------------------------------------------------------------------------------
// Layering: fleet defaults → environment → matching groups in file order → host.

/// A fleet that sets something at every layer of prod-01 (labels role=web, zone=eu-1).
fn layered() -> Manifests {
    Manifests::minimal()
        .append(
            "flotilla.toml",
            "\n[defaults]\nuser = \"fleet-user\"\nport = 2200\nconnect_timeout = \"20s\"\ncommand_timeout = \"1m\"\nkeep_versions = 5\n",
        )
        .append(
            "environments/prod.toml",
            r#"
[defaults]
port = 2201
command_timeout = "2m"
become = "sudo"

[[file]]
path = "/etc/app.conf"
content = "from env\n"

[[file]]
path = "/etc/env-only"
content = "env\n"

[[group]]
match = { role = "web" }
command_timeout = "3m"
keep_versions = 3
runtimes = { greeter = "2.0.0" }

[[group.file]]
path = "/etc/app.conf"
content = "from group 1\n"

[[group]]
match = { role = "db" }
user = "db-user"
keep_versions = 9
runtimes = { greeter = false }

[[group.file]]
path = "/etc/db-only"
content = "db\n"

[[group]]
match = { role = "web", zone = "eu-1" }
keep_versions = 4

[[group.file]]
path = "/etc/group-only"
content = "group 3\n"

[[group]]
match = { role = "web", zone = "us-1" }
user = "us-user"
"#,
        )
        .append("hosts/prod.toml", "command_timeout = \"4m\"\n")
}

#[test]
fn settings_layer_fleet_env_groups_host() {
    let h = layered().host("prod-01");
    let s = &h.settings;
    let prod = env("prod");
    // Fleet defaults, unless a later layer sets the key.
    assert_eq!(
        (s.user.value.as_str(), &s.user.from),
        ("fleet-user", &Layer::Fleet)
    );
    assert_eq!(s.connect_timeout.value, std::time::Duration::from_secs(20));
    assert_eq!(s.connect_timeout.from, Layer::Fleet);
    // The environment overrides the fleet.
    assert_eq!(
        (s.port.value, &s.port.from),
        (2201, &Layer::Environment(prod.clone()))
    );
    assert_eq!(s.become_.from, Layer::Environment(prod.clone()));
    // Matching groups in file order: #3 wins over #1; #2 and #4 do not match.
    assert_eq!(
        (s.keep_versions.value, &s.keep_versions.from),
        (4, &Layer::Group(prod.clone(), 3))
    );
    // The host wins over everything.
    assert_eq!(s.command_timeout.value, std::time::Duration::from_secs(240));
    assert_eq!(s.command_timeout.from, Layer::Host);
    // Nobody set these.
    assert_eq!((s.root.value.as_str(), &s.root.from), ("/", &Layer::Default));
    assert_eq!(s.runtimes_dir.value.as_str(), "/opt/flotilla/runtimes");
    assert_eq!(s.runtimes_dir.from, Layer::Default);
    assert_eq!(s.state_dir.value.as_str(), "/var/lib/flotilla");
    assert_eq!(s.transport.from, Layer::Default);
    assert_eq!(s.identity_file.value, None);

    // The other environment sees only the fleet layer.
    let stg = layered().host("stg-01");
    assert_eq!(stg.settings.port.value, 2200);
    assert_eq!(stg.settings.port.from, Layer::Fleet);
    assert_eq!(stg.settings.keep_versions.value, 5);
    assert_eq!(
        stg.settings.command_timeout.value,
        std::time::Duration::from_secs(60)
    );
}

#[test]
fn non_matching_groups_ignored() {
    // prod-01 is role=web, zone=eu-1: group #2 (role=db) and #4 (zone=us-1) must not apply,
    // even though #4 matches one of its two labels.
    let h = layered().host("prod-01");
    assert_eq!(h.settings.user.value, "fleet-user");
    assert_ne!(h.runtimes[&rt("greeter")].value, Pin::Remove);
    assert!(!h.files.contains_key(&HostPath::new("/etc/db-only").unwrap()));

    // A host without labels matches only label-less groups.
    let m = layered().append(
        "hosts/prod.toml",
        "\n[[host]]\nname = \"prod-02\"\nenvironment = \"prod\"\naddress = \"10.0.1.2\"\n",
    );
    let h = m.host("prod-02");
    assert_eq!(h.settings.keep_versions.value, 5);
    assert_eq!(h.settings.keep_versions.from, Layer::Fleet);
    assert_eq!(h.runtimes[&rt("greeter")].value, version("1.0.0"));
    assert_eq!(h.runtimes[&rt("greeter")].from, Layer::Environment(env("prod")));
    assert_eq!(file_text(&h, "/etc/app.conf"), "from env\n");
    assert!(!h.files.contains_key(&HostPath::new("/etc/group-only").unwrap()));
}

#[test]
fn runtime_pins_layer_and_false_removes() {
    let prod = env("prod");
    let h = layered().host("prod-01");
    // Environment says 1.0.0, group #1 says 2.0.0.
    assert_eq!(h.runtimes[&rt("greeter")].value, version("2.0.0"));
    assert_eq!(h.runtimes[&rt("greeter")].from, Layer::Group(prod.clone(), 1));

    // `false` on the host removes it, whatever the layers below say.
    let h = layered()
        .append("hosts/prod.toml", "runtimes = { greeter = false }\n")
        .host("prod-01");
    assert_eq!(h.runtimes[&rt("greeter")].value, Pin::Remove);
    assert_eq!(h.runtimes[&rt("greeter")].from, Layer::Host);

    // `false` in a matching group removes it too; a host pin brings it back.
    let m = Manifests::minimal().append(
        "environments/prod.toml",
        "\n[[group]]\nmatch = { zone = \"eu-1\" }\nruntimes = { greeter = false }\n",
    );
    let h = m.host("prod-01");
    assert_eq!(h.runtimes[&rt("greeter")].value, Pin::Remove);
    assert_eq!(h.runtimes[&rt("greeter")].from, Layer::Group(prod.clone(), 1));
    let h = m
        .append("hosts/prod.toml", "runtimes = { greeter = \"2.0.0\" }\n")
        .host("prod-01");
    assert_eq!(h.runtimes[&rt("greeter")].value, version("2.0.0"));
    assert_eq!(h.runtimes[&rt("greeter")].from, Layer::Host);
}

#[test]
fn files_keyed_by_path_later_layers_win() {
    let prod = env("prod");
    let h = layered().host("prod-01");
    assert_eq!(file_text(&h, "/etc/app.conf"), "from group 1\n");
    assert_eq!(
        h.files[&HostPath::new("/etc/app.conf").unwrap()].from,
        Layer::Group(prod.clone(), 1)
    );
    assert_eq!(file_text(&h, "/etc/env-only"), "env\n");
    assert_eq!(
        h.files[&HostPath::new("/etc/env-only").unwrap()].from,
        Layer::Environment(prod.clone())
    );
    assert_eq!(file_text(&h, "/etc/group-only"), "group 3\n");
    assert_eq!(
        h.files[&HostPath::new("/etc/group-only").unwrap()].from,
        Layer::Group(prod.clone(), 3)
    );
    assert_eq!(h.files.len(), 3);

    // A host file at the same path replaces the environment's (and the group's) entirely.
    let h = layered()
        .append(
            "hosts/prod.toml",
            "\n[[host.file]]\npath = \"/etc/app.conf\"\ncontent = \"from host\\n\"\nmode = \"0600\"\nsensitive = true\n",
        )
        .host("prod-01");
    let f = &h.files[&HostPath::new("/etc/app.conf").unwrap()];
    assert_eq!(f.from, Layer::Host);
    assert_eq!(&*f.value.content, b"from host\n");
    assert_eq!(f.value.mode, 0o600);
    assert!(f.value.sensitive);
    assert_eq!(h.files.len(), 3);

    // Other hosts of the environment keep the environment's file.
    let h = layered()
        .append(
            "hosts/prod.toml",
            "\n[[host.file]]\npath = \"/etc/app.conf\"\ncontent = \"from host\\n\"\n\
             \n[[host]]\nname = \"prod-02\"\nenvironment = \"prod\"\naddress = \"10.0.1.2\"\n",
        )
        .host("prod-02");
    assert_eq!(file_text(&h, "/etc/app.conf"), "from env\n");
    assert_eq!(
        h.files[&HostPath::new("/etc/app.conf").unwrap()].from,
        Layer::Environment(prod)
    );
}

#[test]
fn layer_provenance_is_displayed_for_show() {
    let prod = env("prod");
    assert_eq!(Layer::Default.to_string(), "built-in default");
    assert_eq!(Layer::Fleet.to_string(), "flotilla.toml [defaults]");
    assert_eq!(
        Layer::Environment(prod.clone()).to_string(),
        "environments/prod.toml"
    );
    assert_eq!(
        Layer::Group(prod, 3).to_string(),
        "environments/prod.toml [[group]] #3"
    );
    assert_eq!(Layer::Host.to_string(), "host");
}

// ---------------------------------------------------------------------------------------------
// Snapshots of the whole report.

#[test]
fn snapshot_typos_and_wrong_types() {
    let report = Manifests::minimal()
        .append("flotilla.toml", "\n[defaults]\nprot = 22\n")
        .append(
            "environments/prod.toml",
            "\n[rollout]\nwaves = [1, \"25%\"]\nmax_paralel = 5\n",
        )
        .append("environments/staging.toml", "python-3.11-ml = \"2.0.0\"\n")
        .replace("hosts/prod.toml", "labels", "canary = \"yes\"\nlabels")
        .errors();
    insta::assert_snapshot!(report);
}

#[test]
fn snapshot_broken_references() {
    let report = Manifests::minimal()
        .replace("flotilla.toml", "[\"staging\", \"prod\"]", "[\"staging\", \"production\", \"staging\"]")
        .append("environments/prod.toml", "greter = \"1.0.0\"\n\n[[file]]\npath = \"/etc/motd\"\nsource = \"files/mtod\"\n")
        .replace("environments/staging.toml", "\"1.0.0\"", "\"1.0\"")
        .append(
            "hosts/prod.toml",
            "\n[[host]]\nname = \"web-01\"\nenvironment = \"prd\"\n\n[[host]]\nname = \"prod-01\"\nenvironment = \"prod\"\n",
        )
        .errors();
    insta::assert_snapshot!(report);
}

#[test]
fn snapshot_per_host_problems() {
    // prod-01 (role=web, no rack label): a relative root over ssh, a template label it lacks
    // and a file under state_dir from a group; prod-02 and prod-03 share an endpoint.
    let report = Manifests::minimal()
        .append(
            "environments/prod.toml",
            "\n[[file]]\npath = \"/etc/motd\"\ntemplate = true\ncontent = \"{{ host.name }} in {{ host.labels.rack }}\\n\"\n\
             \n[[group]]\nmatch = { role = \"web\" }\n\
             \n[[group.file]]\npath = \"/var/lib/flotilla/notes\"\ncontent = \"é\"\n",
        )
        .append("hosts/prod.toml", "root = \"srv/prod-01\"\n")
        .append(
            "hosts/prod.toml",
            "\n[[host]]\nname = \"prod-02\"\nenvironment = \"prod\"\naddress = \"10.9.9.9\"\nroot = \"srv/shared\"\ntransport = \"local\"\nlabels = { rack = \"r2\" }\n\
             \n[[host]]\nname = \"prod-03\"\nenvironment = \"prod\"\naddress = \"10.9.9.9\"\nroot = \"srv/shared\"\ntransport = \"local\"\nlabels = { rack = \"r3\" }\n",
        )
        .errors();
    insta::assert_snapshot!(report);
}

#[test]
fn every_problem_in_one_run_manifest_window_and_per_host() {
    // A typo in flotilla.toml's [defaults], a window with a bad day AND a zero-length end in
    // staging, a bad max_parallel beside them, and a per-host template problem in prod: all
    // five are reported at once.
    let report = Manifests::minimal()
        .append("flotilla.toml", "\n[defaults]\nportt = 22\n")
        .append(
            "environments/staging.toml",
            "\n[rollout]\nmax_parallel = 0\n\n[[window]]\ndays = [\"sat\", \"funday\"]\nstart = \"02:00\"\nend = \"05:00\"\n\n[[window]]\nstart = \"03:00\"\nend = \"03:00\"\n",
        )
        .append(
            "environments/prod.toml",
            "\n[[file]]\npath = \"/etc/motd\"\ntemplate = true\ncontent = \"{{ host.labels.rack }}\"\n",
        )
        .errors();
    for needle in [
        "unknown field `portt`",
        "invalid day `funday`",
        "`max_parallel` must be at least 1",
        "a window whose `end` equals its `start` has no length",
        "host `prod-01` has no label `rack`",
    ] {
        assert!(report.contains(needle), "missing `{needle}` in:\n{report}");
    }
    assert_count(&report, 5);
}

#[test]
fn waves_that_decrease_for_the_environments_hosts_are_rejected() {
    // [5, "10%"] with 20 hosts asks for 5, then 2.
    let mut hosts = String::new();
    for i in 1..=20 {
        hosts.push_str(&format!(
            "[[host]]\nname = \"prod-{i:02}\"\nenvironment = \"prod\"\naddress = \"10.0.1.{i}\"\n\n"
        ));
    }
    let m = Manifests::minimal()
        .set("hosts/prod.toml", &hosts)
        .append("environments/prod.toml", "\n[rollout]\nwaves = [5, \"10%\"]\n");
    let report = m.errors();
    assert_diag(
        &report,
        "waves decrease for the 20 hosts of `prod`: 5 is 5 hosts, then \"10%\" is 2",
        &m.at("environments/prod.toml", "[5, "),
        &["use counts or percentages that grow"],
    );
    // With 100 hosts the same waves grow (5, then 10): valid.
    let mut hosts = String::new();
    for i in 1..=100 {
        hosts.push_str(&format!(
            "[[host]]\nname = \"prod-{i:03}\"\nenvironment = \"prod\"\naddress = \"10.0.2.{i}\"\n\n"
        ));
    }
    Manifests::minimal()
        .set("hosts/prod.toml", &hosts)
        .append("environments/prod.toml", "\n[rollout]\nwaves = [5, \"10%\"]\n")
        .desired();
}

// ---------------------------------------------------------------------------------------------
// No panics, whatever the input.

mod no_panic {
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    use super::*;

    /// A valid fleet with most features and some non-ASCII text, used as the seed for mangling.
    fn rich() -> Manifests {
        Manifests::minimal()
            .append(
                "flotilla.toml",
                "\n[defaults]\nuser = \"deploy\"\nport = 22\ntransport = \"ssh\"\nconnect_timeout = \"10s\"\nknown_hosts = \"~/.ssh/known_hosts\"\n",
            )
            .replace("environments/prod.toml", "description", "auto_apply = true\ndescription")
            .append(
                "environments/prod.toml",
                r#""python-3.11-ml" = "2.0.0"

[defaults]
command_timeout = "1h30m"   # ⏱ lang

[[file]]
path = "/etc/motd"
template = true
content = "Grüße aus {{ host.labels.zone }} — {{ host.name }} 🚀\n"
mode = "0640"
owner = "root"
on_change = "systemctl reload motd"

[[group]]
match = { role = "web" }
runtimes = { greeter = "2.0.0" }

[[group.file]]
path = "/etc/ünïcode"
source = "files/motd"

[rollout]
waves = [1, "25%", "100%"]
max_parallel = 5
max_failures = "10%"
bake = "5m"
on_failure = "halt"

[[window]]
days = ["sat", "sun"]
start = "02:00"
duration = "3h"
timezone = "Europe/Berlin"

[[freeze]]
from = "2026-12-20T00:00:00Z"
until = "2027-01-04T00:00:00Z"
reason = "Jahresende ❄"
"#,
            )
            .append(
                "hosts/prod.toml",
                "canary = true\n\n[[host.file]]\npath = \"/etc/hostname\"\ntemplate = true\ncontent = \"{{ host.name }}\\n\"\n\n\
                 [[host]]\nname = \"prod-02\"\nenvironment = \"prod\"\naddress = \"10.0.1.2\"\nlabels = { role = \"db\", zone = \"Zürich\" }\nruntimes = { greeter = false }\n",
            )
            .set("runtimes/python-3.11-ml.toml", &format!(
                "description = \"Python ✓ mit ML\"\n\n[[version]]\nversion = \"2.0.0\"\nartifact = \"file:///srv/artifacts/py.tgz\"\nsha256 = \"{SHA2}\"\n\n\
                 [health]\ncommand = \"./bin/python3 -c 'import numpy'\"\ntimeout = \"30s\"\nretries = 3\ninterval = \"1s\"\n\n\
                 [hooks]\nactivate = \"systemctl restart joblet\"\nremove = \"systemctl stop joblet-py\"\n"
            ))
    }

    /// The files a mangled or random text may replace.
    const SLOTS: [&str; 5] = [
        "flotilla.toml",
        "environments/prod.toml",
        "hosts/prod.toml",
        "runtimes/greeter.toml",
        "runtimes/python-3.11-ml.toml",
    ];

    #[derive(Debug, Clone)]
    enum Edit {
        Delete(usize, usize),
        Insert(usize, String),
        Duplicate(usize, usize),
    }

    fn snippet() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "\"",
                "'",
                "\"\"\"",
                "[",
                "]",
                "[[",
                "]]",
                "{",
                "}",
                "=",
                ",",
                ".",
                "\n",
                "\r\n",
                "\t",
                "#",
                "\\",
                "\\u00e9",
                "é",
                "🚀",
                "ß",
                "\u{0}",
                "\u{7f}",
                "\u{200b}",
                "true",
                "false",
                "0",
                "-1",
                "1e9",
                "\"100%\"",
                "{{",
                "}}",
                "{{ host.labels.x }}",
                "..",
                "/",
                "//",
                "current",
                " = \"\"",
                "x",
                "\"0s\"",
                "\"99999999999999999999h\"",
                "\"24:00\"",
            ])
            .prop_map(str::to_owned),
            "[ -~äöü€🚀\n]{1,8}",
        ]
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<usize>(), 1..10usize).prop_map(|(at, n)| Edit::Delete(at, n)),
            (any::<usize>(), snippet()).prop_map(|(at, s)| Edit::Insert(at, s)),
            (any::<usize>(), 1..60usize).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        ]
    }

    /// Applies edits on characters, so the result stays a valid `String`.
    fn mangle(text: &str, edits: &[Edit]) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for e in edits {
            let at = |p: usize, len: usize| p % (len + 1);
            match e {
                Edit::Delete(p, n) => {
                    let start = at(*p, chars.len());
                    let end = (start + n).min(chars.len());
                    chars.drain(start..end);
                }
                Edit::Insert(p, s) => {
                    let start = at(*p, chars.len());
                    chars.splice(start..start, s.chars());
                }
                Edit::Duplicate(p, n) => {
                    let start = at(*p, chars.len());
                    let end = (start + n).min(chars.len());
                    let copy: Vec<char> = chars[start..end].to_vec();
                    chars.splice(end..end, copy);
                }
            }
        }
        chars.into_iter().collect()
    }

    /// Text that may go inside a TOML string: reaches the checks behind the parser.
    fn value_snippet() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "é",
            "🚀",
            "..",
            "/",
            "//",
            ".",
            "{{",
            "}}",
            "{{ host.labels.x }}",
            "{{ host.nope }}",
            "current",
            " ",
            "\\t",
            "\\u0000",
            "0",
            "9",
            "99",
            "h",
            "m",
            "s",
            "ms",
            "%",
            ":",
            "-",
            "x",
            "Z",
            "+",
            "T",
        ])
        .prop_map(str::to_owned)
    }

    fn value_edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<usize>(), 1..4usize).prop_map(|(at, n)| Edit::Delete(at, n)),
            (any::<usize>(), value_snippet()).prop_map(|(at, s)| Edit::Insert(at, s)),
            (any::<usize>(), 1..6usize).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        ]
    }

    /// Applies edits only inside `"…"` strings (positions and lengths are taken modulo the
    /// string they land in), so most results still parse and reach the semantic checks.
    fn mangle_values(text: &str, edits: &[Edit]) -> String {
        let mut text = text.to_owned();
        for e in edits {
            let chars: Vec<char> = text.chars().collect();
            // (start, end) of each string's content, in characters.
            let mut strings = Vec::new();
            let mut open: Option<usize> = None;
            for (i, c) in chars.iter().enumerate() {
                match (c, open) {
                    ('"', None) => open = Some(i + 1),
                    ('"', Some(start)) if chars[i - 1] != '\\' => {
                        strings.push((start, i));
                        open = None;
                    }
                    ('\n', _) => open = None,
                    _ => {}
                }
            }
            if strings.is_empty() {
                break;
            }
            let (p, rest) = match e {
                Edit::Delete(p, _) | Edit::Duplicate(p, _) | Edit::Insert(p, _) => (*p, e),
            };
            let (start, end) = strings[p % strings.len()];
            let inner: String = chars[start..end].iter().collect();
            let local = match rest {
                Edit::Delete(_, n) => Edit::Delete(p / strings.len(), *n),
                Edit::Duplicate(_, n) => Edit::Duplicate(p / strings.len(), *n),
                Edit::Insert(_, s) => Edit::Insert(p / strings.len(), s.clone()),
            };
            let inner = mangle(&inner, &[local]);
            let before: String = chars[..start].iter().collect();
            let after: String = chars[end..].iter().collect();
            text = format!("{before}{inner}{after}");
        }
        text
    }

    /// Loads, resolves and renders; a failure must come with at least one diagnostic.
    fn check(m: &Manifests) -> Result<(), TestCaseError> {
        let files = m.manifest_files();
        let repo_dir = PathBuf::from(REPO_DIR);
        let ctx = LoadContext {
            repo_dir: Some(&repo_dir),
            home: None,
        };
        let (diags, sources) = match flotilla::manifest::load(&files, &m.repo, &ctx) {
            Ok(loaded) => match resolve_all(&loaded.fleet) {
                Ok(_) => return Ok(()),
                Err(diags) => (diags, loaded.sources),
            },
            Err(failed) => (failed.diagnostics, failed.sources),
        };
        prop_assert!(!diags.is_empty(), "failed without a diagnostic");
        for d in &diags {
            if let Some(loc) = &d.location {
                let _ = sources.line_col(&loc.file, loc.span.start);
                let _ = sources.line_col(&loc.file, loc.span.end);
            }
        }
        let plain = render(&diags, &sources, false);
        let n = diags.len();
        let count = format!("error: the manifests have {n} problem");
        prop_assert!(plain.contains(&count), "no count line in:\n{}", plain);
        let _ = render(&diags, &sources, true);
        Ok(())
    }

    fn config() -> Config {
        // PROPTEST_CASES raises the count for a longer hunt; 256 keeps `cargo test` quick.
        let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok());
        Config {
            cases: cases.unwrap_or(256),
            failure_persistence: None,
            ..Config::default()
        }
    }

    #[test]
    fn rich_seed_fleet_is_valid() {
        let desired = rich().desired();
        assert_eq!(desired.len(), 3);
    }

    /// Spans that land inside a character, past the end, backwards, in an empty file or in a
    /// file that was never read must still render.
    #[test]
    fn render_survives_odd_spans() {
        let mut sources = Sources::default();
        sources.insert("a.toml", "x = \"Grüße 🚀\"\r\nname = \"é\"\n");
        sources.insert("empty.toml", "");
        #[allow(clippy::reversed_empty_ranges)] // a backwards span, on purpose
        let spans = [0..0, 7..8, 11..13, 12..100, 100..200, 9..3, 0..usize::MAX];
        let mut diags: Vec<Diagnostic> = spans
            .iter()
            .map(|s| {
                Diagnostic::new("odd")
                    .at("a.toml", s.clone())
                    .label("here ✓")
                    .help("help é")
            })
            .collect();
        diags.push(Diagnostic::new("empty").at("empty.toml", 0..5).label("nothing"));
        diags.push(
            Diagnostic::new("unread")
                .at("nowhere.toml", 3..4)
                .label("no source"),
        );
        diags.push(Diagnostic::new("nowhere"));
        let report = render(&diags, &sources, false);
        assert_count(&report, diags.len());
        assert!(report.contains("--> a.toml:1:"), "{report}");
        assert!(report.contains("note: in nowhere.toml"), "{report}");
        let _ = render(&diags, &sources, true);
        for s in spans {
            let _ = sources.line_col("a.toml", s.start);
            let _ = sources.line_col("a.toml", s.end);
        }
        // Inside `ü` (bytes 7..9): the column of `ü` itself.
        assert_eq!(sources.line_col("a.toml", 8), Some((1, 8)));
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn random_bytes_never_panic(slot in 0..SLOTS.len(), bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            check(&rich().set(SLOTS[slot], &text))?;
        }

        #[test]
        fn random_tomlish_text_never_panics(slot in 0..SLOTS.len(), text in "([a-z_.\"'=\\[\\]{},# \n0-9%:/-]|é|🚀){0,200}") {
            check(&rich().set(SLOTS[slot], &text))?;
        }

        #[test]
        fn mangled_values_never_panic(slot in 0..SLOTS.len(), edits in prop::collection::vec(value_edit(), 1..4)) {
            let m = rich();
            let text = mangle_values(&m.files[SLOTS[slot]], &edits);
            check(&m.set(SLOTS[slot], &text))?;
        }

        #[test]
        fn mangled_manifests_never_panic(slot in 0..SLOTS.len(), edits in prop::collection::vec(edit(), 1..6)) {
            let m = rich();
            let text = mangle(&m.files[SLOTS[slot]], &edits);
            check(&m.set(SLOTS[slot], &text))?;
        }
    }
}
