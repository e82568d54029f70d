//! A peer may write any byte into shared memory, and not every byte is a
//! `bool` (nor every 32-bit word a `char`): neither may live in a segment.

fn main() {
    let _ = multiproc::RawValue::new(true);
    let _ = multiproc::Value::new('x');
}
