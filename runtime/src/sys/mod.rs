//! The only place in the crate that talks to the operating system directly.
//!
//! Every function here is a small safe wrapper that turns a libc call into an
//! `io::Result`. The rest of the crate never writes `unsafe { libc::… }`.

pub mod fd;
pub mod futex;
pub mod memfd;
pub mod posix_shm;
pub mod process;
pub mod signal;
pub mod socket;
pub mod time;

/// Turns a libc return value into an `io::Result`, reading `errno` on `-1`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller of the macro passes arguments that satisfy the
        // contract of the named libc function; see each call site.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// Retries `f` while it fails with `EINTR`.
pub(crate) fn retry_eintr<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
