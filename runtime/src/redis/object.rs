//! One named object in Redis: its keys, the type record that makes a
//! handle of other types fail with [`Error::TypeMismatch`], its encoded
//! form, and deleting objects by name or a whole prefix.
//!
//! # Keys
//!
//! An object `name` of kind `kind` under prefix `p` keeps its state in
//! `p:kind:name` and, where it needs more, in `p:kind#what:name` (a lock's
//! owner record `p:lock#owner:name`, a queue's wake-up list
//! `p:queue#space:name`…). A queue consumer's in-flight list is
//! `p:queue#proc.<consumer>:name`; a condition waiter's ticket (a key
//! with a lease) and wake-up list are `p:condition#t.<ticket>:name` and
//! `p:condition#w.<ticket>:name`. The hash `p:types` records each
//! object's handle type under `kind:name`. Objects are named and persist
//! until deleted ([`delete_objects`], [`remove_prefix`]), as Redis users
//! expect; nothing expires on its own but a lock's lease, a condition
//! waiter's ticket and a consumer's presence record.

use std::sync::Arc;
use std::sync::LazyLock;

use crate::error::{Error, Result};
use crate::handle::RedisRepr;
use crate::redis::RedisTarget;

/// The kinds of objects and the sub-keys each keeps beside its main key.
const KINDS: &[(&str, &[&str])] = &[
    ("dict", &[]),
    ("list", &[]),
    ("namespace", &["#types"]),
    ("lock", &["#owner", "#wake"]),
    ("rlock", &["#owner", "#count", "#wake"]),
    (
        "condition",
        &[
            "#waiters",
            "#granted",
            "#lock",
            "#lock#owner",
            "#lock#count",
            "#lock#wake",
        ],
    ),
    ("semaphore", &["#max", "#wake"]),
    ("event", &["#wake"]),
    ("barrier", &["#wake", "#beats"]),
    (
        "queue",
        &["#meta", "#space", "#unfinished", "#joined", "#consumers"],
    ),
];

/// Records a type for `kind:name` unless one is there; returns the one there.
static REGISTER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('HGET', KEYS[1], ARGV[1])
if not t then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return ARGV[2]
end
return t
",
    )
});

/// Deletes every object named ARGV[2] under prefix ARGV[1]; ARGV[3..] are
/// `kind` then its sub-keys, kinds separated by an empty string. Returns
/// the number of keys deleted.
static DELETE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local p, n = ARGV[1], ARGV[2]
local deleted = 0
local i = 3
while i <= #ARGV do
  local kind = ARGV[i]
  i = i + 1
  if kind == 'queue' then
    for _, c in ipairs(redis.call('SMEMBERS', p .. ':queue#consumers:' .. n)) do
      deleted = deleted + redis.call('DEL', p .. ':queue#proc.' .. c .. ':' .. n,
                                     p .. ':queue#alive.' .. c .. ':' .. n)
    end
  end
  if kind == 'condition' then
    local tickets = redis.call('LRANGE', p .. ':condition#waiters:' .. n, 0, -1)
    for _, t in ipairs(redis.call('ZRANGE', p .. ':condition#granted:' .. n, 0, -1)) do
      table.insert(tickets, t)
    end
    for _, t in ipairs(tickets) do
      deleted = deleted + redis.call('DEL', p .. ':condition#t.' .. t .. ':' .. n,
                                     p .. ':condition#w.' .. t .. ':' .. n)
    end
  end
  deleted = deleted + redis.call('DEL', p .. ':' .. kind .. ':' .. n)
  while i <= #ARGV and ARGV[i] ~= '' do
    deleted = deleted + redis.call('DEL', p .. ':' .. kind .. ARGV[i] .. ':' .. n)
    i = i + 1
  end
  i = i + 1
  deleted = deleted + redis.call('HDEL', p .. ':types', kind .. ':' .. n)
end
return deleted
",
    )
});

/// One named object in Redis, as a handle of one type sees it (cheap to
/// clone: the clones share it).
#[derive(Clone)]
pub struct RedisObject {
    inner: Arc<ObjectInner>,
}

struct ObjectInner {
    target: RedisTarget,
    kind: &'static str,
    name: String,
    type_name: String,
}

