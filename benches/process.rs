//! Process start+join latency under spawn and fork (`process/spawn_join`, `process/fork_join`).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group};
use multiproc::{Process, StartMethod};

fn noop(_: ()) {}

fn start_join(c: &mut Criterion) {
    let mut group = c.benchmark_group("process");
    group.sample_size(20);
    for (name, method) in [
        ("spawn_join", StartMethod::Spawn),
        ("fork_join", StartMethod::Fork),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut p = Process::new(noop, ()).start_method(method);
                p.start().expect("start");
                p.join().expect("join");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, start_join);

fn main() {
    multiproc::init();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
