//! Handles stored in a local manager's containers (a `Queue`, a `Lock`, a
//! `Value` the manager created, kept in a managed dict, list or namespace)
//! stay readable as long as they are stored, whoever made them and whether
//! or not that process still holds them; and the server's own limits on
//! what a client may make.

mod util;

use multiproc::__internal::ShmSpec;
use multiproc::manager::protocol::{
    ArchivedResponse, Request, access_response, encode_request, remote_error,
};
use multiproc::rkyv::util::AlignedVec;
use multiproc::{
    DictProxy, Error, Event, Lock, Manager, NamespaceProxy, Process, Queue, Quota, ServerAddress,
    StartMethod, Value,
};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

/// Makes a queue in the manager, puts 1, 2, 3, stores it in `d` under
/// "jobs" and ends (dropping its own handle).
fn store_a_queue((server, d): (ServerAddress, DictProxy<String, Queue<u32>>)) {
    let manager = Manager::connect(server).unwrap();
    let q = manager.queue::<u32>().unwrap();
    for n in 1..=3 {
        q.put(n).unwrap();
    }
    d.insert("jobs".into(), q.clone()).unwrap();
}

/// Reads the queue stored under "jobs" and takes one item.
fn take_one(d: DictProxy<String, Queue<u32>>) -> u32 {
    let q = d.get(&"jobs".to_string()).unwrap().unwrap();
    q.get_timeout(PROMPTLY).unwrap()
}

#[test]
fn a_stored_queue_is_readable_after_its_creator_dropped_its_handle_and_ended() {
    for m in METHODS {
        let manager = Manager::start_with(m).unwrap();
        let d = manager.dict::<String, Queue<u32>>().unwrap();
        let before = manager.number_of_objects().unwrap();
        let mut storer =
            Process::new(store_a_queue, (*manager.address(), d.clone())).start_method(m);
        storer.start().unwrap();
        storer.join_timeout(PROMPTLY).unwrap();
        // The creator is gone: the stored handle names the server's segment.
        let q = d.get(&"jobs".to_string()).unwrap().unwrap();
        assert_eq!(q.get_timeout(PROMPTLY).unwrap(), 1, "{m:?}");
        drop(q);
        // Read again by a process that never had it, after this one dropped it.
        assert_eq!(util::run_each(m, take_one, [d.clone()]), [2], "{m:?}");
        assert_eq!(take_one(d.clone()), 3, "{m:?}");
        // The stored handle keeps one object in the server, gone with it.
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            before + 1,
            &format!("{m:?}"),
        );
        let removed = d.remove(&"jobs".to_string()).unwrap().unwrap();
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            before,
            &format!("{m:?}"),
        );
        removed.put(4).unwrap();
        assert_eq!(removed.get_timeout(PROMPTLY).unwrap(), 4);
        manager.shutdown().unwrap();
    }
}

/// Makes a lock, a value and an event in the manager, stores them in `ns`,
/// and ends.
fn store_sync_objects((server, ns): (ServerAddress, NamespaceProxy)) {
    let manager = Manager::connect(server).unwrap();
    let value = manager.value(41u64).unwrap();
    value.set(42);
    let event = manager.event().unwrap();
    event.set().unwrap();
    ns.set("value", value).unwrap();
    ns.set("event", event).unwrap();
    ns.set("lock", manager.lock().unwrap()).unwrap();
    // The same segment twice: one object keeps it.
    let twice = manager.lock().unwrap();
    ns.set("again", (twice.clone(), twice)).unwrap();
}

#[test]
fn stored_locks_values_and_events_outlive_their_creator_and_go_with_the_container() {
    for m in METHODS {
        let manager = Manager::start_with(m).unwrap();
        let ns = manager.namespace().unwrap();
        let before = manager.number_of_objects().unwrap();
        let mut storer =
            Process::new(store_sync_objects, (*manager.address(), ns.clone())).start_method(m);
        storer.start().unwrap();
        storer.join_timeout(PROMPTLY).unwrap();
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            before + 4,
            &format!("{m:?}"),
        );
        assert_eq!(ns.get::<Value<u64>>("value").unwrap().get(), 42, "{m:?}");
        assert!(ns.get::<Event>("event").unwrap().is_set().unwrap(), "{m:?}");
        let lock = ns.get::<Lock>("lock").unwrap();
        assert_eq!(lock.try_acquire().unwrap(), multiproc::Acquired::Clean);
        // Held through one handle, seen held through another read.
        assert!(ns.get::<Lock>("lock").unwrap().try_acquire().is_err());
        lock.release().unwrap();
        let (a, b) = ns.get::<(Lock, Lock)>("again").unwrap();
        assert_eq!(a.try_acquire().unwrap(), multiproc::Acquired::Clean);
        assert!(b.try_acquire().is_err(), "one lock, stored twice");
        b.release().unwrap();
        // Overwritten or deleted, a stored handle lets its segment go.
        ns.set("value", 0u64).unwrap();
        ns.delete("event").unwrap();
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            before + 2,
            &format!("{m:?}"),
        );
        drop((lock, a, b));
        drop(ns);
        assert!(
            eventually(PROMPTLY, || manager.number_of_objects().unwrap()
                == before - 1),
            "{m:?}"
        );
        manager.shutdown().unwrap();
    }
}

#[test]
fn a_handle_the_manager_did_not_create_is_stored_as_it_is() {
    let manager = Manager::start().unwrap();
    let d = manager.dict::<u32, Queue<u32>>().unwrap();
    let before = manager.number_of_objects().unwrap();
    let own = Queue::<u32>::new().unwrap();
    own.put(7).unwrap();
    d.insert(1, own.clone()).unwrap();
    util::assert_objects(|| manager.number_of_objects().unwrap(), before, "");
    assert_eq!(
        d.get(&1).unwrap().unwrap().get_timeout(PROMPTLY).unwrap(),
        7
    );
    manager.shutdown().unwrap();
}

