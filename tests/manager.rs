//! The manager: a server process owning dicts, lists and namespaces that
//! every process changes through proxies.

mod util;

use std::time::{Duration, Instant};

use multiproc::{
    DictProxy, Error, ListProxy, Manager, NamespaceProxy, Process, RawValue, Shareable,
    StartMethod, Value,
};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

fn start(method: StartMethod) -> Manager {
    Manager::start_with(method).expect("manager starts")
}

fn write_square(args: (u32, DictProxy<u32, u64>, ListProxy<u32>)) {
    let (i, d, l) = args;
    d.insert(i, u64::from(i) * u64::from(i)).unwrap();
    l.push(i).unwrap();
}

fn read_back(
    args: (ListProxy<String>, DictProxy<String, u32>),
) -> (Vec<String>, Vec<(String, u32)>) {
    let (l, d) = args;
    let mut items = d.items().unwrap();
    items.sort();
    (l.to_vec().unwrap(), items)
}

#[test]
fn a_list_and_a_dict_are_made_with_their_contents_in_one_call() {
    for m in METHODS {
        let manager = start(m);
        let l = manager
            .list_from(["a", "b", "c"].map(String::from))
            .unwrap();
        let d = manager
            .dict_from([("x".to_string(), 1), ("y".to_string(), 2)])
            .unwrap();
        let empty = manager.list_from(Vec::<u64>::new()).unwrap();
        assert!(empty.is_empty().unwrap());
        let (list, dict) = util::run_each(m, read_back, [(l.clone(), d.clone())]).remove(0);
        assert_eq!(list, ["a", "b", "c"], "{m:?}");
        assert_eq!(dict, [("x".to_string(), 1), ("y".to_string(), 2)], "{m:?}");
        drop((l, d, empty));
        // The child's references go when the server sees it gone.
        assert!(
            eventually(PROMPTLY, || manager.number_of_objects().unwrap() == 0),
            "{m:?}"
        );
        manager.shutdown().unwrap();
    }
}

#[test]
fn ten_processes_fill_one_dict_and_one_list() {
    for m in METHODS {
        let manager = start(m);
        let d = manager.dict::<u32, u64>().unwrap();
        let l = manager.list::<u32>().unwrap();
        util::run_each(m, write_square, (0..10).map(|i| (i, d.clone(), l.clone())));
        assert_eq!(d.len().unwrap(), 10, "{m:?}");
        let mut items = d.items().unwrap();
        items.sort();
        let expected: Vec<(u32, u64)> = (0..10).map(|i| (i, u64::from(i * i))).collect();
        assert_eq!(items, expected, "{m:?}");
        let mut pushed = l.to_vec().unwrap();
        pushed.sort();
        assert_eq!(pushed, (0..10).collect::<Vec<_>>(), "{m:?}");
        manager.shutdown().unwrap();
    }
}

fn increment(d: DictProxy<String, u64>) {
    for _ in 0..10_000 {
        d.update_with("counter".to_string(), 0, |n| n + 1).unwrap();
    }
}

#[test]
fn atomic_increments_from_four_processes_lose_nothing() {
    for m in METHODS {
        let manager = start(m);
        let d = manager.dict::<String, u64>().unwrap();
        util::run_each(m, increment, (0..4).map(|_| d.clone()));
        assert_eq!(
            d.get(&"counter".to_string()).unwrap(),
            Some(40_000),
            "{m:?}"
        );
        manager.shutdown().unwrap();
    }
}

