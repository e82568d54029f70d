//! Socket connections between processes: Unix paths, abstract names and TCP,
//! authkeys right and wrong, size limits, timeouts, dead peers, garbage
//! peers, and the frame decoder under random input.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use multiproc::connection::{Address, Listener, SocketConnection, client, wait};
use multiproc::wire::{FrameReader, write_frame};
use multiproc::{Error, Process, Shareable, StartMethod};
use proptest::prelude::*;
use util::{PROMPTLY, assert_not_our_zombie};

multiproc::init_before_main!();

const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::Fork,
    StartMethod::Forkserver,
];
const KEY: &[u8] = b"a shared secret";

/// A socket path unique to this test process and `tag`.
fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("multiproc-test-{}-{tag}.sock", std::process::id()))
}

/// One address of each kind.
fn every_kind(tag: &str) -> [Address; 3] {
    [
        Address::Unix(socket_path(tag)),
        Address::unique_abstract(),
        "127.0.0.1:0".parse().unwrap(),
    ]
}

/// Child: connects back and echoes every message until "bye"; returns the count.
fn echo_client((address, key): (Address, Option<Vec<u8>>)) -> u32 {
    let mut c: SocketConnection<String> = client(&address, key.as_deref()).expect("connect");
    let mut echoed = 0;
    loop {
        let m = c.recv().expect("recv");
        if m == "bye" {
            return echoed;
        }
        c.send(&m).expect("send");
        echoed += 1;
    }
}

/// Child: connects with `key`, says hello if let in; returns what happened.
fn hello_client((address, key): (Address, Vec<u8>)) -> String {
    match client::<String>(&address, Some(&key)) {
        Ok(mut c) => {
            c.send(&"hello".to_string()).expect("send");
            "ok".into()
        }
        Err(Error::Authentication(_)) => "authentication".into(),
        Err(e) => format!("unexpected: {e}"),
    }
}

/// Child: connects, says it is ready, then waits to be killed.
fn ready_then_hang(address: Address) {
    let mut c: SocketConnection<String> = client(&address, None).expect("connect");
    c.send(&"ready".to_string()).expect("send");
    std::thread::sleep(Duration::from_secs(120));
}

fn start<R: multiproc::Shareable>(mut p: Process<R>) -> Process<R> {
    p.start().expect("start");
    p
}

#[test]
fn echo_between_processes_over_every_address_kind() {
    for m in METHODS {
        for (i, address) in every_kind(&format!("echo-{m:?}")).into_iter().enumerate() {
            // Authenticated on the first two kinds, plain on TCP.
            let key = (i < 2).then_some(KEY);
            let listener = Listener::bind(&address, key).unwrap();
            let bound = listener.address().clone();
            let mut p = start(
                Process::new(echo_client, (bound.clone(), key.map(<[u8]>::to_vec))).start_method(m),
            );
            let mut conn: SocketConnection<String> = listener.accept_timeout(PROMPTLY).unwrap();
            for n in 0..50 {
                conn.send(&format!("message {n}")).unwrap();
                assert_eq!(conn.recv_timeout(PROMPTLY).unwrap(), format!("message {n}"));
            }
            let big = "x".repeat(3 << 20);
            conn.send(&big).unwrap();
            assert_eq!(conn.recv_timeout(PROMPTLY).unwrap(), big, "{m:?} {bound}");
            conn.send(&"bye".to_string()).unwrap();
            assert_eq!(p.join_timeout(PROMPTLY).unwrap(), 51, "{m:?} {bound}");
            assert!(matches!(conn.recv_timeout(PROMPTLY), Err(Error::Closed)));
            assert_not_our_zombie(p.pid().unwrap());
            drop(listener);
            if let Address::Unix(path) = &bound {
                assert!(!path.exists(), "the listener left {path:?} behind");
            }
        }
    }
}

#[test]
fn a_wrong_key_is_refused_and_the_listener_serves_the_next_client() {
    for m in METHODS {
        for address in every_kind(&format!("keys-{m:?}")) {
            let listener = Listener::bind(&address, Some(KEY)).unwrap();
            let bound = listener.address().clone();

            let mut bad = start(
                Process::new(hello_client, (bound.clone(), b"a wrong guess".to_vec()))
                    .start_method(m),
            );
            match listener.accept_timeout::<String>(PROMPTLY) {
                Err(Error::Authentication(_)) => {}
                other => panic!("{m:?} {bound}: {other:?}"),
            }
            assert_eq!(bad.join_timeout(PROMPTLY).unwrap(), "authentication");

            let mut good =
                start(Process::new(hello_client, (bound.clone(), KEY.to_vec())).start_method(m));
            let mut conn: SocketConnection<String> = listener.accept_timeout(PROMPTLY).unwrap();
            assert_eq!(conn.recv_timeout(PROMPTLY).unwrap(), "hello");
            assert_eq!(good.join_timeout(PROMPTLY).unwrap(), "ok");
        }
    }
}

