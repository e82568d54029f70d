//! The Redis flavour of the sync primitives: [`Lock`](crate::Lock),
//! [`Semaphore`](crate::Semaphore) / [`BoundedSemaphore`](crate::BoundedSemaphore),
//! [`Event`](crate::Event) and [`Barrier`](crate::Barrier) kept in Redis.
//!
//! Waits block in Redis (`BLPOP` on the object's wake-up list, which every
//! release, set or barrier round pushes to) with the caller's deadline,
//! and look again at the object at least every [`RECHECK`] (a lock: when
//! its holder's lease would end), so an expired lease or a missed wake-up
//! is noticed without a polling loop.
//!
//! A lock is the key `p:lock:name` holding its holder's token, with a
//! lease (`PX`) that the holder's process renews while it lives (see
//! `lease.rs`). Beside it, `p:lock#owner:name` records the holder until a
//! clean release: a new holder that finds a record left behind knows the
//! previous holder's lease ended without a release (it died, or was cut
//! off from Redis for longer than the lease) and is told
//! ([`Acquired::OwnerDied`]).

use std::sync::LazyLock;
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::redis::{RECHECK, RedisObject, lease};
use crate::sync::Acquired;

/// The error for a deadline that ran out: `WouldBlock` for a `try_` call.
pub(crate) fn expired(deadline: Deadline) -> Error {
    match deadline {
        Deadline::Now => Error::WouldBlock,
        d => d.timeout_error(),
    }
}

/// How a lock kept in Redis was taken, from the owner record the acquire
/// script found (`prev`): a record left behind means its holder's lease
/// ended without a release.
pub(crate) fn taken_from(prev: redis::Value, kind: &str) -> Acquired {
    match prev {
        redis::Value::BulkString(prev) => {
            let pid = lease::token_pid(&prev);
            tracing::warn!(
                pid,
                "a redis {kind} recovered from a holder whose lease ended"
            );
            Acquired::OwnerDied { pid }
        }
        _ => Acquired::Clean,
    }
}

/// Takes the lock: {1, previous owner record or nil} or {0, pttl}.
static LOCK_ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local prev = redis.call('SET', KEYS[2], ARGV[1], 'GET')
  if prev then return {1, prev} end
  return {1}
end
local ttl = redis.call('PTTL', KEYS[1])
-- A key without a lease is none of ours (written by another program):
-- it gets one, and ends as a holder that stopped renewing would.
if ttl == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {0, ttl}
",
    )
});

/// Releases the lock (any process may): 0 if it was not held.
static LOCK_RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('RPUSH', KEYS[3], 1)
return 1
",
    )
});

/// Releases the lock only if this process still holds it (KEYS[1] holds
/// ARGV[1]): 0 if its lease ended and the lock passed on meanwhile.
static LOCK_RELEASE_OWN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('RPUSH', KEYS[3], 1)
return 1
",
    )
});

/// The Redis flavour of a [`Lock`](crate::Lock).
#[derive(Clone, Debug)]
pub(crate) struct RedisLock {
    obj: RedisObject,
}

impl RedisLock {
    /// The type name recorded for a lock.
    pub(crate) const TYPE: &'static str = "Lock";

    pub(crate) fn new(obj: RedisObject) -> RedisLock {
        RedisLock { obj }
    }

    pub(crate) fn object(&self) -> &RedisObject {
        &self.obj
    }

    /// Takes the lock by `deadline` (`WouldBlock` for a try, `Timeout` after a wait).
    pub(crate) fn acquire_deadline(&self, deadline: Deadline) -> Result<Acquired> {
        let target = self.obj.target();
        let (key, owner, wake) = (
            self.obj.key(),
            self.obj.sub("#owner"),
            self.obj.sub("#wake"),
        );
        let token = lease::process_token();
        let lease_ms = u64::try_from(target.lease().as_millis()).unwrap_or(u64::MAX);
        loop {
            let reply: Vec<redis::Value> = target.with_conn(|c| {
                LOCK_ACQUIRE
                    .key(&key)
                    .key(&owner)
                    .arg(&token)
                    .arg(lease_ms)
                    .invoke(c)
            })?;
            let mut reply = reply.into_iter();
            let taken = matches!(reply.next(), Some(redis::Value::Int(1)));
            let other = reply.next().unwrap_or(redis::Value::Nil);
            if taken {
                lease::hold_fresh(target, key.clone(), token.clone());
                return Ok(taken_from(other, "lock"));
            }
            if deadline.expired() {
                return Err(expired(deadline));
            }
            // Wake at a release, or when the holder's lease would end.
            let ttl = match other {
                redis::Value::Int(ms) if ms > 0 => Duration::from_millis(ms as u64 + 5),
                _ => Duration::from_millis(5),
            };
            target.wait_token(&wake, deadline, ttl.min(target.lease()))?;
        }
    }

