//! `SharedMemory`: one named POSIX shared memory segment, mapped.

use std::os::fd::{AsFd, OwnedFd};

use memmap2::{MmapOptions, MmapRaw};

use super::tracker;
use crate::error::{Error, Result};
use crate::sys::posix_shm;

/// Longest name a segment may have (a file name in `/dev/shm`).
pub const MAX_NAME_LEN: usize = 255;

/// Prefix of generated names, as in Python (`psm_` + random hex).
const GENERATED_PREFIX: &str = "psm_";

/// From this size on, creation first checks the memory the machine has left.
const LARGE_SEGMENT: usize = 16 << 20;

/// How many generated names to try before giving up on collisions.
const GENERATED_TRIES: usize = 64;

/// A named block of shared memory: Python's `multiprocessing.shared_memory.SharedMemory`.
///
/// The segment is a POSIX shared memory object in `/dev/shm`, created mode
/// 0600: any process of the same user that knows the name can
/// [`attach`](SharedMemory::attach) it (a Rust program that is not our
/// child, or Python's `SharedMemory(name)`); other users cannot.
///
/// Dropping a `SharedMemory` unmaps it (Python's `close()`); the segment
/// itself lives until someone calls [`unlink`](SharedMemory::unlink) or,
/// for a segment made with [`create`](SharedMemory::create), until its
/// creating process (with the children it forked) is gone and so is the
/// program (the first process of its tree: a segment a `Process` target or
/// a pool worker creates and hands back by name outlives that child, as in
/// Python): a tracker process then unlinks it, quietly, even after a
/// SIGKILL. A segment made
/// with [`create_untracked`](SharedMemory::create_untracked) lives until
/// someone unlinks it (or the machine restarts).
///
/// Passed to a process (as an argument or in a message), a `SharedMemory`
/// travels by name and is attached where it is decoded, as Python pickles it.
///
/// Access is through bounds-checked copies ([`read`](SharedMemory::read),
/// [`write`](SharedMemory::write)), a raw pointer, or `unsafe` slice views
/// for zero-copy use. Another process may write the memory at any time;
/// nothing here locks it. Coordinate with a [`Lock`](crate::Lock), an
/// [`Event`](crate::Event) or a [`Queue`](crate::Queue).
///
/// A named segment is a file in `/dev/shm`, as in Python: any process of
/// this user may also shrink it (`ftruncate`), and an access past its new
/// end then kills the process that makes it with `SIGBUS`, as with any
/// shared file (another user's segment is never attached). The crate's own
/// segments (`Value`, `Array`, queues, manager objects) are sealed memfds,
/// which no process can shrink.
///
/// ```
/// use multiproc::shared_memory::SharedMemory;
///
/// let shm = SharedMemory::create(None, 64).unwrap();
/// shm.write(0, b"hello").unwrap();
///
/// // Any process of this user can do this, knowing the name:
/// let other = SharedMemory::attach(shm.name()).unwrap();
/// let mut buf = [0u8; 5];
/// other.read(0, &mut buf).unwrap();
/// assert_eq!(&buf, b"hello");
///
/// shm.unlink().unwrap();
/// ```
pub struct SharedMemory {
    name: String,
    size: usize,
    map: MmapRaw,
    // Kept open as Python does; the mapping alone would keep the memory.
    _fd: OwnedFd,
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish()
    }
}

/// `name` without one leading `/` (Python passes `"/jobs"` to `shm_open` as
/// it is, and reports it as `"jobs"`), checked with [`validate_name`].
fn plain_name(name: &str) -> Result<&str> {
    let plain = name.strip_prefix('/').unwrap_or(name);
    validate_name(plain)?;
    Ok(plain)
}

/// Checks that `name` can name a segment: 1 to 255 bytes, no `/`, no NUL,
/// not `.` or `..`. (`create`, `attach` and `unlink` take one leading `/`
/// as well, and drop it.)
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "invalid shared memory name {name:?}: {why}"
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 255 bytes");
    }
    if name.contains('/') {
        return bad("it contains '/' (a name is one path component)");
    }
    if name.contains('\0') {
        return bad("it contains a NUL byte");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not names");
    }
    Ok(())
}

