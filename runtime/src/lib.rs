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
//!
//! # Inside the crate
//!
//! The modules are layered; each uses the ones below it, never one above:
//!
//! 1. `sys`: the platform calls.
//! 2. What every layer shares: `error`, `deadline`, `liveness` (with the
//!    process-identity word a lock holder or segment creator writes),
//!    `fork_sync` (locks a forked child can use), `codec`.
//! 3. `shm`: shared segments and the objects laid out in them (with
//!    `handle`, how they travel to other processes).
//! 4. `sync` and `process`: the primitives and the processes.
//! 5. `queue`, `connection`, `sharedctypes`, `pool`, `manager` and the rest.
//!
//! A test holds `sys`, layer 2 and `shm` to this (it reads their sources).
//! Higher up there are known exceptions: the remote flavour of the sync
//! primitives calls the manager's client core (`manager::{client, core,
//! protocol}`; the manager's server is on top), `handle`'s flavoured
//! encoding names that core's `ProxyRepr`, `connection` builds on
//! `queue`'s ring, and a process's `Sentinel` is a `connection` waitable.

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
mod fork_sync;
#[doc(hidden)]
pub mod handle;
#[cfg(test)]
mod layers;
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
pub use connection::{
    Address, Connection, Listener, Pipe, SocketConnection, Waitable, client, wait,
};
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

/// Workers of a distributed [`Pool`] (feature `redis`).
///
/// A worker runs tasks of the pools built with
/// `Pool::builder().redis(url).name(name)`. Tasks are functions of the
/// program, found by their place in its binary: a worker is the user's own
/// program (the same build as the submitting one), started on any host
/// with [`WORKER_ENV`](worker::WORKER_ENV) set, whose [`init`] becomes the worker:
///
/// ```text
/// MULTIPROC_WORKER=redis://:password@10.0.0.5:6379/0/jobs ./my_program
/// ```
///
/// The value is the server's URL followed by `/` and the pool name (always
/// the last path segment; the database number before it is optional). Or
/// call [`run`](worker::run) from the program. A generic `multiproc worker` command
/// cannot exist: it would not contain the user's functions.
#[cfg(feature = "redis")]
pub mod worker {
    pub use crate::pool::redis_worker::{run, run_until};
    pub use crate::pool::{DEFAULT_LEASE, DEFAULT_MAX_RETRIES, WORKER_ENV, WorkerInfo};
}
pub use sharedctypes::{
    Array, ArrayGuard, AtomicInt, RawArray, RawValue, Synchronized, SynchronizedArray, Value,
    ValueGuard, ValueLock,
};
pub use shm::{Segment, ShmSafe};
pub use sync::{
    Acquired, Barrier, BoundedSemaphore, Condition, ConditionGuard, ConditionLock, DataLock,
    DataLockGuard, Event, Lock, LockGuard, RLock, RLockGuard, Semaphore, WaitTimeoutResult,
};

/// The encoding library, re-exported so derives and handles agree on one version.
pub use rkyv;

/// Internals that `multiproc-proxy`, the `multiproc` CLI, tests and fuzz
/// targets use. Not public API: no stability promise, hidden from the docs.
#[doc(hidden)]
pub mod __internal {
    pub use crate::codec::field_travels;
    /// The runtime's locks, which a forked child can use.
    pub mod fork_sync {
        pub use crate::fork_sync::Mutex;
    }
    pub use crate::process::{ForkHook, Initializer, forkserver_pid, register_fork_hook};
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
            pub use crate::sys::time::{process_cpu_time, process_cpu_time_of};
        }
        /// Termination signals, for servers.
        pub mod signal {
            pub use crate::sys::signal::{block_termination, wait_termination};
        }
    }
}
