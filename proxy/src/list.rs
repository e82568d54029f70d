//! `ListProxy<T>`: a list that lives in the manager's server.
// Without the `redis` feature each method's flavour `match` has one arm.
#![cfg_attr(not(feature = "redis"), allow(clippy::infallible_destructuring_match))]

use std::marker::PhantomData;
use std::sync::Arc;

use std::cmp::Ordering;
use std::ops::{Bound, RangeBounds};
use std::time::Duration;

use multiproc_runtime::deadline::Deadline;
use multiproc_runtime::manager::protocol::{Blob, Method, list_digest, u64_arg};
use multiproc_runtime::{Error, Result, Shareable};

#[cfg(feature = "redis")]
use crate::EncodeForRedis;
use multiproc_runtime::handle::{FlavorRepr, FlavoredHandle};
use multiproc_runtime::manager::core::RemoteFlavor;
#[cfg(feature = "redis")]
use multiproc_runtime::redis::{RedisList, RedisObject, RedisTarget};

use crate::core::{
    Args, ProxyCore, TypeTag, read_bool, read_len, read_many, read_unit, read_value,
};
use crate::not_a_container;

/// How long [`ListProxy::sort`], [`ListProxy::sort_by`] and
/// [`ListProxy::sort_by_key`] try to find the list holding still while
/// other clients change it, before they fail with [`Error::Timeout`].
pub const SORT_TIMEOUT: Duration = Duration::from_secs(60);

/// A proxy to a list owned by a manager server (Python's `manager.list()`).
///
/// Values are compared by their encoded bytes (`remove`, `index`), so the
/// same canonical-encoding rule as for [`DictProxy`](crate::DictProxy) keys applies.
///
/// ```
/// multiproc::init();
/// let manager = multiproc::Manager::start().unwrap();
/// let l = manager.list::<u32>().unwrap();
/// l.extend([1, 2, 3]).unwrap();
/// l.push(4).unwrap();
/// assert_eq!(l.pop().unwrap(), Some(4));
/// assert_eq!(l.to_vec().unwrap(), vec![1, 2, 3]);
/// assert!(matches!(l.get(7), Err(multiproc::Error::IndexOutOfRange { index: 7, len: 3 })));
/// manager.shutdown().unwrap();
/// ```
pub struct ListProxy<T> {
    flavor: ListFlavor,
    _types: PhantomData<fn() -> T>,
}

/// Where a [`ListProxy`]'s list lives.
enum ListFlavor {
    /// In a manager's server.
    Remote(Arc<ProxyCore>),
    /// In a Redis list.
    #[cfg(feature = "redis")]
    Redis(multiproc_runtime::redis::RedisList),
}

impl<T> Clone for ListProxy<T> {
    fn clone(&self) -> Self {
        ListProxy {
            flavor: match &self.flavor {
                ListFlavor::Remote(core) => ListFlavor::Remote(core.clone()),
                #[cfg(feature = "redis")]
                ListFlavor::Redis(r) => ListFlavor::Redis(r.clone()),
            },
            _types: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for ListProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.flavor {
            ListFlavor::Remote(core) => core.fmt(f),
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => f.debug_tuple("ListProxy").field(r.object()).finish(),
        }
    }
}

impl<T: Shareable> ListProxy<T> {
    /// The types a list records (in its server, or in Redis).
    fn type_tag() -> TypeTag {
        TypeTag::new(format!("ListProxy<{}>", std::any::type_name::<T>()))
    }

    /// The list `name` kept under `target` in Redis (a `RedisManager`'s).
    #[cfg(feature = "redis")]
    pub(crate) fn redis(target: &RedisTarget, name: &str) -> Result<Self> {
        let obj = RedisObject::open(target, "list", name, Self::type_tag().name)?;
        Ok(ListProxy {
            flavor: ListFlavor::Redis(RedisList::new(obj)),
            _types: PhantomData,
        })
    }
}

impl<T: Shareable> RemoteFlavor for ListProxy<T> {
    fn remote_tag() -> TypeTag {
        Self::type_tag()
    }
    fn from_remote(core: ProxyCore) -> Result<Self> {
        Ok(ListProxy {
            flavor: ListFlavor::Remote(Arc::new(core)),
            _types: PhantomData,
        })
    }
}

impl<T: Shareable> FlavoredHandle for ListProxy<T> {
    fn to_flavor_repr(&self) -> Result<FlavorRepr> {
        match &self.flavor {
            ListFlavor::Remote(core) => core.to_repr().map(FlavorRepr::Remote),
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => Ok(FlavorRepr::Redis(r.object().to_repr())),
        }
    }

