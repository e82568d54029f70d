//! `ListProxy<T>`: a list that lives in the manager's server.

use std::marker::PhantomData;
use std::sync::Arc;

use multiproc_runtime::manager::protocol::Method;
use multiproc_runtime::{Error, Result, Shareable};

use crate::core::{
    Args, Proxy, ProxyCore, TypeTag, impl_proxy, read_bool, read_len, read_many, read_unit,
    read_value,
};

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
    core: Arc<ProxyCore>,
    _types: PhantomData<fn() -> T>,
}

impl<T> Clone for ListProxy<T> {
    fn clone(&self) -> Self {
        ListProxy {
            core: self.core.clone(),
            _types: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for ListProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

impl<T: Shareable> Proxy for ListProxy<T> {
    fn core(&self) -> &ProxyCore {
        &self.core
    }
    fn from_core(core: ProxyCore) -> Self {
        ListProxy {
            core: Arc::new(core),
            _types: PhantomData,
        }
    }
    fn tag() -> TypeTag {
        TypeTag::new(format!("ListProxy<{}>", std::any::type_name::<T>()))
    }
}

impl_proxy!(impl<T> for ListProxy<T>);

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
        let v = self.core.encode(&value)?;
        let args = Args {
            value: Some(v.blob()),
            ..Args::default()
        };
        self.core.call(Method::ListPush, args, read_unit)
    }

    /// Appends every value, in one round trip.
    pub fn extend(&self, values: impl IntoIterator<Item = T>) -> Result<()> {
        let encoded = values
            .into_iter()
            .map(|v| self.core.encode(&v))
            .collect::<Result<Vec<_>>>()?;
        let args = Args {
            batch: encoded.iter().map(|e| e.blob()).collect(),
            ..Args::default()
        };
        self.core.call(Method::ListExtend, args, read_unit)
    }

    /// A copy of element `index`; `Err(IndexOutOfRange)` past the end.
    pub fn get(&self, index: usize) -> Result<T> {
        let args = Args {
            index: self.index_arg(index)?,
            ..Args::default()
        };
        self.core
            .call(Method::ListGet, args, read_value)?
            .ok_or_else(crate::client::unexpected)
    }

    /// Overwrites element `index`; `Err(IndexOutOfRange)` past the end.
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        let v = self.core.encode(&value)?;
        let args = Args {
            index: self.index_arg(index)?,
            value: Some(v.blob()),
            ..Args::default()
        };
        self.core.call(Method::ListSet, args, read_unit)
    }

    /// Inserts `value` before `index` (`index == len` appends); `Err(IndexOutOfRange)` beyond.
    pub fn insert(&self, index: usize, value: T) -> Result<()> {
        let v = self.core.encode(&value)?;
        let args = Args {
            index: self.index_arg(index)?,
            value: Some(v.blob()),
            ..Args::default()
        };
        self.core.call(Method::ListInsert, args, read_unit)
    }

    /// Removes and returns the last element; `None` if the list is empty.
    pub fn pop(&self) -> Result<Option<T>> {
        let args = Args {
            index: -1,
            ..Args::default()
        };
        self.core.call(Method::ListPop, args, read_value)
    }

    /// Removes and returns element `index`; `Err(IndexOutOfRange)` past the end.
    pub fn pop_at(&self, index: usize) -> Result<T> {
        let args = Args {
            index: self.index_arg(index)?,
            ..Args::default()
        };
        self.core
            .call(Method::ListPop, args, read_value)?
            .ok_or_else(crate::client::unexpected)
    }

    /// Removes the first element equal to `value` (by encoded bytes); whether one was.
    pub fn remove(&self, value: &T) -> Result<bool> {
        let v = self.core.encode(value)?;
        let args = Args {
            value: Some(v.blob()),
            ..Args::default()
        };
        self.core.call(Method::ListRemove, args, read_bool)
    }

    /// The position of the first element equal to `value`, if any.
    pub fn index(&self, value: &T) -> Result<Option<usize>> {
        let v = self.core.encode(value)?;
        let args = Args {
            value: Some(v.blob()),
            ..Args::default()
        };
        match self.core.call(Method::ListIndex, args, read_len) {
            Ok(i) => Ok(Some(i)),
            Err(Error::KeyNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The number of elements.
    pub fn len(&self) -> Result<usize> {
        self.core.call(Method::ListLen, Args::default(), read_len)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reverses the list in place.
    pub fn reverse(&self) -> Result<()> {
        self.core
            .call(Method::ListReverse, Args::default(), read_unit)
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<()> {
        self.core
            .call(Method::ListClear, Args::default(), read_unit)
    }

    /// A snapshot of the whole list.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.core
            .call(Method::ListSnapshot, Args::default(), |conn, r| {
                read_many(conn, r, |items| items.map(T::decode).collect())
            })
    }

    /// An iterator over a snapshot of the list (later changes are not seen).
    pub fn iter(&self) -> Result<std::vec::IntoIter<T>> {
        self.to_vec().map(Vec::into_iter)
    }
}
