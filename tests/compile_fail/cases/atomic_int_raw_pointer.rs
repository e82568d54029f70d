//! `AtomicInt`'s functions take raw pointers: calling one needs `unsafe`.

use multiproc::AtomicInt;

fn main() {
    let _ = <u64 as AtomicInt>::atomic_load(std::ptr::null_mut());
}
