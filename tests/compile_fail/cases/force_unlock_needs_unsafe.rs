//! The way out of a leaked guard is `unsafe`, as parking_lot's `force_unlock`.

fn main() {
    let v = multiproc::Value::new(0u64).unwrap();
    std::mem::forget(v.lock().unwrap());
    v.get_lock().force_unlock().unwrap();
}
