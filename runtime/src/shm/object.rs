//! A typed object in its own segment, behind a checked header.
//!
//! Every shared object (a Value, a Lock, a Queue …) is a segment that starts
//! with an [`ObjectHeader`] naming its kind and a fingerprint of its type, then
//! the object's `#[repr(C)]` state, then an optional tail of bytes (an array's
//! elements, a queue's ring). A handle decoded in another process checks the
//! header before use, so a handle of the wrong kind or type is an error.

use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::error::{Error, Result};
use crate::handle::HandleRepr;
use crate::shm::Segment;

const MAGIC: u32 = u32::from_le_bytes(*b"MPRC");
const VERSION: u32 = 1;
/// Where the object's state starts: one cache line after the segment start.
const BODY_OFFSET: usize = 64;
/// `HandleRepr::extra` of a handle to an object embedded in another one's
/// state (which may start at `BODY_OFFSET`, like a Value's lock): this tag in
/// the low half, the embedded object's [`Kind`] in the high half, so a handle
/// to a Value's lock never opens as another kind of object.
const EMBEDDED: u64 = 1;

/// The kinds of shared objects, recorded in each segment header.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Kind {
    Value = 1,
    Array = 2,
    Lock = 3,
    RLock = 4,
    Semaphore = 5,
    Condition = 6,
    Event = 7,
    Barrier = 8,
    Queue = 9,
    Channel = 10,
    /// A `RawValue`: never opened as a `Value`, whose guard's `&mut T`
    /// must not meet the lock-free accesses of a `RawValue`.
    RawValue = 11,
    /// A `RawArray`, kept apart from `Array` for the same reason.
    RawArray = 12,
    Other = 99,
}

impl Kind {
    /// The kind with this number, if there is one.
    pub fn from_u32(n: u32) -> Option<Kind> {
        Some(match n {
            1 => Kind::Value,
            2 => Kind::Array,
            3 => Kind::Lock,
            4 => Kind::RLock,
            5 => Kind::Semaphore,
            6 => Kind::Condition,
            7 => Kind::Event,
            8 => Kind::Barrier,
            9 => Kind::Queue,
            10 => Kind::Channel,
            11 => Kind::RawValue,
            12 => Kind::RawArray,
            99 => Kind::Other,
            _ => return None,
        })
    }
}

/// The first bytes of every object segment.
#[repr(C)]
#[derive(Debug)]
pub struct ObjectHeader {
    magic: u32,
    version: u32,
    kind: u32,
    _pad: u32,
    fingerprint: u64,
    tail_len: u64,
    /// The process that owns the object, as a lock word (start ticks above
    /// pid): a manager server for the objects it creates, 0 for none.
    owner: u64,
}

/// A fingerprint of a type, the same in every process running the same binary.
pub fn fingerprint<T: ?Sized>() -> u64 {
    fingerprint_str(std::any::type_name::<T>())
}

