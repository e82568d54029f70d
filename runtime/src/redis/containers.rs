//! The containers of a Redis manager, on encoded bytes: a dict is a Redis
//! hash, a list a Redis list, a namespace two hashes (values, and the type
//! each attribute was set as). The typed proxies (`DictProxy`,
//! `ListProxy`, `NamespaceProxy` in `multiproc-proxy`) encode and decode
//! around these.
//!
//! Every read-modify-write is one atomic step: a Lua script where Redis
//! has no command for it, or a `WATCH`/`MULTI`/`EXEC` retry where the new
//! value is computed here (a list's insert or sort).

use std::sync::LazyLock;

use crate::error::{Error, Result};
use crate::redis::RedisObject;

/// Removes a field and returns its value.
static HASH_TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v
",
    )
});

/// Removes some field; returns {field, value} or nil when empty.
static HASH_POP_ANY: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local f = redis.call('HRANDFIELD', KEYS[1])
if not f then return false end
local v = redis.call('HGET', KEYS[1], f)
redis.call('HDEL', KEYS[1], f)
return {f, v}
",
    )
});

/// Sets a field unless present; returns the value now there.
static HASH_SETDEFAULT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
",
    )
});

/// Stores ARGV[3] under ARGV[1] if the value there is still ARGV[2]
/// (ARGV[4] == '1': if there is none); returns {1} or {0, current}.
static HASH_CAS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local same
if ARGV[4] == '1' then same = (cur == false) else same = (cur == ARGV[2]) end
if same then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return {1}
end
if cur then return {0, cur} end
return {0}
",
    )
});

/// Python's indexing: {1, value} or {0, len} when out of range.
static LIST_GET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local n = redis.call('LLEN', KEYS[1])
local i = tonumber(ARGV[1])
if i < 0 then i = i + n end
if i < 0 or i >= n then return {0, n} end
return {1, redis.call('LINDEX', KEYS[1], i)}
",
    )
});

/// Python's `l[i] = v`: {1} or {0, len} when out of range.
static LIST_SET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local n = redis.call('LLEN', KEYS[1])
local i = tonumber(ARGV[1])
if i < 0 then i = i + n end
if i < 0 or i >= n then return {0, n} end
redis.call('LSET', KEYS[1], i, ARGV[2])
return {1}
",
    )
});

/// The outcome of a compare-and-swap.
#[derive(Debug)]
pub enum Swapped {
    /// Stored.
    Done,
    /// The value had changed: here is the current one (or none).
    Failed(Option<Vec<u8>>),
}

/// A dict kept in a Redis hash, on encoded keys and values.
#[derive(Debug, Clone)]
pub struct RedisDict {
    obj: RedisObject,
}

impl RedisDict {
    /// The dict stored in `obj` (a `dict` object).
    pub fn new(obj: RedisObject) -> RedisDict {
        RedisDict { obj }
    }

    /// The object.
    pub fn object(&self) -> &RedisObject {
        &self.obj
    }

