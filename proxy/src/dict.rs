//! `DictProxy<K, V>`: a dict that lives in the manager's server.
// Without the `redis` feature each method's flavour `match` has one arm.
#![cfg_attr(not(feature = "redis"), allow(clippy::infallible_destructuring_match))]

use std::marker::PhantomData;
use std::sync::Arc;

use multiproc_runtime::manager::protocol::Method;
use multiproc_runtime::{Result, Shareable};

#[cfg(feature = "redis")]
use crate::EncodeForRedis;
use multiproc_runtime::handle::{FlavorRepr, FlavoredHandle};
use multiproc_runtime::manager::core::RemoteFlavor;
#[cfg(feature = "redis")]
use multiproc_runtime::redis::{RedisDict, RedisObject, RedisTarget, Swapped};

use crate::core::{
    Args, ProxyCore, Swap, TypeTag, read_bool, read_len, read_many, read_swap, read_unit,
    read_value, read_value_raw,
};
use crate::not_a_container;

/// A proxy to a dict owned by a manager server (Python's `manager.dict()`).
///
/// Any process holding a proxy (a clone, or one passed as an argument or
/// inside a message) sees and changes the same dict. Each call is one
/// round trip to the server.
///
/// Keys are compared by their encoded bytes, so `K`'s encoding must be
/// canonical: equal keys must encode to equal bytes. That holds for
/// integers, `bool`, `char`, `String`, and tuples, arrays and `Vec`s of
/// them; it does not hold for `HashMap`/`HashSet` keys (their order is
/// arbitrary) or floats (`0.0` and `-0.0` differ, each `NaN` is distinct).
/// Unlike Python's dict, which keeps insertion order, this one promises no
/// order (`keys`, `items`, `values`, iteration): sort them where order
/// matters.
///
/// ```
/// use multiproc::{Manager, Process};
///
/// fn count(d: multiproc::DictProxy<String, u64>) {
///     d.update_with("hits".to_string(), 0, |n| n + 1).unwrap();
/// }
///
/// fn main() {
///     multiproc::init();
///     let manager = Manager::start().unwrap();
///     let d = manager.dict::<String, u64>().unwrap();
///     let mut p = Process::new(count, d.clone());
///     p.start().unwrap();
///     p.join().unwrap();
///     assert_eq!(d.get(&"hits".to_string()).unwrap(), Some(1));
///     manager.shutdown().unwrap();
/// }
/// ```
pub struct DictProxy<K, V> {
    flavor: DictFlavor,
    _types: PhantomData<fn() -> (K, V)>,
}

/// Where a [`DictProxy`]'s dict lives.
enum DictFlavor {
    /// In a manager's server.
    Remote(Arc<ProxyCore>),
    /// In a Redis hash.
    #[cfg(feature = "redis")]
    Redis(multiproc_runtime::redis::RedisDict),
}

impl<K, V> Clone for DictProxy<K, V> {
    fn clone(&self) -> Self {
        DictProxy {
            flavor: match &self.flavor {
                DictFlavor::Remote(core) => DictFlavor::Remote(core.clone()),
                #[cfg(feature = "redis")]
                DictFlavor::Redis(r) => DictFlavor::Redis(r.clone()),
            },
            _types: PhantomData,
        }
    }
}

impl<K, V> std::fmt::Debug for DictProxy<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.flavor {
            DictFlavor::Remote(core) => core.fmt(f),
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => f.debug_tuple("DictProxy").field(r.object()).finish(),
        }
    }
}

impl<K: Shareable, V: Shareable> DictProxy<K, V> {
    /// The types a dict records (in its server, or in Redis).
    fn type_tag() -> TypeTag {
        TypeTag::new(format!(
            "DictProxy<{}, {}>",
            std::any::type_name::<K>(),
            std::any::type_name::<V>()
        ))
    }

    /// The dict `name` kept under `target` in Redis (a `RedisManager`'s).
    #[cfg(feature = "redis")]
    pub(crate) fn redis(target: &RedisTarget, name: &str) -> Result<Self> {
        let obj = RedisObject::open(target, "dict", name, Self::type_tag().name)?;
        Ok(DictProxy {
            flavor: DictFlavor::Redis(RedisDict::new(obj)),
            _types: PhantomData,
        })
    }
}

impl<K: Shareable, V: Shareable> RemoteFlavor for DictProxy<K, V> {
    fn remote_tag() -> TypeTag {
        Self::type_tag()
    }
    fn from_remote(core: ProxyCore) -> Result<Self> {
        Ok(DictProxy {
            flavor: DictFlavor::Remote(Arc::new(core)),
            _types: PhantomData,
        })
    }
}

impl<K: Shareable, V: Shareable> FlavoredHandle for DictProxy<K, V> {
    fn to_flavor_repr(&self) -> Result<FlavorRepr> {
        match &self.flavor {
            DictFlavor::Remote(core) => core.to_repr().map(FlavorRepr::Remote),
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => Ok(FlavorRepr::Redis(r.object().to_repr())),
        }
    }

