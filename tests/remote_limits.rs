//! A remote manager's limits: messages over the frame limit, per-connection
//! quotas, reconnecting after the server was restarted, and the small
//! remote calls that must err like their local twins. Each refusal is one
//! call's typed error: the connection and the objects it holds live on.

mod util;

use std::process::{Child, Command};
use std::time::Duration;

use multiproc::connection::{Address, SocketConnection};
use multiproc::manager::protocol::{
    ArchivedResponse, ObjectKind, Request, access_response, encode_request, remote_error,
};
use multiproc::rkyv::util::AlignedVec;
use multiproc::{
    BaseManager, DictProxy, Error, ListProxy, Lock, Process, Queue, Quota, RemoteManager,
    StartMethod,
};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const KEY: &[u8] = b"remote-limits-key";
const MIB: usize = 1 << 20;

fn config() -> BaseManager {
    BaseManager::new()
        .address("127.0.0.1:0")
        .authkey(KEY)
        .register::<DictProxy<u32, Vec<u8>>>("blobs")
        .register::<ListProxy<Vec<u8>>>("stack")
        .register::<Queue<Vec<u8>>>("jobs")
}

fn connect(address: &str) -> RemoteManager {
    BaseManager::new()
        .address(address)
        .authkey(KEY)
        .connect()
        .expect("connects")
}

/// A held lock and how many objects the server has: what an oversized
/// message used to destroy.
fn hold_a_lock(m: &RemoteManager) -> Lock {
    let lock = m.lock().unwrap();
    assert!(lock.try_acquire().is_ok());
    lock
}