    fn from_flavor_repr(repr: &FlavorRepr) -> Result<Self> {
        match repr {
            FlavorRepr::Remote(p) => {
                ProxyCore::from_repr(p, Self::type_tag()).and_then(Self::from_remote)
            }
            #[cfg(feature = "redis")]
            FlavorRepr::Redis(r) => {
                RedisObject::from_repr(r, "list", Self::type_tag().name).map(|obj| ListProxy {
                    flavor: ListFlavor::Redis(RedisList::new(obj)),
                    _types: PhantomData,
                })
            }
            other => Err(not_a_container("ListProxy", other)),
        }
    }
}

multiproc_runtime::impl_flavored_handle!(impl<T: Shareable> for ListProxy<T>);

impl<T: Shareable> ListProxy<T> {
    /// `index` as the server takes it; one past any list's length is out of
    /// range, reported with the list's real length.
    fn index_arg(&self, index: usize) -> Result<i64> {
        match i64::try_from(index) {
            Ok(i) => Ok(i),
            Err(_) => Err(Error::IndexOutOfRange {
                index,
                len: self.len()?,
            }),
        }
    }

    /// Appends `value` (Python's `append`).
    pub fn push(&self, value: T) -> Result<()> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return r.extend(&[value.encode_stored()?.to_vec()]);
            }
        };
        let v = core.encode(&value)?;
        let args = Args {
            value: Some(v.blob()),
            ..Args::default()
        };
        core.call(Method::ListPush, args, read_unit)
    }

    /// Appends every value, in one round trip.
    pub fn extend(&self, values: impl IntoIterator<Item = T>) -> Result<()> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return {
                    let encoded = values
                        .into_iter()
                        .map(|v| v.encode_stored().map(|b| b.to_vec()))
                        .collect::<Result<Vec<_>>>()?;
                    r.extend(&encoded)
                };
            }
        };
        // The values live until the call returns: a proxy among them,
        // dropped once encoded, would release its object before the
        // server took the list's reference to it.
        let values: Vec<T> = values.into_iter().collect();
        let encoded = values
            .iter()
            .map(|v| core.encode(v))
            .collect::<Result<Vec<_>>>()?;
        let args = Args {
            batch: encoded.iter().map(|e| e.blob()).collect(),
            ..Args::default()
        };
        core.call(Method::ListExtend, args, read_unit)
    }

    /// A copy of element `index`; `Err(IndexOutOfRange)` past the end.
    pub fn get(&self, index: usize) -> Result<T> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return T::decode(&r.get(redis_index(r, index)?)?);
            }
        };
        let args = Args {
            index: self.index_arg(index)?,
            ..Args::default()
        };
        core.call(Method::ListGet, args, read_value)?
            .ok_or_else(crate::client::unexpected)
    }

    /// Overwrites element `index`; `Err(IndexOutOfRange)` past the end.
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return r.set(redis_index(r, index)?, &value.encode_stored()?);
            }
        };
        let v = core.encode(&value)?;
        let args = Args {
            index: self.index_arg(index)?,
            value: Some(v.blob()),
            ..Args::default()
        };
        core.call(Method::ListSet, args, read_unit)
    }

    /// Inserts `value` before `index` (`index == len` appends); `Err(IndexOutOfRange)` beyond.
    pub fn insert(&self, index: usize, value: T) -> Result<()> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return {
                    let v = value.encode_stored()?.to_vec();
                    r.rewrite(|items| {
                        if index > items.len() {
                            return Err(Error::IndexOutOfRange {
                                index,
                                len: items.len(),
                            });
                        }
                        items.insert(index, v.clone());
                        Ok(((), true))
                    })
                };
            }
        };
        let v = core.encode(&value)?;
        let args = Args {
            index: self.index_arg(index)?,
            value: Some(v.blob()),
            ..Args::default()
        };
        core.call(Method::ListInsert, args, read_unit)
    }

    /// Removes and returns the last element; `None` if the list is empty.
    pub fn pop(&self) -> Result<Option<T>> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return r.pop_last()?.map(|b| T::decode(&b)).transpose();
            }
        };
        let args = Args {
            index: -1,
            ..Args::default()
        };
        core.call(Method::ListPop, args, read_value)
    }

    /// Removes and returns element `index`; `Err(IndexOutOfRange)` past the end.
    pub fn pop_at(&self, index: usize) -> Result<T> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return T::decode(&r.rewrite(|items| {
                    if index >= items.len() {
                        return Err(Error::IndexOutOfRange {
                            index,
                            len: items.len(),
                        });
                    }
                    Ok((items.remove(index), true))
                })?);
            }
        };
        let args = Args {
            index: self.index_arg(index)?,
            ..Args::default()
        };
        core.call(Method::ListPop, args, read_value)?
            .ok_or_else(crate::client::unexpected)
    }

    /// Removes the first element equal to `value` (by encoded bytes); whether one was.
    pub fn remove(&self, value: &T) -> Result<bool> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return {
                    let v = value.encode_stored()?;
                    r.rewrite(|items| match items.iter().position(|i| i[..] == v[..]) {
                        Some(at) => {
                            items.remove(at);
                            Ok((true, true))
                        }
                        None => Ok((false, false)),
                    })
                };
            }
        };
        let v = core.encode(value)?;
        let args = Args {
            value: Some(v.blob()),
            ..Args::default()
        };
        core.call(Method::ListRemove, args, read_bool)
    }

    /// The position of the first element equal to `value`, if any.
    pub fn index(&self, value: &T) -> Result<Option<usize>> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return {
                    let v = value.encode_stored()?;
                    Ok(r.to_vec()?.iter().position(|i| i[..] == v[..]))
                };
            }
        };
        let v = core.encode(value)?;
        let args = Args {
            value: Some(v.blob()),
            ..Args::default()
        };
        match core.call(Method::ListIndex, args, read_len) {
            Ok(i) => Ok(Some(i)),
            Err(Error::KeyNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The number of elements.
    pub fn len(&self) -> Result<usize> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return r.len();
            }
        };
        core.call(Method::ListLen, Args::default(), read_len)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reverses the list in place.
    pub fn reverse(&self) -> Result<()> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return r.rewrite(|items| {
                    items.reverse();
                    Ok(((), true))
                });
            }
        };
        core.call(Method::ListReverse, Args::default(), read_unit)
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<()> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return r.clear();
            }
        };
        core.call(Method::ListClear, Args::default(), read_unit)
    }

    /// `index` counting from the end when negative, as Python's `l[-1]`.
    fn signed_arg(index: isize) -> i64 {
        // isize is at most 64 bits on every target Rust supports here.
        index as i64
    }

    /// A copy of element `index`, counting from the end when negative
    /// (`get_signed(-1)` is the last, Python's `l[-1]`);
    /// `Err(IndexOutOfRange)` outside the list (a negative index, which
    /// `usize` cannot carry, is reported as `index: usize::MAX`).
    pub fn get_signed(&self, index: isize) -> Result<T> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return T::decode(&r.get(Self::signed_arg(index))?);
            }
        };
        let args = Args {
            index: Self::signed_arg(index),
            ..Args::default()
        };
        core.call(Method::ListGet, args, read_value)?
            .ok_or_else(crate::client::unexpected)
    }

    /// Overwrites element `index`, counting from the end when negative;
    /// `Err(IndexOutOfRange)` outside the list.
    pub fn set_signed(&self, index: isize, value: T) -> Result<()> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return r.set(Self::signed_arg(index), &value.encode_stored()?);
            }
        };
        let v = core.encode(&value)?;
        let args = Args {
            index: Self::signed_arg(index),
            value: Some(v.blob()),
            ..Args::default()
        };
        core.call(Method::ListSet, args, read_unit)
    }

    /// Removes and returns element `index`, counting from the end when
    /// negative (`pop_signed(-1)` is [`ListProxy::pop`] on a non-empty list);
    /// `Err(IndexOutOfRange)` outside the list, an empty one included.
    pub fn pop_signed(&self, index: isize) -> Result<T> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return T::decode(&r.rewrite(|items| {
                    let len = items.len();
                    let at = if index < 0 {
                        index.checked_add_unsigned(len).filter(|i| *i >= 0)
                    } else {
                        Some(index).filter(|i| i.unsigned_abs() < len)
                    };
                    match at {
                        Some(at) => Ok((items.remove(at.unsigned_abs()), true)),
                        None => Err(Error::IndexOutOfRange {
                            index: usize::try_from(index).unwrap_or(usize::MAX),
                            len,
                        }),
                    }
                })?);
            }
        };
        if index == -1 {
            // The server reads -1 as "the last, if any" (`pop`).
            return self.pop()?.ok_or(Error::IndexOutOfRange {
                index: usize::MAX,
                len: 0,
            });
        }
        let args = Args {
            index: Self::signed_arg(index),
            ..Args::default()
        };
        core.call(Method::ListPop, args, read_value)?
            .ok_or_else(crate::client::unexpected)
    }

    /// The range as the server takes it: `(start, end)`, `end` `u64::MAX`
    /// for "to the end"; `Err(InvalidArgument)` if it ends before it starts.
    fn range_args(&self, range: &impl RangeBounds<usize>) -> Result<(i64, u64)> {
        let overflow = || Error::InvalidArgument("the range's bounds overflow usize".into());
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.checked_add(1).ok_or_else(overflow)?,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Some(e.checked_add(1).ok_or_else(overflow)?),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        if let Some(end) = end
            && start > end
        {
            return Err(Error::InvalidArgument(format!(
                "the range {start}..{end} ends before it starts"
            )));
        }
        let start = self.index_arg(start)?;
        Ok((start, end.map_or(u64::MAX, |e| e as u64)))
    }

    /// Copies of the elements in `range` (Python's `l[a:b]`, without its
    /// clamping): `Err(IndexOutOfRange)` if the range reaches past the end,
    /// `Err(InvalidArgument)` if it ends before it starts. One round trip.
    ///
    /// ```
    /// multiproc::init();
    /// let manager = multiproc::Manager::start().unwrap();
    /// let l = manager.list_from(vec![0u8, 1, 2, 3, 4]).unwrap();
    /// assert_eq!(l.get_range(1..3).unwrap(), vec![1, 2]);
    /// assert_eq!(l.get_range(3..).unwrap(), vec![3, 4]);
    /// l.set_range(1..4, [9]).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![0, 9, 4]);
    /// assert!(matches!(l.get_range(2..7), Err(multiproc::Error::IndexOutOfRange { index: 7, len: 3 })));
    /// manager.shutdown().unwrap();
    /// ```
    pub fn get_range(&self, range: impl RangeBounds<usize>) -> Result<Vec<T>> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return {
                    let (start, end) = self.range_args(&range)?;
                    let items = r.to_vec()?;
                    let (start, end) = checked_range(start, end, items.len())?;
                    items[start..end].iter().map(|b| T::decode(b)).collect()
                };
            }
        };
        let (start, end) = self.range_args(&range)?;
        let end = u64_arg(end);
        let args = Args {
            index: start,
            key: Some(Blob::plain(&end)),
            ..Args::default()
        };
        core.call(Method::ListGetRange, args, |conn, r| {
            read_many(conn, r, |items| items.map(T::decode).collect())
        })
    }

    /// Replaces the elements in `range` by `values`, which may be more or
    /// fewer (Python's `l[a:b] = values`), in one step no other client sees
    /// half done. Bad ranges as for [`ListProxy::get_range`], changing nothing.
    pub fn set_range(
        &self,
        range: impl RangeBounds<usize>,
        values: impl IntoIterator<Item = T>,
    ) -> Result<()> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return {
                    let (start, end) = self.range_args(&range)?;
                    let encoded = values
                        .into_iter()
                        .map(|v| v.encode_stored().map(|b| b.to_vec()))
                        .collect::<Result<Vec<_>>>()?;
                    r.rewrite(|items| {
                        let (start, end) = checked_range(start, end, items.len())?;
                        items.splice(start..end, encoded.iter().cloned());
                        Ok(((), true))
                    })
                };
            }
        };
        let (start, end) = self.range_args(&range)?;
        // The values live until the call returns: a proxy among them,
        // dropped once encoded, would release its object before the
        // server took the list's reference to it.
        let values: Vec<T> = values.into_iter().collect();
        let encoded = values
            .iter()
            .map(|v| core.encode(v))
            .collect::<Result<Vec<_>>>()?;
        let end = u64_arg(end);
        let args = Args {
            index: start,
            key: Some(Blob::plain(&end)),
            batch: encoded.iter().map(|e| e.blob()).collect(),
            ..Args::default()
        };
        core.call(Method::ListSetRange, args, read_unit)
    }

    /// Whether some element equals `value` (by encoded bytes; Python's `in`).
    pub fn contains(&self, value: &T) -> Result<bool> {
        Ok(self.index(value)?.is_some())
    }

    /// How many elements equal `value` (by encoded bytes).
    pub fn count(&self, value: &T) -> Result<usize> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return {
                    let v = value.encode_stored()?;
                    Ok(r.to_vec()?.iter().filter(|i| i[..] == v[..]).count())
                };
            }
        };
        let v = core.encode(value)?;
        let args = Args {
            value: Some(v.blob()),
            ..Args::default()
        };
        core.call(Method::ListCount, args, read_len)
    }

    /// Appends copies of every element of `other` (Python's
    /// `l.extend(other_proxy)`): a snapshot of `other`, then one append, so
    /// `l.extend_from(&l)` doubles `l`. `other` may live in another manager.
    pub fn extend_from(&self, other: &ListProxy<T>) -> Result<()> {
        self.extend(other.to_vec()?)
    }

    /// Sorts the list in ascending order, stably (Python's `l.sort()`).
    ///
    /// The server never decodes values, so the order is computed here from
    /// a snapshot and the server applies it, only if the list is still that
    /// snapshot; otherwise this sorts the newer list again. Other clients
    /// never see a half-sorted list, and nothing is copied back and forth
    /// but the snapshot and the new positions.
    ///
    /// While other clients keep changing the list a sort may never find it
    /// still: it tries again for at most [`SORT_TIMEOUT`], then fails with
    /// [`Error::Timeout`] and leaves the list as the others made it. Choose
    /// the bound with [`ListProxy::sort_timeout`].
    ///
    /// ```
    /// multiproc::init();
    /// let manager = multiproc::Manager::start().unwrap();
    /// let l = manager.list_from(vec![3i32, -1, 2]).unwrap();
    /// l.sort().unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![-1, 2, 3]);
    /// l.sort_by_key(|v| v.abs()).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![-1, 2, 3]);
    /// l.sort_by(|a, b| b.cmp(a)).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![3, 2, -1]);
    /// manager.shutdown().unwrap();
    /// ```
    pub fn sort(&self) -> Result<()>
    where
        T: Ord,
    {
        self.sort_by(T::cmp)
    }

    /// As [`ListProxy::sort`], giving up with [`Error::Timeout`] once
    /// `timeout` has passed without the list holding still for one attempt
    /// (at least one attempt is made, however short `timeout` is).
    pub fn sort_timeout(&self, timeout: Duration) -> Result<()>
    where
        T: Ord,
    {
        self.sort_by_timeout(timeout, T::cmp)
    }

    /// Sorts the list by `key`, stably (Python's `l.sort(key=…)`); see
    /// [`ListProxy::sort`]. `key` may run more than once per element.
    pub fn sort_by_key<K: Ord>(&self, mut key: impl FnMut(&T) -> K) -> Result<()> {
        self.sort_by(|a, b| key(a).cmp(&key(b)))
    }

    /// As [`ListProxy::sort_by_key`], giving up with [`Error::Timeout`] once
    /// `timeout` has passed without the list holding still for one attempt.
    pub fn sort_by_key_timeout<K: Ord>(
        &self,
        timeout: Duration,
        mut key: impl FnMut(&T) -> K,
    ) -> Result<()> {
        self.sort_by_timeout(timeout, |a, b| key(a).cmp(&key(b)))
    }

    /// Sorts the list with `compare`, stably; see [`ListProxy::sort`]
    /// (`l.sort(reverse=True)` is `l.sort_by(|a, b| b.cmp(a))`).
    pub fn sort_by(&self, compare: impl FnMut(&T, &T) -> Ordering) -> Result<()> {
        self.sort_by_timeout(SORT_TIMEOUT, compare)
    }

    /// As [`ListProxy::sort_by`], giving up with [`Error::Timeout`] once
    /// `timeout` has passed without the list holding still for one attempt.
    pub fn sort_by_timeout(
        &self,
        timeout: Duration,
        mut compare: impl FnMut(&T, &T) -> Ordering,
    ) -> Result<()> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return {
                    let deadline = Deadline::after(timeout);
                    let mut tried = false;
                    r.rewrite(|items| {
                        if tried && deadline.expired() {
                            return Err(deadline.timeout_error());
                        }
                        tried = true;
                        let values = items
                            .iter()
                            .map(|b| T::decode(b))
                            .collect::<Result<Vec<T>>>()?;
                        let mut order: Vec<usize> = (0..values.len()).collect();
                        order.sort_by(|&a, &b| compare(&values[a], &values[b]));
                        if order.iter().enumerate().all(|(i, &o)| i == o) {
                            return Ok(((), false));
                        }
                        *items = order.iter().map(|&i| items[i].clone()).collect();
                        Ok(((), true))
                    })
                };
            }
        };
        let deadline = Deadline::after(timeout);
        loop {
            let (digest, values) =
                core.call(Method::ListSnapshot, Args::default(), |conn, r| {
                    read_many(conn, r, |items| {
                        let raw: Vec<&[u8]> = items.collect();
                        let values = raw
                            .iter()
                            .map(|b| T::decode(b))
                            .collect::<Result<Vec<T>>>()?;
                        Ok((list_digest(raw), values))
                    })
                })?;
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by(|&a, &b| compare(&values[a], &values[b]));
            if order.iter().enumerate().all(|(i, &o)| i == o) {
                return Ok(());
            }
            let positions: Vec<[u8; 8]> = order.iter().map(|&i| u64_arg(i as u64)).collect();
            let args = Args {
                expected: Some(Blob::plain(&digest)),
                batch: positions.iter().map(|p| Blob::plain(p)).collect(),
                ..Args::default()
            };
            if core.call(Method::ListApplyOrder, args, read_bool)? {
                return Ok(());
            }
            // Another client changed the list since the snapshot.
            if deadline.expired() {
                return Err(deadline.timeout_error());
            }
        }
    }

    /// A snapshot of the whole list.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let core = match &self.flavor {
            ListFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            ListFlavor::Redis(r) => {
                return r.to_vec()?.iter().map(|b| T::decode(b)).collect();
            }
        };
        core.call(Method::ListSnapshot, Args::default(), |conn, r| {
            read_many(conn, r, |items| items.map(T::decode).collect())
        })
    }

    /// An iterator over a snapshot of the list (later changes are not seen).
    pub fn iter(&self) -> Result<std::vec::IntoIter<T>> {
        self.to_vec().map(Vec::into_iter)
    }
}

/// `index` as a Redis list's index (the list's length if it cannot be one).
#[cfg(feature = "redis")]
fn redis_index(r: &RedisList, index: usize) -> Result<i64> {
    i64::try_from(index).map_err(|_| match r.len() {
        Ok(len) => Error::IndexOutOfRange { index, len },
        Err(e) => e,
    })
}

/// The range `start..end` (`end` `u64::MAX`: to the end) within a list of
/// `len`, or `IndexOutOfRange` as the server reports it.
#[cfg(feature = "redis")]
fn checked_range(start: i64, end: u64, len: usize) -> Result<(usize, usize)> {
    let end = if end == u64::MAX {
        len
    } else {
        usize::try_from(end).unwrap_or(usize::MAX)
    };
    let start = usize::try_from(start).unwrap_or(usize::MAX);
    if end > len {
        return Err(Error::IndexOutOfRange { index: end, len });
    }
    if start > end {
        return Err(Error::IndexOutOfRange { index: start, len });
    }
    Ok((start, end))
}
