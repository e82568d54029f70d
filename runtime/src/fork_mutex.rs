//! A mutex the forking thread may hold across a fork.
//!
//! The in-process tables of several layers (the live segments of `shm`, the
//! children of `process`, the manager client's connections) are held across
//! a `Fork` start so the child never inherits one mid-update; this module
//! sits below all of them (it uses nothing of the crate).

/// A mutex that may be held across a fork by the forking thread.
///
/// `parking_lot` keeps parked waiters in a process-wide table and may hand
/// the lock straight to one on unlock; in a forked child those waiters do
/// not exist, so a lock the parent held across the fork, while another
/// thread waited for it, could stay locked forever in the child. std's
/// futex mutex keeps only a word and hands nothing over, so the child can
/// always release what the forking thread held. Poisoning is ignored.
#[derive(Debug, Default)]
pub struct ForkMutex<T>(std::sync::Mutex<T>);

impl<T> ForkMutex<T> {
    /// A new, unlocked mutex.
    pub const fn new(value: T) -> ForkMutex<T> {
        ForkMutex(std::sync::Mutex::new(value))
    }

    /// Locks it, whatever a panicking holder left.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    use super::ForkCell;

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
