//! `#[derive(ShmSafe)]` refuses a struct with padding bytes: a lock-free
//! copy moves every byte, and a padding byte is no field's.

#[derive(Clone, Copy, multiproc::ShmSafe)]
#[repr(C)]
struct Padded {
    tag: u8,
    value: u64,
}

fn main() {
    let _ = multiproc::Value::new(Padded { tag: 1, value: 2 });
}
