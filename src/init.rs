//! `flotilla init [DIR]`, the library part: a new fleet that validates and plans as it is.
//!
//! It writes `flotilla.toml` (local transport, one trusted key), `environments/example.toml`,
//! `hosts/example.toml` (a host whose root is `.hosts/example` under the fleet, like the demo
//! fleet's `.demo-hosts/`), `runtimes/example.toml` with a real signed tarball in `artifacts/`,
//! the JSON Schemas in `schema/` (every manifest's first line points at one), and a README of
//! next steps. The signing key's secret half is written outside the fleet, by default to
//! `$XDG_CONFIG_HOME/flotilla/keys/<fleet>.key` (mode 0600), and an existing key there is
//! reused. When DIR is not inside a Git repository, a new one is made and everything committed;
//! inside one, nothing is committed (that repository's history is its owner's to write).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::release::{KeyError, SigningKey};

/// Why `init` refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{0} is not empty: `flotilla init` only writes into a new or empty directory; choose another DIR"
    )]
    NotEmpty(PathBuf),
    #[error("{0} exists and is not a directory; choose another DIR")]
    NotADirectory(PathBuf),
    #[error("the fleet name `{given}` is not valid: {reason}; pass --name NAME")]
    BadName { given: String, reason: String },
    #[error(
        "the secret key {key} would be inside {inside}; a secret never belongs in the repository: pass --secret-key with a path outside it"
    )]
    KeyInside { key: PathBuf, inside: PathBuf },
    #[error("no place for the secret key: set XDG_CONFIG_HOME or HOME, or pass --secret-key FILE")]
    NoKeyDir,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("Git: {0}; run again with --no-git to skip the repository")]
    Git(#[from] git2::Error),
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InitError + '_ {
    move |source| InitError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The example runtime `init` writes, and its version.
pub const RUNTIME: &str = "example";
pub const VERSION: &str = "1.0.0";

/// What to create.
pub struct InitRequest<'a> {
    /// The new fleet's directory: new or empty.
    pub dir: &'a Path,
    /// The fleet's name; the directory's name when `None`.
    pub name: Option<&'a str>,
    /// Where the secret signing key is (or goes); `$XDG_CONFIG_HOME/flotilla/keys/<fleet>.key`
    /// when `None`.
    pub secret_key: Option<&'a Path>,
    /// Make a Git repository and commit, unless the directory is inside one already.
    pub git: bool,
}

/// What `init` wrote.
pub struct Initialized {
    pub name: String,
    pub key_path: PathBuf,
    /// The key was made now (false: an existing one was reused).
    pub key_is_new: bool,
    pub public_key: String,
    /// The first commit of the new repository, when one was made.
    pub committed: Option<String>,
    /// The enclosing repository's work tree, when the fleet is inside one (nothing committed).
    pub enclosing: Option<PathBuf>,
}

/// Writes a new fleet (see the module docs). Nothing is written when it refuses.
pub fn init(req: &InitRequest<'_>) -> Result<Initialized, InitError> {
    let dir = absolute(req.dir).map_err(io(req.dir))?;
    match fs::read_dir(&dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(InitError::NotEmpty(req.dir.to_owned()));
            }
        }
        Err(_) if dir.exists() => return Err(InitError::NotADirectory(req.dir.to_owned())),
        Err(_) => {}
    }
    let name = fleet_name(req.name, &dir)?;
    let enclosing = if req.git {
        git2::Repository::discover(dir.ancestors().find(|a| a.exists()).unwrap_or(&dir)).ok()
    } else {
        None
    };
    let key_path = match req.secret_key {
        Some(p) => absolute(p).map_err(io(p))?,
        None => default_key_path(&name).ok_or(InitError::NoKeyDir)?,
    };
    for inside in
        std::iter::once(dir.clone()).chain(enclosing.as_ref().and_then(|r| r.workdir().map(Path::to_owned)))
    {
        if key_path.starts_with(&inside) {
            return Err(InitError::KeyInside {
                key: key_path,
                inside,
            });
        }
    }
    let (key, key_is_new) = if key_path.exists() {
        (SigningKey::load(&key_path, None)?, false)
    } else {
        (SigningKey::generate(&key_path)?, true)
    };

    fs::create_dir_all(&dir).map_err(io(&dir))?;
    write_fleet(&dir, &name, &key)?;
    if key_is_new {
        key.write_new()?;
    }
    let committed = if !req.git || enclosing.is_some() {
        None
    } else {
        Some(git_commit(&dir)?)
    };
    Ok(Initialized {
        name,
        public_key: key.public_base64(),
        key_path,
        key_is_new,
        committed,
        enclosing: enclosing.map(|r| r.workdir().unwrap_or(r.path()).to_owned()),
    })
}

