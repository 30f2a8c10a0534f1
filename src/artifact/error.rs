//! Errors of the artifact checks. Each one names the runtime, version and artifact location,
//! what is wrong, and how to fix it, because it is shown to an operator who must act on it
//! without reading the source.

use std::fmt;
use std::path::PathBuf;

/// Which artifact an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub runtime: String,
    pub version: String,
    /// The artifact's repository path or URL, as written in the manifest.
    pub location: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "runtime `{}` version `{}`, artifact `{}`",
            self.runtime, self.version, self.location
        )
    }
}

/// Everything that can stop an artifact from being used.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(
        "[trust] keys, key {index}: {reason}; use the base64 line of a minisign .pub file (it starts with RW)"
    )]
    ManifestKey { index: usize, reason: String },
    #[error(
        "pinned trusted keys, line {line}: {reason}; the file holds one minisign public key per line (the base64 line of a .pub file, or the whole .pub file), blank lines and # comments"
    )]
    PinnedKey { line: usize, reason: String },
    #[error(
        "the pinned trusted keys file holds no key, so no artifact could be trusted; put the base64 line of each minisign .pub file on a line of its own"
    )]
    NoPinnedKeys,

    #[error("{at}: sha256 `{given}` is not 64 hexadecimal digits; fix it in runtimes/{}.toml", .at.runtime)]
    InvalidSha256 { at: Box<Origin>, given: String },
    #[error("{at}: {what} URL `{url}` {reason}")]
    BadUrl {
        at: Box<Origin>,
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("{at}: cannot fetch {}: {reason}", subject(.what, .location))]
    Fetch {
        at: Box<Origin>,
        what: &'static str,
        location: String,
        reason: String,
    },
    #[error(
        "{at}: cannot fetch {}: the server answered HTTP {status}; check the URL and that the server publishes it", subject(.what, .url)
    )]
    HttpStatus {
        at: Box<Origin>,
        what: &'static str,
        url: String,
        status: u16,
    },
    #[error(
        "{at}: the download passed {limit} bytes, more than an artifact within the unpacked-size limit can be; check that the URL serves the artifact"
    )]
    DownloadTooLarge { at: Box<Origin>, limit: u64 },
    #[error(
        "{at}: stopped downloading `{url}` after {limit} bytes, the most Flotilla downloads over HTTPS (the manifest gives no size); check that the URL serves the artifact, or ship an artifact this big from the repository or a file:// path"
    )]
    HttpsTooLarge {
        at: Box<Origin>,
        url: String,
        limit: u64,
    },
    #[error(
        "{at}: downloading `{url}` took longer than {budget:?}, the most one HTTPS download may take; check the network and the server, or ship the artifact from the repository or a file:// path"
    )]
    DownloadTimedOut {
        at: Box<Origin>,
        url: String,
        budget: std::time::Duration,
    },
    #[error("{at}: artifact cache `{}`: {source}; check free space and permissions of the state directory", .path.display())]
    Cache {
        at: Box<Origin>,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{at}: sha256 mismatch: manifest says {expected}, file has {actual}; update sha256 in runtimes/{}.toml or rebuild the artifact",
        .at.runtime
    )]
    Sha256Mismatch {
        at: Box<Origin>,
        expected: String,
        actual: String,
    },

    #[error("{at}: no signature at `{signature}` and {}", missing_hint(*.pinned))]
    MissingSignature {
        at: Box<Origin>,
        signature: String,
        pinned: bool,
    },
    #[error(
        "{at}: signature `{signature}` is larger than 64 KiB, so it is not a minisign signature; check `signature` in runtimes/{}.toml",
        .at.runtime
    )]
    SignatureTooLarge { at: Box<Origin>, signature: String },
    #[error(
        "{at}: signature `{signature}` is not a minisign signature ({reason}); sign the artifact with `minisign -S -s KEY.sec -m ARTIFACT`"
    )]
    MalformedSignature {
        at: Box<Origin>,
        signature: String,
        reason: String,
    },
    #[error(
        "{at}: signature `{signature}`: legacy (non-prehashed) minisign signature refused: re-sign with a current minisign (prehashed, the default)"
    )]
    LegacySignature { at: Box<Origin>, signature: String },
    #[error("{at}: signature by untrusted key {key_id} in `{signature}` ({}); {}", trusted_list(.trusted), untrusted_hint(*.pinned))]
    UntrustedKey {
        at: Box<Origin>,
        signature: String,
        key_id: String,
        /// The ids of the keys that are trusted.
        trusted: Vec<String>,
        pinned: bool,
    },
    #[error(
        "{at}: signature `{signature}` by key {key_id} does not verify: the artifact changed after it was signed, or the signature is for another file; re-sign the artifact (and update sha256 if it was rebuilt)"
    )]
    BadSignature {
        at: Box<Origin>,
        signature: String,
        key_id: String,
    },

    /// The tarball itself is refused; `entry` names the offending member when there is one.
    #[error("{at}: {}{problem}", entry_prefix(.entry))]
    Tarball {
        at: Box<Origin>,
        entry: Option<String>,
        problem: TarProblem,
    },
    /// From a check without the network: the copy of the URL signature saved when `apply`
    /// last fetched it fails. Only a warning: the URL may serve a newer signature now.
    #[error(
        "{source}; this is the copy of `{url}` saved when apply last fetched it: apply fetches it again and refuses the run only if that fails too"
    )]
    SavedSignature { url: String, source: Box<ArtifactError> },
    /// Only from [`ArtifactCache::check_cached`](super::ArtifactCache::check_cached), which
    /// turns it into "not held": the cache lacks the artifact or its (HTTPS) signature.
    #[error(
        "{at}: not in the artifact cache, and checking it would need the network; `apply` fetches and checks it"
    )]
    NotCached { at: Box<Origin> },
}

