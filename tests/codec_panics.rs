//! User code that panics inside the library's own steps: a `Serialize` or
//! `Deserialize` of the user's (written with the re-exported `rkyv`), or a
//! `Drop`. Each panic is an error for the call concerned, or a logged
//! message, and nothing else: no encoding scope left set on the thread,
//! no pool thread lost, no client connection dropped.

mod util;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use multiproc::rkyv::{Archive, Deserialize, Serialize, rancor::Fallible};
use multiproc::{
    BaseManager, DictProxy, Error, ListProxy, Manager, Pool, Process, Queue, StartMethod,
    ThreadPool,
};
use util::PROMPTLY;

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

/// A value whose encoding panics when it holds 13, and whose decoding
/// panics when it holds 14.
#[derive(Debug, Clone, Copy, PartialEq, Archive)]
#[rkyv(crate = multiproc::rkyv)]
struct Boom(u64);

impl<S: Fallible + ?Sized> Serialize<S> for Boom {
    fn serialize(&self, _: &mut S) -> Result<BoomResolver, S::Error> {
        assert_ne!(self.0, 13, "Boom(13) cannot be encoded");
        Ok(BoomResolver(()))
    }
}

impl<D: Fallible + ?Sized> Deserialize<Boom, D> for ArchivedBoom {
    fn deserialize(&self, _: &mut D) -> Result<Boom, D::Error> {
        let v = self.0.to_native();
        assert_ne!(v, 14, "Boom(14) cannot be decoded");
        Ok(Boom(v))
    }
}

/// A value whose `Drop` panics when it holds 13.
#[derive(multiproc::Shareable, Debug)]
struct Bomb(u64);

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.0 == 13 && !std::thread::panicking() {
            panic!("Bomb(13) cannot be dropped");
        }
    }
}

fn boom(x: u64) -> Boom {
    Boom(x)
}

fn unbox(b: Boom) -> u64 {
    b.0
}

fn nothing(_: Boom) {}

/// An encoding that panicked left the thread as it found it: a proxy sent
/// afterwards still keeps its object alive in flight (the sender's own
/// proxy dropped), and a TCP manager's proxy puts no authkey into a message.
#[test]
fn an_encoding_that_panicked_leaves_no_scope_behind() {
    let m = Manager::start().unwrap();
    let list: ListProxy<Boom> = m.list().unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| list.push(Boom(13)))).is_err());
    let q: Queue<DictProxy<u32, u32>> = Queue::new().unwrap();
    let d: DictProxy<u32, u32> = m.dict().unwrap();
    d.insert(1, 111).unwrap();
    q.put(d.clone()).unwrap();
    drop(d);
    let got = q.get_timeout(PROMPTLY).unwrap();
    assert_eq!(got.get(&1).unwrap(), Some(111));
    m.shutdown().unwrap();

    let key = b"codec-panics-secret-key";
    let server = BaseManager::new()
        .address("127.0.0.1:0")
        .authkey(key)
        .start()
        .unwrap();
    let d: DictProxy<u32, u32> = server.dict().unwrap();
    let carries_key = |bytes: &[u8]| bytes.windows(key.len()).any(|w| w == key);
    assert!(!carries_key(&multiproc::Shareable::encode(&d).unwrap()));
    let mut p = Process::new(nothing, Boom(13));
    assert!(catch_unwind(AssertUnwindSafe(|| p.start())).is_err());
    assert!(!carries_key(&multiproc::Shareable::encode(&d).unwrap()));
    drop(d);
    server.shutdown().unwrap();
}

