//! Locks and condition variables a forked child can always use.
//!
//! `parking_lot` keeps every parked thread of the process in one
//! process-wide table of queues, each guarded by its own word lock. A forked
//! child inherits that table as the parent's threads left it: queues naming
//! threads that do not exist in the child, and a queue's lock held for ever
//! when a parent thread was in the middle of parking or waking at the fork.
//! A child that then parks (its own pool, its own queue) can miss its
//! wake-up or wait for that lock for ever. std's futex locks keep all their
//! state in the lock's own words, so a child's fresh objects start clean, and
//! a lock the forking thread held across the fork (the in-process tables of
//! `shm`, `process` and the manager client are held so the child never
//! inherits one mid-update) is released in the child by that same thread.
//!
//! The types here are std's, shaped as the runtime used `parking_lot`'s:
//! locking ignores poisoning (a holder's panic is reported where it
//! happened; the data stays consistent at each release), and a condition
//! variable waits on `&mut` guard. This module uses nothing of the crate.

use std::marker::PhantomData;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A mutual exclusion lock (std's, poisoning ignored).
#[derive(Debug, Default)]
pub struct Mutex<T: ?Sized>(std::sync::Mutex<T>);

/// The guard of a locked [`Mutex`].
#[derive(Debug)]
pub struct MutexGuard<'a, T: ?Sized>(std::sync::MutexGuard<'a, T>);