    fn from_flavor_repr(repr: &FlavorRepr) -> Result<Self> {
        match repr {
            FlavorRepr::Remote(p) => {
                ProxyCore::from_repr(p, Self::type_tag()).and_then(Self::from_remote)
            }
            #[cfg(feature = "redis")]
            FlavorRepr::Redis(r) => {
                RedisObject::from_repr(r, "dict", Self::type_tag().name).map(|obj| DictProxy {
                    flavor: DictFlavor::Redis(RedisDict::new(obj)),
                    _types: PhantomData,
                })
            }
            other => Err(not_a_container("DictProxy", other)),
        }
    }
}

multiproc_runtime::impl_flavored_handle!(impl<K: Shareable, V: Shareable> for DictProxy<K, V>);

impl<K: Shareable, V: Shareable> DictProxy<K, V> {
    /// The value for `key`, if present.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return r
                    .get(&key.encode_stored()?)?
                    .map(|b| V::decode(&b))
                    .transpose();
            }
        };
        let k = core.encode(key)?;
        let args = Args {
            key: Some(k.blob()),
            ..Args::default()
        };
        core.call(Method::DictGet, args, read_value)
    }

    /// Sets `key` to `value` (Python's `d[key] = value`).
    pub fn insert(&self, key: K, value: V) -> Result<()> {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return r.insert(&key.encode_stored()?, &value.encode_stored()?);
            }
        };
        let (k, v) = (core.encode(&key)?, core.encode(&value)?);
        let args = Args {
            key: Some(k.blob()),
            value: Some(v.blob()),
            ..Args::default()
        };
        core.call(Method::DictInsert, args, read_unit)
    }

    /// Removes `key`, returning its value if it was present.
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return r
                    .remove(&key.encode_stored()?)?
                    .map(|b| V::decode(&b))
                    .transpose();
            }
        };
        let k = core.encode(key)?;
        let args = Args {
            key: Some(k.blob()),
            ..Args::default()
        };
        core.call(Method::DictRemove, args, read_value)
    }

    /// Removes `key` and returns its value; `Err(KeyNotFound)` naming the
    /// key (its `Debug` form) if it was absent (Python's `d.pop(key)`, whose
    /// `KeyError` shows the key). [`DictProxy::remove`] needs no `Debug`.
    pub fn pop(&self, key: &K) -> Result<V>
    where
        K: std::fmt::Debug,
    {
        self.remove(key)?
            .ok_or_else(|| multiproc_runtime::Error::KeyNotFound(format!("{key:?}")))
    }

    /// Removes `key` and returns its value, or `default` if it was absent
    /// (Python's `d.pop(key, default)`).
    pub fn pop_or(&self, key: &K, default: V) -> Result<V> {
        Ok(self.remove(key)?.unwrap_or(default))
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return r.contains(&key.encode_stored()?);
            }
        };
        let k = core.encode(key)?;
        let args = Args {
            key: Some(k.blob()),
            ..Args::default()
        };
        core.call(Method::DictContains, args, read_bool)
    }

    /// The number of entries.
    pub fn len(&self) -> Result<usize> {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return r.len();
            }
        };
        core.call(Method::DictLen, Args::default(), read_len)
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A snapshot of the keys.
    pub fn keys(&self) -> Result<Vec<K>> {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return r.keys()?.iter().map(|b| K::decode(b)).collect();
            }
        };
        core.call(Method::DictKeys, Args::default(), |conn, r| {
            read_many(conn, r, |items| items.map(K::decode).collect())
        })
    }

    /// A snapshot of the values.
    pub fn values(&self) -> Result<Vec<V>> {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return r.values()?.iter().map(|b| V::decode(b)).collect();
            }
        };
        core.call(Method::DictValues, Args::default(), |conn, r| {
            read_many(conn, r, |items| items.map(V::decode).collect())
        })
    }

    /// A snapshot of the entries.
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return r
                    .items()?
                    .iter()
                    .map(|(k, v)| Ok((K::decode(k)?, V::decode(v)?)))
                    .collect();
            }
        };
        core.call(Method::DictItems, Args::default(), |conn, r| {
            read_many(conn, r, |items| {
                let mut out = Vec::new();
                while let Some(k) = items.next() {
                    let v = items.next().ok_or_else(crate::client::unexpected)?;
                    out.push((K::decode(k)?, V::decode(v)?));
                }
                Ok(out)
            })
        })
    }

    /// A snapshot of the whole dict as a plain `HashMap` (Python's `d.copy()`,
    /// which also gives a plain dict, not a proxy), in one round trip.
    pub fn copy(&self) -> Result<std::collections::HashMap<K, V>>
    where
        K: Eq + std::hash::Hash,
    {
        Ok(self.items()?.into_iter().collect())
    }

    /// Removes some entry and returns it (Python's `d.popitem()`; the
    /// server's dict has no order, so which entry is not specified);
    /// `Err(KeyNotFound)` if the dict is empty. One round trip, and no
    /// other client can take the same entry.
    ///
    /// ```
    /// multiproc::init();
    /// let manager = multiproc::Manager::start().unwrap();
    /// let d = manager.dict_from([("a".to_string(), 1u8)]).unwrap();
    /// assert_eq!(d.popitem().unwrap(), ("a".to_string(), 1));
    /// assert!(matches!(d.popitem(), Err(multiproc::Error::KeyNotFound(_))));
    /// manager.shutdown().unwrap();
    /// ```
    pub fn popitem(&self) -> Result<(K, V)> {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return match r.popitem()? {
                    Some((k, v)) => Ok((K::decode(&k)?, V::decode(&v)?)),
                    None => Err(multiproc_runtime::Error::KeyNotFound(
                        "popitem(): dictionary is empty".into(),
                    )),
                };
            }
        };
        let popped = core.call(Method::DictPopItem, Args::default(), |conn, r| {
            read_many(conn, r, |items| {
                let k = items.next().ok_or_else(crate::client::unexpected)?;
                let v = items.next().ok_or_else(crate::client::unexpected)?;
                Ok((K::decode(k)?, V::decode(v)?))
            })
        });
        match popped {
            Err(multiproc_runtime::Error::KeyNotFound(_)) => Err(
                multiproc_runtime::Error::KeyNotFound("popitem(): dictionary is empty".into()),
            ),
            r => r,
        }
    }

    /// Inserts every pair, in one round trip (Python's `d.update(pairs)`).
    pub fn update(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return {
                    let mut encoded = Vec::new();
                    for (k, v) in pairs {
                        encoded.push((k.encode_stored()?.to_vec(), v.encode_stored()?.to_vec()));
                    }
                    r.update(&encoded)
                };
            }
        };
        // The pairs live until the call returns (see `ListProxy::extend`).
        let pairs: Vec<(K, V)> = pairs.into_iter().collect();
        let mut encoded = Vec::new();
        for (k, v) in &pairs {
            encoded.push(core.encode(k)?);
            encoded.push(core.encode(v)?);
        }
        let args = Args {
            batch: encoded.iter().map(|e| e.blob()).collect(),
            ..Args::default()
        };
        core.call(Method::DictUpdate, args, read_unit)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return r.clear();
            }
        };
        core.call(Method::DictClear, Args::default(), read_unit)
    }

    /// The value for `key`, inserting `default` first if absent (Python's `setdefault`).
    pub fn setdefault(&self, key: K, default: V) -> Result<V> {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return V::decode(&r.setdefault(&key.encode_stored()?, &default.encode_stored()?)?);
            }
        };
        let (k, v) = (core.encode(&key)?, core.encode(&default)?);
        let args = Args {
            key: Some(k.blob()),
            value: Some(v.blob()),
            ..Args::default()
        };
        core.call(Method::DictSetDefault, args, read_value)?
            .ok_or_else(crate::client::unexpected)
    }

    /// Atomically replaces the value for `key` (or `default`, if absent) with
    /// `f(value)`, and returns the new value: `d[k] += 1` that loses nothing
    /// when many processes do it at once.
    ///
    /// Built as a compare-and-swap loop on the encoded bytes: the server
    /// stores the new value only if the current one is still the one `f`
    /// saw, otherwise `f` runs again on the newer value. `f` may therefore
    /// run more than once, and should have no other effects.
    pub fn update_with(&self, key: K, default: V, mut f: impl FnMut(V) -> V) -> Result<V>
    where
        V: Clone,
    {
        let core = match &self.flavor {
            DictFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            DictFlavor::Redis(r) => {
                return redis_update_with(r, &key, default, f);
            }
        };
        let k = core.encode(&key)?;
        let args = Args {
            key: Some(k.blob()),
            ..Args::default()
        };
        let mut current: Option<(Vec<u8>, V)> = core.call(Method::DictGet, args, read_value_raw)?;
        loop {
            let (expected, old) = match current.take() {
                Some((bytes, v)) => (Some(bytes), v),
                None => (None, default.clone()),
            };
            let new = f(old);
            let n = core.encode(&new)?;
            let args = Args {
                key: Some(k.blob()),
                value: Some(n.blob()),
                expected: expected
                    .as_deref()
                    .map(multiproc_runtime::manager::protocol::Blob::plain),
                ..Args::default()
            };
            match core.call(Method::DictCompareAndSwap, args, read_swap)? {
                Swap::Done => return Ok(new),
                Swap::Failed(now) => current = now,
            }
        }
    }
}

/// `update_with` on a Redis hash: a compare-and-swap loop, each swap one
/// script that stores the new value only if the old one is still there.
#[cfg(feature = "redis")]
fn redis_update_with<K: Shareable, V: Shareable + Clone>(
    r: &RedisDict,
    key: &K,
    default: V,
    mut f: impl FnMut(V) -> V,
) -> Result<V> {
    let k = key.encode_stored()?;
    let mut current = r.get(&k)?;
    loop {
        let old = match &current {
            Some(b) => V::decode(b)?,
            None => default.clone(),
        };
        let new = f(old);
        let n = new.encode_stored()?;
        match r.compare_and_swap(&k, current.as_deref(), &n)? {
            Swapped::Done => return Ok(new),
            Swapped::Failed(now) => current = now,
        }
    }
}
