//! Atomic access to integer and plain-data cells in shared memory.
//!
//! Every access to a `RawValue` or `RawArray` cell goes through here, so no
//! access races with a non-atomic one (a data race is undefined behaviour
//! even between threads of one process): read-modify-writes use the atomic
//! type of the cell's own width, and whole-value copies use relaxed atomic
//! loads and stores of the widest unit the type's alignment allows (the
//! same width as the read-modify-writes for the integer types).

use std::mem::MaybeUninit;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16, AtomicU32,
    AtomicU64, AtomicUsize,
};

use crate::shm::ShmSafe;

mod sealed {
    /// Keeps [`AtomicInt`](super::AtomicInt) to the types this module implements it for.
    pub trait Sealed {}
}

/// Types whose shared cells support atomic read-modify-write.
///
/// Implemented for the integer types up to 64 bits.
/// The trait is sealed: its functions act on raw cells and are for
/// [`RawValue`](crate::RawValue) and [`Value`](crate::Value) only.
pub trait AtomicInt: ShmSafe + sealed::Sealed {
    /// # Safety
    /// `p` points to a live, aligned `Self` that is only ever accessed atomically.
    #[doc(hidden)]
    unsafe fn atomic_load(p: *mut Self) -> Self;
    /// # Safety
    /// As for [`AtomicInt::atomic_load`].
    #[doc(hidden)]
    unsafe fn atomic_store(p: *mut Self, v: Self);
    /// # Safety
    /// As for [`AtomicInt::atomic_load`].
    #[doc(hidden)]
    unsafe fn atomic_swap(p: *mut Self, v: Self) -> Self;
    /// # Safety
    /// As for [`AtomicInt::atomic_load`].
    #[doc(hidden)]
    unsafe fn atomic_cas(p: *mut Self, current: Self, new: Self) -> Result<Self, Self>;
    /// # Safety
    /// As for [`AtomicInt::atomic_load`].
    #[doc(hidden)]
    unsafe fn atomic_add(p: *mut Self, v: Self) -> Self;
    /// # Safety
    /// As for [`AtomicInt::atomic_load`].
    #[doc(hidden)]
    unsafe fn atomic_sub(p: *mut Self, v: Self) -> Self;
    /// # Safety
    /// As for [`AtomicInt::atomic_load`].
    #[doc(hidden)]
    unsafe fn atomic_and(p: *mut Self, v: Self) -> Self;
    /// # Safety
    /// As for [`AtomicInt::atomic_load`].
    #[doc(hidden)]
    unsafe fn atomic_or(p: *mut Self, v: Self) -> Self;
    /// # Safety
    /// As for [`AtomicInt::atomic_load`].
    #[doc(hidden)]
    unsafe fn atomic_xor(p: *mut Self, v: Self) -> Self;
}

/// Implements [`AtomicInt`] for `$t` through its atomic type `$a`; `$add` and
/// `$sub` name the atomic methods behind `fetch_add` and `fetch_sub`.
macro_rules! atomic_int {
    ($($t:ty => $a:ty, $add:ident, $sub:ident);* $(;)?) => {$(
        impl sealed::Sealed for $t {}
        // SAFETY (for every function): the caller promises that `p` points to
        // a live, aligned cell that is only accessed atomically; `at` checks
        // that the atomic type has the cell's size and alignment.
        impl AtomicInt for $t {
            unsafe fn atomic_load(p: *mut Self) -> Self {
                // SAFETY: see above.
                unsafe { at::<$t, $a>(p) }.load(SeqCst)
            }
            unsafe fn atomic_store(p: *mut Self, v: Self) {
                // SAFETY: see above.
                unsafe { at::<$t, $a>(p) }.store(v, SeqCst)
            }
            unsafe fn atomic_swap(p: *mut Self, v: Self) -> Self {
                // SAFETY: see above.
                unsafe { at::<$t, $a>(p) }.swap(v, SeqCst)
            }
            unsafe fn atomic_cas(p: *mut Self, c: Self, n: Self) -> Result<Self, Self> {
                // SAFETY: see above.
                unsafe { at::<$t, $a>(p) }.compare_exchange(c, n, SeqCst, SeqCst)
            }
            unsafe fn atomic_add(p: *mut Self, v: Self) -> Self {
                // SAFETY: see above.
                unsafe { at::<$t, $a>(p) }.$add(v, SeqCst)
            }
            unsafe fn atomic_sub(p: *mut Self, v: Self) -> Self {
                // SAFETY: see above.
                unsafe { at::<$t, $a>(p) }.$sub(v, SeqCst)
            }
            unsafe fn atomic_and(p: *mut Self, v: Self) -> Self {
                // SAFETY: see above.
                unsafe { at::<$t, $a>(p) }.fetch_and(v, SeqCst)
            }
            unsafe fn atomic_or(p: *mut Self, v: Self) -> Self {
                // SAFETY: see above.
                unsafe { at::<$t, $a>(p) }.fetch_or(v, SeqCst)
            }
            unsafe fn atomic_xor(p: *mut Self, v: Self) -> Self {
                // SAFETY: see above.
                unsafe { at::<$t, $a>(p) }.fetch_xor(v, SeqCst)
            }
        }
    )*};
}

