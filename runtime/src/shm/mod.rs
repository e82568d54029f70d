//! Shared segments: anonymous memory that several processes map.

mod object;
mod segment;
mod shm_safe;

pub(crate) use object::created_here;
pub use object::{Kind, ShmObject, ShmSpec, fingerprint, fingerprint_str};
pub use segment::Segment;
pub(crate) use segment::fork_guard;
pub use shm_safe::ShmSafe;
