//! Pipes across processes: echo, poll, byte messages, end of file on close
//! and on death, one-way pipes, misuse.

mod util;

use std::time::Duration;

use multiproc::{Connection, Error, Event, Pipe, Process, Queue, StartMethod};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::Fork,
    StartMethod::Forkserver,
];

/// Sends back every message until end of file; returns how many it echoed.
fn echo(conn: Connection<Vec<u8>>) -> usize {
    let mut n = 0;
    loop {
        match conn.recv() {
            Ok(msg) => {
                conn.send(msg).unwrap();
                n += 1;
            }
            Err(Error::Closed) => return n,
            Err(e) => panic!("echo: {e}"),
        }
    }
}

#[test]
fn echo_across_processes() {
    for m in METHODS {
        let (here, there) = Pipe::new::<Vec<u8>>().unwrap();
        let mut p = Process::new(echo, there).start_method(m);
        p.start().unwrap();
        // Sizes up to well beyond the 256 KiB ring.
        for i in 0..300usize {
            let len = if i % 50 == 0 { 700_000 + i } else { i * 3 };
            let msg: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
            here.send(&msg).unwrap();
            assert_eq!(here.recv().unwrap(), msg, "{m:?} message {i}");
        }
        here.close();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), 300, "{m:?}");
    }
}

fn send_then_close(conn: Connection<u32>) {
    for i in 0..10 {
        conn.send(i).unwrap();
    }
    conn.close();
}

#[test]
fn peer_close_drains_then_closed() {
    for m in METHODS {
        let (here, there) = Pipe::new::<u32>().unwrap();
        let mut p = Process::new(send_then_close, there).start_method(m);
        p.start().unwrap();
        p.join_timeout(PROMPTLY).unwrap();
        for i in 0..10 {
            assert_eq!(here.recv().unwrap(), i, "{m:?}");
        }
        assert!(matches!(here.recv(), Err(Error::Closed)));
        assert!(matches!(here.try_recv(), Err(Error::Closed)));
        assert!(here.poll(Some(Duration::ZERO)).unwrap(), "EOF is readable");
        assert!(matches!(here.send(1), Err(Error::Closed)));
    }
}

fn send_and_return(conn: Connection<u32>) {
    conn.send(7).unwrap();
    // Returning drops the end: the owner dropping it closes it.
}

#[test]
fn dropping_the_owners_end_closes_it() {
    for m in METHODS {
        let (here, there) = Pipe::new::<u32>().unwrap();
        let mut p = Process::new(send_and_return, there).start_method(m);
        p.start().unwrap();
        assert_eq!(here.recv_timeout(PROMPTLY).unwrap(), 7);
        assert!(
            matches!(here.recv_timeout(PROMPTLY), Err(Error::Closed)),
            "{m:?}"
        );
        p.join_timeout(PROMPTLY).unwrap();
    }
}

