//! Factory-style registration on managers (CPython's `_TestMyManager`:
//! `MyManager.register('Foo', callable=FooBar)`, then `manager.Foo()` makes
//! a new object each time): objects counted by their proxies and freed
//! with the last one, in any process, including one that is SIGKILLed;
//! typed errors for an unknown typeid, a wrong proxy type and a panicking
//! constructor.

mod util;

use std::time::Duration;

use multiproc::{BaseManager, Error, Manager, Process, RawValue, StartMethod};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];
const KEY: &[u8] = b"factory-test-key-of-16+ bytes";

/// CPython's `FooBar`: a served type with a method of its own.
#[derive(Default)]
struct Foo {
    calls: u64,
}

impl Foo {
    fn f(&mut self) -> String {
        self.calls += 1;
        "f()".into()
    }
    fn calls(&mut self) -> u64 {
        self.calls
    }
}

multiproc::remote_object! {
    Foo as FooProxy {
        1 => fn f() -> String;
        2 => fn calls() -> u64;
    }
}

/// Another type, for type mismatches.
#[derive(Default)]
struct Bar;

impl Bar {
    fn ping(&mut self) -> bool {
        true
    }
}

multiproc::remote_object! {
    Bar as BarProxy {
        1 => fn ping() -> bool;
    }
}

/// A type whose constructor panics in the server.
struct Broken;

impl Default for Broken {
    fn default() -> Broken {
        panic!("Broken cannot be built");
    }
}

impl Broken {
    fn ping(&mut self) -> bool {
        true
    }
}

multiproc::remote_object! {
    Broken as BrokenProxy {
        1 => fn ping() -> bool;
    }
}

fn my_manager(m: StartMethod) -> Manager {
    Manager::builder()
        .start_method(m)
        .register_factory::<Foo>("Foo")
        .register_factory::<Bar>("Bar")
        .register_factory::<Broken>("Broken")
        .register_object::<Bar>("the_bar")
        .start()
        .unwrap()
}

/// CPython's `test_mymanager`: each `manager.Foo()` is a new object whose
/// methods the proxy calls; the objects go with their proxies (the
/// registry is the server's one other object).
#[test]
fn test_mymanager() {
    for m in METHODS {
        let manager = my_manager(m);
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            1,
            &format!("{m:?}: registry"),
        );
        let a: FooProxy = manager.create("Foo").unwrap();
        let b: FooProxy = manager.create("Foo").unwrap();
        assert_eq!(a.f().unwrap(), "f()");
        assert_eq!(a.f().unwrap(), "f()");
        assert_eq!(b.f().unwrap(), "f()");
        assert_eq!(a.calls().unwrap(), 2, "{m:?}");
        assert_eq!(b.calls().unwrap(), 1, "{m:?}: a separate object");
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            3,
            &format!("{m:?}"),
        );
        drop(a);
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            2,
            &format!("{m:?}"),
        );
        assert_eq!(b.calls().unwrap(), 1, "{m:?}");
        drop(b);
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            1,
            &format!("{m:?}: nothing left behind"),
        );
        manager.shutdown().unwrap();
    }
}

fn create_and_use(address: multiproc::ServerAddress) -> u64 {
    let manager = Manager::connect(address).unwrap();
    let made: FooProxy = manager.create("Foo").unwrap();
    for _ in 0..10 {
        made.f().unwrap();
    }
    made.calls().unwrap()
}

fn create_then_hang(args: (multiproc::ServerAddress, RawValue<u32>)) {
    let (address, created) = args;
    let manager = Manager::connect(address).unwrap();
    let made: FooProxy = manager.create("Foo").unwrap();
    made.f().unwrap();
    created.store(1);
    // Held until the test kills this process.
    std::thread::sleep(Duration::from_secs(600));
}

/// CPython's `test_mymanager_context` with children: objects children
/// create are theirs, and go when each child exits or is SIGKILLed (the
/// server counts them: none is left behind).
#[test]
fn test_mymanager_objects_of_children_and_of_a_killed_child_are_freed() {
    for m in METHODS {
        let manager = my_manager(m);
        let address = *manager.address();
        let ends = util::run_each(m, create_and_use, (0..3).map(|_| address));
        assert_eq!(ends, [10, 10, 10], "{m:?}: one object per create");
        assert!(
            eventually(PROMPTLY, || manager.number_of_objects().unwrap() == 1),
            "{m:?}: the children's objects went with them"
        );

        let created = RawValue::new(0u32).unwrap();
        let mut p = Process::new(create_then_hang, (address, created.clone())).start_method(m);
        p.start().unwrap();
        assert!(eventually(PROMPTLY, || created.load() == 1), "{m:?}");
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            2,
            &format!("{m:?}"),
        );
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        assert!(
            eventually(PROMPTLY, || manager.number_of_objects().unwrap() == 1),
            "{m:?}: the killed child's object was not freed"
        );
        manager.shutdown().unwrap();
    }
}

