//! Queue and pipe throughput and latency between two processes.
//!
//! Run: `cargo bench --bench queue`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use multiproc::{Connection, Pipe, Process, Queue};

/// Puts `n` copies of a message for every `n` that arrives on `orders`; stops on 0.
fn produce_u64(args: (Queue<u64>, Queue<u64>)) {
    let (orders, out) = args;
    while let Ok(n) = orders.get() {
        if n == 0 {
            break;
        }
        for i in 0..n {
            out.put(i).unwrap();
        }
    }
}

fn produce_mib(args: (Queue<u64>, Queue<Vec<u8>>)) {
    let (orders, out) = args;
    let msg = vec![7u8; 1 << 20];
    while let Ok(n) = orders.get() {
        if n == 0 {
            break;
        }
        for _ in 0..n {
            out.put(&msg).unwrap();
        }
    }
}

fn echo(conn: Connection<u64>) {
    while let Ok(x) = conn.recv() {
        if conn.send(x).is_err() {
            break;
        }
    }
}

fn throughput_8b(c: &mut Criterion) {
    let orders = Queue::<u64>::new().unwrap();
    let out = Queue::<u64>::new().unwrap();
    let mut p = Process::new(produce_u64, (orders.clone(), out.clone()));
    p.start().unwrap();
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(1));
    g.bench_function("throughput_8b", |b| {
        b.iter_custom(|iters| {
            orders.put(iters).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(out.get().unwrap());
            }
            start.elapsed()
        })
    });
    g.finish();
    orders.put(0).unwrap();
    p.join().unwrap();
}

fn throughput_1mib(c: &mut Criterion) {
    let orders = Queue::<u64>::new().unwrap();
    let out = Queue::<Vec<u8>>::new().unwrap();
    let mut p = Process::new(produce_mib, (orders.clone(), out.clone()));
    p.start().unwrap();
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("throughput_1mib", |b| {
        b.iter_custom(|iters| {
            orders.put(iters).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(out.get().unwrap());
            }
            start.elapsed()
        })
    });
    g.finish();
    orders.put(0).unwrap();
    p.join().unwrap();
}

fn round_trip(c: &mut Criterion) {
    let (here, there) = Pipe::new::<u64>().unwrap();
    let mut p = Process::new(echo, there);
    p.start().unwrap();
    here.send(0).unwrap();
    here.recv().unwrap();
    let mut g = c.benchmark_group("pipe");
    g.bench_function("round_trip", |b| {
        b.iter(|| {
            here.send(1).unwrap();
            here.recv().unwrap()
        })
    });
    g.finish();
    here.close();
    p.join().unwrap();
}

fn main() {
    multiproc::init();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    throughput_8b(&mut c);
    throughput_1mib(&mut c);
    round_trip(&mut c);
    c.final_summary();
}
