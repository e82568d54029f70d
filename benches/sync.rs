//! Process-shared synchronisation: uncontended lock and rlock, and round
//! trips between two processes (`lock/acquire_release`,
//! `rlock/acquire_release`, `event/ping_pong`, `barrier/wait_2`).

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group};
use multiproc::{Acquired, Barrier, Event, Lock, Process, RLock};

fn lock(c: &mut Criterion) {
    let lock = Lock::new().expect("lock");
    c.bench_function("lock/acquire_release", |b| {
        b.iter(|| {
            let acquired = lock.acquire().expect("acquire");
            debug_assert_eq!(acquired, Acquired::Clean);
            lock.release().expect("release");
        })
    });
    let rlock = RLock::new().expect("rlock");
    c.bench_function("rlock/acquire_release", |b| {
        b.iter(|| {
            let acquired = rlock.acquire().expect("acquire");
            debug_assert_eq!(acquired, Acquired::Clean);
            rlock.release().expect("release");
        })
    });
}

/// The other side of the ping-pong: answers every ping until told to stop.
fn pong((ping, pong, stop): (Event, Event, Event)) {
    loop {
        if ping.wait().is_err() {
            return;
        }
        ping.clear().unwrap();
        if stop.is_set().unwrap() {
            return;
        }
        pong.set().unwrap();
    }
}

/// The other party of the barrier: meets us until the barrier is aborted.
fn meet(barrier: Barrier) {
    while barrier.wait().is_ok() {}
}

fn across_processes(c: &mut Criterion) {
    let (ping, pong_ev, stop) = (
        Event::new().expect("event"),
        Event::new().expect("event"),
        Event::new().expect("event"),
    );
    let mut child = Process::new(pong, (ping.clone(), pong_ev.clone(), stop.clone()));
    child.start().expect("start");
    c.bench_function("event/ping_pong", |b| {
        b.iter(|| {
            ping.set().unwrap();
            pong_ev.wait().unwrap();
            pong_ev.clear().unwrap();
        })
    });
    stop.set().unwrap();
    ping.set().unwrap();
    child.join().expect("pong child");

    let barrier = Barrier::new(2).expect("barrier");
    let mut child = Process::new(meet, barrier.clone());
    child.start().expect("start");
    c.bench_function("barrier/wait_2", |b| {
        b.iter(|| barrier.wait().expect("barrier"))
    });
    barrier.abort().unwrap();
    child.join().expect("barrier child");
}

criterion_group!(benches, lock, across_processes);

fn main() {
    multiproc::init();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
