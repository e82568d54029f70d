//! A Redis connection whose reads survive signals.
//!
//! redis-rs reads its socket under a read deadline (`SO_RCVTIMEO`), and
//! Linux never restarts such a read after a signal (even one installed
//! with `SA_RESTART`, or a stop and continue): the call failed with EINTR,
//! and redis-rs then skipped the reply that was still on its way, so a
//! `BLMOVE` whose item had already moved lost it. This connection writes
//! commands packed by redis-rs and parses replies with its parser, over a
//! socket it reads itself: an interrupted read is read again, for what is
//! left of its deadline.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, ConnectionInfo, ConnectionLike, RedisResult, Value};

/// The socket.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf),
            Stream::Unix(s) => s.write_all(buf),
        }
    }
}

/// One connection to a Redis server (RESP2).
pub(crate) struct RedisConn {
    stream: Stream,
    parser: redis::Parser,
    db: i64,
    /// The read deadline set, which an interrupted read keeps.
    read_timeout: Option<Duration>,
    /// An I/O error left the stream at an unknown place: not to be used.
    broken: bool,
}

/// Reads from the stream, reading again after a signal for what is left
/// of the read deadline (a signal storm does not make it endless).
struct Patient<'a> {
    stream: &'a mut Stream,
    timeout: Option<Duration>,
}

impl Read for Patient<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let started = Instant::now();
        let mut shortened = false;
        let result = loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    if let Some(t) = self.timeout {
                        let left = t.saturating_sub(started.elapsed());
                        if left.is_zero() {
                            break Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "redis read deadline passed",
                            ));
                        }
                        self.stream.set_read_timeout(Some(left))?;
                        shortened = true;
                    }
                }
                other => break other,
            }
        };
        if shortened {
            self.stream.set_read_timeout(self.timeout)?;
        }
        result
    }
}

impl RedisConn {
    /// Connects to `info`'s server, authenticates and selects its database,
    /// all within `timeout`; each read and write then waits at most that.
    pub(crate) fn connect(info: &ConnectionInfo, timeout: Duration) -> RedisResult<RedisConn> {
        let deadline = Instant::now() + timeout;
        let left = || {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connecting to redis timed out",
                    ))
                })
        };
        let stream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let mut last = None;
                let mut found = None;
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, left()?) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let s = match (found, last) {
                    (Some(s), _) => s,
                    (None, Some(e)) => return Err(e.into()),
                    (None, None) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "the redis host has no address",
                        )
                        .into());
                    }
                };
                // A command sent behind one whose reply is still owed must
                // not wait in the kernel for that reply's ACK.
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            ConnectionAddr::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            _ => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "only redis:// and unix sockets are supported",
                )));
            }
        };
        let settings = info.redis_settings();
        let mut conn = RedisConn {
            stream,
            parser: redis::Parser::new(),
            db: settings.db(),
            read_timeout: None,
            broken: false,
        };
        if let Some(password) = settings.password() {
            conn.set_timeouts(left()?)?;
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
            auth.query::<()>(&mut conn)?;
        }
        if settings.db() != 0 {
            conn.set_timeouts(left()?)?;
            redis::cmd("SELECT")
                .arg(settings.db())
                .query::<()>(&mut conn)?;
        }
        conn.set_timeouts(timeout)?;
        Ok(conn)
    }

    fn set_timeouts(&mut self, t: Duration) -> RedisResult<()> {
        self.set_read_timeout(Some(t))?;
        self.stream.set_write_timeout(Some(t))?;
        Ok(())
    }

    /// Sets the read deadline of each read.
    pub(crate) fn set_read_timeout(&mut self, t: Option<Duration>) -> RedisResult<()> {
        self.stream.set_read_timeout(t)?;
        self.read_timeout = t;
        Ok(())
    }

    /// Sends a packed command without reading its reply.
    pub(crate) fn send_packed_command(&mut self, cmd: &[u8]) -> RedisResult<()> {
        if self.broken {
            return Err(broken());
        }
        // `write_all` writes again after a signal.
        self.stream.write_all(cmd).map_err(|e| {
            self.broken = true;
            redis::RedisError::from(e)
        })
    }

    /// Reads one reply.
    pub(crate) fn recv_response(&mut self) -> RedisResult<Value> {
        if self.broken {
            return Err(broken());
        }
        let reader = Patient {
            stream: &mut self.stream,
            timeout: self.read_timeout,
        };
        let value = self.parser.parse_value(reader);
        if value.is_err() {
            // Whatever failed (the socket, a reply that does not parse),
            // the stream is at an unknown place: no later reply on it can
            // be matched to its command.
            self.broken = true;
        }
        value
    }
}

fn broken() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the redis connection broke earlier",
    ))
}

impl ConnectionLike for RedisConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.send_packed_command(cmd)?;
        loop {
            match self.recv_response()? {
                Value::Push { .. } => continue,
                value => return Ok(value),
            }
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.send_packed_command(cmd)?;
        let mut values = Vec::with_capacity(count);
        let mut aborted = Vec::new();
        for index in 0..offset + count {
            match self.recv_response()? {
                // Inside a transaction, a command refused when queued
                // aborts it (redis-rs reports it so).
                Value::ServerError(e) if index < offset => aborted.push(e),
                _ if index < offset => {}
                value => values.push(value),
            }
        }
        if let Some(first) = aborted.into_iter().next() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort),
                "transaction aborted",
                format!("{first:?}"),
            )));
        }
        Ok(values)
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        !self.broken
    }
}
