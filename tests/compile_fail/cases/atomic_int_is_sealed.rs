//! `AtomicInt` is sealed: no type outside the crate implements it, even
//! with every function written out.

#[derive(Clone, Copy)]
#[repr(C)]
struct Pair {
    a: u32,
    b: u32,
}

// SAFETY: repr(C), two integers, no padding, no pointers, no Drop.
unsafe impl multiproc::ShmSafe for Pair {}

impl multiproc::AtomicInt for Pair {
    unsafe fn atomic_load(_: *mut Self) -> Self {
        unimplemented!()
    }
    unsafe fn atomic_store(_: *mut Self, _: Self) {}
    unsafe fn atomic_swap(_: *mut Self, v: Self) -> Self {
        v
    }
    unsafe fn atomic_cas(_: *mut Self, _: Self, new: Self) -> Result<Self, Self> {
        Ok(new)
    }
    unsafe fn atomic_add(_: *mut Self, v: Self) -> Self {
        v
    }
    unsafe fn atomic_sub(_: *mut Self, v: Self) -> Self {
        v
    }
    unsafe fn atomic_and(_: *mut Self, v: Self) -> Self {
        v
    }
    unsafe fn atomic_or(_: *mut Self, v: Self) -> Self {
        v
    }
    unsafe fn atomic_xor(_: *mut Self, v: Self) -> Self {
        v
    }
}

fn main() {
    let _ = Pair { a: 1, b: 2 }.a;
    let _ = Pair { a: 1, b: 2 }.b;
}
