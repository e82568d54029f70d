//! `Array<T>` and `RawArray<T>`: a fixed-length slice in shared memory.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{HandleRepr, ShareHandle};
use crate::sharedctypes::atomic;
use crate::sharedctypes::{SynchronizedArray, ValueLock};
use crate::shm::{Kind, ShmObject, ShmSafe, ShmSpec, fingerprint};
use crate::sync::held::{self, Holder};
use crate::sync::{Acquired, DataLock, RawLock};

#[repr(C)]
pub(crate) struct ArrayState {
    lock: RawLock,
    len: u64,
}

/// `kind` is `Array` or `RawArray`.
fn create<T: ShmSafe>(
    kind: Kind,
    len: usize,
    fill: impl Fn(usize) -> T,
) -> Result<ShmObject<ArrayState>> {
    let bytes = len
        .checked_mul(std::mem::size_of::<T>())
        .ok_or_else(|| Error::InvalidArgument(format!("array of {len} elements is too large")))?;
    const { assert!(std::mem::align_of::<T>() <= 64) };
    ShmObject::create(
        kind,
        fingerprint::<T>(),
        bytes.max(1),
        |state: *mut ArrayState, tail| {
            // SAFETY: `create` hands us aligned, writable memory for the state
            // and `bytes` writable bytes at `tail`, aligned to 64.
            unsafe {
                state.write(ArrayState {
                    lock: RawLock::new(),
                    len: len as u64,
                });
                let elems = tail.cast::<T>();
                for i in 0..len {
                    elems.add(i).write(fill(i));
                }
            }
        },
    )
}

fn open<T: ShmSafe>(kind: Kind, repr: &HandleRepr) -> Result<ShmObject<ArrayState>> {
    let obj: ShmObject<ArrayState> =
        ShmObject::open(repr, kind, fingerprint::<T>(), std::any::type_name::<T>())?;
    let len = obj.state().len;
    let needed = len.checked_mul(std::mem::size_of::<T>() as u64);
    if needed.is_none_or(|n| n > obj.tail_len() as u64) {
        return Err(Error::Protocol("array length exceeds its segment".into()));
    }
    Ok(obj)
}

/// Shared-memory contents common to both array kinds.
struct Elems<T> {
    obj: ShmObject<ArrayState>,
    _t: PhantomData<T>,
}

impl<T> Clone for Elems<T> {
    fn clone(&self) -> Self {
        Elems {
            obj: self.obj.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: ShmSafe> Elems<T> {
    fn create(kind: Kind, len: usize, fill: impl Fn(usize) -> T) -> Result<Self> {
        create(kind, len, fill).map(|obj| Elems {
            obj,
            _t: PhantomData,
        })
    }

    fn open(kind: Kind, repr: &HandleRepr) -> Result<Self> {
        open::<T>(kind, repr).map(|obj| Elems {
            obj,
            _t: PhantomData,
        })
    }

    fn len(&self) -> usize {
        self.obj.state().len as usize
    }

    fn ptr(&self) -> *mut T {
        self.obj.tail_ptr().cast()
    }

    fn check(&self, index: usize) -> Result<()> {
        if index < self.len() {
            Ok(())
        } else {
            Err(Error::IndexOutOfRange {
                index,
                len: self.len(),
            })
        }
    }
}

/// Lock-free element access, for a `RawArray` only: every access to its
/// elements is atomic (see `sharedctypes::atomic`), except through its
/// `unsafe` slice views.
impl<T: ShmSafe> Elems<T> {
    fn read(&self, index: usize) -> Result<T> {
        self.check(index)?;
        // SAFETY: index is in bounds of the initialised, aligned elements,
        // which a RawArray only accesses atomically.
        Ok(unsafe { atomic::load(self.ptr().add(index)) })
    }

    fn write(&self, index: usize, v: T) -> Result<()> {
        self.check(index)?;
        // SAFETY: as in `read`.
        unsafe { atomic::store(self.ptr().add(index), v) };
        Ok(())
    }

    fn copy_out(&self) -> Vec<T> {
        (0..self.len())
            // SAFETY: as in `read`, with i < len.
            .map(|i| unsafe { atomic::load(self.ptr().add(i)) })
            .collect()
    }
}

/// A fixed-length array in shared memory, without a lock (Python's `RawArray`).
///
/// `get`/`set` copy single elements, atomically per unit of the element's
/// alignment (a read racing with a write may see a mix of both, never an
/// invalid value); for bulk zero-copy access use the `unsafe` slice views
/// and coordinate writers yourself (or use [`Array`]).
pub struct RawArray<T: ShmSafe> {
    elems: Elems<T>,
}

impl<T: ShmSafe> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            elems: self.elems.clone(),
        }
    }
}