#[test]
fn a_dead_peer_is_closed() {
    for m in METHODS {
        for address in every_kind(&format!("death-{m:?}")) {
            let listener = Listener::bind(&address, None).unwrap();
            let mut p =
                start(Process::new(ready_then_hang, listener.address().clone()).start_method(m));
            let mut conn: SocketConnection<String> = listener.accept_timeout(PROMPTLY).unwrap();
            assert_eq!(conn.recv_timeout(PROMPTLY).unwrap(), "ready");
            p.kill().unwrap();
            assert!(
                matches!(conn.recv_timeout(PROMPTLY), Err(Error::Closed)),
                "{m:?} {address}"
            );
            // Sending to a dead peer is Closed too, never SIGPIPE.
            let mut refused = false;
            for _ in 0..100 {
                match conn.send_bytes(&[0u8; 4096]) {
                    Ok(()) => {}
                    Err(Error::Closed) => {
                        refused = true;
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(refused, "{m:?} {address}");
            assert!(p.join_timeout(PROMPTLY).is_err());
            assert_not_our_zombie(p.pid().unwrap());
        }
    }
}

#[test]
fn a_truncated_message_is_a_protocol_error() {
    let listener = Listener::bind(&Address::unique_abstract(), None).unwrap();
    let mut raw = raw_unix(&listener);
    let mut conn: SocketConnection<String> = listener.accept_timeout(PROMPTLY).unwrap();
    let mut frame = Vec::new();
    write_frame(&mut frame, b"never finished").unwrap();
    raw.write_all(&frame[..frame.len() - 3]).unwrap();
    drop(raw);
    assert!(matches!(
        conn.recv_timeout(PROMPTLY),
        Err(Error::Protocol(_))
    ));
}

fn raw_unix(listener: &Listener) -> UnixStream {
    use std::os::linux::net::SocketAddrExt;
    let Address::UnixAbstract(name) = listener.address() else {
        panic!("not an abstract address")
    };
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    UnixStream::connect_addr(&addr).unwrap()
}

#[test]
fn a_timed_out_receive_keeps_the_partial_message() {
    let listener = Listener::bind(&Address::unique_abstract(), None).unwrap();
    let mut raw = raw_unix(&listener);
    let mut conn: SocketConnection<String> = listener.accept_timeout(PROMPTLY).unwrap();
    let mut frame = Vec::new();
    write_frame(&mut frame, &"split in three".to_string().encode().unwrap()).unwrap();
    let (a, rest) = frame.split_at(5);
    let (b, c) = rest.split_at(7);

    assert!(matches!(conn.try_recv(), Err(Error::Empty)));
    raw.write_all(a).unwrap();
    let waited = Instant::now();
    assert!(matches!(
        conn.recv_timeout(Duration::from_millis(50)),
        Err(Error::Timeout(_))
    ));
    assert!(waited.elapsed() >= Duration::from_millis(50));
    raw.write_all(b).unwrap();
    assert!(matches!(conn.try_recv(), Err(Error::Empty)));
    raw.write_all(c).unwrap();
    assert_eq!(conn.recv_timeout(PROMPTLY).unwrap(), "split in three");
}

#[test]
fn recv_bytes_max_refuses_a_longer_message_without_losing_it() {
    let (mut a, mut b) = SocketConnection::<String>::pair().unwrap();
    a.send_bytes(&[7u8; 100]).unwrap();
    a.send_bytes(b"short").unwrap();
    assert!(matches!(b.recv_bytes_max(99), Err(Error::Protocol(_))));
    assert_eq!(b.recv_bytes_max(100).unwrap(), [7u8; 100]);
    assert_eq!(b.recv_bytes_max(5).unwrap(), b"short");
}

#[test]
fn poll_and_timeouts_fire_and_do_not_fire() {
    for m in METHODS {
        let listener = Listener::bind(&Address::unique_abstract(), None).unwrap();
        let mut p =
            start(Process::new(echo_client, (listener.address().clone(), None)).start_method(m));
        let mut conn: SocketConnection<String> = listener.accept_timeout(PROMPTLY).unwrap();

        // Firing: nothing was sent, so every bounded wait ends empty-handed.
        assert!(!conn.poll(Some(Duration::ZERO)).unwrap());
        let waited = Instant::now();
        assert!(!conn.poll(Some(Duration::from_millis(30))).unwrap());
        assert!(waited.elapsed() >= Duration::from_millis(30));
        assert!(matches!(
            conn.recv_timeout(Duration::from_millis(30)),
            Err(Error::Timeout(_))
        ));
        assert!(matches!(conn.try_recv(), Err(Error::Empty)));

        // Not firing: the echo arrives within the (generous) bound.
        conn.send(&"ping".to_string()).unwrap();
        assert!(conn.poll(Some(PROMPTLY)).unwrap());
        assert!(conn.poll(None).unwrap());
        assert_eq!(conn.try_recv().unwrap(), "ping");
        conn.send(&"pong".to_string()).unwrap();
        assert_eq!(conn.recv_timeout(PROMPTLY).unwrap(), "pong");

        conn.send(&"bye".to_string()).unwrap();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), 2);
        // The peer's end of stream counts as ready: recv would not block.
        assert!(conn.poll(Some(PROMPTLY)).unwrap());
        assert!(matches!(conn.recv(), Err(Error::Closed)));
        conn.close();
        assert!(matches!(conn.poll(None), Err(Error::Closed)));
    }
}

#[test]
fn wait_reports_the_ready_connections() {
    let (mut a1, a2) = SocketConnection::<u32>::pair().unwrap();
    let (mut b1, b2) = SocketConnection::<u32>::pair().unwrap();
    let (c1, mut c2) = SocketConnection::<u32>::pair().unwrap();
    let listener = Listener::bind(&Address::unique_abstract(), None).unwrap();

    let waited = Instant::now();
    assert!(
        wait(&[&a2, &b2, &c1, &listener], Some(Duration::from_millis(30)))
            .unwrap()
            .is_empty()
    );
    assert!(waited.elapsed() >= Duration::from_millis(30));

    b1.send(&2).unwrap();
    c2.send(&3).unwrap();
    assert_eq!(wait(&[&a2, &b2, &c1, &listener], None).unwrap(), [1, 2]);

    // A listener is ready when a client waits; a raw descriptor works too.
    let _raw = raw_unix(&listener);
    let fd = a2.fd().unwrap();
    assert_eq!(wait(&[&fd, &listener], Some(PROMPTLY)).unwrap(), [1]);
    a1.send(&1).unwrap();
    assert_eq!(wait(&[&fd], Some(PROMPTLY)).unwrap(), [0]);
    assert!(wait(&[], None).is_err());
}

#[test]
fn a_message_buffered_behind_another_counts_as_ready() {
    let (mut a, mut b) = SocketConnection::<u32>::pair().unwrap();
    a.send(&1).unwrap();
    a.send(&2).unwrap();
    // Both frames are read from the socket at once; the second waits in the buffer.
    assert!(wait(&[&b], Some(PROMPTLY)).unwrap() == [0]);
    assert_eq!(b.recv().unwrap(), 1);
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(wait(&[&b], Some(Duration::ZERO)).unwrap(), [0]);
    assert_eq!(b.try_recv().unwrap(), 2);
}

#[test]
fn garbage_and_stalled_clients_fail_their_handshake_promptly() {
    let mut listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(KEY)).unwrap();
    listener.set_handshake_timeout(Duration::from_millis(300));
    let Address::Tcp(addr) = *listener.address() else {
        unreachable!()
    };

    // An HTTP request: its first 8 bytes read as an enormous length.
    let mut http = TcpStream::connect(addr).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    assert!(matches!(
        listener.accept_timeout::<String>(PROMPTLY),
        Err(Error::Authentication(_))
    ));
    assert!(started.elapsed() < PROMPTLY);
    // The server hung up on it (a reset, as its request was never read).
    let mut reply = Vec::new();
    http.set_read_timeout(Some(PROMPTLY)).unwrap();
    let _ = http.read_to_end(&mut reply);

    // A plausible length, then silence; and a client that says nothing.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(&100u64.to_le_bytes()).unwrap();
    stalled.write_all(b"abc").unwrap();
    let silent = TcpStream::connect(addr).unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        assert!(matches!(
            listener.accept_timeout::<String>(PROMPTLY),
            Err(Error::Authentication(_))
        ));
        assert!(started.elapsed() < PROMPTLY);
    }
    drop((stalled, silent));

    // A well-behaved client is served afterwards.
    let address = listener.address().clone();
    let t = std::thread::spawn(move || {
        let mut c: SocketConnection<String> = client(&address, Some(KEY)).unwrap();
        c.send(&"after the garbage".to_string()).unwrap();
        c.recv().unwrap()
    });
    let mut conn: SocketConnection<String> = listener.accept_timeout(PROMPTLY).unwrap();
    assert_eq!(conn.recv_timeout(PROMPTLY).unwrap(), "after the garbage");
    conn.send(&"welcome".to_string()).unwrap();
    assert_eq!(t.join().unwrap(), "welcome");
}

