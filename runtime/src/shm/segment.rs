//! One anonymous shared mapping, reference-counted within a process.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, LazyLock, Weak};

use crate::fork_sync::MutexGuard;
use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
use crate::fork_sync::Mutex;
use crate::handle::{self, HandleRepr, ShareHandle};
use crate::sys;

/// Live segments of this process by id, so a handle decoded twice maps once.
static LIVE: LazyLock<Mutex<HashMap<u64, Weak<Inner>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Held across `fork` so the child never inherits the table mid-update.
pub(crate) fn fork_guard() -> MutexGuard<'static, HashMap<u64, Weak<Inner>>> {
    LIVE.lock()
}

/// A shared memory segment: a memfd and its mapping.
///
/// Cloning is cheap (the mapping is shared within the process). The memory
/// lives as long as any process holds a descriptor or a mapping of it; it has
/// no name anywhere, so a killed process leaks nothing.
#[derive(Clone)]
pub struct Segment {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// This mapping's key in [`LIVE`].
    id: u64,
    /// The id in the memory file's name (see [`sys::memfd::segment_id_of`]):
    /// `id`, except for a file received as a bare descriptor.
    file_id: Option<u64>,
    fd: OwnedFd,
    map: MmapRaw,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut live = LIVE.lock();
        if live.get(&self.id).is_some_and(|w| w.strong_count() == 0) {
            live.remove(&self.id);
        }
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("id", &format_args!("{:016x}", self.inner.id))
            .field("len", &self.len())
            .finish()
    }
}

fn new_id() -> u64 {
    let mut bytes = [0u8; 8];
    // Ids need only be unique, not secret; fall back to time and pid on failure.
    if getrandom::fill(&mut bytes).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (t ^ ((sys::process::getpid() as u64) << 40)).to_ne_bytes();
    }
    u64::from_ne_bytes(bytes) | 1
}

impl Segment {
    /// Creates a zero-filled segment of `len` bytes (at least one).
    ///
    /// A segment larger than the memory this machine has free (available
    /// RAM and swap) is `Error::Io` of kind `OutOfMemory`, before anything
    /// is allocated: the kernel would hand out such a mapping and kill the
    /// process once it is filled.
    pub fn create(len: usize) -> Result<Segment> {
        if len == 0 {
            return Err(Error::InvalidArgument(
                "a segment needs at least one byte".into(),
            ));
        }
        sys::memfd::check_backable(len as u64)?;
        let id = new_id();
        let fd = sys::memfd::memfd_create(&format!("multiproc-{id:016x}"), len as u64)?;
        Self::map(id, Some(id), fd, len)
    }

    fn map(id: u64, file_id: Option<u64>, fd: OwnedFd, len: usize) -> Result<Segment> {
        let map = MmapOptions::new().len(len).map_raw(&fd)?;
        let inner = Arc::new(Inner {
            id,
            file_id,
            fd,
            map,
        });
        LIVE.lock().insert(id, Arc::downgrade(&inner));
        Ok(Segment { inner })
    }

    /// Maps a memory file received as a descriptor (passed with `SCM_RIGHTS`, for example).
    ///
    /// The mapping covers the file's whole length; it gets a new identity in
    /// this process, so it is never confused with a handle-decoded segment.
    /// Only a memory file made by a segment (its size sealed, so no process
    /// can shrink it under the mapping) is accepted: anything else is
    /// `Error::Protocol`. Its handle names the segment's file (a memory
    /// file not made by this crate has no name a receiver can check, and
    /// its handle is refused where it is decoded).
    pub fn from_fd(fd: OwnedFd) -> Result<Segment> {
        let len = Self::sealed_len(&fd)?;
        let file_id = sys::memfd::segment_id_of(fd.as_fd());
        Self::map(new_id(), file_id, fd, len)
    }

    /// The length of a received memory file, if its size is sealed.
    fn sealed_len(fd: &OwnedFd) -> Result<usize> {
        if !sys::memfd::size_is_sealed(fd.as_fd()) {
            return Err(Error::Protocol(
                "not a shared segment: its size is not sealed against shrinking".into(),
            ));
        }
        let len = sys::memfd::file_len(fd.as_fd())? as usize;
        if len == 0 {
            return Err(Error::Protocol("shared segment has zero length".into()));
        }
        Ok(len)
    }

