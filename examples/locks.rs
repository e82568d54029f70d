//! Process-shared synchronisation: Lock, RLock, Semaphore, Event, Barrier.
//!
//! Run: `cargo run --example locks`

use std::time::Duration;

use multiproc::{Barrier, Event, Lock, Process, RLock, RawValue, Semaphore};

/// Python's classic: each process prints while it holds the lock, so lines never interleave.
fn greet((lock, i): (Lock, u32)) {
    let _held = lock.lock().unwrap();
    println!("hello world {i}");
}

/// Takes the RLock, then calls a helper that takes it again.
fn outer(lock: &RLock) -> multiproc::Result<u32> {
    let _held = lock.lock()?;
    inner(lock)
}

fn inner(lock: &RLock) -> multiproc::Result<u32> {
    let _held = lock.lock()?;
    lock.recursion_count()
}

/// Works while holding one of the semaphore's units; reports how many were busy at once.
fn limited_work((slots, busy, most): (Semaphore, RawValue<u32>, RawValue<u32>)) {
    slots.acquire().unwrap();
    let now = busy.fetch_add(1) + 1;
    let mut seen = most.load();
    while now > seen {
        match most.compare_exchange(seen, now) {
            Ok(_) => break,
            Err(actual) => seen = actual,
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    busy.fetch_sub(1);
    slots.release().unwrap();
}

fn wait_for_go(go: Event) {
    go.wait().unwrap();
    println!("child saw the event");
}

fn announce_round() {
    println!("barrier action: everyone has arrived");
}

fn meet(barrier: Barrier) -> usize {
    barrier.wait().unwrap()
}

fn main() -> multiproc::Result<()> {
    multiproc::init();

    // Lock: four processes print one at a time.
    let lock = Lock::new()?;
    let mut greeters: Vec<_> = (0..4)
        .map(|i| Process::new(greet, (lock.clone(), i)))
        .collect();
    for p in &mut greeters {
        p.start()?;
    }
    for p in &mut greeters {
        p.join()?;
    }

    // RLock: the holder may take it again.
    let rlock = RLock::new()?;
    println!("rlock held {} deep by one thread", outer(&rlock)?);
    println!("rlock free again: {}", !rlock.is_locked()?);

    // Semaphore: five workers, at most two at a time.
    let slots = Semaphore::new(2)?;
    let (busy, most) = (RawValue::new(0u32)?, RawValue::new(0u32)?);
    let mut workers: Vec<_> = (0..5)
        .map(|_| Process::new(limited_work, (slots.clone(), busy.clone(), most.clone())))
        .collect();
    for p in &mut workers {
        p.start()?;
    }
    for p in &mut workers {
        p.join()?;
    }
    println!(
        "at most {} of 5 workers ran at once (never more than 2: {})",
        most.load(),
        most.load() <= 2
    );

    // Event: a child waits until we set it.
    let go = Event::new()?;
    let mut child = Process::new(wait_for_go, go.clone());
    child.start()?;
    go.set()?;
    child.join()?;

    // Barrier: three processes meet; the last to arrive runs the action.
    let barrier = Barrier::with_action(3, announce_round)?;
    let mut parties: Vec<_> = (0..2)
        .map(|_| Process::new(meet, barrier.clone()))
        .collect();
    for p in &mut parties {
        p.start()?;
    }
    let mut indexes = vec![meet(barrier.clone())];
    for p in &mut parties {
        indexes.push(p.join()?);
    }
    indexes.sort();
    println!("barrier arrival indexes: {indexes:?}");
    Ok(())
}