/// FNV-1a of a type name: stable across processes and builds of one binary.
pub fn fingerprint_str(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A shared object whose state is a `T` (made of atomics and plain data).
pub struct ShmObject<T> {
    seg: Segment,
    /// Where the `T` sits in the segment: `BODY_OFFSET`, or inside another
    /// object's state for embedded locks.
    offset: usize,
    /// The kind of the `T`, if it is embedded in another object's state.
    embedded: Option<Kind>,
    _state: PhantomData<T>,
}

impl<T> Clone for ShmObject<T> {
    fn clone(&self) -> Self {
        ShmObject {
            seg: self.seg.clone(),
            offset: self.offset,
            embedded: self.embedded,
            _state: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for ShmObject<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmObject")
            .field("segment", &self.seg)
            .finish()
    }
}

// SAFETY: the state `T` is only reached through `&T`, and every `T` used
// here is made of atomics or is guarded by a lock inside the segment.
unsafe impl<T: Sync> Send for ShmObject<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for ShmObject<T> {}

fn tail_offset<T>() -> usize {
    tail_offset_for(std::mem::size_of::<T>())
}

fn tail_offset_for(state_size: usize) -> usize {
    (BODY_OFFSET + state_size).next_multiple_of(64)
}

/// Creates an object segment whose state is `state_size` bytes at
/// `BODY_OFFSET` (aligned to 64), followed by `tail_len` bytes; `init` gets
/// the state and tail pointers of the zero-filled memory before the header
/// is written.
fn create_segment(
    kind: Kind,
    fingerprint: u64,
    owner: u64,
    state_size: usize,
    tail_len: usize,
    init: impl FnOnce(*mut u8, *mut u8),
) -> Result<Segment> {
    let total = BODY_OFFSET
        .checked_add(state_size)
        .map(|end| end.next_multiple_of(64))
        .and_then(|tail| tail.checked_add(tail_len))
        .ok_or_else(|| Error::InvalidArgument("object too large".into()))?;
    let seg = Segment::create(total)?;
    let base = seg.as_ptr();
    // SAFETY: the mapping is `total` bytes, fresh and private to us until
    // returned; the header fits at offset 0, the state at BODY_OFFSET
    // (page-aligned mapping, so 64-aligned), the tail after it.
    unsafe {
        init(base.add(BODY_OFFSET), base.add(tail_offset_for(state_size)));
        base.cast::<ObjectHeader>().write(ObjectHeader {
            magic: MAGIC,
            version: VERSION,
            kind: kind as u32,
            _pad: 0,
            fingerprint,
            tail_len: tail_len as u64,
            owner,
        });
    }
    Ok(seg)
}

/// The layout of a new object segment, as plain data.
///
/// A manager server creates objects (a `Value<T>`, an `Array<T>`, a `Lock`)
/// whose Rust types it does not know: the client describes the segment with
/// a spec (made by `Value::<T>::spec()` and friends), the server creates it
/// and hands back a handle, and the client opens that handle as usual.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = rkyv)]
pub struct ShmSpec {
    /// The object's `Kind`, as its number.
    pub kind: u32,
    /// The fingerprint the header records.
    pub fingerprint: u64,
    /// The size of the state in bytes.
    pub state_size: u64,
    /// The size of the tail in bytes.
    pub tail_len: u64,
    /// The first bytes of the state; the rest stays zero.
    pub state_init: Vec<u8>,
}

/// The largest object a spec may ask for (a manager will not map more for one request).
const MAX_SPEC_BYTES: u64 = 1 << 40;

impl ShmSpec {
    /// The spec of an object whose state is a `T` that starts all zero, then
    /// is changed by `init` (through its atomics); `tail_len` zero bytes follow.
    ///
    /// # Safety
    ///
    /// An all-zero `T` must be a valid `T` (atomics and integers only).
    pub(crate) unsafe fn zeroed<T>(
        kind: Kind,
        fingerprint: u64,
        tail_len: usize,
        init: impl FnOnce(&T),
    ) -> ShmSpec {
        let mut state = Box::<T>::new_zeroed();
        // SAFETY: the caller promises that all-zero is a valid `T`.
        let state = unsafe { state.assume_init_mut() } as &T;
        init(state);
        let len = std::mem::size_of::<T>();
        // SAFETY: every byte of the box was zeroed and is changed only
        // through `T`'s atomics, so all `len` bytes are initialised; `init`
        // has returned, so nothing changes them while we copy.
        let bytes = unsafe { std::slice::from_raw_parts((state as *const T).cast::<u8>(), len) };
        ShmSpec {
            kind: kind as u32,
            fingerprint,
            state_size: len as u64,
            tail_len: tail_len as u64,
            state_init: bytes.to_vec(),
        }
    }

    /// The bytes of the segment this spec describes (header and padding
    /// included); an error for sizes out of range.
    pub fn total_len(&self) -> Result<u64> {
        if self.state_size > MAX_SPEC_BYTES
            || self.tail_len > MAX_SPEC_BYTES
            || self.state_init.len() as u64 > self.state_size
        {
            return Err(Error::InvalidArgument(
                "object spec sizes out of range".into(),
            ));
        }
        // Both at most 2^40: no overflow.
        Ok(tail_offset_for(self.state_size as usize) as u64 + self.tail_len)
    }

    /// Creates the segment this spec describes and returns a handle to its state.
    ///
    /// Every field is checked, so a spec that came from another process cannot
    /// make the caller misbehave: a bad one is an error.
    pub fn create(&self) -> Result<(Segment, HandleRepr)> {
        let kind = Kind::from_u32(self.kind)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown object kind {}", self.kind)))?;
        self.total_len()?;
        let seg = create_segment(
            kind,
            self.fingerprint,
            crate::liveness::my_word(),
            self.state_size as usize,
            self.tail_len as usize,
            |state, _tail| {
                // SAFETY: the state region is `state_size` bytes and
                // `state_init` is no longer (checked above).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.state_init.as_ptr(),
                        state,
                        self.state_init.len(),
                    )
                }
            },
        )?;
        let repr = seg.to_repr_with(BODY_OFFSET as u64, 0)?;
        Ok((seg, repr))
    }

    /// Like [`ShmSpec::create`], but keeps only a descriptor of the new
    /// segment, unmapped (what a manager server holds for its clients: no
    /// address space of its own); the handle names that descriptor.
    pub(crate) fn create_held(&self) -> Result<(OwnedFd, HandleRepr)> {
        let (seg, _) = self.create()?;
        let fd = seg.fd().try_clone_to_owned()?;
        let repr = crate::handle::encode_fd(seg.id(), fd.as_fd(), BODY_OFFSET as u64, 0)?;
        Ok((fd, repr))
    }
}

