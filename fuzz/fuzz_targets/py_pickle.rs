//! The pickle reader of the Python listener: any input is a value or an
//! error, never a panic, a hang or an unbounded allocation; and what it
//! reads, the writer writes back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multiproc::py::pickle::{Limits, dumps, loads};

fuzz_target!(|input: &[u8]| {
    // Small limits, so that the fuzzer reaches them often.
    let limits = Limits {
        max_depth: 64,
        max_memo: 1024,
        max_size: 1 << 20,
    };
    for limits in [limits, Limits::default()] {
        if let Ok(value) = loads(input, &limits) {
            if let Ok(again) = dumps(&value) {
                let back = loads(&again, &Limits::default()).expect("our own pickle reads back");
                // NaN is not equal to itself; compare the pickles instead.
                assert_eq!(dumps(&back).ok(), Some(again));
            }
        }
    }
});
