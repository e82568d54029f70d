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
