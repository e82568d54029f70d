//! A real `redis-server` for the tests of the `redis` feature: each test
//! starts its own on a free loopback port (no persistence) and the server
//! is stopped by its pid when the handle drops. A missing `redis-server`
//! fails the test (CI installs it; see `.ci/run`), it never skips.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::PROMPTLY;

/// A `redis-server` this test started; stopped (SIGTERM, then SIGKILL) and
/// reaped on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    password: Option<String>,
}

impl RedisServer {
    /// Starts a server without a password.
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// Starts a server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_with(Some(password))
    }

    /// Stops the server (SIGKILL) and starts a new, empty one on the same
    /// port with the same password: Redis restarted. Panics if the port
    /// was taken meanwhile.
    pub fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        self.child = cmd.spawn().expect("restart redis-server");
        assert!(
            self.wait_ready(),
            "redis-server did not restart on its port"
        );
    }

    fn start_with(password: Option<&str>) -> RedisServer {
        // A port the kernel just handed out and we let go of; retried if
        // another process takes it between our close and the server's bind.
        for _ in 0..5 {
            let port = {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
                l.local_addr().unwrap().port()
            };
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--protected-mode", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(p) = password {
                cmd.args(["--requirepass", p]);
            }
            let child = cmd
                .spawn()
                .expect("redis-server must be installed (apt-get install redis-server)");
            let mut server = RedisServer {
                child,
                port,
                password: password.map(str::to_owned),
            };
            if server.wait_ready() {
                return server;
            }
            // Lost the port or failed to start: `server` drops (stopped, reaped).
        }
        panic!("redis-server did not start on a free port in 5 tries");
    }

    /// Whether the server answers on its port before [`PROMPTLY`] passes
    /// (false at once if it exited).
    fn wait_ready(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < PROMPTLY {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            // Polling a process we do not control: nothing can signal us.
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The server's URL (with the password, when it has one).
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Stops the server now (SIGKILL) and reaps it: for tests of a backend
    /// that goes away.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sets `key` to `value` (no expiry), as another program could.
    pub fn set(&self, key: &str, value: &str) {
        assert_eq!(self.ask(&["SET", key, value]), "+OK");
    }

    /// The number of keys in database 0: for tests that check nothing is
    /// left behind.
    pub fn dbsize(&self) -> u64 {
        let line = self.ask(&["DBSIZE"]);
        line.strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("DBSIZE answered {line:?}"))
    }

    /// How many connections are blocked in a command (`BLPOP`, `BLMOVE`…)
    /// now: for tests that must act while a peer waits in the server.
    pub fn blocked_clients(&self) -> u64 {
        let info = self.ask(&["INFO", "clients"]);
        info.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO clients answered {info:?}"))
    }

    /// Sends one command with `redis-cli`-free RESP over a plain socket:
    /// the reply's first line, or a bulk reply's body.
    fn ask(&self, args: &[&str]) -> String {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(PROMPTLY)).unwrap();
        let mut out = Vec::new();
        let mut push = |parts: &[&str]| {
            write!(out, "*{}\r\n", parts.len()).unwrap();
            for a in parts {
                write!(out, "${}\r\n{a}\r\n", a.len()).unwrap();
            }
        };
        if let Some(p) = &self.password {
            push(&["AUTH", p]);
        }
        push(args);
        s.write_all(&out).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        if self.password.is_some() {
            r.read_line(&mut line).unwrap();
            assert_eq!(line.trim_end(), "+OK", "AUTH");
            line.clear();
        }
        r.read_line(&mut line).unwrap();
        let line = line.trim_end().to_owned();
        match line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            Some(len) => {
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                String::from_utf8_lossy(&body).into_owned()
            }
            None => line,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Already reaped (`kill`): its pid may be another process's now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM first so the server exits cleanly; SIGKILL if it lingers.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