    /// Releases the lock; releasing an unlocked lock is `Err(InvalidState)`.
    pub(crate) fn release(&self) -> Result<()> {
        let key = self.obj.key();
        // Stop renewing before the release: another thread of this process
        // that takes the lock right after holds its lease under this key.
        lease::release(self.obj.target(), &key);
        let released: Result<i64> = self.obj.run(|c| {
            LOCK_RELEASE
                .key(&key)
                .key(self.obj.sub("#owner"))
                .key(self.obj.sub("#wake"))
                .invoke(c)
        });
        let released = self.rehold_on_error(key, released)?;
        if released == 1 {
            Ok(())
        } else {
            Err(Error::InvalidState("release of an unlocked lock".into()))
        }
    }

    /// A guard's release: only if this process still holds the lock. A
    /// holder cut off from Redis for longer than its lease lost the lock,
    /// which may have passed to another process since; its guard must not
    /// release that one's. Whether it was still held.
    pub(crate) fn release_own(&self) -> Result<bool> {
        let key = self.obj.key();
        lease::release(self.obj.target(), &key);
        let released: Result<i64> = self.obj.run(|c| {
            LOCK_RELEASE_OWN
                .key(&key)
                .key(self.obj.sub("#owner"))
                .key(self.obj.sub("#wake"))
                .arg(lease::process_token())
                .invoke(c)
        });
        Ok(self.rehold_on_error(key, released)? == 1)
    }

    /// After a release that failed (Redis unreachable): keeps renewing the
    /// lease in case this process still holds the lock (the renewer
    /// forgets a key that does not hold our token).
    fn rehold_on_error(&self, key: String, released: Result<i64>) -> Result<i64> {
        if released.is_err() {
            lease::hold(self.obj.target(), key, lease::process_token());
        }
        released
    }

    /// Whether some process holds the lock now.
    pub(crate) fn is_locked(&self) -> Result<bool> {
        let key = self.obj.key();
        self.obj
            .run(|c| redis::cmd("EXISTS").arg(&key).query::<i64>(c))
            .map(|n| n > 0)
    }

    /// The pid of the holder (on its own host), if held.
    pub(crate) fn owner_pid(&self) -> Result<Option<i32>> {
        let key = self.obj.key();
        let token: Option<Vec<u8>> = self.obj.run(|c| redis::cmd("GET").arg(&key).query(c))?;
        Ok(token.map(|t| lease::token_pid(&t)))
    }
}

/// Creates the semaphore's value and bound unless they exist.
static SEM_INIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'NX') end
",
    )
});

static SEM_ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v > 0 then redis.call('DECR', KEYS[1]) return 1 end
return 0
",
    )
});

/// Gives a unit back: -1 if that would pass the bound.
static SEM_RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local m = redis.call('GET', KEYS[2])
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if m and v >= tonumber(m) then return -1 end
redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[3], 1)
redis.call('LTRIM', KEYS[3], -64, -1)
return 1
",
    )
});

/// The Redis flavour of a [`Semaphore`](crate::Semaphore) or a
/// [`BoundedSemaphore`](crate::BoundedSemaphore). Like the local ones it
/// has no owner: a process that dies holding a unit does not give it back.
#[derive(Clone, Debug)]
pub(crate) struct RedisSemaphore {
    obj: RedisObject,
}

impl RedisSemaphore {
    /// Opens `obj` as a semaphore starting at `value` (capped there if
    /// `bounded`) unless it exists, in which case it keeps its state.
    pub(crate) fn open(obj: RedisObject, value: u32, bounded: bool) -> Result<RedisSemaphore> {
        let (key, max) = (obj.key(), obj.sub("#max"));
        let bound = if bounded {
            value.to_string()
        } else {
            String::new()
        };
        obj.run(|c| {
            SEM_INIT
                .key(&key)
                .key(&max)
                .arg(value)
                .arg(&bound)
                .invoke::<()>(c)
        })?;
        Ok(RedisSemaphore { obj })
    }

