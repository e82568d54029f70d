//! A RawArray's zero-copy views are `unsafe`: nothing stops another thread
//! or process from writing the elements meanwhile.

fn main() {
    let a = multiproc::RawArray::new(&[1u8, 2]).unwrap();
    a.as_mut_slice()[0] = 3;
}
