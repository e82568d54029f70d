//! An Array's lock has no safe `release` either.

fn main() {
    let a = multiproc::Array::new(&[1u8, 2]).unwrap();
    let first = a.lock().unwrap();
    a.get_lock().release().unwrap();
    let second = a.lock().unwrap();
    drop((first, second));
}
