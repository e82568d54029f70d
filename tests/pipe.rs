//! Pipes across processes: echo, poll, byte messages, end of file on close
//! and on death, one-way pipes, misuse.

mod util;

use std::time::Duration;

use multiproc::{Connection, Error, Event, Pipe, Process, Queue, StartMethod};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

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
        told.set();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), "Err(Closed)", "{m:?}");
        // Never used, dropped here before the child starts.
        let (here, there) = Pipe::new::<u32>().unwrap();
        drop(here);
        let told = Event::new().unwrap();
        told.set();
        let mut p = Process::new(send_when_told, (there, told)).start_method(m);
        p.start().unwrap();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), "Err(Closed)", "{m:?}");
    }
}