#[test]
fn threads_of_one_process_share_its_connection() {
    let manager = start(StartMethod::Fork);
    let d = manager.dict::<u8, u32>().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let d = d.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    d.update_with(0, 0, |n| n + 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(d.get(&0).unwrap(), Some(4000));
    manager.shutdown().unwrap();
}

fn append_to_nested(args: (u32, DictProxy<u32, ListProxy<u32>>)) {
    let (i, d) = args;
    let list = d.get(&(i % 3)).unwrap().expect("the list is stored");
    list.push(i).unwrap();
}

#[test]
fn a_dict_of_list_proxies_is_shared_by_children() {
    for m in METHODS {
        let manager = start(m);
        let d = manager.dict::<u32, ListProxy<u32>>().unwrap();
        for k in 0..3 {
            // The temporary proxy goes at once: the stored value keeps the list alive.
            d.insert(k, manager.list().unwrap()).unwrap();
        }
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            4,
            &format!("{m:?}"),
        );
        util::run_each(m, append_to_nested, (0..9).map(|i| (i, d.clone())));
        for k in 0..3 {
            let mut got = d.get(&k).unwrap().unwrap().to_vec().unwrap();
            got.sort();
            assert_eq!(got, vec![k, k + 3, k + 6], "{m:?}");
        }
        // Overwriting a stored proxy frees the list it held (once the server
        // has seen the children, which held it too, go).
        d.insert(0, manager.list().unwrap()).unwrap();
        assert!(d.get(&0).unwrap().unwrap().is_empty().unwrap());
        assert!(
            eventually(PROMPTLY, || manager.number_of_objects().unwrap() == 4),
            "{m:?}"
        );
        drop(d);
        assert!(
            eventually(PROMPTLY, || manager.number_of_objects().unwrap() == 0),
            "{m:?}"
        );
        manager.shutdown().unwrap();
    }
}

/// A container keeps the objects of its own manager only. A proxy of
/// another manager stored in one was kept by a pin its first reader took
/// over, and when that reader dropped it the object was freed under the
/// container (every later get failed for good; from an attack battery). It
/// is refused now, and so is comparing with one (which left a pin each
/// time). A queue of another manager still carries one: its one reader
/// takes it over, as from any message.
#[test]
fn a_container_refuses_a_proxy_of_another_manager() {
    let a = start(StartMethod::Spawn);
    let b = start(StartMethod::Spawn);
    let list = a.list::<u32>().unwrap();
    list.push(7).unwrap();
    let in_b = b.dict::<u32, ListProxy<u32>>().unwrap();
    let refused = in_b.insert(0, list.clone());
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    assert_eq!(in_b.len().unwrap(), 0);
    let of_b = b.list::<ListProxy<u32>>().unwrap();
    assert!(matches!(
        of_b.push(list.clone()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        of_b.contains(&list),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(b.number_of_objects().unwrap(), 2);

    // Its own manager's containers keep it after every proxy went.
    let in_a = a.dict::<u32, ListProxy<u32>>().unwrap();
    in_a.insert(0, list.clone()).unwrap();
    let q = multiproc::BaseManager::new().start().unwrap();
    let queue = q.queue::<ListProxy<u32>>().unwrap();
    queue.put(list).unwrap();
    let taken = queue.get_timeout(PROMPTLY).unwrap();
    assert_eq!(taken.to_vec().unwrap(), [7]);
    drop(taken);
    assert_eq!(in_a.get(&0).unwrap().unwrap().to_vec().unwrap(), [7]);
    assert_eq!(a.number_of_objects().unwrap(), 2);
    for m in [a, b] {
        m.shutdown().unwrap();
    }
    q.shutdown().unwrap();
}

/// The thread whose next forked child ends before the manager client's
/// fork hook runs in it (set by one test, for its own thread only).
static DIE_AT_FORK: std::sync::Mutex<Option<std::thread::ThreadId>> = std::sync::Mutex::new(None);

/// Registered after the manager client's hook, so that it runs first in the
/// child: the child ends before it can claim the objects pinned for it.
struct DieAtFork;

impl multiproc::__internal::ForkHook for DieAtFork {
    fn prepare(&self) -> Box<dyn std::any::Any> {
        Box::new(())
    }

    fn parent(&self, _: Box<dyn std::any::Any>) {}

    fn child(&self, _: Box<dyn std::any::Any>) {
        if *DIE_AT_FORK.lock().unwrap() == Some(std::thread::current().id()) {
            // SAFETY: ends this forked child at once, running nothing else.
            unsafe { libc::_exit(0) };
        }
    }
}

/// A forked child inherits the parent's proxies: the parent pins their
/// objects for it, and the child claims them as it starts (a spawned child,
/// as it decodes its argument). One that dies before it claims them leaves
/// them to nobody: they go as soon as the server sees that child end, not
/// ten minutes later.
#[test]
fn objects_pinned_for_a_child_that_died_before_claiming_them_are_freed() {
    let manager = start(StartMethod::Spawn);
    let d = manager.dict::<u32, u32>().unwrap();
    d.insert(1, 1).unwrap();
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| multiproc::__internal::register_fork_hook(&DieAtFork));
    for _ in 0..3 {
        *DIE_AT_FORK.lock().unwrap() = Some(std::thread::current().id());
        let mut p = Process::new(read_one, d.clone()).start_method(StartMethod::Fork);
        let started = p.start();
        *DIE_AT_FORK.lock().unwrap() = None;
        started.unwrap();
        assert!(
            p.join_timeout(PROMPTLY).is_err(),
            "the child never ran its target"
        );
    }
    // A spawned child killed at once, before it decodes its argument
    // (almost always: it has to exec and read its launch message first).
    for _ in 0..3 {
        let mut p = Process::new(read_one, d.clone()).start_method(StartMethod::Spawn);
        p.start().unwrap();
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
    }
    // A child that lives claims them, and lets them go as it ends.
    let mut p = Process::new(read_one, d.clone()).start_method(StartMethod::Fork);
    p.start().unwrap();
    assert_eq!(p.join_timeout(PROMPTLY).unwrap(), Some(1));
    drop(d);
    util::assert_objects(|| manager.number_of_objects().unwrap(), 0, "");
    manager.shutdown().unwrap();
}

fn read_one(d: DictProxy<u32, u32>) -> Option<u32> {
    d.get(&1).unwrap()
}

#[test]
fn objects_are_freed_when_the_last_proxy_drops() {
    let manager = start(StartMethod::Fork);
    let d = manager.dict::<u32, u32>().unwrap();
    let l = manager.list::<String>().unwrap();
    let ns = manager.namespace().unwrap();
    util::assert_objects(|| manager.number_of_objects().unwrap(), 3, "");
    let d2 = d.clone();
    drop(d);
    util::assert_objects(|| manager.number_of_objects().unwrap(), 3, "");
    drop(d2);
    drop(l);
    util::assert_objects(|| manager.number_of_objects().unwrap(), 1, "");
    // Decoding in this process takes its own reference.
    let bytes = ns.encode().unwrap();
    let ns2 = NamespaceProxy::decode(&bytes).unwrap();
    drop(ns);
    ns2.set("x", 1u8).unwrap();
    util::assert_objects(|| manager.number_of_objects().unwrap(), 1, "");
    drop(ns2);
    util::assert_objects(|| manager.number_of_objects().unwrap(), 0, "");
    manager.shutdown().unwrap();
}

fn read_moved(d: DictProxy<u32, u32>) -> Option<u32> {
    d.get(&7).unwrap()
}

#[test]
fn a_proxy_moved_into_a_child_outlives_the_parents_copy() {
    for m in METHODS {
        let manager = start(m);
        let d = manager.dict::<u32, u32>().unwrap();
        d.insert(7, 49).unwrap();
        // The parent keeps no proxy: the in-flight reference (spawn) or the
        // fork pin keeps the dict alive until the child attached.
        let mut p = Process::new(read_moved, d).start_method(m);
        p.start().unwrap();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), Some(49), "{m:?}");
        assert!(
            eventually(PROMPTLY, || manager.number_of_objects().unwrap() == 0),
            "{m:?}: the dict outlived every proxy"
        );
        manager.shutdown().unwrap();
    }
}

