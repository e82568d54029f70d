//! Not through the runtime crate either.

fn main() {
    let _ = multiproc_runtime::sys::process::fork();
}