fn ready_then_hang(conn: Connection<u32>) {
    conn.send(1).unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn peer_death_is_end_of_file() {
    for m in METHODS {
        let (here, there) = Pipe::new::<u32>().unwrap();
        let mut p = Process::new(ready_then_hang, there).start_method(m);
        p.start().unwrap();
        assert_eq!(here.recv_timeout(PROMPTLY).unwrap(), 1);
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        // A blocking recv notices the death instead of hanging.
        assert!(matches!(here.recv(), Err(Error::Closed)), "{m:?}");
        assert!(here.poll(None).unwrap());
        // A send notices it too, within milliseconds.
        assert!(eventually(PROMPTLY, || matches!(
            here.send(2),
            Err(Error::Closed)
        )));
    }
}

fn recv_forever(conn: Connection<u32>) -> String {
    conn.send(0).unwrap();
    match conn.recv() {
        Ok(x) => format!("got {x}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_waiting_child_sees_its_parent_close() {
    for m in METHODS {
        let (here, there) = Pipe::new::<u32>().unwrap();
        let mut p = Process::new(recv_forever, there).start_method(m);
        p.start().unwrap();
        assert_eq!(here.recv_timeout(PROMPTLY).unwrap(), 0);
        here.close();
        assert_eq!(
            p.join_timeout(PROMPTLY).unwrap(),
            Error::Closed.to_string(),
            "{m:?}"
        );
    }
}

#[test]
fn poll_with_timeouts() {
    let (a, b) = Pipe::new::<u64>().unwrap();
    assert!(!a.poll(Some(Duration::ZERO)).unwrap());
    assert!(!a.poll(Some(Duration::from_millis(20))).unwrap());
    b.send(5u64).unwrap();
    assert!(a.poll(Some(Duration::ZERO)).unwrap());
    assert!(a.poll(None).unwrap());
    assert!(a.poll(Some(Duration::from_secs(1))).unwrap());
    assert_eq!(a.recv().unwrap(), 5);
    assert!(!a.poll(Some(Duration::from_millis(1))).unwrap());
    b.close();
    assert!(a.poll(None).unwrap());
    assert!(matches!(b.poll(Some(Duration::ZERO)), Err(Error::Closed)));
}

fn send_later(conn: Connection<u64>) {
    std::thread::sleep(Duration::from_millis(100));
    conn.send(42u64).unwrap();
}

#[test]
fn poll_wakes_when_a_message_arrives() {
    for m in METHODS {
        let (a, b) = Pipe::new::<u64>().unwrap();
        let mut p = Process::new(send_later, b).start_method(m);
        p.start().unwrap();
        assert!(a.poll(Some(PROMPTLY)).unwrap(), "{m:?}");
        assert_eq!(a.try_recv().unwrap(), 42);
        p.join_timeout(PROMPTLY).unwrap();
    }
}

#[test]
fn recv_bytes_max_refuses_and_keeps_long_messages() {
    let (a, b) = Pipe::new::<u8>().unwrap();
    b.send_bytes(&[9u8; 100]).unwrap();
    b.send_bytes(b"short").unwrap();
    assert!(matches!(
        a.recv_bytes_max(99),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        a.try_recv_bytes_max(50),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(a.recv_bytes_max(100).unwrap(), vec![9u8; 100]);
    assert_eq!(
        a.recv_bytes_max_timeout(5, Duration::from_millis(10))
            .unwrap(),
        b"short"
    );
    assert!(matches!(
        a.recv_bytes_max_timeout(5, Duration::from_millis(10)),
        Err(Error::Timeout(_))
    ));
    // A message larger than the ring, refused before any of it is taken.
    let (c, d) = Pipe::with_capacity::<u8>(true, 4096).unwrap();
    let big: Vec<u8> = (0..20_000).map(|i| i as u8).collect();
    let sender = std::thread::spawn(move || {
        d.send_bytes(&big).unwrap();
        big
    });
    assert!(c.poll(Some(PROMPTLY)).unwrap());
    assert!(matches!(
        c.recv_bytes_max(19_999),
        Err(Error::InvalidArgument(_))
    ));
    let got = c.recv_bytes().unwrap();
    assert_eq!(got, sender.join().unwrap());
}

#[test]
fn bytes_and_values_share_the_pipe() {
    use multiproc::Shareable;
    let (a, b) = Pipe::new::<String>().unwrap();
    b.send_bytes(&"raw".to_string().encode().unwrap()).unwrap();
    assert_eq!(a.recv().unwrap(), "raw");
    b.send("typed".to_string()).unwrap();
    let bytes = a.recv_bytes().unwrap();
    assert_eq!(String::decode(&bytes).unwrap(), "typed");
    b.send_bytes(b"\xff\xff").unwrap();
    assert!(matches!(a.recv(), Err(Error::Codec(_))));
}

fn read_all(conn: Connection<u32>) -> Vec<u32> {
    let mut v = Vec::new();
    while let Ok(x) = conn.recv() {
        v.push(x);
    }
    v
}

#[test]
fn one_way_pipes() {
    for m in METHODS {
        let (reader, writer) = Pipe::one_way::<u32>().unwrap();
        assert!(reader.readable() && !reader.writable());
        assert!(writer.writable() && !writer.readable());
        assert!(matches!(reader.send(1), Err(Error::InvalidState(_))));
        assert!(matches!(writer.recv(), Err(Error::InvalidState(_))));
        assert!(matches!(writer.poll(None), Err(Error::InvalidState(_))));
        let mut p = Process::new(read_all, reader).start_method(m);
        p.start().unwrap();
        for i in 0..1000 {
            writer.send(i).unwrap();
        }
        writer.close();
        assert_eq!(
            p.join_timeout(PROMPTLY).unwrap(),
            (0..1000).collect::<Vec<_>>(),
            "{m:?}"
        );
    }
}

#[test]
fn closed_ends_and_zero_timeouts() {
    let (a, b) = Pipe::new::<u32>().unwrap();
    assert!(matches!(a.try_recv(), Err(Error::Empty)));
    assert!(matches!(a.recv_timeout(Duration::ZERO), Err(Error::Empty)));
    assert!(matches!(
        a.recv_timeout(Duration::from_millis(10)),
        Err(Error::Timeout(_))
    ));
    assert!(matches!(a.try_recv_bytes(), Err(Error::Empty)));
    // Fill the ring, then a zero or short timeout says the pipe is full.
    let (c, d) = Pipe::with_capacity::<u8>(true, 256).unwrap();
    while d.try_send_bytes(&[1u8; 64]).is_ok() {}
    assert!(matches!(d.try_send_bytes(&[1u8; 64]), Err(Error::Full)));
    assert!(matches!(
        d.send_bytes_timeout(&[1u8; 64], Duration::from_millis(10)),
        Err(Error::Full)
    ));
    assert_eq!(c.recv_bytes().unwrap(), vec![1u8; 64]);
    a.close();
    a.close();
    assert!(a.closed());
    assert!(!b.closed());
    assert!(matches!(a.send(1), Err(Error::Closed)));
    assert!(matches!(a.recv(), Err(Error::Closed)));
    assert!(matches!(a.try_recv(), Err(Error::Closed)));
    assert!(matches!(a.poll(None), Err(Error::Closed)));
    assert!(matches!(b.send(1), Err(Error::Closed)));
    assert!(matches!(b.recv(), Err(Error::Closed)));
    assert!(matches!(
        Pipe::with_capacity::<u8>(true, usize::MAX),
        Err(Error::InvalidArgument(_))
    ));
}

fn answer_on(args: (Queue<Connection<String>>, String)) {
    let (q, word) = args;
    let conn = q.get().unwrap();
    conn.send(word).unwrap();
}

#[test]
fn a_connection_travels_through_a_queue() {
    for m in METHODS {
        let q = Queue::<Connection<String>>::new().unwrap();
        let (here, there) = Pipe::new::<String>().unwrap();
        let mut p = Process::new(answer_on, (q.clone(), "hi".to_string())).start_method(m);
        p.start().unwrap();
        q.put(&there).unwrap();
        assert_eq!(here.recv_timeout(PROMPTLY).unwrap(), "hi", "{m:?}");
        p.join_timeout(PROMPTLY).unwrap();
        drop(there);
        // The child owned `there` and ended: end of file.
        assert!(matches!(here.recv_timeout(PROMPTLY), Err(Error::Closed)));
    }
}

fn first_then_echo(conn: Connection<u32>) {
    while let Ok(x) = conn.recv() {
        conn.send(x + 1).unwrap();
    }
}

#[test]
fn an_end_used_before_it_is_passed_still_works_in_the_child() {
    for m in METHODS {
        let (here, there) = Pipe::new::<u32>().unwrap();
        // Used here first: under fork, the parent's copy is dropped after the
        // fork, which must not close the child's end.
        there.send(1).unwrap();
        assert_eq!(here.recv().unwrap(), 1);
        let mut p = Process::new(first_then_echo, there).start_method(m);
        p.start().unwrap();
        here.send(10).unwrap();
        assert_eq!(here.recv_timeout(PROMPTLY).unwrap(), 11, "{m:?}");
        here.close();
        p.join_timeout(PROMPTLY).unwrap();
    }
}

fn drop_unused(conn: Connection<u32>) {
    drop(conn);
}

/// Sends once told to (after the parent dropped its end); says how it went.
fn send_when_told(args: (Connection<u32>, Event)) -> String {
    let (conn, told) = args;
    match told.wait_timeout(PROMPTLY) {
        Ok(true) => format!("{:?}", conn.send_timeout(1, PROMPTLY)),
        other => format!("not told: {other:?}"),
    }
}

#[test]
fn sending_to_a_dropped_end_is_closed_in_any_process() {
    // Dropped in this process without ever being used.
    let (a, b) = Pipe::new::<u32>().unwrap();
    drop(b);
    assert!(matches!(a.send(1), Err(Error::Closed)));
    let (reader, writer) = Pipe::one_way::<u32>().unwrap();
    drop(reader);
    assert!(matches!(writer.send(1), Err(Error::Closed)));
    for m in METHODS {
        // Dropped unused by the child it was given to.
        let (here, there) = Pipe::new::<u32>().unwrap();
        let mut p = Process::new(drop_unused, there).start_method(m);
        p.start().unwrap();
        p.join_timeout(PROMPTLY).unwrap();
        assert!(matches!(here.send(1), Err(Error::Closed)), "{m:?}");
        // Used here, then dropped here after a child got the other end.
        let (here, there) = Pipe::new::<u32>().unwrap();
        here.send(0).unwrap();
        let told = Event::new().unwrap();
        let mut p = Process::new(send_when_told, (there, told.clone())).start_method(m);
        p.start().unwrap();
        drop(here);
        told.set().unwrap();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), "Err(Closed)", "{m:?}");
        // Never used, dropped here before the child starts.
        let (here, there) = Pipe::new::<u32>().unwrap();
        drop(here);
        let told = Event::new().unwrap();
        told.set().unwrap();
        let mut p = Process::new(send_when_told, (there, told)).start_method(m);
        p.start().unwrap();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), "Err(Closed)", "{m:?}");
    }
}

/// How a child given a pipe end ends without ever using it.
#[derive(Debug, Clone, Copy, multiproc::Shareable)]
enum Ending {
    Return,
    Panic,
    Exit,
    Hang,
}

fn end_without_using((conn, how): (Connection<u32>, Ending)) {
    match how {
        Ending::Return => drop(conn),
        Ending::Panic => {
            std::panic::set_hook(Box::new(|_| {}));
            panic!("the end was never used")
        }
        // No drop runs: only the record of who owns the end can tell.
        Ending::Exit => std::process::exit(0),
        Ending::Hang => {
            std::mem::forget(conn);
            std::thread::sleep(Duration::from_secs(120))
        }
    }
}

/// Regression (CPython's `_TestConnection` EOF scenarios): under fork, a
/// pipe end given to a child that ended without using it (returned,
/// panicked, exited, or was killed) never reported end of file: the
/// forked child never claimed it, so the live parent stood in for it.
#[test]
fn test_connection_eof_when_a_child_ends_without_using_its_end() {
    for m in METHODS {
        for how in [Ending::Return, Ending::Panic, Ending::Exit, Ending::Hang] {
            let (here, there) = Pipe::new::<u32>().unwrap();
            let mut p = Process::new(end_without_using, (there, how)).start_method(m);
            p.start().unwrap();
            if let Ending::Hang = how {
                p.kill().unwrap();
            }
            assert!(
                matches!(here.recv_timeout(PROMPTLY), Err(Error::Closed)),
                "{m:?} {how:?}"
            );
            let _ = p.join_timeout(PROMPTLY);
        }
    }
}

fn claim_then_pass_on((conn, q): (Connection<u32>, Queue<Connection<u32>>)) {
    q.put(conn).unwrap();
}

#[test]
fn an_end_a_forked_child_passed_on_is_not_taken_back_for_the_child() {
    // The child passes its end on through a queue and ends; the process
    // that takes it from the queue owns it, and the pipe stays open.
    let (here, there) = Pipe::new::<u32>().unwrap();
    let q = Queue::new().unwrap();
    let mut p =
        Process::new(claim_then_pass_on, (there, q.clone())).start_method(StartMethod::Fork);
    p.start().unwrap();
    let end = q.get_timeout(PROMPTLY).unwrap();
    p.join_timeout(PROMPTLY).unwrap();
    end.send(7).unwrap();
    assert_eq!(here.recv_timeout(PROMPTLY).unwrap(), 7);
    here.send(8).unwrap();
    assert_eq!(end.recv_timeout(PROMPTLY).unwrap(), 8);
}

// ----- CPython's _TestConnection: recv_bytes_into, fileno, handles -----

const SENTINEL: &[u8] = b"SENTINEL";

/// Echoes byte messages until SENTINEL (CPython's `_echo`).
fn echo_bytes(conn: Connection<Vec<u8>>) {
    loop {
        let msg = conn.recv_bytes().unwrap();
        if msg == SENTINEL {
            break;
        }
        conn.send_bytes(&msg).unwrap();
    }
    conn.close();
}

#[test]
fn test_connection() {
    for m in METHODS {
        let (conn, child_conn) = Pipe::new::<Vec<u8>>().unwrap();
        let mut p = Process::new(echo_bytes, child_conn)
            .start_method(m)
            .daemon(true);
        p.start().unwrap();

        assert!(conn.fileno().unwrap() >= 0);
        conn.send_bytes(b"hello world").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"hello world");

        let arr: Vec<u8> = (0..4i32).flat_map(|i| i.to_ne_bytes()).collect();
        let mut buffer = [0u8; 40];
        conn.send_bytes(&arr).unwrap();
        assert_eq!(conn.recv_bytes_into(&mut buffer).unwrap(), arr.len());
        assert_eq!(&buffer[..16], &arr[..]);
        assert!(buffer[16..].iter().all(|&b| b == 0));
        // Python's offset: a slice of the buffer.
        let mut buffer = [0u8; 40];
        conn.send_bytes(&arr).unwrap();
        assert_eq!(conn.recv_bytes_into(&mut buffer[12..]).unwrap(), 16);
        assert!(buffer[..12].iter().all(|&b| b == 0));
        assert_eq!(&buffer[12..28], &arr[..]);

        let longmsg = b"hello world".repeat(10);
        conn.send_bytes(&longmsg).unwrap();
        let mut short = [b' '; 40];
        match conn.recv_bytes_into(&mut short) {
            Err(Error::BufferTooShort(message)) => assert_eq!(message, longmsg, "{m:?}"),
            other => panic!("{m:?}: expected BufferTooShort, got {other:?}"),
        }

        assert!(!conn.poll(Some(Duration::ZERO)).unwrap());
        assert!(!conn.poll(Some(Duration::from_millis(100))).unwrap());
        conn.send_bytes(b"").unwrap();
        assert!(conn.poll(Some(PROMPTLY)).unwrap());
        assert_eq!(conn.recv_bytes().unwrap(), b"");

        let really_big_msg = vec![b'X'; 16 << 20];
        conn.send_bytes(&really_big_msg).unwrap();
        assert!(conn.recv_bytes().unwrap() == really_big_msg);

        conn.send_bytes(SENTINEL).unwrap();
        assert!(conn.readable() && conn.writable());
        assert!(matches!(conn.recv(), Err(Error::Closed)), "{m:?}");
        assert!(matches!(conn.recv_bytes(), Err(Error::Closed)));
        p.join_timeout(PROMPTLY).unwrap();
    }
}

