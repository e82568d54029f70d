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
    let fd = syscall!(memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC))?;
    // SAFETY: memfd_create just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_len(fd.as_fd(), len)?;
    Ok(fd)
}

/// Sets the size of the file behind `fd`.
pub fn set_len(fd: BorrowedFd<'_>, len: u64) -> std::io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    syscall!(ftruncate(fd.as_raw_fd(), len))?;
    Ok(())
}

/// The size in bytes of the file behind `fd`.
pub fn file_len(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    syscall!(fstat(fd.as_raw_fd(), &mut st))?;
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

/// Like [`open_foreign`], for a shared segment only: a descriptor that is
/// not one of this crate's memory files (named `multiproc-…` at creation)
/// is refused with `InvalidInput` before it is opened.
pub fn open_foreign_segment(pid: i32, fd: i32) -> std::io::Result<OwnedFd> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))?;
    if !link
        .as_os_str()
        .as_encoded_bytes()
        .starts_with(b"/memfd:multiproc-")
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a multiproc shared segment",
        ));
    }
    open_foreign(pid, fd)
}

/// Reads exactly `buf.len()` bytes at `offset` of the file behind `fd`
/// (without moving its file position); a file too short is `UnexpectedEof`.
pub fn read_exact_at(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset
            .checked_add(done as u64)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| std::io::Error::other("offset out of range"))?;
        let rest = &mut buf[done..];
        let n = super::retry_eintr(|| {
            // SAFETY: `rest` is valid for writes of `rest.len()` bytes and
            // `fd` is an open descriptor for the duration of the call.
            syscall!(pread(
                fd.as_raw_fd(),
                rest.as_mut_ptr().cast(),
                rest.len(),
                at
            ))
        })?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        done += n as usize;
    }
    Ok(())
}

/// The machine's physical memory in bytes, if the system says.
pub fn physical_memory() -> Option<u64> {
    let pages = syscall!(sysconf(libc::_SC_PHYS_PAGES)).ok()?;
    let page = syscall!(sysconf(libc::_SC_PAGESIZE)).ok()?;
    u64::try_from(pages)
        .ok()?
        .checked_mul(u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_at_an_offset_and_reports_a_short_file() {
        let fd = memfd_create("multiproc-test-read-at", 16).unwrap();
        let mut buf = [7u8; 4];
        read_exact_at(fd.as_fd(), &mut buf, 12).unwrap();
        assert_eq!(buf, [0; 4]);
        let err = read_exact_at(fd.as_fd(), &mut buf, 14).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(physical_memory().is_some_and(|m| m > 0));
    }

    #[test]
    fn only_segments_are_opened_as_segments() {
        let me = super::super::process::getpid();
        let seg = memfd_create("multiproc-test-segment", 8).unwrap();
        let other = memfd_create("something-else", 8).unwrap();
        assert!(open_foreign_segment(me, seg.as_raw_fd()).is_ok());
        let refused = open_foreign_segment(me, other.as_raw_fd()).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
        assert!(open_foreign_segment(me, -5).is_err());
    }
}
