//! Python's `multiprocessing.shared_memory`: named POSIX shared memory.
//!
//! A [`SharedMemory`] segment lives in `/dev/shm` under a name that every
//! program of the same user can open (mode 0600: other users cannot),
//! including programs that are not our children and Python's
//! `multiprocessing.shared_memory.SharedMemory(name)`. On top of it:
//! [`ShareableList`] (Python's binary layout, so Python can attach it),
//! [`NamedArray`] (a typed array of [`ShmSafe`](crate::ShmSafe) elements)
//! and [`SharedMemoryManager`] (unlinks what it made when it stops).
//!
//! Lifetime: dropping a handle unmaps it; [`SharedMemory::unlink`] removes
//! the name. A segment made with `create` is tracked: when its creating
//! process (with the children it forked) is gone, however it ended, and so
//! is the program (its first process: a segment a child or pool worker
//! creates outlives that child, as in Python), a small tracker process
//! unlinks it, quietly, within moments. `create_untracked`
//! opts out. See the tracker's notes in `RELIABILITY.md`.
//!
//! Unrelated processes find each other's segments only by name: pass the
//! name (`shm.name()`) along by any means. Within multiproc, the handles
//! themselves travel by name (as Python pickles them): a `SharedMemory`,
//! `ShareableList` or `NamedArray` passed as a process argument or in a
//! message is attached by name where it is decoded (a `NamedArray` as
//! [`NamedArray::attach`] does: over the whole segment).
//!
//! For memory shared only with the processes you start, prefer
//! [`Value`](crate::Value), [`Array`](crate::Array) and
//! [`RawArray`](crate::RawArray): their anonymous segments never have a
//! name to leak.

mod array;
mod encode;
mod list;
mod manager;
mod segment;
mod tracker;

pub use array::NamedArray;
pub use encode::ArchivedByName;
pub use list::{Item, ShareableList};
pub use manager::SharedMemoryManager;
pub use segment::{MAX_NAME_LEN, SharedMemory, unlink, validate_name};
#[doc(hidden)]
pub use tracker::tracker_pid;