/// Views a shared cell as its atomic type.
///
/// # Safety
/// `p` points to a live, aligned `T` that outlives `'a` and is only
/// accessed atomically meanwhile.
unsafe fn at<'a, T, A>(p: *mut T) -> &'a A {
    const { assert!(std::mem::size_of::<T>() == std::mem::size_of::<A>()) };
    const { assert!(std::mem::align_of::<T>() == std::mem::align_of::<A>()) };
    // SAFETY: the caller's promise; the atomic type has the same size and
    // alignment (checked above) and every access to the cell is atomic.
    unsafe { &*p.cast::<A>() }
}

atomic_int!(
    i8 => AtomicI8, fetch_add, fetch_sub;
    i16 => AtomicI16, fetch_add, fetch_sub;
    i32 => AtomicI32, fetch_add, fetch_sub;
    i64 => AtomicI64, fetch_add, fetch_sub;
    isize => AtomicIsize, fetch_add, fetch_sub;
    u8 => AtomicU8, fetch_add, fetch_sub;
    u16 => AtomicU16, fetch_add, fetch_sub;
    u32 => AtomicU32, fetch_add, fetch_sub;
    u64 => AtomicU64, fetch_add, fetch_sub;
    usize => AtomicUsize, fetch_add, fetch_sub;
);

/// The width of the atomic units a `T` is copied in: its alignment, at most 8.
const fn unit<T>() -> usize {
    let align = std::mem::align_of::<T>();
    if align < 8 { align } else { 8 }
}

/// Copies the `T` at `p` out with relaxed atomic loads, one unit at a time.
///
/// A copy racing with a [`store`] may mix units of both values (a torn
/// value), never half a unit (a unit is at most the type's alignment), so
/// the mix is a valid `T` for the crate's `ShmSafe` types (integers and
/// floats, where every bit pattern is valid) and, by its contract, for the user's.
///
/// # Safety
/// `p` points to a live, aligned `T` in a shared mapping that this process
/// only accesses atomically (through this module).
pub(crate) unsafe fn load<T: ShmSafe>(p: *const T) -> T {
    let mut out = MaybeUninit::<T>::uninit();
    let n = std::mem::size_of::<T>() / unit::<T>();
    let dst = out.as_mut_ptr();
    // SAFETY: `p` is aligned to `align_of::<T>()`, a multiple of the unit,
    // and `size_of::<T>()` is a multiple of its alignment, so the `n` units
    // tile the cell and each is aligned for its atomic type; `dst` has the
    // same layout. Every unit is written before `assume_init`.
    unsafe {
        match unit::<T>() {
            8 => copy_units::<AtomicU64, u64>(p.cast(), dst.cast(), n, |a| a.load(Relaxed)),
            4 => copy_units::<AtomicU32, u32>(p.cast(), dst.cast(), n, |a| a.load(Relaxed)),
            2 => copy_units::<AtomicU16, u16>(p.cast(), dst.cast(), n, |a| a.load(Relaxed)),
            _ => copy_units::<AtomicU8, u8>(p.cast(), dst.cast(), n, |a| a.load(Relaxed)),
        }
        out.assume_init()
    }
}

/// Reads `n` atomic units starting at `src` into `dst`.
///
/// # Safety
/// `src` and `dst` are aligned for `A`/`U` (of one size) and valid for `n` units.
unsafe fn copy_units<A, U>(src: *const U, dst: *mut U, n: usize, read: impl Fn(&A) -> U) {
    for i in 0..n {
        // SAFETY: the caller's promise; `A` is the atomic type of `U`.
        unsafe { dst.add(i).write(read(&*src.add(i).cast::<A>())) }
    }
}

