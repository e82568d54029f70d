//! The manager's request decoder and dispatch: the fuzzer's bytes go to a
//! live server (started once, forked) through a connection's channel, as a
//! request. Each must get a decodable response; a server crash shows up as
//! a failed round trip, which this target turns into a crash.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use multiproc::manager::protocol::{ArchivedRequest, access_request, access_response};
use multiproc::manager::server::{LocalConnection, connect};
use multiproc::rkyv::util::AlignedVec;
use multiproc::{Manager, StartMethod};

struct Server {
    _manager: Manager,
    conn: LocalConnection,
    resp: AlignedVec,
}

fn server() -> &'static Mutex<Server> {
    static SERVER: OnceLock<Mutex<Server>> = OnceLock::new();
    SERVER.get_or_init(|| {
        let manager = Manager::start_with(StartMethod::Fork).expect("manager");
        // Something to call methods on.
        let d = manager.dict::<u32, u32>().expect("dict");
        d.insert(1, 1).expect("insert");
        std::mem::forget(d);
        let conn = connect(manager.address()).expect("connect");
        Mutex::new(Server {
            _manager: manager,
            conn,
            resp: AlignedVec::new(),
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(data);
    if matches!(access_request(&aligned), Ok(ArchivedRequest::Shutdown)) {
        return; // would stop the server, as asked
    }
    let mut s = server().lock().unwrap();
    let Server { conn, resp, .. } = &mut *s;
    conn.end.round_trip(data, resp).expect("the server answers");
    assert!(access_response(resp).is_ok(), "an undecodable response");
});