fn generated_name() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Names need only differ, not be secret; creation retries on collision.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (t ^ ((crate::sys::process::getpid() as u64) << 32)).to_le_bytes();
    }
    let mut name = String::from(GENERATED_PREFIX);
    for b in bytes {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

/// Creates a segment under the first name from `next_name` that is free,
/// trying at most `GENERATED_TRIES + 1` names.
fn create_generated(mut next_name: impl FnMut() -> String) -> Result<(String, OwnedFd)> {
    let mut tries = 0;
    loop {
        let candidate = next_name();
        match posix_shm::shm_create(&candidate) {
            Ok(fd) => return Ok((candidate, fd)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < GENERATED_TRIES => {
                tries += 1;
            }
            Err(e) => return Err(name_error(&candidate, e)),
        }
    }
}

/// Turns an `io::Error` about segment `name` into the matching typed error.
fn name_error(name: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::NotFound(format!("no shared memory segment named {name:?}"))
        }
        std::io::ErrorKind::AlreadyExists => {
            Error::AlreadyExists(format!("a shared memory segment named {name:?} exists"))
        }
        std::io::ErrorKind::PermissionDenied => Error::PermissionDenied(format!(
            "shared memory segment {name:?} belongs to another user or is not open to us"
        )),
        _ => Error::Io(std::io::Error::new(
            e.kind(),
            format!("shared memory segment {name:?}: {e}"),
        )),
    }
}

/// Refuses sizes that cannot be backed, before asking the kernel for them.
fn check_size(size: usize) -> Result<()> {
    if size == 0 {
        return Err(Error::InvalidArgument(
            "a shared memory segment needs a size of at least one byte".into(),
        ));
    }
    if size > isize::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "a shared memory segment of {size} bytes cannot be mapped"
        )));
    }
    if let Ok(free) = posix_shm::free_bytes()
        && size as u64 > free
    {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "a shared memory segment of {size} bytes does not fit in {} ({free} bytes free)",
                posix_shm::SHM_DIR
            ),
        )));
    }
    // Reading /proc/meminfo costs more than creating a small segment: ask
    // only for sizes that could matter.
    if size >= LARGE_SEGMENT
        && let Some(avail) = crate::sys::memfd::free_memory()
        && size as u64 > avail
    {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!(
                "a shared memory segment of {size} bytes is larger than the memory available ({avail} bytes)"
            ),
        )));
    }
    Ok(())
}

impl SharedMemory {
    /// Creates a segment of `size` bytes (zero-filled), named `name` or, with
    /// `None`, a random `psm_…` name; tracked, so it is unlinked when this
    /// process (and the children it forked) is gone if nobody unlinked it
    /// before.
    ///
    /// Errors: [`Error::InvalidArgument`] for a bad name or a zero size;
    /// [`Error::AlreadyExists`] if `name` is taken; an
    /// [`Error::Io`] of kind `StorageFull` or `OutOfMemory` for a size that
    /// `/dev/shm` or the machine cannot hold (the memory is reserved now,
    /// so a later write never faults for lack of it).
    pub fn create(name: Option<&str>, size: usize) -> Result<SharedMemory> {
        Self::create_inner(name, size, true)
    }

    /// As [`create`](SharedMemory::create), but untracked (Python 3.13's
    /// `track=False`): the segment outlives this process until someone
    /// calls [`unlink`](SharedMemory::unlink).
    pub fn create_untracked(name: Option<&str>, size: usize) -> Result<SharedMemory> {
        Self::create_inner(name, size, false)
    }

    fn create_inner(name: Option<&str>, size: usize, track: bool) -> Result<SharedMemory> {
        let name = name.map(plain_name).transpose()?;
        check_size(size)?;
        if track {
            // Start the tracker before the name exists, so that a kill during
            // its start-up cannot leave the name behind.
            tracker::ensure_started()?;
        }
        let (name, fd) = match name {
            Some(name) => {
                let fd = posix_shm::shm_create(name).map_err(|e| name_error(name, e))?;
                (name.to_string(), fd)
            }
            None => create_generated(generated_name)?,
        };
        match Self::finish_create(&name, fd, size, track) {
            Ok(shm) => Ok(shm),
            Err(e) => {
                // Nothing else can know this segment yet: take it away again.
                let _ = posix_shm::shm_unlink(&name);
                Err(e)
            }
        }
    }