/// Shows a copy of the elements (atomic loads, as [`RawArray::to_vec`]).
impl<T: ShmSafe + std::fmt::Debug> std::fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RawArray").field(&self.to_vec()).finish()
    }
}

impl<T: ShmSafe> RawArray<T> {
    /// A shared array holding a copy of `values`.
    pub fn new(values: &[T]) -> Result<Self> {
        Elems::create(Kind::RawArray, values.len(), |i| values[i]).map(|elems| RawArray { elems })
    }

    /// A shared array of `len` copies of `value`.
    ///
    /// A length whose size overflows, or exceeds the memory this machine
    /// could give it, is an error before anything is allocated.
    pub fn from_elem(value: T, len: usize) -> Result<Self> {
        Elems::create(Kind::RawArray, len, |_| value).map(|elems| RawArray { elems })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.elems.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of element `index`.
    pub fn get(&self, index: usize) -> Result<T> {
        self.elems.read(index)
    }

    /// Overwrites element `index`.
    pub fn set(&self, index: usize, v: T) -> Result<()> {
        self.elems.write(index, v)
    }

    /// A copy of all elements.
    pub fn to_vec(&self) -> Vec<T> {
        self.elems.copy_out()
    }

    /// The elements as a slice, with no copy.
    ///
    /// # Safety
    ///
    /// No process or thread may write the array while the slice is alive.
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: the tail holds `len` initialised elements; the caller
        // promises no concurrent writes.
        unsafe { std::slice::from_raw_parts(self.elems.ptr(), self.len()) }
    }

    /// The elements as a mutable slice, with no copy.
    ///
    /// # Safety
    ///
    /// No other process or thread may read or write the array while the slice is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [T] {
        // SAFETY: as above, and the caller promises exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.elems.ptr(), self.len()) }
    }
}

/// A fixed-length array in shared memory with a process-shared lock (Python's `Array`).
///
/// ```
/// let a = multiproc::Array::new(&[1i32, 2, 3]).unwrap();
/// for x in a.lock().unwrap().iter_mut() {
///     *x = -*x;
/// }
/// assert_eq!(a.to_vec(), vec![-1, -2, -3]);
/// ```
pub struct Array<T: ShmSafe> {
    elems: Elems<T>,
}

impl<T: ShmSafe> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            elems: self.elems.clone(),
        }
    }
}

impl<T: ShmSafe + std::fmt::Debug> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Array").field(&self.to_vec()).finish()
    }
}

impl<T: ShmSafe> Array<T> {
    /// A shared array holding a copy of `values`.
    pub fn new(values: &[T]) -> Result<Self> {
        Elems::create(Kind::Array, values.len(), |i| values[i]).map(|elems| Array { elems })
    }

    /// A shared array of `len` copies of `value` (see [`RawArray::from_elem`]).
    pub fn from_elem(value: T, len: usize) -> Result<Self> {
        Elems::create(Kind::Array, len, |_| value).map(|elems| Array { elems })
    }

    /// A shared array holding a copy of `values`, guarded by a caller's
    /// [`Lock`](crate::Lock) or [`RLock`](crate::RLock) (Python's
    /// `Array(typecode, values, lock=lock)`), which may guard other values
    /// too. Every access copies; see [`SynchronizedArray`].
    pub fn with_lock<L: ValueLock>(values: &[T], lock: L) -> Result<SynchronizedArray<T, L>> {
        SynchronizedArray::new(values, lock)
    }

    /// A shared array with no lock at all (Python's `Array(…, lock=False)`,
    /// which is a `RawArray`).
    pub fn without_lock(values: &[T]) -> Result<RawArray<T>> {
        RawArray::new(values)
    }

    /// The number of elements (fixed at creation).
    pub fn len(&self) -> usize {
        self.elems.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn raw_lock(&self) -> &RawLock {
        &self.elems.obj.state().lock
    }

    fn guard(&self, deadline: Deadline) -> Result<ArrayGuard<'_, T>> {
        self.take(deadline, true)
    }

