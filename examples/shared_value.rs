//! A shared counter with and without its lock, and an Array negated by a child.
//!
//! Run: `cargo run --example shared_value`

use multiproc::{Array, Process, RawValue, Value};

fn add_with_lock(counter: Value<u64>) {
    for _ in 0..10_000 {
        *counter.lock().unwrap() += 1;
    }
}

fn add_without_lock(counter: RawValue<u64>) {
    for _ in 0..10_000 {
        // Read and write separately, with no lock: updates get lost.
        let v = counter.get();
        counter.set(v + 1);
    }
}

fn add_atomically(counter: RawValue<u64>) {
    for _ in 0..10_000 {
        counter.fetch_add(1);
    }
}

fn negate(a: Array<i32>) {
    for x in a.lock().unwrap().iter_mut() {
        *x = -*x;
    }
}

fn run4<A: multiproc::Shareable + Clone>(f: fn(A), arg: &A) -> multiproc::Result<()> {
    let mut ps: Vec<_> = (0..4).map(|_| Process::new(f, arg.clone())).collect();
    for p in &mut ps {
        p.start()?;
    }
    for p in &mut ps {
        p.join()?;
    }
    Ok(())
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let locked = Value::new(0u64)?;
    run4(add_with_lock, &locked)?;
    println!(
        "4 processes x 10,000 increments under the lock: {}",
        locked.get()
    );

    let racy = RawValue::new(0u64)?;
    run4(add_without_lock, &racy)?;
    println!(
        "the same without a lock (lost updates expected): {}",
        racy.get()
    );

    let atomic = RawValue::new(0u64)?;
    run4(add_atomically, &atomic)?;
    println!("the same with fetch_add: {}", atomic.load());

    let a = Array::new(&[1, 2, 3, 4, 5])?;
    let mut p = Process::new(negate, a.clone());
    p.start()?;
    p.join()?;
    println!("array after a child negated it: {:?}", a.to_vec());
    Ok(())
}