/// Whether the memory file behind `fd` is an object segment that this
/// process created as its owner (a manager server's own segments), read
/// without mapping it.
pub(crate) fn created_here(fd: BorrowedFd<'_>) -> Result<bool> {
    let mut header = [0u8; std::mem::size_of::<ObjectHeader>()];
    if let Err(e) = crate::sys::memfd::read_exact_at(fd, &mut header, 0) {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Ok(false),
            _ => Err(e.into()),
        };
    }
    let word = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&header[at..at + 4]);
        u32::from_ne_bytes(b)
    };
    let at = std::mem::offset_of!(ObjectHeader, owner);
    let mut owner = [0u8; 8];
    owner.copy_from_slice(&header[at..at + 8]);
    Ok(word(std::mem::offset_of!(ObjectHeader, magic)) == MAGIC
        && word(std::mem::offset_of!(ObjectHeader, version)) == VERSION
        && u64::from_ne_bytes(owner) == crate::liveness::my_word())
}

impl<T> ShmObject<T> {
    /// Creates the segment; `init` writes the initial state into the
    /// zero-filled memory before any other process can see it.
    pub fn create(
        kind: Kind,
        fingerprint: u64,
        tail_len: usize,
        init: impl FnOnce(*mut T, *mut u8),
    ) -> Result<Self> {
        const { assert!(std::mem::align_of::<T>() <= BODY_OFFSET) };
        let seg = create_segment(
            kind,
            fingerprint,
            0,
            std::mem::size_of::<T>(),
            tail_len,
            |state, tail| init(state.cast::<T>(), tail),
        )?;
        Ok(ShmObject {
            seg,
            offset: BODY_OFFSET,
            embedded: None,
            _state: PhantomData,
        })
    }

    /// A view of a `T` of `kind` that lives inside another object's state.
    pub fn from_embedded<U>(outer: ShmObject<U>, kind: Kind, field: fn(&U) -> &T) -> ShmObject<T> {
        let base = outer.seg.as_ptr() as usize;
        let offset = field(outer.state()) as *const T as usize - base;
        ShmObject {
            seg: outer.seg,
            offset,
            embedded: Some(kind),
            _state: PhantomData,
        }
    }

    /// Whether `repr` names an object embedded in another one's state.
    pub fn is_embedded_repr(repr: &HandleRepr) -> bool {
        repr.extra & 0xFFFF_FFFF == EMBEDDED
    }

