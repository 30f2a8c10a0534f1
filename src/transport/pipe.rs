//! Large pipes for uploads (see [`super::Script::large_input`]): the controller's end of the
//! pipe that feeds an ssh master, made [`super::LARGE_PIPE`] bytes while an upload runs.

/// Pipes this process holds enlarged right now (see [`LargePipe`]).
static ENLARGED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many pipes an unprivileged controller enlarges at once. Linux lets such a user hold
/// 64 MiB of pipe buffers in all (`pipe-user-pages-soft`) and gives every pipe that user
/// creates past that a single page, which would slow everything it runs; 16 × 1 MiB stays
/// well inside. Root is not limited.
const UNPRIVILEGED_LARGE_PIPES: usize = 16;

/// A pipe made `size` bytes (Linux), counted while it lives. Best effort: a pipe left at its
/// default size only costs more wake-ups.
pub(super) struct LargePipe {
    counted: bool,
}

impl LargePipe {
    pub(super) fn enlarge(pipe: &impl std::os::fd::AsRawFd, size: i32) -> LargePipe {
        use std::sync::atomic::Ordering;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let limit = if root {
            usize::MAX
        } else {
            UNPRIVILEGED_LARGE_PIPES
        };
        if ENLARGED.fetch_add(1, Ordering::Relaxed) >= limit {
            ENLARGED.fetch_sub(1, Ordering::Relaxed);
            return LargePipe { counted: false };
        }
        #[cfg(target_os = "linux")]
        // SAFETY: fcntl on a descriptor the caller owns for the call's duration; no memory is
        // passed.
        unsafe {
            libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, size);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (pipe, size);
        LargePipe { counted: true }
    }
}

impl Drop for LargePipe {
    fn drop(&mut self) {
        if self.counted {
            ENLARGED.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn size(fd: &impl std::os::fd::AsRawFd) -> i32 {
        // SAFETY: F_GETPIPE_SZ on a descriptor the test owns.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) }
    }

    #[test]
    fn a_pipe_is_enlarged_and_counted_while_it_lives() {
        let (r, w) = std::io::pipe().unwrap();
        assert_eq!(size(&w), 65536, "Linux's default");
        let before = ENLARGED.load(std::sync::atomic::Ordering::Relaxed);
        let large = LargePipe::enlarge(&w, super::super::LARGE_PIPE);
        assert!(large.counted, "one pipe is within any limit");
        assert_eq!(size(&w), super::super::LARGE_PIPE);
        assert_eq!(ENLARGED.load(std::sync::atomic::Ordering::Relaxed), before + 1);
        drop(large);
        assert_eq!(ENLARGED.load(std::sync::atomic::Ordering::Relaxed), before);
        drop((r, w));
    }
}
