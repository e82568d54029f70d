//! `Synchronized<T, L>` and `SynchronizedArray<T, L>`: a `RawValue` or
//! `RawArray` guarded by a lock the caller chose (Python's `Value(…, lock=l)`
//! and `Array(…, lock=l)`), so that several values can share one lock.
//!
//! Soundness: a caller's [`Lock`] may be released by anyone (as Python's),
//! and an [`RLock`] is taken again by the thread that holds it, so neither
//! can promise that a `&mut T` handed out under it is the only access. So
//! these types hand out no reference into shared memory at all: every
//! access copies in or out, atomically per unit of `T`'s alignment (as a
//! `RawValue`'s). Under a lock used as intended that is the whole value at
//! once; a lock misused (released by another process mid-update) can at
//! worst mix two values, never break memory safety. A zero-copy `&mut T`
//! comes only from a [`Value`](crate::Value)'s own lock, whose guard is the
//! only way to release it.

use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::sharedctypes::{RawArray, RawValue};
use crate::shm::ShmSafe;
use crate::sync::{Acquired, Lock, RLock};

mod sealed {
    use super::*;

    /// How a [`ValueLock`](super::ValueLock) is taken and given back.
    pub trait Sealed {
        fn take(&self, deadline: Deadline) -> Result<Acquired>;
        fn give_back(&self);
    }

    impl Sealed for Lock {
        fn take(&self, deadline: Deadline) -> Result<Acquired> {
            self.acquire_deadline(deadline).map_err(|e| match e {
                Error::Timeout(_) if deadline == Deadline::Now => Error::WouldBlock,
                e => e,
            })
        }
        fn give_back(&self) {
            if self.release().is_err() {
                // Someone else released it meanwhile (a Lock allows that).
                tracing::warn!("a value's lock was released by another holder");
            }
        }
    }

    impl Sealed for RLock {
        fn take(&self, deadline: Deadline) -> Result<Acquired> {
            self.acquire_deadline(deadline)
        }
        fn give_back(&self) {
            if self.release().is_err() {
                tracing::warn!("a value's recursive lock was not held at release");
            }
        }
    }
}

/// A lock that can guard a [`Synchronized`] value or array: [`Lock`] or
/// [`RLock`] (sealed: no other type).
pub trait ValueLock: sealed::Sealed + Clone + Send + Sync + 'static {}
impl ValueLock for Lock {}
impl ValueLock for RLock {}

/// Holds `lock` until dropped (a panic in user code included).
struct Held<'a, L: ValueLock>(&'a L);

impl<'a, L: ValueLock> Held<'a, L> {
    fn take(lock: &'a L, deadline: Deadline) -> Result<Self> {
        // A holder that died is logged by the lock; what it left is whole
        // values (every write here is a complete copy), so the next taker
        // goes on.
        let _owner_died = lock.take(deadline)?;
        Ok(Held(lock))
    }
}

impl<L: ValueLock> Drop for Held<'_, L> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// A `T` in shared memory guarded by a lock the caller chose (Python's
/// `Value(typecode, v, lock=lock)`); made by
/// [`Value::with_lock`](crate::Value::with_lock).
///
/// Every method copies in or out under the lock; none hands out a
/// reference into shared memory (see the module notes), so an `RLock`
/// may be taken again inside [`Synchronized::update`]'s closure. To do
/// several steps as one, hold the lock from [`Synchronized::get_lock`] and
/// use the unlocked value from [`Synchronized::get_obj`]:
///
/// ```
/// use multiproc::{Lock, Value};
///
/// let lock = Lock::new().unwrap();
/// let hits = Value::with_lock(0u64, lock.clone()).unwrap();
/// let misses = Value::with_lock(0u64, lock.clone()).unwrap();
/// hits.update(|n| n + 1).unwrap();
/// {
///     // Both counters change together: Python's `with lock:` block.
///     let _held = lock.lock().unwrap();
///     hits.get_obj().set(hits.get_obj().get() + 1);
///     misses.get_obj().set(misses.get_obj().get() + 1);
/// }
/// assert_eq!((hits.get().unwrap(), misses.get().unwrap()), (2, 1));
/// ```
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Synchronized<T: ShmSafe, L: ValueLock = Lock> {
    obj: RawValue<T>,
    lock: L,
}

