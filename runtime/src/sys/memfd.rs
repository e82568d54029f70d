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

/// The id a shared segment's memory file carries in its name
/// (`multiproc-<16 hex digits>`, given at creation and never changed), or
/// `None` for any other file. A descriptor number is reused once closed, so
/// this is what tells that a descriptor opened through `/proc` is still
/// the segment a handle named.
pub fn segment_id_of(fd: BorrowedFd<'_>) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let name = link.as_os_str().as_encoded_bytes();
    let rest = name.strip_prefix(b"/memfd:multiproc-")?;
    let (hex, tail) = rest.split_at_checked(16)?;
    if !(tail.is_empty() || tail == b" (deleted)") {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
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
            syscall!(unsafe {
                libc::pread(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at)
            })
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
    // SAFETY: sysconf has no preconditions; it reads a system setting.
    let pages = syscall!(unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) }).ok()?;
    // SAFETY: as above.
    let page = syscall!(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
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

    #[test]
    fn a_segments_id_is_read_from_its_name_and_nothing_else_has_one() {
        let seg = memfd_create("multiproc-00000000deadbeef", 8).unwrap();
        assert_eq!(segment_id_of(seg.as_fd()), Some(0xdead_beef));
        for other in ["multiproc-test-segment", "multiproc-00000000deadbeef0", "x"] {
            let fd = memfd_create(other, 8).unwrap();
            assert_eq!(segment_id_of(fd.as_fd()), None, "{other}");
        }
    }
}
