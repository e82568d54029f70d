//! `Value<T>` and `RawValue<T>`: one `T` in shared memory.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{HandleRepr, ShareHandle};
use crate::sharedctypes::atomic::{AtomicInt, atomic_methods};
use crate::shm::{Kind, ShmObject, ShmSafe, ShmSpec, fingerprint};
use crate::sync::{Acquired, Lock, RawLock};

#[repr(C)]
pub(crate) struct ValueState<T> {
    lock: RawLock,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is only reached under `lock`, through atomics, or through
// volatile copies of plain data (RawValue); see the module docs.
unsafe impl<T: ShmSafe> Sync for ValueState<T> {}

fn create<T: ShmSafe>(v: T) -> Result<ShmObject<ValueState<T>>> {
    ShmObject::create(
        Kind::Value,
        fingerprint::<T>(),
        0,
        |state: *mut ValueState<T>, _| {
            // SAFETY: `create` hands us aligned, writable memory for one ValueState<T>.
            unsafe {
                state.write(ValueState {
                    lock: RawLock::new(),
                    value: UnsafeCell::new(v),
                })
            }
        },
    )
}

fn open<T: ShmSafe>(repr: &HandleRepr) -> Result<ShmObject<ValueState<T>>> {
    ShmObject::open(
        repr,
        Kind::Value,
        fingerprint::<T>(),
        std::any::type_name::<T>(),
    )
}

/// A `T` in shared memory, without a lock (Python's `RawValue`).
///
/// `get` and `set` copy the whole value; concurrent writers may interleave
/// (a reader can see a torn value). For integers and bools, the atomic
/// methods are the safe way to share without a lock.
pub struct RawValue<T: ShmSafe> {
    obj: ShmObject<ValueState<T>>,
}

impl<T: ShmSafe> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            obj: self.obj.clone(),
        }
    }
}

impl<T: ShmSafe + std::fmt::Debug> std::fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RawValue").field(&self.get()).finish()
    }
}

impl<T: ShmSafe> RawValue<T> {
    /// A new shared value holding `v`.
    pub fn new(v: T) -> Result<Self> {
        create(v).map(|obj| RawValue { obj })
    }

    fn cell(&self) -> *mut T {
        self.obj.state().value.get()
    }

    /// Copies the value out.
    pub fn get(&self) -> T {
        // SAFETY: the cell is aligned and initialised; T is plain data, so any
        // bytes another process wrote form a valid T.
        unsafe { self.cell().read_volatile() }
    }

    /// Overwrites the value.
    pub fn set(&self, v: T) {
        // SAFETY: as in `get`; the write is a plain copy of plain data.
        unsafe { self.cell().write_volatile(v) }
    }
}

impl<T: AtomicInt> RawValue<T> {
    atomic_methods!();
}

/// A `T` in shared memory guarded by a process-shared lock (Python's `Value`).
///
/// ```
/// let counter = multiproc::Value::new(0u64).unwrap();
/// *counter.lock().unwrap() += 1;
/// counter.fetch_add(1);
/// assert_eq!(counter.get(), 2);
/// ```
pub struct Value<T: ShmSafe> {
    obj: ShmObject<ValueState<T>>,
    _t: PhantomData<T>,
}

impl<T: ShmSafe> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            obj: self.obj.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: ShmSafe + std::fmt::Debug> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Value").field(&self.get()).finish()
    }
}

impl<T: ShmSafe> Value<T> {
    /// A new shared value holding `v`, with its own lock.
    pub fn new(v: T) -> Result<Self> {
        create(v).map(|obj| Value {
            obj,
            _t: PhantomData,
        })
    }

    fn cell(&self) -> *mut T {
        self.obj.state().value.get()
    }

    fn raw_lock(&self) -> &RawLock {
        &self.obj.state().lock
    }

    /// Reads the value under the lock.
    pub fn get(&self) -> T {
        *self.guard_forever()
    }

    /// Writes the value under the lock.
    pub fn set(&self, v: T) {
        *self.guard_forever() = v;
    }

