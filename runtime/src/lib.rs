//! The runtime of multiproc: everything that runs processes or owns shared memory.
//!
//! Most users depend on the `multiproc` facade crate, which re-exports this
//! crate's public items; its documentation is the tutorial.
//!
//! The public API is what this root re-exports, plus the [`connection`]
//! module (Python's `multiprocessing.connection`). The modules marked
//! `#[doc(hidden)]` (`deadline`, `handle`, `manager`, `wire`, `__internal`)
//! are internals shared with the sibling crate `multiproc-proxy`, the CLI,
//! tests and fuzz targets: no stability promise, and nothing in them that
//! could break memory safety is a safe function. The platform calls (`sys`)
//! are private.

// Futexes, memfd, SO_PEERCRED, /proc and the abstract socket namespace are
// Linux's; other systems need their own `sys` backend first.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "multiproc supports Linux only for now (it is built on futexes, memfd, \
     SO_PEERCRED and /proc); other systems are not supported yet"
);

mod codec;
pub mod connection;
#[doc(hidden)]
pub mod deadline;
mod error;
#[doc(hidden)]
pub mod handle;
mod liveness;
#[doc(hidden)]
pub mod manager;
mod pool;
mod process;
pub mod py;
mod queue;
#[cfg(feature = "redis")]
#[doc(hidden)]
pub mod redis;
pub mod shared_memory;
mod sharedctypes;
mod shm;
mod sync;
mod sys;
#[doc(hidden)]
pub mod wire;

pub use codec::Shareable;
pub use connection::{Address, Connection, Listener, Pipe, SocketConnection, client, wait};
pub use error::{Error, Quota, Result};
pub use pool::{
    AsyncResult, Callbacks, Chunked, IMapIterator, Pool, PoolBuilder, ThreadPool, ThreadPoolBuilder,
};
pub use process::{
    AuthKey, ChildInfo, Context, CurrentProcess, ParentProcess, Process, Sentinel, StartMethod,
    active_children, cpu_count, current_process, force_start_method, get_all_start_methods,
    get_context, get_start_method, init, parent_process, set_start_method,
};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use sharedctypes::{
    Array, ArrayGuard, AtomicInt, RawArray, RawValue, Synchronized, SynchronizedArray, Value,
    ValueGuard, ValueLock,
};
pub use shm::{Segment, ShmSafe};
pub use sync::{
    Acquired, Barrier, BoundedSemaphore, Condition, ConditionGuard, ConditionLock, DataLock,
    DataLockGuard, Event, Lock, LockGuard, RLock, RLockGuard, Semaphore,
};

/// The encoding library, re-exported so derives and handles agree on one version.
pub use rkyv;

/// Internals that `multiproc-proxy`, the `multiproc` CLI, tests and fuzz
/// targets use. Not public API: no stability promise, hidden from the docs.
#[doc(hidden)]
pub mod __internal {
    pub use crate::codec::field_travels;
    pub use crate::process::{
        ForkHook, ForkMutex, Initializer, forkserver_pid, register_fork_hook,
    };
    pub use crate::queue::DEFAULT_CAPACITY_BYTES;
    pub use crate::shm::{Kind, ShmSpec, fingerprint_str};
    pub use crate::sync::park::set_spin_limit;

    /// The few platform calls used outside the runtime, at their `sys` paths.
    pub mod sys {
        /// Descriptors.
        pub mod fd {
            pub use crate::sys::fd::dup_onto;
        }
        /// Process identity.
        pub mod process {
            pub use crate::sys::process::getpid;
        }
        /// CPU affinity, for benchmarks that share one CPU between processes.
        pub mod sched {
            pub use crate::sys::sched::{Pinned, pin_to_one_cpu};
        }
        /// Clocks: a process's CPU time, for benchmarks of what waiting burns.
        pub mod time {
            pub use crate::sys::time::process_cpu_time;
        }
        /// Termination signals, for servers.
        pub mod signal {
            pub use crate::sys::signal::{block_termination, wait_termination};
        }
    }
}
