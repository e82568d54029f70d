//! Python's `sharedctypes`: `Value` and `Array` in shared segments, zero-copy.
//!
//! `Value<T>` and `Array<T>` carry a process-shared lock, and every access
//! to their data goes through it (the guard's `&mut` is the only access
//! while it lives). `RawValue<T>` and `RawArray<T>` have no lock: every
//! access is atomic, so racing accesses may mix values but never break
//! memory safety. Integer and bool `RawValue`s offer lock-free atomics
//! (`fetch_add` and friends), the fastest way to share a counter; a
//! `Value`'s atomics take its lock. A `Value` handle never opens as a
//! `RawValue` (nor an `Array` as a `RawArray`): they are different kinds.
//!
//! Python's `lock=` argument: `Value::with_lock` / `Array::with_lock` guard
//! a raw value with a caller's `Lock` or `RLock` (one lock for many values)
//! as a `Synchronized` / `SynchronizedArray`, which copy on every access
//! (a releasable or recursive lock cannot vouch for a `&mut`); Python's
//! `lock=False` is `RawValue` / `RawArray`, and `get_obj()` gives the raw
//! value back.

mod array;
mod atomic;
mod synchronized;
mod value;

pub use array::{Array, ArrayGuard, RawArray};
pub use atomic::AtomicInt;
pub use synchronized::{Synchronized, SynchronizedArray, ValueLock};
pub use value::{RawValue, Value, ValueGuard};
