//! A Rust peer side by side: servo's ipc-channel against our Pipe and Queue
//! (`peer/ipc_channel_round_trip` vs `pipe/round_trip`,
//! `peer/ipc_channel_throughput_8b` vs `queue/throughput_8b`).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use multiproc::{Connection, Pipe, Process, Queue, StartMethod};

/// The child side of the ipc-channel bench: connects back, then echoes or streams.
fn ipc_peer(server_name: String) {
    let (to_child, from_parent) = ipc::channel::<u64>().expect("channel");
    let (to_parent, from_child) = ipc::channel::<u64>().expect("channel");
    let boot =
        IpcSender::<(IpcSender<u64>, IpcReceiver<u64>)>::connect(server_name).expect("connect");
    boot.send((to_child, from_child)).expect("send");
    // Order 0: echo until 0; order n > 0: stream n messages.
    while let Ok(order) = from_parent.recv() {
        match order {
            0 => return,
            u64::MAX => loop {
                match from_parent.recv() {
                    Ok(0) | Err(_) => return,
                    Ok(x) => to_parent.send(x).expect("echo"),
                }
            },
            n => {
                for i in 0..n {
                    to_parent.send(i).expect("stream");
                }
            }
        }
    }
}

fn ipc_channel(c: &mut Criterion) {
    let (server, name) =
        IpcOneShotServer::<(IpcSender<u64>, IpcReceiver<u64>)>::new().expect("server");
    let mut child = Process::new(ipc_peer, name).start_method(StartMethod::Fork);
    child.start().expect("start");
    let (_, (to_child, from_child)) = server.accept().expect("accept");
    let mut g = c.benchmark_group("peer");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ipc_channel_throughput_8b", |b| {
        b.iter_custom(|iters| {
            to_child.send(iters).expect("order");
            let start = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(from_child.recv().expect("recv"));
            }
            start.elapsed()
        })
    });
    to_child.send(u64::MAX).expect("order");
    g.bench_function("ipc_channel_round_trip", |b| {
        b.iter(|| {
            to_child.send(1).expect("send");
            from_child.recv().expect("recv")
        })
    });
    g.finish();
    to_child.send(0).expect("stop");
    child.join_timeout(Duration::from_secs(30)).expect("join");
}

fn echo(conn: Connection<u64>) {
    while let Ok(x) = conn.recv() {
        if conn.send(x).is_err() {
            return;
        }
    }
}

fn stream((orders, out): (Queue<u64>, Queue<u64>)) {
    while let Ok(n) = orders.get() {
        if n == 0 {
            return;
        }
        for i in 0..n {
            if out.put(i).is_err() {
                return;
            }
        }
    }
}

fn ours(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipe");
    let (here, there) = Pipe::new::<u64>().expect("pipe");
    let mut p = Process::new(echo, there).start_method(StartMethod::Fork);
    p.start().expect("start");
    g.bench_function("round_trip", |b| {
        b.iter(|| {
            here.send(1).expect("send");
            here.recv().expect("recv")
        })
    });
    g.finish();
    here.close();
    p.join_timeout(Duration::from_secs(30)).expect("join");

    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(1));
    let (orders, out) = (
        Queue::<u64>::new().expect("q"),
        Queue::<u64>::new().expect("q"),
    );
    let mut p = Process::new(stream, (orders.clone(), out.clone())).start_method(StartMethod::Fork);
    p.start().expect("start");
    g.bench_function("throughput_8b", |b| {
        b.iter_custom(|iters| {
            orders.put(iters).expect("order");
            let start = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(out.get().expect("get"));
            }
            start.elapsed()
        })
    });
    g.finish();
    orders.put(0).expect("stop");
    p.join_timeout(Duration::from_secs(30)).expect("join");
}

criterion_group!(benches, ipc_channel, ours);

fn main() {
    multiproc::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
