//! The Redis flavour of an [`RLock`](crate::RLock): a lock owned by one
//! thread of one process, which that thread may enter again.
//!
//! Built as the Redis [`Lock`](crate::Lock) is (`sync.rs`): the key
//! `p:rlock:name` holds its owner (this process's lease token and the
//! thread's id, `token/tid`) with a lease the owner's process renews, and
//! `p:rlock#owner:name` records the owner until a clean release, so the
//! next owner of a lock whose holder's lease ended is told
//! ([`Acquired::OwnerDied`]). Beside them `p:rlock#count:name` holds the
//! recursion depth and `p:rlock#wake:name` is the list a release pushes to,
//! on which waiters block (`BLPOP`) until the holder's lease would end.
//!
//! A [`Condition`](crate::Condition) made without a lock has its own
//! RLock, whose keys sit under the condition's (`p:condition#lock:name`,
//! `p:condition#lock#owner:name`…); a handle to it names the condition.

use std::sync::LazyLock;
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::redis::sync::{expired, taken_from};
use crate::redis::{RedisObject, lease};
use crate::sync::Acquired;

/// Takes the lock `ARGV[3]` deep for ARGV[1], or enters it once more if
/// ARGV[1] holds it: {1, previous owner record or nil} taken, {2} entered
/// again, {0, pttl} held by another.
static RLOCK_ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('INCRBY', KEYS[3], ARGV[3])
  return {2}
end
if cur then
  local ttl = redis.call('PTTL', KEYS[1])
  -- A key without a lease is none of ours: it gets one (see the Lock's).
  if ttl == -1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    ttl = tonumber(ARGV[2])
  end
  return {0, ttl}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
local prev = redis.call('SET', KEYS[2], ARGV[1], 'GET')
if prev then return {1, prev} end
return {1}
",
    )
});

/// Leaves one level if ARGV[1] holds the lock: the depth left (0: the lock
/// is free now), or -1 if ARGV[1] does not hold it.
static RLOCK_RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local n = redis.call('DECR', KEYS[3])
if n > 0 then return n end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('RPUSH', KEYS[4], 1)
return 0
",
    )
});

/// The calling thread of this process, as an RLock records its owner:
/// the process's lease token (its pid first, so `lease::token_pid` reads
/// it) and the thread's id.
pub(crate) fn this_thread() -> String {
    format!(
        "{}/{}",
        lease::process_token(),
        crate::sys::process::gettid()
    )
}

/// The Redis flavour of an [`RLock`](crate::RLock).
#[derive(Clone, Debug)]
pub(crate) struct RedisRLock {
    obj: RedisObject,
    /// Whether this is the own lock of the condition `obj` (keys under
    /// `#lock`) rather than the rlock `obj`.
    of_condition: bool,
}

impl RedisRLock {
    /// The type name recorded for an rlock.
    pub(crate) const TYPE: &'static str = "RLock";

    /// The rlock `obj` (of kind `rlock`).
    pub(crate) fn new(obj: RedisObject) -> RedisRLock {
        RedisRLock {
            obj,
            of_condition: false,
        }
    }

    /// The own lock of the condition `obj` (of kind `condition`).
    pub(crate) fn of_condition(obj: RedisObject) -> RedisRLock {
        RedisRLock {
            obj,
            of_condition: true,
        }
    }

    /// The rlock a decoded handle names: an `RLock`, or a condition's own.
    pub(crate) fn from_repr(repr: &crate::handle::RedisRepr) -> Result<RedisRLock> {
        if repr.type_name == super::condition::OWN_LOCK_TYPE {
            RedisObject::from_repr(repr, "condition", repr.type_name.clone())
                .map(RedisRLock::of_condition)
        } else {
            RedisObject::from_repr(repr, "rlock", RedisRLock::TYPE.into()).map(RedisRLock::new)
        }
    }

    pub(crate) fn object(&self) -> &RedisObject {
        &self.obj
    }

    /// Whether this is a condition's own lock.
    pub(crate) fn is_condition_lock(&self) -> bool {
        self.of_condition
    }

