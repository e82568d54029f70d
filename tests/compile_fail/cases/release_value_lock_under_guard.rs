//! A Value's lock has no safe `release`: releasing it while the value's
//! guard lives would let a second guard reach the same data.

fn main() {
    let v = multiproc::Value::new(0u64).unwrap();
    let first = v.lock().unwrap();
    v.get_lock().release().unwrap();
    let second = v.lock().unwrap();
    drop((first, second));
}