    fn finish_create(name: &str, fd: OwnedFd, size: usize, track: bool) -> Result<SharedMemory> {
        let st = posix_shm::stat(fd.as_fd()).map_err(|e| name_error(name, e))?;
        if track {
            // Registered before the memory is reserved, so the window in which
            // a SIGKILL would leave the name behind is as short as can be.
            tracker::register(name, st.ino)?;
        }
        let sized = posix_shm::allocate(fd.as_fd(), size as u64).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!(
                        "a shared memory segment of {size} bytes does not fit in {}",
                        posix_shm::SHM_DIR
                    ),
                ))
            } else {
                name_error(name, e)
            }
        });
        let mapped = sized.and_then(|()| Self::map(name, fd, size));
        if mapped.is_err() && track {
            tracker::unregister(name);
        }
        mapped
    }

    fn map(name: &str, fd: OwnedFd, size: usize) -> Result<SharedMemory> {
        let map = MmapOptions::new()
            .len(size)
            .map_raw(&fd)
            .map_err(|e| name_error(name, e))?;
        Ok(SharedMemory {
            name: name.to_string(),
            size,
            map,
            _fd: fd,
        })
    }

    /// Attaches the existing segment `name`, whatever its size (see
    /// [`size`](SharedMemory::size)). Attaching never registers the segment
    /// with this process's tracker: only its creator's tracker unlinks it.
    ///
    /// Errors: [`Error::NotFound`] if no segment has that name,
    /// [`Error::PermissionDenied`] if it belongs to another user,
    /// [`Error::InvalidArgument`] for a malformed name,
    /// [`Error::SizeMismatch`] for an empty segment (one its creator has
    /// not sized yet).
    pub fn attach(name: &str) -> Result<SharedMemory> {
        let name = plain_name(name)?;
        let fd = posix_shm::shm_open_existing(name, true).map_err(|e| name_error(name, e))?;
        let st = posix_shm::stat(fd.as_fd()).map_err(|e| name_error(name, e))?;
        // Opening it is not enough (root opens anything, anyone a segment
        // open to all): another user could shrink it under our mapping, and
        // each access past its new end would kill us with SIGBUS.
        if st.uid != crate::sys::socket::effective_uid() {
            return Err(Error::PermissionDenied(format!(
                "shared memory segment {name:?} belongs to another user (uid {})",
                st.uid
            )));
        }
        let size = usize::try_from(st.size).unwrap_or(usize::MAX);
        if size == 0 {
            return Err(Error::SizeMismatch {
                what: format!(
                    "shared memory segment {name:?} (empty: not sized by its creator yet?)"
                ),
                expected: 1,
                found: 0,
            });
        }
        Self::map(name, fd, size)
    }

    /// Attaches segment `name` and checks that it holds at least `size` bytes.
    ///
    /// Errors as [`attach`](SharedMemory::attach), and
    /// [`Error::SizeMismatch`] if the segment is smaller than `size`.
    pub fn attach_with_size(name: &str, size: usize) -> Result<SharedMemory> {
        let shm = Self::attach(name)?;
        if shm.size < size {
            return Err(Error::SizeMismatch {
                what: format!("shared memory segment {name:?}"),
                expected: size,
                found: shm.size,
            });
        }
        Ok(shm)
    }

    /// The segment's name, without a leading `/` (as Python's `name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::IndexOutOfRange {
                index: offset.saturating_add(len.saturating_sub(1)),
                len: self.size,
            }),
        }
    }

    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    ///
    /// [`Error::IndexOutOfRange`] if the range does not lie in the segment.
    /// A concurrent writer in another process can make the copy torn (part
    /// old, part new); coordinate if that matters.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        // SAFETY: offset..offset+len lies in the mapping (checked above),
        // which lives as long as `self`; `buf` is a distinct local buffer.
        // Bytes are plain data: whatever another process wrote is valid.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }

    /// Copies `data` into the segment starting at `offset`.
    ///
    /// [`Error::IndexOutOfRange`] if the range does not lie in the segment.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        // SAFETY: offset..offset+len lies in the mapping (checked above),
        // which lives as long as `self` and is writable; `data` cannot
        // overlap it (no safe reference into the mapping exists).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(offset), data.len());
        }
        Ok(())
    }

    /// The start of the mapping, valid for [`size`](SharedMemory::size)
    /// bytes while `self` lives (page-aligned).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// The whole segment as a byte slice, without copying.
    ///
    /// # Safety
    ///
    /// While the slice lives, no process (this one included, through
    /// [`write`](SharedMemory::write), [`as_mut_slice`](SharedMemory::as_mut_slice)
    /// or another mapping) may write the segment: a shared slice promises
    /// the bytes do not change. Use [`read`](SharedMemory::read) when other
    /// processes may be writing.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `size` bytes, lives as long as `self`, and the
        // caller promises nobody writes it while the slice lives.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.size) }
    }

    /// The whole segment as a mutable byte slice, without copying.
    ///
    /// # Safety
    ///
    /// While the slice lives, nothing else (no other slice or call on this
    /// handle, no other handle or process) may read or write the segment.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: the mapping is `size` bytes, writable, lives as long as
        // `self`; the caller promises exclusive access while the slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.size) }
    }

    /// Removes the segment's name (Python's `unlink()`): no process can
    /// attach it any more, while every existing mapping stays valid; the
    /// memory goes when the last one is dropped. Any process may unlink;
    /// call it once. If this process's tracker registered the name, it
    /// forgets it.
    ///
    /// [`Error::NotFound`] if the name is already gone.
    pub fn unlink(&self) -> Result<()> {
        unlink(&self.name)
    }
}