    /// Takes the lock by `deadline`; if it is held, and `refuse_own` and
    /// this thread holds it, `Err(InvalidState)` instead of a wait for itself.
    fn take(&self, deadline: Deadline, refuse_own: bool) -> Result<ArrayGuard<'_, T>> {
        let acquired = held::take_for_data(self.raw_lock(), deadline, refuse_own, || {
            match deadline {
                // A try does not wait, so it is not failed for a dead manager.
                Deadline::Now => Ok(()),
                _ => self.elems.obj.check_owner(),
            }
        })?;
        Ok(self.guard_of(acquired))
    }

    /// The guard of the lock this thread just took.
    fn guard_of(&self, acquired: Acquired) -> ArrayGuard<'_, T> {
        ArrayGuard {
            array: self,
            acquired,
            owned: true,
            _not_send: PhantomData,
        }
    }

    /// The guard for a call that returns no `Result` (a dead holder's
    /// lock is taken over with a warning: [`Array::lock`] tells).
    fn guard_forever(&self) -> ArrayGuard<'_, T> {
        if held::try_for_data(self.raw_lock()) {
            return self.guard_of(Acquired::Clean);
        }
        match held::held_here(self.raw_lock()) {
            // Under this thread's own `get_lock()` guard: the data is ours already.
            Some(Holder::Lock) => {
                return ArrayGuard {
                    array: self,
                    acquired: Acquired::Clean,
                    owned: false,
                    _not_send: PhantomData,
                };
            }
            Some(Holder::Data) => tracing::error!(
                "Array::get/set while this thread holds the array's guard waits for ever: \
                 use the guard"
            ),
            None => {}
        }
        loop {
            // A wait with no deadline only returns once it holds the lock.
            if let Ok(guard) = self.take(Deadline::Never, false) {
                if let Some(pid) = guard.owner_died() {
                    tracing::warn!(
                        pid,
                        "a shared Array's lock was taken over from a process that died \
                         holding it; the elements are as it left them"
                    );
                }
                return guard;
            }
        }
    }

    /// Locks the array; the guard derefs to `[T]` (zero-copy, mutable).
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>> {
        self.guard(Deadline::Never)
    }

    /// Locks the array if the lock is free; `Err(WouldBlock)` otherwise.
    pub fn try_lock(&self) -> Result<ArrayGuard<'_, T>> {
        self.guard(Deadline::Now).map_err(|_| Error::WouldBlock)
    }

    /// Waits at most `timeout` for the lock.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ArrayGuard<'_, T>> {
        self.guard(Deadline::after(timeout))
    }

    /// A copy of element `index`, read under the lock.
    pub fn get(&self, index: usize) -> Result<T> {
        self.elems.check(index)?;
        let guard = self.guard_forever();
        Ok(guard[index])
    }

    /// Overwrites element `index` under the lock.
    pub fn set(&self, index: usize, v: T) -> Result<()> {
        self.elems.check(index)?;
        let mut guard = self.guard_forever();
        guard[index] = v;
        Ok(())
    }

    /// A copy of all elements, taken under the lock.
    pub fn to_vec(&self) -> Vec<T> {
        self.guard_forever().to_vec()
    }

    /// The layout of a new `Array<T>` of `len` zero elements, for a manager
    /// server to create (see [`Value::spec`](crate::Value::spec)).
    #[doc(hidden)]
    pub fn spec(len: usize) -> Result<ShmSpec> {
        let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            Error::InvalidArgument(format!("array of {len} elements is too large"))
        })?;
        const { assert!(std::mem::offset_of!(ArrayState, len) == 8) };
        let mut state_init = vec![0u8; 8];
        state_init.extend_from_slice(&(len as u64).to_ne_bytes());
        Ok(ShmSpec {
            kind: Kind::Array as u32,
            fingerprint: fingerprint::<T>(),
            state_size: std::mem::size_of::<ArrayState>() as u64,
            tail_len: bytes.max(1) as u64,
            state_init,
        })
    }

    /// The lock that guards this array (Python's `get_lock()`); its guard
    /// is the only safe way to release it.
    pub fn get_lock(&self) -> DataLock {
        DataLock::from_parts(self.elems.obj.clone(), |s: &ArrayState| &s.lock)
    }
}

/// Python's char arrays (`Array('c', n)`): the bytes as a C string
/// (`.value`) or whole (`.raw`).
impl Array<u8> {
    /// The bytes before the first NUL (all of them without one), read under
    /// the lock (Python's `.value` of a char array).
    ///
    /// ```
    /// let s = multiproc::Array::from_elem(0u8, 10).unwrap();
    /// s.set_value("hello").unwrap();
    /// assert_eq!(s.value(), b"hello");
    /// assert_eq!(s.value_str().unwrap(), "hello");
    /// assert_eq!(s.raw(), b"hello\0\0\0\0\0");
    /// assert!(s.set_value("far too long").is_err());
    /// ```
    pub fn value(&self) -> Vec<u8> {
        c_string(&self.guard_forever()).to_vec()
    }

