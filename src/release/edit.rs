//! `release`: the checks, the copies and the manifest edit.

use std::fs;
use std::io::{self, Seek as _};
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table, value};

use super::{KeyError, SigningKey, existing_version_line, fleet_trust, open_regular, sha256_of};
use crate::artifact::{DEFAULT_MAX_UNPACKED, inspect_tarball};

/// Why a release was refused; nothing was changed in the fleet.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0} has no flotilla.toml: give the fleet root as FLEET_DIR (or run `flotilla init`)")]
    NotAFleet(PathBuf),
    #[error("`{given}` is not a valid {what} name: {reason}")]
    BadName {
        what: &'static str,
        given: String,
        reason: String,
    },
    #[error("{path}: cannot release it: {reason}; give the path of a .tar.gz or .tgz file")]
    NotAFile { path: PathBuf, reason: String },
    #[error("{path} is not a tarball Flotilla would unpack: {reason}; fix the archive and try again")]
    BadTarball { path: PathBuf, reason: String },
    #[error(
        "{file}:{line}: version `{version}` of `{runtime}` exists already; pick a new version (a released version never changes)"
    )]
    VersionExists {
        file: String,
        line: usize,
        runtime: String,
        version: String,
    },
    #[error(
        "{file} cannot be read as a runtime manifest ({reason}); fix it first (`flotilla validate` shows where)"
    )]
    BadManifest { file: String, reason: String },
    #[error(
        "{file}: `version` is not a list of [[version]] tables; write each version as a [[version]] table"
    )]
    UnsupportedLayout { file: String },
    #[error("{path} exists already; remove it, or release under another version")]
    ArtifactExists { path: String },
    #[error("--url {url}: give an https:// or file:// URL")]
    BadUrl { url: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// What to release.
#[derive(Debug)]
pub struct ReleaseRequest<'a> {
    pub fleet_dir: &'a Path,
    pub runtime: &'a str,
    pub version: &'a str,
    pub file: &'a Path,
    pub url: Option<&'a str>,
    pub key: Option<&'a SigningKey>,
}

/// What a release wrote; paths are relative to the fleet root.
#[derive(Debug)]
pub struct Released {
    pub manifest: String,
    /// Line of the new `version = ...` key.
    pub line: usize,
    pub artifact: String,
    pub sha256: String,
    pub signature: Option<String>,
    /// Things the user should know (an untrusted key, no signature).
    pub warnings: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError::Io {
        path: path.to_owned(),
        source,
    }
}

fn check_name(what: &'static str, given: &str) -> Result<(), ReleaseError> {
    let bad = |reason: String| ReleaseError::BadName {
        what,
        given: given.to_owned(),
        reason,
    };
    crate::names::check_name(given).map_err(|e| bad(e.to_string()))?;
    if what == "version" && given == "current" {
        return Err(bad(
            "`current` is reserved (it names the active-version link)".into()
        ));
    }
    Ok(())
}

/// Files written so far, removed again if the release fails.
struct Written(Vec<PathBuf>);

impl Written {
    fn put(
        &mut self,
        dest: &Path,
        fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
    ) -> Result<(), ReleaseError> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            fill(tmp.as_file_mut())
                .and_then(|()| tmp.as_file().set_permissions(fs::Permissions::from_mode(0o644)))
                .and_then(|()| tmp.as_file().sync_all())
                .map_err(io_err(dest))?;
        }
        tmp.persist_noclobber(dest).map_err(|e| ReleaseError::Io {
            path: dest.to_owned(),
            source: e.error,
        })?;
        self.0.push(dest.to_owned());
        Ok(())
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

