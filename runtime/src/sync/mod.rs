//! Process-shared synchronisation: locks, semaphores, conditions, events, barriers.

mod lock;
pub mod raw_lock;
pub mod spin;

pub use lock::{Lock, LockGuard};
pub use raw_lock::{Acquired, RawLock};
