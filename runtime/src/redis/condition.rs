//! The Redis flavour of a [`Condition`](crate::Condition), over a Redis
//! [`Lock`](crate::Lock) or [`RLock`](crate::RLock) of the same server and
//! prefix (by default an RLock of its own, see `rlock.rs`).
//!
//! A waiter takes a ticket: in one script (so that no notify can fall in
//! between) it checks that it holds the lock, releases it completely,
//! appends its ticket to the list `p:condition#waiters:name` and sets
//! `p:condition#t.<ticket>:name`, a key with a lease its process renews
//! while it waits (see `lease.rs`). It then blocks (`BLPOP`) on its own
//! list `p:condition#w.<ticket>:name` with its deadline, looking again at
//! least every [`RECHECK`].
//!
//! `notify(n)` (lock held) moves the first `n` tickets whose lease is
//! alive to the sorted set `p:condition#granted:name` (scored with the
//! last ticket given out) and pushes to each one's list; tickets of dead
//! waiters are dropped on the way. A waiter takes its grant at its next
//! look, in a script that also:
//!
//! - passes on the grant of a waiter that died before taking it (its
//!   lease ended) to the first live waiter that was already waiting when
//!   the notify came (never to a later one);
//! - wakes every waiter if the lock's holder died (the lock's key ended
//!   with its lease while its owner record stayed): no notify would ever
//!   come, and the first to take the lock back is told
//!   ([`Acquired::OwnerDied`]);
//! - withdraws the ticket of a waiter whose time is up; one granted
//!   meanwhile counts as woken (as in Python), so that notify is not lost.
//!
//! Whatever ended the wait, the waiter takes the lock back (as deep as it
//! held it) before it returns.

use std::sync::LazyLock;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::RedisRepr;
use crate::redis::rlock::{RedisRLock, this_thread};
use crate::redis::{RECHECK, RedisLock, RedisObject, RedisTarget, lease};
use crate::sync::{Acquired, ConditionLock};

/// The type recorded for a condition over its own RLock (and the type a
/// handle to that RLock carries).
pub(crate) const OWN_LOCK_TYPE: &str = "Condition";
/// The type of a condition over the Redis lock named after it.
const OVER_LOCK: &str = "Condition over Lock:";
/// The type of a condition over the Redis rlock named after it.
const OVER_RLOCK: &str = "Condition over RLock:";
/// The type of a condition over the own RLock of the condition named after it.
const OVER_CONDITION_RLOCK: &str = "Condition over the RLock of Condition:";

/// Registers a waiter holding the lock and releases the lock: {ticket,
/// depth it was held}, or {-1} if the caller does not hold it.
///
/// KEYS: the condition's hash, its waiters, the lock's key, owner record,
/// depth (an rlock's), wake-up list. ARGV: 'r' for an rlock, the caller as
/// the lock records it, ticket key prefix and suffix, the lease in ms, this
/// process's token.
static PREPARE_WAIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[3]) ~= ARGV[2] then return {-1} end
local depth = 1
if ARGV[1] == 'r' then
  depth = tonumber(redis.call('GET', KEYS[5]) or '1') or 1
  redis.call('DEL', KEYS[5])
end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[6])
redis.call('RPUSH', KEYS[6], 1)
local id = redis.call('HINCRBY', KEYS[1], 'next', 1)
redis.call('RPUSH', KEYS[2], id)
redis.call('SET', ARGV[3] .. id .. ARGV[4], ARGV[6], 'PX', ARGV[5])
return {id, depth}
",
    )
});

/// Grants up to ARGV[2] waiters (those whose ticket's lease lives) a
/// wake-up: how many, or -1 if the caller (ARGV[1]) does not hold the lock.
/// A grant records the last ticket given out (its score), so that one
/// passed on reaches only a waiter that was waiting at the notify.
///
/// KEYS: waiters, granted, the lock's key, the condition's hash.
/// ARGV[3..5]: ticket key prefix, wake-up list prefix, suffix.
static NOTIFY: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
local n = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[4], 'next') or '0')
local woken = 0
while woken < n do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  if redis.call('EXISTS', ARGV[3] .. id .. ARGV[5]) == 1 then
    redis.call('ZADD', KEYS[2], last, id)
    redis.call('RPUSH', ARGV[4] .. id .. ARGV[5], 1)
    woken = woken + 1
  else
    redis.call('DEL', ARGV[4] .. id .. ARGV[5])
  end
