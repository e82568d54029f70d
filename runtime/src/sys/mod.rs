//! The only place in the crate that talks to the operating system directly.
//!
//! Every function here is a small wrapper that turns a libc call into an
//! `io::Result`; those whose misuse could break an invariant (`fork`,
//! taking ownership of or replacing a raw descriptor) are `unsafe fn`. The
//! rest of the crate never writes `unsafe { libc::… }`. The module is
//! private to the crate.

pub mod fd;
pub mod futex;
pub mod memfd;
pub mod posix_shm;
pub mod process;
pub mod sched;
pub mod signal;
pub mod socket;
pub mod time;

/// Turns a libc return value into an `io::Result`, reading `errno` on `-1`.
///
/// The call site writes the `unsafe` block itself, as in
/// `syscall!(unsafe { libc::close(fd) })`, so each one carries its own
/// `// SAFETY:` note (`clippy::undocumented_unsafe_blocks` is denied): the
/// contract of every libc function differs, and a blanket note in the macro
/// would vouch for arguments it never sees.
macro_rules! syscall {
    ($call:expr) => {{
        let res = $call;
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
