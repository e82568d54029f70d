//! Chaos for the pool and the manager: a pool worker is SIGKILLed at a
//! random instant of its tasks, a manager client at a random instant of its
//! requests, and the manager server itself while clients are calling it.
//! Every result that arrives is right and arrives once, a task whose worker
//! died fails with `WorkerDied` instead of hanging, the manager's counts are
//! exact up to the one request in flight, clients of a dead server get
//! `ManagerGone` promptly, a remote lock whose holder is killed goes to the
//! next acquirer with the death reported once, and nothing is left behind.
//!
//! `CHAOS_ITERATIONS` (default 3) runs of each scenario under each start
//! method; `CHAOS_SEED` replays a run (each iteration prints its seed).

mod util;

use std::time::{Duration, Instant};

use multiproc::{
    BaseManager, DictProxy, Error, ListProxy, Lock, Manager, Pool, Process, RawValue,
    RemoteManager, Shareable, StartMethod,
};
use util::PROMPTLY;
use util::chaos::{self, Rng, Snapshot};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];
const MAX_DELAY_US: u64 = 30_000;

fn start<A: Shareable, R: Shareable>(m: StartMethod, f: fn(A) -> R, arg: A) -> Process<R> {
    let mut p = Process::new(f, arg).start_method(m);
    p.start().expect("start");
    p
}

// ---------------------------------------------------------------- Pool

/// Counts its run, sleeps a little, returns the square.
fn task((x, runs, sleep_us): (u64, RawValue<u64>, u64)) -> u64 {
    runs.fetch_add(1);
    std::thread::sleep(Duration::from_micros(sleep_us));
    x * x
}

fn square(x: u64) -> u64 {
    x * x
}

