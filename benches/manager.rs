//! What a manager costs: proxy calls into the server, and the objects it
//! creates in shared segments that a local process uses directly; a counter
//! through a proxy against the same counter in raw shared memory.
//!
//! Run: `cargo bench --bench manager` (the keys match `multiproc bench`'s).

use criterion::Criterion;
use multiproc::{Manager, RawValue};
use std::hint::black_box;

fn manager(c: &mut Criterion) {
    let manager = Manager::start().expect("manager starts");
    let d = manager.dict::<u32, u64>().expect("dict");
    d.insert(1, 0).expect("insert");
    let lock = manager.lock().expect("lock");
    let q = manager.queue::<u64>().expect("queue");
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
    g.bench_function("lock", |b| b.iter(|| drop(lock.lock().unwrap())));
    g.bench_function("queue_put_get", |b| {
        b.iter(|| {
            q.put(black_box(1u64)).unwrap();
            black_box(q.get().unwrap())
        })
    });
    g.bench_function("create_object", |b| {
        b.iter(|| black_box(manager.list::<u32>().unwrap()))
    });
    g.finish();

    let counter = manager.dict::<u32, u64>().expect("dict");
    counter.insert(0, 0).expect("insert");
    let raw = RawValue::new(0u64).expect("value");
    let mut g = c.benchmark_group("proxy_vs_raw");
    g.bench_function("counter_proxy", |b| {
        b.iter(|| counter.update_with(0, 0, |v| v + 1).unwrap())
    });
    g.bench_function("counter_raw", |b| b.iter(|| raw.set(raw.get() + 1)));
    g.finish();

    c.benchmark_group("value")
        .bench_function("raw_get", |b| b.iter(|| black_box(raw.get())));
    drop((d, counter));
    manager.shutdown().expect("shutdown");
}

fn main() {
    multiproc::init();
    let mut c = Criterion::default().configure_from_args();
    manager(&mut c);
    c.final_summary();
}