impl std::fmt::Debug for RedisObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.inner.target.shown_url())
            .field("key", &self.key())
            .field("type", &self.inner.type_name)
            .finish()
    }
}

impl RedisObject {
    /// Opens (creating the type record if needed) the object `name` of
    /// `kind`, as a handle of `type_name`: [`Error::TypeMismatch`] if it
    /// was recorded with other types. One round trip.
    pub fn open(
        target: &RedisTarget,
        kind: &'static str,
        name: &str,
        type_name: String,
    ) -> Result<RedisObject> {
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "a redis object's name may not be empty".into(),
            ));
        }
        let recorded: String = target.with_conn(|c| {
            REGISTER
                .key(format!("{}:types", target.prefix()))
                .arg(format!("{kind}:{name}"))
                .arg(&type_name)
                .invoke(c)
        })?;
        if recorded != type_name {
            return Err(Error::TypeMismatch {
                expected: type_name,
                found: recorded,
            });
        }
        Ok(RedisObject::from_parts(
            target.clone(),
            kind,
            name,
            type_name,
        ))
    }

    /// The object a decoded handle names, checked to be of `type_name`
    /// (no round trip: the type was recorded by whoever encoded it).
    pub fn from_repr(repr: &RedisRepr, kind: &'static str, type_name: String) -> Result<Self> {
        if repr.type_name != type_name {
            return Err(Error::TypeMismatch {
                expected: type_name,
                found: repr.type_name.clone(),
            });
        }
        Ok(RedisObject::from_parts(
            RedisTarget::from_handle(&repr.url, &repr.prefix, repr.lease_ms)?,
            kind,
            &repr.name,
            type_name,
        ))
    }

    fn from_parts(
        target: RedisTarget,
        kind: &'static str,
        name: &str,
        type_name: String,
    ) -> RedisObject {
        RedisObject {
            inner: Arc::new(ObjectInner {
                target,
                kind,
                name: name.to_owned(),
                type_name,
            }),
        }
    }

    /// The encoded form.
    pub fn to_repr(&self) -> RedisRepr {
        RedisRepr {
            url: self.inner.target.url_for_handle(),
            prefix: self.inner.target.prefix().to_owned(),
            name: self.inner.name.clone(),
            type_name: self.inner.type_name.clone(),
            lease_ms: u64::try_from(self.inner.target.lease().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The server and prefix.
    pub fn target(&self) -> &RedisTarget {
        &self.inner.target
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The main key.
    pub fn key(&self) -> String {
        self.inner.target.key(self.inner.kind, &self.inner.name)
    }

    /// The sub-key `what` (`#owner`, `#wake`…).
    pub(crate) fn sub(&self, what: &str) -> String {
        format!(
            "{}:{}{what}:{}",
            self.inner.target.prefix(),
            self.inner.kind,
            self.inner.name
        )
    }

    /// Runs a command on a pooled connection.
    pub fn run<R>(
        &self,
        f: impl FnOnce(&mut dyn redis::ConnectionLike) -> redis::RedisResult<R>,
    ) -> Result<R> {
        self.inner.target.with_conn(|c| f(c))
    }
}

/// Deletes every object named `name` under `target`'s prefix, of every
/// kind, with its type record; the number of keys deleted (0: there was
/// none). Handles to a deleted object see it afresh (empty, unlocked…)
/// if they go on using it.
pub fn delete_objects(target: &RedisTarget, name: &str) -> Result<usize> {
    let script = &*DELETE;
    let mut call = script.prepare_invoke();
    call.arg(target.prefix()).arg(name);
    for (kind, subs) in KINDS {
        call.arg(*kind);
        for s in *subs {
            call.arg(*s);
        }
        call.arg("");
    }
    target.with_conn(|c| call.invoke::<usize>(c))
}

/// Deletes every key under `target`'s prefix (`prefix:*`): all its
/// objects, records and leases. The number of keys deleted.
pub fn remove_prefix(target: &RedisTarget) -> Result<usize> {
    let pattern = format!("{}:*", glob_escape(target.prefix()));
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = target.with_conn(|c| {
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(c)
        })?;
        if !keys.is_empty() {
            deleted += target.with_conn(|c| redis::cmd("UNLINK").arg(&keys).query::<usize>(c))?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// `s` with Redis glob characters escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}