fn pool_scenario(m: StartMethod, rng: &mut Rng) {
    const TASKS: u64 = 40;
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .build()
        .unwrap();
    let runs = RawValue::new(0u64).unwrap();
    let mut results: Vec<_> = (0..TASKS)
        .map(|x| {
            let arg = (x, runs.clone(), rng.below(2_000));
            pool.apply_async(task, arg).unwrap()
        })
        .collect();
    let workers = pool.worker_pids();
    assert!(util::eventually(PROMPTLY, || runs.load() > 0));
    std::thread::sleep(rng.delay(MAX_DELAY_US));
    let victim = workers[rng.below(workers.len() as u64) as usize];
    chaos::sigkill(victim);
    let (mut ok, mut died) = (0, 0);
    for (x, r) in results.iter_mut().enumerate() {
        match r.get_timeout(PROMPTLY) {
            Ok(v) => {
                assert_eq!(v, (x * x) as u64, "{m:?}: task {x}");
                ok += 1;
            }
            Err(Error::WorkerDied { .. }) => died += 1,
            Err(e) => panic!("{m:?}: task {x}: {e}"),
        }
    }
    assert_eq!(ok + died, TASKS);
    let ran = runs.load();
    assert!(
        ok <= ran && ran <= ok + died,
        "{m:?}: {ok} results, {died} failed, {ran} runs: a task ran twice"
    );
    // The pool notices the death and replaces the worker. (A chunk sent to
    // a worker that died before the pool noticed fails with `WorkerDied`
    // though it never ran: see RELIABILITY.md. So wait for the replacement
    // before asking for exact results.)
    assert!(
        util::eventually(PROMPTLY, || {
            let now = pool.worker_pids();
            now.len() == 2 && !now.contains(&victim)
        }),
        "{m:?}: the dead worker was not replaced"
    );
    let squares = pool.map(square, 0..50u64).unwrap();
    assert_eq!(squares, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
    pool.close();
    pool.join().unwrap();
}

// ---------------------------------------------------------------- Manager clients

/// Increments the counter for ever, storing how many increments returned;
/// holds `_held` (a reference only the clients have) until it dies.
fn increment_forever((d, done, _held): (DictProxy<String, u64>, RawValue<u64>, ListProxy<u8>)) {
    for i in 1u64.. {
        d.update_with("n".to_string(), 0, |n| n + 1).unwrap();
        done.store(i);
    }
}

fn manager_client_scenario(m: StartMethod, rng: &mut Rng) {
    let manager = Manager::start_with(m).unwrap();
    let d = manager.dict::<String, u64>().unwrap();
    let held = manager.list::<u8>().unwrap();
    let done = RawValue::new(0u64).unwrap();
    let other_done = RawValue::new(0u64).unwrap();
    let arg = |r: &RawValue<u64>| (d.clone(), r.clone(), held.clone());
    let mut victim = start(m, increment_forever, arg(&done));
    let mut other = start(m, increment_forever, arg(&other_done));
    // Both have decoded their proxies: a proxy sent to a process that dies
    // before decoding it keeps its object until the in-flight reference
    // expires (`PIN_TIMEOUT`, see RELIABILITY.md), which this does not test.
    assert!(util::eventually(PROMPTLY, || done.load() > 0 && other_done.load() > 0));
    drop(held);
    std::thread::sleep(rng.delay(MAX_DELAY_US));
    victim.kill().unwrap();
    assert!(victim.join_timeout(PROMPTLY).is_err());
    other.kill().unwrap();
    assert!(other.join_timeout(PROMPTLY).is_err());
    // Once the server has dropped the dead clients' connections (and with
    // them the list only they held), it has applied or discarded their
    // last requests: a request a client wrote before dying may still be
    // applied, after its death.
    assert!(
        util::eventually(PROMPTLY, || manager.number_of_objects().unwrap() == 1),
        "{m:?}: the dead clients' references were not dropped"
    );
    let n = d.get(&"n".to_string()).unwrap().unwrap_or(0);
    let (a, b) = (done.load(), other_done.load());
    assert!(
        (a + b..=a + b + 2).contains(&n),
        "{m:?}: counter {n}, increments that returned {a} + {b}"
    );
    // The server still serves.
    assert_eq!(d.update_with("n".to_string(), 0, |n| n + 1).unwrap(), n + 1);
    drop(d);
    assert!(util::eventually(PROMPTLY, || manager
        .number_of_objects()
        .unwrap()
        == 0));
    manager.shutdown().unwrap();
}

// ---------------------------------------------------------------- Manager server

/// Calls the server until a call fails; returns that error.
fn call_until_gone((d, calls): (DictProxy<String, u64>, RawValue<u64>)) -> String {
    loop {
        if let Err(e) = d.update_with("n".to_string(), 0, |n| n + 1) {
            return format!("{e:?}");
        }
        calls.fetch_add(1);
    }
}

fn manager_server_scenario(m: StartMethod, rng: &mut Rng) {
    let manager = Manager::start_with(m).unwrap();
    let d = manager.dict::<String, u64>().unwrap();
    let calls = RawValue::new(0u64).unwrap();
    let mut clients: Vec<_> = (0..2)
        .map(|_| start(m, call_until_gone, (d.clone(), calls.clone())))
        .collect();
    assert!(util::eventually(PROMPTLY, || calls.load() > 0));
    std::thread::sleep(rng.delay(MAX_DELAY_US));
    chaos::sigkill(manager.pid());
    let killed = Instant::now();
    for c in &mut clients {
        match c.join_timeout(PROMPTLY) {
            Ok(saw) => assert!(saw.starts_with("ManagerGone"), "{m:?}: {saw}"),
            // A spawned client that had not decoded its proxy yet fails to.
            Err(Error::Remote(msg)) if msg.contains("manager is gone") => {}
            Err(e) => panic!("{m:?}: a client did not see the server go: {e:?}"),
        }
    }
    assert!(matches!(
        d.get(&"n".to_string()),
        Err(Error::ManagerGone(_))
    ));
    assert!(killed.elapsed() < PROMPTLY, "{m:?}: slow to notice");
    drop(d);
    // Shutting down a dead manager reaps the server and reports no error.
    manager.shutdown().unwrap();
    util::assert_not_our_zombie(manager.pid());
}

// ---------------------------------------------------------------- Remote lock

const REMOTE_KEY: &[u8] = b"chaos-remote-key";
const SURVIVOR_ROUNDS: u64 = 60;

fn remote(address: &str) -> RemoteManager {
    BaseManager::new()
        .address(address)
        .authkey(REMOTE_KEY)
        .connect()
        .unwrap()
}

/// Bumps both halves of the pair under the remote lock, `rounds` times (or
/// for ever); counts the rounds done and returns how many acquisitions
/// reported a holder that died.
fn bump_pair((address, rounds, done): (String, u64, RawValue<u64>)) -> u64 {
    let m = remote(&address);
    let lock: Lock = m.get("lock").unwrap();
    let pair: DictProxy<String, u64> = m.get("pair").unwrap();
    let mut deaths = 0;
    for i in 1..=rounds {
        let guard = lock.lock().unwrap();
        deaths += u64::from(guard.owner_died().is_some());
        for half in ["a", "b"] {
            let v = pair.get(&half.to_string()).unwrap().unwrap_or(0);
            pair.insert(half.to_string(), v + 1).unwrap();
        }
        drop(guard);
        done.store(i);
    }
    deaths
}

fn remote_lock_scenario(m: StartMethod, rng: &mut Rng) {
    let master = BaseManager::new()
        .authkey(REMOTE_KEY)
        .register::<Lock>("lock")
        .register::<DictProxy<String, u64>>("pair")
        .start()
        .unwrap();
    let address = master.address().to_string();
    let (victim_done, survivor_done) = (RawValue::new(0u64).unwrap(), RawValue::new(0u64).unwrap());
    let mut victim = start(
        m,
        bump_pair,
        (address.clone(), u64::MAX, victim_done.clone()),
    );
    let mut survivor = start(
        m,
        bump_pair,
        (address, SURVIVOR_ROUNDS, survivor_done.clone()),
    );
    assert!(util::eventually(PROMPTLY, || victim_done.load() > 0));
    std::thread::sleep(rng.delay(MAX_DELAY_US));
    victim.kill().unwrap();
    assert!(victim.join_timeout(PROMPTLY).is_err());
    let mut deaths = survivor.join_timeout(PROMPTLY).unwrap();
    let lock: Lock = master.get("lock").unwrap();
    let acquired = lock.acquire_timeout(PROMPTLY).unwrap();
    deaths += u64::from(acquired.owner_died().is_some());
    let pair: DictProxy<String, u64> = master.get("pair").unwrap();
    let a = pair.get(&"a".to_string()).unwrap().unwrap_or(0);
    let b = pair.get(&"b".to_string()).unwrap().unwrap_or(0);
    lock.release().unwrap();
    assert!(deaths <= 1, "{m:?}: one death reported {deaths} times");
    assert!(
        a == b || deaths == 1,
        "{m:?}: the pair was torn ({a}, {b}) and nobody was told"
    );
    assert!(
        b >= victim_done.load() + SURVIVOR_ROUNDS,
        "{m:?}: rounds lost"
    );
    drop((lock, pair));
    master.shutdown().unwrap();
}

// ---------------------------------------------------------------- the run

#[test]
fn pool_and_manager_survive_random_kills_and_leave_nothing() {
    let base = chaos::base_seed();
    let n = chaos::iterations(3);
    let before = Snapshot::take();
    for m in METHODS {
        chaos::repeat(&format!("pool/{m:?}"), base, n, |rng, _| {
            pool_scenario(m, rng)
        });
        chaos::repeat(&format!("manager-client/{m:?}"), base, n, |rng, _| {
            manager_client_scenario(m, rng)
        });
        chaos::repeat(&format!("manager-server/{m:?}"), base, n, |rng, _| {
            manager_server_scenario(m, rng)
        });
        chaos::repeat(&format!("remote-lock/{m:?}"), base, n, |rng, _| {
            remote_lock_scenario(m, rng)
        });
    }
    before.assert_no_leaks(1);
}