    /// Opens a decoded handle to a `T` that is either a whole object of `kind`
    /// or embedded in another object (see [`ShmObject::from_embedded`]) as
    /// a `kind`.
    ///
    /// `T` must be valid for any bit pattern (atomics only), since an embedded
    /// handle is checked for bounds, alignment and its recorded kind, but the
    /// bytes around it belong to the outer object.
    pub fn open_embedded(repr: &HandleRepr, kind: Kind) -> Result<Self> {
        if !Self::is_embedded_repr(repr) {
            return Self::open(repr, kind, 0, std::any::type_name::<T>());
        }
        if repr.extra >> 32 != kind as u64 {
            return Err(Error::TypeMismatch {
                expected: format!("{kind:?}"),
                found: format!("an embedded object of kind {}", repr.extra >> 32),
            });
        }
        let seg = Segment::from_repr_any(repr)?;
        Self::check_header(&seg)?;
        let offset = usize::try_from(repr.offset)
            .map_err(|_| Error::Protocol("embedded object offset out of range".into()))?;
        let fits = offset
            .checked_add(std::mem::size_of::<T>())
            .is_some_and(|end| end <= seg.len());
        if offset < BODY_OFFSET || !fits || offset % std::mem::align_of::<T>() != 0 {
            return Err(Error::Protocol("embedded object out of bounds".into()));
        }
        Ok(ShmObject {
            seg,
            offset,
            embedded: Some(kind),
            _state: PhantomData,
        })
    }

    fn check_header(seg: &Segment) -> Result<&ObjectHeader> {
        if seg.len() < BODY_OFFSET {
            return Err(Error::Protocol("shared object segment too small".into()));
        }
        // SAFETY: the segment is at least BODY_OFFSET > size_of::<ObjectHeader>() long,
        // and mappings are page-aligned.
        let header = unsafe { &*seg.as_ptr().cast::<ObjectHeader>() };
        if header.magic != MAGIC || header.version != VERSION {
            return Err(Error::Protocol("not a multiproc object segment".into()));
        }
        Ok(header)
    }

    /// Opens a decoded handle, checking kind, fingerprint and size.
    pub fn open(repr: &HandleRepr, kind: Kind, fingerprint: u64, type_name: &str) -> Result<Self> {
        let seg = Segment::from_repr_any(repr)?;
        if repr.offset as usize != BODY_OFFSET {
            return Err(Error::Protocol("shared object handle is malformed".into()));
        }
        Self::open_segment(seg, kind, fingerprint, type_name)
    }

    /// Opens an object segment this process mapped by other means (a
    /// descriptor received over a socket), checking kind, fingerprint and size.
    pub fn open_segment(
        seg: Segment,
        kind: Kind,
        fingerprint: u64,
        type_name: &str,
    ) -> Result<Self> {
        if seg.len() < tail_offset::<T>() {
            return Err(Error::Protocol("shared object segment is too small".into()));
        }
        let header = Self::check_header(&seg)?;
        if header.kind != kind as u32 {
            return Err(Error::TypeMismatch {
                expected: format!("{kind:?}"),
                found: format!("object kind {}", header.kind),
            });
        }
        if header.fingerprint != fingerprint {
            return Err(Error::TypeMismatch {
                expected: type_name.to_string(),
                found: format!("another type (fingerprint {:016x})", header.fingerprint),
            });
        }
        if (seg.len() as u64) < tail_offset::<T>() as u64 + header.tail_len {
            return Err(Error::Protocol("shared object tail is truncated".into()));
        }
        Ok(ShmObject {
            seg,
            offset: BODY_OFFSET,
            embedded: None,
            _state: PhantomData,
        })
    }

    /// Encodes a handle to this object.
    pub fn to_repr(&self) -> Result<HandleRepr> {
        let extra = self
            .embedded
            .map_or(0, |kind| EMBEDDED | (kind as u64) << 32);
        self.seg.to_repr_with(self.offset as u64, extra)
    }