impl<T: ShmSafe, L: ValueLock> Clone for Synchronized<T, L> {
    fn clone(&self) -> Self {
        Synchronized {
            obj: self.obj.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: ShmSafe + std::fmt::Debug, L: ValueLock + std::fmt::Debug> std::fmt::Debug
    for Synchronized<T, L>
{
    /// Shows the value without its lock (Debug must not block).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Synchronized")
            .field("value", &self.obj.get())
            .field("lock", &self.lock)
            .finish()
    }
}

impl<T: ShmSafe, L: ValueLock> Synchronized<T, L> {
    /// A new shared `v` guarded by `lock` (which may guard other values too).
    pub fn new(v: T, lock: L) -> Result<Self> {
        Ok(Synchronized {
            obj: RawValue::new(v)?,
            lock,
        })
    }

    /// Guards an existing raw value with `lock` (Python's
    /// `synchronized(obj, lock)`). Other holders of `obj` are not bound by
    /// the lock, as in Python.
    pub fn from_parts(obj: RawValue<T>, lock: L) -> Self {
        Synchronized { obj, lock }
    }

    fn locked<R>(&self, deadline: Deadline, f: impl FnOnce(&RawValue<T>) -> R) -> Result<R> {
        let _held = Held::take(&self.lock, deadline)?;
        Ok(f(&self.obj))
    }

    /// Reads the value under the lock.
    pub fn get(&self) -> Result<T> {
        self.locked(Deadline::Never, RawValue::get)
    }

    /// Reads the value if the lock is free now; `Err(WouldBlock)` otherwise.
    pub fn try_get(&self) -> Result<T> {
        self.locked(Deadline::Now, RawValue::get)
    }

    /// Reads the value, waiting at most `timeout` for the lock.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.locked(Deadline::after(timeout), RawValue::get)
    }

    /// Writes the value under the lock.
    pub fn set(&self, v: T) -> Result<()> {
        self.locked(Deadline::Never, |o| o.set(v))
    }

    /// Writes the value if the lock is free now; `Err(WouldBlock)` otherwise.
    pub fn try_set(&self, v: T) -> Result<()> {
        self.locked(Deadline::Now, |o| o.set(v))
    }

    /// Writes the value, waiting at most `timeout` for the lock.
    pub fn set_timeout(&self, v: T, timeout: Duration) -> Result<()> {
        self.locked(Deadline::after(timeout), |o| o.set(v))
    }

    /// Replaces the value by `f(value)` under the lock and returns the new
    /// value (Python's `with v.get_lock(): v.value = f(v.value)`). A panic
    /// in `f` releases the lock and leaves the value as it was.
    pub fn update(&self, f: impl FnOnce(T) -> T) -> Result<T> {
        self.update_deadline(Deadline::Never, f)
    }

    /// [`Synchronized::update`], waiting at most `timeout` for the lock.
    pub fn update_timeout(&self, timeout: Duration, f: impl FnOnce(T) -> T) -> Result<T> {
        self.update_deadline(Deadline::after(timeout), f)
    }

    fn update_deadline(&self, deadline: Deadline, f: impl FnOnce(T) -> T) -> Result<T> {
        self.locked(deadline, |o| {
            let new = f(o.get());
            o.set(new);
            new
        })
    }

    /// The lock guarding the value (Python's `get_lock()`).
    pub fn get_lock(&self) -> &L {
        &self.lock
    }

    /// The value without its lock (Python's `get_obj()`): each access is
    /// still atomic per unit of `T`'s alignment, so it is sound, but only
    /// the caller's holding [`Synchronized::get_lock`] makes a sequence of
    /// them one step.
    pub fn get_obj(&self) -> &RawValue<T> {
        &self.obj
    }

    /// The value and its lock, apart.
    pub fn into_parts(self) -> (RawValue<T>, L) {
        (self.obj, self.lock)
    }
}

/// A fixed-length array in shared memory guarded by a lock the caller
/// chose (Python's `Array(typecode, values, lock=lock)`); made by
/// [`Array::with_lock`](crate::Array::with_lock). As [`Synchronized`],
/// every access copies.
///
/// ```
/// use multiproc::{Array, RLock};
///
/// let a = Array::with_lock(&[1i32, 2, 3], RLock::new().unwrap()).unwrap();
/// a.set(0, 10).unwrap();
/// a.update(|xs| xs.iter_mut().for_each(|x| *x *= 2)).unwrap();
/// assert_eq!(a.to_vec().unwrap(), vec![20, 4, 6]);
/// assert_eq!(a.get_obj().get(2).unwrap(), 6);
/// ```
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SynchronizedArray<T: ShmSafe, L: ValueLock = Lock> {
    obj: RawArray<T>,
    lock: L,
}

impl<T: ShmSafe, L: ValueLock> Clone for SynchronizedArray<T, L> {
    fn clone(&self) -> Self {
        SynchronizedArray {
            obj: self.obj.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: ShmSafe + std::fmt::Debug, L: ValueLock + std::fmt::Debug> std::fmt::Debug
    for SynchronizedArray<T, L>
{
    /// Shows the elements without the lock (Debug must not block).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SynchronizedArray")
            .field("values", &self.obj.to_vec())
            .field("lock", &self.lock)
            .finish()
    }
}

impl<T: ShmSafe, L: ValueLock> SynchronizedArray<T, L> {
    /// A new shared array holding a copy of `values`, guarded by `lock`.
    pub fn new(values: &[T], lock: L) -> Result<Self> {
        Ok(SynchronizedArray {
            obj: RawArray::new(values)?,
            lock,
        })
    }

    /// Guards an existing raw array with `lock` (Python's `synchronized(obj, lock)`).
    pub fn from_parts(obj: RawArray<T>, lock: L) -> Self {
        SynchronizedArray { obj, lock }
    }

    fn locked<R>(&self, deadline: Deadline, f: impl FnOnce(&RawArray<T>) -> R) -> Result<R> {
        let _held = Held::take(&self.lock, deadline)?;
        Ok(f(&self.obj))
    }

    /// The number of elements (fixed; no lock needed).
    pub fn len(&self) -> usize {
        self.obj.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.obj.is_empty()
    }

    /// A copy of element `index` under the lock; `Err(IndexOutOfRange)` past the end.
    pub fn get(&self, index: usize) -> Result<T> {
        self.locked(Deadline::Never, |o| o.get(index))?
    }

    /// [`SynchronizedArray::get`] if the lock is free now; `Err(WouldBlock)` otherwise.
    pub fn try_get(&self, index: usize) -> Result<T> {
        self.locked(Deadline::Now, |o| o.get(index))?
    }

    /// [`SynchronizedArray::get`], waiting at most `timeout` for the lock.
    pub fn get_timeout(&self, index: usize, timeout: Duration) -> Result<T> {
        self.locked(Deadline::after(timeout), |o| o.get(index))?
    }

    /// Overwrites element `index` under the lock; `Err(IndexOutOfRange)` past the end.
    pub fn set(&self, index: usize, v: T) -> Result<()> {
        self.locked(Deadline::Never, |o| o.set(index, v))?
    }

    /// [`SynchronizedArray::set`] if the lock is free now; `Err(WouldBlock)` otherwise.
    pub fn try_set(&self, index: usize, v: T) -> Result<()> {
        self.locked(Deadline::Now, |o| o.set(index, v))?
    }

    /// [`SynchronizedArray::set`], waiting at most `timeout` for the lock.
    pub fn set_timeout(&self, index: usize, v: T, timeout: Duration) -> Result<()> {
        self.locked(Deadline::after(timeout), |o| o.set(index, v))?
    }

    /// A copy of every element, taken under the lock (a consistent snapshot).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.locked(Deadline::Never, RawArray::to_vec)
    }

    /// [`SynchronizedArray::to_vec`], waiting at most `timeout` for the lock.
    pub fn to_vec_timeout(&self, timeout: Duration) -> Result<Vec<T>> {
        self.locked(Deadline::after(timeout), RawArray::to_vec)
    }

    /// Runs `f` on a copy of the elements under the lock and writes the
    /// copy back: a read-modify-write of the whole array that no other
    /// holder of the lock sees half done. A panic in `f` releases the lock
    /// and changes nothing.
    pub fn update(&self, f: impl FnOnce(&mut [T])) -> Result<()> {
        self.update_deadline(Deadline::Never, f)
    }

    /// [`SynchronizedArray::update`], waiting at most `timeout` for the lock.
    pub fn update_timeout(&self, timeout: Duration, f: impl FnOnce(&mut [T])) -> Result<()> {
        self.update_deadline(Deadline::after(timeout), f)
    }

    fn update_deadline(&self, deadline: Deadline, f: impl FnOnce(&mut [T])) -> Result<()> {
        self.locked(deadline, |o| {
            let mut copy = o.to_vec();
            f(&mut copy);
            copy.into_iter()
                .enumerate()
                .try_for_each(|(i, v)| o.set(i, v))
        })?
    }

    /// The lock guarding the array (Python's `get_lock()`).
    pub fn get_lock(&self) -> &L {
        &self.lock
    }

    /// The array without its lock (Python's `get_obj()`); see
    /// [`Synchronized::get_obj`].
    pub fn get_obj(&self) -> &RawArray<T> {
        &self.obj
    }

    /// The array and its lock, apart.
    pub fn into_parts(self) -> (RawArray<T>, L) {
        (self.obj, self.lock)
    }
}