impl ArtifactError {
    /// The artifact the error is about; `None` for errors in the trusted keys themselves.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            ArtifactError::ManifestKey { .. }
            | ArtifactError::PinnedKey { .. }
            | ArtifactError::NoPinnedKeys => None,
            ArtifactError::InvalidSha256 { at, .. }
            | ArtifactError::BadUrl { at, .. }
            | ArtifactError::Fetch { at, .. }
            | ArtifactError::HttpStatus { at, .. }
            | ArtifactError::DownloadTooLarge { at, .. }
            | ArtifactError::HttpsTooLarge { at, .. }
            | ArtifactError::DownloadTimedOut { at, .. }
            | ArtifactError::Cache { at, .. }
            | ArtifactError::Sha256Mismatch { at, .. }
            | ArtifactError::MissingSignature { at, .. }
            | ArtifactError::SignatureTooLarge { at, .. }
            | ArtifactError::MalformedSignature { at, .. }
            | ArtifactError::LegacySignature { at, .. }
            | ArtifactError::UntrustedKey { at, .. }
            | ArtifactError::BadSignature { at, .. }
            | ArtifactError::Tarball { at, .. }
            | ArtifactError::NotCached { at } => Some(at),
            ArtifactError::SavedSignature { source, .. } => source.origin(),
        }
    }
}

/// The artifact's location is already in the message's prefix; a signature's is not.
fn subject(what: &str, location: &str) -> String {
    if what == "artifact" {
        "the artifact".to_owned()
    } else {
        format!("the {what} `{location}`")
    }
}

fn missing_hint(pinned: bool) -> &'static str {
    if pinned {
        "signatures are required because trusted keys are pinned (--trusted-keys / FLOTILLA_TRUSTED_KEYS); sign the artifact with `minisign -S -s KEY.sec -m ARTIFACT` and publish the .minisig"
    } else {
        "require_signatures is true; sign the artifact with `minisign -S -s KEY.sec -m ARTIFACT` and publish the .minisig, or set `signature` in the runtime's [[version]] to where it is"
    }
}

fn untrusted_hint(pinned: bool) -> &'static str {
    if pinned {
        "add the key to the pinned keys file (--trusted-keys / FLOTILLA_TRUSTED_KEYS) or re-sign with a pinned key"
    } else {
        "add its public key to [trust] keys in flotilla.toml or re-sign with a trusted key"
    }
}

fn trusted_list(ids: &[String]) -> String {
    if ids.is_empty() {
        "no key is trusted".to_owned()
    } else {
        format!("trusted: {}", ids.join(", "))
    }
}

pub(super) fn entry_prefix(entry: &Option<String>) -> String {
    match entry {
        Some(e) => format!("tar entry `{e}`: "),
        None => String::new(),
    }
}

