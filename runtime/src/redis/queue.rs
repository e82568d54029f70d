//! The Redis flavour of [`Queue`](crate::Queue) and
//! [`JoinableQueue`](crate::JoinableQueue): a Redis list.
//!
//! `put` pushes at the head and counts the task (onto a queue known to be
//! unbounded, in one `MULTI` transaction; onto a bounded one, by a script
//! that also honours `maxsize`); `get` moves the tail item into this process's
//! in-flight list `p:queue#proc.<consumer>:name` (a plain `LMOVE` from an
//! unbounded queue while this consumer's presence is fresh, else the
//! [`TAKE`] script, or a blocking `BLMOVE` when the queue is empty), so the
//! item is never only in a reply on the wire. When is it *taken*:
//!
//! * from a [`Queue`](crate::Queue), once it is decoded and handed to the
//!   caller (then it leaves the in-flight list);
//! * from a [`JoinableQueue`](crate::JoinableQueue), only at its
//!   `task_done` (which removes this process's oldest in-flight item), so
//!   a consumer that dies while working on an item does not lose it.
//!
//! Each consumer process announces itself with a leased key
//! (`p:queue#alive.<consumer>:name`, renewed while it lives). A consumer
//! that finds the queue empty, and each one when it starts taking, moves
//! the in-flight items of consumers whose lease ended back to the tail of
//! the queue, where they are taken next.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use crate::codec::Shareable;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::redis::{RECHECK, RedisObject, lease};

/// KEYS queue, meta, unfinished; ARGV item. 1 put, 0 full.
static PUT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local m = tonumber(redis.call('HGET', KEYS[2], 'maxsize') or '0')
if m > 0 and redis.call('LLEN', KEYS[1]) >= m then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[3])
return 1
",
    )
});

/// Takes back an item a put pushed over a bound it did not know of (the
/// queue was made anew with one): 1 if it was still queued, then no
/// longer counted as a task either. KEYS queue, unfinished; ARGV item.
static TAKE_BACK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('DECR', KEYS[2])
return 1
",
    )
});

/// Registers consumer ARGV[1] (lease ARGV[2] ms) and moves the in-flight
/// items of consumers whose lease ended back to the queue's tail.
/// KEYS queue, consumers; ARGV consumer, lease, prefix, name.
static ENLIST: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local p, n = ARGV[3], ARGV[4]
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SET', p .. ':queue#alive.' .. ARGV[1] .. ':' .. n, ARGV[1], 'PX', ARGV[2])
local moved = 0
for _, c in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if c ~= ARGV[1] and redis.call('EXISTS', p .. ':queue#alive.' .. c .. ':' .. n) == 0 then
    local proc = p .. ':queue#proc.' .. c .. ':' .. n
    while redis.call('LMOVE', proc, KEYS[1], 'LEFT', 'RIGHT') do moved = moved + 1 end
    redis.call('SREM', KEYS[2], c)
  end
end
return moved
",
    )
});

/// Takes the tail item into this consumer's in-flight list without
/// blocking (nil when the queue is empty), wakes a waiting producer of a
/// bounded queue and renews this consumer's presence: a `get` from a
/// queue with items is this one round trip (its acknowledgement is sent
/// without waiting for the reply).
/// KEYS queue, proc, meta, space, alive, consumers; ARGV consumer, lease.
static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
if not item then return false end
if tonumber(redis.call('HGET', KEYS[3], 'maxsize') or '0') > 0 then
  redis.call('RPUSH', KEYS[4], 1)
  redis.call('LTRIM', KEYS[4], -64, -1)
end
redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[6], ARGV[1])
return item
",
    )
});

/// After a blocking `BLMOVE` took an item: what [`TAKE`] does beside the
/// move. Acknowledges a taken item (ARGV[1] '1': remove it from the in-flight
/// list), wakes a waiting producer of a bounded queue, and renews this
/// consumer's presence (so one whose lease once lapsed, Redis being out
/// of reach, is not taken for dead while it works).
/// KEYS proc, meta, space, alive, consumers; ARGV ack, item, consumer, lease.
/// Sent as `EVAL` source: it goes unanswered, so a `NOSCRIPT` would pass unseen.
const TAKEN_SOURCE: &str = r"
if ARGV[1] == '1' then redis.call('LREM', KEYS[1], -1, ARGV[2]) end
if tonumber(redis.call('HGET', KEYS[2], 'maxsize') or '0') > 0 then
  redis.call('RPUSH', KEYS[3], 1)
  redis.call('LTRIM', KEYS[3], -64, -1)
end
redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', KEYS[5], ARGV[3])
";