#[test]
fn a_client_of_a_silent_server_gives_up() {
    // A plain listener never sends the challenge an authenticating client
    // waits for: the client gives up at its deadline, and says why.
    let listener = Listener::bind(&Address::unique_abstract(), None).unwrap();
    let started = Instant::now();
    let r = SocketConnection::<String>::connect_timeout(
        listener.address(),
        Some(KEY),
        Duration::from_millis(200),
    );
    assert!(
        matches!(&r, Err(Error::Authentication(m)) if m.contains("without an authkey")),
        "{r:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

/// A client without a key against a listener with one, over every address
/// kind: the listener's accept and the client's first receive are both
/// `Authentication` (the client never sees the challenge as a message),
/// whether the client sends first or only receives.
#[test]
fn a_client_without_a_key_fails_on_both_sides_against_a_listener_with_one() {
    for sends_first in [true, false] {
        for address in every_kind(&format!("keyless-{sends_first}")) {
            let listener = Listener::bind(&address, Some(KEY)).unwrap();
            let address = listener.address().clone();
            let client_side = std::thread::spawn(move || {
                let mut c: SocketConnection<String> = client(&address, None).unwrap();
                if sends_first {
                    // Taken by the listener as its handshake's answer, and refused.
                    let _ = c.send(&"hello".to_string());
                }
                let first = c.recv_timeout(PROMPTLY);
                (first, c.recv_timeout(PROMPTLY))
            });
            let accepted = listener.accept_timeout::<String>(PROMPTLY);
            assert!(
                matches!(accepted, Err(Error::Authentication(_))),
                "{}: listener got {accepted:?}",
                listener.address()
            );
            let (first, then) = client_side.join().unwrap();
            assert!(
                matches!(first, Err(Error::Authentication(_))),
                "{}: the client's first receive got {first:?}",
                listener.address()
            );
            assert!(matches!(then, Err(Error::Closed)), "{then:?}");
        }
    }
}

#[test]
fn connecting_to_nothing_is_an_io_error() {
    let gone = Address::Unix(socket_path("nobody-listens"));
    assert!(matches!(client::<u8>(&gone, None), Err(Error::Io(_))));
    assert!(matches!(
        client::<u8>(&Address::unique_abstract(), None),
        Err(Error::Io(_))
    ));
}

#[test]
fn a_length_prefix_alone_allocates_little() {
    let mut stream = (60u64 << 20).to_le_bytes().to_vec();
    stream.extend_from_slice(&[1u8; 1000]);
    let mut r = FrameReader::default();
    let mut s = &stream[..];
    assert!(matches!(r.read_frame(&mut s), Err(Error::Protocol(_))));
    assert!(r.capacity() < 64 << 10, "{}", r.capacity());
}

// ---- the frame decoder under random input ----

/// Hands out `data` in pieces of the given sizes (cycled), with an optional
/// `WouldBlock` before each piece, as a socket with a timeout would.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
    block_first: bool,
    blocked: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.block_first && !self.blocked && !self.data.is_empty() {
            self.blocked = true;
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        self.blocked = false;
        let size = self.sizes[self.next % self.sizes.len()].max(1);
        self.next += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Reads frames until an error, resuming after every `WouldBlock`.
fn read_all(r: &mut FrameReader, s: &mut Chunked<'_>) -> (Vec<Vec<u8>>, Error) {
    let mut frames = Vec::new();
    loop {
        match r.read_frame(s) {
            Ok(f) => {
                assert!(f.len() <= r.max_frame());
                frames.push(f);
            }
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return (frames, e),
        }
        assert!(r.capacity() <= r.capacity_bound());
    }
}

/// What a correct decoder must make of `data`: the frames, then how it ends.
fn reference(data: &[u8], max: usize) -> (Vec<Vec<u8>>, &'static str) {
    let mut frames = Vec::new();
    let mut rest = data;
    loop {
        if rest.is_empty() {
            return (frames, "closed");
        }
        if rest.len() < 8 {
            return (frames, "protocol");
        }
        let len = u64::from_le_bytes(rest[..8].try_into().unwrap());
        if len > max as u64 || ((rest.len() - 8) as u64) < len {
            return (frames, "protocol");
        }
        frames.push(rest[8..8 + len as usize].to_vec());
        rest = &rest[8 + len as usize..];
    }
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Closed => "closed",
        Error::Protocol(_) => "protocol",
        _ => "other",
    }
}

/// Random bytes, often made of whole frames, plausible length prefixes and
/// short runs of junk, so that decoding gets far before it goes wrong.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 0..60).prop_map(|p| {
                let mut f = Vec::new();
                write_frame(&mut f, &p).unwrap();
                f
            }),
            1 => prop::collection::vec(any::<u8>(), 0..12),
            1 => (0u64..80).prop_map(|n| n.to_le_bytes().to_vec()),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_streams_never_panic_or_overallocate(
        data in stream_bytes(),
        max in 0usize..100,
        sizes in prop::collection::vec(1usize..40, 1..8),
        block_first in any::<bool>(),
    ) {
        let mut r = FrameReader::new(max);
        let mut s = Chunked { data: &data, sizes, next: 0, block_first, blocked: false };
        let (frames, end) = read_all(&mut r, &mut s);
        let (want, want_end) = reference(&data, max);
        prop_assert_eq!(frames, want);
        prop_assert_eq!(kind(&end), want_end);
    }

    #[test]
    fn valid_frames_round_trip_and_truncations_are_caught(
        payloads in prop::collection::vec(
            prop_oneof![
                8 => prop::collection::vec(any::<u8>(), 0..200),
                1 => prop::collection::vec(any::<u8>(), 20_000..70_000),
            ],
            0..6,
        ),
        sizes in prop::collection::vec(1usize..100_000, 1..6),
        block_first in any::<bool>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = Vec::new();
        for p in &payloads {
            write_frame(&mut data, p).unwrap();
        }

        let mut r = FrameReader::new(1 << 17);
        let mut s = Chunked { data: &data, sizes: sizes.clone(), next: 0, block_first, blocked: false };
        let (frames, end) = read_all(&mut r, &mut s);
        prop_assert_eq!(&frames, &payloads);
        prop_assert_eq!(kind(&end), "closed");

        let cut = if data.is_empty() { 0 } else { cut.index(data.len()) };
        let mut r = FrameReader::new(1 << 17);
        let mut s = Chunked { data: &data[..cut], sizes, next: 0, block_first, blocked: false };
        let (frames, end) = read_all(&mut r, &mut s);
        let (want, want_end) = reference(&data[..cut], 1 << 17);
        prop_assert_eq!(frames, want);
        prop_assert_eq!(kind(&end), want_end);
    }
}

