//! File-descriptor helpers: close-on-exec flags, dup, poll.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{retry_eintr, syscall};

/// Whether this process has no descriptor left to open now: duplicating
/// `fd` (any open descriptor) fails for want of one. For telling a message
/// whose descriptors did not fit the receiver's table from a malformed one.
pub fn no_descriptor_left(fd: BorrowedFd<'_>) -> bool {
    fd.try_clone_to_owned()
        .is_err_and(|e| matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)))
}

/// Whether `e` says the process (or the system) ran out of descriptors,
/// buffers or memory: a condition that may pass, unlike a refusal.
pub fn is_exhaustion(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::OutOfMemory
        || matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        )
}

/// Sets or clears `FD_CLOEXEC` on `fd`.
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> std::io::Result<()> {
    // SAFETY: F_GETFD only reads the flags of `fd`, which is borrowed, so open.
    let flags = syscall!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) })?;
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    if new != flags {
        // SAFETY: F_SETFD only changes the close-on-exec flag of the open,
        // borrowed `fd`; `new` is its flags with that bit set or cleared.
        syscall!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, new) })?;
    }
    Ok(())
}

/// Closes every descriptor from 3 up that is not close-on-exec: in a
/// process that a program started with `exec`, those are what its parent
/// left open without meaning to pass them (Python's spawn closes them too).
///
/// # Safety
///
/// Nothing in this process may own such a descriptor: call it first
/// thing in a freshly executed process, while it runs one thread.
pub unsafe fn close_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let numbers: Vec<RawFd> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    // The directory's own descriptor is closed by now: F_GETFD fails on it.
    for fd in numbers {
        // SAFETY: F_GETFD only reads the flags of a descriptor number.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            // SAFETY: the caller promises nothing here owns it.
            unsafe { libc::close(fd) };
        }
    }
}

/// Duplicates `fd` onto exactly `target`, clearing close-on-exec on the copy.
///
/// # Safety
///
/// `target` must be closed, or owned by the caller, or its owner must accept
/// that the number now refers to another file: `dup2` silently closes what
/// `target` referred to (I/O safety).
pub unsafe fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> std::io::Result<()> {
    if fd.as_raw_fd() == target {
        return set_cloexec(fd, false);
    }
    // SAFETY: `fd` is borrowed, so open; replacing `target` is what the
    // caller promised may happen (see the function's contract).
    retry_eintr(|| syscall!(unsafe { libc::dup2(fd.as_raw_fd(), target) }))?;
    Ok(())
}

/// Which condition to poll a descriptor for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Data to read, or the peer hung up.
    Read,
}

/// Waits until one of `fds` is ready for `interest` or `timeout` passes.
///
/// Returns the indices of the ready descriptors (hang-up and error count as ready).
pub fn poll(
    fds: &[BorrowedFd<'_>],
    interest: Interest,
    timeout: Option<Duration>,
) -> std::io::Result<Vec<usize>> {
    let events = match interest {
        Interest::Read => libc::POLLIN,
    };
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        })
        .collect();
    let ms = timeout_ms(timeout);
    // SAFETY: `pfds` is a live array of `pfds.len()` pollfds the kernel may
    // write `revents` into; the descriptors are borrowed, so open.
    let n = syscall!(unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) });
    match n {
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(Vec::new()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
            select_readable(&raw, timeout)
        }
        Err(e) => Err(e),
        Ok(_) => Ok(pfds
            .iter()
            .enumerate()
            .filter(|(_, p)| p.revents != 0)
            .map(|(i, _)| i)
            .collect()),
    }
}

/// As [`poll`] for one descriptor, without allocating: whether it is ready.
pub fn poll_one(
    fd: BorrowedFd<'_>,
    interest: Interest,
    timeout: Option<Duration>,
) -> std::io::Result<bool> {
    let events = match interest {
        Interest::Read => libc::POLLIN,
    };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: `pfd` is one live pollfd the kernel may write `revents` into;
    // its descriptor is borrowed, so open.
    match syscall!(unsafe { libc::poll(&mut pfd, 1, timeout_ms(timeout)) }) {
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            Ok(!select_readable(&[fd.as_raw_fd()], timeout)?.is_empty())
        }
        Err(e) => Err(e),
        Ok(_) => Ok(pfd.revents != 0),
    }
}

