//! Process-shared synchronisation: locks, semaphores, conditions, events, barriers.
//!
//! Every primitive lives in its own shared segment, can be used by any number
//! of processes and threads, and can be passed to a child as an argument or
//! inside a message. Blocking calls come as `x`, `try_x` and
//! `x_timeout(Duration)`. Waiters spin only while spinning can pay (one
//! policy for the whole runtime, in `park`), then sleep on a futex; where a
//! peer's death could leave them waiting forever (a lock holder, a barrier
//! party), they wake in slices to check that it still lives. Objects a
//! manager created record the server as their owner in the segment header;
//! their waits (a lock's waiter too) also fail with `ManagerGone` once it
//! died, while what does not wait (a free lock, a `try_`) still works.
//!
//! Liveness is three-valued: alive, dead, or cannot tell (the checking
//! process is out of descriptors and cannot read `/proc`). Only a death
//! hands a lock over or breaks a barrier; a wait without a deadline that
//! cannot tell for 10 s fails with `Error::Io`.

mod barrier;
mod condition;
mod event;
pub(crate) mod held;
mod lock;
pub(crate) mod park;
pub mod raw_lock;
mod remote;
mod rlock;
mod semaphore;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard, ConditionLock, WaitTimeoutResult};
pub use event::Event;
pub use lock::{DataLock, DataLockGuard, Lock, LockGuard};
pub use raw_lock::{Acquired, RawLock};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore};