    /// The value under `k`.
    pub fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = self.obj.key();
        self.obj
            .run(|c| redis::cmd("HGET").arg(&key).arg(k).query(c))
    }

    /// Stores `v` under `k`.
    pub fn insert(&self, k: &[u8], v: &[u8]) -> Result<()> {
        let key = self.obj.key();
        self.obj
            .run(|c| redis::cmd("HSET").arg(&key).arg(k).arg(v).exec(c))
    }

    /// Removes `k`, returning its value.
    pub fn remove(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = self.obj.key();
        self.obj.run(|c| HASH_TAKE.key(&key).arg(k).invoke(c))
    }

    /// Whether `k` is present.
    pub fn contains(&self, k: &[u8]) -> Result<bool> {
        let key = self.obj.key();
        self.obj
            .run(|c| redis::cmd("HEXISTS").arg(&key).arg(k).query(c))
    }

    /// The number of entries.
    pub fn len(&self) -> Result<usize> {
        let key = self.obj.key();
        self.obj.run(|c| redis::cmd("HLEN").arg(&key).query(c))
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// The keys.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>> {
        let key = self.obj.key();
        self.obj.run(|c| redis::cmd("HKEYS").arg(&key).query(c))
    }

    /// The values.
    pub fn values(&self) -> Result<Vec<Vec<u8>>> {
        let key = self.obj.key();
        self.obj.run(|c| redis::cmd("HVALS").arg(&key).query(c))
    }

    /// The entries.
    pub fn items(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let key = self.obj.key();
        self.obj.run(|c| redis::cmd("HGETALL").arg(&key).query(c))
    }

    /// Removes some entry and returns it; `None` when empty.
    pub fn popitem(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let key = self.obj.key();
        self.obj.run(|c| HASH_POP_ANY.key(&key).invoke(c))
    }

    /// Stores every pair, in one command.
    pub fn update(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let key = self.obj.key();
        self.obj.run(|c| {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(&key);
            for (k, v) in pairs {
                cmd.arg(k).arg(v);
            }
            cmd.exec(c)
        })
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        let key = self.obj.key();
        self.obj.run(|c| redis::cmd("DEL").arg(&key).exec(c))
    }

    /// The value under `k`, storing `v` first if there is none.
    pub fn setdefault(&self, k: &[u8], v: &[u8]) -> Result<Vec<u8>> {
        let key = self.obj.key();
        self.obj
            .run(|c| HASH_SETDEFAULT.key(&key).arg(k).arg(v).invoke(c))
    }

    /// Stores `new` under `k` only if the value there is still `expected`
    /// (`None`: only if there is none).
    pub fn compare_and_swap(
        &self,
        k: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<Swapped> {
        let key = self.obj.key();
        let reply: Vec<redis::Value> = self.obj.run(|c| {
            HASH_CAS
                .key(&key)
                .arg(k)
                .arg(expected.unwrap_or(b""))
                .arg(new)
                .arg(if expected.is_none() { "1" } else { "0" })
                .invoke(c)
        })?;
        let mut reply = reply.into_iter();
        Ok(match (reply.next(), reply.next()) {
            (Some(redis::Value::Int(1)), _) => Swapped::Done,
            (_, Some(redis::Value::BulkString(now))) => Swapped::Failed(Some(now)),
            _ => Swapped::Failed(None),
        })
    }
}

/// A list kept in a Redis list, on encoded values.
#[derive(Debug, Clone)]
pub struct RedisList {
    obj: RedisObject,
}

/// An index as Python reads it, for an error: a negative one as `usize::MAX`.
fn shown_index(i: i64) -> usize {
    usize::try_from(i).unwrap_or(usize::MAX)
}

impl RedisList {
    /// The list stored in `obj` (a `list` object).
    pub fn new(obj: RedisObject) -> RedisList {
        RedisList { obj }
    }

    /// The object.
    pub fn object(&self) -> &RedisObject {
        &self.obj
    }

    /// Appends `values`, in one command.
    pub fn extend(&self, values: &[Vec<u8>]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let key = self.obj.key();
        self.obj
            .run(|c| redis::cmd("RPUSH").arg(&key).arg(values).exec(c))
    }

    /// Element `i` (negative: from the end).
    pub fn get(&self, i: i64) -> Result<Vec<u8>> {
        let key = self.obj.key();
        let (found, v): (i64, redis::Value) =
            self.obj.run(|c| LIST_GET.key(&key).arg(i).invoke(c))?;
        match (found, v) {
            (1, redis::Value::BulkString(b)) => Ok(b),
            (_, redis::Value::Int(n)) => Err(Error::IndexOutOfRange {
                index: shown_index(i),
                len: usize::try_from(n).unwrap_or(0),
            }),
            _ => Err(Error::Protocol("unexpected reply from redis".into())),
        }
    }

    /// Overwrites element `i` (negative: from the end).
    pub fn set(&self, i: i64, v: &[u8]) -> Result<()> {
        let key = self.obj.key();
        let reply: Vec<i64> = self
            .obj
            .run(|c| LIST_SET.key(&key).arg(i).arg(v).invoke(c))?;
        match reply.as_slice() {
            [1] => Ok(()),
            [0, n] => Err(Error::IndexOutOfRange {
                index: shown_index(i),
                len: usize::try_from(*n).unwrap_or(0),
            }),
            _ => Err(Error::Protocol("unexpected reply from redis".into())),
        }
    }

    /// Removes and returns the last element, if any.
    pub fn pop_last(&self) -> Result<Option<Vec<u8>>> {
        let key = self.obj.key();
        self.obj.run(|c| redis::cmd("RPOP").arg(&key).query(c))
    }

    /// The number of elements.
    pub fn len(&self) -> Result<usize> {
        let key = self.obj.key();
        self.obj.run(|c| redis::cmd("LLEN").arg(&key).query(c))
    }