fn absolute(p: &Path) -> std::io::Result<PathBuf> {
    std::path::absolute(p)
}

/// `--name`, else DIR's last component made into a valid name.
fn fleet_name(given: Option<&str>, dir: &Path) -> Result<String, InitError> {
    let name = match given {
        Some(n) => n.to_owned(),
        None => {
            let last = dir
                .components()
                .rev()
                .find_map(|c| match c {
                    std::path::Component::Normal(s) => s.to_str(),
                    _ => None,
                })
                .unwrap_or("fleet");
            let cleaned: String = last
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
                .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
                .replace("..", ".")
                .chars()
                .take(128)
                .collect();
            if cleaned.is_empty() {
                "fleet".to_owned()
            } else {
                cleaned
            }
        }
    };
    crate::names::check_name(&name).map_err(|e| InitError::BadName {
        given: name.clone(),
        reason: e.to_string(),
    })?;
    Ok(name)
}

fn default_key_path(fleet: &str) -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("flotilla").join("keys").join(format!("{fleet}.key")))
}

fn write(dir: &Path, rel: &str, bytes: &[u8]) -> Result<(), InitError> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io(&path))?;
    f.write_all(bytes).map_err(io(&path))
}

fn write_fleet(dir: &Path, name: &str, key: &SigningKey) -> Result<(), InitError> {
    let tarball = example_tarball().map_err(io(dir))?;
    let sha256 = crate::resolve::sha256_hex(&tarball);
    let artifact = format!("artifacts/{RUNTIME}-{VERSION}.tar.gz");
    let signature = key.sign(
        &tarball[..],
        &format!("flotilla init: {RUNTIME} {VERSION} sha256:{sha256}"),
    )?;
    for (file, text) in crate::schema::all() {
        write(dir, &format!("schema/{file}"), text.as_bytes())?;
    }
    write(
        dir,
        "flotilla.toml",
        fleet_toml(name, &key.public_base64()).as_bytes(),
    )?;
    write(dir, "environments/example.toml", ENVIRONMENT.as_bytes())?;
    write(dir, "hosts/example.toml", HOSTS.as_bytes())?;
    write(
        dir,
        "runtimes/example.toml",
        runtime_toml(&artifact, &sha256).as_bytes(),
    )?;
    write(dir, &artifact, &tarball)?;
    write(dir, &format!("{artifact}.minisig"), signature.as_bytes())?;
    write(
        dir,
        ".hosts/.gitignore",
        b"# What Flotilla writes into host roots is not part of the repository.\n/*/*\n!/*/.keep\n",
    )?;
    write(dir, ".hosts/example/.keep", b"")?;
    write(dir, "README.md", readme(name).as_bytes())?;
    Ok(())
}

/// A deterministic gzip'd tarball holding `VERSION` and `bin/example`, with the entry types,
/// owners and modes GNU tar unpacks without surprises (what the inspection accepts).
fn example_tarball() -> std::io::Result<Vec<u8>> {
    let script = format!(
        "#!/bin/sh\n# {RUNTIME} {VERSION} (written by flotilla init)\nif [ \"${{1:-}}\" = --version ]; then echo \"{RUNTIME} {VERSION}\"; exit 0; fi\necho \"Hello from {RUNTIME} {VERSION} on ${{FLOTILLA_HOST:-$(hostname)}}\"\n"
    );
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let entry = |path: &str, kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_767_225_600); // 2026-01-01
        h.set_size(size);
        h.set_path(path).map(|()| {
            h.set_cksum();
            h
        })
    };
    let version = format!("{VERSION}\n");
    tar.append(
        &entry("VERSION", tar::EntryType::Regular, 0o644, version.len() as u64)?,
        version.as_bytes(),
    )?;
    tar.append(
        &entry("bin/", tar::EntryType::Directory, 0o755, 0)?,
        std::io::empty(),
    )?;
    tar.append(
        &entry(
            &format!("bin/{RUNTIME}"),
            tar::EntryType::Regular,
            0o755,
            script.len() as u64,
        )?,
        script.as_bytes(),
    )?;
    tar.into_inner()?.finish()
}