// ----- wait() over every kind of object (CPython's TestWait) -----

use multiproc::connection::Waitable;
use multiproc::{Connection, Pipe, Queue};

/// Sends ten `(i, pid)` messages, pausing a little before each when `slow`.
fn child_test_wait((w, slow): (Connection<(u32, i32)>, bool)) {
    for i in 0..10u32 {
        if slow {
            std::thread::sleep(Duration::from_millis(u64::from(i * 7 % 30)));
        }
        w.send((i, std::process::id() as i32)).unwrap();
    }
    w.close();
}

fn check_wait(slow: bool) {
    for m in METHODS {
        let mut readers = Vec::new();
        let mut procs = Vec::new();
        for _ in 0..4 {
            let (r, w) = Pipe::one_way::<(u32, i32)>().unwrap();
            procs.push(start(
                Process::new(child_test_wait, (w, slow))
                    .start_method(m)
                    .daemon(true),
            ));
            readers.push(r);
        }
        let mut messages = Vec::new();
        while !readers.is_empty() {
            let objects: Vec<&dyn Waitable> = readers.iter().map(|r| r as _).collect();
            let ready = wait(&objects, Some(PROMPTLY)).unwrap();
            assert!(!ready.is_empty(), "{m:?}: nothing became ready");
            for i in ready.into_iter().rev() {
                match readers[i].recv() {
                    Ok(msg) => messages.push(msg),
                    Err(Error::Closed) => {
                        readers.remove(i);
                    }
                    Err(e) => panic!("{m:?}: {e}"),
                }
            }
        }
        let mut expected: Vec<(u32, i32)> = procs
            .iter()
            .flat_map(|p| (0..10).map(move |i| (i, p.pid().unwrap())))
            .collect();
        expected.sort_unstable();
        messages.sort_unstable();
        assert_eq!(messages, expected, "{m:?}");
        for mut p in procs {
            p.join_timeout(PROMPTLY).unwrap();
        }
    }
}