    fn guard_forever(&self) -> ValueGuard<'_, T> {
        loop {
            // A wait with no deadline only returns once it holds the lock.
            if let Ok(guard) = self.guard(Deadline::Never) {
                return guard;
            }
        }
    }

    /// Locks the value for a read-modify-write; the guard derefs to `T`.
    pub fn lock(&self) -> Result<ValueGuard<'_, T>> {
        self.guard(Deadline::Never)
    }

    /// Locks the value if the lock is free; `Err(WouldBlock)` otherwise.
    pub fn try_lock(&self) -> Result<ValueGuard<'_, T>> {
        self.guard(Deadline::Now).map_err(|_| Error::WouldBlock)
    }

    /// Waits at most `timeout` for the lock.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ValueGuard<'_, T>> {
        self.guard(Deadline::after(timeout))
    }

    fn guard(&self, deadline: Deadline) -> Result<ValueGuard<'_, T>> {
        let acquired = self
            .raw_lock()
            .lock_watched(deadline, || match deadline {
                // A try does not wait, so it is not failed for a dead manager.
                Deadline::Now => Ok(()),
                _ => self.obj.check_owner(),
            })?
            .ok_or_else(|| deadline.timeout_error())?;
        Ok(ValueGuard {
            lock: self.raw_lock(),
            cell: self.cell(),
            acquired,
            _value: PhantomData,
        })
    }

    /// The layout of a new `Value<T>` (zero-filled), for a manager server to create.
    ///
    /// The server does not know `T`: it creates the segment from the spec and
    /// the client opens the handle it returns, then sets the value.
    pub fn spec() -> ShmSpec {
        ShmSpec {
            kind: Kind::Value as u32,
            fingerprint: fingerprint::<T>(),
            state_size: std::mem::size_of::<ValueState<T>>() as u64,
            tail_len: 0,
            state_init: Vec::new(),
        }
    }

    /// The lock that guards this value, as a [`Lock`] handle (Python's `get_lock()`).
    pub fn get_lock(&self) -> Lock {
        Lock::from_parts(self.obj.clone(), |s: &ValueState<T>| &s.lock)
    }
}

impl<T: AtomicInt> Value<T> {
    atomic_methods!();
}

/// The locked contents of a [`Value`]; releases the lock when dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct ValueGuard<'a, T: ShmSafe> {
    lock: &'a RawLock,
    cell: *mut T,
    acquired: Acquired,
    _value: PhantomData<&'a mut T>,
}

impl<T: ShmSafe> ValueGuard<'_, T> {
    /// The pid of the previous holder if it died holding the lock.
    pub fn owner_died(&self) -> Option<i32> {
        self.acquired.owner_died()
    }
}

impl<T: ShmSafe> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the value's lock, the cell is aligned and initialised.
        unsafe { &*self.cell }
    }
}

impl<T: ShmSafe> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the value's lock, so no one else touches the cell.
        unsafe { &mut *self.cell }
    }
}

impl<T: ShmSafe> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

impl<T: ShmSafe> ShareHandle for Value<T> {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.obj.to_repr()
    }
    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        open(repr).map(|obj| Value {
            obj,
            _t: PhantomData,
        })
    }
}

impl<T: ShmSafe> ShareHandle for RawValue<T> {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.obj.to_repr()
    }
    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        open(repr).map(|obj| RawValue { obj })
    }
}

crate::impl_share_handle!(impl<T: ShmSafe> for Value<T>);
crate::impl_share_handle!(impl<T: ShmSafe> for RawValue<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_set_lock() {
        let v = Value::new(5i64).unwrap();
        assert_eq!(v.get(), 5);
        v.set(7);
        *v.lock().unwrap() += 1;
        assert_eq!(v.get(), 8);
        let g = v.lock().unwrap();
        assert!(matches!(v.try_lock(), Err(Error::WouldBlock)));
        assert!(matches!(
            v.lock_timeout(Duration::from_millis(5)),
            Err(Error::Timeout(_))
        ));
        assert!(v.get_lock().is_locked());
        drop(g);
        assert!(!v.get_lock().is_locked());
    }

    #[test]
    fn atomics() {
        let v = RawValue::new(0u32).unwrap();
        assert_eq!(v.fetch_add(3), 0);
        assert_eq!(v.fetch_sub(1), 3);
        assert_eq!(v.load(), 2);
        assert_eq!(v.compare_exchange(2, 9), Ok(2));
        assert_eq!(v.compare_exchange(2, 1), Err(9));
        v.set(4);
        assert_eq!(v.get(), 4);
    }

    #[test]
    fn handle_of_wrong_type_is_rejected() {
        let v = Value::new(1u32).unwrap();
        let repr = v.to_repr().unwrap();
        assert!(matches!(
            Value::<u64>::from_repr(&repr),
            Err(Error::TypeMismatch { .. })
        ));
        assert!(matches!(
            Lock::from_repr(&repr),
            Err(Error::TypeMismatch { .. })
        ));
    }

    #[test]
    fn encode_roundtrip_shares_memory() {
        use crate::Shareable;
        let v = Value::new(1u32).unwrap();
        let bytes = v.encode().unwrap();
        let w = Value::<u32>::decode(&bytes).unwrap();
        w.set(42);
        assert_eq!(v.get(), 42);
    }
}