fn fleet_toml(name: &str, public: &str) -> String {
    format!(
        r#"#:schema schema/flotilla.schema.json
# Fleet settings. Every key is described in schema/flotilla.schema.json.
[fleet]
name = "{name}"

[defaults]
# "local" runs host commands on this machine, under each host's `root`; switch a host (or
# this default) to "ssh" with an absolute root to manage real machines.
transport = "local"
command_timeout = "1m"

[trust]
# Artifacts must be signed by one of these minisign public keys. The secret half is NOT in
# this repository (`flotilla init` printed where it is); sign releases with
# `flotilla release RUNTIME VERSION FILE --sign SECRET_KEY`.
keys = ["{public}"]
require_signatures = true
"#
    )
}

const ENVIRONMENT: &str = r#"#:schema ../schema/environment.schema.json
description = "An example environment: change it, or copy it for staging and prod"

[runtimes]
example = "1.0.0"

[[file]]
path = "/etc/example/example.conf"
template = true
content = """
# Managed by Flotilla: fleet {{ fleet.name }}, environment {{ host.environment }}
host = {{ host.name }}
"""

[rollout]
waves = [1, "100%"]
"#;

const HOSTS: &str = r#"#:schema ../schema/host.schema.json
[[host]]
name = "example"
environment = "example"
# The local transport with a root under the fleet: what Flotilla installs lands in
# .hosts/example/ (git-ignored). A real host: transport = "ssh", address = "...", root = "/".
root = ".hosts/example"
labels = { role = "example" }
canary = true
"#;

fn runtime_toml(artifact: &str, sha256: &str) -> String {
    format!(
        r#"#:schema ../schema/runtime.schema.json
description = "An example runtime: a tarball with bin/example"

# One [[version]] per release (`flotilla release` adds them); `signature` defaults to the
# artifact's path + ".minisig".
[[version]]
version = "1.0.0"
artifact = "{artifact}"
sha256 = "{sha256}"

[health]                    # runs in the version's directory after activation
command = "./bin/example --version"
timeout = "10s"
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        r#"# Fleet `{name}`

Written by `flotilla init`. It validates and plans as it is: one environment (`example`), one
host on the local transport whose root is `.hosts/example/`, and one runtime (`example`
1.0.0) whose signed tarball is in `artifacts/`.

| path | holds |
|---|---|
| `flotilla.toml` | the fleet's name, defaults for every host, the trusted signing key |
| `environments/example.toml` | which runtime versions and files the environment's hosts get, and how changes roll out |
| `hosts/example.toml` | the hosts: name, environment, how to reach them |
| `runtimes/example.toml` | the runtime's versions: artifact, sha256, signature; its health check |
| `schema/` | JSON Schemas; each manifest's `#:schema` line lets an editor complete and check it |

## Next steps

```sh
flotilla validate                 # every manifest and artifact checked
flotilla plan                     # + runtime "example" and + file "/etc/example/example.conf"
flotilla apply --auto-approve     # installs them under .hosts/example/
flotilla plan                     # No changes.
```

Release a new version and roll it out:

```sh
flotilla release example 1.1.0 path/to/example-1.1.0.tar.gz --sign ~/.config/flotilla/keys/{name}.key
# pin it: example = "1.1.0" in environments/example.toml
flotilla plan && git commit -am "example 1.1.0" && flotilla apply
```

Add real machines as `[[host]]` tables with `transport = "ssh"` and `address = "..."`.

The secret signing key is kept outside this repository (`flotilla init` printed where). Never
commit it: anyone who holds it can ship code that every host will run.
"#
    )
}

/// `git init`, add everything, commit; returns the commit id. The author is the configured Git
/// identity, else "Flotilla init <flotilla@localhost>".
fn git_commit(dir: &Path) -> Result<String, InitError> {
    let repo = git2::Repository::init(dir)?;
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = repo
        .signature()
        .or_else(|_| git2::Signature::now("Flotilla init", "flotilla@localhost"))?;
    let id = repo.commit(
        Some("HEAD"),
        &sig,
        &sig,
        "A new fleet (flotilla init)",
        &tree,
        &[],
    )?;
    Ok(id.to_string())
}
