//! Writing to stdout and stderr without panicking.
//!
//! Rust ignores SIGPIPE, so `println!` into a closed pipe (`flotilla plan | head -1`) panics.
//! Restoring SIGPIPE's default action instead would make the kernel kill the process on *any*
//! write to a closed pipe — including the stdin of a probe or transaction script whose `sh`
//! exited early, or an SSH control socket — silently, possibly mid-apply. So SIGPIPE stays
//! ignored, and every write to stdout goes through [`out`], which turns a closed pipe into a
//! [`ClosedPipe`] error; `main` ends such a run quietly with exit code 141 (what a shell reports
//! for a process killed by SIGPIPE, as `git log | head -1` would). Lines to stderr go through
//! [`err`], which drops write errors: stderr is where an error would be reported, so there is
//! nowhere left to report one.

use std::io::Write as _;

/// Standard output was closed by its reader.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct ClosedPipe;

/// The exit code of a run whose standard output was closed early.
pub const CLOSED_PIPE_EXIT: u8 = 141;

/// Writes `text` to stdout and flushes it.
pub fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ClosedPipe.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// Writes `text` to stderr, ignoring failures.
pub fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// Whether to color what goes to stderr: colors are on and stderr is a terminal.
pub fn stderr_color(color: bool) -> bool {
    color && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// Whether `e` (or anything it wraps) is a closed standard output. Only [`ClosedPipe`] counts:
/// a broken pipe to a host's script is a real error and must be reported.
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<ClosedPipe>())
}

/// `r`, except that a closed standard output is not an error: for output printed after the
/// work is done, whose exit code must still say how the work went.
pub fn unless_closed(r: anyhow::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if is_closed_pipe(&e) => Ok(()),
        r => r,
    }
}

/// `outln!("...", args)`: a line to stdout through [`out`]; evaluates to `anyhow::Result<()>`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::out(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `errln!("...", args)`: a line to stderr through [`err`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::err(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, outln};
