//! Pool throughput: trivial tasks with chunksize 1 and the default, and 1 ms CPU tasks
//! (`pool/map_chunksize_1_batched`, `pool/map_default`, `pool/cpu_1ms`).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use multiproc::{Pool, StartMethod};

fn square(x: u64) -> u64 {
    x * x
}

fn cpu_1ms(seed: u64) -> u64 {
    let start = Instant::now();
    let mut x = seed;
    while start.elapsed() < Duration::from_millis(1) {
        for _ in 0..1000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
    }
    x
}

fn pool(c: &mut Criterion) {
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Fork)
        .build()
        .expect("pool");
    let mut group = c.benchmark_group("pool");
    group.sample_size(10);
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("map_chunksize_1_batched", |b| {
        b.iter(|| pool.chunksize(1).map(square, 0..10_000u64).expect("map"))
    });
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("map_default", |b| {
        b.iter(|| pool.map(square, 0..100_000u64).expect("map"))
    });
    group.throughput(Throughput::Elements(40));
    group.bench_function("cpu_1ms", |b| {
        b.iter(|| pool.chunksize(1).map(cpu_1ms, 0..40u64).expect("map"))
    });
    group.finish();
}

criterion_group!(benches, pool);

fn main() {
    multiproc::init();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