/// One task done: -1 if none is unfinished. Drops this consumer's oldest
/// in-flight item, and wakes the joiners at zero. A consumer that holds an
/// item (ARGV[1] = 1) but finds its in-flight list empty lost the item to
/// another consumer (its lease ended while it was stopped or cut off):
/// -2, and nothing is counted (that consumer's `task_done` counts it).
/// KEYS unfinished, proc, joined.
static TASK_DONE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local u = tonumber(redis.call('GET', KEYS[1]) or '0')
local it = redis.call('RPOP', KEYS[2])
if ARGV[1] == '1' and not it then return -2 end
if u <= 0 then
  if it then redis.call('RPUSH', KEYS[2], it) end
  return -1
end
redis.call('DECR', KEYS[1])
if u == 1 then
  redis.call('DEL', KEYS[3])
  redis.call('RPUSH', KEYS[3], 1)
end
return u - 1
",
    )
});

/// Whether no task is unfinished; if so, passes the wake-up on.
static JOIN_CHECK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if tonumber(redis.call('GET', KEYS[1]) or '0') <= 0 then
  redis.call('DEL', KEYS[2])
  redis.call('RPUSH', KEYS[2], 1)
  return 1
end
return 0
",
    )
});

/// The Redis flavour of a queue; the item type lives in the handle above.
#[derive(Clone, Debug)]
pub(crate) struct RedisQueue {
    obj: RedisObject,
    /// A joinable queue's consumer holds an item until `task_done`.
    joinable: bool,
    /// The process that enlisted as a consumer of this queue (0: none yet).
    enlisted: Arc<AtomicI32>,
    /// A joinable queue's items this process took and has not marked done,
    /// with the pid that counted them (a forked child starts at none).
    held: Arc<crate::fork_sync::Mutex<(i32, u64)>>,
    /// The queue's `maxsize` as last read from Redis ([`MAXSIZE_UNKNOWN`]:
    /// not read yet). It is fixed when the queue is made: a get from an
    /// unbounded queue has no producer to wake and can skip [`TAKE`]. (A
    /// queue deleted and made anew with a bound while this handle lives:
    /// its waiting producers are woken by their next look, within
    /// [`RECHECK`], instead of by this handle's gets. Puts always honour
    /// the bound in Redis.)
    maxsize: Arc<AtomicU64>,
}

/// [`RedisQueue::maxsize`] before it was read.
const MAXSIZE_UNKNOWN: u64 = u64::MAX;

/// How a `get` moved its item into the consumer's in-flight list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Taken {
    /// By [`TAKE`], which also renewed the consumer's presence.
    Scripted,
    /// By a plain `LMOVE` (an unbounded queue, a presence renewed lately).
    Moved,
    /// By a blocking `BLMOVE`: the rest goes after it ([`TAKEN_SOURCE`]).
    Blocked,
}

/// The type name recorded for a queue of `T` (a joinable one is the same
/// object: the two handles share it).
pub(crate) fn queue_type<T>() -> String {
    format!("Queue<{}>", std::any::type_name::<T>())
}

impl RedisQueue {
    /// Opens `obj` as a queue of at most `maxsize` items (0: no limit)
    /// unless it exists, in which case it keeps its limit.
    pub(crate) fn open(obj: RedisObject, maxsize: usize, joinable: bool) -> Result<RedisQueue> {
        let meta = obj.sub("#meta");
        let (actual,): (Option<u64>,) = obj.run(|c| {
            redis::pipe()
                .cmd("HSETNX")
                .arg(&meta)
                .arg("maxsize")
                .arg(maxsize)
                .ignore()
                .cmd("HGET")
                .arg(&meta)
                .arg("maxsize")
                .query(c)
        })?;
        let q = RedisQueue::new(obj, joinable);
        q.maxsize.store(
            actual.unwrap_or(0).min(MAXSIZE_UNKNOWN - 1),
            Ordering::Relaxed,
        );
        Ok(q)
    }

    pub(crate) fn new(obj: RedisObject, joinable: bool) -> RedisQueue {
        RedisQueue {
            obj,
            joinable,
            enlisted: Arc::new(AtomicI32::new(0)),
            held: Arc::new(crate::fork_sync::Mutex::new((0, 0))),
            maxsize: Arc::new(AtomicU64::new(MAXSIZE_UNKNOWN)),
        }
    }

    pub(crate) fn object(&self) -> &RedisObject {
        &self.obj
    }