fn attach_then_hang(args: (DictProxy<u32, u32>, RawValue<u32>)) {
    let (d, attached) = args;
    d.insert(1, 1).unwrap();
    attached.store(1);
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_killed_holder_releases_its_references() {
    for m in METHODS {
        let manager = start(m);
        let d = manager.dict::<u32, u32>().unwrap();
        let attached = RawValue::new(0u32).unwrap();
        let mut p = Process::new(attach_then_hang, (d.clone(), attached.clone())).start_method(m);
        p.start().unwrap();
        assert!(eventually(PROMPTLY, || attached.load() == 1), "{m:?}");
        drop(d);
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            1,
            &format!("{m:?}: the child holds it"),
        );
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        assert!(
            eventually(PROMPTLY, || manager.number_of_objects().unwrap() == 0),
            "{m:?}: the dead child's reference was not dropped"
        );
        manager.shutdown().unwrap();
    }
}

fn insert_forever(args: (DictProxy<u32, u32>, RawValue<u32>)) {
    let (d, started) = args;
    for i in 0u32.. {
        d.insert(i % 100, i).unwrap();
        started.store(1);
    }
}

#[test]
fn a_client_killed_mid_request_leaves_the_server_serving_others() {
    for m in METHODS {
        let manager = start(m);
        let d = manager.dict::<u32, u32>().unwrap();
        let started = RawValue::new(0u32).unwrap();
        let mut p = Process::new(insert_forever, (d.clone(), started.clone())).start_method(m);
        p.start().unwrap();
        assert!(eventually(PROMPTLY, || started.load() == 1), "{m:?}");
        let other = manager.list::<u32>().unwrap();
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        other.push(1).unwrap();
        assert_eq!(other.to_vec().unwrap(), vec![1], "{m:?}");
        assert!(d.len().unwrap() > 0, "{m:?}");
        drop((d, other));
        assert!(
            eventually(PROMPTLY, || manager.number_of_objects().unwrap() == 0),
            "{m:?}: the killed client's references were not dropped"
        );
        manager.shutdown().unwrap();
    }
}

