//! Anonymous memory files: the backing of every shared segment.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::syscall;

/// Creates an anonymous memory file of `len` bytes (zero-filled),
/// close-on-exec, whose size is sealed: no process can shrink or grow it.
///
/// It has no name in any file system: when the last descriptor and mapping go,
/// the memory goes, whichever process dies. The seal matters because a
/// mapping of a file that shrinks faults (`SIGBUS`) on the pages that went,
/// and references into segments are handed out as if they were memory:
/// anyone holding the descriptor (through `/proc` too) could otherwise
/// crash every process that maps it with one `ftruncate`.
pub fn memfd_create(name: &str, len: u64) -> std::io::Result<OwnedFd> {
    let cname = CString::new(name.replace('\0', "_")).map_err(std::io::Error::other)?;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: `cname` is a NUL-terminated string that outlives the call.
    let fd = syscall!(unsafe { libc::memfd_create(cname.as_ptr(), flags) })?;
    // SAFETY: memfd_create just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_len(fd.as_fd(), len)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS takes an integer set of seals for the open `fd`.
    syscall!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(fd)
}

/// Whether the size of the file behind `fd` is sealed against shrinking
/// (a memory file from [`memfd_create`]): only such a file is safe to map
/// and use as memory. A file that cannot carry seals is not.
pub fn size_is_sealed(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: F_GET_SEALS only reads the seals of the open, borrowed `fd`
    // (EINVAL for a file that has none).
    syscall!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })
        .is_ok_and(|seals| seals & libc::F_SEAL_SHRINK != 0)
}

/// Sets the size of the file behind `fd`.
pub fn set_len(fd: BorrowedFd<'_>, len: u64) -> std::io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: `fd` is borrowed, so open; ftruncate touches no memory of ours.
    syscall!(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(())
}

/// The size in bytes of the file behind `fd`.
pub fn file_len(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is borrowed, so open; `st` is a live stat the kernel fills in.
    syscall!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_size as u64)
}

/// Segments below this size are not checked against free memory: every
/// machine this runs on has that much, and reading `/proc/meminfo` costs
/// more than creating a small segment.
const CHECKED_LEN: u64 = 64 << 20;

/// `Err(OutOfMemory)` if a segment of `len` bytes could not be backed by
/// the memory this machine has free now (available RAM plus free swap).
///
/// A memory file's size is only a promise: `ftruncate` and `mmap` of any
/// size succeed, and touching more pages than the machine has brings the
/// OOM killer instead of an error. So a large segment is checked first.
/// When `/proc/meminfo` cannot be read, nothing is known and nothing is
/// refused.
pub fn check_backable(len: u64) -> std::io::Result<()> {
    if len < CHECKED_LEN {
        return Ok(());
    }
    let Some(free) = free_memory() else {
        return Ok(());
    };
    if len > free {
        return Err(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!(
                "a shared segment of {len} bytes exceeds the memory this machine has free \
                 ({free} bytes of available RAM and swap)"
            ),
        ));
    }
    Ok(())
}

/// `MemAvailable` plus `SwapFree` from `/proc/meminfo`, in bytes.
pub fn free_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        kib.checked_mul(1024)
    };
    let available = field("MemAvailable:")?;
    let swap = field("SwapFree:").unwrap_or(0);
    Some(available.saturating_add(swap))
}

/// Opens another process's descriptor through `/proc/<pid>/fd/<fd>`.
///
/// This gives a fresh descriptor for the same memory file, as long as that
/// process is alive and still holds the descriptor.
pub fn open_foreign(pid: i32, fd: i32) -> std::io::Result<OwnedFd> {
    let path = if pid == super::process::getpid() {
        format!("/proc/self/fd/{fd}")
    } else {
        format!("/proc/{pid}/fd/{fd}")
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    Ok(OwnedFd::from(file))
}
