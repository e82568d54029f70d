//! The platform layer is private: no safe `fork` for the user.

fn main() {
    let _ = multiproc::sys::process::fork();
}