/// [`poll`] for a process at its descriptor limit: poll(2) refuses to wait
/// on more descriptors than `RLIMIT_NOFILE` allows (`EINVAL`), so at a limit
/// of 0 a process could not wait on anything it has open, and a caller
/// took that for a hang-up (a daemon child killed itself over it).
/// select(2) has no such check; it takes descriptors below `FD_SETSIZE`.
/// Readable includes end-of-file, a hang-up and an error, as for poll.
fn select_readable(fds: &[RawFd], timeout: Option<Duration>) -> std::io::Result<Vec<usize>> {
    let too_high = |fd: RawFd| fd < 0 || fd as usize >= libc::FD_SETSIZE;
    if fds.iter().any(|&fd| too_high(fd)) {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: an all-zero `fd_set` is the empty set (what FD_ZERO makes).
    let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
    for &fd in fds {
        // SAFETY: `fd` is within 0..FD_SETSIZE (checked above), `set` is live.
        unsafe { libc::FD_SET(fd, &mut set) };
    }
    let nfds = fds.iter().max().map_or(0, |fd| fd + 1);
    let mut tv = timeout.map(|t| libc::timeval {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    });
    let tvp = tv
        .as_mut()
        .map_or(std::ptr::null_mut(), |t| t as *mut libc::timeval);
    let null = std::ptr::null_mut();
    // SAFETY: `set` is a live fd_set holding only borrowed, open descriptors
    // below `nfds`; `tvp` is null (wait without limit) or a live timeval.
    match syscall!(unsafe { libc::select(nfds, &mut set, null, null, tvp) }) {
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(Vec::new()),
        Err(e) => Err(e),
        Ok(_) => Ok(fds
            .iter()
            .enumerate()
            // SAFETY: as above; `set` now holds the ready ones.
            .filter(|(_, fd)| unsafe { libc::FD_ISSET(**fd, &set) })
            .map(|(i, _)| i)
            .collect()),
    }
}

/// Whether the peer of a connected socket `fd` has closed its end (its
/// process may have died): `POLLHUP`, which unread data does not fake.
/// Looks without waiting and needs no new descriptor.
pub fn peer_hung_up(fd: BorrowedFd<'_>) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        // Hang-ups and errors are reported whatever is asked for.
        events: 0,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid, writable pollfd; the timeout is zero.
    match syscall!(unsafe { libc::poll(&mut pfd, 1, 0) }) {
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
        Ok(_) => Ok(pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0),
    }
}

/// A new non-blocking, close-on-exec eventfd whose counter starts at
/// `initial` (readable while the counter is not 0).
pub fn eventfd(initial: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd takes plain integers and returns a new descriptor.
    let fd = syscall!(unsafe { libc::eventfd(initial, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: eventfd just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd's counter (making it readable); a counter at its
/// maximum is left as it is (it is readable already).
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let one = 1u64.to_ne_bytes();
    // SAFETY: `one` is 8 readable bytes, what an eventfd write takes; `fd` is borrowed, so open.
    match retry_eintr(|| syscall!(unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) })) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        other => other.map(drop),
    }
}

/// A poll timeout in milliseconds: -1 for none, sub-millisecond waits
/// rounded up so a short wait is not a busy loop.
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) if d.is_zero() => 0,
        Some(d) => d.as_millis().clamp(1, i32::MAX as u128) as libc::c_int,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::process::tests::{in_child, run_out_of_descriptors};
    use std::io::Write;
    use std::os::fd::AsFd;

    /// Regression: at a descriptor limit of 0, poll(2) fails with `EINVAL`,
    /// and a daemon child's parent watch took that for its parent's death
    /// (a manager server started by fork killed itself).
    #[test]
    fn a_process_out_of_descriptors_still_waits_on_what_it_has_open() {
        let code = in_child(|| {
            let Ok((a, mut b)) = crate::sys::socket::socketpair() else {
                return 10;
            };
            run_out_of_descriptors();
            if !matches!(
                poll_one(a.as_fd(), Interest::Read, Some(Duration::ZERO)),
                Ok(false)
            ) {
                return 11;
            }
            let waited = poll(
                &[a.as_fd()],
                Interest::Read,
                Some(Duration::from_millis(20)),
            );
            if !matches!(waited, Ok(ref r) if r.is_empty()) {
                return 12;
            }
            if b.write_all(b"x").is_err() {
                return 13;
            }
            match poll(&[b.as_fd(), a.as_fd()], Interest::Read, None) {
                Ok(r) if r == [1] => {}
                _ => return 14,
            }
            drop(b);
            if !matches!(poll_one(a.as_fd(), Interest::Read, None), Ok(true)) {
                return 15;
            }
            0
        });
        assert_eq!(code, 0);
    }
}
