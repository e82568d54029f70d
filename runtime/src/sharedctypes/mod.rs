//! Python's `sharedctypes`: `Value` and `Array` in shared segments, zero-copy.
//!
//! `Value<T>` and `Array<T>` carry a process-shared lock; `RawValue<T>` and
//! `RawArray<T>` do not. Integer and bool values also offer lock-free atomics
//! (`fetch_add` and friends), the fastest way to share a counter. Do not mix
//! atomic and locked plain access to the same value concurrently: use one style
//! per value.

mod array;
mod atomic;
mod value;

pub use array::{Array, ArrayGuard, RawArray};
pub use atomic::AtomicInt;
pub use value::{RawValue, Value, ValueGuard};
