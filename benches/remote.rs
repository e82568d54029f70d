//! What a remote manager call costs over TCP loopback, beside one plain
//! TCP round trip of a small frame (the floor), and a smoke run of 100
//! concurrent clients.
//!
//! Run: `cargo bench --bench remote`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use multiproc::connection::{Address, Listener, SocketConnection};
use multiproc::{BaseManager, DictProxy};

const KEY: &[u8] = b"bench-key";
const CLIENTS: usize = 100;
const CALLS_PER_CLIENT: usize = 200;

/// An echo server on loopback: every frame comes straight back.
fn echo_server() -> Address {
    let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
    let address = listener.address().clone();
    std::thread::spawn(move || {
        let mut conn: SocketConnection<()> = listener.accept().unwrap();
        while let Ok(frame) = conn.recv_bytes() {
            if conn.send_bytes(&frame).is_err() {
                break;
            }
        }
    });
    address
}

fn remote(c: &mut Criterion) {
    let master = BaseManager::new()
        .authkey(KEY)
        .register::<DictProxy<u32, u64>>("d")
        .start()
        .expect("server starts");
    let client = BaseManager::new()
        .address(master.address().to_string())
        .authkey(KEY)
        .connect()
        .expect("client connects");
    let d: DictProxy<u32, u64> = client.get("d").expect("named dict");
    d.insert(1, 0).expect("insert");

    let mut plain: SocketConnection<()> =
        SocketConnection::connect(&echo_server(), None).expect("echo connects");
    // About the size of an encoded get request.
    let frame = [7u8; 64];

    let mut g = c.benchmark_group("manager");
    g.bench_function("tcp_dict_get", |b| {
        b.iter(|| black_box(d.get(black_box(&1)).unwrap()))
    });
    g.finish();
    c.benchmark_group("tcp")
        .bench_function("round_trip_64b", |b| {
            b.iter(|| {
                plain.send_bytes(black_box(&frame)).unwrap();
                black_box(plain.recv_bytes().unwrap())
            })
        });

    concurrent_clients(&master.address().to_string());
    drop(d);
    master.shutdown().expect("shutdown");
}

/// 100 clients (threads, each with its own connection) hammer one server.
fn concurrent_clients(address: &str) {
    let start = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let address = address.to_string();
            std::thread::spawn(move || -> multiproc::Result<usize> {
                // One connection per client: a fresh TCP connection with its
                // own handshake, as a separate host would make.
                let mut conn =
                    multiproc::manager::TcpClient::connect(address.parse().unwrap(), KEY)?;
                let _ = i;
                let mut ok = 0;
                let req = multiproc::manager::protocol::encode_request(
                    &multiproc::manager::protocol::Request::NumberOfObjects,
                    Default::default(),
                )?;
                let mut resp = Default::default();
                for _ in 0..CALLS_PER_CLIENT {
                    conn.round_trip(&req, &mut resp)?;
                    multiproc::manager::protocol::access_response(&resp)?;
                    ok += 1;
                }
                Ok(ok)
            })
        })
        .collect();
    let mut calls = 0;
    let mut errors = 0;
    for t in threads {
        match t.join() {
            Ok(Ok(n)) => calls += n,
            _ => errors += 1,
        }
    }
    let took = start.elapsed().max(Duration::from_nanos(1));
    println!(
        "tcp/100_clients: {calls} calls from {CLIENTS} clients in {took:.2?}, \
         {:.0} calls/s, {errors} clients failed",
        calls as f64 / took.as_secs_f64()
    );
    assert_eq!(errors, 0, "every client succeeds");
}

fn main() {
    multiproc::init();
    let mut c = Criterion::default().configure_from_args();
    remote(&mut c);
    c.final_summary();
}
