//! Queues for messages between processes: Python's `Queue`, `JoinableQueue`
//! and `SimpleQueue`, on one shared-memory ring each.
//!
//! There is no feeder thread: a `put` that returned has its message in the
//! ring, where any process holding the queue can take it, even after the
//! producer exits or dies. Messages of any size go through; one larger than
//! the ring is streamed through it while a consumer takes it.

mod core;
pub(crate) use core::{HeldBack, with_encoded};
mod joinable;
#[allow(clippy::module_inception)]
mod queue;
mod remote;
pub(crate) mod ring;
mod simple;

pub use joinable::JoinableQueue;
pub use queue::Queue;
pub use simple::SimpleQueue;

/// The ring size of a queue made with `new()`: 1 MiB.
pub const DEFAULT_CAPACITY_BYTES: usize = 1 << 20;