    /// The key holding the owner.
    pub(crate) fn key(&self) -> String {
        if self.of_condition {
            self.obj.sub("#lock")
        } else {
            self.obj.key()
        }
    }

    /// A sub-key beside [`RedisRLock::key`]: `#owner`, `#count`, `#wake`.
    pub(crate) fn part(&self, what: &str) -> String {
        if self.of_condition {
            self.obj.sub(&format!("#lock{what}"))
        } else {
            self.obj.sub(what)
        }
    }

    /// Takes the lock by `deadline` (`WouldBlock` for a try, `Timeout`
    /// after a wait), `depth` levels deep, or enters it once more if this
    /// thread holds it.
    fn take(&self, deadline: Deadline, depth: u64) -> Result<Acquired> {
        let target = self.obj.target();
        let (key, owner, count, wake) = (
            self.key(),
            self.part("#owner"),
            self.part("#count"),
            self.part("#wake"),
        );
        let me = this_thread();
        let lease_ms = u64::try_from(target.lease().as_millis()).unwrap_or(u64::MAX);
        loop {
            let reply: Vec<redis::Value> = target.with_conn(|c| {
                RLOCK_ACQUIRE
                    .key(&key)
                    .key(&owner)
                    .key(&count)
                    .arg(&me)
                    .arg(lease_ms)
                    .arg(depth.max(1))
                    .invoke(c)
            })?;
            let mut reply = reply.into_iter();
            let outcome = match reply.next() {
                Some(redis::Value::Int(n)) => n,
                _ => 0,
            };
            let other = reply.next().unwrap_or(redis::Value::Nil);
            match outcome {
                2 => return Ok(Acquired::Clean),
                1 => {
                    lease::hold_fresh(target, key.clone(), me.clone());
                    return Ok(taken_from(other, "rlock"));
                }
                _ => {}
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

    /// Takes the lock by `deadline`, or enters it again.
    pub(crate) fn acquire_deadline(&self, deadline: Deadline) -> Result<Acquired> {
        self.take(deadline, 1)
    }

    /// Takes the lock `depth` deep, as a condition wait that released it
    /// held it; waits as long as it takes.
    pub(crate) fn acquire_restore(&self, depth: u64) -> Result<Acquired> {
        self.take(Deadline::Never, depth)
    }

    /// Leaves one level; `Err(InvalidState)` if this thread does not hold it.
    pub(crate) fn release(&self) -> Result<()> {
        let key = self.key();
        let me = this_thread();
        let left: i64 = self.obj.run(|c| {
            RLOCK_RELEASE
                .key(&key)
                .key(self.part("#owner"))
                .key(self.part("#count"))
                .key(self.part("#wake"))
                .arg(&me)
                .invoke(c)
        })?;
        match left {
            0 => {
                lease::release_if(self.obj.target(), &key, &me);
                Ok(())
            }
            n if n > 0 => Ok(()),
            _ => Err(Error::InvalidState(
                "release of an rlock this thread does not hold".into(),
            )),
        }
    }

    /// How deep this thread holds the lock (0: not at all).
    pub(crate) fn recursion_count(&self) -> Result<u32> {
        let (key, count) = (self.key(), self.part("#count"));
        let (owner, depth): (Option<String>, Option<u32>) = self
            .obj
            .run(|c| redis::cmd("MGET").arg(&key).arg(&count).query(c))?;
        Ok(if owner.as_deref() == Some(this_thread().as_str()) {
            depth.unwrap_or(1)
        } else {
            0
        })
    }

    /// Whether some thread of some process holds the lock now.
    pub(crate) fn is_locked(&self) -> Result<bool> {
        let key = self.key();
        self.obj
            .run(|c| redis::cmd("EXISTS").arg(&key).query::<i64>(c))
            .map(|n| n > 0)
    }

    /// The pid of the holder (on its own host), if held.
    pub(crate) fn owner_pid(&self) -> Result<Option<i32>> {
        let key = self.key();
        let owner: Option<Vec<u8>> = self.obj.run(|c| redis::cmd("GET").arg(&key).query(c))?;
        Ok(owner.map(|t| lease::token_pid(&t)))
    }
}
