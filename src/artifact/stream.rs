//! One pass over an artifact's bytes as they arrive: digests and signature computed on the
//! way, copied into a partial file that is deleted unless the artifact checks out.

use super::*;

/// What one pass over the bytes computes: sha256, size, and the signature check.
pub(super) struct Digests<'v> {
    sha: Sha256,
    pub(super) verifier: Option<StreamVerifier<'v>>,
    pub(super) size: u64,
}

impl<'v> Digests<'v> {
    pub(super) fn new(verifier: Option<StreamVerifier<'v>>) -> Digests<'v> {
        Digests {
            sha: Sha256::new(),
            verifier,
            size: 0,
        }
    }

    pub(super) fn update(&mut self, buf: &[u8]) {
        self.sha.update(buf);
        if let Some(v) = &mut self.verifier {
            v.update(buf);
        }
        self.size += buf.len() as u64;
    }

    pub(super) fn hex(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(64);
        for b in self.sha.clone().finalize().iter() {
            let _ = write!(out, "{b:02x}");
        }
        out
    }
}

pub(super) enum PumpError {
    Read(io::Error),
    Write(io::Error),
    TooLarge,
}

/// Copies `src` to `dst` (when given) through `digests`, in constant memory, stopping past
/// `limit` bytes.
pub(super) fn pump(
    mut src: impl Read,
    mut dst: Option<&mut File>,
    digests: &mut Digests<'_>,
    limit: u64,
) -> Result<(), PumpError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PumpError::Read(e)),
        };
        let chunk = &buf[..n];
        digests.update(chunk);
        if digests.size > limit {
            return Err(PumpError::TooLarge);
        }
        if let Some(f) = dst.as_deref_mut() {
            f.write_all(chunk).map_err(PumpError::Write)?;
        }
    }
}

/// A download in progress, deleted unless persisted.
pub(super) struct Partial {
    pub(super) path: PathBuf,
    pub(super) file: File,
    done: bool,
}

impl Partial {
    pub(super) fn create(dir: &Path) -> Result<Partial, (PathBuf, io::Error)> {
        loop {
            let path = dir.join(format!(".partial-{:016x}", rand::random::<u64>()));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Partial {
                        path,
                        file,
                        done: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err((path, e)),
            }
        }
    }

    /// Renames the file into place and hands back its open handle.
    pub(super) fn persist(mut self, to: &Path) -> io::Result<File> {
        fs::rename(&self.path, to)?;
        self.done = true;
        self.file.try_clone()
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}