    pub(crate) fn new(obj: RedisObject) -> RedisSemaphore {
        RedisSemaphore { obj }
    }

    pub(crate) fn object(&self) -> &RedisObject {
        &self.obj
    }

    /// Takes a unit by `deadline` (`WouldBlock` for a try, `Timeout` after a wait).
    pub(crate) fn acquire_deadline(&self, deadline: Deadline) -> Result<()> {
        let target = self.obj.target();
        let (key, wake) = (self.obj.key(), self.obj.sub("#wake"));
        loop {
            let taken: i64 = target.with_conn(|c| SEM_ACQUIRE.key(&key).invoke(c))?;
            if taken == 1 {
                return Ok(());
            }
            if deadline.expired() {
                return Err(expired(deadline));
            }
            target.wait_token(&wake, deadline, RECHECK)?;
        }
    }

    /// Gives a unit back; past a bounded semaphore's bound, `Err(InvalidState)`.
    pub(crate) fn release(&self) -> Result<()> {
        let released: i64 = self.obj.run(|c| {
            SEM_RELEASE
                .key(self.obj.key())
                .key(self.obj.sub("#max"))
                .key(self.obj.sub("#wake"))
                .invoke(c)
        })?;
        if released == 1 {
            Ok(())
        } else {
            Err(Error::InvalidState(
                "a bounded semaphore released more times than acquired".into(),
            ))
        }
    }

    /// The number of free units now.
    pub(crate) fn get_value(&self) -> Result<u32> {
        let key = self.obj.key();
        let v: Option<u32> = self.obj.run(|c| redis::cmd("GET").arg(&key).query(c))?;
        Ok(v.unwrap_or(0))
    }

    /// A bounded semaphore's bound.
    pub(crate) fn max_value(&self) -> Result<Option<u32>> {
        let key = self.obj.sub("#max");
        self.obj.run(|c| redis::cmd("GET").arg(&key).query(c))
    }
}

/// Raises the flag and leaves one wake-up token (each waiter that wakes
/// leaves one for the next).
static EVENT_SET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('SET', KEYS[1], 1)
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], 1)
",
    )
});

/// Whether the flag is up; if so, passes the wake-up on.
static EVENT_CHECK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('RPUSH', KEYS[2], 1)
  return 1
end
return 0
",
    )
});

/// The Redis flavour of an [`Event`](crate::Event).
#[derive(Clone, Debug)]
pub(crate) struct RedisEvent {
    obj: RedisObject,
}

impl RedisEvent {
    pub(crate) fn new(obj: RedisObject) -> RedisEvent {
        RedisEvent { obj }
    }

    pub(crate) fn object(&self) -> &RedisObject {
        &self.obj
    }

    /// Raises the flag, waking every waiter.
    pub(crate) fn set(&self) -> Result<()> {
        self.obj.run(|c| {
            EVENT_SET
                .key(self.obj.key())
                .key(self.obj.sub("#wake"))
                .invoke::<()>(c)
        })
    }

    /// Lowers the flag.
    pub(crate) fn clear(&self) -> Result<()> {
        let key = self.obj.key();
        self.obj.run(|c| redis::cmd("DEL").arg(&key).exec(c))
    }

    /// Whether the flag is raised.
    pub(crate) fn is_set(&self) -> Result<bool> {
        let key = self.obj.key();
        self.obj
            .run(|c| redis::cmd("EXISTS").arg(&key).query::<i64>(c))
            .map(|n| n > 0)
    }

    /// Waits for the flag until `deadline`; whether it was raised.
    pub(crate) fn wait_deadline(&self, deadline: Deadline) -> Result<bool> {
        let target = self.obj.target();
        let (key, wake) = (self.obj.key(), self.obj.sub("#wake"));
        loop {
            let up: i64 = target.with_conn(|c| EVENT_CHECK.key(&key).key(&wake).invoke(c))?;
            if up == 1 {
                return Ok(true);
            }
            if deadline.expired() {
                return Ok(false);
            }
            target.wait_token(&wake, deadline, RECHECK)?;
        }
    }
}

/// Creates the barrier's state unless it exists.
static BARRIER_INIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HSETNX', KEYS[1], 'parties', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'count', 0, 'gen', 0, 'broken', 0)
end
",
    )
});