impl<T> Mutex<T> {
    /// A new, unlocked mutex.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex(std::sync::Mutex::new(value))
    }

    /// The value, once no one can lock it any more.
    pub fn into_inner(self) -> T {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks it, waiting as long as it is held.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        MutexGuard(self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Locks it if no one holds it now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(guard) => Some(MutexGuard(guard)),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(MutexGuard(p.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The value, through a unique borrow (no locking).
    pub fn get_mut(&mut self) -> &mut T {
        self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: ?Sized> std::ops::Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized> std::ops::DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// A condition variable (std's) that waits on a [`MutexGuard`] in place.
///
/// It counts its waiters, so that a notification with none costs no system
/// call (std's always makes a futex wake, as parking_lot's does not).
#[derive(Debug, Default)]
pub struct Condvar {
    cv: std::sync::Condvar,
    /// Threads in `wait` or `wait_for` (counted under the caller's lock,
    /// before they sleep).
    waiters: AtomicUsize,
}

impl Condvar {
    /// A new condition variable.
    pub const fn new() -> Condvar {
        Condvar {
            cv: std::sync::Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Releases the guard's lock, waits for a notification (or a spurious
    /// wake-up), and locks it again.
    pub fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        in_place(&mut guard.0, |g| {
            self.cv.wait(g).unwrap_or_else(PoisonError::into_inner)
        });
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// As [`Condvar::wait`], for `timeout` at most; whether it ran out.
    pub fn wait_for<T>(&self, guard: &mut MutexGuard<'_, T>, timeout: Duration) -> bool {
        let mut timed_out = false;
        self.waiters.fetch_add(1, Ordering::SeqCst);
        in_place(&mut guard.0, |g| {
            let (g, result) = self
                .cv
                .wait_timeout(g, timeout)
                .unwrap_or_else(PoisonError::into_inner);
            timed_out = result.timed_out();
            g
        });
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        timed_out
    }

    /// Wakes one waiter, if any. (A waiter counts itself under the lock it
    /// waits with, before it sleeps: a notifier that changed the state under
    /// that lock sees it.)
    pub fn notify_one(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.cv.notify_one();
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.cv.notify_all();
        }
    }
}

/// Replaces `*slot` by `f(*slot)`, aborting the process if `f` unwinds (the
/// value was moved out, and must not be dropped twice).
fn in_place<G>(slot: &mut G, f: impl FnOnce(G) -> G) {
    struct AbortOnUnwind;
    impl Drop for AbortOnUnwind {
        fn drop(&mut self) {
            std::process::abort();
        }
    }
    let bomb = AbortOnUnwind;
    // SAFETY: the value is read out of `slot` and a value written back
    // before `slot` is used again; if `f` unwinds in between, the bomb
    // aborts the process, so the read-out value is never dropped twice.
    unsafe {
        let old = std::ptr::read(slot);
        std::ptr::write(slot, f(old));
    }
    std::mem::forget(bomb);
}

/// A reader-writer lock (std's futex one, poisoning ignored).
#[derive(Debug, Default)]
pub struct RwLock<T: ?Sized>(std::sync::RwLock<T>);

impl<T: ?Sized> RwLock<T> {
    /// Shared access, waiting as long as a writer holds it.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Exclusive access, waiting as long as anyone holds it.
    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A mutex whose lock can wait a bounded time ([`TimedMutex::try_lock_for`]).
///
/// A flag taken with one compare-and-swap when free; a waiter counts itself
/// and sleeps on a condition variable, which a release notifies only when
/// someone waits (a free lock costs no system call either way).
#[derive(Debug, Default)]
pub struct TimedMutex<T> {
    held: AtomicBool,
    /// Threads sleeping until it is released (counted under `sleep`).
    waiters: AtomicUsize,
    sleep: std::sync::Mutex<()>,
    freed: std::sync::Condvar,
    value: std::cell::UnsafeCell<T>,
}

// SAFETY: the value is reached only through a guard, and at most one guard
// exists at a time (the `held` flag, set by a compare-and-swap): as a
// mutex, it shares a `T: Send` between threads.
unsafe impl<T: Send> Sync for TimedMutex<T> {}

/// The guard of a locked [`TimedMutex`] (shared between threads only
/// where `&mut T` could be).
pub struct TimedGuard<'a, T>(&'a TimedMutex<T>, PhantomData<&'a mut T>);

impl<T> TimedMutex<T> {
    /// A new, unlocked mutex.
    pub const fn new(value: T) -> TimedMutex<T> {
        TimedMutex {
            held: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            sleep: std::sync::Mutex::new(()),
            freed: std::sync::Condvar::new(),
            value: std::cell::UnsafeCell::new(value),
        }
    }

    /// The value, through a unique borrow (no locking).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// Locks it if no one holds it now.
    pub fn try_lock(&self) -> Option<TimedGuard<'_, T>> {
        self.held
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
            .then(|| TimedGuard(self, PhantomData))
    }

    /// Locks it, waiting `wait` at most for its holder to release it.
    pub fn try_lock_for(&self, wait: Duration) -> Option<TimedGuard<'_, T>> {
        if let Some(guard) = self.try_lock() {
            return Some(guard);
        }
        let deadline = std::time::Instant::now().checked_add(wait);
        let mut sleep = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let got = loop {
            // Counted before this look: a release after it notifies.
            if let Some(guard) = self.try_lock() {
                break Some(guard);
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(std::time::Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                break None;
            }
            sleep = self
                .freed
                .wait_timeout(sleep, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        got
    }
}

impl<T> std::ops::Deref for TimedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (see the `Sync` impl).
        unsafe { &*self.0.value.get() }
    }
}

impl<T> std::ops::DerefMut for TimedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard is the only one, borrowed uniquely here.
        unsafe { &mut *self.0.value.get() }
    }
}

impl<T> Drop for TimedGuard<'_, T> {
    fn drop(&mut self) {
        let m = self.0;
        m.held.store(false, Ordering::SeqCst);
        if m.waiters.load(Ordering::SeqCst) > 0 {
            // Under `sleep`: a waiter that counted itself either looks at
            // `held` after this store, or sleeps before this notification.
            let _sleep = m.sleep.lock().unwrap_or_else(PoisonError::into_inner);
            m.freed.notify_one();
        }
    }
}

/// A value read far more often than written, which a forked child can
/// always read and replace: a pointer swapped atomically, never a lock.
/// (A `RwLock` that another thread of the parent was reading at the fork
/// stays read-locked for ever in the child, whose write then never ends.)
///
/// A replaced value is leaked, since a reader may still hold it: for
/// statics written rarely (once per process start, or a user's explicit
/// set), never for values that change often.
pub struct ForkCell<T> {
    ptr: std::sync::atomic::AtomicPtr<T>,
    /// Owns a `T` as a `Box` would (and shares it between threads).
    _owns: std::marker::PhantomData<Box<T>>,
}

impl<T> ForkCell<T> {
    /// An empty cell.
    pub const fn new() -> ForkCell<T> {
        ForkCell {
            ptr: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            _owns: std::marker::PhantomData,
        }
    }

    /// The value, if one was set.
    pub fn get(&self) -> Option<&T> {
        let p = self.ptr.load(std::sync::atomic::Ordering::Acquire);
        // SAFETY: a non-null pointer here came from `Box::into_raw` in
        // `set` or `get_or_init`, was published with Release after the
        // value was written, and is never freed (a replaced value is
        // leaked): it is valid and unchanged for as long as `self` lives.
        unsafe { p.as_ref() }
    }

    /// Replaces the value (the previous one is leaked: see the type's docs).
    pub fn set(&self, value: T) {
        let p = Box::into_raw(Box::new(value));
        self.ptr.swap(p, std::sync::atomic::Ordering::AcqRel);
    }

    /// The value, setting it with `init` first if there is none (if two
    /// threads race, one value wins and the other is dropped unseen).
    pub fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
        if let Some(v) = self.get() {
            return v;
        }
        let fresh = Box::into_raw(Box::new(init()));
        let won = self.ptr.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        );
        match won {
            // SAFETY: `fresh` came from `Box::into_raw` just above and is
            // now published, never freed (see `get`).
            Ok(_) => unsafe { &*fresh },
            Err(existing) => {
                // SAFETY: `fresh` was never published: this thread owns it.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: `existing` is non-null (the exchange failed on it)
                // and was published by another call (see `get`).
                unsafe { &*existing }
            }
        }
    }
}

// SAFETY: the cell hands out `&T` to any thread and moves `T` in from any
// thread, as a `Box<T>` shared behind a lock would: sound for `T: Send + Sync`.
unsafe impl<T: Send + Sync> Sync for ForkCell<T> {}
// SAFETY: as above: sending the cell sends the boxed `T`.
unsafe impl<T: Send + Sync> Send for ForkCell<T> {}

#[cfg(test)]
mod tests {
    use super::{Condvar, ForkCell, Mutex, TimedMutex};
    use std::time::Duration;

    #[test]
    fn a_condvar_wakes_its_waiter_and_times_out_without_one() {
        let pair = std::sync::Arc::new((Mutex::new(false), Condvar::new()));
        let mut ready = pair.0.lock();
        assert!(pair.1.wait_for(&mut ready, Duration::from_millis(10)));
        let other = std::sync::Arc::clone(&pair);
        let t = std::thread::spawn(move || {
            *other.0.lock() = true;
            other.1.notify_all();
        });
        while !*ready {
            pair.1.wait(&mut ready);
        }
        drop(ready);
        t.join().unwrap();
    }

    #[test]
    fn a_timed_mutex_waits_for_its_holder_a_bounded_time() {
        let m = std::sync::Arc::new(TimedMutex::new(0u32));
        let mut held = m.try_lock().unwrap();
        *held += 1;
        assert!(m.try_lock_for(Duration::from_millis(20)).is_none());
        let other = std::sync::Arc::clone(&m);
        let t = std::thread::spawn(move || {
            let mut g = other.try_lock_for(Duration::from_secs(60)).unwrap();
            *g += 1;
        });
        std::thread::sleep(Duration::from_millis(20)); // let it wait (either order passes)
        drop(held);
        t.join().unwrap();
        assert_eq!(*m.try_lock().unwrap(), 2);
    }

    #[test]
    fn a_cell_is_set_replaced_and_initialised_once() {
        let cell: ForkCell<String> = ForkCell::new();
        assert!(cell.get().is_none());
        assert_eq!(cell.get_or_init(|| "first".into()), "first");
        assert_eq!(cell.get_or_init(|| "second".into()), "first");
        cell.set("third".into());
        assert_eq!(cell.get().map(String::as_str), Some("third"));
    }
}
