//! `Value<T>` and `RawValue<T>`: one `T` in shared memory.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{HandleRepr, ShareHandle};
use crate::sharedctypes::atomic::{self, AtomicInt, atomic_methods};
use crate::sharedctypes::{Synchronized, ValueLock};
use crate::shm::{Kind, ShmObject, ShmSafe, ShmSpec, fingerprint};
use crate::sync::held::{self, Holder};
use crate::sync::{Acquired, DataLock, RawLock};

#[repr(C)]
pub(crate) struct ValueState<T> {
    lock: RawLock,
    value: UnsafeCell<T>,
}

// SAFETY: the `value` of a `Value` is only reached under `lock`; that of a
// `RawValue` (another `Kind`, so never both) only through atomics.
unsafe impl<T: ShmSafe> Sync for ValueState<T> {}

/// `kind` is `Value` or `RawValue`.
fn create<T: ShmSafe>(kind: Kind, v: T) -> Result<ShmObject<ValueState<T>>> {
    ShmObject::create(
        kind,
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

fn open<T: ShmSafe>(kind: Kind, repr: &HandleRepr) -> Result<ShmObject<ValueState<T>>> {
    ShmObject::open(repr, kind, fingerprint::<T>(), std::any::type_name::<T>())
}

/// A `T` in shared memory, without a lock (Python's `RawValue`).
///
/// `get` and `set` copy the whole value, atomically per unit of its
/// alignment: concurrent writers may interleave (a reader can see a mix of
/// two values, never an invalid one). For integers and bools, the atomic
/// methods (lock-free) are the way to share without a lock.
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
        create(Kind::RawValue, v).map(|obj| RawValue { obj })
    }

    fn cell(&self) -> RawCell<T> {
        RawCell(self.obj.state().value.get())
    }

    /// Copies the value out (atomically per unit of its alignment: a read
    /// racing with a `set` may see a mix of both values, never an invalid one).
    pub fn get(&self) -> T {
        // SAFETY: the cell is a live, aligned, initialised T in the mapping,
        // and every access to a RawValue's cell goes through `atomic`.
        unsafe { atomic::load(self.cell().ptr()) }
    }

    /// Overwrites the value (see [`RawValue::get`] about racing writers).
    pub fn set(&self, v: T) {
        // SAFETY: as in `get`.
        unsafe { atomic::store(self.cell().ptr(), v) }
    }
}

/// The cell of a `RawValue`, which is only ever accessed atomically.
struct RawCell<T>(*mut T);

impl<T> RawCell<T> {
    fn ptr(&self) -> *mut T {
        self.0
    }
}

