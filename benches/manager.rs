//! What a manager proxy costs, against the same counter in raw shared memory.
//!
//! Run: `cargo bench --bench manager`

use criterion::Criterion;
use multiproc::{Manager, RawValue};
use std::hint::black_box;

fn manager(c: &mut Criterion) {
    let manager = Manager::start().expect("manager starts");
    let d = manager.dict::<u32, u64>().expect("dict");
    d.insert(1, 0).expect("insert");
    let mut g = c.benchmark_group("manager");
    g.bench_function("dict_get", |b| {
        b.iter(|| black_box(d.get(black_box(&1)).unwrap()))
    });
    let mut n = 0u64;
    g.bench_function("dict_set", |b| {
        b.iter(|| {
            n += 1;
            d.insert(1, black_box(n)).unwrap()
        })
    });
    g.bench_function("dict_update_with", |b| {
        b.iter(|| d.update_with(1, 0, |v| v + 1).unwrap())
    });
    g.bench_function("create_object", |b| {
        b.iter(|| black_box(manager.list::<u32>().unwrap()))
    });
    g.finish();

    let raw = RawValue::new(0u64).expect("value");
    c.benchmark_group("value")
        .bench_function("raw_get", |b| b.iter(|| black_box(raw.get())));
    drop(d);
    manager.shutdown().expect("shutdown");
}

fn main() {
    multiproc::init();
    let mut c = Criterion::default().configure_from_args();
    manager(&mut c);
    c.final_summary();
}
