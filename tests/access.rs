//! Who may use a manager: another user is refused by its peer credentials,
//! a process without the authkey by the handshake, and a flood of idle or
//! guessing connections neither holds up real clients nor costs the server
//! a thread each.

mod util;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;
use std::process::Child;

use multiproc::manager::protocol::{ArchivedResponse, Request, access_response, encode_request};
use multiproc::manager::server::{connect, connect_local, connect_local_with_authkey};
use multiproc::manager::{LocalAddress, ServeOptions, Server, TcpClient, TcpOptions};
use multiproc::rkyv::util::AlignedVec;
use multiproc::{
    AuthKey, BaseManager, DictProxy, Error, Event, Manager, Process, Queue, ServerAddress,
    StartMethod, current_process,
};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];
/// The uid and gid the attacking children drop to.
const NOBODY: u32 = 65534;
/// `serve`'s key (it wants at least 16 bytes).
const SERVE_KEY: &[u8] = b"access-test-serve-key";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Drops this (forked, single-threaded) process to uid and gid 65534.
fn become_nobody() {
    // SAFETY: plain credential calls with valid arguments, in a child of
    // the test that is about to act as another user.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setresgid(NOBODY, NOBODY, NOBODY), 0, "setresgid");
        assert_eq!(libc::setresuid(NOBODY, NOBODY, NOBODY), 0, "setresuid");
        assert_eq!(libc::geteuid(), NOBODY);
    }
}

/// A frame as the wire carries it: length, then payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// Reads one frame of at most 256 bytes (`None` at end of stream or on error).
fn read_frame(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut len = [0u8; 8];
    s.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 256 {
        return None;
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).ok()?;
    Some(payload)
}

fn is_challenge(f: &[u8]) -> bool {
    f.starts_with(b"#CHALLENGE#")
}

/// What another user's process managed against a local server.
#[derive(
    Debug,
    PartialEq,
    Eq,
    multiproc::rkyv::Archive,
    multiproc::rkyv::Serialize,
    multiproc::rkyv::Deserialize,
)]
#[rkyv(crate = multiproc::rkyv)]
struct Intrusion {
    /// The error of a proper client connection, with the right key.
    connect: String,
    /// Whether that error was `Authentication`.
    refused: bool,
    /// What the server sent to a raw connection that asked it to shut down.
    raw_answer: Vec<u8>,
}

/// In a child that dropped to another user: tries the proper client
/// handshake with the right key, then a raw connection that sends a
/// shutdown request.
fn intrude(address: LocalAddress, key: &[u8]) -> Intrusion {
    become_nobody();
    let attempt = connect_local_with_authkey(&address, key);
    let refused = matches!(attempt, Err(Error::Authentication(_)));
    let connect = match attempt {
        Ok(_) => "connected".to_string(),
        Err(e) => e.to_string(),
    };
    let name = std::os::unix::net::SocketAddr::from_abstract_name(address.socket_name()).unwrap();
    let mut raw_answer = Vec::new();
    if let Ok(mut s) = UnixStream::connect_addr(&name) {
        s.set_read_timeout(Some(PROMPTLY)).unwrap();
        let shutdown = encode_request(&Request::Shutdown, AlignedVec::new()).unwrap();
        // The server may have closed already: what it sent is still there.
        let _ = s.write_all(&frame(&shutdown));
        let _ = s.read_to_end(&mut raw_answer);
    }
    Intrusion {
        connect,
        refused,
        raw_answer,
    }
}

fn assert_refused(i: &Intrusion) {
    assert!(i.refused, "another user got: {}", i.connect);
    assert!(
        i.raw_answer.is_empty() || i.raw_answer == frame(b"#FAILURE#"),
        "the server answered another user with {:?}",
        String::from_utf8_lossy(&i.raw_answer)
    );
}

