//! `NamedArray<T>`: a `RawArray`-like typed view over a named segment.

use std::marker::PhantomData;

use super::segment::SharedMemory;
use crate::error::{Error, Result};
use crate::shm::ShmSafe;

/// A fixed-length array of `T` in a named segment: [`RawArray`](crate::RawArray)
/// for processes that are not related, found by name.
///
/// The elements start at byte 0 of the segment, with no header, so another
/// program (numpy over Python's `SharedMemory.buf`, for example) sees the same
/// bytes. The length is the segment's size divided by `size_of::<T>()`. There
/// is no lock: `get`/`set` copy one element (a concurrent writer in another
/// process can tear a multi-word element), and the `unsafe` slice views are
/// for phases where the caller knows nobody writes.
///
/// ```
/// use multiproc::shared_memory::NamedArray;
///
/// let a = NamedArray::<u64>::create(None, 4).unwrap();
/// a.set(2, 42).unwrap();
/// let b = NamedArray::<u64>::attach(a.shm().name()).unwrap();
/// assert_eq!(b.len(), 4);
/// assert_eq!(b.get(2).unwrap(), 42);
/// a.shm().unlink().unwrap();
/// ```
#[derive(Debug)]
pub struct NamedArray<T: ShmSafe> {
    shm: SharedMemory,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: ShmSafe> NamedArray<T> {
    fn elem_size() -> Result<usize> {
        match std::mem::size_of::<T>() {
            0 => Err(Error::InvalidArgument(
                "a NamedArray cannot hold zero-sized elements".into(),
            )),
            // The mapping is page-aligned; no ShmSafe type needs more.
            _ if std::mem::align_of::<T>() > 4096 => Err(Error::InvalidArgument(
                "a NamedArray element needs more than page alignment".into(),
            )),
            size => Ok(size),
        }
    }

    fn bytes_for(len: usize) -> Result<usize> {
        len.checked_mul(Self::elem_size()?).ok_or_else(|| {
            Error::InvalidArgument(format!("an array of {len} elements is too large"))
        })
    }

    /// Creates a tracked segment (see [`SharedMemory::create`]) holding `len`
    /// zeroed elements; `T`'s all-zero value must be valid, as it is for
    /// every [`ShmSafe`] type.
    pub fn create(name: Option<&str>, len: usize) -> Result<Self> {
        Self::from_shared_memory(SharedMemory::create(name, Self::bytes_for(len)?)?, len)
    }

    /// As [`create`](NamedArray::create), with an untracked segment.
    pub fn create_untracked(name: Option<&str>, len: usize) -> Result<Self> {
        Self::from_shared_memory(
            SharedMemory::create_untracked(name, Self::bytes_for(len)?)?,
            len,
        )
    }

    /// Attaches segment `name` as an array of as many `T` as it holds.
    ///
    /// [`Error::SizeMismatch`] if its size is not a multiple of `size_of::<T>()`.
    pub fn attach(name: &str) -> Result<Self> {
        let shm = SharedMemory::attach(name)?;
        let size = Self::elem_size()?;
        if shm.size() % size != 0 {
            return Err(Error::SizeMismatch {
                what: format!(
                    "shared memory segment {name:?} as an array of {}-byte elements",
                    size
                ),
                expected: shm.size() / size * size,
                found: shm.size(),
            });
        }
        let len = shm.size() / size;
        Ok(NamedArray {
            shm,
            len,
            _t: PhantomData,
        })
    }

    /// Attaches segment `name` as an array of exactly `len` elements.
    ///
    /// [`Error::SizeMismatch`] if the segment is smaller than that.
    pub fn attach_len(name: &str, len: usize) -> Result<Self> {
        Self::from_shared_memory(SharedMemory::attach(name)?, len)
    }

    /// Views the first `len` elements of an attached or created segment.
    ///
    /// [`Error::SizeMismatch`] if the segment is smaller than that.
    pub fn from_shared_memory(shm: SharedMemory, len: usize) -> Result<Self> {
        let needed = Self::bytes_for(len)?;
        if shm.size() < needed {
            return Err(Error::SizeMismatch {
                what: format!("shared memory segment {:?}", shm.name()),
                expected: needed,
                found: shm.size(),
            });
        }
        Ok(NamedArray {
            shm,
            len,
            _t: PhantomData,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segment under the array (for its name, or to unlink it).
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    fn ptr(&self) -> *mut T {
        self.shm.as_ptr().cast()
    }

    fn check(&self, index: usize) -> Result<()> {
        if index >= self.len {
            return Err(Error::IndexOutOfRange {
                index,
                len: self.len,
            });
        }
        Ok(())
    }

    /// A copy of element `index`.
    pub fn get(&self, index: usize) -> Result<T> {
        self.check(index)?;
        // SAFETY: index < len and len elements fit in the mapping (checked at
        // construction), which is page-aligned and so aligned for T; T is
        // ShmSafe, so whatever another process wrote is a valid T.
        Ok(unsafe { self.ptr().add(index).read_volatile() })
    }

    /// Overwrites element `index`.
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.check(index)?;
        // SAFETY: as in `get`; the mapping is writable.
        unsafe { self.ptr().add(index).write_volatile(value) };
        Ok(())
    }

    /// A copy of all elements.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len)
            // SAFETY: i < len; as in `get`.
            .map(|i| unsafe { self.ptr().add(i).read_volatile() })
            .collect()
    }

    /// The elements as a slice, with no copy.
    ///
    /// # Safety
    ///
    /// No process may write the array while the slice is alive.
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: len aligned elements lie in the mapping, which lives as long
        // as self; the caller promises no concurrent writes.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }

    /// The elements as a mutable slice, with no copy.
    ///
    /// # Safety
    ///
    /// No other process, thread or view may read or write the array while
    /// the slice is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [T] {
        // SAFETY: as in `as_slice`, and the caller promises exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        let a = NamedArray::<u32>::create_untracked(None, 3).unwrap();
        let name = a.shm().name().to_string();
        assert!(matches!(
            NamedArray::<u64>::attach(&name),
            Err(Error::SizeMismatch { found: 12, .. })
        ));
        assert!(matches!(
            NamedArray::<u32>::attach_len(&name, 4),
            Err(Error::SizeMismatch {
                expected: 16,
                found: 12,
                ..
            })
        ));
        assert_eq!(NamedArray::<u16>::attach(&name).unwrap().len(), 6);
        assert!(matches!(
            a.get(3),
            Err(Error::IndexOutOfRange { index: 3, len: 3 })
        ));
        assert!(matches!(
            NamedArray::<u8>::create_untracked(None, 0),
            Err(Error::InvalidArgument(_))
        ));
        a.shm().unlink().unwrap();
    }
}
