//! The platform layer is private: no safe way to take ownership of (and
//! later close) any descriptor number.

fn main() {
    let _ = multiproc::sys::fd::own_inherited(0);
}
