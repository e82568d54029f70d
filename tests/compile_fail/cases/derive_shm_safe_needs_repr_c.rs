//! `#[derive(ShmSafe)]` needs `#[repr(C)]`, refuses a packed struct and an
//! enum.

#[derive(Clone, Copy, multiproc::ShmSafe)]
struct NoRepr {
    x: f64,
}

#[derive(Clone, Copy, multiproc::ShmSafe)]
#[repr(C, packed)]
struct Packed {
    x: u8,
    y: u32,
}

#[derive(Clone, Copy, multiproc::ShmSafe)]
#[repr(C)]
enum State {
    Idle,
    Busy,
}

fn main() {}
