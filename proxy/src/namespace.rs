//! `NamespaceProxy`: named, typed attributes that live in the manager's server.
// Without the `redis` feature each method's flavour `match` has one arm.
#![cfg_attr(not(feature = "redis"), allow(clippy::infallible_destructuring_match))]

use std::sync::Arc;

use multiproc_runtime::__internal::fingerprint_str;
use multiproc_runtime::manager::protocol::{Blob, Method};
use multiproc_runtime::{Error, Result, Shareable};

#[cfg(feature = "redis")]
use crate::EncodeForRedis;
use multiproc_runtime::handle::{FlavorRepr, FlavoredHandle};
use multiproc_runtime::manager::core::RemoteFlavor;
#[cfg(feature = "redis")]
use multiproc_runtime::redis::{RedisNamespace, RedisObject, RedisTarget};

use crate::core::{Args, ProxyCore, TypeTag, read_bool, read_many, read_unit, read_value};
use crate::not_a_container;

/// A proxy to a namespace owned by a manager server (Python's `manager.Namespace()`).
///
/// Each attribute remembers the type it was set with; reading it as another
/// type is `Err(TypeMismatch)` naming both.
///
/// ```
/// multiproc::init();
/// let manager = multiproc::Manager::start().unwrap();
/// let ns = manager.namespace().unwrap();
/// ns.set("answer", 42u32).unwrap();
/// assert_eq!(ns.get::<u32>("answer").unwrap(), 42);
/// assert!(matches!(ns.get::<String>("answer"), Err(multiproc::Error::TypeMismatch { .. })));
/// manager.shutdown().unwrap();
/// ```
#[derive(Clone)]
pub struct NamespaceProxy {
    flavor: NsFlavor,
}

/// Lists the attributes and the types they were set as, sorted by name,
/// hiding names that start with `_` (as Python's `Namespace` repr does):
/// `Namespace { answer: u32 }`. The server keeps values encoded and
/// never decodes them, so the types stand in for them. Asks the server; if
/// it cannot be reached, shows the proxy and why instead.
impl std::fmt::Debug for NamespaceProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.attributes() {
            Ok(attrs) => {
                let mut d = f.debug_struct("Namespace");
                for (name, type_name) in attrs.iter().filter(|(n, _)| !n.starts_with('_')) {
                    d.field(name, &format_args!("{type_name}"));
                }
                d.finish()
            }
            Err(e) => {
                match &self.flavor {
                    NsFlavor::Remote(core) => core.fmt(f)?,
                    #[cfg(feature = "redis")]
                    NsFlavor::Redis(r) => r.object().fmt(f)?,
                }
                write!(f, " (attributes unavailable: {e})")
            }
        }
    }
}

/// Where a [`NamespaceProxy`]'s attributes live.
#[derive(Clone)]
enum NsFlavor {
    /// In a manager's server.
    Remote(Arc<ProxyCore>),
    /// In two Redis hashes.
    #[cfg(feature = "redis")]
    Redis(multiproc_runtime::redis::RedisNamespace),
}

impl NamespaceProxy {
    /// The types a namespace records.
    fn type_tag() -> TypeTag {
        TypeTag::new("NamespaceProxy".into())
    }

    /// The namespace `name` kept under `target` in Redis (a `RedisManager`'s).
    #[cfg(feature = "redis")]
    pub(crate) fn redis(target: &RedisTarget, name: &str) -> Result<Self> {
        let obj = RedisObject::open(target, "namespace", name, Self::type_tag().name)?;
        Ok(NamespaceProxy {
            flavor: NsFlavor::Redis(RedisNamespace::new(obj)),
        })
    }
}

impl RemoteFlavor for NamespaceProxy {
    fn remote_tag() -> TypeTag {
        Self::type_tag()
    }
    fn from_remote(core: ProxyCore) -> Result<Self> {
        Ok(NamespaceProxy {
            flavor: NsFlavor::Remote(Arc::new(core)),
        })
    }
}

impl FlavoredHandle for NamespaceProxy {
    fn to_flavor_repr(&self) -> Result<FlavorRepr> {
        match &self.flavor {
            NsFlavor::Remote(core) => core.to_repr().map(FlavorRepr::Remote),
            #[cfg(feature = "redis")]
            NsFlavor::Redis(r) => Ok(FlavorRepr::Redis(r.object().to_repr())),
        }
    }

    fn from_flavor_repr(repr: &FlavorRepr) -> Result<Self> {
        match repr {
            FlavorRepr::Remote(p) => {
                ProxyCore::from_repr(p, Self::type_tag()).and_then(Self::from_remote)
            }
            #[cfg(feature = "redis")]
            FlavorRepr::Redis(r) => RedisObject::from_repr(r, "namespace", Self::type_tag().name)
                .map(|obj| NamespaceProxy {
                    flavor: NsFlavor::Redis(RedisNamespace::new(obj)),
                }),
            other => Err(not_a_container("NamespaceProxy", other)),
        }
    }
}

