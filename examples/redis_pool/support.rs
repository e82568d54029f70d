//! What both Redis pool examples share: a Redis server to talk to, and
//! worker processes started for the demonstration (on real hosts, you
//! start the workers yourself).

// Each example uses a part of this.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Redis server of the demonstration: `MULTIPROC_REDIS_URL` if set,
/// else a `redis-server` started here on a free loopback port (without
/// persistence), stopped by pid when this drops.
pub struct Redis {
    child: Option<Child>,
    pub url: String,
}

impl Redis {
    pub fn get() -> Redis {
        if let Ok(url) = std::env::var("MULTIPROC_REDIS_URL") {
            return Redis { child: None, url };
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (or set MULTIPROC_REDIS_URL)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child: Some(child),
            url: format!("redis://127.0.0.1:{port}/0"),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Worker processes of this demonstration: this same program, started
/// with `env` set and `args`; killed by pid when this drops.
pub struct Workers(pub Vec<Child>);

impl Workers {
    pub fn start(n: usize, env: &[(&str, &str)], args: &[&str]) -> Workers {
        let exe = std::env::current_exe().expect("this program's path");
        Workers(
            (0..n)
                .map(|_| {
                    Command::new(&exe)
                        .envs(env.iter().copied())
                        .args(args)
                        .spawn()
                        .expect("a worker starts")
                })
                .collect(),
        )
    }

    pub fn kill_first(&mut self) -> u32 {
        let mut c = self.0.remove(0);
        let pid = c.id();
        let _ = c.kill();
        let _ = c.wait();
        pid
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `cond` (about another process's state) until it holds or a minute passes.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
