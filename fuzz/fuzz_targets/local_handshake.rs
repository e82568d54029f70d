//! A local manager server's door: the fuzzer's bytes go to the server's
//! abstract socket (two servers serve on threads of the fuzzer, so coverage
//! reaches the accept path, the gate and the hello), either as everything
//! an unauthenticated client sends, or after a real authkey handshake as
//! the hello and what follows. The server must never panic, never hand a
//! channel to anyone who did not prove the key, and close each connection
//! promptly.
#![no_main]

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use multiproc::SocketConnection;
use multiproc::deadline::Deadline;
use multiproc::manager::LocalAddress;
use multiproc::manager::server::{ServerBoot, serve};
use multiproc::wire::client_handshake;

/// A server of this process (its authkey is this process's).
fn server() -> LocalAddress {
    let boot = ServerBoot::new().expect("boot");
    let theirs = boot.clone();
    std::thread::spawn(move || serve(theirs));
    boot.wait_ready(|| true, Deadline::after(Duration::from_secs(30)))
        .expect("the server listens")
}

/// One server for unauthenticated garbage (it soon refuses this process
/// outright, after too many failed handshakes: that path is fuzzed too),
/// one for authenticated clients (never blocked).
fn servers() -> &'static (LocalAddress, LocalAddress) {
    static SERVERS: OnceLock<(LocalAddress, LocalAddress)> = OnceLock::new();
    SERVERS.get_or_init(|| (server(), server()))
}

fn open(address: &LocalAddress) -> UnixStream {
    let name =
        std::os::unix::net::SocketAddr::from_abstract_name(address.socket_name()).expect("a name");
    let s = UnixStream::connect_addr(&name).expect("the server accepts");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Sends `bytes`, says it is done, and reads what the server answers until it closes.
fn exchange(mut s: UnixStream, bytes: &[u8]) -> Vec<u8> {
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

fuzz_target!(|input: (bool, Vec<u8>)| {
    let (authenticate, bytes) = input;
    let (garbage_server, client_server) = servers();
    if !authenticate {
        let answer = exchange(open(garbage_server), &bytes);
        let welcome = answer.windows(9).any(|w| w == b"#WELCOME#");
        assert!(!welcome, "garbage was welcomed: {bytes:?}");
        assert!(
            !answer.windows(4).any(|w| w == b"MPMW"),
            "garbage got a channel"
        );
        return;
    }
    let mut conn = SocketConnection::<()>::from_unix(open(client_server)).unwrap();
    let key = multiproc::current_process().authkey();
    client_handshake(
        &mut conn,
        key.as_bytes(),
        Deadline::after(Duration::from_secs(30)),
    )
    .expect("the right key passes");
    let Some(fd) = conn.fd() else { return };
    let raw = UnixStream::from(fd.try_clone_to_owned().unwrap());
    drop(conn);
    let answer = exchange(raw, &bytes);
    // Only a well-formed hello gets the welcome (and a channel with it).
    if answer.starts_with(b"MPMW") {
        assert!(bytes.len() >= 32, "a welcome for {bytes:?}");
        assert_eq!(&bytes[..8], &24u64.to_le_bytes());
        assert_eq!(&bytes[8..12], b"MPMH");
    }
});
