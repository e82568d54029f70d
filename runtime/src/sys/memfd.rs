//! Anonymous memory files: the backing of every shared segment.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::syscall;

/// Creates an anonymous memory file of `len` bytes (zero-filled), close-on-exec.
///
/// It has no name in any file system: when the last descriptor and mapping go,
/// the memory goes, whichever process dies.
pub fn memfd_create(name: &str, len: u64) -> std::io::Result<OwnedFd> {
    let cname = CString::new(name.replace('\0', "_")).map_err(std::io::Error::other)?;
    // SAFETY: `cname` is a NUL-terminated string that outlives the call.
    let fd = syscall!(unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: memfd_create just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_len(fd.as_fd(), len)?;
    Ok(fd)
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
