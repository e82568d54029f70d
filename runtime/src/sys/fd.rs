//! File-descriptor helpers: close-on-exec flags, dup, poll.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{retry_eintr, syscall};

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
        Err(e) => Err(e),
        Ok(_) => Ok(pfd.revents != 0),
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
