//! POSIX shared memory (`shm_open`), and the detached helper process that
//! unlinks a dead creator's segments.
//!
//! Segments live in `/dev/shm` under a name every program of the same user
//! can open, as Python's `multiprocessing.shared_memory` does. Names passed
//! here are already validated (no `/`, no NUL) by the caller; this file adds
//! the leading `/` that `shm_open` expects.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{retry_eintr, syscall};

/// Where glibc keeps POSIX shared memory objects.
pub const SHM_DIR: &str = "/dev/shm";

fn shm_path(name: &str) -> std::io::Result<CString> {
    CString::new(format!("/{name}")).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a shared memory name cannot hold a NUL byte",
        )
    })
}

/// Creates the segment `name` (which must not exist yet), mode 0600 whatever
/// the umask, open for reading and writing, close-on-exec.
pub fn shm_create(name: &str) -> std::io::Result<OwnedFd> {
    let path = shm_path(name)?;
    let oflag = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR;
    let fd = retry_eintr(|| {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        syscall!(unsafe { libc::shm_open(path.as_ptr(), oflag, 0o600 as libc::mode_t) })
    })?;
    // SAFETY: shm_open just returned this descriptor (glibc sets FD_CLOEXEC on
    // it) and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The umask may have taken bits away; it cannot have added any. Put back
    // exactly 0600 so the owner can always reopen it.
    // SAFETY: `fd` is an open descriptor owned by this function.
    syscall!(unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) })?;
    Ok(fd)
}

/// Opens the existing segment `name`, read-write or read-only.
pub fn shm_open_existing(name: &str, writable: bool) -> std::io::Result<OwnedFd> {
    let path = shm_path(name)?;
    let access = if writable {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    // Non-blocking: a FIFO another user made under the name must not hold
    // the open for ever (a regular file ignores the flag).
    let oflag = access | libc::O_NONBLOCK;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    let fd = retry_eintr(|| syscall!(unsafe { libc::shm_open(path.as_ptr(), oflag, 0) }))?;
    // SAFETY: shm_open just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a writable `stat` and `fd` is open.
    syscall!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a shared memory segment (a FIFO, device or directory has the name)",
        ));
    }
    Ok(fd)
}

/// Removes the name `name`; mappings of the segment stay valid until unmapped.
pub fn shm_unlink(name: &str) -> std::io::Result<()> {
    let path = shm_path(name)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    syscall!(unsafe { libc::shm_unlink(path.as_ptr()) })?;
    Ok(())
}

/// Gives the segment behind `fd` a length of `len` bytes, backed by memory now.
///
/// `fallocate` reserves the pages, so a segment that does not fit in
/// `/dev/shm` fails here with `ENOSPC` instead of killing a later writer
/// with `SIGBUS`. Where the file system cannot preallocate, the length is
/// set with `ftruncate` alone.
pub fn allocate(fd: BorrowedFd<'_>, len: u64) -> std::io::Result<()> {
    let off = libc::off_t::try_from(len).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "segment size too large")
    })?;
    // SAFETY: `fd` is borrowed open for the call; fallocate takes no pointers.
    match retry_eintr(|| syscall!(unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, off) })) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            // SAFETY: `fd` is borrowed open for the call; no pointers.
            syscall!(unsafe { libc::ftruncate(fd.as_raw_fd(), off) })?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// What `fstat` says about a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmStat {
    /// Length in bytes.
    pub size: u64,
    /// Device of the file system holding it.
    pub dev: u64,
    /// Inode number: tells a segment from a later one under the same name.
    pub ino: u64,
    /// Owner.
    pub uid: u32,
    /// Permission bits.
    pub mode: u32,
}

/// Size, identity and owner of the segment behind `fd`.
pub fn stat(fd: BorrowedFd<'_>) -> std::io::Result<ShmStat> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a writable `stat` and `fd` is borrowed open.
    syscall!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(ShmStat {
        size: st.st_size as u64,
        dev: st.st_dev,
        ino: st.st_ino,
        uid: st.st_uid,
        mode: st.st_mode & 0o7777,
    })
}