/// Writes `v` into the `T` at `p` with relaxed atomic stores, one unit at a time.
///
/// # Safety
/// As for [`load`].
pub(crate) unsafe fn store<T: ShmSafe>(p: *mut T, v: T) {
    let n = std::mem::size_of::<T>() / unit::<T>();
    let src = (&v as *const T).cast::<u8>();
    // SAFETY: as in `load` for `p`; `src` points to `v`, whose every byte is
    // initialised (a `ShmSafe` type has no padding), so it may be viewed as bytes.
    unsafe {
        let bytes = std::slice::from_raw_parts(src, std::mem::size_of::<T>());
        match unit::<T>() {
            8 => store_units::<AtomicU64, 8>(p.cast(), bytes, n, |a, b| {
                a.store(u64::from_ne_bytes(b), Relaxed)
            }),
            4 => store_units::<AtomicU32, 4>(p.cast(), bytes, n, |a, b| {
                a.store(u32::from_ne_bytes(b), Relaxed)
            }),
            2 => store_units::<AtomicU16, 2>(p.cast(), bytes, n, |a, b| {
                a.store(u16::from_ne_bytes(b), Relaxed)
            }),
            _ => store_units::<AtomicU8, 1>(p.cast(), bytes, n, |a, b| {
                a.store(u8::from_ne_bytes(b), Relaxed)
            }),
        }
    }
}

/// Stores the `n` units of `bytes` into the cell at `dst`.
///
/// # Safety
/// `dst` is aligned for `A` (of `W` bytes) and valid for `n` units; `bytes`
/// holds `n * W` bytes.
unsafe fn store_units<A, const W: usize>(
    dst: *const u8,
    bytes: &[u8],
    n: usize,
    write: impl Fn(&A, [u8; W]),
) {
    for (i, chunk) in bytes.chunks_exact(W).take(n).enumerate() {
        let mut unit = [0u8; W];
        unit.copy_from_slice(chunk);
        // SAFETY: the caller's promise; unit `i` lies inside the cell.
        write(unsafe { &*dst.add(i * W).cast::<A>() }, unit);
    }
}

/// The atomic methods of `RawValue` (lock-free) and `Value` (under its lock).
///
/// `self.$access()` returns something whose `ptr()` is the value's cell,
/// and which, while it lives, keeps every non-atomic access away from the
/// cell (a `RawValue` has none; a `Value`'s guard holds its lock).
macro_rules! atomic_methods {
    ($access:ident) => {
        /// Atomically adds `v` (wrapping) and returns the previous value.
        pub fn fetch_add(&self, v: T) -> T {
            let cell = self.$access();
            // SAFETY: the cell is live and aligned, and only accessed atomically here.
            unsafe { T::atomic_add(cell.ptr(), v) }
        }
        /// Atomically subtracts `v` (wrapping) and returns the previous value.
        pub fn fetch_sub(&self, v: T) -> T {
            let cell = self.$access();
            // SAFETY: as in `fetch_add`.
            unsafe { T::atomic_sub(cell.ptr(), v) }
        }
        /// Atomically ANDs `v` in and returns the previous value.
        pub fn fetch_and(&self, v: T) -> T {
            let cell = self.$access();
            // SAFETY: as in `fetch_add`.
            unsafe { T::atomic_and(cell.ptr(), v) }
        }
        /// Atomically ORs `v` in and returns the previous value.
        pub fn fetch_or(&self, v: T) -> T {
            let cell = self.$access();
            // SAFETY: as in `fetch_add`.
            unsafe { T::atomic_or(cell.ptr(), v) }
        }
        /// Atomically XORs `v` in and returns the previous value.
        pub fn fetch_xor(&self, v: T) -> T {
            let cell = self.$access();
            // SAFETY: as in `fetch_add`.
            unsafe { T::atomic_xor(cell.ptr(), v) }
        }
        /// Atomically replaces the value and returns the previous one.
        pub fn swap(&self, v: T) -> T {
            let cell = self.$access();
            // SAFETY: as in `fetch_add`.
            unsafe { T::atomic_swap(cell.ptr(), v) }
        }
        /// Atomically stores `new` if the value is `current`; returns the previous value
        /// as `Ok` on success and `Err` on failure.
        pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
            let cell = self.$access();
            // SAFETY: as in `fetch_add`.
            unsafe { T::atomic_cas(cell.ptr(), current, new) }
        }
        /// Atomically reads the value.
        pub fn load(&self) -> T {
            let cell = self.$access();
            // SAFETY: as in `fetch_add`.
            unsafe { T::atomic_load(cell.ptr()) }
        }
        /// Atomically writes the value.
        pub fn store(&self, v: T) {
            let cell = self.$access();
            // SAFETY: as in `fetch_add`.
            unsafe { T::atomic_store(cell.ptr(), v) }
        }
    };
}
pub(crate) use atomic_methods;