/// An unknown typeid, a proxy of another type, a name of one shared object
/// (and a factory asked for as one): typed errors, nothing made.
#[test]
fn test_mymanager_bad_typeids_and_types_are_typed_errors() {
    for m in METHODS {
        let manager = my_manager(m);
        assert!(matches!(
            manager.create::<FooProxy>("Missing"),
            Err(Error::KeyNotFound(_))
        ));
        assert!(matches!(
            manager.create::<FooProxy>("Bar"),
            Err(Error::TypeMismatch { .. })
        ));
        assert!(matches!(
            manager.create::<BarProxy>("the_bar"),
            Err(Error::TypeMismatch { .. })
        ));
        assert!(matches!(
            manager.get_object::<FooProxy>("Foo"),
            Err(Error::TypeMismatch { .. })
        ));
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            1,
            &format!("{m:?}"),
        );
        let bar: BarProxy = manager.create("Bar").unwrap();
        assert!(bar.ping().unwrap());
        drop(bar);
        manager.shutdown().unwrap();
    }
}

/// A constructor that panics in the server is the caller's error, with
/// its message; the server and the other connections serve on.
#[test]
fn test_mymanager_a_panicking_constructor_is_the_callers_error() {
    for m in METHODS {
        let manager = my_manager(m);
        let made: FooProxy = manager.create("Foo").unwrap();
        let d = manager.dict::<u32, u32>().unwrap();
        match manager.create::<BrokenProxy>("Broken") {
            Err(Error::Remote(message)) => {
                assert!(message.contains("Broken cannot be built"), "{message}")
            }
            other => panic!("{m:?}: {other:?}"),
        }
        assert_eq!(made.f().unwrap(), "f()");
        d.insert(1, 2).unwrap();
        let address = *manager.address();
        assert_eq!(util::run_each(m, create_and_use, [address]), [10]);
        drop((made, d));
        assert!(
            eventually(PROMPTLY, || manager.number_of_objects().unwrap() == 1),
            "{m:?}"
        );
        manager.shutdown().unwrap();
    }
}

fn connect(address: String) -> multiproc::RemoteManager {
    BaseManager::new()
        .address(address.as_str())
        .authkey(KEY)
        .connect()
        .unwrap()
}

fn remote_create_then_hang(args: (String, RawValue<u32>)) {
    let (address, created) = args;
    let m = connect(address);
    let made: FooProxy = m.create("Foo").unwrap();
    made.f().unwrap();
    created.store(1);
    std::thread::sleep(Duration::from_secs(600));
}

/// The same over TCP: a `BaseManager` with a factory; a client process
/// SIGKILLed with an object leaves nothing behind.
#[test]
fn test_mymanager_remote() {
    for m in METHODS {
        let master = BaseManager::new()
            .address("127.0.0.1:0")
            .authkey(KEY)
            .register_factory::<Foo>("Foo")
            .register_factory::<Broken>("Broken")
            .start()
            .unwrap();
        let address = master.address().to_string();
        let a: FooProxy = master.create("Foo").unwrap();
        let b: FooProxy = master.create("Foo").unwrap();
        a.f().unwrap();
        assert_eq!((a.calls().unwrap(), b.calls().unwrap()), (1, 0));
        assert!(matches!(
            master.create::<FooProxy>("Nope"),
            Err(Error::KeyNotFound(_))
        ));
        assert!(matches!(
            master.create::<BarProxy>("Foo"),
            Err(Error::TypeMismatch { .. })
        ));
        assert!(matches!(
            master.create::<BrokenProxy>("Broken"),
            Err(Error::Remote(msg)) if msg.contains("Broken cannot be built")
        ));
        let before = master.number_of_objects().unwrap();
        drop((a, b));
        util::assert_objects(
            || master.number_of_objects().unwrap(),
            before - 2,
            &format!("{m:?}"),
        );

        let created = RawValue::new(0u32).unwrap();
        let mut p =
            Process::new(remote_create_then_hang, (address, created.clone())).start_method(m);
        p.start().unwrap();
        assert!(eventually(PROMPTLY, || created.load() == 1), "{m:?}");
        util::assert_objects(
            || master.number_of_objects().unwrap(),
            before - 1,
            &format!("{m:?}"),
        );
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        assert!(
            eventually(PROMPTLY, || master.number_of_objects().unwrap()
                == before - 2),
            "{m:?}: the killed client's object was not freed"
        );
        master.shutdown().unwrap();
    }
}
