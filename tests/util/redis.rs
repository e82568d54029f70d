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

    /// The number of keys in database 0, asked with `redis-cli`-free RESP
    /// over a plain socket: for tests that check nothing is left behind.
    pub fn dbsize(&self) -> u64 {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(PROMPTLY)).unwrap();
        if let Some(p) = &self.password {
            write!(s, "*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len()).unwrap();
        }
        s.write_all(b"*1\r\n$6\r\nDBSIZE\r\n").unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        if self.password.is_some() {
            r.read_line(&mut line).unwrap();
            assert_eq!(line.trim_end(), "+OK", "AUTH");
            line.clear();
        }
        r.read_line(&mut line).unwrap();
        line.trim_end()
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("DBSIZE answered {line:?}"))
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