#[test]
fn recv_bytes_into_waits_and_gives_up_like_recv() {
    let (a, b) = Pipe::new::<()>().unwrap();
    let mut buf = [0u8; 4];
    assert!(matches!(b.try_recv_bytes_into(&mut buf), Err(Error::Empty)));
    assert!(matches!(
        b.recv_bytes_into_timeout(&mut buf, Duration::from_millis(20)),
        Err(Error::Timeout(_))
    ));
    // A message larger than the ring, into a buffer too small, comes back whole.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
    std::thread::scope(|s| {
        s.spawn(|| a.send_bytes(&big).unwrap());
        match b.recv_bytes_into(&mut buf) {
            Err(Error::BufferTooShort(message)) => assert!(message == big),
            other => panic!("{other:?}"),
        }
    });
    a.send_bytes(b"abcd").unwrap();
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 4);
    assert_eq!(&buf, b"abcd");
}

fn temp_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "multiproc-test-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ))
}

/// Receives a descriptor and writes `data` to it (CPython's `_writefd`),
/// optionally after filling the low descriptor numbers (`create_dummy_fds`).
fn writefd((conn, data, create_dummy_fds): (Connection<()>, Vec<u8>, bool)) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    if create_dummy_fds {
        let side = conn.fileno().unwrap();
        for fd in 0..256 {
            // SAFETY: F_GETFD only asks whether `fd` is open.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
                // SAFETY: `fd` is closed, so dup2 replaces nothing; the copy
                // is left open on purpose until the process exits.
                unsafe { libc::dup2(side, fd) };
            }
        }
    }
    let fd = conn.recv_handle().unwrap();
    assert!(fd.as_raw_fd() >= 0);
    let mut file = std::fs::File::from(fd);
    file.write_all(&data).unwrap();
}