    /// The same queue as a joinable one (or not).
    pub(crate) fn with_joinable(&self, joinable: bool) -> RedisQueue {
        let q = RedisQueue::new(self.obj.clone(), joinable);
        q.maxsize
            .store(self.maxsize.load(Ordering::Relaxed), Ordering::Relaxed);
        q
    }

    /// Whether the queue has no bound, as far as this handle knows (read
    /// from Redis once if not known yet).
    fn unbounded(&self) -> Result<bool> {
        let known = self.maxsize.load(Ordering::Relaxed);
        if known != MAXSIZE_UNKNOWN {
            return Ok(known == 0);
        }
        let meta = self.obj.sub("#meta");
        let read: Option<u64> = self
            .obj
            .run(|c| redis::cmd("HGET").arg(&meta).arg("maxsize").query(c))?;
        let m = read.unwrap_or(0).min(MAXSIZE_UNKNOWN - 1);
        self.maxsize.store(m, Ordering::Relaxed);
        Ok(m == 0)
    }

    /// Adds `item` by `deadline`; [`Error::Full`] when there is no room by then.
    pub(crate) fn put<T: Shareable>(&self, item: &T, deadline: Deadline) -> Result<()> {
        let bytes = item.encode()?;
        let target = self.obj.target();
        let (key, meta, unfinished, space) = (
            self.obj.key(),
            self.obj.sub("#meta"),
            self.obj.sub("#unfinished"),
            self.obj.sub("#space"),
        );
        if self.unbounded()? && self.put_unbounded(&bytes, &key, &meta, &unfinished)? {
            return Ok(());
        }
        loop {
            let put: i64 = target.with_conn(|c| {
                PUT.key(&key)
                    .key(&meta)
                    .key(&unfinished)
                    .arg(bytes.as_slice())
                    .invoke(c)
            })?;
            if put == 1 {
                return Ok(());
            }
            if deadline.expired() {
                return Err(Error::Full);
            }
            target.wait_token(&space, deadline, RECHECK)?;
        }
    }

    /// A put onto a queue this handle knows as unbounded: the push and the
    /// task count in one transaction, without [`PUT`]'s script (whose fixed
    /// cost in Redis is several times that of the commands). The
    /// transaction reads the bound too: if the queue was deleted and made
    /// anew with one, and this push went over it, the item is taken back
    /// and `false` returned, for the caller to put it the bounded way. An
    /// item a consumer took before it could be taken back stays taken (the
    /// queue was over its bound for that moment).
    fn put_unbounded(&self, bytes: &[u8], key: &str, meta: &str, unfinished: &str) -> Result<bool> {
        let target = self.obj.target();
        let (bound, len): (Option<u64>, u64) = target.with_conn(|c| {
            redis::pipe()
                .atomic()
                .cmd("HGET")
                .arg(meta)
                .arg("maxsize")
                .cmd("LPUSH")
                .arg(key)
                .arg(bytes)
                .cmd("INCR")
                .arg(unfinished)
                .ignore()
                .query(c)
        })?;
        let bound = bound.unwrap_or(0);
        if bound == 0 {
            return Ok(true);
        }
        self.maxsize
            .store(bound.min(MAXSIZE_UNKNOWN - 1), Ordering::Relaxed);
        if len <= bound {
            return Ok(true);
        }
        let taken_back: i64 =
            target.with_conn(|c| TAKE_BACK.key(key).key(unfinished).arg(bytes).invoke(c))?;
        Ok(taken_back == 0)
    }

    /// This process's consumer name (its lease token).
    fn consumer(&self) -> String {
        lease::process_token()
    }

    fn in_flight(&self, consumer: &str) -> String {
        format!(
            "{}:queue#proc.{consumer}:{}",
            self.obj.target().prefix(),
            self.obj.name()
        )
    }