#[test]
fn another_user_cannot_use_or_shut_down_a_manager() {
    if !is_root() {
        println!("SKIPPED another_user_cannot_use_or_shut_down_a_manager: needs root");
        return;
    }
    for method in METHODS {
        let manager = Manager::start_with(method).unwrap();
        let d = manager.dict::<String, u32>().unwrap();
        d.insert("k".into(), 1).unwrap();
        let ServerAddress::Local(address) = *manager.address() else {
            panic!("a local manager has a local address")
        };
        // The child inherits this process's authkey: only its uid stops it.
        let key = current_process().authkey().as_bytes().to_vec();
        let mut p = Process::from_closure(move || intrude(address, &key));
        p.start().unwrap();
        let intrusion = p.join().unwrap();
        assert_refused(&intrusion);
        assert_eq!(d.get(&"k".to_string()).unwrap(), Some(1), "{method:?}");
        assert_eq!(d.len().unwrap(), 1);
        assert!(address.is_alive(), "{method:?}: the server went");
        manager.shutdown().unwrap();
    }
}

/// Start time of `pid` (field 22 of its stat), as a `LocalAddress` holds it.
fn start_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_ascii_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

/// The local socket of the manager server running as `pid`, found the way
/// any user can: in `/proc/net/unix`.
fn find_local_socket(pid: i32) -> LocalAddress {
    let prefix = format!("@multiproc-manager-{pid}-");
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let token = table
        .lines()
        .filter_map(|l| l.split_ascii_whitespace().last())
        .find_map(|name| name.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no socket of {pid} in /proc/net/unix"));
    LocalAddress {
        pid,
        start_ticks: start_ticks(pid),
        token: u64::from_str_radix(token, 16).unwrap(),
    }
}

/// Starts `multiproc serve` on a free port; returns it and its address.
fn serve(key: &std::path::Path) -> (Child, SocketAddr) {
    let (child, address) = util::start_serve(key, "127.0.0.1:0", &[]);
    (child, address.parse().unwrap())
}

/// Stops a `serve` child with SIGTERM and reaps it.
fn stop(mut child: Child) {
    // SAFETY: signalling our own child, whose pid we hold.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if !eventually(PROMPTLY, || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

#[test]
fn another_user_cannot_use_or_shut_down_a_serve_process() {
    if !is_root() {
        println!("SKIPPED another_user_cannot_use_or_shut_down_a_serve_process: needs root");
        return;
    }
    let key = util::serve_key_file("access-uid", SERVE_KEY);
    let (child, tcp) = serve(&key);
    let pid = child.id() as i32;
    let m = BaseManager::new()
        .address(tcp.to_string())
        .authkey(SERVE_KEY)
        .connect()
        .unwrap();
    let d = m.dict::<String, u32>().unwrap();
    d.insert("k".into(), 1).unwrap();
    let local = find_local_socket(pid);
    // The attacker even knows the key: only its uid stops it.
    let mut p = Process::from_closure(move || intrude(local, SERVE_KEY));
    p.start().unwrap();
    let intrusion = p.join().unwrap();
    assert_refused(&intrusion);
    assert_eq!(d.get(&"k".to_string()).unwrap(), Some(1));
    assert!(local.is_alive(), "the serve process went");
    // This user, with the key, may use the local socket.
    let mut own = connect_local_with_authkey(&local, SERVE_KEY).unwrap();
    assert_eq!(
        number_of_objects(&mut own.end),
        m.number_of_objects().unwrap()
    );
    drop(own);
    drop((d, m));
    stop(child);
    std::fs::remove_file(&key).unwrap();
}

fn number_of_objects(end: &mut multiproc::manager::channel::ClientEnd) -> usize {
    let request = encode_request(&Request::NumberOfObjects, AlignedVec::new()).unwrap();
    let mut response = AlignedVec::new();
    end.round_trip(&request, &mut response).unwrap();
    match access_response(&response).unwrap() {
        ArchivedResponse::Len(n) => n.to_native() as usize,
        _ => panic!("not a length"),
    }
}

/// In a child that dropped to another user: starts two managers (one that
/// lets root in), hands their addresses to the test, and keeps them until
/// told.
fn serve_as_nobody(back: Queue<(ServerAddress, ServerAddress)>, done: Event) -> bool {
    become_nobody();
    let strict = Manager::builder()
        .start_method(StartMethod::Fork)
        .start()
        .unwrap();
    let lenient = Manager::builder()
        .start_method(StartMethod::Fork)
        .allow_root(true)
        .start()
        .unwrap();
    back.put((*strict.address(), *lenient.address())).unwrap();
    let told = done.wait_timeout(PROMPTLY * 3).unwrap();
    strict.shutdown().unwrap();
    lenient.shutdown().unwrap();
    told
}

#[test]
fn root_is_refused_by_another_users_manager_unless_allowed() {
    if !is_root() {
        println!("SKIPPED root_is_refused_by_another_users_manager_unless_allowed: needs root");
        return;
    }
    let back = Queue::new().unwrap();
    let done = Event::new().unwrap();
    let (b, e) = (back.clone(), done.clone());
    let mut p = Process::from_closure(move || serve_as_nobody(b, e));
    p.start().unwrap();
    let (strict, lenient) = back.get_timeout(PROMPTLY * 3).unwrap();
    let refused = connect(&strict);
    assert!(
        matches!(refused, Err(Error::Authentication(_))),
        "{refused:?}"
    );
    let mut allowed = connect(&lenient).unwrap();
    assert_eq!(number_of_objects(&mut allowed.end), 0);
    drop(allowed);
    done.set().unwrap();
    assert!(p.join().unwrap(), "the child was not told in time");
}

fn my_authkey(_: ()) -> Vec<u8> {
    current_process().authkey().as_bytes().to_vec()
}

/// Connects to the manager at `address` with this process's key and uses it.
fn use_manager(address: ServerAddress) -> String {
    match Manager::connect(address).and_then(|m| m.dict::<u32, u32>()) {
        Ok(d) => {
            d.insert(1, 1).unwrap();
            "ok".into()
        }
        Err(Error::Authentication(_)) => "refused".into(),
        Err(e) => format!("unexpected: {e}"),
    }
}

#[test]
fn children_inherit_the_authkey_and_a_child_with_another_is_refused() {
    let mine = current_process().authkey();
    assert_eq!(mine.as_bytes().len(), 32);
    assert!(!format!("{mine:?}").contains(&format!("{:?}", mine.as_bytes())));
    for method in METHODS {
        let manager = Manager::start_with(method).unwrap();
        let mut p = Process::new(my_authkey, ()).start_method(method);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), mine.as_bytes(), "{method:?}");
        let other = AuthKey::random().unwrap();
        let mut p = Process::new(my_authkey, ())
            .start_method(method)
            .authkey(other.clone());
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), other.as_bytes(), "{method:?}");

        let address = *manager.address();
        let mut p = Process::new(use_manager, address).start_method(method);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), "ok", "{method:?}");
        // A spawned child given another key knows nothing else. (A forked
        // one inherits what this process knows: the key of the manager it
        // started, as a forked Python child inherits the manager object.)
        if method == StartMethod::Spawn {
            let mut p = Process::new(use_manager, address)
                .start_method(method)
                .authkey(other);
            p.start().unwrap();
            assert_eq!(p.join().unwrap(), "refused");
        }
        let wrong = connect_local_with_authkey(
            match &address {
                ServerAddress::Local(l) => l,
                ServerAddress::Tcp(_) => unreachable!(),
            },
            b"not the key",
        );
        assert!(matches!(wrong, Err(Error::Authentication(_))), "{wrong:?}");
        manager.shutdown().unwrap();
    }
}