#[test]
fn a_list_index_past_any_length_reports_the_real_length() {
    let manager = Manager::start().unwrap();
    let l = manager.list::<u32>().unwrap();
    l.extend([1, 2, 3]).unwrap();
    for index in [usize::MAX, i64::MAX as usize + 1] {
        assert!(matches!(
            l.get(index),
            Err(Error::IndexOutOfRange { index: i, len: 3 }) if i == index
        ));
        assert!(matches!(
            l.set(index, 0),
            Err(Error::IndexOutOfRange { len: 3, .. })
        ));
        assert!(matches!(
            l.pop_at(index),
            Err(Error::IndexOutOfRange { len: 3, .. })
        ));
    }
    assert_eq!(l.to_vec().unwrap(), vec![1, 2, 3]);
    manager.shutdown().unwrap();
}

fn ask(conn: &mut multiproc::manager::server::LocalConnection, req: &Request<'_>) -> AlignedVec {
    let mut out = AlignedVec::new();
    conn.end
        .round_trip(&encode_request(req, AlignedVec::new()).unwrap(), &mut out)
        .unwrap();
    out
}

/// A spec of `total` bytes or so (a state of 8 bytes, then the tail).
fn spec(state_size: u64, tail_len: u64) -> ShmSpec {
    ShmSpec {
        kind: multiproc::__internal::Kind::Other as u32,
        fingerprint: 1,
        state_size,
        tail_len,
        state_init: Vec::new(),
    }
}

fn refused(resp: &AlignedVec) -> Option<Error> {
    match access_response(resp).unwrap() {
        ArchivedResponse::Error(e) => Some(remote_error(e)),
        _ => None,
    }
}

#[test]
fn huge_segments_are_refused_one_request_at_a_time_and_the_server_serves_on() {
    let manager = Manager::start().unwrap();
    let d = manager.dict::<u32, u32>().unwrap();
    let before = manager.number_of_objects().unwrap();
    let mut raw = multiproc::manager::server::connect(manager.address()).unwrap();
    // 2 TiB each, far past the machine's memory, many times.
    for _ in 0..130 {
        let resp = ask(&mut raw, &Request::CreateShm(spec(1 << 40, 1 << 40)));
        assert!(
            matches!(
                refused(&resp),
                Some(Error::QuotaExceeded {
                    what: Quota::SegmentBytes,
                    ..
                })
            ),
            "{:?}",
            refused(&resp)
        );
    }
    // Segments of 1 GiB the client never releases: the server holds their
    // descriptors (not mappings) until the connection's bytes run out.
    let mut held = 0;
    let quota = loop {
        let resp = ask(&mut raw, &Request::CreateShm(spec(8, 1 << 30)));
        match refused(&resp) {
            None => held += 1,
            Some(e) => break e,
        }
        assert!(held < 100_000, "no byte quota");
    };
    assert!(
        matches!(
            quota,
            Error::QuotaExceeded {
                what: Quota::Bytes,
                ..
            }
        ),
        "{quota:?}"
    );
    util::assert_objects(|| manager.number_of_objects().unwrap(), before + held, "");
    d.insert(1, 1).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(1));
    // They go with the connection.
    raw.end.channel().close_by_client();
    drop(raw);
    assert!(eventually(PROMPTLY, || manager
        .number_of_objects()
        .unwrap()
        == before));
    manager.shutdown().unwrap();
}

#[test]
fn the_server_keeps_only_its_own_segments_for_the_client_that_holds_them() {
    use multiproc::handle::{HandleRepr, ShareHandle};
    use std::os::fd::AsRawFd;
    let manager = Manager::start().unwrap();
    let before = manager.number_of_objects().unwrap();
    let mut raw = multiproc::manager::server::connect(manager.address()).unwrap();
    let me = std::process::id() as i32;
    let adopt = |raw: &mut multiproc::manager::server::LocalConnection, pid, fd| {
        let handle = HandleRepr {
            id: 7,
            pid,
            fd,
            offset: 0,
            extra: 0,
        };
        ask(raw, &Request::AdoptShm { handle })
    };
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let own = Queue::<u32>::new().unwrap().to_repr().unwrap();
    for (pid, fd) in [
        // Another process's descriptor.
        (1, 0),
        // Not a segment at all.
        (me, file.as_raw_fd()),
        // A segment this manager did not create.
        (me, own.fd),
    ] {
        let resp = adopt(&mut raw, pid, fd);
        assert!(
            matches!(refused(&resp), Some(Error::Remote(_))),
            "{pid} {fd}"
        );
    }
    util::assert_objects(|| manager.number_of_objects().unwrap(), before, "");
    // One it did create: kept, and named through the server's descriptor.
    let q = manager.queue::<u32>().unwrap();
    let mine = q.to_repr().unwrap();
    let resp = ask(&mut raw, &Request::AdoptShm { handle: mine });
    let object = match access_response(&resp).unwrap() {
        ArchivedResponse::Handle { object, handle } => {
            assert_eq!(handle.pid.to_native(), manager.pid());
            object.to_native()
        }
        _ => panic!("{:?}", refused(&resp)),
    };
    util::assert_objects(|| manager.number_of_objects().unwrap(), before + 1, "");
    ask(&mut raw, &Request::Release { object, count: 1 });
    util::assert_objects(|| manager.number_of_objects().unwrap(), before, "");
    manager.shutdown().unwrap();
}
