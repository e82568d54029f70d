//! [`Value`]: the Python values a Rust program shares with Python workers,
//! and its conversions to and from ordinary Rust types.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Deserialize, Place, Portable, Serialize};

use crate::error::{Error, Result};
use crate::py::pickle::{self, Limits};

/// A Python value of the kinds a Python worker and a Rust program exchange:
/// `None`, `bool`, `int` (64-bit), `float`, `str`, `bytes`, `tuple`, `list`
/// and `dict` (insertion order kept).
///
/// It is what a queue served to Python clients holds (see
/// [`crate::py`]): a Rust client reaches the same queue as a queue of
/// `Value`. Convert with `From` / `TryFrom`:
///
/// ```
/// use multiproc::py::Value;
/// let task = Value::from((7i64, "square"));
/// assert_eq!(task, Value::Tuple(vec![Value::Int(7), Value::Str("square".into())]));
/// let (n, op): (i64, String) = task.try_into().unwrap();
/// assert_eq!((n, op.as_str()), (7, "square"));
/// // Anything else names the type it found.
/// let err = i64::try_from(Value::Str("x".into())).unwrap_err();
/// assert!(err.to_string().contains("str"));
/// ```
///
/// A `Value` travels between Rust processes as its pickle (the same bytes a
/// Python client sends), so decoding one is bounded as a network read is:
/// nesting deeper than [`Limits::default`]'s depth is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Python's `None`.
    None,
    /// `bool`.
    Bool(bool),
    /// `int` in the 64-bit range (larger ones are refused when read).
    Int(i64),
    /// `float`.
    Float(f64),
    /// `str` (a Python string with a lone surrogate is refused when read).
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `tuple`.
    Tuple(Vec<Value>),
    /// `list`.
    List(Vec<Value>),
    /// `dict`, as its `(key, value)` pairs in insertion order. Keys must be
    /// hashable in Python (no list or dict, not even inside a tuple).
    Dict(Vec<(Value, Value)>),
}

