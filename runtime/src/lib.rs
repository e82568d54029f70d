//! The runtime of multiproc: everything that runs processes or owns shared memory.
//!
//! Most users depend on the `multiproc` facade crate, which re-exports this
//! crate's public items; its documentation is the tutorial.

pub mod codec;
pub mod deadline;
pub mod error;
pub mod handle;
pub mod manager;
pub mod process;
pub mod sharedctypes;
pub mod shm;
pub mod sync;
pub mod sys;

pub use codec::Shareable;
pub use error::{Error, Result};
pub use process::{
    ChildInfo, Context, CurrentProcess, ParentProcess, Process, StartMethod, active_children,
    cpu_count, current_process, get_context, get_start_method, init, parent_process,
    set_start_method,
};
pub use sharedctypes::{Array, ArrayGuard, AtomicInt, RawArray, RawValue, Value, ValueGuard};
pub use shm::{Segment, ShmSafe};
pub use sync::{Acquired, Lock, LockGuard};

/// The encoding library, re-exported so derives and handles agree on one version.
pub use rkyv;