end
return woken
",
    )
});

/// A waiter's look (see the module docs): 'notified', 'died' (the lock's
/// holder died), 'timeout' (ARGV[2] == '1': the time is up and the ticket
/// is withdrawn), 'lost' (the ticket is gone: its lease ended while the
/// waiter lived, or the object was deleted) or 'waiting'.
///
/// KEYS: waiters, granted, the lock's key, its owner record, the
/// condition's hash. ARGV: the ticket, give up, ticket key prefix, wake-up
/// list prefix, suffix.
static CHECK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local function drop(id)
  redis.call('DEL', ARGV[3] .. id .. ARGV[5], ARGV[4] .. id .. ARGV[5])
end
-- Grants the first live waiter whose ticket is at most `last` (tickets
-- wait in the order they were given out).
local function grant_next(last)
  while true do
    local id = redis.call('LINDEX', KEYS[1], 0)
    if not id or tonumber(id) > last then return false end
    redis.call('LPOP', KEYS[1])
    if redis.call('EXISTS', ARGV[3] .. id .. ARGV[5]) == 1 then
      redis.call('ZADD', KEYS[2], last, id)
      redis.call('RPUSH', ARGV[4] .. id .. ARGV[5], 1)
      return true
    end
    drop(id)
  end
end
local me = ARGV[1]
local granted = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #granted, 2 do
  local g = granted[i]
  if g ~= me and redis.call('EXISTS', ARGV[3] .. g .. ARGV[5]) == 0 then
    redis.call('ZREM', KEYS[2], g)
    drop(g)
    grant_next(tonumber(granted[i + 1]))
  end
end
if redis.call('ZREM', KEYS[2], me) == 1 then
  drop(me)
  return 'notified'
end
if redis.call('EXISTS', ARGV[3] .. me .. ARGV[5]) == 0 then
  redis.call('LREM', KEYS[1], 1, me)
  drop(me)
  return 'lost'
end
if redis.call('EXISTS', KEYS[3]) == 0 and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('LREM', KEYS[1], 1, me)
  drop(me)
  local last = tonumber(redis.call('HGET', KEYS[5], 'next') or '0')
  while grant_next(last) do end
  return 'died'
end
if ARGV[2] == '1' then
  redis.call('LREM', KEYS[1], 1, me)
  drop(me)
  return 'timeout'
end
return 'waiting'
",
    )
});

/// The Redis flavour of a [`Condition`](crate::Condition).
#[derive(Clone, Debug)]
pub(crate) struct RedisCondition {
    obj: RedisObject,
    lock: ConditionLock,
}

/// The lock under a condition, as its scripts see it.
enum RedisCondLock<'a> {
    Lock(&'a RedisLock),
    RLock(&'a RedisRLock),
}

impl RedisCondLock<'_> {
    /// Whether it is an rlock ('r') or a lock ('l'), for the scripts.
    fn mode(&self) -> &'static str {
        match self {
            RedisCondLock::Lock(_) => "l",
            RedisCondLock::RLock(_) => "r",
        }
    }

    /// The caller, as the lock records its holder: this process for a
    /// lock (any of its threads may release it), this thread for an rlock.
    fn caller(&self) -> String {
        match self {
            RedisCondLock::Lock(_) => lease::process_token(),
            RedisCondLock::RLock(_) => this_thread(),
        }
    }

    /// The key, owner record, depth (a lock's: its owner record again,
    /// untouched) and wake-up list.
    fn keys(&self) -> [String; 4] {
        match self {
            RedisCondLock::Lock(l) => {
                let o = l.object();
                [o.key(), o.sub("#owner"), o.sub("#owner"), o.sub("#wake")]
            }
            RedisCondLock::RLock(l) => {
                [l.key(), l.part("#owner"), l.part("#count"), l.part("#wake")]
            }
        }
    }

    fn target(&self) -> &RedisTarget {
        match self {
            RedisCondLock::Lock(l) => l.object().target(),
            RedisCondLock::RLock(l) => l.object().target(),
        }
    }
}