    /// [`Array::value`] as text; [`Error::Codec`] if it is not UTF-8.
    pub fn value_str(&self) -> Result<String> {
        String::from_utf8(self.value()).map_err(Error::codec)
    }

    /// Writes `bytes` from the start, then a NUL if there is room (Python's
    /// `.value = …`); longer than the array is [`Error::InvalidArgument`],
    /// and nothing is written.
    pub fn set_value(&self, bytes: impl AsRef<[u8]>) -> Result<()> {
        let bytes = bytes.as_ref();
        check_fits(bytes, self.len())?;
        let mut guard = self.guard_forever();
        guard[..bytes.len()].copy_from_slice(bytes);
        if let Some(nul) = guard.get_mut(bytes.len()) {
            *nul = 0;
        }
        Ok(())
    }

    /// Every byte, NULs included, read under the lock (Python's `.raw`).
    pub fn raw(&self) -> Vec<u8> {
        self.to_vec()
    }

    /// Writes `bytes` from the start, leaving the rest as it is (Python's
    /// `.raw = …`); longer than the array is [`Error::InvalidArgument`].
    pub fn set_raw(&self, bytes: impl AsRef<[u8]>) -> Result<()> {
        let bytes = bytes.as_ref();
        check_fits(bytes, self.len())?;
        self.guard_forever()[..bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}

/// Python's char arrays without a lock (`RawArray('c', n)`); each byte is
/// read and written atomically, the string as a whole is not.
impl RawArray<u8> {
    /// The bytes before the first NUL (Python's `.value`).
    pub fn value(&self) -> Vec<u8> {
        c_string(&self.to_vec()).to_vec()
    }

    /// [`RawArray::value`] as text; [`Error::Codec`] if it is not UTF-8.
    pub fn value_str(&self) -> Result<String> {
        String::from_utf8(self.value()).map_err(Error::codec)
    }

    /// Writes `bytes`, then a NUL if there is room (Python's `.value = …`).
    pub fn set_value(&self, bytes: impl AsRef<[u8]>) -> Result<()> {
        let bytes = bytes.as_ref();
        check_fits(bytes, self.len())?;
        for (i, b) in bytes.iter().enumerate() {
            self.set(i, *b)?;
        }
        if bytes.len() < self.len() {
            self.set(bytes.len(), 0)?;
        }
        Ok(())
    }

    /// Every byte, NULs included (Python's `.raw`).
    pub fn raw(&self) -> Vec<u8> {
        self.to_vec()
    }

    /// Writes `bytes` from the start, leaving the rest (Python's `.raw = …`).
    pub fn set_raw(&self, bytes: impl AsRef<[u8]>) -> Result<()> {
        let bytes = bytes.as_ref();
        check_fits(bytes, self.len())?;
        for (i, b) in bytes.iter().enumerate() {
            self.set(i, *b)?;
        }
        Ok(())
    }
}

/// `bytes` up to its first NUL.
fn c_string(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

fn check_fits(bytes: &[u8], len: usize) -> Result<()> {
    if bytes.len() > len {
        return Err(Error::InvalidArgument(format!(
            "{} bytes do not fit a char array of {len}",
            bytes.len()
        )));
    }
    Ok(())
}

/// The locked contents of an [`Array`], as a slice; releases the lock when dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct ArrayGuard<'a, T: ShmSafe> {
    array: &'a Array<T>,
    acquired: Acquired,
    /// False for a `get`/`set` under this thread's own `get_lock()` guard,
    /// which keeps the lock.
    owned: bool,
    /// Released on the thread that took it (see `sync::held`).
    _not_send: PhantomData<*const ()>,
}

impl<T: ShmSafe> ArrayGuard<'_, T> {
    /// The pid of the previous holder if it died holding the lock.
    pub fn owner_died(&self) -> Option<i32> {
        self.acquired.owner_died()
    }
}

impl<T: ShmSafe> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: we hold the array's lock; the tail holds `len` initialised elements.
        unsafe { std::slice::from_raw_parts(self.array.elems.ptr(), self.array.len()) }
    }
}

impl<T: ShmSafe> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: we hold the array's lock, so the elements are ours alone.
        unsafe { std::slice::from_raw_parts_mut(self.array.elems.ptr(), self.array.len()) }
    }
}

