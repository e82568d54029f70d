//! The promise that a type may live in shared memory.

/// Types that may live in a shared segment: plain old data.
///
/// # Safety
///
/// Implement this only for types that are `#[repr(C)]` (or primitive), hold
/// no pointers or references (they mean nothing in another process), have no
/// `Drop`, have no padding bytes (lock-free copies move every byte as an
/// integer), and for which every value another process may write is valid,
/// including a mix of two values (a `RawValue` read racing with a write may
/// see one, mixed in units of the type's alignment, at most 8 bytes).
/// The crate implements it for the integer and float types and arrays of
/// such types. Not for `bool` or `char`: a peer (or any program of the same
/// user, for a named segment) may write a byte pattern that is not a valid
/// `bool` or `char`, and reading it would be undefined behaviour; use `u8`
/// (Python's `c_bool` is a byte too) or `u32` and convert.
///
/// ```
/// #[derive(Clone, Copy)]
/// #[repr(C)]
/// struct Point { x: f64, y: f64 }
/// // SAFETY: repr(C), two floats, no pointers, no Drop.
/// unsafe impl multiproc::ShmSafe for Point {}
/// ```
pub unsafe trait ShmSafe: Copy + Send + Sync + 'static {}

macro_rules! shm_safe {
    ($($t:ty),*) => {
        $(
            // SAFETY: a primitive: no pointers, no Drop, fixed layout.
            unsafe impl ShmSafe for $t {}
        )*
    };
}
shm_safe!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64
);

// SAFETY: an array of plain old data is plain old data.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}