#[test]
fn test_wait() {
    check_wait(false);
}

#[test]
fn test_wait_slow() {
    check_wait(true);
}

/// Connects to `address` and sends ten lines, pausing a little when `slow`.
fn child_test_wait_socket((address, slow): (Address, bool)) {
    let mut conn = SocketConnection::<String>::connect(&address, None).unwrap();
    for i in 0..10u32 {
        if slow {
            std::thread::sleep(Duration::from_millis(u64::from(i * 7 % 30)));
        }
        conn.send(&format!("{i}\n")).unwrap();
    }
}

fn check_wait_socket(slow: bool) {
    for m in METHODS {
        let address = Address::unique_abstract();
        let listener = Listener::bind(&address, None).unwrap();
        let procs: Vec<_> = (0..4)
            .map(|_| {
                start(
                    Process::new(child_test_wait_socket, (address.clone(), slow))
                        .start_method(m)
                        .daemon(true),
                )
            })
            .collect();
        let mut readers: Vec<SocketConnection<String>> =
            (0..4).map(|_| listener.accept().unwrap()).collect();
        let mut got = vec![String::new(); 4];
        let mut open: Vec<usize> = (0..4).collect();
        while !open.is_empty() {
            let objects: Vec<&dyn Waitable> = open.iter().map(|&i| &readers[i] as _).collect();
            let ready = wait(&objects, Some(PROMPTLY)).unwrap();
            assert!(!ready.is_empty(), "{m:?}: nothing became ready");
            for k in ready.into_iter().rev() {
                let i = open[k];
                match readers[i].recv() {
                    Ok(line) => got[i].push_str(&line),
                    Err(Error::Closed) => {
                        open.remove(k);
                    }
                    Err(e) => panic!("{m:?}: {e}"),
                }
            }
        }
        let expected: String = (0..10).map(|i| format!("{i}\n")).collect();
        assert!(got.iter().all(|g| *g == expected), "{m:?}: {got:?}");
        for mut p in procs {
            p.join_timeout(PROMPTLY).unwrap();
        }
    }
}