/// Shows the elements it guards (read under the lock it holds).
impl<T: ShmSafe + std::fmt::Debug> std::fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayGuard")
            .field("elements", &&**self)
            .field("owner_died", &self.owner_died())
            .finish()
    }
}

impl<T: ShmSafe> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        if self.owned {
            held::forget(self.array.raw_lock());
            self.array.raw_lock().unlock();
        }
    }
}

impl<T: ShmSafe> ShareHandle for Array<T> {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.elems.obj.to_repr()
    }
    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        Elems::open(Kind::Array, repr).map(|elems| Array { elems })
    }
}

impl<T: ShmSafe> ShareHandle for RawArray<T> {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.elems.obj.to_repr()
    }
    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        Elems::open(Kind::RawArray, repr).map(|elems| RawArray { elems })
    }
}

crate::impl_share_handle!(impl<T: ShmSafe> for Array<T>);
crate::impl_share_handle!(impl<T: ShmSafe> for RawArray<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basics() {
        let a = Array::new(&[1.5f64, 2.5]).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a.get(1).unwrap(), 2.5);
        a.set(0, 9.0).unwrap();
        assert_eq!(a.to_vec(), vec![9.0, 2.5]);
        assert!(matches!(
            a.get(2),
            Err(Error::IndexOutOfRange { index: 2, len: 2 })
        ));
        let empty = RawArray::<u8>::new(&[]).unwrap();
        assert!(empty.is_empty());
        assert!(empty.to_vec().is_empty());
        let raw = RawArray::new(&[1u16, 2, 3]).unwrap();
        raw.set(1, 7).unwrap();
        assert_eq!(raw.get(1).unwrap(), 7);
        assert_eq!(raw.to_vec(), vec![1, 7, 3]);
        assert!(matches!(
            raw.set(3, 0),
            Err(Error::IndexOutOfRange { index: 3, len: 3 })
        ));
    }

    /// Regression: `RawArray::from_elem` with a huge length mapped the
    /// segment and filled it until the OOM killer came.
    #[test]
    fn a_huge_array_is_an_error_before_any_allocation() {
        let out_of_memory = |r: Result<RawArray<u8>>| matches!(r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::OutOfMemory);
        assert!(out_of_memory(RawArray::from_elem(7u8, usize::MAX / 2)));
        assert!(out_of_memory(RawArray::from_elem(7u8, 1 << 50)));
        // Twice what is free: mappable, but filling it would bring the OOM killer.
        if let Some(free) = crate::sys::memfd::free_memory()
            && free.saturating_mul(2) < 1 << 46
        {
            assert!(out_of_memory(RawArray::from_elem(7u8, 2 * free as usize)));
        }
        assert!(matches!(
            Array::from_elem(1u32, 1 << 50),
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::OutOfMemory
        ));
        assert!(matches!(
            RawArray::from_elem(0u64, usize::MAX / 4),
            Err(Error::InvalidArgument(_))
        ));
        // A size that fits is still fine.
        assert_eq!(
            RawArray::from_elem(3u8, 1 << 20)
                .unwrap()
                .get(12345)
                .unwrap(),
            3
        );
    }

    /// Regression: a `RawArray` handle opened as an `Array` (same layout) let
    /// the lock-free `set` race with a guard's `&mut [T]`.
    #[test]
    fn raw_and_locked_arrays_never_open_as_each_other() {
        let raw = RawArray::new(&[1u32, 2]).unwrap();
        let locked = Array::new(&[1u32, 2]).unwrap();
        assert!(matches!(
            Array::<u32>::from_repr(&raw.to_repr().unwrap()),
            Err(Error::TypeMismatch { .. })
        ));
        assert!(matches!(
            RawArray::<u32>::from_repr(&locked.to_repr().unwrap()),
            Err(Error::TypeMismatch { .. })
        ));
        assert_eq!(
            Array::<u32>::from_repr(&locked.to_repr().unwrap())
                .unwrap()
                .to_vec(),
            [1, 2]
        );
    }

    #[test]
    fn guards_and_raw_arrays_show_their_elements() {
        let a = Array::new(&[1u8, 2]).unwrap();
        let g = a.lock().unwrap();
        assert_eq!(
            format!("{g:?}"),
            "ArrayGuard { elements: [1, 2], owner_died: None }"
        );
        let raw = RawArray::new(&[3i32, 4]).unwrap();
        assert_eq!(format!("{raw:?}"), "RawArray([3, 4])");
    }
}
