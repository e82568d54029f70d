//! The frame decoder: arbitrary bytes, delivered in arbitrary pieces, under
//! an arbitrary frame limit. It must not panic or allocate past its bound,
//! and every frame it returns must fit the limit.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use multiproc::wire::FrameReader;

/// Hands out `data` in pieces whose sizes come from `sizes`.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    next: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self
            .sizes
            .get(self.next % self.sizes.len().max(1))
            .copied()
            .unwrap_or(7);
        self.next += 1;
        let n = (size as usize + 1).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|input: (u16, Vec<u8>, Vec<u8>)| {
    let (max, sizes, data) = input;
    let mut r = FrameReader::new(max as usize);
    let mut s = Pieces {
        data: &data,
        sizes: &sizes,
        next: 0,
    };
    for _ in 0..data.len() + 2 {
        match r.read_frame(&mut s) {
            Ok(frame) => assert!(frame.len() <= max as usize),
            Err(_) => break,
        }
        assert!(r.capacity() <= r.capacity_bound());
    }
    assert!(r.capacity() <= r.capacity_bound());
});