fn call_until_gone(args: (DictProxy<u32, u32>, RawValue<u32>)) -> String {
    let (d, started) = args;
    let mut i = 0u32;
    loop {
        if let Err(e) = d.insert(i % 100, i) {
            return format!("{e:?}");
        }
        started.store(1);
        i = i.wrapping_add(1);
    }
}

#[test]
fn a_dead_server_is_a_prompt_error_and_a_new_manager_starts() {
    for m in METHODS {
        let manager = start(m);
        let d = manager.dict::<u32, u32>().unwrap();
        let started = RawValue::new(0u32).unwrap();
        let mut p = Process::new(call_until_gone, (d.clone(), started.clone())).start_method(m);
        p.start().unwrap();
        assert!(eventually(PROMPTLY, || started.load() == 1), "{m:?}");
        // Stop the server first so the child's call is surely in flight.
        // SAFETY: kill(2) on the server's pid, which this process started.
        unsafe {
            libc::kill(manager.pid(), libc::SIGSTOP);
            libc::kill(manager.pid(), libc::SIGKILL);
        }
        let t = Instant::now();
        let child_saw = p.join_timeout(PROMPTLY).unwrap();
        assert!(child_saw.starts_with("ManagerGone"), "{m:?}: {child_saw}");
        assert!(matches!(d.get(&0), Err(Error::ManagerGone(_))), "{m:?}");
        assert!(t.elapsed() < PROMPTLY);
        manager.shutdown().unwrap();
        let again = start(m);
        let d = again.dict::<u32, u32>().unwrap();
        d.insert(1, 2).unwrap();
        assert_eq!(d.get(&1).unwrap(), Some(2));
        again.shutdown().unwrap();
    }
}

#[test]
fn shutdown_ends_the_server_and_fails_later_calls() {
    let manager = start(StartMethod::Spawn);
    let pid = manager.pid();
    let l = manager.list::<u8>().unwrap();
    l.push(1).unwrap();
    let clone = manager.clone();
    drop(manager);
    assert!(l.len().is_ok(), "a clone of the manager keeps it running");
    drop(clone);
    assert!(util::is_gone(pid));
    util::assert_not_our_zombie(pid);
    assert!(matches!(l.push(2), Err(Error::ManagerGone(_))));
}