fn check_fd_transfer(large: bool) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    for m in METHODS {
        let (conn, child_conn) = Pipe::new::<()>().unwrap();
        let data = format!("{m:?} {large}").into_bytes();
        let mut p = Process::new(writefd, (child_conn, data.clone(), large))
            .start_method(m)
            .daemon(true);
        p.start().unwrap();
        let path = temp_path("fd-transfer");
        let file = std::fs::File::create(&path).unwrap();
        if large {
            // SAFETY: F_DUPFD makes a new descriptor numbered 256 or above.
            let high = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 256) };
            assert!(high >= 256);
            // SAFETY: fcntl just returned this descriptor; we own it.
            let high = unsafe { OwnedFd::from_raw_fd(high) };
            conn.send_handle(&high).unwrap();
        } else {
            conn.send_handle(&file).unwrap();
        }
        drop(file);
        p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data, "{m:?}");
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn test_fd_transfer() {
    check_fd_transfer(false);
}

#[test]
fn test_large_fd_transfer() {
    check_fd_transfer(true);
}

fn send_data_without_fd(conn: Connection<()>) {
    conn.send_bytes(b"\0").unwrap();
}

#[test]
fn test_missing_fd_transfer() {
    for m in METHODS {
        let (conn, child_conn) = Pipe::new::<()>().unwrap();
        let mut p = Process::new(send_data_without_fd, child_conn).start_method(m);
        p.start().unwrap();
        assert!(
            matches!(conn.recv_handle_timeout(PROMPTLY), Err(Error::Protocol(_))),
            "{m:?}"
        );
        p.join_timeout(PROMPTLY).unwrap();
    }
}