fn insert_through(d: DictProxy<String, u32>) -> usize {
    d.insert("child".into(), 2).unwrap();
    d.len().unwrap()
}

/// Connects with the key it is given (its own authkey is another).
fn connect_with_key((address, key): (ServerAddress, Vec<u8>)) -> String {
    if !matches!(Manager::connect(address), Err(Error::Authentication(_))) {
        return "connected without the key".into();
    }
    let key = AuthKey::new(key).unwrap();
    match Manager::connect_with_authkey(address, &key).and_then(|m| m.dict::<u32, u32>()) {
        Ok(d) => {
            d.insert(1, 1).unwrap();
            "ok".into()
        }
        Err(e) => format!("{e}"),
    }
}

#[test]
fn a_manager_with_its_own_key_reaches_children_through_their_proxies() {
    for method in METHODS {
        let key = AuthKey::new(b"a key for one manager only").unwrap();
        let manager = Manager::builder()
            .start_method(method)
            .authkey(key.clone())
            .start()
            .unwrap();
        let d = manager.dict::<String, u32>().unwrap();
        d.insert("parent".into(), 1).unwrap();
        // The child's own authkey is not the manager's: the proxy brings it.
        let mut p = Process::new(insert_through, d.clone()).start_method(method);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 2, "{method:?}");
        // A process that knows only the address needs the key (a spawned
        // child with an authkey of its own: a forked one would inherit
        // this process's knowledge of the manager's key).
        if method == StartMethod::Spawn {
            let args = (*manager.address(), key.as_bytes().to_vec());
            let mut p = Process::new(connect_with_key, args)
                .start_method(method)
                .authkey(AuthKey::random().unwrap());
            p.start().unwrap();
            assert_eq!(p.join().unwrap(), "ok");
        }
        manager.shutdown().unwrap();
    }
}

