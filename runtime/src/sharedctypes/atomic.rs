//! Lock-free operations on integer and bool cells in shared memory.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{
    AtomicBool, AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16,
    AtomicU32, AtomicU64, AtomicUsize,
};

use crate::shm::ShmSafe;

/// Types whose shared cells support atomic read-modify-write.
///
/// Implemented for the integer types up to 64 bits and `bool` (where
/// `fetch_add` and `fetch_sub` are not offered: they are `fetch_or`/`fetch_xor`).
pub trait AtomicInt: ShmSafe {
    #[doc(hidden)]
    fn atomic_load(p: *mut Self) -> Self;
    #[doc(hidden)]
    fn atomic_store(p: *mut Self, v: Self);
    #[doc(hidden)]
    fn atomic_swap(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    fn atomic_cas(p: *mut Self, current: Self, new: Self) -> Result<Self, Self>;
    #[doc(hidden)]
    fn atomic_add(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    fn atomic_sub(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    fn atomic_and(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    fn atomic_or(p: *mut Self, v: Self) -> Self;
    #[doc(hidden)]
    fn atomic_xor(p: *mut Self, v: Self) -> Self;
}

macro_rules! atomic_int {
    ($($t:ty => $a:ty),*) => {$(
        impl AtomicInt for $t {
            fn atomic_load(p: *mut Self) -> Self { at::<$t, $a>(p).load(SeqCst) }
            fn atomic_store(p: *mut Self, v: Self) { at::<$t, $a>(p).store(v, SeqCst) }
            fn atomic_swap(p: *mut Self, v: Self) -> Self { at::<$t, $a>(p).swap(v, SeqCst) }
            fn atomic_cas(p: *mut Self, c: Self, n: Self) -> Result<Self, Self> {
                at::<$t, $a>(p).compare_exchange(c, n, SeqCst, SeqCst)
            }
            fn atomic_add(p: *mut Self, v: Self) -> Self { at::<$t, $a>(p).fetch_add(v, SeqCst) }
            fn atomic_sub(p: *mut Self, v: Self) -> Self { at::<$t, $a>(p).fetch_sub(v, SeqCst) }
            fn atomic_and(p: *mut Self, v: Self) -> Self { at::<$t, $a>(p).fetch_and(v, SeqCst) }
            fn atomic_or(p: *mut Self, v: Self) -> Self { at::<$t, $a>(p).fetch_or(v, SeqCst) }
            fn atomic_xor(p: *mut Self, v: Self) -> Self { at::<$t, $a>(p).fetch_xor(v, SeqCst) }
        }
    )*};
}

/// Views a shared cell as its atomic type.
fn at<'a, T, A>(p: *mut T) -> &'a A {
    const { assert!(std::mem::size_of::<T>() == std::mem::size_of::<A>()) };
    const { assert!(std::mem::align_of::<T>() == std::mem::align_of::<A>()) };
    // SAFETY: callers pass a pointer to a live, aligned cell in a mapped
    // segment; the atomic type has the same size and alignment (checked above)
    // and every access to the cell through this path is atomic.
    unsafe { &*p.cast::<A>() }
}

atomic_int!(
    i8 => AtomicI8, i16 => AtomicI16, i32 => AtomicI32, i64 => AtomicI64, isize => AtomicIsize,
    u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64, usize => AtomicUsize
);

impl AtomicInt for bool {
    fn atomic_load(p: *mut Self) -> Self {
        at::<bool, AtomicBool>(p).load(SeqCst)
    }
    fn atomic_store(p: *mut Self, v: Self) {
        at::<bool, AtomicBool>(p).store(v, SeqCst)
    }
    fn atomic_swap(p: *mut Self, v: Self) -> Self {
        at::<bool, AtomicBool>(p).swap(v, SeqCst)
    }
    fn atomic_cas(p: *mut Self, c: Self, n: Self) -> Result<Self, Self> {
        at::<bool, AtomicBool>(p).compare_exchange(c, n, SeqCst, SeqCst)
    }
    fn atomic_add(p: *mut Self, v: Self) -> Self {
        at::<bool, AtomicBool>(p).fetch_or(v, SeqCst)
    }
    fn atomic_sub(p: *mut Self, v: Self) -> Self {
        at::<bool, AtomicBool>(p).fetch_xor(v, SeqCst)
    }
    fn atomic_and(p: *mut Self, v: Self) -> Self {
        at::<bool, AtomicBool>(p).fetch_and(v, SeqCst)
    }
    fn atomic_or(p: *mut Self, v: Self) -> Self {
        at::<bool, AtomicBool>(p).fetch_or(v, SeqCst)
    }
    fn atomic_xor(p: *mut Self, v: Self) -> Self {
        at::<bool, AtomicBool>(p).fetch_xor(v, SeqCst)
    }
}

/// The atomic methods shared by `Value` and `RawValue`.
macro_rules! atomic_methods {
    () => {
        /// Atomically adds `v` (wrapping) and returns the previous value.
        pub fn fetch_add(&self, v: T) -> T {
            T::atomic_add(self.cell(), v)
        }
        /// Atomically subtracts `v` (wrapping) and returns the previous value.
        pub fn fetch_sub(&self, v: T) -> T {
            T::atomic_sub(self.cell(), v)
        }
        /// Atomically ANDs `v` in and returns the previous value.
        pub fn fetch_and(&self, v: T) -> T {
            T::atomic_and(self.cell(), v)
        }
        /// Atomically ORs `v` in and returns the previous value.
        pub fn fetch_or(&self, v: T) -> T {
            T::atomic_or(self.cell(), v)
        }
        /// Atomically XORs `v` in and returns the previous value.
        pub fn fetch_xor(&self, v: T) -> T {
            T::atomic_xor(self.cell(), v)
        }
        /// Atomically replaces the value and returns the previous one.
        pub fn swap(&self, v: T) -> T {
            T::atomic_swap(self.cell(), v)
        }
        /// Atomically stores `new` if the value is `current`; returns the previous value
        /// as `Ok` on success and `Err` on failure.
        pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
            T::atomic_cas(self.cell(), current, new)
        }
        /// Atomically reads the value, without the lock.
        pub fn load(&self) -> T {
            T::atomic_load(self.cell())
        }
        /// Atomically writes the value, without the lock.
        pub fn store(&self, v: T) {
            T::atomic_store(self.cell(), v)
        }
    };
}
pub(crate) use atomic_methods;
