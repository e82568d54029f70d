//! Objects kept in Redis (feature `redis`): the connection every Redis
//! flavour and the distributed Pool share, and how a Redis failure becomes
//! a [`multiproc::Error`](crate::Error).
//!
//! Every connection has a deadline on connect, read and write: a Redis
//! server that is unreachable, refuses the password or goes away mid-call
//! is [`Error::BackendUnavailable`] for that call, never a hang. Keys are
//! named `{prefix}:{kind}:{name}`, so processes on any host that use the
//! same URL, prefix and name meet at the same object.
//!
//! The manager objects (`RedisManager` in `multiproc-proxy` hands them
//! out): `object.rs` (names, keys, type records, deleting), `sync.rs`
//! (the Redis flavour of `Lock`, the semaphores, `Event`, `Barrier`),
//! `rlock.rs` and `condition.rs` (of `RLock` and `Condition`),
//! `queue.rs` (of `Queue` and `JoinableQueue`), `containers.rs` (the
//! hash and list operations the container proxies encode around) and
//! `lease.rs` (keys that live while their process does).

mod condition;
pub(crate) mod conn;
mod containers;
mod lease;
mod object;
mod queue;
mod rlock;
mod sync;

pub(crate) use condition::RedisCondition;
pub use condition::{condition, condition_with};
pub use containers::{RedisDict, RedisList, RedisNamespace, Swapped};
pub use object::{RedisObject, delete_objects, remove_prefix};
pub(crate) use queue::{RedisQueue, queue_type};
pub(crate) use rlock::RedisRLock;
pub(crate) use sync::{RedisBarrier, RedisEvent, RedisLock, RedisSemaphore};

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::fork_sync::Mutex;

/// How long a connection attempt, or one command's reply, may take before
/// the call fails with [`Error::BackendUnavailable`]. A command that blocks
/// on purpose (a blocking pop with a timeout) sets its own read deadline.
pub(crate) const IO_DEADLINE: Duration = Duration::from_secs(10);

/// The prefix keys carry when the caller names none.
pub const DEFAULT_PREFIX: &str = "multiproc";

/// How long a lock's lease (and a queue consumer's presence) lasts unless
/// renewed: a holder that dies loses its lock at most this long after.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The longest lease: a year. Redis refuses a time to live that does not
/// fit its clock's range (`PX` of `u64::MAX` ms), which a lock would only
/// find out when taken.
pub const MAX_LEASE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The longest a blocked call waits in Redis before it looks again at
/// what it waits for (an expired lease, a dead consumer, a broken barrier
/// whose wake-up it missed): a bound, not a polling period.
pub(crate) const RECHECK: Duration = Duration::from_secs(1);