#[test]
fn wrong_proxy_types_are_a_type_mismatch() {
    let manager = start(StartMethod::Fork);
    let d = manager.dict::<u32, String>().unwrap();
    let bytes = d.encode().unwrap();
    match DictProxy::<String, u32>::decode(&bytes) {
        Err(Error::TypeMismatch { expected, found }) => {
            assert_eq!(expected, "DictProxy<alloc::string::String, u32>");
            assert_eq!(found, "DictProxy<u32, alloc::string::String>");
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    // The right type takes over the in-flight reference the encoding made.
    let right = DictProxy::<u32, String>::decode(&bytes).unwrap();
    drop(right);
    let ns = manager.namespace().unwrap();
    ns.set("n", 5u64).unwrap();
    match ns.get::<String>("n") {
        Err(Error::TypeMismatch { expected, found }) => {
            assert_eq!(expected, "alloc::string::String");
            assert_eq!(found, "u64");
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    assert_eq!(ns.get::<u64>("n").unwrap(), 5);
    drop((d, ns));
    util::assert_objects(|| manager.number_of_objects().unwrap(), 0, "");
    manager.shutdown().unwrap();
}

#[test]
fn out_of_range_indices_and_missing_keys() {
    let manager = start(StartMethod::Fork);
    let l = manager.list::<u32>().unwrap();
    l.extend([10, 20, 30]).unwrap();
    assert!(matches!(
        l.get(3),
        Err(Error::IndexOutOfRange { index: 3, len: 3 })
    ));
    assert!(matches!(
        l.set(5, 1),
        Err(Error::IndexOutOfRange { index: 5, len: 3 })
    ));
    assert!(matches!(
        l.insert(4, 1),
        Err(Error::IndexOutOfRange { index: 4, len: 3 })
    ));
    assert!(matches!(
        l.pop_at(9),
        Err(Error::IndexOutOfRange { index: 9, len: 3 })
    ));
    l.insert(3, 40).unwrap();
    l.insert(0, 0).unwrap();
    l.set(1, 11).unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![0, 11, 20, 30, 40]);
    assert_eq!(l.index(&30).unwrap(), Some(3));
    assert_eq!(l.index(&99).unwrap(), None);
    assert!(l.remove(&20).unwrap());
    assert!(!l.remove(&20).unwrap());
    l.reverse().unwrap();
    assert_eq!(l.iter().unwrap().collect::<Vec<_>>(), vec![40, 30, 11, 0]);
    assert_eq!(l.pop_at(0).unwrap(), 40);
    l.clear().unwrap();
    assert_eq!(l.pop().unwrap(), None);
    assert!(matches!(
        l.pop_at(0),
        Err(Error::IndexOutOfRange { index: 0, len: 0 })
    ));

    let d = manager.dict::<String, u32>().unwrap();
    let k = |s: &str| s.to_string();
    // The error names the key, as Python's KeyError does.
    match d.pop(&k("nope")) {
        Err(e @ Error::KeyNotFound(_)) => assert_eq!(e.to_string(), "key not found: \"nope\""),
        other => panic!("{other:?}"),
    }
    assert_eq!(d.pop_or(&k("nope"), 3).unwrap(), 3);
    assert_eq!(d.get(&k("nope")).unwrap(), None);
    assert_eq!(d.setdefault(k("a"), 1).unwrap(), 1);
    assert_eq!(d.setdefault(k("a"), 2).unwrap(), 1);
    d.update([(k("b"), 2), (k("c"), 3)]).unwrap();
    assert!(d.contains_key(&k("b")).unwrap());
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys, vec![k("a"), k("b"), k("c")]);
    let mut values = d.values().unwrap();
    values.sort();
    assert_eq!(values, vec![1, 2, 3]);
    assert_eq!(d.pop(&k("b")).unwrap(), 2);
    assert_eq!(d.remove(&k("b")).unwrap(), None);
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());

    let ns = manager.namespace().unwrap();
    assert!(matches!(ns.get::<u32>("x"), Err(Error::KeyNotFound(k)) if k == "\"x\""));
    assert!(matches!(ns.delete("x"), Err(Error::KeyNotFound(k)) if k == "\"x\""));
    ns.set("x", "hello".to_string()).unwrap();
    assert!(ns.contains("x").unwrap());
    assert_eq!(ns.names().unwrap(), vec!["x".to_string()]);
    ns.delete("x").unwrap();
    assert!(!ns.contains("x").unwrap());
    manager.shutdown().unwrap();
}

#[test]
fn large_values_travel_through_overflow_segments() {
    let manager = start(StartMethod::Fork);
    let d = manager.dict::<u8, Vec<u8>>().unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    d.insert(1, big.clone()).unwrap();
    assert_eq!(d.get(&1).unwrap().as_deref(), Some(&big[..]));
    // Answers that grow, shrink and fit a slot again, in turn over one
    // connection (a large one is written straight into the connection's
    // overflow segment, made larger when it must): each reads back whole,
    // as a value, as a popped one, and among several.
    let small = manager.dict::<u8, Vec<u8>>().unwrap();
    for (i, len) in [70_000usize, 10, 5_000_000, 65_536, 200_000, 5]
        .into_iter()
        .enumerate()
    {
        let v: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        small.insert(2, v.clone()).unwrap();
        assert_eq!(small.get(&2).unwrap().as_ref(), Some(&v), "{len} bytes");
        assert_eq!(small.items().unwrap(), vec![(2, v.clone())], "{len} bytes");
        assert_eq!(small.pop(&2).unwrap(), v, "{len} bytes");
        assert!(small.is_empty().unwrap());
    }
    let l = manager.list::<u64>().unwrap();
    l.extend(0..100_000).unwrap();
    assert_eq!(l.to_vec().unwrap(), (0..100_000).collect::<Vec<u64>>());
    manager.shutdown().unwrap();
}

fn bump(args: (Value<u64>, multiproc::Lock, multiproc::Array<i32>)) {
    let (v, lock, a) = args;
    let _g = lock.lock().unwrap();
    *v.lock().unwrap() += 1;
    a.set(0, a.get(0).unwrap() + 1).unwrap();
}

#[test]
fn server_created_shared_objects_are_used_directly() {
    for m in METHODS {
        let manager = start(m);
        let v = manager.value(41u64).unwrap();
        let lock = manager.lock().unwrap();
        let a = manager.array(&[1i32, 2, 3]).unwrap();
        assert_eq!(v.get(), 41);
        assert_eq!(a.to_vec(), vec![1, 2, 3]);
        util::assert_objects(|| manager.number_of_objects().unwrap(), 0, "");
        util::run_each(
            m,
            bump,
            (0..3).map(|_| (v.clone(), lock.clone(), a.clone())),
        );
        assert_eq!(v.get(), 44, "{m:?}");
        assert_eq!(a.to_vec(), vec![4, 2, 3], "{m:?}");
        manager.shutdown().unwrap();
        // The memory outlives the server: it lives in the mappings.
        assert_eq!(v.get(), 44);
    }
}

#[test]
fn malformed_and_unknown_requests_get_error_responses() {
    use multiproc::manager::protocol::{
        ArchivedRemoteError, ArchivedResponse, Call, Request, access_response, encode_request,
    };
    use multiproc::rkyv::util::AlignedVec;
    let manager = start(StartMethod::Fork);
    let mut conn = multiproc::manager::server::connect(manager.address()).unwrap();
    let mut resp = AlignedVec::new();
    let mut ask = |bytes: &[u8], resp: &mut AlignedVec| {
        conn.end.round_trip(bytes, resp).unwrap();
    };
    ask(b"certainly not a request", &mut resp);
    assert!(matches!(
        access_response(&resp).unwrap(),
        ArchivedResponse::Error(ArchivedRemoteError::Malformed(_))
    ));
    let call = |object, method| {
        Request::Call(Call {
            object,
            method,
            index: 0,
            key: None,
            value: None,
            expected: None,
            batch: Vec::new(),
            fingerprint: 0,
            type_name: "",
            wait_us: 0,
        })
    };
    ask(
        &encode_request(&call(12345, 5), AlignedVec::new()).unwrap(),
        &mut resp,
    );
    assert!(matches!(
        access_response(&resp).unwrap(),
        ArchivedResponse::Error(ArchivedRemoteError::UnknownObject(_))
    ));
    let l = manager.list::<u8>().unwrap();
    let bytes = l.encode().unwrap();
    let id = multiproc_proxy::ProxyRepr::decode(&bytes).unwrap().object;
    drop(ListProxy::<u8>::decode(&bytes).unwrap());
    for method in [1, 999] {
        ask(
            &encode_request(&call(id, method), AlignedVec::new()).unwrap(),
            &mut resp,
        );
        assert!(
            matches!(
                access_response(&resp).unwrap(),
                ArchivedResponse::Error(ArchivedRemoteError::UnknownMethod { .. })
            ),
            "method {method}"
        );
    }
    // A dict method on a list, without its key: still an answer, not a crash.
    ask(
        &encode_request(&call(id, 30), AlignedVec::new()).unwrap(),
        &mut resp,
    );
    assert!(matches!(
        access_response(&resp).unwrap(),
        ArchivedResponse::Error(ArchivedRemoteError::Malformed(_))
    ));
    l.push(1).unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![1]);
    manager.shutdown().unwrap();
}

