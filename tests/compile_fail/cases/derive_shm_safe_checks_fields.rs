//! `#[derive(ShmSafe)]` refuses a field that is not `ShmSafe` (a `bool`:
//! another process may write a byte that is no `bool`).

#[derive(Clone, Copy, multiproc::ShmSafe)]
#[repr(C)]
struct Flagged {
    ready: bool,
    pad: [u8; 7],
    count: u64,
}

fn main() {}
