//! A Condition releases its lock in `release` and `wait`, both safe: it
//! cannot take a Value's lock, which guards data.

fn main() {
    let v = multiproc::Value::new(0u64).unwrap();
    let _cond = multiproc::Condition::with_lock(v.get_lock()).unwrap();
}