/// Bytes that unprivileged users may still allocate in `/dev/shm`.
pub fn free_bytes() -> std::io::Result<u64> {
    let path = CString::new(SHM_DIR).map_err(std::io::Error::other)?;
    // SAFETY: `statvfs` is plain old data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` a writable `statvfs`.
    syscall!(unsafe { libc::statvfs(path.as_ptr(), &mut st) })?;
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// A connected pair of close-on-exec `SOCK_SEQPACKET` sockets: each send is
/// one record, and a reader sees end-of-file once every writer is gone.
pub fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    syscall!(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair just returned these two descriptors; we own both.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one record (never raises `SIGPIPE`; a gone peer is `EPIPE`).
pub fn send_record(fd: BorrowedFd<'_>, record: &[u8]) -> std::io::Result<()> {
    let n = retry_eintr(|| {
        // SAFETY: `record` is valid for reads of its length; `fd` is open.
        syscall!(unsafe {
            libc::send(
                fd.as_raw_fd(),
                record.as_ptr().cast(),
                record.len(),
                libc::MSG_NOSIGNAL,
            )
        })
    })?;
    if n as usize != record.len() {
        return Err(std::io::Error::other("short send of a tracker record"));
    }
    Ok(())
}

/// Receives one record into `buf`; `Ok(0)` is end-of-file. With a timeout,
/// waits at most that long and reports `TimedOut`.
pub fn recv_record(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Option<Duration>,
) -> std::io::Result<usize> {
    if let Some(t) = timeout
        && !super::fd::poll_one(fd, super::fd::Interest::Read, Some(t))?
    {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    let n = retry_eintr(|| {
        // SAFETY: `buf` is valid for writes of its length; `fd` is open.
        syscall!(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })
    })?;
    Ok(n as usize)
}

/// Whether descriptor `fd` is open and a `SOCK_SEQPACKET` socket.
pub fn is_seqpacket(fd: RawFd) -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty` is a writable int and `len` holds its size; a closed or
    // foreign `fd` only makes the call fail (EBADF, ENOTSOCK).
    syscall!(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    })
    .is_ok()
        && ty == libc::SOCK_SEQPACKET
}

/// Whether the code at `addr` belongs to this process's main executable
/// (and not to a shared library, as when the runtime is loaded into Python).
pub fn in_main_executable(addr: usize) -> bool {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return false;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    let exe = exe.to_string_lossy();
    let exe = exe.trim_end_matches(" (deleted)");
    maps.lines().any(|line| {
        let mut fields = line.split_ascii_whitespace();
        let Some((lo, hi)) = fields.next().and_then(|r| r.split_once('-')) else {
            return false;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            return false;
        };
        let path = fields.nth(4).unwrap_or("");
        (lo..hi).contains(&addr) && path.trim_end_matches(" (deleted)") == exe
    })
}

/// How the detached helper runs once it is on its own.
pub enum Detached<'a> {
    /// Re-executes this program (`/proc/self/exe`) with `env` added; the
    /// program's start-up code recognises the helper and runs it.
    Exec {
        /// `NAME=value` entries added to the environment.
        env: &'a [&'a str],
        /// Names of variables of this process not to pass on.
        unset: &'a [&'a str],
    },
    /// Runs `run` in the forked copy of this process itself (when this
    /// program cannot be re-executed as the helper).
    Inline {
        /// The helper; it gets the channel as fd 0 and must not return.
        run: fn() -> !,
    },
}

/// Starts a helper process that no process waits for: a grandchild, orphaned
/// at once (so it is never a zombie of this process), in a session of its
/// own (a terminal's Ctrl-C does not reach it), in `/`, with `channel` as
/// fd 0, `/dev/null` as fds 1 and 2 and every other descriptor closed.
///
/// Between the forks and the `exec` only async-signal-safe calls run; the
/// `Inline` form runs `run` after the fork as multiproc's `Fork` start
/// method runs targets (glibc keeps `malloc` usable).
pub fn spawn_detached(how: Detached<'_>, channel: BorrowedFd<'_>) -> std::io::Result<()> {
    // Everything the child needs is built before forking.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let exe: &CStr = c"/proc/self/exe";
    let argv0 = c"multiproc-shm-tracker";
    let argv: [*const libc::c_char; 2] = [argv0.as_ptr(), std::ptr::null()];
    let mut env_strings: Vec<CString> = Vec::new();
    if let Detached::Exec { env, unset } = &how {
        for (k, v) in std::env::vars_os() {
            if unset.iter().any(|u| k == *u) {
                continue;
            }
            let mut entry = k.into_encoded_bytes();
            entry.push(b'=');
            entry.extend_from_slice(v.as_encoded_bytes());
            if let Ok(c) = CString::new(entry) {
                env_strings.push(c);
            }
        }
        for e in env.iter() {
            env_strings.push(CString::new(*e).map_err(std::io::Error::other)?);
        }
    }
    let mut envp: Vec<*const libc::c_char> = env_strings.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let (chan, null_fd) = (channel.as_raw_fd(), null.as_raw_fd());

    // SAFETY: the child only calls async-signal-safe functions (setsid,
    // fork, dup2, close_range, chdir, sigprocmask, execve, _exit) on data
    // prepared before the fork, or, for `Inline`, runs `run` as the Fork
    // start method runs targets; the parent goes on untouched.
    let pid = syscall!(unsafe { libc::fork() })?;
    if pid == 0 {
        // The intermediate child: start the helper and leave at once, so the
        // helper's parent becomes init (or the nearest subreaper).
        // SAFETY: setsid and fork are async-signal-safe; no lock is taken.
        unsafe {
            libc::setsid();
            match libc::fork() {
                0 => {}
                -1 => libc::_exit(1),
                _ => libc::_exit(0),
            }
        }
        // The helper: fds 0..2 as described, nothing else open.
        // SAFETY: dup2, close_range, chdir, sigprocmask, execve and _exit are
        // async-signal-safe; every pointer was prepared before the fork and
        // stays valid in this copy of the address space.
        unsafe {
            if libc::dup2(chan, 0) == -1
                || libc::dup2(null_fd, 1) == -1
                || libc::dup2(null_fd, 2) == -1
            {
                libc::_exit(126);
            }
            if libc::syscall(libc::SYS_close_range, 3u32, libc::c_uint::MAX, 0u32) == -1 {
                for fd in 3..1024 {
                    libc::close(fd);
                }
            }
            // Hold no directory busy (a mount the program ran in, say).
            libc::chdir(c"/".as_ptr());
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            match how {
                Detached::Exec { .. } => {
                    libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    libc::_exit(127)
                }
                Detached::Inline { run } => run(),
            }
        }
    }
    // Reap the intermediate child, which exits as soon as it has forked.
    match super::process::wait(pid) {
        Ok(super::process::ExitStatus::Exited(0)) => Ok(()),
        Ok(status) => Err(std::io::Error::other(format!(
            "could not start a detached helper process ({status:?})"
        ))),
        // Reaped by someone else (a SIGCHLD handler calling waitpid(-1)): the
        // helper's own hello, or its absence, tells the caller how it went.
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes ownership of fd 0 in the helper started by [`spawn_detached`].
///
/// # Safety
///
/// Call only in that helper, once: fd 0 is its channel and nothing else
/// in the process owns it.
pub unsafe fn take_helper_channel() -> OwnedFd {
    // SAFETY: by the caller's contract fd 0 is open and unowned.
    unsafe { OwnedFd::from_raw_fd(0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn tells_our_code_from_a_shared_librarys() {
        let ours: fn(usize) -> bool = in_main_executable;
        assert!(in_main_executable(ours as usize));
        let libc_fn: unsafe extern "C" fn() -> libc::pid_t = libc::getpid;
        assert!(!in_main_executable(libc_fn as usize));
    }

    #[test]
    fn seqpacket_records_keep_their_bounds() {
        let (a, b) = seqpacket_pair().unwrap();
        assert!(is_seqpacket(a.as_raw_fd()));
        send_record(a.as_fd(), b"one").unwrap();
        send_record(a.as_fd(), b"second").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(recv_record(b.as_fd(), &mut buf, None).unwrap(), 3);
        assert_eq!(recv_record(b.as_fd(), &mut buf, None).unwrap(), 6);
        let e = recv_record(b.as_fd(), &mut buf, Some(Duration::from_millis(1))).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        drop(a);
        assert_eq!(recv_record(b.as_fd(), &mut buf, None).unwrap(), 0);
    }
}
