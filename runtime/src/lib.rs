//! The runtime of multiproc: everything that runs processes or owns shared memory.
//!
//! Most users depend on the `multiproc` facade crate, which re-exports this
//! crate's public items; its documentation is the tutorial.

pub mod codec;
pub mod connection;
pub mod deadline;
pub mod error;
pub mod handle;
mod liveness;
pub mod manager;
pub mod pool;
pub mod process;
pub mod queue;
pub mod sharedctypes;
pub mod shm;
pub mod sync;
pub mod sys;
pub mod wire;

pub use codec::Shareable;
pub use connection::{Address, Connection, Listener, Pipe, SocketConnection, client, wait};
pub use error::{Error, Result};
pub use pool::{AsyncResult, Callbacks, IMapIterator, Pool, PoolBuilder, ThreadPool};
pub use process::{
    ChildInfo, Context, CurrentProcess, ParentProcess, Process, StartMethod, active_children,
    cpu_count, current_process, get_context, get_start_method, init, parent_process,
    set_start_method,
};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use sharedctypes::{Array, ArrayGuard, AtomicInt, RawArray, RawValue, Value, ValueGuard};
pub use shm::{Segment, ShmSafe};
pub use sync::{
    Acquired, Barrier, BoundedSemaphore, Condition, ConditionGuard, ConditionLock, Event, Lock,
    LockGuard, RLock, RLockGuard, Semaphore,
};

/// The encoding library, re-exported so derives and handles agree on one version.
pub use rkyv;