    /// The object's state.
    #[inline]
    pub fn state(&self) -> &T {
        // SAFETY: `create`, `open` or `open_embedded` checked that the segment
        // holds an aligned `T` at `offset`, and the mapping lives as long as `self`.
        unsafe { &*self.seg.as_ptr().add(self.offset).cast::<T>() }
    }

    /// The start of the tail bytes.
    pub fn tail_ptr(&self) -> *mut u8 {
        // SAFETY: tail_offset::<T>() is within the segment (checked in create/open).
        unsafe { self.seg.as_ptr().add(tail_offset::<T>()) }
    }

    /// The tail's length in bytes.
    pub fn tail_len(&self) -> usize {
        // SAFETY: the header was written in create and checked in open.
        let header = unsafe { &*self.seg.as_ptr().cast::<ObjectHeader>() };
        header.tail_len as usize
    }

    /// Whether a manager server created the object (a cheap read).
    pub fn has_owner(&self) -> bool {
        // SAFETY: as in `owner_gone`.
        let header = unsafe { &*self.seg.as_ptr().cast::<ObjectHeader>() };
        header.owner != 0
    }

    /// Whether the object has an owner (the manager server that created it)
    /// and that process is known to have ended; a check that cannot tell
    /// (this process is out of descriptors) is not a death. Reads `/proc`:
    /// for waiters between sleeps.
    pub fn owner_gone(&self) -> bool {
        // SAFETY: the header was written in create and checked in open.
        let header = unsafe { &*self.seg.as_ptr().cast::<ObjectHeader>() };
        header.owner != 0 && crate::liveness::holder_liveness(header.owner).is_dead()
    }

    /// `Err(ManagerGone)` if [`ShmObject::owner_gone`]: what a waiter on a
    /// manager-created object returns once the manager has died.
    pub fn check_owner(&self) -> Result<()> {
        if self.owner_gone() {
            // SAFETY: as in `owner_gone`.
            let header = unsafe { &*self.seg.as_ptr().cast::<ObjectHeader>() };
            let pid = header.owner & 0x7FFF_FFFF;
            return Err(Error::ManagerGone(format!(
                "manager server {pid} that owns this object died"
            )));
        }
        Ok(())
    }

    /// The segment behind the object.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_spec_carries_its_initial_state_and_records_its_creator_as_owner() {
        // SAFETY: an all-zero AtomicU64 is valid.
        let spec = unsafe {
            ShmSpec::zeroed(Kind::Other, 7, 16, |s: &AtomicU64| {
                s.store(5, Ordering::Relaxed)
            })
        };
        assert_eq!(spec.state_init, 5u64.to_ne_bytes());
        let (_seg, repr) = spec.create().unwrap();
        let obj: ShmObject<AtomicU64> = ShmObject::open(&repr, Kind::Other, 7, "u64").unwrap();
        assert_eq!(obj.state().load(Ordering::Relaxed), 5);
        assert_eq!(obj.tail_len(), 16);
        assert!(obj.has_owner());
        assert!(!obj.owner_gone());
        assert!(obj.check_owner().is_ok());

        let (held, held_repr) = spec.create_held().unwrap();
        assert!(created_here(held.as_fd()).unwrap());
        let reopened: ShmObject<AtomicU64> =
            ShmObject::open(&held_repr, Kind::Other, 7, "u64").unwrap();
        assert_eq!(reopened.state().load(Ordering::Relaxed), 5);
        assert_eq!(spec.total_len().unwrap(), 128 + 16);

        let plain = ShmObject::create(Kind::Other, 7, 0, |s: *mut AtomicU64, _| {
            // SAFETY: `create` hands us aligned, writable memory for one AtomicU64.
            unsafe { s.write(AtomicU64::new(0)) }
        })
        .unwrap();
        assert!(!plain.has_owner());
        assert!(!plain.owner_gone());
        assert!(!created_here(plain.segment().fd()).unwrap());
    }
}