/// Arrives: {0, index} completes the round, {1, index, gen} waits,
/// {-1} broken, {-3} a try that would wait. A waiter records a heartbeat
/// (ARGV[2] ms from now) in the sorted set KEYS[3].
static BARRIER_ARRIVE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local h = KEYS[1]
local parties = tonumber(redis.call('HGET', h, 'parties'))
if not parties then return {-1} end
if redis.call('HGET', h, 'broken') == '1' then return {-1} end
local count = tonumber(redis.call('HGET', h, 'count'))
local gen = tonumber(redis.call('HGET', h, 'gen'))
if count + 1 >= parties then
  redis.call('HSET', h, 'count', 0, 'gen', gen + 1, 'r' .. gen, 'ok')
  redis.call('HDEL', h, 'r' .. (gen - 64))
  redis.call('DEL', KEYS[3])
  for i = 1, count do redis.call('RPUSH', KEYS[2], gen) end
  return {0, count}
end
if ARGV[1] == '1' then return {-3} end
redis.call('HSET', h, 'count', count + 1)
local t = redis.call('TIME')
redis.call('ZADD', KEYS[3], t[1] * 1000 + math.floor(t[2] / 1000) + ARGV[2], gen .. ':' .. count)
return {1, count, gen}
",
    )
});

/// Breaks the current round: records it broken and wakes its waiters
/// (all but ARGV[1] of them: a waiter that breaks it does not wake itself).
/// ARGV[2] == '1' also leaves the barrier broken for later arrivals;
/// ARGV[3] == '1' (reset) starts a new, unbroken round.
static BARRIER_BREAK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local h = KEYS[1]
local gen = redis.call('HGET', h, 'gen')
if not gen then return 0 end
local count = tonumber(redis.call('HGET', h, 'count'))
if count > 0 and not redis.call('HGET', h, 'r' .. gen) then
  redis.call('HSET', h, 'r' .. gen, 'broken')
  for i = 1 + tonumber(ARGV[1]), count do redis.call('RPUSH', KEYS[2], gen) end
end
redis.call('DEL', KEYS[3])
if ARGV[3] == '1' then
  redis.call('HSET', h, 'count', 0, 'gen', tonumber(gen) + 1, 'broken', 0)
elseif ARGV[2] == '1' then
  redis.call('HSET', h, 'count', 0, 'broken', 1)
end
return 1
",
    )
});

/// How round ARGV[1] ended ('ok', 'broken') or '' while it goes on.
/// Renews this waiter's heartbeat (party ARGV[3], ARGV[4] ms from now).
/// A round still going on is broken first if the caller's deadline
/// passed (ARGV[2] == '1'), as a local barrier's timeout breaks it, or if
/// another waiter's heartbeat ended (its process died).
static BARRIER_CHECK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local h = KEYS[1]
local r = redis.call('HGET', h, 'r' .. ARGV[1])
if r then return r end
if redis.call('HGET', h, 'gen') ~= ARGV[1] then return 'broken' end
if redis.call('HGET', h, 'broken') == '1' then return 'broken' end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[3], now + ARGV[4], ARGV[1] .. ':' .. ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
if ARGV[2] == '1' or #dead > 0 then
  local count = tonumber(redis.call('HGET', h, 'count'))
  redis.call('HSET', h, 'r' .. ARGV[1], 'broken', 'count', 0, 'broken', 1)
  redis.call('DEL', KEYS[3])
  for i = 2, count do redis.call('RPUSH', KEYS[2], ARGV[1]) end
  return 'broken'
end
return ''
",
    )
});

/// How long a barrier waiter's heartbeat lasts: it renews it at least
/// every [`RECHECK`], so a waiter whose heartbeat ended has died (or lost
/// Redis for that long). At least three rechecks, so that a live but
/// slow waiter is not taken for dead.
fn heartbeat(lease: Duration) -> u64 {
    u64::try_from(lease.max(RECHECK * 3).as_millis()).unwrap_or(u64::MAX)
}

/// The Redis flavour of a [`Barrier`](crate::Barrier).
///
/// Each waiter keeps a heartbeat in `p:barrier#beats:name`; a party whose
/// process dies while waiting breaks the barrier for the others once its
/// heartbeat ends (see [`heartbeat`]).
#[derive(Clone, Debug)]
pub(crate) struct RedisBarrier {
    obj: RedisObject,
}