fn poll_fd(fd: std::os::fd::RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    assert!(unsafe { libc::poll(&mut pfd, 1, 0) } >= 0);
    pfd.revents != 0
}

fn poll_fd_wait(fd: std::os::fd::RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a bounded wait.
    assert!(unsafe { libc::poll(&mut pfd, 1, PROMPTLY.as_millis() as i32) } >= 0);
    pfd.revents != 0
}

fn send_three(conn: Connection<u32>) {
    for i in 0..3 {
        conn.send(i).unwrap();
    }
    // Stay until told, so the end of file does not ring the doorbell.
    let _ = conn.recv();
}

#[test]
fn fileno_is_a_descriptor_that_turns_readable_when_messages_come() {
    for m in METHODS {
        let (here, there) = Pipe::new::<u32>().unwrap();
        let fd = here.fileno().unwrap();
        assert!(!poll_fd(fd));
        let mut p = Process::new(send_three, there).start_method(m);
        p.start().unwrap();
        assert!(poll_fd_wait(fd), "{m:?}");
        // Edge-triggered: take everything, then it is quiet again.
        let mut got = Vec::new();
        while got.len() < 3 {
            assert!(poll_fd_wait(fd), "{m:?}");
            loop {
                match here.try_recv() {
                    Ok(x) => got.push(x),
                    Err(Error::Empty) => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert_eq!(got, [0, 1, 2]);
        assert!(!poll_fd(fd), "{m:?}: still readable after Empty");
        here.send(9).unwrap();
        p.join_timeout(PROMPTLY).unwrap();
    }
}

fn pass_on((q, conn): (Queue<Connection<u32>>, Connection<u32>)) {
    q.put(conn).unwrap();
}

#[test]
fn an_end_that_travelled_in_a_message_has_no_side_channel() {
    let (here, there) = Pipe::new::<u32>().unwrap();
    let q = Queue::new().unwrap();
    let mut p = Process::new(pass_on, (q.clone(), there)).start_method(StartMethod::Spawn);
    p.start().unwrap();
    let end = q.get_timeout(PROMPTLY).unwrap();
    p.join_timeout(PROMPTLY).unwrap();
    // The pipe works; what needs the side channel says why it cannot.
    end.send(1).unwrap();
    assert_eq!(here.recv().unwrap(), 1);
    assert!(matches!(end.fileno(), Err(Error::InvalidState(_))));
    assert!(matches!(
        end.send_handle(std::io::stdin()),
        Err(Error::InvalidState(_))
    ));
    // The other end still has its own.
    assert!(here.fileno().is_ok());
}

/// Echoes `u64`s until end of file; first tells how many CPUs it may use.
fn echo_on_one_cpu(conn: Connection<u64>) {
    conn.send(util::allowed_cpus() as u64).unwrap();
    while let Ok(n) = conn.recv() {
        conn.send(n + 1).unwrap();
    }
}

/// Both ends pinned to the same CPU: each wait must give the CPU to the
/// peer (sleep) rather than spin against it, and every round trip completes.
/// (Not under forkserver: its server was not started from the pinned thread.)
#[test]
fn round_trips_progress_with_both_ends_on_one_cpu() {
    let done = util::within(Duration::from_secs(120), || {
        util::pin_this_thread_to_one_cpu();
        for m in [StartMethod::Spawn, StartMethod::Fork] {
            let (here, there) = Pipe::new::<u64>().unwrap();
            let mut p = Process::new(echo_on_one_cpu, there).start_method(m);
            p.start().unwrap();
            assert_eq!(
                here.recv().unwrap(),
                1,
                "{m:?}: the child shares our one CPU"
            );
            for i in 0..2_000u64 {
                here.send(i).unwrap();
                assert_eq!(here.recv().unwrap(), i + 1, "{m:?}");
            }
            here.close();
            p.join_timeout(PROMPTLY).unwrap();
        }
    });
    assert!(done.is_some(), "round trips on one CPU did not finish");
}

/// In a child at its memory limit: the first receive of a message it has
/// no room for, then the length of the message once the limit is lifted.
fn recv_at_the_memory_limit(c: Connection<Vec<u8>>) -> (String, usize) {
    util::limit_memory(Some(8 << 20));
    let first = c.recv_timeout(PROMPTLY).map(|m| m.len());
    util::limit_memory(None);
    let second = c.recv_timeout(PROMPTLY).map_or(0, |m| m.len());
    (format!("{first:?}"), second)
}

/// As for a queue: a receiver with no memory for the message is told
/// (`Io(OutOfMemory)`) and the message waits for its next receive; it
/// aborted. From an attack battery.
#[test]
fn a_receiver_at_its_memory_limit_is_told_and_the_message_stays() {
    for m in [StartMethod::Spawn, StartMethod::Fork] {
        let (a, b) = Pipe::new::<Vec<u8>>().unwrap();
        let mut child = Process::new(recv_at_the_memory_limit, b).start_method(m);
        child.start().unwrap();
        a.send_timeout(vec![3u8; 48 << 20], PROMPTLY).unwrap();
        let (first, len) = child.join_timeout(PROMPTLY).unwrap();
        assert!(first.contains("OutOfMemory"), "{m:?}: {first}");
        assert_eq!(len, 48 << 20, "{m:?}");
    }
}