/// The Redis lock under `lock`, if it is one.
fn redis_lock(lock: &ConditionLock) -> Option<RedisCondLock<'_>> {
    match lock {
        ConditionLock::Lock(l) => l.redis().map(RedisCondLock::Lock),
        ConditionLock::RLock(l) => l.redis().map(RedisCondLock::RLock),
    }
}

/// Whether two targets name the same server, database and prefix.
fn same_place(a: &RedisTarget, b: &RedisTarget) -> bool {
    a.shown_url() == b.shown_url() && a.prefix() == b.prefix()
}

/// The condition `name` over an RLock of its own.
pub fn condition(target: &RedisTarget, name: &str) -> Result<crate::Condition> {
    let obj = RedisObject::open(target, "condition", name, OWN_LOCK_TYPE.into())?;
    let lock = crate::RLock::from_redis(RedisRLock::of_condition(obj.clone()));
    Ok(crate::Condition::from_redis(RedisCondition {
        obj,
        lock: ConditionLock::RLock(lock),
    }))
}

/// The condition `name` over `lock`, a Redis [`Lock`](crate::Lock) or
/// [`RLock`](crate::RLock) of the same server and prefix
/// ([`Error::InvalidArgument`] for any other). A condition keeps the lock
/// it was made with: asking for it over another is
/// [`Error::TypeMismatch`].
pub fn condition_with(
    target: &RedisTarget,
    name: &str,
    lock: ConditionLock,
) -> Result<crate::Condition> {
    let type_name = match redis_lock(&lock) {
        Some(l) if same_place(l.target(), target) => match l {
            RedisCondLock::Lock(l) => format!("{OVER_LOCK}{}", l.object().name()),
            RedisCondLock::RLock(l) if l.is_condition_lock() => {
                format!("{OVER_CONDITION_RLOCK}{}", l.object().name())
            }
            RedisCondLock::RLock(l) => format!("{OVER_RLOCK}{}", l.object().name()),
        },
        _ => {
            return Err(Error::InvalidArgument(
                "a Redis condition needs a lock kept in the same Redis server and prefix".into(),
            ));
        }
    };
    let obj = RedisObject::open(target, "condition", name, type_name)?;
    Ok(crate::Condition::from_redis(RedisCondition { obj, lock }))
}

impl RedisCondition {
    pub(crate) fn object(&self) -> &RedisObject {
        &self.obj
    }

    /// The condition's lock.
    pub(crate) fn lock(&self) -> &ConditionLock {
        &self.lock
    }

    /// The condition a decoded handle names, with the lock its type names.
    pub(crate) fn from_repr(repr: &RedisRepr) -> Result<RedisCondition> {
        let t = repr.type_name.as_str();
        if [OVER_LOCK, OVER_RLOCK, OVER_CONDITION_RLOCK].contains(&t) {
            return Err(Error::InvalidArgument(format!(
                "a Redis condition's type names no lock: {t:?}"
            )));
        }
        let named = |name: &str, type_name: &str| RedisRepr {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
            ..repr.clone()
        };
        let obj = |type_name: String| RedisObject::from_repr(repr, "condition", type_name);
        let lock = if t == OWN_LOCK_TYPE {
            let obj = obj(t.to_owned())?;
            let lock = crate::RLock::from_redis(RedisRLock::of_condition(obj.clone()));
            return Ok(RedisCondition {
                obj,
                lock: ConditionLock::RLock(lock),
            });
        } else if let Some(name) = t.strip_prefix(OVER_LOCK) {
            let o = RedisObject::from_repr(
                &named(name, RedisLock::TYPE),
                "lock",
                RedisLock::TYPE.into(),
            )?;
            ConditionLock::Lock(crate::Lock::from_redis(RedisLock::new(o)))
        } else if let Some(name) = t.strip_prefix(OVER_RLOCK) {
            let o = RedisObject::from_repr(
                &named(name, RedisRLock::TYPE),
                "rlock",
                RedisRLock::TYPE.into(),
            )?;
            ConditionLock::RLock(crate::RLock::from_redis(RedisRLock::new(o)))
        } else if let Some(name) = t.strip_prefix(OVER_CONDITION_RLOCK) {
            let o = RedisObject::from_repr(
                &named(name, OWN_LOCK_TYPE),
                "condition",
                OWN_LOCK_TYPE.into(),
            )?;
            ConditionLock::RLock(crate::RLock::from_redis(RedisRLock::of_condition(o)))
        } else {
            return Err(Error::TypeMismatch {
                expected: OWN_LOCK_TYPE.into(),
                found: repr.type_name.clone(),
            });
        };
        Ok(RedisCondition {
            obj: obj(t.to_owned())?,
            lock,
        })
    }