#[test]
fn test_wait_socket() {
    check_wait_socket(false);
}

#[test]
fn test_wait_socket_slow() {
    check_wait_socket(true);
}

#[test]
fn test_wait_timeout() {
    let (a, b) = Pipe::new::<()>().unwrap();
    assert!(
        wait(&[&a, &b], Some(Duration::from_millis(200)))
            .unwrap()
            .is_empty()
    );
    b.send(()).unwrap();
    assert_eq!(wait(&[&a, &b], Some(PROMPTLY)).unwrap(), [0]);
}

/// Releases `sem`, then sleeps `ms`.
fn signal_and_sleep((sem, ms): (multiproc::Semaphore, u64)) {
    sem.release().unwrap();
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn test_wait_integer_mixes_sentinels_and_pipes() {
    for m in METHODS {
        let sem = multiproc::Semaphore::new(0).unwrap();
        let (a, b) = Pipe::new::<()>().unwrap();
        let mut p = start(Process::new(signal_and_sleep, (sem.clone(), 300)).start_method(m));
        sem.acquire_timeout(PROMPTLY).unwrap();
        let sentinel = p.sentinel().unwrap();
        // Only the process's end makes anything ready.
        assert_eq!(
            wait(&[&a, &sentinel, &b], Some(PROMPTLY)).unwrap(),
            [1],
            "{m:?}"
        );
        a.send(()).unwrap();
        assert_eq!(wait(&[&a, &sentinel, &b], Some(PROMPTLY)).unwrap(), [1, 2]);
        b.send(()).unwrap();
        assert_eq!(
            wait(&[&a, &sentinel, &b], Some(PROMPTLY)).unwrap(),
            [0, 1, 2]
        );
        p.join_timeout(PROMPTLY).unwrap();
    }
}

#[test]
fn test_neg_timeout_is_a_zero_timeout() {
    let (a, _b) = Pipe::new::<()>().unwrap();
    // Rust durations are never negative: Python's timeout=-1 is ZERO here.
    assert!(wait(&[&a], Some(Duration::ZERO)).unwrap().is_empty());
}

fn put_after((q, ms): (Queue<u32>, u64)) {
    std::thread::sleep(Duration::from_millis(ms));
    q.put(5).unwrap();
}

fn send_after((conn, ms): (Connection<u32>, u64)) {
    std::thread::sleep(Duration::from_millis(ms));
    conn.send(6).unwrap();
}

#[test]
fn wait_wakes_for_queues_pipes_sockets_and_sentinels_mixed() {
    for m in METHODS {
        let q = Queue::<u32>::new().unwrap();
        let (here, there) = Pipe::new::<u32>().unwrap();
        let (mut s1, s2) = SocketConnection::<u32>::pair().unwrap();
        let mut sleeper = start(
            Process::new(
                signal_and_sleep,
                (multiproc::Semaphore::new(0).unwrap(), 60_000),
            )
            .start_method(m),
        );
        let sentinel = sleeper.sentinel().unwrap();
        let objects: [&dyn Waitable; 4] = [&q, &here, &s2, &sentinel];
        assert!(wait(&objects, Some(Duration::ZERO)).unwrap().is_empty());
        // A queue put in another process wakes the wait (a helper thread
        // sleeps on the rings while this thread polls the descriptors).
        let mut p = start(Process::new(put_after, (q.clone(), 50)).start_method(m));
        assert_eq!(wait(&objects, Some(PROMPTLY)).unwrap(), [0], "{m:?}");
        assert_eq!(q.get().unwrap(), 5);
        p.join_timeout(PROMPTLY).unwrap();
        let mut p = start(Process::new(send_after, (there, 50)).start_method(m));
        assert_eq!(wait(&objects, Some(PROMPTLY)).unwrap(), [1], "{m:?}");
        assert_eq!(here.recv().unwrap(), 6);
        p.join_timeout(PROMPTLY).unwrap();
        // The pipe's peer ended: end of file counts as ready.
        assert_eq!(wait(&objects, Some(PROMPTLY)).unwrap(), [1], "{m:?}");
        assert!(matches!(here.recv(), Err(Error::Closed)));
        let objects: [&dyn Waitable; 3] = [&q, &s2, &sentinel];
        s1.send(&7).unwrap();
        assert_eq!(wait(&objects, Some(PROMPTLY)).unwrap(), [1]);
        sleeper.kill().unwrap();
        assert_eq!(wait(&objects[2..], Some(PROMPTLY)).unwrap(), [0]);
        let _ = sleeper.join_timeout(PROMPTLY);
        // A closed queue is ready: get fails at once.
        q.close().unwrap();
        assert_eq!(wait(&objects[..1], Some(PROMPTLY)).unwrap(), [0]);
    }
}

#[test]
fn wait_on_shared_memory_objects_alone_sleeps_on_all_of_them() {
    let queues: Vec<Queue<u8>> = (0..3).map(|_| Queue::new().unwrap()).collect();
    let pipes: Vec<(Connection<u8>, Connection<u8>)> =
        (0..3).map(|_| Pipe::new().unwrap()).collect();
    let mut objects: Vec<&dyn Waitable> = queues.iter().map(|q| q as _).collect();
    objects.extend(pipes.iter().map(|(a, _)| a as &dyn Waitable));
    assert!(
        wait(&objects, Some(Duration::from_millis(50)))
            .unwrap()
            .is_empty()
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            pipes[2].1.send(1).unwrap();
            queues[1].put(2).unwrap();
        });
        let ready = wait(&objects, Some(PROMPTLY)).unwrap();
        assert!(ready == [5] || ready == [1, 5] || ready == [1], "{ready:?}");
    });
    assert_eq!(wait(&objects, Some(PROMPTLY)).unwrap(), [1, 5]);
    // A one-way pipe's writer cannot receive: it is ready (recv fails at once).
    let (_r, w) = Pipe::one_way::<u8>().unwrap();
    assert_eq!(wait(&[&w], None).unwrap(), [0]);
}

