//! Property-based fuzzing that runs in CI (a few hundred cases each): the
//! authkey handshake, a local manager's door (its socket's handshake and
//! hello) and the manager's request decoder take random and mutated input
//! without panicking, within a bounded time, with an error.
//! (The frame decoder's property test lives in tests/connection.rs and the
//! queue ring's header recovery in runtime/src/queue/ring.rs; the longer
//! cargo-fuzz runs of the same decoders are in fuzz/.)

mod util;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use multiproc::deadline::Deadline;
use multiproc::manager::ObjectKind;
use multiproc::manager::protocol::{
    ArchivedRequest, ArchivedResponse, Blob, Call, Request, access_request, access_response,
    encode_request,
};
use multiproc::rkyv::util::AlignedVec;
use multiproc::wire::{client_handshake, server_handshake};
use multiproc::{Error, Manager, SocketConnection, StartMethod};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

multiproc::init_before_main!();

// ---------------------------------------------------------------- handshake

/// What the fake peer sends: raw bytes, or frames (length prefix + payload).
#[derive(Debug, Clone)]
enum Garbage {
    Raw(Vec<u8>),
    Frames(Vec<Vec<u8>>),
}

fn frame_payload() -> impl Strategy<Value = Vec<u8>> {
    let tails = prop::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        // Plausible prefixes with random (often truncated) tails.
        tails
            .clone()
            .prop_map(|t| [b"#CHALLENGE#{sha256}".as_slice(), &t].concat()),
        tails
            .clone()
            .prop_map(|t| [b"#CHALLENGE#".as_slice(), &t].concat()),
        tails
            .clone()
            .prop_map(|t| [b"{sha256}".as_slice(), &t].concat()),
        (0usize..9).prop_map(|n| b"#WELCOME#"[..n].to_vec()),
        Just(b"#WELCOME#".to_vec()),
        Just(b"#FAILURE#".to_vec()),
    ]
}

fn garbage() -> impl Strategy<Value = Garbage> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400).prop_map(Garbage::Raw),
        prop::collection::vec(frame_payload(), 0..4).prop_map(Garbage::Frames),
    ]
}

fn bytes_of(g: &Garbage) -> Vec<u8> {
    match g {
        Garbage::Raw(b) => b.clone(),
        Garbage::Frames(frames) => frames
            .iter()
            .flat_map(|f| {
                let mut out = (f.len() as u64).to_le_bytes().to_vec();
                out.extend_from_slice(f);
                out
            })
            .collect(),
    }
}