/// A result that cannot be decoded fails its call, with the panic's
/// message; an argument that cannot be decoded fails its chunk in the
/// worker, which goes on. The pool serves every later call.
#[test]
fn a_panicking_decode_fails_its_call_and_the_pool_goes_on() {
    for method in METHODS {
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .build()
            .unwrap();
        match pool.map(boom, [1, 14, 2]) {
            Err(Error::Codec(m)) => assert!(m.contains("Boom(14)"), "{method:?}: {m}"),
            other => panic!("{method:?}: {other:?}"),
        }
        match pool.apply_async(boom, 14).unwrap().get_timeout(PROMPTLY) {
            Err(Error::Codec(m)) => assert!(m.contains("Boom(14)"), "{method:?}: {m}"),
            other => panic!("{method:?}: {other:?}"),
        }
        let mut it = pool.imap_unordered(boom, [14]).unwrap();
        assert!(matches!(
            it.next_timeout(PROMPTLY),
            Ok(Some(Err(Error::Codec(_))))
        ));
        let pids = pool.worker_pids();
        match pool.chunksize(3).map(unbox, [Boom(1), Boom(14), Boom(2)]) {
            Err(Error::Remote(m)) => assert!(m.contains("Boom(14)"), "{method:?}: {m}"),
            other => panic!("{method:?}: {other:?}"),
        }
        assert_eq!(pool.worker_pids(), pids, "{method:?}: no worker died");
        assert_eq!(pool.map(unbox, [Boom(3), Boom(4)]).unwrap(), [3, 4]);
        pool.terminate();
    }
}

fn bomb(x: u64) -> Bomb {
    Bomb(x)
}

/// A thread pool's result whose `Drop` panics on the pool's result thread
/// (its caller let it go) is logged; the pool serves every later call.
#[test]
fn a_result_whose_drop_panics_leaves_the_thread_pool_working() {
    let pool = ThreadPool::new(2).unwrap();
    drop(pool.map_async(bomb, [13, 1]).unwrap());
    drop(pool.apply_async(bomb, 13).unwrap());
    let r = util::within(Duration::from_secs(60), move || {
        pool.map(|x: u64| x + 1, [1, 2]).unwrap()
    });
    assert_eq!(r.expect("a later map hangs"), [2, 3]);
}

/// A served object whose `Drop` panics when armed.
#[derive(Default)]
struct Fuse {
    armed: bool,
}

impl Fuse {
    fn arm(&mut self) -> bool {
        self.armed = true;
        true
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        if self.armed && !std::thread::panicking() {
            panic!("an armed Fuse cannot be dropped");
        }
    }
}

multiproc::remote_object! {
    Fuse as FuseProxy {
        1 => fn arm() -> bool;
    }
}

/// A served object whose `Drop` panics in the server when its last proxy
/// goes is logged there: the client's connection serves on, with its
/// other objects (none freed under it).
#[test]
fn a_served_object_whose_drop_panics_drops_nothing_else() {
    for method in METHODS {
        let m = Manager::builder()
            .start_method(method)
            .register_factory::<Fuse>("Fuse")
            .start()
            .unwrap();
        let mine: DictProxy<u8, u8> = m.dict().unwrap();
        mine.insert(1, 1).unwrap();
        let kept: FuseProxy = m.create("Fuse").unwrap();
        let armed: FuseProxy = m.create("Fuse").unwrap();
        assert!(armed.arm().unwrap());
        drop(armed);
        assert_eq!(mine.get(&1).unwrap(), Some(1), "{method:?}");
        assert!(kept.arm().unwrap(), "{method:?}: not freed under its proxy");
        let again: FuseProxy = m.create("Fuse").unwrap();
        drop(again);
        drop(kept);
        m.shutdown().unwrap();
    }
}

/// A chunk size too large to multiply is an imap like any other.
#[test]
fn an_imap_with_the_largest_chunksize_runs() {
    let pool = ThreadPool::new(2).unwrap();
    let got: Vec<u64> = pool
        .chunksize(usize::MAX)
        .imap(|x: u64| x * 2, 0..5u64)
        .unwrap()
        .collect::<multiproc::Result<_>>()
        .unwrap();
    assert_eq!(got, [0, 2, 4, 6, 8]);
}