// ----- socket connections: recv_bytes_into, fileno, passing descriptors -----

/// Receives a descriptor on a socket connection and writes `data` to it.
fn write_to_passed_fd((mut conn, data): (SocketConnection<()>, Vec<u8>)) {
    let mut file = std::fs::File::from(conn.recv_handle().unwrap());
    file.write_all(&data).unwrap();
}

#[test]
fn test_fd_transfer_over_a_unix_socket_connection() {
    for m in METHODS {
        let (mut conn, child_conn) = SocketConnection::<()>::pair().unwrap();
        let data = format!("over a socket, {m:?}").into_bytes();
        let mut p =
            start(Process::new(write_to_passed_fd, (child_conn, data.clone())).start_method(m));
        let path = std::env::temp_dir().join(format!(
            "multiproc-test-socket-fd-{}-{m:?}",
            std::process::id()
        ));
        let file = std::fs::File::create(&path).unwrap();
        conn.send_handle(&file).unwrap();
        drop(file);
        p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data, "{m:?}");
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn handles_and_messages_keep_their_order_on_a_socket_connection() {
    let (mut a, mut b) = SocketConnection::<u32>::pair().unwrap();
    let (mut x1, x2) = UnixStream::pair().unwrap();
    let (mut y1, y2) = UnixStream::pair().unwrap();
    a.send(&1).unwrap();
    a.send_handle(&x2).unwrap();
    a.send(&2).unwrap();
    a.send_handle(&y2).unwrap();
    drop((x2, y2));
    assert_eq!(b.recv().unwrap(), 1);
    let mut x = UnixStream::from(b.recv_handle().unwrap());
    assert_eq!(b.recv().unwrap(), 2);
    let mut y = UnixStream::from(b.recv_handle().unwrap());
    x.write_all(b"x").unwrap();
    y.write_all(b"y").unwrap();
    let mut one = [0u8; 1];
    x1.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"x");
    y1.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"y");
    // A message where a handle was expected (CPython's test_missing_fd_transfer).
    a.send(&3).unwrap();
    assert!(matches!(b.recv_handle(), Err(Error::Protocol(_))));
}