#[test]
fn an_oversized_response_fails_that_call_and_the_callers_objects_live_on() {
    let master = config().start().unwrap();
    let blobs: DictProxy<u32, Vec<u8>> = master.get("blobs").unwrap();
    blobs.insert(1, vec![1; 40 * MIB]).unwrap();
    blobs.insert(2, vec![2; 40 * MIB]).unwrap();
    let lock = hold_a_lock(&master);
    let scratch = master.list::<u32>().unwrap();
    scratch.extend([1, 2, 3]).unwrap();
    let before = master.number_of_objects().unwrap();

    // 80 MiB of values do not fit the 64 MiB a client accepts by default.
    let too_large = |r: Result<usize, Error>| match r {
        Err(Error::MessageTooLarge { size, limit }) => {
            assert_eq!(limit, 64 * MIB);
            assert!(size > 80 * MIB, "{size}");
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    };
    too_large(blobs.items().map(|v| v.len()));
    too_large(blobs.values().map(|v| v.len()));
    // Everything this process held is still there, the lock still held.
    assert_eq!(master.number_of_objects().unwrap(), before);
    assert!(lock.is_locked().unwrap());
    assert_eq!(scratch.to_vec().unwrap(), vec![1, 2, 3]);
    let mut keys = blobs.keys().unwrap();
    keys.sort();
    assert_eq!(keys, vec![1, 2]);
    assert_eq!(
        blobs.get(&2).unwrap().map(|v| (v.len(), v[0])),
        Some((40 * MIB, 2))
    );
    lock.release().unwrap();
    master.shutdown().unwrap();
}

#[test]
fn an_oversized_request_fails_before_it_is_sent_and_the_connection_lives_on() {
    let master = config().max_frame(MIB).start().unwrap();
    let blobs: DictProxy<u32, Vec<u8>> = master.get("blobs").unwrap();
    let lock = hold_a_lock(&master);
    let before = master.number_of_objects().unwrap();
    match blobs.insert(1, vec![0; 2 * MIB]) {
        Err(Error::MessageTooLarge { size, limit }) => {
            assert_eq!(limit, MIB);
            assert!(size > 2 * MIB, "{size}");
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert_eq!(master.number_of_objects().unwrap(), before);
    assert!(lock.is_locked().unwrap());
    assert_eq!(blobs.len().unwrap(), 0);
    blobs.insert(1, vec![0; MIB / 2]).unwrap();
    assert_eq!(blobs.get(&1).unwrap().map(|v| v.len()), Some(MIB / 2));
    // A new connect() finds the same connection in working order.
    let again = connect(&master.address().to_string());
    assert_eq!(again.number_of_objects().unwrap(), before);
    lock.release().unwrap();
    master.shutdown().unwrap();
}

/// Connects as a client that accepts responses of at most 1 MiB and tries
/// to take a value larger than that; returns what each attempt said.
fn small_taker(address: String) -> Vec<String> {
    let m = BaseManager::new()
        .address(address)
        .authkey(KEY)
        .max_frame(MIB)
        .connect()
        .unwrap();
    let stack: ListProxy<Vec<u8>> = m.get("stack").unwrap();
    let jobs: Queue<Vec<u8>> = m.get("jobs").unwrap();
    let blobs: DictProxy<u32, Vec<u8>> = m.get("blobs").unwrap();
    let describe = |r: Result<usize, Error>| match r {
        Err(Error::MessageTooLarge { limit, .. }) => format!("too large for {limit}"),
        other => format!("{other:?}"),
    };
    vec![
        describe(stack.pop().map(|v| v.map_or(0, |v| v.len()))),
        describe(stack.get(0).map(|v| v.len())),
        describe(jobs.try_get().map(|v| v.len())),
        describe(jobs.get_timeout(PROMPTLY).map(|v| v.len())),
        describe(blobs.remove(&7).map(|v| v.map_or(0, |v| v.len()))),
        // The connection is fine: small answers still come.
        describe(stack.len()),
    ]
}

#[test]
fn a_value_too_large_for_the_taker_is_not_taken() {
    let master = config().start().unwrap();
    let stack: ListProxy<Vec<u8>> = master.get("stack").unwrap();
    let jobs: Queue<Vec<u8>> = master.get("jobs").unwrap();
    let blobs: DictProxy<u32, Vec<u8>> = master.get("blobs").unwrap();
    stack.push(vec![5; 2 * MIB]).unwrap();
    jobs.put(vec![6; 2 * MIB]).unwrap();
    blobs.insert(7, vec![7; 2 * MIB]).unwrap();
    let mut p =
        Process::new(small_taker, master.address().to_string()).start_method(StartMethod::Spawn);
    p.start().unwrap();
    let said = p.join_timeout(PROMPTLY * 3).unwrap();
    let refused = format!("too large for {MIB}");
    assert_eq!(
        said[..5],
        [
            refused.clone(),
            refused.clone(),
            refused.clone(),
            refused.clone(),
            refused
        ]
    );
    assert_eq!(said[5], "Ok(1)");
    // Nothing was lost: each value is still where it was.
    assert_eq!(
        stack.pop().unwrap().map(|v| (v.len(), v[0])),
        Some((2 * MIB, 5))
    );
    assert_eq!(jobs.qsize().unwrap(), 1);
    assert_eq!(jobs.try_get().unwrap().len(), 2 * MIB);
    assert_eq!(blobs.remove(&7).unwrap().map(|v| v.len()), Some(2 * MIB));
    master.shutdown().unwrap();
}

/// A raw connection to a TCP manager: handshake, then the hello, saying it
/// accepts messages of up to `accepts` bytes; returns it and the server's
/// largest message.
fn raw_client(address: std::net::SocketAddr, accepts: u64) -> (SocketConnection<()>, u64) {
    let mut conn =
        SocketConnection::<()>::connect_timeout(&Address::Tcp(address), Some(KEY), PROMPTLY)
            .unwrap();
    let mut hello = b"MPMT".to_vec();
    hello.extend_from_slice(&multiproc::manager::remote::TCP_PROTOCOL_VERSION.to_le_bytes());
    hello.extend_from_slice(&accepts.to_le_bytes());
    conn.send_bytes(&hello).unwrap();
    let theirs = conn.recv_bytes_timeout(PROMPTLY).unwrap();
    assert_eq!(theirs[..8], hello[..8]);
    let server_max = u64::from_le_bytes(theirs[8..16].try_into().unwrap());
    conn.set_max_message(1 << 30);
    (conn, server_max)
}

fn ask(conn: &mut SocketConnection<()>, req: &Request<'_>) -> AlignedVec {
    conn.send_bytes(&encode_request(req, AlignedVec::new()).unwrap())
        .unwrap();
    let mut out = AlignedVec::new();
    out.extend_from_slice(&conn.recv_bytes_timeout(PROMPTLY).unwrap());
    out
}

fn objects(conn: &mut SocketConnection<()>) -> u64 {
    match access_response(&ask(conn, &Request::NumberOfObjects)).unwrap() {
        ArchivedResponse::Len(n) => n.to_native(),
        _ => panic!("not a length"),
    }
}

#[test]
fn a_raw_request_over_the_frame_limit_is_thrown_away_and_refused_alone() {
    let master = config().max_frame(MIB).start().unwrap();
    let (mut raw, server_max) = raw_client(master.address(), 64 << 20);
    assert_eq!(server_max, MIB as u64);
    // The raw client's own object: a lock it holds.
    let created = ask(
        &mut raw,
        &Request::Create {
            kind: ObjectKind::Lock,
            fingerprint: 0,
            type_name: "raw lock",
            arg: 0,
        },
    );
    assert!(matches!(
        access_response(&created).unwrap(),
        ArchivedResponse::Created(_)
    ));
    let before = objects(&mut raw);
    for size in [MIB + 1, 3 * MIB] {
        raw.send_bytes(&vec![0xAB; size]).unwrap();
        let mut answer = AlignedVec::<16>::new();
        answer.extend_from_slice(&raw.recv_bytes_timeout(PROMPTLY).unwrap());
        match access_response(&answer).unwrap() {
            ArchivedResponse::Error(e) => match remote_error(e) {
                Error::MessageTooLarge { size: s, limit } => {
                    assert_eq!((s, limit), (size, MIB));
                }
                other => panic!("expected MessageTooLarge, got {other:?}"),
            },
            _ => panic!("expected an error response"),
        }
        // Still in step, and the raw client's object is still there.
        assert_eq!(objects(&mut raw), before);
    }
    master.shutdown().unwrap();
}

#[test]
fn quotas_are_typed_errors_and_leave_the_connection_usable() {
    let master = config().max_objects(3).max_bytes(1000).start().unwrap();
    let address = master.address().to_string();
    let before = master.number_of_objects().unwrap();
    // Named objects are the server's own: never charged. Three of ours are allowed.
    let mut mine = (0..3)
        .map(|_| master.list::<Vec<u8>>().unwrap())
        .collect::<Vec<_>>();
    match master.dict::<u32, u32>() {
        Err(Error::QuotaExceeded { what, limit }) => {
            assert_eq!((what, limit), (Quota::Objects, 3));
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert_eq!(master.number_of_objects().unwrap(), before + 3);
    // Freeing one makes room for one.
    drop(mine.pop());
    assert!(eventually(PROMPTLY, || master.number_of_objects().unwrap()
        == before + 2));
    mine.push(master.list::<Vec<u8>>().unwrap());

    // Bytes: what this connection stored and is still stored.
    let list = &mine[0];
    list.push(vec![0; 600]).unwrap();
    match list.push(vec![0; 600]) {
        Err(Error::QuotaExceeded { what, limit }) => {
            assert_eq!((what, limit), (Quota::Bytes, 1000));
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert_eq!(list.len().unwrap(), 1, "a refused store stores nothing");
    // Overwriting a value of this connection's is charged the difference only.
    list.set(0, vec![1; 900]).unwrap();
    assert_eq!(list.pop().unwrap().map(|v| v.len()), Some(900));
    list.push(vec![0; 900]).unwrap();
    // What one connection stored is not another's: a second process has its own quota.
    let other = Process::new(
        |address: String| {
            let m = connect(&address);
            let blobs: DictProxy<u32, Vec<u8>> = m.get("blobs").unwrap();
            blobs.insert(1, vec![0; 900]).map_err(|e| e.to_string())
        },
        address,
    )
    .start_method(StartMethod::Spawn);
    let mut other = other;
    other.start().unwrap();
    assert_eq!(other.join_timeout(PROMPTLY * 3).unwrap(), Ok(()));
    drop(mine);
    master.shutdown().unwrap();
}

#[test]
fn a_remote_semaphore_is_not_released_past_its_maximum() {
    let master = config().start().unwrap();
    let s = master.semaphore(u32::MAX - 1).unwrap();
    s.release().unwrap();
    assert_eq!(s.get_value().unwrap(), u32::MAX);
    assert!(matches!(s.release(), Err(Error::InvalidState(_))));
    assert_eq!(s.get_value().unwrap(), u32::MAX);
    let b = master.bounded_semaphore(1).unwrap();
    assert!(matches!(b.release(), Err(Error::InvalidState(_))));
    // As a local semaphore says.
    let local = multiproc::Semaphore::new(u32::MAX).unwrap();
    assert!(matches!(local.release(), Err(Error::InvalidState(_))));
    master.shutdown().unwrap();
}

/// `multiproc serve` on `address` with extra options; returns it and the
/// address it printed.
fn serve(key: &std::path::Path, address: &str, extra: &[&str]) -> (Child, String) {
    util::start_serve(key, address, extra)
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child, whose pid we hold.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().unwrap().success());
}

fn key_file(tag: &str) -> std::path::PathBuf {
    util::serve_key_file(&format!("limits-{tag}"), KEY)
}

#[test]
fn connect_after_a_server_restart_on_the_same_port_makes_a_new_connection() {
    let key = key_file("restart");
    let (first, address) = serve(&key, "127.0.0.1:0", &[]);
    let m = connect(&address);
    let old = m.dict::<u32, u32>().unwrap();
    old.insert(1, 1).unwrap();
    stop(first);
    let (second, again) = serve(&key, &address, &[]);
    assert_eq!(again, address);
    // A new connect() reaches the new server (nothing had noticed the break
    // yet), and its proxies work.
    let fresh = connect(&address);
    let base = fresh.number_of_objects().unwrap();
    let d = fresh.dict::<u32, u32>().unwrap();
    d.insert(2, 2).unwrap();
    assert_eq!(d.get(&2).unwrap(), Some(2));
    assert_eq!(fresh.number_of_objects().unwrap(), base + 1);
    // The old proxy says the connection broke.
    match old.len() {
        Err(Error::ManagerGone(why)) => assert!(why.contains("broke"), "{why}"),
        other => panic!("expected ManagerGone, got {other:?}"),
    }
    // The old manager handle's new calls use the new connection too; its
    // old proxy stays broken (its object went with the old server).
    assert_eq!(m.number_of_objects().unwrap(), base + 1);
    assert!(matches!(old.len(), Err(Error::ManagerGone(_))));
    // Dropping it releases nothing on the new connection (whose dict may
    // well have the same id).
    drop(old);
    assert_eq!(d.len().unwrap(), 1);
    assert_eq!(fresh.number_of_objects().unwrap(), base + 1);
    stop(second);
    std::fs::remove_file(&key).unwrap();
}

#[test]
fn serve_takes_object_and_byte_quotas() {
    let key = key_file("quotas");
    let (child, address) = serve(
        &key,
        "127.0.0.1:0",
        &["--max-objects", "2", "--max-bytes", "100"],
    );
    let m = connect(&address);
    let a = m.list::<Vec<u8>>().unwrap();
    let _b = m.list::<Vec<u8>>().unwrap();
    assert!(matches!(
        m.list::<u8>(),
        Err(Error::QuotaExceeded {
            what: Quota::Objects,
            limit: 2
        })
    ));
    assert!(matches!(
        a.push(vec![0; 200]),
        Err(Error::QuotaExceeded {
            what: Quota::Bytes,
            limit: 100
        })
    ));
    a.push(vec![0; 50]).unwrap();
    assert_eq!(a.len().unwrap(), 1);
    stop(child);
    let bad = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["serve", "--max-objects", "none"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    std::fs::remove_file(&key).unwrap();
    let _ = Duration::ZERO;
}
