//! Waiting for termination signals in a thread of one's own (for servers
//! that must shut down cleanly on `SIGINT` or `SIGTERM`).

use std::mem::MaybeUninit;

/// A set holding `SIGINT` and `SIGTERM`.
fn termination_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigemptyset` initializes the set it is given; `sigaddset` then
    // only adds valid signal numbers to that initialized set.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
        libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
        set.assume_init()
    }
}

/// Blocks `SIGINT` and `SIGTERM` in the calling thread (and the threads it
/// starts afterwards), so that [`wait_termination`] can take them.
///
/// Call it first thing in `main`, before any thread starts.
pub fn block_termination() -> std::io::Result<()> {
    let set = termination_set();
    // SAFETY: `set` is an initialized signal set; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Waits until `SIGINT` or `SIGTERM` arrives (they must be blocked, see
/// [`block_termination`]); returns the signal's number.
pub fn wait_termination() -> std::io::Result<i32> {
    let set = termination_set();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is an initialized signal set and `sig` a valid out pointer.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        match rc {
            0 => return Ok(sig),
            libc::EINTR => continue,
            e => return Err(std::io::Error::from_raw_os_error(e)),
        }
    }
}

/// Sets what `signal` does to this process: ignored (`true`) or its
/// default action (`false`). For `SIGINT` in a server that a terminal's
/// Ctrl-C must not end, and back to the default in its children.
pub fn set_ignored(signal: i32, ignored: bool) -> std::io::Result<()> {
    let handler = if ignored {
        libc::SIG_IGN
    } else {
        libc::SIG_DFL
    };
    // SAFETY: installing SIG_IGN or SIG_DFL runs no code of ours in a
    // signal handler; `signal` is a plain number the kernel checks.
    if unsafe { libc::signal(signal, handler) } == libc::SIG_ERR {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `SIGINT`, by name.
pub const INT: i32 = libc::SIGINT;

/// `SIGTERM`, by name.
pub const TERM: i32 = libc::SIGTERM;

/// `SIGABRT`: `abort()`, a stack overflow, a panic under `panic = "abort"`.
pub const ABRT: i32 = libc::SIGABRT;

/// `SIGSEGV` and `SIGBUS`: a memory fault.
pub const MEMORY_FAULTS: [i32; 2] = [libc::SIGSEGV, libc::SIGBUS];