#[test]
fn socket_recv_bytes_into_and_fileno() {
    let (mut a, mut b) = SocketConnection::<()>::pair().unwrap();
    assert!(b.fileno().unwrap() >= 0);
    a.send_bytes(b"12345").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(b.recv_bytes_into(&mut buf[2..]).unwrap(), 5);
    assert_eq!(&buf, b"\0\x0012345\0");
    a.send_bytes(b"much too long").unwrap();
    match b.recv_bytes_into(&mut buf) {
        Err(Error::BufferTooShort(message)) => assert_eq!(message, b"much too long"),
        other => panic!("{other:?}"),
    }
    b.close();
    assert!(matches!(b.fileno(), Err(Error::Closed)));
}

#[test]
fn descriptors_pass_only_over_unix_sockets_and_as_arguments() {
    let listener = Listener::bind(&Address::Tcp("127.0.0.1:0".parse().unwrap()), None).unwrap();
    let address = listener.address().clone();
    let mut tcp = SocketConnection::<()>::connect(&address, None).unwrap();
    assert!(matches!(
        tcp.send_handle(std::io::stdin()),
        Err(Error::InvalidState(_))
    ));
    // A socket connection cannot travel inside a message: its descriptor
    // goes only beside a process's arguments.
    let q = multiproc::Queue::<SocketConnection<()>>::new().unwrap();
    let (s, _t) = SocketConnection::<()>::pair().unwrap();
    q.put(s).unwrap();
    match q.get() {
        Err(Error::Codec(msg)) => assert!(msg.contains("process's argument"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

/// Child: connects with the authkey it inherited (or was given), Python's
/// `Client(address, authkey=current_process().authkey)`.
fn inherited_key_client(address: Address) -> String {
    let key = multiproc::current_process().authkey();
    hello_client((address, key.as_bytes().to_vec()))
}

/// Python's parent-and-children recipe: the listener uses the process's
/// authkey, children inherit it and are let in; a child given another key
/// with `Process::authkey` is refused. Every start method passes the key.
#[test]
fn children_authenticate_with_the_inherited_process_authkey() {
    let me = multiproc::current_process().authkey();
    for m in METHODS {
        let listener = Listener::bind(&Address::unique_abstract(), Some(me.as_bytes())).unwrap();
        let address = listener.address().clone();
        let mut good = start(Process::new(inherited_key_client, address.clone()).start_method(m));
        let mut c: SocketConnection<String> = listener.accept_timeout(PROMPTLY).unwrap();
        assert_eq!(c.recv_timeout(PROMPTLY).unwrap(), "hello", "{m:?}");
        assert_eq!(good.join_timeout(PROMPTLY).unwrap(), "ok", "{m:?}");

        let other = multiproc::AuthKey::new(b"not the parent's key").unwrap();
        let mut bad = start(
            Process::new(inherited_key_client, address.clone())
                .authkey(other)
                .start_method(m),
        );
        assert!(
            matches!(
                listener.accept_timeout::<String>(PROMPTLY),
                Err(Error::Authentication(_))
            ),
            "{m:?}"
        );
        assert_eq!(
            bad.join_timeout(PROMPTLY).unwrap(),
            "authentication",
            "{m:?}"
        );
    }
}

/// `Listener::bind(…, None)` authenticates no one (Python 3's
/// `Listener(authkey=None)`): a client without a key is let in.
#[test]
fn a_listener_without_a_key_authenticates_no_one() {
    let listener = Listener::bind(&Address::unique_abstract(), None).unwrap();
    let mut c: SocketConnection<u8> = client(listener.address(), None).unwrap();
    let mut s: SocketConnection<u8> = listener.accept_timeout(PROMPTLY).unwrap();
    c.send(&7).unwrap();
    assert_eq!(s.recv_timeout(PROMPTLY).unwrap(), 7);
}