impl RedisBarrier {
    /// Opens `obj` as a barrier of `parties` unless it exists.
    pub(crate) fn open(obj: RedisObject, parties: usize) -> Result<RedisBarrier> {
        if parties == 0 {
            return Err(Error::InvalidArgument(
                "a barrier needs at least one party".into(),
            ));
        }
        let key = obj.key();
        obj.run(|c| BARRIER_INIT.key(&key).arg(parties).invoke::<()>(c))?;
        Ok(RedisBarrier { obj })
    }

    pub(crate) fn new(obj: RedisObject) -> RedisBarrier {
        RedisBarrier { obj }
    }

    pub(crate) fn object(&self) -> &RedisObject {
        &self.obj
    }

    /// Waits until all parties have arrived; this party's arrival index.
    pub(crate) fn wait(&self) -> Result<usize> {
        self.wait_deadline(Deadline::Never, false)
    }

    /// As [`RedisBarrier::wait`], breaking the barrier if the round is
    /// not complete within `timeout`, as a local barrier does.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_deadline(Deadline::after(timeout), false)
    }

    /// Arrives only if this completes the round; otherwise `Err(WouldBlock)`.
    pub(crate) fn try_wait(&self) -> Result<usize> {
        self.wait_deadline(Deadline::Now, true)
    }

    /// Waits for the round; `only_if_last`: arrive only if that completes it.
    fn wait_deadline(&self, deadline: Deadline, only_if_last: bool) -> Result<usize> {
        let target = self.obj.target();
        let (key, wake) = (self.obj.key(), self.obj.sub("#wake"));
        let beats = self.obj.sub("#beats");
        let beat_ms = heartbeat(target.lease());
        let arrived: Vec<i64> = target.with_conn(|c| {
            BARRIER_ARRIVE
                .key(&key)
                .key(&wake)
                .key(&beats)
                .arg(if only_if_last { "1" } else { "0" })
                .arg(beat_ms)
                .invoke(c)
        })?;
        let (index, generation) = match arrived.as_slice() {
            [0, index] => return Ok(*index as usize),
            [1, index, generation] => (*index as usize, *generation),
            [-3] => return Err(Error::WouldBlock),
            _ => return Err(Error::BrokenBarrier),
        };
        loop {
            let give_up = deadline.expired();
            let outcome: String = target.with_conn(|c| {
                BARRIER_CHECK
                    .key(&key)
                    .key(&wake)
                    .key(&beats)
                    .arg(generation)
                    .arg(if give_up { "1" } else { "0" })
                    .arg(index)
                    .arg(beat_ms)
                    .invoke(c)
            })?;
            match outcome.as_str() {
                "ok" => return Ok(index),
                "" => {}
                _ => return Err(Error::BrokenBarrier),
            }
            target.wait_token(&wake, deadline, RECHECK)?;
        }
    }

    fn break_round(&self, leave_broken: bool, reset: bool) -> Result<()> {
        self.obj.run(|c| {
            BARRIER_BREAK
                .key(self.obj.key())
                .key(self.obj.sub("#wake"))
                .key(self.obj.sub("#beats"))
                .arg(0)
                .arg(if leave_broken { "1" } else { "0" })
                .arg(if reset { "1" } else { "0" })
                .invoke::<()>(c)
        })
    }

    /// Breaks the barrier: waiting and future parties get `BrokenBarrier`.
    pub(crate) fn abort(&self) -> Result<()> {
        self.break_round(true, false)
    }

    /// Returns the barrier to its empty, unbroken state; parties waiting
    /// now get `BrokenBarrier`.
    pub(crate) fn reset(&self) -> Result<()> {
        self.break_round(false, true)
    }

    fn field(&self, name: &str) -> Result<Option<usize>> {
        let key = self.obj.key();
        self.obj
            .run(|c| redis::cmd("HGET").arg(&key).arg(name).query(c))
    }

    /// The number of parties a round needs.
    pub(crate) fn parties(&self) -> Result<usize> {
        self.field("parties").map(Option::unwrap_or_default)
    }

    /// The number of parties waiting now.
    pub(crate) fn n_waiting(&self) -> Result<usize> {
        self.field("count").map(Option::unwrap_or_default)
    }

    /// Whether the barrier is broken.
    pub(crate) fn broken(&self) -> Result<bool> {
        self.field("broken").map(|b| b == Some(1))
    }
}