/// Threads of process `pid` now.
fn threads(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// How a flood of idle connections fared: the ones whose handshake began
/// and are still open (the server may have cut off early ones already),
/// the ones whose handshake began, and the ones told to come back later.
type Flood = (u32, u32, u32);

/// Whether the server still holds its end of `s` open (it sends nothing
/// after its challenge, so anything readable is the end of the stream).
macro_rules! still_open {
    ($s:expr) => {{
        let mut c = $s.try_clone().unwrap();
        c.set_nonblocking(true).unwrap();
        let open = matches!(
            c.read(&mut [0u8; 1]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        );
        c.set_nonblocking(false).unwrap();
        open
    }};
}

/// Opens `count` connections to the local server at `address` and stays
/// silent on each; reports how the server answered, then (once `go` is
/// set) waits for the server to cut the admitted ones off and returns how
/// many it cut.
fn flood_local((address, count, back, go): (LocalAddress, u32, Queue<Flood>, Event)) -> u32 {
    let name = std::os::unix::net::SocketAddr::from_abstract_name(address.socket_name()).unwrap();
    let mut admitted = Vec::new();
    let mut busy = 0;
    for _ in 0..count {
        let mut s = UnixStream::connect_addr(&name).unwrap();
        s.set_read_timeout(Some(PROMPTLY)).unwrap();
        match read_frame(&mut s) {
            Some(f) if is_challenge(&f) => admitted.push(s),
            Some(f) if f == b"#BUSY#" => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let open = admitted.iter().filter(|s| still_open!(s)).count() as u32;
    back.put((open, admitted.len() as u32, busy)).unwrap();
    assert!(go.wait_timeout(PROMPTLY * 3).unwrap());
    // Silent past the handshake deadline: the server closes each.
    let mut cut = 0;
    for s in &mut admitted {
        let mut rest = Vec::new();
        if s.read_to_end(&mut rest).is_ok() {
            cut += 1;
        }
    }
    cut
}

/// The most handshakes one source may have in flight.
const PER_SOURCE: u32 = 16;
/// Idle connections the tests open.
const FLOOD: u32 = 300;
/// A bound on a server's threads while flooded: the handshakes in flight
/// from one source, the legitimate connections, and a few of its own;
/// far below one per idle connection.
const THREAD_BOUND: usize = 48;

#[test]
fn idle_local_connections_are_capped_and_cut_off_and_others_get_in() {
    for method in METHODS {
        let manager = Manager::start_with(method).unwrap();
        let ServerAddress::Local(address) = *manager.address() else {
            unreachable!()
        };
        let back = Queue::new().unwrap();
        let go = Event::new().unwrap();
        let mut flooder = Process::new(flood_local, (address, FLOOD, back.clone(), go.clone()))
            .start_method(method);
        flooder.start().unwrap();
        let (open, admitted, busy) = back.get_timeout(PROMPTLY * 3).unwrap();
        assert!(
            open <= PER_SOURCE,
            "{open} handshakes from one process at once"
        );
        assert!(busy > 0);
        assert_eq!(admitted + busy, FLOOD);
        let n = threads(manager.pid());
        assert!(n <= THREAD_BOUND, "{method:?}: the server runs {n} threads");
        // A real client (another process: this one) gets in and is served.
        let mut conn = connect_local(&address).unwrap();
        assert_eq!(number_of_objects(&mut conn.end), 0);
        let d = manager.dict::<u32, u32>().unwrap();
        d.insert(1, 1).unwrap();
        drop((conn, d));
        go.set().unwrap();
        assert_eq!(
            flooder.join().unwrap(),
            admitted,
            "{method:?}: not all were cut off"
        );
        manager.shutdown().unwrap();
    }
}

#[test]
fn idle_tcp_connections_from_one_host_do_not_hold_up_another() {
    let key = util::serve_key_file("access-flood", SERVE_KEY);
    let (child, tcp) = serve(&key);
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let mut admitted = Vec::new();
    let mut busy = 0;
    for _ in 0..FLOOD {
        let mut s = util::connect_from(attacker, tcp);
        s.set_read_timeout(Some(PROMPTLY)).unwrap();
        match read_frame(&mut s) {
            Some(f) if is_challenge(&f) => admitted.push(s),
            Some(f) if f == b"#BUSY#" => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let open = admitted.iter().filter(|s| still_open!(s)).count() as u32;
    assert!(
        open <= PER_SOURCE,
        "{open} handshakes from one host at once"
    );
    assert!(busy > 0);
    assert_eq!(admitted.len() as u32 + busy, FLOOD);
    let n = threads(child.id() as i32);
    assert!(n <= THREAD_BOUND, "the server runs {n} threads");
    // A real client from another address gets in at once and is served.
    let m = BaseManager::new()
        .address(tcp.to_string())
        .authkey(SERVE_KEY)
        .connect()
        .unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    d.insert(7, 49).unwrap();
    assert_eq!(d.get(&7).unwrap(), Some(49));
    // The idle ones are cut off at the handshake deadline.
    for s in &mut admitted {
        let mut rest = Vec::new();
        assert!(
            s.read_to_end(&mut rest).is_ok(),
            "an idle handshake was not cut off"
        );
    }
    drop((d, m));
    stop(child);
    std::fs::remove_file(&key).unwrap();
}

/// One wrong guess from `from`: true if the server ran a handshake (and
/// refused the answer), false if it refused before any.
fn guess_once(from: Ipv4Addr, to: SocketAddr) -> bool {
    let mut s = util::connect_from(from, to);
    s.set_read_timeout(Some(PROMPTLY)).unwrap();
    let first = read_frame(&mut s).expect("the server answers");
    if first == b"#FAILURE#" {
        return false;
    }
    assert!(is_challenge(&first), "{first:?}");
    let mut guess = b"{sha256}".to_vec();
    guess.extend_from_slice(&[0u8; 32]);
    s.write_all(&frame(&guess)).unwrap();
    assert_eq!(read_frame(&mut s).as_deref(), Some(&b"#FAILURE#"[..]));
    true
}

#[test]
fn a_host_that_keeps_guessing_is_refused_and_others_are_not() {
    let key = util::serve_key_file("access-guess", SERVE_KEY);
    let (child, tcp) = serve(&key);
    let guesser = Ipv4Addr::new(127, 0, 0, 3);
    let mut handshakes = 0;
    let mut refused_early = false;
    for _ in 0..60 {
        if guess_once(guesser, tcp) {
            handshakes += 1;
        } else {
            refused_early = true;
            break;
        }
    }
    assert!(
        refused_early,
        "{handshakes} wrong guesses and still challenged"
    );
    assert!(handshakes >= 2, "blocked after {handshakes} guesses");
    assert!(!guess_once(guesser, tcp), "the block did not last");
    // Another host still gets a handshake, and the right key still works.
    assert!(guess_once(Ipv4Addr::new(127, 0, 0, 4), tcp));
    let m = BaseManager::new()
        .address(tcp.to_string())
        .authkey(SERVE_KEY)
        .connect()
        .unwrap();
    m.number_of_objects().unwrap();
    drop(m);
    stop(child);
    std::fs::remove_file(&key).unwrap();
}

/// Guesses the key of the local server at `address` until the server
/// refuses this process before any handshake; returns the wrong guesses
/// it was let make, or `None` if it was never refused.
fn guess_locally(address: LocalAddress) -> Option<u32> {
    for guesses in 0..60 {
        match connect_local_with_authkey(&address, b"a wrong guess") {
            Err(Error::Authentication(m)) if m.contains("before any handshake") => {
                return Some(guesses);
            }
            Err(Error::Authentication(_)) => {}
            other => panic!("a wrong key got {other:?}"),
        }
    }
    None
}

#[test]
fn a_process_that_keeps_guessing_is_refused_and_others_are_not() {
    let manager = Manager::start_with(StartMethod::Fork).unwrap();
    let ServerAddress::Local(address) = *manager.address() else {
        unreachable!()
    };
    let mut p = Process::new(guess_locally, address);
    p.start().unwrap();
    let guesses = p.join().unwrap().expect("never refused");
    assert!(guesses >= 2, "refused after {guesses} guesses");
    // This process (another source) still gets in with the key.
    let mut conn = connect_local(&address).unwrap();
    assert_eq!(number_of_objects(&mut conn.end), 0);
    drop(conn);
    manager.shutdown().unwrap();
}

#[test]
fn a_client_stalled_inside_a_request_is_dropped_and_idle_ones_are_not() {
    const KEY: &[u8] = b"stall-test-key";
    let mut tcp = TcpOptions::new("127.0.0.1:0".parse().unwrap(), KEY);
    tcp.frame_stall_ms = 300;
    let options = ServeOptions {
        tcp: Some(tcp),
        authkey: KEY.to_vec(),
        allow_root: false,
        limits: Default::default(),
        python: None,
    };
    let token = u64::from(std::process::id()) << 32 | 0x5ca1;
    let server = Server::bind(token, &options).unwrap();
    let address = server.tcp_address().unwrap();
    let stop = server.shutdown_handle();
    let serving = std::thread::spawn(move || server.serve_forever());
    let mut idle = TcpClient::connect(address, KEY).unwrap();
    let stalled = TcpClient::connect(address, KEY).unwrap();
    let mut raw = TcpStream::from(stalled.fd().unwrap().try_clone_to_owned().unwrap());
    // Half a request: a header that promises 100 bytes, and 10 of them.
    raw.write_all(&100u64.to_le_bytes()).unwrap();
    raw.write_all(&[0u8; 10]).unwrap();
    raw.set_read_timeout(Some(PROMPTLY)).unwrap();
    let mut rest = Vec::new();
    let cut = raw.read_to_end(&mut rest);
    assert!(
        matches!(&cut, Ok(0))
            || matches!(&cut, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the stalled client was not dropped: {cut:?}"
    );
    // The idle client was quiet for longer than the stall limit, between
    // requests: it is still served.
    let request = encode_request(&Request::NumberOfObjects, AlignedVec::new()).unwrap();
    let mut response = AlignedVec::new();
    idle.round_trip(&request, &mut response).unwrap();
    assert!(matches!(
        access_response(&response).unwrap(),
        ArchivedResponse::Len(_)
    ));
    drop((idle, stalled, raw));
    stop.shutdown();
    serving.join().unwrap();
}

#[test]
fn debug_forms_never_show_keys_or_socket_tokens() {
    let manager = Manager::start_with(StartMethod::Fork).unwrap();
    let ServerAddress::Local(local) = *manager.address() else {
        unreachable!()
    };
    let token = format!("{:x}", local.token);
    let key = current_process().authkey();
    let key_text = format!("{:?}", key.as_bytes());
    let d = manager.dict::<u32, u32>().unwrap();
    let repr = multiproc_proxy::ProxyRepr {
        server: *manager.address(),
        object: 1,
        fingerprint: 2,
        type_name: "t".into(),
        pin: 0,
        authkey: b"proxy-secret".to_vec(),
    };
    let listener = multiproc::Listener::bind(
        &multiproc::Address::unique_abstract(),
        Some(b"listener-secret"),
    )
    .unwrap();
    let mut tcp = TcpOptions::new("127.0.0.1:0".parse().unwrap(), b"tcp-secret");
    tcp.max_frame = 1;
    let options = ServeOptions {
        tcp: Some(tcp),
        authkey: b"local-secret".to_vec(),
        allow_root: true,
        limits: Default::default(),
        python: None,
    };
    let builder = Manager::builder().authkey(AuthKey::new(b"builder-secret").unwrap());
    let conn = connect(manager.address()).unwrap();
    let shown = [
        format!("{conn:?}"),
        format!("{manager:?}"),
        format!("{:?}", manager.address()),
        format!("{d:?}"),
        format!("{repr:?}"),
        format!("{key:?}"),
        format!("{listener:?}"),
        format!("{options:?}"),
        format!("{builder:?}"),
    ];
    for text in shown {
        for secret in [
            &token,
            &key_text,
            "proxy-secret",
            "listener-secret",
            "tcp-secret",
            "local-secret",
            "builder-secret",
        ] {
            assert!(!text.contains(secret), "{text} shows a secret");
        }
    }
    drop((d, conn));
    manager.shutdown().unwrap();
}

/// Receives a proxy for a manager whose key this process was never told.
fn receive_proxy(q: Queue<DictProxy<String, u32>>) -> String {
    match q.get_timeout(PROMPTLY) {
        Ok(d) => format!("decoded: {:?}", d.len()),
        Err(Error::Authentication(_)) => "refused".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// A `BaseManager` proxy that reaches a spawned child which does not know
/// the manager's key is `Error::Authentication` there (as CPython's
/// `AuthenticationError`), not a codec error: code that matches on it sees
/// what to fix. From a port of CPython's tests.
#[test]
fn a_proxy_received_without_its_managers_key_is_an_authentication_error() {
    let m = BaseManager::new()
        .authkey(b"a key the child is not told")
        .start()
        .unwrap();
    let d = m.dict::<String, u32>().unwrap();
    let q: Queue<DictProxy<String, u32>> = Queue::new().unwrap();
    q.put(d.clone()).unwrap();
    let mut p = Process::new(receive_proxy, q).start_method(StartMethod::Spawn);
    p.start().unwrap();
    assert_eq!(p.join_timeout(PROMPTLY).unwrap(), "refused");
    d.insert("still".into(), 1).unwrap();
    assert_eq!(d.len().unwrap(), 1);
}