/// Removes segment `name` (see [`SharedMemory::unlink`]) without attaching it.
///
/// Errors: [`Error::NotFound`], [`Error::PermissionDenied`], or
/// [`Error::InvalidArgument`] for a malformed name.
pub fn unlink(name: &str) -> Result<()> {
    let name = plain_name(name)?;
    posix_shm::shm_unlink(name).map_err(|e| name_error(name, e))?;
    tracker::unregister(name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for bad in ["", "a/b", "/a", ".", "..", "a\0b"] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidArgument(_))),
                "{bad:?} was accepted"
            );
        }
        assert!(validate_name(&"x".repeat(255)).is_ok());
        assert!(matches!(
            validate_name(&"x".repeat(256)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(validate_name("psm_0123 with spaces").is_ok());
    }

    /// Python takes `"/jobs"` (and reports it as `"jobs"`); a newcomer's
    /// port was refused.
    #[test]
    fn one_leading_slash_is_taken_and_dropped() {
        let plain = format!("mp_slash_{}", std::process::id());
        let slashed = format!("/{plain}");
        let made = SharedMemory::create_untracked(Some(&slashed), 64).unwrap();
        assert_eq!(made.name(), plain);
        assert_eq!(SharedMemory::attach(&plain).unwrap().size(), made.size());
        assert_eq!(SharedMemory::attach(&slashed).unwrap().size(), made.size());
        unlink(&slashed).unwrap();
        assert!(matches!(
            SharedMemory::attach(&plain),
            Err(Error::NotFound(_))
        ));
        for bad in [format!("//{plain}"), "/".into(), "/a/b".into()] {
            assert!(
                matches!(SharedMemory::attach(&bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generated_names_look_like_pythons() {
        let a = generated_name();
        let b = generated_name();
        assert!(a.starts_with("psm_") && a.len() == 20, "{a}");
        assert!(a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_generated_name_that_is_taken_is_retried() {
        let taken = SharedMemory::create_untracked(None, 8).unwrap();
        let mut names = vec![generated_name(), taken.name().to_string()];
        let fresh = names[0].clone();
        let (name, _fd) = create_generated(|| names.pop().unwrap()).unwrap();
        assert_eq!(name, fresh);
        unlink(&name).unwrap();
        // A generator that only ever collides gives up with a typed error.
        assert!(matches!(
            create_generated(|| taken.name().to_string()),
            Err(Error::AlreadyExists(_))
        ));
        taken.unlink().unwrap();
    }

    #[test]
    fn zero_and_huge_sizes_are_typed_errors() {
        assert!(matches!(
            SharedMemory::create_untracked(None, 0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            SharedMemory::create_untracked(None, usize::MAX),
            Err(Error::InvalidArgument(_))
        ));
        match SharedMemory::create_untracked(None, 1 << 50) {
            Err(Error::Io(e)) => assert!(matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::OutOfMemory
            )),
            other => panic!("1 PiB segment: {other:?}"),
        }
    }

    #[test]
    fn read_and_write_are_bounds_checked() {
        let shm = SharedMemory::create_untracked(None, 16).unwrap();
        shm.write(12, b"abcd").unwrap();
        let mut buf = [0u8; 4];
        shm.read(12, &mut buf).unwrap();
        assert_eq!(&buf, b"abcd");
        assert!(matches!(
            shm.write(13, b"abcd"),
            Err(Error::IndexOutOfRange { len: 16, .. })
        ));
        assert!(matches!(
            shm.read(usize::MAX, &mut buf),
            Err(Error::IndexOutOfRange { .. })
        ));
        assert!(shm.read(16, &mut []).is_ok());
        assert!(shm.read(17, &mut []).is_err());
        shm.unlink().unwrap();
    }

    #[test]
    fn created_segments_are_mode_0600() {
        let shm = SharedMemory::create_untracked(None, 8).unwrap();
        let st = posix_shm::stat(shm._fd.as_fd()).unwrap();
        assert_eq!(st.mode, 0o600);
        shm.unlink().unwrap();
    }

    #[test]
    fn attaching_a_missing_name_is_not_found() {
        assert!(matches!(
            SharedMemory::attach("psm_no_such_segment_here"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            unlink("psm_no_such_segment_here"),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn creating_an_existing_name_is_already_exists() {
        let shm = SharedMemory::create_untracked(None, 8).unwrap();
        assert!(matches!(
            SharedMemory::create_untracked(Some(shm.name()), 8),
            Err(Error::AlreadyExists(_))
        ));
        shm.unlink().unwrap();
    }

    #[test]
    fn attach_with_size_reports_a_mismatch() {
        let shm = SharedMemory::create_untracked(None, 100).unwrap();
        assert_eq!(
            SharedMemory::attach_with_size(shm.name(), 100)
                .unwrap()
                .size(),
            100
        );
        match SharedMemory::attach_with_size(shm.name(), 101) {
            Err(Error::SizeMismatch {
                expected: 101,
                found: 100,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        shm.unlink().unwrap();
    }
}