/// Lock-free: every access to a `RawValue` is atomic.
impl<T: AtomicInt> RawValue<T> {
    atomic_methods!(cell);
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
        create(Kind::Value, v).map(|obj| Value {
            obj,
            _t: PhantomData,
        })
    }

    /// A new shared value holding `v`, guarded by a caller's [`Lock`] or
    /// [`RLock`] (Python's `Value(typecode, v, lock=lock)`), which may guard
    /// other values too. Every access copies; see [`Synchronized`].
    ///
    /// [`Lock`]: crate::Lock
    /// [`RLock`]: crate::RLock
    pub fn with_lock<L: ValueLock>(v: T, lock: L) -> Result<Synchronized<T, L>> {
        Synchronized::new(v, lock)
    }

    /// A new shared value with no lock at all (Python's `Value(…, lock=False)`,
    /// which is a `RawValue`).
    pub fn without_lock(v: T) -> Result<RawValue<T>> {
        RawValue::new(v)
    }

    fn cell(&self) -> *mut T {
        self.obj.state().value.get()
    }

    fn raw_lock(&self) -> &RawLock {
        &self.obj.state().lock
    }

    /// Reads the value under the lock.
    ///
    /// If the lock's holder died holding it, this goes on with the value
    /// it left (which it may have been changing) and logs a warning; use
    /// [`lock`](Value::lock) to be told ([`ValueGuard::owner_died`]).
    pub fn get(&self) -> T {
        *self.guard_forever()
    }

    /// Writes the value under the lock (a holder that died holding it: as
    /// for [`get`](Value::get)).
    pub fn set(&self, v: T) {
        *self.guard_forever() = v;
    }

    fn guard_forever(&self) -> ValueGuard<'_, T> {
        if held::try_for_data(self.raw_lock()) {
            return self.guard_of(Acquired::Clean);
        }
        match held::held_here(self.raw_lock()) {
            // Under this thread's own `get_lock()` guard (Python's
            // `with v.get_lock(): v.value += 1`): the data is ours already.
            Some(Holder::Lock) => {
                return ValueGuard {
                    lock: self.raw_lock(),
                    cell: self.cell(),
                    acquired: Acquired::Clean,
                    owned: false,
                    _value: PhantomData,
                };
            }
            Some(Holder::Data) => tracing::error!(
                "Value::get/set (or an atomic method) while this thread holds the \
                 value's guard waits for ever: use the guard"
            ),
            None => {}
        }
        loop {
            // A wait with no deadline only returns once it holds the lock.
            if let Ok(guard) = self.take(Deadline::Never, false) {
                if let Some(pid) = guard.owner_died() {
                    tracing::warn!(
                        pid,
                        "a shared Value's lock was taken over from a process that died \
                         holding it; the value is as it left it"
                    );
                }
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
        self.take(deadline, true)
    }

    /// Takes the lock by `deadline`; if it is held, and `refuse_own` and
    /// this thread holds it, `Err(InvalidState)` instead of a wait for itself.
    fn take(&self, deadline: Deadline, refuse_own: bool) -> Result<ValueGuard<'_, T>> {
        let acquired = held::take_for_data(self.raw_lock(), deadline, refuse_own, || {
            match deadline {
                // A try does not wait, so it is not failed for a dead manager.
                Deadline::Now => Ok(()),
                _ => self.obj.check_owner(),
            }
        })?;
        Ok(self.guard_of(acquired))
    }

    /// The guard of the lock this thread just took.
    fn guard_of(&self, acquired: Acquired) -> ValueGuard<'_, T> {
        ValueGuard {
            lock: self.raw_lock(),
            cell: self.cell(),
            acquired,
            owned: true,
            _value: PhantomData,
        }
    }

    /// The layout of a new `Value<T>` (zero-filled), for a manager server to create.
    ///
    /// The server does not know `T`: it creates the segment from the spec and
    /// the client opens the handle it returns, then sets the value.
    #[doc(hidden)]
    pub fn spec() -> ShmSpec {
        ShmSpec {
            kind: Kind::Value as u32,
            fingerprint: fingerprint::<T>(),
            state_size: std::mem::size_of::<ValueState<T>>() as u64,
            tail_len: 0,
            state_init: Vec::new(),
        }
    }

    /// The lock that guards this value (Python's `get_lock()`); its guard
    /// is the only safe way to release it.
    pub fn get_lock(&self) -> DataLock {
        DataLock::from_parts(self.obj.clone(), |s: &ValueState<T>| &s.lock)
    }
}

/// These take the value's lock, like every access to a `Value` (a guard's
/// `&mut T` must be the only access while it lives); [`RawValue`]'s are lock-free.
impl<T: AtomicInt> Value<T> {
    atomic_methods!(guard_forever);
}

/// The locked contents of a [`Value`]; releases the lock when dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct ValueGuard<'a, T: ShmSafe> {
    lock: &'a RawLock,
    cell: *mut T,
    acquired: Acquired,
    /// False for a `get`/`set` under this thread's own `get_lock()` guard,
    /// which keeps the lock.
    owned: bool,
    _value: PhantomData<&'a mut T>,
}

impl<T: ShmSafe> ValueGuard<'_, T> {
    /// The pid of the previous holder if it died holding the lock.
    pub fn owner_died(&self) -> Option<i32> {
        self.acquired.owner_died()
    }

    /// The guarded cell (for the atomic methods, which run under the lock).
    fn ptr(&self) -> *mut T {
        self.cell
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

/// Shows the value it guards (read under the lock it holds).
impl<T: ShmSafe + std::fmt::Debug> std::fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueGuard")
            .field("value", &**self)
            .field("owner_died", &self.owner_died())
            .finish()
    }
}

impl<T: ShmSafe> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        if self.owned {
            held::forget(self.lock);
            self.lock.unlock();
        }
    }
}

impl<T: ShmSafe> ShareHandle for Value<T> {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.obj.to_repr()
    }
    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        open(Kind::Value, repr).map(|obj| Value {
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
        open(Kind::RawValue, repr).map(|obj| RawValue { obj })
    }
}

