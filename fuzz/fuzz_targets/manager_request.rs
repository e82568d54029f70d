//! The manager's request decoder and dispatch: the fuzzer's bytes go, as one
//! request, through a connection's channel to a server running in this
//! process (its serve loop on a thread, so coverage guides the fuzzer into
//! dispatch). Each must get a decodable response; a panic anywhere aborts.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use multiproc::deadline::Deadline;
use multiproc::manager::protocol::{
    ArchivedRequest, ObjectKind, Request, access_request, access_response, encode_request,
};
use multiproc::manager::server::{LocalConnection, ServerBoot, connect_local, serve};
use multiproc::rkyv::util::AlignedVec;

struct Server {
    conn: LocalConnection,
    resp: AlignedVec,
}

fn server() -> &'static Mutex<Server> {
    static SERVER: OnceLock<Mutex<Server>> = OnceLock::new();
    SERVER.get_or_init(|| {
        let boot = ServerBoot::new().expect("boot");
        let theirs = boot.clone();
        std::thread::spawn(move || serve(theirs));
        let address = boot
            .wait_ready(|| true, Deadline::after(Duration::from_secs(30)))
            .expect("the server listens");
        let mut conn = connect_local(&address).expect("connect");
        let mut resp = AlignedVec::new();
        // Objects for calls to land on (ids 1 to 10, then the condition's
        // own recursive lock and the condition). The barrier has one party,
        // so waiting on it never waits.
        for (kind, arg) in [
            (ObjectKind::Dict, 0),
            (ObjectKind::List, 0),
            (ObjectKind::Namespace, 0),
            (ObjectKind::Lock, 0),
            (ObjectKind::Semaphore, 1),
            (ObjectKind::BoundedSemaphore, 1),
            (ObjectKind::Event, 0),
            (ObjectKind::Barrier, 1),
            (ObjectKind::Queue, 2),
            (ObjectKind::RLock, 0),
            (ObjectKind::Condition, 0),
        ] {
            let create = Request::Create {
                kind,
                fingerprint: 0,
                type_name: "fuzz",
                arg,
            };
            let bytes = encode_request(&create, AlignedVec::new()).expect("encode");
            conn.end.round_trip(&bytes, &mut resp).expect("create");
        }
        Mutex::new(Server { conn, resp })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(data);
    match access_request(&aligned) {
        Ok(ArchivedRequest::Shutdown) => return, // would stop the server, as asked
        // A call may ask to wait as long as it likes for a lock that stays
        // held; the server would wait, as asked.
        Ok(ArchivedRequest::Call(c)) if c.wait_us.to_native() > 1_000 => return,
        _ => {}
    }
    let mut s = server().lock().unwrap();
    let Server { conn, resp } = &mut *s;
    conn.end.round_trip(data, resp).expect("the server answers");
    assert!(access_response(resp).is_ok(), "an undecodable response");
});
