//! What the proxy crate reaches through the hidden `__internal` path is
//! `unsafe` where it can break an invariant: `dup_onto` replaces whatever
//! another owner's descriptor number refers to.

use std::os::fd::AsFd;

fn main() {
    let null = std::fs::File::open("/dev/null").unwrap();
    let _ = multiproc::__internal::sys::fd::dup_onto(null.as_fd(), 0);
}