impl Value {
    /// The Python name of the value's type (`"int"`, `"NoneType"`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
        }
    }

    /// Python's truth value (`bool(x)`).
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Bytes(b) => !b.is_empty(),
            Value::Tuple(v) | Value::List(v) => !v.is_empty(),
            Value::Dict(d) => !d.is_empty(),
        }
    }

    /// The value of `key` in a dict (compared as Rust values: `1` and
    /// `True` are different keys here), or `None`.
    pub fn get(&self, key: &Value) -> Option<&Value> {
        match self {
            Value::Dict(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The int, if this is one (a `bool` is not).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The string, if this is a `str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn as_items(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// Python's `bytes` from anything byte-like (`Value::from(vec)` makes a list).
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(b.into())
    }
}

fn mismatch(expected: &str, found: &Value) -> Error {
    Error::TypeMismatch {
        expected: expected.to_string(),
        found: found.type_name().to_string(),
    }
}

// ---- Rust → Value ----

impl From<()> for Value {
    fn from((): ()) -> Value {
        Value::None
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

macro_rules! from_small_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(i: $t) -> Value {
                Value::Int(i64::from(i))
            }
        }
    )*};
}
from_small_int!(i8, i16, i32, i64, u8, u16, u32);

macro_rules! try_from_big_int {
    ($($t:ty),*) => {$(
        impl TryFrom<$t> for Value {
            type Error = Error;
            /// Ints above `i64::MAX` are refused ([`Error::InvalidArgument`]).
            fn try_from(i: $t) -> Result<Value> {
                i64::try_from(i).map(Value::Int).map_err(|_| {
                    Error::InvalidArgument(format!("{i} does not fit a 64-bit Python int"))
                })
            }
        }
    )*};
}
try_from_big_int!(u64, usize, i128, u128);

impl From<isize> for Value {
    fn from(i: isize) -> Value {
        Value::Int(i as i64)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}

impl From<f32> for Value {
    fn from(f: f32) -> Value {
        Value::Float(f64::from(f))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(o: Option<T>) -> Value {
        o.map_or(Value::None, Into::into)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    /// A Python list (use [`Value::bytes`] for `bytes`).
    fn from(v: Vec<T>) -> Value {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

impl<K: Into<Value>, V: Into<Value>> From<BTreeMap<K, V>> for Value {
    fn from(m: BTreeMap<K, V>) -> Value {
        Value::Dict(m.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl<K: Into<Value>, V: Into<Value>, S> From<HashMap<K, V, S>> for Value {
    fn from(m: HashMap<K, V, S>) -> Value {
        Value::Dict(m.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

macro_rules! tuples {
    ($( ($($n:ident),+) )*) => {$(
        impl<$($n: Into<Value>),+> From<($($n,)+)> for Value {
            #[allow(non_snake_case)]
            fn from(($($n,)+): ($($n,)+)) -> Value {
                Value::Tuple(vec![$($n.into()),+])
            }
        }
        impl<$($n: TryFrom<Value, Error = Error>),+> TryFrom<Value> for ($($n,)+) {
            type Error = Error;
            /// From a tuple or list of exactly this many items.
            #[allow(non_snake_case)]
            fn try_from(v: Value) -> Result<Self> {
                const N: usize = [$(stringify!($n)),+].len();
                match v {
                    Value::Tuple(items) | Value::List(items) if items.len() == N => {
                        let mut it = items.into_iter();
                        $(let $n = $n::try_from(it.next().unwrap_or(Value::None))?;)+
                        Ok(($($n,)+))
                    }
                    other => Err(mismatch(&format!("a tuple of {N}"), &other)),
                }
            }
        }
    )*};
}
tuples! { (A) (A, B) (A, B, C) (A, B, C, D) (A, B, C, D, E) (A, B, C, D, E, F) }

// ---- Value → Rust ----

impl TryFrom<Value> for () {
    type Error = Error;
    fn try_from(v: Value) -> Result<()> {
        match v {
            Value::None => Ok(()),
            other => Err(mismatch("NoneType", &other)),
        }
    }
}

impl TryFrom<Value> for bool {
    type Error = Error;
    fn try_from(v: Value) -> Result<bool> {
        match v {
            Value::Bool(b) => Ok(b),
            other => Err(mismatch("bool", &other)),
        }
    }
}

macro_rules! try_into_int {
    ($($t:ty),*) => {$(
        impl TryFrom<Value> for $t {
            type Error = Error;
            /// From an `int` in range (a `bool` is not an int here).
            fn try_from(v: Value) -> Result<$t> {
                match v {
                    Value::Int(i) => <$t>::try_from(i).map_err(|_| {
                        Error::InvalidArgument(format!(
                            "{i} is out of range for {}",
                            std::any::type_name::<$t>()
                        ))
                    }),
                    other => Err(mismatch("int", &other)),
                }
            }
        }
    )*};
}
try_into_int!(
    i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize
);

impl TryFrom<Value> for f64 {
    type Error = Error;
    /// From a `float`, or an `int` (as Python would use it).
    fn try_from(v: Value) -> Result<f64> {
        match v {
            Value::Float(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            other => Err(mismatch("float", &other)),
        }
    }
}

impl TryFrom<Value> for String {
    type Error = Error;
    fn try_from(v: Value) -> Result<String> {
        match v {
            Value::Str(s) => Ok(s),
            other => Err(mismatch("str", &other)),
        }
    }
}

impl<T: TryFrom<Value, Error = Error>> TryFrom<Value> for Option<T> {
    type Error = Error;
    /// `None` from `None`, else the value converted.
    fn try_from(v: Value) -> Result<Option<T>> {
        match v {
            Value::None => Ok(None),
            other => T::try_from(other).map(Some),
        }
    }
}

impl<T: TryFrom<Value, Error = Error>> TryFrom<Value> for Vec<T> {
    type Error = Error;
    /// From a list or a tuple (use [`Value::Bytes`] directly for `bytes`).
    fn try_from(v: Value) -> Result<Vec<T>> {
        match v {
            Value::List(items) | Value::Tuple(items) => {
                items.into_iter().map(T::try_from).collect()
            }
            other => Err(mismatch("list", &other)),
        }
    }
}

impl<K, V> TryFrom<Value> for BTreeMap<K, V>
where
    K: TryFrom<Value, Error = Error> + Ord,
    V: TryFrom<Value, Error = Error>,
{
    type Error = Error;
    fn try_from(v: Value) -> Result<BTreeMap<K, V>> {
        match v {
            Value::Dict(pairs) => pairs
                .into_iter()
                .map(|(k, v)| Ok((K::try_from(k)?, V::try_from(v)?)))
                .collect(),
            other => Err(mismatch("dict", &other)),
        }
    }
}

impl<K, V> TryFrom<Value> for HashMap<K, V>
where
    K: TryFrom<Value, Error = Error> + Eq + Hash,
    V: TryFrom<Value, Error = Error>,
{
    type Error = Error;
    fn try_from(v: Value) -> Result<HashMap<K, V>> {
        match v {
            Value::Dict(pairs) => pairs
                .into_iter()
                .map(|(k, v)| Ok((K::try_from(k)?, V::try_from(v)?)))
                .collect(),
            other => Err(mismatch("dict", &other)),
        }
    }
}

// ---- Encoding between Rust processes ----
//
// A `Value` is archived as its pickle bytes. A derived recursive archive
// would be checked by recursion without a depth bound (a deep value from a
// peer could exhaust the stack); the pickle reader bounds depth and size.

/// The archived form of a [`Value`]: its pickle (protocol 4, data opcodes only).
#[derive(Portable, rkyv::bytecheck::CheckBytes)]
#[bytecheck(crate = rkyv::bytecheck)]
#[rkyv(crate = rkyv)]
#[repr(transparent)]
pub struct ArchivedValue {
    pickle: ArchivedVec<u8>,
}

impl ArchivedValue {
    /// The pickle bytes.
    pub fn pickle(&self) -> &[u8] {
        self.pickle.as_slice()
    }
}

/// Where a [`Value`]'s pickle was written while archiving.
pub struct ValueResolver {
    bytes: VecResolver,
    len: usize,
}

impl Archive for Value {
    type Archived = ArchivedValue;
    type Resolver = ValueResolver;

    fn resolve(&self, resolver: ValueResolver, out: Place<ArchivedValue>) {
        rkyv::munge::munge!(let ArchivedValue { pickle } = out);
        ArchivedVec::<u8>::resolve_from_len(resolver.len, resolver.bytes, pickle);
    }
}

impl<S> Serialize<S> for Value
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> std::result::Result<ValueResolver, S::Error> {
        let bytes = pickle::dumps(self).map_err(S::Error::new)?;
        let resolver = ArchivedVec::<u8>::serialize_from_slice(&bytes, serializer)?;
        Ok(ValueResolver {
            bytes: resolver,
            len: bytes.len(),
        })
    }
}

impl<D> Deserialize<Value, D> for ArchivedValue
where
    D: Fallible + ?Sized,
    D::Error: Source,
{
    fn deserialize(&self, _: &mut D) -> std::result::Result<Value, D::Error> {
        pickle::loads(self.pickle(), &Limits::default()).map_err(D::Error::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shareable;

    fn sample() -> Value {
        Value::Dict(vec![
            (Value::from("z"), Value::from(1)),
            (
                Value::from("a"),
                Value::from(vec![Value::None, Value::Bool(true)]),
            ),
            (
                Value::Tuple(vec![Value::Int(1), Value::from("k")]),
                Value::Float(-0.5),
            ),
            (Value::Int(-7), Value::bytes(&b"\x00\xff"[..])),
        ])
    }

    #[test]
    fn a_value_travels_between_rust_processes_with_order_and_types_kept() {
        let v = sample();
        let bytes = v.encode().unwrap();
        assert_eq!(Value::decode(&bytes).unwrap(), v);
        let many = Value::encode_many(&[v.clone(), Value::Int(i64::MIN)]).unwrap();
        assert_eq!(
            Value::decode_many(&many).unwrap(),
            vec![v, Value::Int(i64::MIN)]
        );
    }

    #[test]
    fn an_unencodable_value_is_a_codec_error_not_a_panic() {
        let bad = Value::Dict(vec![(Value::List(vec![]), Value::None)]);
        assert!(matches!(bad.encode(), Err(Error::Codec(m)) if m.contains("unhashable")));
        let mut deep = Value::None;
        for _ in 0..5000 {
            deep = Value::List(vec![deep]);
        }
        assert!(matches!(deep.encode(), Err(Error::Codec(_))));
        // Drop iteratively enough for the test thread: unwrap by hand.
        while let Value::List(mut v) = deep {
            deep = v.pop().unwrap_or(Value::None);
        }
    }

    #[test]
    fn conversions_name_the_type_they_found() {
        assert_eq!(i64::try_from(Value::Int(5)).unwrap(), 5);
        assert!(matches!(
            u8::try_from(Value::Int(300)),
            Err(Error::InvalidArgument(_))
        ));
        match bool::try_from(Value::Int(1)) {
            Err(Error::TypeMismatch { expected, found }) => {
                assert_eq!((expected.as_str(), found.as_str()), ("bool", "int"))
            }
            other => panic!("{other:?}"),
        }
        assert!(Value::try_from(u64::MAX).is_err());
        let v: Vec<Option<String>> = Value::from(vec![Some("a"), None]).try_into().unwrap();
        assert_eq!(v, vec![Some("a".to_string()), None]);
        let m: BTreeMap<String, i64> = Value::from(BTreeMap::from([("x", 1i64)]))
            .try_into()
            .unwrap();
        assert_eq!(m["x"], 1);
        let t: (i64, f64, String) = Value::from((1, 2.5, "s")).try_into().unwrap();
        assert_eq!(t, (1, 2.5, "s".into()));
        assert!(<(i64, i64)>::try_from(Value::from((1,))).is_err());
        assert_eq!(f64::try_from(Value::Int(2)).unwrap(), 2.0);
        assert_eq!(sample().get(&Value::from("z")), Some(&Value::Int(1)));
        assert!(!Value::List(vec![]).is_truthy() && Value::from("x").is_truthy());
    }
}