    /// Whether there is no element.
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// Every element.
    pub fn to_vec(&self) -> Result<Vec<Vec<u8>>> {
        let key = self.obj.key();
        self.obj
            .run(|c| redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query(c))
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<()> {
        let key = self.obj.key();
        self.obj.run(|c| redis::cmd("DEL").arg(&key).exec(c))
    }

    /// Reads the whole list, lets `f` change it (or fail, changing
    /// nothing), and stores the result only if no other client changed
    /// the list meanwhile (`WATCH`/`MULTI`/`EXEC`), trying again if one
    /// did. `f` returns its result and whether it changed the list; it
    /// may run more than once.
    pub fn rewrite<R>(
        &self,
        mut f: impl FnMut(&mut Vec<Vec<u8>>) -> Result<(R, bool)>,
    ) -> Result<R> {
        let key = self.obj.key();
        let outcome: Result<R> = self.obj.run(|c| {
            loop {
                redis::cmd("WATCH").arg(&key).exec(c)?;
                let mut items: Vec<Vec<u8>> =
                    redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query(c)?;
                let (r, changed) = match f(&mut items) {
                    Ok(v) => v,
                    Err(e) => {
                        redis::cmd("UNWATCH").exec(c)?;
                        return Ok(Err(e));
                    }
                };
                if !changed {
                    redis::cmd("UNWATCH").exec(c)?;
                    return Ok(Ok(r));
                }
                let mut p = redis::pipe();
                p.atomic().cmd("DEL").arg(&key).ignore();
                for chunk in items.chunks(1000) {
                    p.cmd("RPUSH").arg(&key).arg(chunk).ignore();
                }
                p.cmd("LLEN").arg(&key);
                let committed: Option<(i64,)> = p.query(c)?;
                if committed.is_some() {
                    return Ok(Ok(r));
                }
            }
        })?;
        outcome
    }
}

/// A namespace kept in two Redis hashes: the values, and the name of the
/// type each attribute was set as.
#[derive(Debug, Clone)]
pub struct RedisNamespace {
    obj: RedisObject,
}

/// {value, type} of an attribute, or {} when not set.
static NS_GET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {} end
return {v, redis.call('HGET', KEYS[2], ARGV[1]) or ''}
",
    )
});

static NS_SET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
",
    )
});

static NS_DELETE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
",
    )
});

impl RedisNamespace {
    /// The namespace stored in `obj` (a `namespace` object).
    pub fn new(obj: RedisObject) -> RedisNamespace {
        RedisNamespace { obj }
    }

    /// The object.
    pub fn object(&self) -> &RedisObject {
        &self.obj
    }

    /// The attribute `name`, checked to have been set as `type_name`.
    pub fn get(&self, name: &str, type_name: &str) -> Result<Vec<u8>> {
        let (values, types) = (self.obj.key(), self.obj.sub("#types"));
        let got: Vec<Vec<u8>> = self
            .obj
            .run(|c| NS_GET.key(&values).key(&types).arg(name).invoke(c))?;
        match <[Vec<u8>; 2]>::try_from(got) {
            Ok([v, t]) if t == type_name.as_bytes() => Ok(v),
            Ok([_, t]) => Err(Error::TypeMismatch {
                expected: type_name.to_owned(),
                found: String::from_utf8_lossy(&t).into_owned(),
            }),
            Err(_) => Err(Error::KeyNotFound(format!("{name:?}"))),
        }
    }

    /// Sets the attribute `name` to `v`, recording `type_name`.
    pub fn set(&self, name: &str, type_name: &str, v: &[u8]) -> Result<()> {
        let (values, types) = (self.obj.key(), self.obj.sub("#types"));
        self.obj.run(|c| {
            NS_SET
                .key(&values)
                .key(&types)
                .arg(name)
                .arg(v)
                .arg(type_name)
                .invoke::<()>(c)
        })
    }

    /// Deletes the attribute `name`; whether it was set.
    pub fn delete(&self, name: &str) -> Result<bool> {
        let (values, types) = (self.obj.key(), self.obj.sub("#types"));
        let n: i64 = self
            .obj
            .run(|c| NS_DELETE.key(&values).key(&types).arg(name).invoke(c))?;
        Ok(n > 0)
    }

    /// Whether the attribute `name` is set.
    pub fn contains(&self, name: &str) -> Result<bool> {
        let values = self.obj.key();
        self.obj
            .run(|c| redis::cmd("HEXISTS").arg(&values).arg(name).query(c))
    }

    /// Each attribute's name and type name.
    pub fn attributes(&self) -> Result<Vec<(String, String)>> {
        let types = self.obj.sub("#types");
        self.obj.run(|c| redis::cmd("HGETALL").arg(&types).query(c))
    }
}