/// A client and its manager server pinned to the same CPU: the channel's
/// waits sleep rather than spin against each other, and every call completes.
#[test]
fn calls_progress_with_client_and_server_on_one_cpu() {
    let done = util::within(Duration::from_secs(120), || {
        util::pin_this_thread_to_one_cpu();
        let manager = Manager::start_with(StartMethod::Fork).unwrap();
        let d = manager.dict::<u64, u64>().unwrap();
        for i in 0..2_000u64 {
            d.insert(i % 7, i).unwrap();
            assert_eq!(d.get(&(i % 7)).unwrap(), Some(i));
        }
        manager.shutdown().unwrap();
    });
    assert!(done.is_some(), "manager calls on one CPU did not finish");
}

/// The address space process `pid` maps now, in bytes.
fn mapped_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// Sets the address-space limit of process `pid`.
fn limit_address_space(pid: i32, bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit(2) on a child of this process, with a valid rlimit
    // and no old value asked for.
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_AS, &lim, std::ptr::null_mut()) };
    assert_eq!(set, 0);
}

/// A server at its address-space limit answers a get of a value it has no
/// room to send with an error for that call, and serves on: it aborted on
/// the failed allocation (every client then lost it). Found by an attack
/// battery.
#[test]
fn a_server_at_its_memory_limit_refuses_a_large_answer_and_serves_on() {
    let manager = start(StartMethod::Fork);
    let pid = manager.pid();
    let d = manager.dict::<u32, Vec<u8>>().unwrap();
    d.insert(1, vec![7u8; 32 << 20]).unwrap();
    d.insert(2, vec![1u8; 10]).unwrap();
    limit_address_space(pid, mapped_bytes(pid));
    match d.get(&1) {
        Err(Error::Remote(m)) => assert!(m.contains("cannot send the response"), "{m}"),
        other => panic!("{:?}", other.map(|v| v.map(|v| v.len()))),
    }
    assert_eq!(d.get(&2).unwrap(), Some(vec![1u8; 10]));
    limit_address_space(pid, libc::RLIM_INFINITY);
    assert_eq!(d.get(&1).unwrap().map(|v| v.len()), Some(32 << 20));
    manager.shutdown().unwrap();
}