    /// Maps the segment with this id and descriptor, or reuses this process's mapping.
    fn attach(repr: &HandleRepr) -> Result<Segment> {
        if let Some(inner) = LIVE.lock().get(&repr.id).and_then(Weak::upgrade) {
            return Ok(Segment { inner });
        }
        let fd = handle::decode_fd(repr).map_err(|e| {
            // Out of descriptors here: the sender is not to blame, and the
            // caller may try again once some are free.
            if sys::fd::is_exhaustion(&e) {
                return Error::Io(e);
            }
            Error::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "cannot open shared segment {:016x} from process {}: {e} (a handle in a \
                     message is opened through its sender, which must be alive and still \
                     hold it: keep a clone until the receiver has it)",
                    repr.id, repr.pid
                ),
            ))
        })?;
        // The descriptor number may have been closed and reused since the
        // handle was made (the sender dropped the segment and made another,
        // say): only the file named for this id is the segment.
        if sys::memfd::segment_id_of(fd.as_fd()) != Some(repr.id) {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "shared segment {:016x} is gone from process {}: the descriptor its \
                     handle names is now another file (a handle in a message is opened \
                     through its sender, which must still hold it: keep a clone until the \
                     receiver has it)",
                    repr.id, repr.pid
                ),
            )));
        }
        let len = Self::sealed_len(&fd)?;
        Self::map(repr.id, Some(repr.id), fd, len)
    }

    /// The segment's length in bytes.
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    /// Always false: a segment holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The start of the mapping. Valid for `len()` bytes while `self` lives.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.map.as_mut_ptr()
    }

    /// The segment's identity, the same in every process that maps it.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The descriptor behind the mapping.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    /// Encodes this segment with kind-specific data (see [`crate::handle`];
    /// inside [`handle::redirecting_segments`], the redirect may name
    /// another holder of the segment).
    #[doc(hidden)]
    pub fn to_repr_with(&self, offset: u64, extra: u64) -> Result<HandleRepr> {
        // A segment mapped from a bare descriptor is named by its file's id,
        // which receivers check (an unnamed file is refused there).
        let id = self.inner.file_id.unwrap_or(self.inner.id);
        handle::redirect_segment(handle::encode_fd(id, self.fd(), offset, extra)?)
    }

    /// Rebuilds the segment named by `repr` in this process.
    #[doc(hidden)]
    pub fn from_repr_any(repr: &HandleRepr) -> Result<Segment> {
        Self::attach(repr)
    }
}

impl ShareHandle for Segment {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.to_repr_with(0, 0)
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        Self::attach(repr)
    }
}

crate::impl_share_handle!(impl<> for Segment);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_write_read() {
        let seg = Segment::create(4096).unwrap();
        // SAFETY: the mapping is 4096 bytes long and only this test uses it.
        unsafe {
            seg.as_ptr().write(7);
            assert_eq!(seg.as_ptr().read(), 7);
        }
        assert_eq!(seg.len(), 4096);
    }

    /// Regression: a segment's memory file could be shrunk by anyone holding
    /// its descriptor (safe code: `Segment::fd` and `File::set_len`), after
    /// which every reference into the mapping faulted with SIGBUS; and any
    /// file, shrinkable later, was accepted as a segment.
    #[test]
    fn a_segment_cannot_shrink_and_only_sealed_files_map() {
        let seg = Segment::create(8192).unwrap();
        let file = std::fs::File::from(seg.fd().try_clone_to_owned().unwrap());
        assert!(file.set_len(0).is_err());
        assert!(file.set_len(1 << 20).is_err());
        assert_eq!(file.metadata().unwrap().len(), 8192);
        let again = Segment::from_fd(seg.fd().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(again.len(), 8192);

        let plain = std::fs::File::open("/proc/self/exe").unwrap();
        assert!(matches!(
            Segment::from_fd(plain.into()),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn zero_length_is_rejected() {
        assert!(matches!(Segment::create(0), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn decoding_in_the_same_process_reuses_the_mapping() {
        let seg = Segment::create(64).unwrap();
        let repr = seg.to_repr().unwrap();
        let again = Segment::from_repr(&repr).unwrap();
        assert_eq!(again.as_ptr(), seg.as_ptr());
    }

    #[test]
    fn reopen_through_proc_after_cache_miss() {
        let seg = Segment::create(64).unwrap();
        let repr = seg.to_repr().unwrap();
        let fd = handle::decode_fd(&repr).unwrap();
        assert_eq!(sys::memfd::file_len(fd.as_fd()).unwrap(), 64);
    }
}