/// Adds the version; see the module documentation.
pub fn release(req: &ReleaseRequest<'_>) -> Result<Released, ReleaseError> {
    let root = req.fleet_dir;
    if !root.join("flotilla.toml").is_file() {
        return Err(ReleaseError::NotAFleet(root.to_owned()));
    }
    check_name("runtime", req.runtime)?;
    check_name("version", req.version)?;
    let not_a_file = |reason: String| ReleaseError::NotAFile {
        path: req.file.to_owned(),
        reason,
    };
    let mut file = open_regular(req.file).map_err(not_a_file)?;
    inspect_tarball(&mut file, DEFAULT_MAX_UNPACKED, &mut |_| {}).map_err(|e| ReleaseError::BadTarball {
        path: req.file.to_owned(),
        reason: e.to_string(),
    })?;
    file.rewind().map_err(io_err(req.file))?;
    let sha256 = sha256_of(&mut file).map_err(io_err(req.file))?;

    // The manifest: an existing version is refused before anything is written.
    let manifest = format!("runtimes/{}.toml", req.runtime);
    let manifest_path = root.join(&manifest);
    let text = match fs::symlink_metadata(&manifest_path) {
        Ok(m) if !m.is_file() => {
            return Err(ReleaseError::BadManifest {
                file: manifest,
                reason: "it is not a regular file (Flotilla does not follow links in the repository)".into(),
            });
        }
        Ok(_) => Some(fs::read_to_string(&manifest_path).map_err(io_err(&manifest_path))?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&manifest_path)(e)),
    };
    if let Some(text) = &text {
        match existing_version_line(text, req.version) {
            Ok(Some(line)) => {
                return Err(ReleaseError::VersionExists {
                    file: manifest,
                    line,
                    runtime: req.runtime.to_owned(),
                    version: req.version.to_owned(),
                });
            }
            Ok(None) => {}
            Err(reason) => {
                return Err(ReleaseError::BadManifest {
                    file: manifest,
                    reason,
                });
            }
        }
    }
    let new_file = text.is_none();
    let mut doc: DocumentMut = match &text {
        Some(t) => t
            .parse()
            .map_err(|e: toml_edit::TomlError| ReleaseError::BadManifest {
                file: manifest.clone(),
                reason: e.message().to_owned(),
            })?,
        // A new file: its header comment is written above the document on save (a
        // comment-only document would keep it as trailing text, below the new version).
        None => DocumentMut::new(),
    };
    let header = match (&text, root.join("schema/runtime.schema.json").is_file()) {
        (Some(_), _) => String::new(),
        (None, schema) => format!(
            "{}# Versions of `{}`; add one with `flotilla release`.\n",
            if schema {
                "#:schema ../schema/runtime.schema.json\n"
            } else {
                ""
            },
            req.runtime
        ),
    };

    // Where the artifact and the signature go.
    let ext = match req.file.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.ends_with(".tgz") => "tgz",
        _ => "tar.gz",
    };
    let base = format!("artifacts/{}-{}.{ext}", req.runtime, req.version);
    let artifact = match req.url {
        Some(url)
            if (url.starts_with("https://") || url.starts_with("file://"))
                && !url.chars().any(|c| c.is_control() || c == ' ') =>
        {
            url.to_owned()
        }
        Some(url) => return Err(ReleaseError::BadUrl { url: url.to_owned() }),
        None => base.clone(),
    };
    let signature_rel = format!("{base}.minisig");
    for rel in [Some(&base).filter(|_| req.url.is_none()), Some(&signature_rel)]
        .into_iter()
        .flatten()
    {
        if fs::symlink_metadata(root.join(rel)).is_ok() {
            return Err(ReleaseError::ArtifactExists { path: rel.clone() });
        }
    }

    let mut warnings = Vec::new();
    let signature_text = match req.key {
        Some(key) => {
            file.rewind().map_err(io_err(req.file))?;
            let comment = format!(
                "flotilla release: {} {} sha256:{sha256}",
                req.runtime, req.version
            );
            let (trusted, _) = fleet_trust(root, Some(&key.public_base64()));
            if !trusted {
                warnings.push(format!(
                    "the key {} (public key {}) is not in flotilla.toml [trust] keys: add it there, or `validate` will refuse this signature",
                    key.path().display(),
                    key.public_base64()
                ));
            }
            Some(key.sign(&mut file, &comment)?)
        }
        None => {
            let mut beside = req.file.as_os_str().to_owned();
            beside.push(".minisig");
            match fs::read_to_string(&beside) {
                Ok(s) => Some(s),
                Err(_) => {
                    if fleet_trust(root, None).1 {
                        warnings.push(
                            "no signature: the fleet requires signatures, so `validate` and `apply` will refuse this version until artifacts/… .minisig exists; release with --sign SECRET_KEY".into(),
                        );
                    }
                    None
                }
            }
        }
    };

    let mut written = Written(Vec::new());
    if req.url.is_none() {
        file.rewind().map_err(io_err(req.file))?;
        written.put(&root.join(&base), |out| io::copy(&mut file, out).map(drop))?;
    }
    if let Some(sig) = &signature_text {
        written.put(&root.join(&signature_rel), |out| {
            io::Write::write_all(out, sig.as_bytes())
        })?;
    }

    let mut table = Table::new();
    table.insert("version", value(req.version));
    table.insert("artifact", value(&artifact));
    table.insert("sha256", value(&sha256));
    // A URL's signature defaults to URL + ".minisig"; ours stays in the repository.
    if signature_text.is_some() && req.url.is_some() {
        table.insert("signature", value(&signature_rel));
    }
    match doc.entry("version") {
        toml_edit::Entry::Vacant(v) => {
            let mut array = toml_edit::ArrayOfTables::new();
            array.push(table);
            v.insert(Item::ArrayOfTables(array));
        }
        toml_edit::Entry::Occupied(mut o) => match o.get_mut().as_array_of_tables_mut() {
            Some(array) => array.push(table),
            None => return Err(ReleaseError::UnsupportedLayout { file: manifest }),
        },
    }
    let new_text = format!("{header}{doc}");
    let line = existing_version_line(&new_text, req.version)
        .ok()
        .flatten()
        .unwrap_or(0);
    if new_file {
        written.put(&manifest_path, |out| {
            io::Write::write_all(out, new_text.as_bytes())
        })?;
    } else {
        // Replace the manifest atomically (the only file a release changes rather than adds).
        let dir = manifest_path.parent().unwrap_or(root);
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
        io::Write::write_all(tmp.as_file_mut(), new_text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io_err(&manifest_path))?;
        if let Ok(m) = fs::metadata(&manifest_path) {
            let _ = fs::set_permissions(tmp.path(), m.permissions());
        }
        tmp.persist(&manifest_path).map_err(|e| ReleaseError::Io {
            path: manifest_path.clone(),
            source: e.error,
        })?;
    }
    // Success: keep what was written.
    written.0.clear();
    Ok(Released {
        manifest,
        line,
        artifact,
        sha256,
        signature: signature_text.map(|_| signature_rel),
        warnings,
    })
}
