//! A manager: ten processes write into one dict and one list that a server
//! process owns; the parent sees everything. Then atomic updates from four
//! processes, and a dict of list proxies shared by children. Last, a work
//! queue, a start event and a lock the server created, which the children
//! use directly in shared memory. And one function that runs unchanged
//! with a local `Manager`'s objects and a TCP `BaseManager`'s.
//!
//! Run: `cargo run --example manager`

use multiproc::{BaseManager, DictProxy, Event, ListProxy, Lock, Manager, Process, Queue, Value};

fn record(args: (u32, DictProxy<u32, String>, ListProxy<u32>)) {
    let (i, d, l) = args;
    let name = multiproc::current_process().name;
    d.insert(i, format!("{name} squared {i}: {}", i * i))
        .unwrap();
    l.push(i * i).unwrap();
}

fn count(d: DictProxy<String, u64>) {
    for _ in 0..1000 {
        d.update_with("hits".to_string(), 0, |n| n + 1).unwrap();
    }
}

fn add_to_team(args: (u32, DictProxy<String, ListProxy<u32>>)) {
    let (i, teams) = args;
    let team = if i % 2 == 0 { "even" } else { "odd" };
    let members = teams.get(&team.to_string()).unwrap().unwrap();
    members.push(i).unwrap();
}

/// One function for either manager: a local `Manager` and a TCP
/// `BaseManager` hand out the same `Queue`, `Event` and `Lock` types.
/// Waits for the start signal, then empties the queue under the lock.
fn take_all(args: (Queue<u64>, Event, Lock)) -> u64 {
    let (work, go, lock) = args;
    go.wait().unwrap();
    let _held = lock.lock().unwrap();
    let mut sum = 0;
    while let Ok(n) = work.try_get() {
        sum += n;
    }
    sum
}

/// Waits for the start signal, then sums the numbers it takes from the
/// queue (0 ends the work) into the shared total, under the lock.
fn sum_work(args: (Queue<u64>, Event, Lock, Value<u64>)) {
    let (work, go, lock, total) = args;
    go.wait().unwrap();
    loop {
        let n = work.get().unwrap();
        if n == 0 {
            return;
        }
        let _held = lock.lock().unwrap();
        total.set(total.get() + n);
    }
}

fn run<A: multiproc::Shareable>(
    f: fn(A),
    args: impl IntoIterator<Item = A>,
) -> multiproc::Result<()> {
    let mut ps: Vec<_> = args.into_iter().map(|a| Process::new(f, a)).collect();
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
    let manager = Manager::start()?;
    println!("manager server running as pid {}", manager.pid());

    let d = manager.dict::<u32, String>()?;
    let l = manager.list::<u32>()?;
    run(record, (0..10).map(|i| (i, d.clone(), l.clone())))?;
    let mut items = d.items()?;
    items.sort();
    println!("the dict has {} entries:", d.len()?);
    for (_, line) in &items {
        println!("  {line}");
    }
    let mut squares = l.to_vec()?;
    squares.sort();
    println!("the list holds {squares:?}");

    let hits = manager.dict::<String, u64>()?;
    run(count, (0..4).map(|_| hits.clone()))?;
    println!(
        "4 processes x 1,000 atomic increments: {}",
        hits.get(&"hits".to_string())?.unwrap_or(0)
    );

    let teams = manager.dict::<String, ListProxy<u32>>()?;
    for team in ["even", "odd"] {
        teams.insert(team.to_string(), manager.list()?)?;
    }
    run(add_to_team, (0..6).map(|i| (i, teams.clone())))?;
    for team in ["even", "odd"] {
        let mut members = teams.get(&team.to_string())?.unwrap().to_vec()?;
        members.sort();
        println!("nested list {team}: {members:?}");
    }

    let ns = manager.namespace()?;
    ns.set("status", "done".to_string())?;
    println!("namespace status = {}", ns.get::<String>("status")?);
    println!("objects in the server: {}", manager.number_of_objects()?);
    drop((d, l, hits, teams, ns));
    // The children's references go once the server sees them gone; ours at once.
    println!(
        "objects after the proxies were dropped: {}",
        manager.number_of_objects()?
    );

    let work = manager.queue::<u64>()?;
    let go = manager.event()?;
    let lock = manager.lock()?;
    let total = manager.value(0u64)?;
    let mut workers: Vec<_> = (0..3)
        .map(|_| {
            Process::new(
                sum_work,
                (work.clone(), go.clone(), lock.clone(), total.clone()),
            )
        })
        .collect();
    for w in &mut workers {
        w.start()?;
    }
    for n in 1..=100 {
        work.put(n)?;
    }
    for _ in &workers {
        work.put(0)?;
    }
    go.set()?;
    for w in &mut workers {
        w.join()?;
    }
    println!(
        "3 workers summed 1..=100 from a manager queue: {}",
        total.get()
    );

    let remote = BaseManager::new().authkey(b"example").start()?;
    let sources = [
        (
            "a local Manager",
            (manager.queue()?, manager.event()?, manager.lock()?),
        ),
        (
            "a TCP BaseManager",
            (remote.queue()?, remote.event()?, remote.lock()?),
        ),
    ];
    for (source, (work, go, lock)) in sources {
        for n in 1..=10 {
            work.put(n)?;
        }
        go.set()?;
        let mut p = Process::new(take_all, (work, go, lock));
        p.start()?;
        println!("one function, objects of {source}: took {}", p.join()?);
    }
    remote.shutdown()?;

    manager.shutdown()?;
    println!("manager shut down");
    Ok(())
}