/// Where Redis objects live: a server (from a `redis://` URL, whose
/// password and database it carries), a key prefix and the lease of the
/// locks made there.
#[derive(Clone)]
pub struct RedisTarget {
    /// The server, its password and database.
    info: redis::ConnectionInfo,
    /// The URL as given (with its password): handles carry it to children.
    url: String,
    /// The URL with any password replaced by `***`, for messages.
    shown: String,
    prefix: String,
    lease: Duration,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &self.shown)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Connections not in use, by URL, for the process that made them (a
/// forked child starts afresh: it must not share its parent's sockets).
static POOL: Mutex<Option<(i32, IdleConnections)>> = Mutex::new(None);

/// Idle connections by URL.
type IdleConnections = HashMap<String, Vec<Pooled>>;

/// The most replies a connection may owe (to commands sent without
/// waiting) before the next use reads them first.
const OWED_MAX: usize = 64;

/// A connection of the pool and the replies it still owes: commands sent
/// without waiting ([`RedisTarget::send_unanswered`]), whose replies are
/// read, and dropped, after the next command is sent, so that they cost
/// that command no wait of its own.
pub(crate) struct Pooled {
    conn: conn::RedisConn,
    owed: usize,
    /// When the call that made this connection started making it: that
    /// call's wait for an answer counts from there (see
    /// [`RedisTarget::read_budget`]). `None` once it was used.
    opened: Option<Instant>,
}

impl Pooled {
    /// Reads the owed replies. A reply that is the server's error is the
    /// unanswered command's own business (it is logged); a connection
    /// failure is this call's.
    fn read_owed(&mut self) -> redis::RedisResult<()> {
        while self.owed > 0 {
            let reply = self.conn.recv_response()?;
            self.owed -= 1;
            if let redis::Value::ServerError(e) = reply {
                tracing::debug!("redis: a command sent without waiting failed: {e:?}");
            }
        }
        Ok(())
    }
}

impl redis::ConnectionLike for Pooled {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        if self.owed == 0 {
            return self.conn.req_packed_command(cmd);
        }
        // The command goes out first: the owed replies are then read
        // while the server answers it, not before it was asked.
        self.conn.send_packed_command(cmd)?;
        self.read_owed()?;
        self.conn.recv_response()
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        if self.owed == 0 {
            return self.conn.req_packed_commands(cmd, offset, count);
        }
        // As for one command: the pipeline goes out before the owed
        // replies are read. Its replies are then read as the connection
        // itself reads them: every one, so that the next call starts in
        // step, keeping the first failure; a server's error before
        // `offset` (a transaction's command that could not be queued)
        // fails the call, one after it is the caller's reply.
        self.conn.send_packed_command(cmd)?;
        self.read_owed()?;
        let mut replies = Vec::with_capacity(count);
        let mut first_err = None;
        let mut total = offset + count;
        let mut idx = 0;
        while idx < total {
            match self.conn.recv_response() {
                Ok(redis::Value::ServerError(e)) if idx < offset => {
                    first_err.get_or_insert(redis::RedisError::from(e));
                }
                // RESP3 may put pushed data between replies.
                Ok(redis::Value::Push { .. }) => total += 1,
                Ok(reply) if idx >= offset => replies.push(reply),
                Ok(_) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
            idx += 1;
        }
        first_err.map_or(Ok(replies), Err)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.read_owed().is_ok() && self.conn.check_connection()
    }

    fn is_open(&self) -> bool {
        self.conn.is_open()
    }
}

/// The most idle connections kept per server.
const POOL_KEEP: usize = 8;

/// The full URLs (with passwords) this process was given, by their shown
/// form: a handle that arrives in a message carries the shown form only,
/// as a remote handle leaves its authkey out.
static KNOWN_URLS: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

impl RedisTarget {
    /// Parses `url` (`redis://[user:password@]host:port[/db]`). Nothing is
    /// contacted yet; a malformed URL is [`Error::InvalidArgument`].
    pub fn new(url: &str) -> Result<RedisTarget> {
        let invalid = |e: redis::RedisError| {
            Error::InvalidArgument(format!("redis URL {}: {e}", hide_password(url)))
        };
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(invalid)?;
        if !matches!(
            info.addr(),
            redis::ConnectionAddr::Tcp(..) | redis::ConnectionAddr::Unix(_)
        ) {
            return Err(Error::InvalidArgument(format!(
                "redis URL {}: only redis:// and redis+unix:// are supported",
                hide_password(url)
            )));
        }
        let shown = hide_password(url);
        if shown != url {
            KNOWN_URLS
                .lock()
                .get_or_insert_with(HashMap::new)
                .insert(shown.clone(), url.to_owned());
        }
        Ok(RedisTarget {
            info,
            url: url.to_owned(),
            shown,
            prefix: DEFAULT_PREFIX.to_owned(),
            lease: DEFAULT_LEASE,
        })
    }

    /// A target from a handle's URL: a shown URL (password hidden) is
    /// replaced by the full one this process knows, if it knows one.
    pub(crate) fn from_handle(url: &str, prefix: &str, lease_ms: u64) -> Result<RedisTarget> {
        let full = KNOWN_URLS
            .lock()
            .as_ref()
            .and_then(|m| m.get(url).cloned())
            .unwrap_or_else(|| url.to_owned());
        let mut t = RedisTarget::new(&full)?.with_prefix(prefix)?;
        // A handle from anywhere: its lease is held to the same bounds.
        t.lease = Duration::from_millis(lease_ms).clamp(Duration::from_millis(100), MAX_LEASE);
        Ok(t)
    }

    /// The same server with keys under `prefix` (which may not be empty
    /// nor contain `:` or whitespace, so that two prefixes never overlap).
    pub fn with_prefix(mut self, prefix: &str) -> Result<RedisTarget> {
        if prefix.is_empty() || prefix.contains(':') || prefix.contains(char::is_whitespace) {
            return Err(Error::InvalidArgument(format!(
                "redis key prefix {prefix:?}: must be non-empty, without ':' or whitespace"
            )));
        }
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// The same server with locks leased for `lease` (at least 100 ms, at
    /// most [`MAX_LEASE`]).
    pub fn with_lease(mut self, lease: Duration) -> Result<RedisTarget> {
        if lease < Duration::from_millis(100) || lease > MAX_LEASE {
            return Err(Error::InvalidArgument(format!(
                "redis lease {lease:?}: must be at least 100 ms and at most {MAX_LEASE:?}"
            )));
        }
        self.lease = lease;
        Ok(self)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lease of the locks made here.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The URL with its password hidden, for messages and `Debug`.
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// The URL a handle carries: the full one only to this process's own
    /// children (as a remote handle carries its authkey), the shown one
    /// anywhere else.
    pub(crate) fn url_for_handle(&self) -> String {
        if crate::handle::encoding_for_own_child() {
            self.url.clone()
        } else {
            self.shown.clone()
        }
    }

    /// The key of the object `name` of `kind` (`dict`, `lock`, …).
    pub(crate) fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    /// A new connection, authenticated and on the URL's database, made
    /// within [`IO_DEADLINE`] in all (a server that accepts and never
    /// answers costs a connection no more), with that deadline on reading
    /// and writing.
    pub(crate) fn connect(&self) -> Result<conn::RedisConn> {
        conn::RedisConn::connect(&self.info, IO_DEADLINE).map_err(|e| self.unavailable(e))
    }

    /// Asks the server to answer (`PING`): whether it is there and takes
    /// our password.
    pub fn ping(&self) -> Result<()> {
        self.with_conn(|c| redis::cmd("PING").query::<String>(c).map(drop))
    }

    /// An idle connection of this process (which may owe replies: they
    /// are read at its next command), or a new one.
    fn take_conn(&self) -> Result<Pooled> {
        if let Some(mut conn) = self.take_idle() {
            if conn.owed < OWED_MAX {
                return Ok(conn);
            }
            if conn.read_owed().is_ok() {
                return Ok(conn);
            }
            // A broken connection is dropped.
        }
        let opened = Instant::now();
        Ok(Pooled {
            conn: self.connect()?,
            owed: 0,
            opened: Some(opened),
        })
    }

    /// An idle connection of this process, as pooled.
    fn take_idle(&self) -> Option<Pooled> {
        lease::register_fork_hook_once();
        let pid = crate::sys::process::getpid();
        let mut pool = POOL.lock();
        match pool.as_mut() {
            Some((p, m)) if *p == pid => m.get_mut(&self.url).and_then(Vec::pop),
            _ => {
                // A forked child: its parent's sockets are not its own.
                // Forget them (closing would not disturb the parent, but
                // a connection's drop may write to the socket).
                if let Some((_, m)) = pool.take() {
                    std::mem::forget(m);
                }
                *pool = Some((pid, HashMap::new()));
                None
            }
        }
    }

    /// The read deadline for this call's command on `conn` (plus `block`,
    /// for a command that blocks in the server): [`IO_DEADLINE`], less
    /// what making the connection took if this call made it. A server
    /// that accepts connections and never answers (stopped, say) then
    /// costs a call [`IO_DEADLINE`] in all, not once to connect and again
    /// for the command.
    fn read_budget(conn: &mut Pooled, block: Duration) -> Duration {
        let io = conn.opened.take().map_or(IO_DEADLINE, |t| {
            IO_DEADLINE
                .saturating_sub(t.elapsed())
                .max(Duration::from_millis(1))
        });
        io + block
    }

    /// Pools `conn` for this process's next call.
    fn give_back(&self, mut conn: Pooled) {
        if !redis::ConnectionLike::is_open(&conn.conn) {
            // A reply it could not read left it at an unknown place.
            return;
        }
        conn.opened = None;
        let pid = crate::sys::process::getpid();
        let mut pool = POOL.lock();
        if let Some((p, m)) = pool.as_mut()
            && *p == pid
        {
            let idle = m.entry(self.url.clone()).or_default();
            if idle.len() < POOL_KEEP {
                idle.push(conn);
            }
        }
    }

    /// Runs `f` on a connection of this process's pool; a connection that
    /// failed is dropped, not returned.
    pub(crate) fn with_conn<R>(
        &self,
        f: impl FnOnce(&mut Pooled) -> redis::RedisResult<R>,
    ) -> Result<R> {
        let mut conn = self.take_conn()?;
        if conn.opened.is_some() {
            // Made by this call: the command gets what is left of its wait.
            return self.with_blocking_conn_in(conn, Duration::ZERO, f);
        }
        match f(&mut conn) {
            Ok(r) => {
                self.give_back(conn);
                Ok(r)
            }
            Err(e) => {
                if !is_connection_failure(&e) {
                    self.give_back(conn);
                }
                Err(self.error(e))
            }
        }
    }

    /// Sends `cmd` and does not wait for its reply, which the connection
    /// reads (and drops) after it sends its next command: for a step whose
    /// outcome the caller does not need (acknowledging an item already
    /// handed over), so that it costs no round trip, then or later. A
    /// failed send drops the connection.
    pub(crate) fn send_unanswered(&self, cmd: &redis::Cmd) -> Result<()> {
        let mut conn = self.take_conn()?;
        match conn.conn.send_packed_command(&cmd.get_packed_command()) {
            Ok(()) => {
                conn.owed += 1;
                self.give_back(conn);
                Ok(())
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// As [`RedisTarget::with_conn`], for a command that blocks in the
    /// server for up to `block`: the read deadline grows by that much for
    /// this call.
    pub(crate) fn with_blocking_conn<R>(
        &self,
        block: Duration,
        f: impl FnOnce(&mut Pooled) -> redis::RedisResult<R>,
    ) -> Result<R> {
        let conn = self.take_conn()?;
        self.with_blocking_conn_in(conn, block, f)
    }

    /// [`RedisTarget::with_blocking_conn`] on `conn`: its read deadline is
    /// [`RedisTarget::read_budget`] for this call, [`IO_DEADLINE`] again
    /// once it is pooled.
    fn with_blocking_conn_in<R>(
        &self,
        mut conn: Pooled,
        block: Duration,
        f: impl FnOnce(&mut Pooled) -> redis::RedisResult<R>,
    ) -> Result<R> {
        let budget = Self::read_budget(&mut conn, block);
        if let Err(e) = conn.conn.set_read_timeout(Some(budget)) {
            return Err(self.unavailable(e));
        }
        match f(&mut conn) {
            Ok(r) => {
                if conn.conn.set_read_timeout(Some(IO_DEADLINE)).is_ok() {
                    self.give_back(conn);
                }
                Ok(r)
            }
            Err(e) => {
                if !is_connection_failure(&e)
                    && conn.conn.set_read_timeout(Some(IO_DEADLINE)).is_ok()
                {
                    self.give_back(conn);
                }
                Err(self.error(e))
            }
        }
    }

    /// Blocks in Redis until a token arrives on the list `wake` or the
    /// wait's slice ends: the time left before `deadline`, at most `cap`.
    /// Whether a token came. Never waits when the deadline has passed.
    pub(crate) fn wait_token(&self, wake: &str, deadline: Deadline, cap: Duration) -> Result<bool> {
        let slice = deadline.slice(cap);
        // BLPOP's timeout has millisecond resolution, and 0 means "for
        // ever": a slice under 1 ms is not waited at all.
        if slice < Duration::from_millis(1) {
            return Ok(false);
        }
        let got: Option<(Vec<u8>, Vec<u8>)> = self.with_blocking_conn(slice, |c| {
            redis::cmd("BLPOP")
                .arg(wake)
                .arg(slice.as_secs_f64())
                .query(c)
        })?;
        Ok(got.is_some())
    }

    /// The error a failed command becomes: the connection's failures
    /// (unreachable, refused password, gone mid-call, no reply in time)
    /// are [`Error::BackendUnavailable`] naming the server; an error the
    /// server answered (a key of the wrong type, say) is
    /// [`Error::Remote`].
    pub(crate) fn error(&self, e: redis::RedisError) -> Error {
        if is_connection_failure(&e) {
            self.unavailable(e)
        } else {
            Error::Remote(format!("redis at {}: {e}", self.shown))
        }
    }

    fn unavailable(&self, e: impl fmt::Display) -> Error {
        Error::BackendUnavailable {
            backend: "redis",
            cause: format!("{}: {e}", self.shown),
        }
    }
}

/// The lock `name` (see [`RedisObject`] for keys and type records).
pub fn lock(target: &RedisTarget, name: &str) -> Result<crate::Lock> {
    let obj = RedisObject::open(target, "lock", name, RedisLock::TYPE.into())?;
    Ok(crate::Lock::from_redis(RedisLock::new(obj)))
}

/// The rlock `name` (see [`RedisObject`] for keys and type records).
pub fn rlock(target: &RedisTarget, name: &str) -> Result<crate::RLock> {
    let obj = RedisObject::open(target, "rlock", name, RedisRLock::TYPE.into())?;
    Ok(crate::RLock::from_redis(RedisRLock::new(obj)))
}

/// The semaphore `name`, starting at `value` if it is new.
pub fn semaphore(target: &RedisTarget, name: &str, value: u32) -> Result<crate::Semaphore> {
    let obj = RedisObject::open(target, "semaphore", name, "Semaphore".into())?;
    RedisSemaphore::open(obj, value, false).map(crate::Semaphore::from_redis)
}

/// The bounded semaphore `name`, starting (and capped) at `value` if it is new.
pub fn bounded_semaphore(
    target: &RedisTarget,
    name: &str,
    value: u32,
) -> Result<crate::BoundedSemaphore> {
    let obj = RedisObject::open(target, "semaphore", name, "BoundedSemaphore".into())?;
    RedisSemaphore::open(obj, value, true).map(crate::BoundedSemaphore::from_redis)
}

/// The event `name`.
pub fn event(target: &RedisTarget, name: &str) -> Result<crate::Event> {
    let obj = RedisObject::open(target, "event", name, "Event".into())?;
    Ok(crate::Event::from_redis(RedisEvent::new(obj)))
}

/// The barrier `name`, for `parties` parties if it is new.
pub fn barrier(target: &RedisTarget, name: &str, parties: usize) -> Result<crate::Barrier> {
    let obj = RedisObject::open(target, "barrier", name, "Barrier".into())?;
    RedisBarrier::open(obj, parties).map(crate::Barrier::from_redis)
}

/// The queue `name`, of at most `maxsize` items (0: no limit) if it is new.
pub fn queue<T: crate::Shareable>(
    target: &RedisTarget,
    name: &str,
    maxsize: usize,
) -> Result<crate::Queue<T>> {
    let obj = RedisObject::open(target, "queue", name, queue_type::<T>())?;
    RedisQueue::open(obj, maxsize, false).map(crate::Queue::from_redis)
}

/// The queue `name` as a joinable one.
pub fn joinable_queue<T: crate::Shareable>(
    target: &RedisTarget,
    name: &str,
    maxsize: usize,
) -> Result<crate::JoinableQueue<T>> {
    let obj = RedisObject::open(target, "queue", name, queue_type::<T>())?;
    RedisQueue::open(obj, maxsize, true)
        .map(|q| crate::JoinableQueue::from_queue(crate::Queue::from_redis(q)))
}

/// Whether `e` says the connection (not the command) failed.
fn is_connection_failure(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(e.kind(), redis::ErrorKind::AuthenticationFailed)
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

/// `url` with the password (between `:` and `@` after the scheme) replaced.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows_in_messages() {
        assert_eq!(
            hide_password("redis://:s3cret@h:6379/2"),
            "redis://:***@h:6379/2"
        );
        assert_eq!(
            hide_password("redis://me:s3cret@h:6379"),
            "redis://me:***@h:6379"
        );
        assert_eq!(hide_password("redis://h:6379"), "redis://h:6379");
        let t = RedisTarget::new("redis://:s3cret@127.0.0.1:1/0").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn a_handles_debug_form_hides_the_password() {
        let repr = crate::handle::RedisRepr {
            url: "redis://:s3cret@h:6379/0".into(),
            prefix: "p".into(),
            name: "n".into(),
            type_name: "Lock".into(),
            lease_ms: 1000,
        };
        let shown = format!("{repr:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("h:6379"), "{shown}");
    }

    #[test]
    fn a_lease_is_bounded() {
        let t = RedisTarget::new("redis://127.0.0.1:1/0").unwrap();
        for bad in [Duration::from_millis(99), MAX_LEASE * 2, Duration::MAX] {
            assert!(matches!(
                t.clone().with_lease(bad),
                Err(Error::InvalidArgument(_))
            ));
        }
        assert!(t.clone().with_lease(MAX_LEASE).is_ok());
        let from = RedisTarget::from_handle("redis://127.0.0.1:1/0", "p", u64::MAX).unwrap();
        assert_eq!(from.lease(), MAX_LEASE);
    }

    #[test]
    fn prefixes_cannot_overlap() {
        let t = RedisTarget::new("redis://127.0.0.1:1").unwrap();
        assert_eq!(t.key("dict", "d"), "multiproc:dict:d");
        let t = t.with_prefix("app").unwrap();
        assert_eq!(t.key("lock", "l"), "app:lock:l");
        for bad in ["", "a:b", "a b"] {
            assert!(matches!(
                t.clone().with_prefix(bad),
                Err(Error::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn an_unreachable_server_is_backend_unavailable_not_a_hang() {
        // Port 1 on loopback: nothing listens, the connect is refused at once.
        let t = RedisTarget::new("redis://127.0.0.1:1").unwrap();
        match t.connect() {
            Err(Error::BackendUnavailable { backend, cause }) => {
                assert_eq!(backend, "redis");
                assert!(cause.contains("127.0.0.1:1"), "{cause}");
            }
            Err(other) => panic!("expected BackendUnavailable, got {other:?}"),
            Ok(_) => panic!("connected to a port where nothing listens"),
        }
    }

    #[test]
    fn a_malformed_url_is_invalid_argument() {
        assert!(matches!(
            RedisTarget::new("http://nope"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