crate::impl_share_handle!(impl<T: ShmSafe> for Value<T>);
crate::impl_share_handle!(impl<T: ShmSafe> for RawValue<T>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Lock;

    #[test]
    fn a_guard_shows_its_value() {
        let v = Value::new(5i64).unwrap();
        let g = v.lock().unwrap();
        assert_eq!(
            format!("{g:?}"),
            "ValueGuard { value: 5, owner_died: None }"
        );
    }

    #[test]
    fn get_set_lock() {
        let v = Value::new(5i64).unwrap();
        assert_eq!(v.get(), 5);
        v.set(7);
        *v.lock().unwrap() += 1;
        assert_eq!(v.get(), 8);
        let g = v.lock().unwrap();
        assert!(matches!(v.try_lock(), Err(Error::WouldBlock)));
        // Another thread waits and gives up; this one is told at once.
        let other = v.clone();
        let timed_out = std::thread::spawn(move || {
            matches!(
                other.lock_timeout(Duration::from_millis(5)),
                Err(Error::Timeout(_))
            )
        });
        assert!(timed_out.join().unwrap());
        assert!(matches!(
            v.lock_timeout(Duration::from_millis(5)),
            Err(Error::InvalidState(_))
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

    /// Regression: the lock of a Value decoded as a plain `Lock` (or as an
    /// `RLock`) had a safe `release` (or wrote an RLock's state over the
    /// value), so a second guard could reach the data while the first lived.
    #[test]
    fn a_value_lock_decodes_only_as_a_data_lock() {
        use crate::sync::RLock;
        let v = Value::new(7u64).unwrap();
        let repr = v.get_lock().to_repr().unwrap();
        assert!(matches!(
            Lock::from_repr(&repr),
            Err(Error::TypeMismatch { .. })
        ));
        assert!(matches!(
            RLock::from_repr(&repr),
            Err(Error::TypeMismatch { .. })
        ));
        let lock = DataLock::from_repr(&repr).unwrap();
        let guard = v.lock().unwrap();
        assert!(lock.is_locked());
        assert!(matches!(lock.try_lock(), Err(Error::WouldBlock)));
        drop(guard);
        let held = lock.try_lock().unwrap();
        assert!(matches!(v.try_lock(), Err(Error::WouldBlock)));
        drop(held);
        assert_eq!(v.get(), 7);
    }

    #[test]
    fn force_unlock_frees_a_leaked_guard() {
        let v = Value::new(1u8).unwrap();
        std::mem::forget(v.lock().unwrap());
        assert!(matches!(v.try_lock(), Err(Error::WouldBlock)));
        // SAFETY: the only guard was leaked; nothing uses it.
        unsafe { v.get_lock().force_unlock().unwrap() };
        assert_eq!(*v.try_lock().unwrap(), 1);
        // SAFETY: no guard is alive.
        let again = unsafe { v.get_lock().force_unlock() };
        assert!(matches!(again, Err(Error::InvalidState(_))));
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

    /// Regression: a `RawValue` handle opened as a `Value` (same layout) let
    /// the lock-free `set` race with a guard's `&mut T`.
    #[test]
    fn raw_and_locked_values_never_open_as_each_other() {
        let raw = RawValue::new(1u64).unwrap();
        let locked = Value::new(1u64).unwrap();
        assert!(matches!(
            Value::<u64>::from_repr(&raw.to_repr().unwrap()),
            Err(Error::TypeMismatch { .. })
        ));
        assert!(matches!(
            RawValue::<u64>::from_repr(&locked.to_repr().unwrap()),
            Err(Error::TypeMismatch { .. })
        ));
    }

    /// Regression: `Value::fetch_add` was lock-free, so it changed the value
    /// under another thread's guard (a data race on the guard's `&mut T`).
    #[test]
    fn value_atomics_wait_for_the_lock() {
        let v = Value::new(0u64).unwrap();
        let mut guard = v.lock().unwrap();
        let (started, about_to_add) = std::sync::mpsc::channel();
        let adder = {
            let v = v.clone();
            std::thread::spawn(move || {
                started.send(()).unwrap();
                v.fetch_add(1)
            })
        };
        about_to_add.recv().unwrap();
        // A lock-free fetch_add would finish under our guard; give it every
        // chance to (the wait only bounds how long a failure takes to show).
        let until = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < until && !adder.is_finished() {
            std::thread::yield_now();
        }
        assert!(!adder.is_finished(), "fetch_add ran while a guard was held");
        *guard = 10;
        drop(guard);
        assert_eq!(adder.join().unwrap(), 10);
        assert_eq!(v.load(), 11);
        assert_eq!(v.swap(3), 11);
        assert_eq!(v.compare_exchange(3, 4), Ok(3));
        assert_eq!(v.get(), 4);
    }

    #[test]
    fn raw_values_of_plain_structs_round_trip() {
        let v = RawValue::new([1.5f64, -2.0]).unwrap();
        assert_eq!(v.get(), [1.5, -2.0]);
        v.set([3.0, 4.0]);
        assert_eq!(v.get(), [3.0, 4.0]);
        let c = RawValue::new([1u8, 2, 3]).unwrap();
        assert_eq!(c.get(), [1, 2, 3]);
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