/// Runs one side of the handshake against a peer that sends `g` and then
/// closes (or, with `hang`, stays silent).
fn handshake_against(g: &Garbage, server: bool, hang: bool) -> (Result<(), Error>, Duration) {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut conn = SocketConnection::<()>::from_unix(ours).unwrap();
    theirs.write_all(&bytes_of(g)).unwrap();
    if !hang {
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let started = Instant::now();
    let deadline = Deadline::after(Duration::from_millis(if hang { 100 } else { 5_000 }));
    let result = if server {
        server_handshake(&mut conn, b"the key", deadline)
    } else {
        client_handshake(&mut conn, b"the key", deadline)
    };
    (result, started.elapsed())
}

fn acceptable(e: &Error) -> bool {
    matches!(
        e,
        Error::Authentication(_) | Error::Protocol(_) | Error::Closed | Error::Timeout(_)
    ) || matches!(e, Error::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe
        || io.kind() == std::io::ErrorKind::ConnectionReset)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_handshakes_fail_cleanly(g in garbage(), server in any::<bool>()) {
        let (result, took) = handshake_against(&g, server, false);
        match result {
            Ok(()) => prop_assert!(false, "garbage authenticated: {g:?}"),
            Err(e) => prop_assert!(acceptable(&e), "unexpected error {e:?} for {g:?}"),
        }
        prop_assert!(took < Duration::from_secs(5), "took {took:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A peer that sends a partial handshake and then nothing is cut off at the deadline.
    #[test]
    fn silent_peers_time_out(g in garbage(), server in any::<bool>()) {
        let (result, took) = handshake_against(&g, server, true);
        match result {
            Ok(()) => prop_assert!(false, "garbage authenticated: {g:?}"),
            Err(e) => prop_assert!(acceptable(&e), "unexpected error {e:?} for {g:?}"),
        }
        prop_assert!(took < Duration::from_secs(3), "took {took:?}");
    }
}

// ---------------------------------------------------------------- manager requests

/// Random bytes and mutated valid requests, sent to a live server through
/// its own channel: each gets a well-formed response, and the server keeps
/// serving a real dict throughout.
#[test]
fn random_and_mutated_requests_get_responses() {
    let manager = Manager::start_with(StartMethod::Fork).unwrap();
    let d = manager.dict::<u32, u32>().unwrap();
    d.insert(1, 1).unwrap();
    let mut conn = multiproc::manager::server::connect(manager.address()).unwrap();
    // One object of each kind a client may wait on, so mutated calls reach them.
    let mut waitables = Vec::new();
    for (kind, arg) in [
        (ObjectKind::Lock, 0),
        (ObjectKind::Event, 0),
        (ObjectKind::Barrier, 1),
        (ObjectKind::Queue, 2),
    ] {
        let create = Request::Create {
            kind,
            fingerprint: 0,
            type_name: "fuzz",
            arg,
        };
        let mut resp = AlignedVec::new();
        let bytes = encode_request(&create, AlignedVec::new()).unwrap();
        conn.end.round_trip(&bytes, &mut resp).unwrap();
        match access_response(&resp).unwrap() {
            ArchivedResponse::Created(id) => waitables.push(id.to_native()),
            _ => panic!("cannot create a {kind:?}"),
        }
    }
    let call = |object, method, wait_us| {
        Request::Call(Call {
            object,
            method,
            index: 0,
            key: None,
            value: Some(Blob::plain(b"v")),
            expected: None,
            batch: Vec::new(),
            fingerprint: 0,
            type_name: "u32",
            wait_us,
        })
    };
    let valid: Vec<AlignedVec> = [
        call(1, 30, 0),
        call(waitables[0], 90, 0),
        call(waitables[0], 92, 100),
        call(waitables[1], 113, 100),
        call(waitables[2], 120, 100),
        call(waitables[3], 130, 0),
        call(waitables[3], 131, 0),
        Request::NumberOfObjects,
        Request::Release {
            object: 1,
            count: 1,
        },
    ]
    .iter()
    .map(|r| encode_request(r, AlignedVec::new()).unwrap())
    .collect();
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (
            0..valid.len(),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)
        )
            .prop_map(move |(which, flips)| {
                let mut bytes = valid[which].to_vec();
                for (at, b) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= b.max(1);
                }
                bytes
            }),
    ];
    let mut runner = TestRunner::new(Config::with_cases(400));
    let state = std::cell::RefCell::new((conn, AlignedVec::new()));
    runner
        .run(&input, |bytes| {
            let mut aligned = AlignedVec::<16>::new();
            aligned.extend_from_slice(&bytes);
            // A mutation that happens to be a valid Shutdown would stop the
            // server as asked; that is not a finding.
            // So would a call that asks to wait long on an event nobody
            // sets: the server waits, as asked.
            match access_request(&aligned) {
                Ok(ArchivedRequest::Shutdown) => return Ok(()),
                Ok(ArchivedRequest::Call(c)) if c.wait_us.to_native() > 1_000 => return Ok(()),
                _ => {}
            }
            let started = Instant::now();
            let (conn, resp) = &mut *state.borrow_mut();
            conn.end
                .round_trip(&bytes, resp)
                .map_err(|e| TestCaseError::fail(format!("{e:?} for {bytes:?}")))?;
            prop_assert!(
                access_response(resp).is_ok(),
                "an undecodable response to {bytes:?}"
            );
            prop_assert!(started.elapsed() < util::PROMPTLY);
            Ok(())
        })
        .unwrap();
    // The server is fine.
    d.insert(2, 2).unwrap();
    assert_eq!(d.get(&2).unwrap(), Some(2));
    drop(d);
    drop(state);
    manager.shutdown().unwrap();
}

// ---------------------------------------------------------------- a local manager's door

/// Sends `bytes` on a new connection to the local server at `address`, says
/// it is done, and returns all the server answered before it closed.
fn knock(address: &multiproc::manager::LocalAddress, bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    use std::os::linux::net::SocketAddrExt;
    let name = std::os::unix::net::SocketAddr::from_abstract_name(address.socket_name()).unwrap();
    let mut s = UnixStream::connect_addr(&name).unwrap();
    s.set_read_timeout(Some(util::PROMPTLY)).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

/// Random and plausible bytes sent to a local manager's socket by a client
/// that does not know the key: nothing is welcomed, no channel is handed
/// out, each connection is closed promptly, and the manager keeps serving.
/// (After enough failures the server refuses this process outright: that
/// path is covered too; the proxies' connection made before stays.)
#[test]
fn garbage_on_a_local_managers_socket_gets_no_channel() {
    let manager = Manager::start_with(StartMethod::Fork).unwrap();
    let d = manager.dict::<u32, u32>().unwrap();
    d.insert(1, 1).unwrap();
    let multiproc::ServerAddress::Local(address) = *manager.address() else {
        unreachable!()
    };
    let mut runner = TestRunner::new(Config::with_cases(64));
    runner
        .run(&garbage(), |g| {
            let started = Instant::now();
            let answer = knock(&address, &bytes_of(&g));
            prop_assert!(
                !answer.windows(9).any(|w| w == b"#WELCOME#"),
                "garbage was welcomed: {g:?}"
            );
            prop_assert!(
                !answer.windows(4).any(|w| w == b"MPMW"),
                "a channel for {g:?}"
            );
            prop_assert!(started.elapsed() < util::PROMPTLY);
            Ok(())
        })
        .unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(1));
    d.insert(2, 2).unwrap();
    drop(d);
    manager.shutdown().unwrap();
}
