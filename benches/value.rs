//! Shared Value access: locked increment, atomic fetch_add, raw read
//! (`value/locked_increment`, `value/fetch_add`, `value/raw_read`).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group};
use multiproc::{RawValue, Value};

fn value(c: &mut Criterion) {
    let mut group = c.benchmark_group("value");
    let locked = Value::new(0u64).expect("value");
    group.bench_function("locked_increment", |b| {
        b.iter(|| *locked.lock().expect("lock") += 1)
    });
    let atomic = RawValue::new(0u64).expect("value");
    group.bench_function("fetch_add", |b| b.iter(|| atomic.fetch_add(1)));
    let raw = RawValue::new(7u64).expect("value");
    group.bench_function("raw_read", |b| b.iter(|| std::hint::black_box(raw.get())));
    group.finish();
}

criterion_group!(benches, value);

fn main() {
    multiproc::init();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