/// Why a tarball is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarProblem {
    #[error(
        "not a gzip-compressed tar archive ({detected}); build artifacts as .tar.gz (`tar -czf ARTIFACT -C DIR .`)"
    )]
    NotGzip { detected: String },
    #[error("the gzip stream does not hold a tar archive ({reason}); build artifacts with `tar -czf`")]
    NotTar { reason: String },
    #[error("the archive is corrupt or truncated ({reason}); rebuild it")]
    Corrupt { reason: String },
    #[error("the archive holds no entries; rebuild it from the runtime's directory")]
    Empty,
    #[error(
        "data after the end-of-archive marker is refused (some tar readers unpack entries hidden there, which this check would not have seen); rebuild the archive"
    )]
    TrailingData,
    #[error(
        "the unpacked size passes the limit of {limit} bytes (max_unpacked_size); make the artifact smaller or raise the limit"
    )]
    TooLarge { limit: u64 },

    #[error("an empty name is refused; rebuild the archive")]
    EmptyName,
    #[error(
        "names with control characters are refused (they garble logs and terminals); rename the file before packing"
    )]
    ControlCharacter,
    #[error(
        "absolute names are refused (they would be written outside the version directory); pack relative names with `tar -C DIR .`"
    )]
    Absolute,
    #[error(
        "`..` components are refused (they climb out of the version directory); pack relative names with `tar -C DIR .`"
    )]
    ParentDir,
    #[error("only a directory may name the version directory itself (`.`); rebuild the archive")]
    RootNotDirectory,
    #[error(
        "hardlinks are refused (to `{target}`); pack with `tar --hard-dereference` to store copies instead"
    )]
    Hardlink { target: String },
    #[error("{kind} files are refused; remove it from the runtime's directory before packing")]
    Device { kind: &'static str },
    #[error("FIFOs are refused; remove it from the runtime's directory before packing")]
    Fifo,
    #[error(
        "mode {mode:04o} has setuid, setgid or sticky bits, which are refused; clear them (`chmod ug-s,-t`) before packing"
    )]
    SpecialBits { mode: u32 },
    #[error(
        "{kind} entries are refused (only directories, regular files and symlinks); rebuild the archive with GNU tar"
    )]
    Unsupported { kind: String },

    #[error(
        "is a {kind} entry whose header gives a size of {size} bytes: GNU tar reads those bytes as further entries where other readers skip them, so what the check sees is not what the host unpacks; rebuild the archive with GNU tar (`tar -czf`)"
    )]
    NonRegularWithData { kind: &'static str, size: u64 },
    #[error(
        "is a regular file whose name ends with `/`, which GNU tar unpacks as a directory (reading its data as further entries); store directories as directory entries and rebuild the archive"
    )]
    FileNamedAsDirectory,
    #[error(
        "header field `{field}` holds `{value}`, which tar implementations read differently (or the checksum does not match); rebuild the archive with GNU tar (`tar -czf`)"
    )]
    HeaderField { field: &'static str, value: String },
    #[error(
        "its {what} is {len} bytes long, more than the {limit} bytes a path on Linux may have; shorten the names in the runtime's directory"
    )]
    NameTooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("its name has more than {limit} components; flatten the runtime's directory tree")]
    TooManyComponents { limit: usize },
    #[error(
        "the archive has more than {limit} distinct directories and symlinks; split the runtime into several artifacts"
    )]
    TooManyPaths { limit: usize },

    #[error("symlink with an empty target is refused")]
    EmptyLinkTarget,
    #[error(
        "symlink to absolute path `{target}` is refused (it points outside the version directory on the host); make it relative"
    )]
    SymlinkAbsolute { target: String },
    #[error("symlink to `{target}` points outside the version directory; make it point inside")]
    SymlinkEscapes { target: String },
    #[error(
        "symlink target `{target}` has `..` after a directory name, which could climb out through another symlink; write it with `..` only at the start (`../lib/x`, not `lib/../../x`)"
    )]
    SymlinkClimbsAfterName { target: String },
    #[error(
        "lies beneath `{symlink}`, a symlink earlier in the archive, so unpacking would write through it; store the entry under its real directory"
    )]
    ThroughSymlink { symlink: String },
    #[error("replaces a symlink from earlier in the archive, which tar could follow; store each name once")]
    ReplacesSymlink,
    #[error("is a symlink, but earlier entries use it as a directory; rebuild the archive")]
    SymlinkOverDirectory,

    #[error("pax header keyword `{key}` is not supported; rebuild the archive with `tar --format=gnu`")]
    PaxKeyword { key: String },
    #[error("pax header is malformed ({reason}); rebuild the archive")]
    PaxMalformed { reason: String },
    #[error(
        "pax `size` ({pax}) disagrees with the header's size ({header}), which tar implementations read differently; rebuild the archive with `tar --format=gnu`"
    )]
    PaxSize { pax: u64, header: u64 },
    #[error(
        "its {what} is given twice, differently (GNU long name and pax header), which tar implementations read differently; rebuild the archive"
    )]
    ConflictingNames { what: &'static str },
    #[error("two {what} headers describe one entry; rebuild the archive")]
    DuplicateExtension { what: &'static str },
    #[error("a {what} header of {size} bytes is refused (at most {limit}); rebuild the archive")]
    ExtensionTooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("the archive ends with a {what} header that describes no entry; rebuild the archive")]
    DanglingExtension { what: &'static str },
}