    /// The key announcing that `consumer` lives.
    fn presence(&self, consumer: &str) -> String {
        format!(
            "{}:queue#alive.{consumer}:{}",
            self.obj.target().prefix(),
            self.obj.name()
        )
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.obj.target().lease().as_millis()).unwrap_or(u64::MAX)
    }

    /// Announces this consumer (and keeps its lease renewed) and gives
    /// dead consumers' items back to the queue.
    fn enlist(&self, consumer: &str) -> Result<()> {
        let target = self.obj.target();
        let lease_ms = self.lease_ms();
        let moved: i64 = target.with_conn(|c| {
            ENLIST
                .key(self.obj.key())
                .key(self.obj.sub("#consumers"))
                .arg(consumer)
                .arg(lease_ms)
                .arg(target.prefix())
                .arg(self.obj.name())
                .invoke(c)
        })?;
        if moved > 0 {
            tracing::warn!(
                moved,
                queue = self.obj.name(),
                "redis queue items of a dead consumer put back"
            );
        }
        self.enlisted
            .store(crate::sys::process::getpid(), Ordering::Release);
        lease::hold_fresh(target, self.presence(consumer), consumer.to_owned());
        Ok(())
    }

    /// Removes the oldest item by `deadline`; [`Error::Empty`] when there is none by then.
    ///
    /// From a queue with items this is one round trip ([`TAKE`]); the
    /// acknowledgement that follows is sent without waiting for its reply.
    pub(crate) fn get<T: Shareable>(&self, deadline: Deadline) -> Result<T> {
        let consumer = self.consumer();
        let target = self.obj.target();
        let key = self.obj.key();
        let proc = self.in_flight(&consumer);
        let presence = self.presence(&consumer);
        if self.enlisted.load(Ordering::Acquire) != crate::sys::process::getpid() {
            self.enlist(&consumer)?;
        }
        // From an unbounded queue, while this consumer's presence was set
        // less than a third of its lease ago (so it lives in Redis and the
        // consumer is enlisted), a plain LMOVE does what TAKE does.
        let fresh = target.lease() / 3;
        // Whether that LMOVE found the queue empty (TAKE would too).
        let mut looked = false;
        if self.unbounded()? && lease::renewed_within(target, &presence, &consumer, fresh) {
            let taken: Option<Vec<u8>> = target.with_conn(|c| {
                redis::cmd("LMOVE")
                    .arg(&key)
                    .arg(&proc)
                    .arg("RIGHT")
                    .arg("LEFT")
                    .query(c)
            })?;
            if let Some(bytes) = taken {
                return self.hand_over(bytes, &proc, &consumer, &presence, Taken::Moved);
            }
            looked = true;
        }
        loop {
            let taken: Option<Vec<u8>> = if std::mem::take(&mut looked) {
                None
            } else {
                target.with_conn(|c| {
                    TAKE.key(&key)
                        .key(&proc)
                        .key(self.obj.sub("#meta"))
                        .key(self.obj.sub("#space"))
                        .key(&presence)
                        .key(self.obj.sub("#consumers"))
                        .arg(&consumer)
                        .arg(self.lease_ms())
                        .invoke(c)
                })?
            };
            if let Some(bytes) = taken {
                return self.hand_over(bytes, &proc, &consumer, &presence, Taken::Scripted);
            }
            if deadline.expired() {
                return Err(Error::Empty);
            }
            let slice = deadline.slice(RECHECK);
            // BLMOVE's timeout has millisecond resolution (0: for ever).
            if slice >= std::time::Duration::from_millis(1) {
                let got: Option<Vec<u8>> = target.with_blocking_conn(slice, |c| {
                    redis::cmd("BLMOVE")
                        .arg(&key)
                        .arg(&proc)
                        .arg("RIGHT")
                        .arg("LEFT")
                        .arg(slice.as_secs_f64())
                        .query(c)
                })?;
                if let Some(bytes) = got {
                    return self.hand_over(bytes, &proc, &consumer, &presence, Taken::Blocked);
                }
                if deadline.expired() {
                    return Err(Error::Empty);
                }
            }
            // Empty for a while: look for dead consumers' items.
            self.enlist(&consumer)?;
        }
    }

    /// Decodes an item this consumer moved into its in-flight list `proc`
    /// (`how`) and settles it there, without waiting for Redis: a plain
    /// queue's item is taken once decoded (one that does not decode is
    /// dropped, as a local queue drops it); a joinable queue's stays in
    /// flight until `task_done`. After a `BLMOVE`, the rest of what
    /// [`TAKE`] does goes along ([`TAKEN_SOURCE`]).
    fn hand_over<T: Shareable>(
        &self,
        bytes: Vec<u8>,
        proc: &str,
        consumer: &str,
        presence: &str,
        how: Taken,
    ) -> Result<T> {
        let target = self.obj.target();
        let item = T::decode(&bytes);
        let ack = !self.joinable || item.is_err();
        if !ack {
            self.held(|n| *n += 1);
        }
        let settle = match how {
            Taken::Blocked => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(TAKEN_SOURCE)
                    .arg(5)
                    .arg(proc)
                    .arg(self.obj.sub("#meta"))
                    .arg(self.obj.sub("#space"))
                    .arg(presence)
                    .arg(self.obj.sub("#consumers"))
                    .arg(if ack { "1" } else { "0" })
                    .arg(bytes.as_slice())
                    .arg(consumer)
                    .arg(self.lease_ms());
                Some(cmd)
            }
            Taken::Scripted | Taken::Moved if ack => {
                let mut cmd = redis::cmd("LREM");
                cmd.arg(proc).arg(-1).arg(bytes.as_slice());
                Some(cmd)
            }
            Taken::Scripted | Taken::Moved => None,
        };
        // TAKE renewed the presence; the settling script after a BLMOVE
        // does if it goes out; a plain LMOVE leaves it to the renewer.
        let mut renewed = how != Taken::Moved;
        if let Some(cmd) = settle {
            // Sent and not waited for; if the send fails, once more with a
            // round trip. The item is the caller's either way: one whose
            // acknowledgement never arrived stays in flight and could come
            // back only if this consumer died (given twice, never lost).
            if target.send_unanswered(&cmd).is_err()
                && let Err(e) = target.with_conn(|c| cmd.exec(c))
            {
                tracing::warn!(
                    queue = self.obj.name(),
                    "a taken redis queue item was not acknowledged: {e}"
                );
                if how == Taken::Blocked {
                    // Its presence was not renewed: renew it at once.
                    lease::hold(target, presence.to_owned(), consumer.to_owned());
                }
                renewed = false;
            }
        }
        if renewed {
            lease::hold_fresh(target, presence.to_owned(), consumer.to_owned());
        }
        item
    }

    /// How many items are queued now (not counting those in flight).
    pub(crate) fn qsize(&self) -> Result<usize> {
        let key = self.obj.key();
        self.obj.run(|c| redis::cmd("LLEN").arg(&key).query(c))
    }

    /// The most items the queue holds (0: no limit).
    pub(crate) fn maxsize(&self) -> Result<usize> {
        let meta = self.obj.sub("#meta");
        let m: Option<usize> = self
            .obj
            .run(|c| redis::cmd("HGET").arg(&meta).arg("maxsize").query(c))?;
        Ok(m.unwrap_or(0))
    }

    /// Whether a bounded queue is full now.
    pub(crate) fn full(&self) -> Result<bool> {
        let max = self.maxsize()?;
        Ok(max != 0 && self.qsize()? >= max)
    }

    /// Runs `f` on the count of items this process holds.
    fn held<R>(&self, f: impl FnOnce(&mut u64) -> R) -> R {
        let mut held = self.held.lock();
        let me = crate::sys::process::getpid();
        if held.0 != me {
            *held = (me, 0);
        }
        f(&mut held.1)
    }

    /// Marks one task done; more calls than items is `InvalidState`, and so
    /// is the call of a consumer whose item went to another consumer (its
    /// lease ended while it was stopped or cut off from Redis).
    pub(crate) fn task_done(&self) -> Result<()> {
        let proc = self.in_flight(&self.consumer());
        let holds = self.held(|n| *n > 0);
        let left: i64 = self.obj.run(|c| {
            TASK_DONE
                .key(self.obj.sub("#unfinished"))
                .key(&proc)
                .key(self.obj.sub("#joined"))
                .arg(if holds { "1" } else { "0" })
                .invoke(c)
        })?;
        if holds {
            self.held(|n| *n = n.saturating_sub(1));
        }
        match left {
            -2 => Err(Error::InvalidState(
                "this consumer's item went to another consumer after its lease ended (it was \
                 stopped or cut off from Redis for longer than the lease): that consumer's \
                 task_done counts it"
                    .into(),
            )),
            l if l < 0 => Err(Error::InvalidState(
                "task_done() called more times than there were items in the queue".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The number of items put and not yet marked done.
    pub(crate) fn unfinished_tasks(&self) -> Result<usize> {
        let key = self.obj.sub("#unfinished");
        let n: Option<i64> = self.obj.run(|c| redis::cmd("GET").arg(&key).query(c))?;
        Ok(usize::try_from(n.unwrap_or(0)).unwrap_or(0))
    }

    /// Waits by `deadline` until every item put is done (`WouldBlock` for a
    /// try, `Timeout` after a wait).
    pub(crate) fn join(&self, deadline: Deadline) -> Result<()> {
        let target = self.obj.target();
        let (unfinished, joined) = (self.obj.sub("#unfinished"), self.obj.sub("#joined"));
        loop {
            let done: i64 =
                target.with_conn(|c| JOIN_CHECK.key(&unfinished).key(&joined).invoke(c))?;
            if done == 1 {
                return Ok(());
            }
            if deadline.expired() {
                return Err(expired(deadline));
            }
            target.wait_token(&joined, deadline, RECHECK)?;
        }
    }
}

fn expired(deadline: Deadline) -> Error {
    match deadline {
        Deadline::Now => Error::WouldBlock,
        d => d.timeout_error(),
    }
}