    /// The lock under the condition, as the scripts see it.
    fn held_lock(&self) -> Result<RedisCondLock<'_>> {
        redis_lock(&self.lock).ok_or_else(|| {
            Error::InvalidState("a Redis condition over a lock not kept in Redis".into())
        })
    }

    /// The ticket key prefix, wake-up list prefix and the suffix they share.
    fn ticket_parts(&self) -> (String, String, String) {
        let target = self.obj.target();
        (
            format!("{}:condition#t.", target.prefix()),
            format!("{}:condition#w.", target.prefix()),
            format!(":{}", self.obj.name()),
        )
    }

    /// Releases the lock, waits until notified, `deadline` or the lock's
    /// holder died, and takes the lock back (as deep as it was held)
    /// whatever ended the wait: (woken, how the lock was taken back).
    pub(crate) fn wait_deadline(&self, deadline: Deadline) -> Result<(bool, Acquired)> {
        let lock = self.held_lock()?;
        let target = self.obj.target();
        let [key, owner, depth_key, wake] = lock.keys();
        let (tprefix, wprefix, suffix) = self.ticket_parts();
        let token = lease::process_token();
        let lease_ms = u64::try_from(target.lease().as_millis()).unwrap_or(u64::MAX);
        // Stop renewing the lock's lease before the script releases it: a
        // thread of this process that takes it next holds its own.
        let caller = lock.caller();
        lease::release_if(target, &key, &caller);
        let prepared: Result<Vec<i64>> = target.with_conn(|c| {
            PREPARE_WAIT
                .key(self.obj.key())
                .key(self.obj.sub("#waiters"))
                .key(&key)
                .key(&owner)
                .key(&depth_key)
                .key(&wake)
                .arg(lock.mode())
                .arg(&caller)
                .arg(&tprefix)
                .arg(&suffix)
                .arg(lease_ms)
                .arg(&token)
                .invoke(c)
        });
        let (ticket, depth) = match prepared {
            Ok(reply) => match reply.as_slice() {
                [ticket, depth] => (*ticket, u64::try_from(*depth).unwrap_or(1)),
                _ => {
                    return Err(Error::InvalidState(
                        "wait on a condition whose lock the caller does not hold".into(),
                    ));
                }
            },
            Err(e) => {
                // Still ours, perhaps: keep renewing it if so (the renewer
                // forgets a key that no longer holds our token).
                lease::hold(target, key, caller);
                return Err(e);
            }
        };
        let ticket_key = format!("{tprefix}{ticket}{suffix}");
        lease::hold_fresh(target, ticket_key.clone(), token);
        let ended = self.sleep(ticket, deadline, &tprefix, &wprefix, &suffix);
        lease::release(target, &ticket_key);
        let acquired = match &self.lock {
            ConditionLock::Lock(l) => l.acquire_deadline(Deadline::Never),
            ConditionLock::RLock(l) => l.acquire_restore(depth),
        };
        let woken = ended?;
        Ok((woken, acquired?))
    }

    /// Waits for the ticket's wake-up: whether it was woken (not timed out).
    fn sleep(
        &self,
        ticket: i64,
        deadline: Deadline,
        tprefix: &str,
        wprefix: &str,
        suffix: &str,
    ) -> Result<bool> {
        let target = self.obj.target();
        let lock = self.held_lock()?;
        let [key, owner, _, _] = lock.keys();
        let (waiters, granted) = (self.obj.sub("#waiters"), self.obj.sub("#granted"));
        let wake = format!("{wprefix}{ticket}{suffix}");
        loop {
            let give_up = deadline.expired();
            let outcome: String = target.with_conn(|c| {
                CHECK
                    .key(&waiters)
                    .key(&granted)
                    .key(&key)
                    .key(&owner)
                    .key(self.obj.key())
                    .arg(ticket)
                    .arg(if give_up { "1" } else { "0" })
                    .arg(tprefix)
                    .arg(wprefix)
                    .arg(suffix)
                    .invoke(c)
            })?;
            match outcome.as_str() {
                "waiting" => {}
                "timeout" => return Ok(false),
                // Notified, the holder died, or the ticket was lost (a
                // spurious wake-up: never a lost one).
                _ => return Ok(true),
            }
            target.wait_token(&wake, deadline, RECHECK)?;
        }
    }

    /// Wakes up to `n` waiters; the caller must hold the lock.
    pub(crate) fn notify(&self, n: u64) -> Result<()> {
        let lock = self.held_lock()?;
        let [key, ..] = lock.keys();
        let (tprefix, wprefix, suffix) = self.ticket_parts();
        let woken: i64 = self.obj.run(|c| {
            NOTIFY
                .key(self.obj.sub("#waiters"))
                .key(self.obj.sub("#granted"))
                .key(&key)
                .key(self.obj.key())
                .arg(lock.caller())
                .arg(n.min(i64::MAX as u64))
                .arg(&tprefix)
                .arg(&wprefix)
                .arg(&suffix)
                .invoke(c)
        })?;
        if woken < 0 {
            return Err(Error::InvalidState(
                "notify on a condition whose lock the caller does not hold".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(name: &str, type_name: &str) -> RedisRepr {
        RedisRepr {
            url: "redis://127.0.0.1:1/0".into(),
            prefix: "p".into(),
            name: name.into(),
            type_name: type_name.into(),
            lease_ms: 500,
        }
    }

    /// The keys of the lock under a decoded condition.
    fn lock_keys(r: &RedisCondition) -> [String; 4] {
        redis_lock(r.lock()).map(|l| l.keys()).unwrap()
    }

    #[test]
    fn a_conditions_type_names_its_lock() {
        let own = RedisCondition::from_repr(&repr("c", OWN_LOCK_TYPE)).unwrap();
        assert_eq!(own.object().key(), "p:condition:c");
        assert_eq!(
            lock_keys(&own),
            [
                "p:condition#lock:c",
                "p:condition#lock#owner:c",
                "p:condition#lock#count:c",
                "p:condition#lock#wake:c",
            ]
        );
        let over = RedisCondition::from_repr(&repr("c", "Condition over Lock:a:b")).unwrap();
        assert!(matches!(over.lock(), ConditionLock::Lock(_)));
        assert_eq!(lock_keys(&over)[0], "p:lock:a:b");
        let over = RedisCondition::from_repr(&repr("c", "Condition over RLock:r")).unwrap();
        assert_eq!(lock_keys(&over)[..2], ["p:rlock:r", "p:rlock#owner:r"]);
        let over = RedisCondition::from_repr(&repr("c", "Condition over the RLock of Condition:d"))
            .unwrap();
        assert_eq!(lock_keys(&over)[0], "p:condition#lock:d");
    }

    #[test]
    fn a_handle_of_another_type_or_no_lock_is_refused() {
        for bad in ["Lock", "RLock", "Condition over Event:e", ""] {
            assert!(
                matches!(
                    RedisCondition::from_repr(&repr("c", bad)),
                    Err(Error::TypeMismatch { .. })
                ),
                "{bad:?}"
            );
        }
        for empty in [OVER_LOCK, OVER_RLOCK, OVER_CONDITION_RLOCK] {
            assert!(matches!(
                RedisCondition::from_repr(&repr("c", empty)),
                Err(Error::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn an_rlock_handle_names_an_rlock_or_a_conditions_own() {
        let r = RedisRLock::from_repr(&repr("r", RedisRLock::TYPE)).unwrap();
        assert!(!r.is_condition_lock());
        assert_eq!(
            [r.key(), r.part("#count")],
            ["p:rlock:r", "p:rlock#count:r"]
        );
        let own = RedisRLock::from_repr(&repr("c", OWN_LOCK_TYPE)).unwrap();
        assert!(own.is_condition_lock());
        assert_eq!(own.key(), "p:condition#lock:c");
        for bad in ["Lock", "Condition over Lock:l"] {
            assert!(matches!(
                RedisRLock::from_repr(&repr("r", bad)),
                Err(Error::TypeMismatch { .. })
            ));
        }
    }

    #[test]
    fn an_owner_token_keeps_the_pid_first() {
        let me = this_thread();
        assert_eq!(
            lease::token_pid(me.as_bytes()),
            crate::sys::process::getpid()
        );
        assert!(me.contains('/'));
    }
}