/// Whether `pid` ignores `signal` (its bit in `SigIgn` of /proc/pid/status).
fn ignores(pid: i32, signal: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    mask & (1 << (signal - 1)) != 0
}

/// A terminal's Ctrl-C reaches the whole process group: a manager's
/// server ignores it, as Python's does (bpo-36368), so a program that
/// catches it to shut down in order still has its objects.
#[test]
fn a_manager_server_ignores_sigint() {
    for m in METHODS {
        let manager = start(m);
        let l = manager.list::<u8>().unwrap();
        l.push(1).unwrap();
        let pid = manager.pid();
        assert!(ignores(pid, libc::SIGINT), "{m:?}");
        // SAFETY: kill on the pid of the server this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        for i in 2..5 {
            l.push(i).unwrap();
        }
        assert_eq!(l.to_vec().unwrap(), [1, 2, 3, 4], "{m:?}");
        assert!(!util::is_gone(pid));
        manager.shutdown().unwrap();
    }
    let remote = multiproc::BaseManager::new()
        .address("127.0.0.1:0")
        .authkey(b"a key of sixteen bytes or more")
        .register::<DictProxy<String, i64>>("stats")
        .start()
        .unwrap();
    let pid = remote.pid().unwrap();
    assert!(ignores(pid, libc::SIGINT));
    // SAFETY: kill on the pid of the server this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let stats: DictProxy<String, i64> = remote.get("stats").unwrap();
    stats.insert("n".into(), 1).unwrap();
    assert_eq!(stats.get(&"n".into()).unwrap(), Some(1));
    remote.shutdown().unwrap();
}

/// A forked child reconnects to its managers in the fork hook, reading the
/// known authkeys: another thread of the parent setting one at the moment
/// of the fork left that table locked in the child for ever (its holder
/// does not exist there). Now the fork holds it across.
#[test]
fn a_fork_while_another_thread_sets_an_authkey_does_not_hang_the_child() {
    let manager = start(StartMethod::Fork);
    let d = manager.dict::<u32, u32>().unwrap();
    d.insert(1, 9).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let address: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                multiproc::set_manager_authkey(address, b"a key set again and again");
            }
        })
    };
    for i in 0..30 {
        let mut p = Process::new(read_one, d.clone()).start_method(StartMethod::Fork);
        p.start().unwrap();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), Some(9), "fork {i}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hammer.join().unwrap();
    manager.shutdown().unwrap();
}