multiproc_runtime::impl_flavored_handle!(impl<> for NamespaceProxy);

impl NamespaceProxy {
    /// The attribute `name` as a `T`: `Err(KeyNotFound)` naming it if it is
    /// not set, `Err(TypeMismatch)` if it was set as another type.
    pub fn get<T: Shareable>(&self, name: &str) -> Result<T> {
        let core = match &self.flavor {
            NsFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            NsFlavor::Redis(r) => {
                return T::decode(&r.get(name, std::any::type_name::<T>())?);
            }
        };
        let type_name = std::any::type_name::<T>();
        let args = Args {
            key: Some(Blob::plain(name.as_bytes())),
            fingerprint: fingerprint_str(type_name),
            type_name,
            ..Args::default()
        };
        core.call(Method::NsGet, args, read_value)
            .map_err(|e| name_key(e, name))?
            .ok_or_else(crate::client::unexpected)
    }

    /// Sets the attribute `name` to `value` (its type is recorded with it).
    pub fn set<T: Shareable>(&self, name: &str, value: T) -> Result<()> {
        let core = match &self.flavor {
            NsFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            NsFlavor::Redis(r) => {
                return r.set(name, std::any::type_name::<T>(), &value.encode_stored()?);
            }
        };
        let type_name = std::any::type_name::<T>();
        let v = core.encode(&value)?;
        let args = Args {
            key: Some(Blob::plain(name.as_bytes())),
            value: Some(v.blob()),
            fingerprint: fingerprint_str(type_name),
            type_name,
            ..Args::default()
        };
        core.call(Method::NsSet, args, read_unit)
    }

    /// Deletes the attribute `name`; `Err(KeyNotFound)` naming it if it is not set.
    pub fn delete(&self, name: &str) -> Result<()> {
        let core = match &self.flavor {
            NsFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            NsFlavor::Redis(r) => {
                return match r.delete(name)? {
                    true => Ok(()),
                    false => Err(Error::KeyNotFound(format!("{name:?}"))),
                };
            }
        };
        let args = Args {
            key: Some(Blob::plain(name.as_bytes())),
            ..Args::default()
        };
        core.call(Method::NsDelete, args, read_unit)
            .map_err(|e| name_key(e, name))
    }

    /// Whether the attribute `name` is set.
    pub fn contains(&self, name: &str) -> Result<bool> {
        let core = match &self.flavor {
            NsFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            NsFlavor::Redis(r) => {
                return r.contains(name);
            }
        };
        let args = Args {
            key: Some(Blob::plain(name.as_bytes())),
            ..Args::default()
        };
        core.call(Method::NsContains, args, read_bool)
    }

    /// Each attribute's name and the name of the type it was set as,
    /// sorted by name (underscored names included).
    pub fn attributes(&self) -> Result<Vec<(String, String)>> {
        let core = match &self.flavor {
            NsFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            NsFlavor::Redis(r) => {
                return {
                    let mut attrs = r.attributes()?;
                    attrs.sort();
                    Ok(attrs)
                };
            }
        };
        let utf8 =
            |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|e| Error::Protocol(e.to_string()));
        let mut attrs = core.call(Method::NsDescribe, Args::default(), |conn, r| {
            read_many(conn, r, |items| {
                let mut out = Vec::new();
                while let Some(name) = items.next() {
                    let ty = items.next().ok_or_else(crate::client::unexpected)?;
                    out.push((utf8(name)?, utf8(ty)?));
                }
                Ok(out)
            })
        })?;
        attrs.sort();
        Ok(attrs)
    }

    /// The names of the attributes set.
    pub fn names(&self) -> Result<Vec<String>> {
        let core = match &self.flavor {
            NsFlavor::Remote(core) => core,
            #[cfg(feature = "redis")]
            NsFlavor::Redis(r) => {
                return Ok(r.attributes()?.into_iter().map(|(n, _)| n).collect());
            }
        };
        core.call(Method::NsNames, Args::default(), |conn, r| {
            read_many(conn, r, |items| {
                items
                    .map(|b| {
                        String::from_utf8(b.to_vec())
                            .map_err(|e| multiproc_runtime::Error::Protocol(e.to_string()))
                    })
                    .collect()
            })
        })
    }
}

/// The server's "no such key" names no key: this names the attribute.
fn name_key(e: Error, name: &str) -> Error {
    match e {
        Error::KeyNotFound(_) => Error::KeyNotFound(format!("{name:?}")),
        e => e,
    }
}
