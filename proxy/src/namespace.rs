//! `NamespaceProxy`: named, typed attributes that live in the manager's server.

use std::sync::Arc;

use multiproc_runtime::__internal::fingerprint_str;
use multiproc_runtime::manager::protocol::{Blob, Method};
use multiproc_runtime::{Error, Result, Shareable};

use crate::core::{
    Args, Proxy, ProxyCore, TypeTag, impl_proxy, read_bool, read_many, read_unit, read_value,
};

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
    core: Arc<ProxyCore>,
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
                self.core.fmt(f)?;
                write!(f, " (attributes unavailable: {e})")
            }
        }
    }
}

impl Proxy for NamespaceProxy {
    fn core(&self) -> &ProxyCore {
        &self.core
    }
    fn from_core(core: ProxyCore) -> Self {
        NamespaceProxy {
            core: Arc::new(core),
        }
    }
    fn tag() -> TypeTag {
        TypeTag::new("NamespaceProxy".into())
    }
}

impl_proxy!(impl<> for NamespaceProxy);

impl NamespaceProxy {
    /// The attribute `name` as a `T`: `Err(KeyNotFound)` naming it if it is
    /// not set, `Err(TypeMismatch)` if it was set as another type.
    pub fn get<T: Shareable>(&self, name: &str) -> Result<T> {
        let type_name = std::any::type_name::<T>();
        let args = Args {
            key: Some(Blob::plain(name.as_bytes())),
            fingerprint: fingerprint_str(type_name),
            type_name,
            ..Args::default()
        };
        self.core
            .call(Method::NsGet, args, read_value)
            .map_err(|e| name_key(e, name))?
            .ok_or_else(crate::client::unexpected)
    }

    /// Sets the attribute `name` to `value` (its type is recorded with it).
    pub fn set<T: Shareable>(&self, name: &str, value: T) -> Result<()> {
        let type_name = std::any::type_name::<T>();
        let v = self.core.encode(&value)?;
        let args = Args {
            key: Some(Blob::plain(name.as_bytes())),
            value: Some(v.blob()),
            fingerprint: fingerprint_str(type_name),
            type_name,
            ..Args::default()
        };
        self.core.call(Method::NsSet, args, read_unit)
    }

    /// Deletes the attribute `name`; `Err(KeyNotFound)` naming it if it is not set.
    pub fn delete(&self, name: &str) -> Result<()> {
        let args = Args {
            key: Some(Blob::plain(name.as_bytes())),
            ..Args::default()
        };
        self.core
            .call(Method::NsDelete, args, read_unit)
            .map_err(|e| name_key(e, name))
    }

    /// Whether the attribute `name` is set.
    pub fn contains(&self, name: &str) -> Result<bool> {
        let args = Args {
            key: Some(Blob::plain(name.as_bytes())),
            ..Args::default()
        };
        self.core.call(Method::NsContains, args, read_bool)
    }

    /// Each attribute's name and the name of the type it was set as,
    /// sorted by name (underscored names included).
    pub fn attributes(&self) -> Result<Vec<(String, String)>> {
        let utf8 =
            |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|e| Error::Protocol(e.to_string()));
        let mut attrs = self
            .core
            .call(Method::NsDescribe, Args::default(), |conn, r| {
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
        self.core.call(Method::NsNames, Args::default(), |conn, r| {
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
