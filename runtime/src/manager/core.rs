//! What every proxy is: a reference-counted core naming one object of one
//! server, and its encoded form.
//!
//! A proxy encodes as a [`ProxyRepr`]: the server's address, the object id,
//! the proxy's type fingerprint and name, and a pin. Where the encoding
//! goes decides how the object is kept alive until the receiver attaches:
//!
//! * into a value a manager stores (a dict of list proxies): the server
//!   records that the stored value refers to the object, and keeps it alive
//!   as long as the value is stored (Python's nested proxies);
//! * anywhere else (a child's arguments, a queue message): the encoder asks
//!   the server for a pin, an in-flight reference the first decoder takes
//!   over. A pin nobody takes over is dropped after
//!   [`PIN_TIMEOUT`](crate::manager::PIN_TIMEOUT) (ten minutes).
//!
//! Decoding checks the type locally (a proxy of other types is
//! `TypeMismatch`), then takes a reference on this process's connection.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::__internal::fingerprint_str;
use crate::manager::ServerAddress;
use crate::manager::protocol::{ArchivedResponse, ObjectId, Request};
use crate::rkyv::bytecheck::CheckBytes;
use crate::rkyv::rancor::{Fallible, Source};
use crate::rkyv::{self, Archive, Deserialize, Place, Portable, Serialize};
use crate::{Error, Result};

use crate::manager::client::{self, Connection, unexpected};

/// The types a proxy was made for: a fingerprint the server compares and
/// the readable name errors show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeTag {
    pub fingerprint: u64,
    pub name: String,
}

impl TypeTag {
    pub fn new(name: String) -> TypeTag {
        TypeTag {
            fingerprint: fingerprint_str(&name),
            name,
        }
    }
}

/// The encoded form of a proxy.
///
/// Its `Debug` form leaves the authkey out.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq)]
#[rkyv(crate = rkyv)]
pub struct ProxyRepr {
    /// The server that owns the object.
    pub server: ServerAddress,
    /// The object.
    pub object: ObjectId,
    /// Fingerprint of the proxy's types.
    pub fingerprint: u64,
    /// The proxy's types, readable.
    pub type_name: String,
    /// An in-flight reference for the decoder to take over, or 0.
    pub pin: u64,
    /// Only in what this process's own children read (a spawned child's
    /// arguments, a pool's tasks): the server's authkey as this process
    /// knows it, so the child can connect (as Python's children inherit
    /// their parent's authkey); empty if this process knows none beyond its
    /// own authkey, which its children inherit anyway. Empty everywhere
    /// else: a process that decodes a proxy from a message must know the
    /// key already: for a TCP server, a connected `BaseManager`,
    /// `set_manager_authkey`, or the `MULTIPROC_AUTHKEY` environment
    /// variable; for a local server, its own authkey must be the server's
    /// (a child of the process that started it, or a process that called
    /// `Manager::connect_with_authkey`).
    pub authkey: Vec<u8>,
}

impl std::fmt::Debug for ProxyRepr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyRepr")
            .field("server", &self.server)
            .field("object", &self.object)
            .field("fingerprint", &self.fingerprint)
            .field("type_name", &self.type_name)
            .field("pin", &self.pin)
            .field("carries_authkey", &!self.authkey.is_empty())
            .finish()
    }
}

/// One proxy instance's hold on an object; shared by the clones of a proxy.
pub struct ProxyCore {
    conn: Arc<Connection>,
    object: ObjectId,
    tag: TypeTag,
}

impl std::fmt::Debug for ProxyCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("object", &self.object)
            .field("type", &self.tag.name)
            .field("server", self.conn.server())
            .finish()
    }
}

impl ProxyCore {
    /// A core for an object just created or attached on `conn` (already registered).
    pub fn new(conn: Arc<Connection>, object: ObjectId, tag: TypeTag) -> ProxyCore {
        ProxyCore { conn, object, tag }
    }

    /// Creates a new object of `kind` on `conn`.
    pub fn create(
        conn: Arc<Connection>,
        kind: crate::manager::ObjectKind,
        tag: TypeTag,
    ) -> Result<ProxyCore> {
        Self::create_with(conn, kind, 0, tag)
    }

    /// Creates a new object of `kind` with its parameter (a barrier's
    /// parties, a queue's maxsize) on `conn`.
    pub fn create_with(
        conn: Arc<Connection>,
        kind: crate::manager::ObjectKind,
        arg: u64,
        tag: TypeTag,
    ) -> Result<ProxyCore> {
        let reply = conn.call(&Request::Create {
            kind,
            fingerprint: tag.fingerprint,
            type_name: &tag.name,
            arg,
        })?;
        let object = match reply.get()? {
            ArchivedResponse::Created(id) => id.to_native(),
            _ => return Err(unexpected()),
        };
        client::registered(&conn, object);
        Ok(ProxyCore::new(conn, object, tag))
    }

    /// The object this core holds.
    pub fn object(&self) -> ObjectId {
        self.object
    }

    /// The connection to use from this process (a forked child uses its own).
    pub fn conn(&self) -> Result<std::borrow::Cow<'_, Arc<Connection>>> {
        if self.conn.is_ours() {
            Ok(std::borrow::Cow::Borrowed(&self.conn))
        } else {
            client::connection(self.conn.server()).map(std::borrow::Cow::Owned)
        }
    }

    /// The encoded form (see the module docs for pins).
    pub fn to_repr(&self) -> Result<ProxyRepr> {
        let server = *self.conn.server();
        let pin = if client::collect(&server, self.object)? {
            0
        } else {
            let conn = self.conn()?;
            let reply = conn.call(&Request::Pin {
                object: self.object,
            })?;
            let token = match reply.get()? {
                ArchivedResponse::Token(t) => t.to_native(),
                _ => return Err(unexpected()),
            };
            // A spawned child's argument: once the child is known, the
            // server drops the pin if that child dies without decoding it.
            let conn = conn.into_owned();
            crate::handle::on_handoff(move |pid| client::name_claimant(&conn, token, pid));
            token
        };
        Ok(ProxyRepr {
            server,
            object: self.object,
            fingerprint: self.tag.fingerprint,
            type_name: self.tag.name.clone(),
            pin,
            authkey: if crate::handle::encoding_for_own_child() {
                client::authkey_of(&server)
            } else {
                Vec::new()
            },
        })
    }

    /// Rebuilds a core from its encoded form in this process, as a proxy of `tag`.
    pub fn from_repr(repr: &ProxyRepr, tag: TypeTag) -> Result<ProxyCore> {
        if repr.fingerprint != tag.fingerprint {
            return Err(Error::TypeMismatch {
                expected: tag.name,
                found: repr.type_name.clone(),
            });
        }
        if !repr.authkey.is_empty() {
            client::learn_authkey(repr.server, &repr.authkey);
        }
        let conn = client::connection(&repr.server)?;
        if client::take_preref(&repr.server, repr.object) {
            client::adopt(&conn, repr.object);
            return Ok(ProxyCore::new(conn, repr.object, tag));
        }
        if repr.pin == 0 && client::add_instance(&conn, repr.object) {
            return Ok(ProxyCore::new(conn, repr.object, tag));
        }
        let reply = conn.call(&Request::Attach {
            object: repr.object,
            fingerprint: tag.fingerprint,
            type_name: &tag.name,
            pin: repr.pin,
        })?;
        match reply.get()? {
            ArchivedResponse::Unit => {}
            _ => return Err(unexpected()),
        }
        client::registered(&conn, repr.object);
        Ok(ProxyCore::new(conn, repr.object, tag))
    }
}

impl Drop for ProxyCore {
    fn drop(&mut self) {
        client::drop_instance(&self.conn, self.object);
    }
}

/// A proxy type: how it encodes and decodes (see [`impl_proxy!`]).
pub trait Proxy: Sized {
    fn core(&self) -> &ProxyCore;
    fn from_core(core: ProxyCore) -> Self;
    fn tag() -> TypeTag;
}

/// A handle with a remote flavour (a `Lock` a TCP manager keeps), made
/// from a server object's core; every [`Proxy`] is one.
#[doc(hidden)]
pub trait RemoteFlavor: Sized {
    /// The types the server records for the object.
    fn remote_tag() -> TypeTag;
    /// The handle over a core just created or attached (a `Condition`
    /// asks its server for its lock here, so this can fail).
    fn from_remote(core: ProxyCore) -> Result<Self>;
}

impl<P: Proxy> RemoteFlavor for P {
    fn remote_tag() -> TypeTag {
        P::tag()
    }
    fn from_remote(core: ProxyCore) -> Result<Self> {
        Ok(P::from_core(core))
    }
}

/// The archived form of a proxy of type `P`.
#[repr(transparent)]
pub struct ArchivedProxy<P> {
    repr: ArchivedProxyRepr,
    _kind: PhantomData<fn() -> P>,
}

// SAFETY: `ArchivedProxy` is `repr(transparent)` over `ArchivedProxyRepr`,
// which is `Portable`; the marker adds no bytes.
unsafe impl<P> Portable for ArchivedProxy<P> {}

// SAFETY: the layout is exactly an `ArchivedProxyRepr` (repr(transparent)),
// so checking that is checking the whole value.
unsafe impl<P, C: Fallible + ?Sized> CheckBytes<C> for ArchivedProxy<P>
where
    ArchivedProxyRepr: CheckBytes<C>,
{
    unsafe fn check_bytes(value: *const Self, context: &mut C) -> Result<(), C::Error> {
        // SAFETY: the caller guarantees `value` is aligned and points to enough
        // initialized bytes for `Self`, hence for the identical inner type.
        unsafe { ArchivedProxyRepr::check_bytes(value.cast(), context) }
    }
}

#[doc(hidden)]
pub fn serialize_proxy<P: Proxy, S: Fallible + rkyv::ser::Writer + rkyv::ser::Allocator + ?Sized>(
    proxy: &P,
    serializer: &mut S,
) -> Result<(ProxyRepr, ProxyReprResolver), S::Error>
where
    S::Error: Source,
{
    let repr = proxy.core().to_repr().map_err(S::Error::new)?;
    let resolver = repr.serialize(serializer)?;
    Ok((repr, resolver))
}

#[doc(hidden)]
pub fn resolve_proxy<P>(resolver: (ProxyRepr, ProxyReprResolver), out: Place<ArchivedProxy<P>>) {
    let (repr, inner) = resolver;
    // SAFETY: `ArchivedProxy<P>` is repr(transparent) over `ArchivedProxyRepr`.
    let out = unsafe { out.cast_unchecked::<ArchivedProxyRepr>() };
    repr.resolve(inner, out);
}

#[doc(hidden)]
pub fn deserialize_proxy<P: Proxy, D: Fallible + ?Sized>(
    archived: &ArchivedProxy<P>,
    deserializer: &mut D,
) -> Result<P, D::Error>
where
    D::Error: Source,
{
    let repr: ProxyRepr = archived.repr.deserialize(deserializer)?;
    ProxyCore::from_repr(&repr, P::tag())
        .map(P::from_core)
        .map_err(D::Error::new)
}

/// Makes a proxy type encodable (so it is `Shareable`).
#[doc(hidden)]
#[macro_export]
macro_rules! impl_proxy {
    (impl<$($g:ident),*> for $ty:ty) => {
        impl<$($g: $crate::Shareable),*> $crate::rkyv::Archive for $ty {
            type Archived = $crate::manager::core::ArchivedProxy<$ty>;
            type Resolver = ($crate::manager::core::ProxyRepr, $crate::manager::core::ProxyReprResolver);
            fn resolve(&self, resolver: Self::Resolver, out: $crate::rkyv::Place<Self::Archived>) {
                $crate::manager::core::resolve_proxy(resolver, out)
            }
        }
        impl<$($g: $crate::Shareable,)* S> $crate::rkyv::Serialize<S> for $ty
        where
            S: $crate::rkyv::rancor::Fallible
                + $crate::rkyv::ser::Writer
                + $crate::rkyv::ser::Allocator
                + ?Sized,
            S::Error: $crate::rkyv::rancor::Source,
        {
            fn serialize(&self, serializer: &mut S) -> ::std::result::Result<Self::Resolver, S::Error> {
                $crate::manager::core::serialize_proxy(self, serializer)
            }
        }
        impl<$($g: $crate::Shareable,)* D> $crate::rkyv::Deserialize<$ty, D>
            for $crate::manager::core::ArchivedProxy<$ty>
        where
            D: $crate::rkyv::rancor::Fallible + ?Sized,
            D::Error: $crate::rkyv::rancor::Source,
        {
            fn deserialize(&self, deserializer: &mut D) -> ::std::result::Result<$ty, D::Error> {
                $crate::manager::core::deserialize_proxy(self, deserializer)
            }
        }
    };
}

#[doc(hidden)]
pub use crate::impl_proxy;

/// The arguments of a method call; unused ones stay empty.
#[derive(Default)]
pub struct Args<'a> {
    pub index: i64,
    pub key: Option<Blob<'a>>,
    pub value: Option<Blob<'a>>,
    pub expected: Option<Blob<'a>>,
    pub batch: Vec<Blob<'a>>,
    pub fingerprint: u64,
    pub type_name: &'a str,
    /// How long a waiting method may wait (see `Call::wait_us`).
    pub wait_us: u64,
}

use crate::Shareable;
use crate::deadline::Deadline;
use crate::manager::protocol::{Blob, Call, Method};
use crate::rkyv::util::AlignedVec;

/// A value encoded for storing by a server, with the objects of that server it refers to.
pub struct Encoded {
    pub bytes: AlignedVec,
    pub refs: Vec<ObjectId>,
    /// Segment objects the server keeps for the handles in the value, and
    /// the connection that holds a reference to each until the value is
    /// stored (released on drop: the stored value holds its own then).
    kept: Option<(Arc<Connection>, Vec<ObjectId>)>,
}

impl Drop for Encoded {
    fn drop(&mut self) {
        if let Some((conn, kept)) = self.kept.take() {
            for object in kept {
                client::release_on(&conn, object, 1);
            }
        }
    }
}

/// The segments a value being encoded for a local server holds handles to:
/// the server keeps each alive (one object per segment) and its handle is
/// encoded through the server's own descriptor.
#[derive(Default)]
struct Kept {
    /// Segment id, the object keeping it, and the server's pid and descriptor.
    segments: Vec<(u64, ObjectId, i32, i32)>,
}

/// Asks the server behind `conn` to keep the segment of `repr`; `None` if
/// it will not (a segment it did not create is encoded as it is).
fn keep_segment(
    conn: &Connection,
    kept: &std::cell::RefCell<Kept>,
    repr: &crate::handle::HandleRepr,
) -> Result<Option<crate::handle::HandleRepr>> {
    let known = kept
        .borrow()
        .segments
        .iter()
        .find(|(id, ..)| *id == repr.id)
        .copied();
    let (pid, fd) = match known {
        Some((_, _, pid, fd)) => (pid, fd),
        None => {
            let reply = conn.call(&Request::AdoptShm { handle: *repr })?;
            let (object, theirs) = match reply.get() {
                Ok(ArchivedResponse::Handle { object, handle }) => (
                    object.to_native(),
                    (handle.pid.to_native(), handle.fd.to_native()),
                ),
                Ok(_) => return Err(unexpected()),
                // Not the server's own segment: the handle stays as it is
                // (readable while this process holds it).
                Err(Error::Remote(why)) => {
                    tracing::debug!("a stored handle is not kept by its manager: {why}");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            kept.borrow_mut()
                .segments
                .push((repr.id, object, theirs.0, theirs.1));
            theirs
        }
    };
    Ok(Some(crate::handle::HandleRepr { pid, fd, ..*repr }))
}

impl Encoded {
    pub fn blob(&self) -> Blob<'_> {
        Blob {
            bytes: &self.bytes,
            refs: &self.refs,
        }
    }
}

impl ProxyCore {
    /// Encodes `value` to be stored by this proxy's server.
    ///
    /// Proxies to objects of that server inside the value are recorded, so
    /// the server keeps those objects while it stores the value. For a local
    /// server, so are the shared segments of handles inside it (a `Queue`,
    /// a `Lock`, a `Value` the server created): it keeps each segment while
    /// the value is stored, and the value names the server's descriptor, so
    /// it can be read back after the process that stored it dropped its
    /// handle or ended.
    ///
    /// A proxy of another manager inside the value is refused
    /// ([`Error::InvalidArgument`]): nothing would keep its object.
    pub fn encode<T: Shareable>(&self, value: &T) -> Result<Encoded> {
        self.encode_for(value, true)
    }

    /// As [`ProxyCore::encode`], for a queue item (kept until one reader
    /// takes it): a proxy of another manager travels pinned, as in a message.
    pub fn encode_item<T: Shareable>(&self, value: &T) -> Result<Encoded> {
        self.encode_for(value, false)
    }

    fn encode_for<T: Shareable>(&self, value: &T, stored: bool) -> Result<Encoded> {
        if holds_no_handle::<T>() {
            return Ok(Encoded {
                bytes: value.encode()?,
                refs: Vec::new(),
                kept: None,
            });
        }
        let server = *self.conn.server();
        if let ServerAddress::Tcp(_) = server {
            let (bytes, refs) = client::collecting(&server, stored, || value.encode());
            return Ok(Encoded {
                bytes: bytes?,
                refs,
                kept: None,
            });
        }
        let conn = self.conn()?.into_owned();
        let kept = std::rc::Rc::new(std::cell::RefCell::new(Kept::default()));
        let redirect = {
            let (conn, kept) = (conn.clone(), kept.clone());
            move |repr: &crate::handle::HandleRepr| keep_segment(&conn, &kept, repr)
        };
        let (bytes, mut refs) = client::collecting(&server, stored, || {
            crate::handle::redirecting_segments(redirect, || value.encode())
        });
        let objects: Vec<ObjectId> = kept.borrow().segments.iter().map(|k| k.1).collect();
        refs.extend_from_slice(&objects);
        let mut encoded = Encoded {
            bytes: AlignedVec::new(),
            refs,
            kept: (!objects.is_empty()).then_some((conn, objects)),
        };
        // On an error, dropping `encoded` lets the kept segments go.
        encoded.bytes = bytes?;
        Ok(encoded)
    }

    /// Calls `method` with `args`; `read` turns the response into the result
    /// (decoding happens there, after the connection is free again).
    pub fn call<R>(
        &self,
        method: Method,
        args: Args<'_>,
        read: impl FnOnce(&Connection, &ArchivedResponse<'_>) -> Result<R>,
    ) -> Result<R> {
        let conn = self.conn()?;
        let reply = conn.call(&Request::Call(self.request(method, args)))?;
        read(&conn, reply.get()?)
    }

    /// Calls a method that may wait in the server until `deadline`, on a
    /// connection of its own (see [`client::on_own_connection`]); a call
    /// that must not wait goes the usual way.
    pub fn call_waiting<R>(
        &self,
        method: Method,
        mut args: Args<'_>,
        deadline: Deadline,
        read: impl FnOnce(&Connection, &ArchivedResponse<'_>) -> Result<R>,
    ) -> Result<R> {
        args.wait_us = crate::manager::protocol::wait_us(deadline);
        if deadline == Deadline::Now {
            return self.call(method, args, read);
        }
        client::on_own_connection(self.conn.server(), |conn| {
            let reply = conn.call(&Request::Call(self.request(method, args)))?;
            read(conn, reply.get()?)
        })
    }

    fn request<'a>(&self, method: Method, args: Args<'a>) -> Call<'a> {
        Call {
            object: self.object,
            method: method as u32,
            index: args.index,
            key: args.key,
            value: args.value,
            expected: args.expected,
            batch: args.batch,
            fingerprint: args.fingerprint,
            type_name: args.type_name,
            wait_us: args.wait_us,
        }
    }
}

fn native_ids(refs: &crate::rkyv::vec::ArchivedVec<crate::rkyv::rend::u64_le>) -> Vec<ObjectId> {
    refs.iter().map(|r| r.to_native()).collect()
}

/// Whether every value of `T` is plain data: a number, `bool`, `char`, a
/// string or bytes, which can hold no proxy or handle. Such values skip
/// the watch for proxies and segments that encoding anything else for a
/// manager sets up (a tenth of a local `dict` get's time).
fn holds_no_handle<T: 'static>() -> bool {
    use std::any::TypeId;
    let t = TypeId::of::<T>();
    [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<u128>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<i128>(),
        TypeId::of::<isize>(),
        TypeId::of::<f32>(),
        TypeId::of::<f64>(),
        TypeId::of::<bool>(),
        TypeId::of::<char>(),
        TypeId::of::<()>(),
        TypeId::of::<String>(),
        TypeId::of::<Vec<u8>>(),
    ]
    .contains(&t)
}

/// Decodes one value a response carried, handing its proxies the references
/// the server added.
pub fn decode_one<T: Shareable>(conn: &Connection, bytes: &[u8], refs: &[ObjectId]) -> Result<T> {
    client::with_prerefs(conn, refs, || T::decode(bytes))
}

/// Reads a `Unit` response.
pub fn read_unit(_: &Connection, r: &ArchivedResponse<'_>) -> Result<()> {
    match r {
        ArchivedResponse::Unit => Ok(()),
        _ => Err(unexpected()),
    }
}

/// Reads a `Bool` response.
pub fn read_bool(_: &Connection, r: &ArchivedResponse<'_>) -> Result<bool> {
    match r {
        ArchivedResponse::Bool(b) => Ok(*b),
        _ => Err(unexpected()),
    }
}

/// Reads a `Len` response.
pub fn read_len(_: &Connection, r: &ArchivedResponse<'_>) -> Result<usize> {
    match r {
        ArchivedResponse::Len(n) => Ok(n.to_native() as usize),
        _ => Err(unexpected()),
    }
}

/// Reads a `Value` response and decodes the value, if there was one.
pub fn read_value<T: Shareable>(conn: &Connection, r: &ArchivedResponse<'_>) -> Result<Option<T>> {
    match r {
        ArchivedResponse::Value { bytes, refs } => {
            let refs = native_ids(refs);
            match bytes.as_ref() {
                Some(b) => decode_one(conn, b, &refs).map(Some),
                None => {
                    client::with_prerefs(conn, &refs, || ());
                    Ok(None)
                }
            }
        }
        _ => Err(unexpected()),
    }
}

/// Reads a `Value` response, keeping the raw bytes beside the decoded value.
pub fn read_value_raw<T: Shareable>(
    conn: &Connection,
    r: &ArchivedResponse<'_>,
) -> Result<Option<(Vec<u8>, T)>> {
    match r {
        ArchivedResponse::Value { bytes, refs } => {
            raw_pair(conn, bytes.as_ref().map(|b| &**b), refs)
        }
        _ => Err(unexpected()),
    }
}

fn raw_pair<T: Shareable>(
    conn: &Connection,
    bytes: Option<&[u8]>,
    refs: &crate::rkyv::vec::ArchivedVec<crate::rkyv::rend::u64_le>,
) -> Result<Option<(Vec<u8>, T)>> {
    let refs = native_ids(refs);
    match bytes {
        Some(b) => Ok(Some((b.to_vec(), decode_one(conn, b, &refs)?))),
        None => {
            client::with_prerefs(conn, &refs, || ());
            Ok(None)
        }
    }
}

/// The outcome of a compare-and-swap.
pub enum Swap<T> {
    Done,
    Failed(Option<(Vec<u8>, T)>),
}

/// Reads a `Swapped` response.
pub fn read_swap<T: Shareable>(conn: &Connection, r: &ArchivedResponse<'_>) -> Result<Swap<T>> {
    match r {
        ArchivedResponse::Swapped { done: true, .. } => Ok(Swap::Done),
        ArchivedResponse::Swapped { current, refs, .. } => {
            raw_pair(conn, current.as_ref().map(|b| &**b), refs).map(Swap::Failed)
        }
        _ => Err(unexpected()),
    }
}

/// Reads a `Many` response, decoding each item with `decode`.
pub fn read_many<R>(
    conn: &Connection,
    r: &ArchivedResponse<'_>,
    decode: impl FnOnce(&mut dyn Iterator<Item = &[u8]>) -> Result<R>,
) -> Result<R> {
    match r {
        ArchivedResponse::Many { items, refs } => {
            let refs = native_ids(refs);
            client::with_prerefs(conn, &refs, || decode(&mut items.iter().map(|b| &**b)))
        }
        _ => Err(unexpected()),
    }
}

#[cfg(test)]
mod tests {
    use super::holds_no_handle;

    #[test]
    fn only_plain_data_skips_the_watch_for_handles() {
        assert!(holds_no_handle::<u32>());
        assert!(holds_no_handle::<String>());
        assert!(holds_no_handle::<Vec<u8>>());
        // Anything that may hold a proxy or handle, or that this list does
        // not know, goes the careful way.
        assert!(!holds_no_handle::<crate::Queue<u64>>());
        assert!(!holds_no_handle::<Vec<crate::Queue<u64>>>());
        assert!(!holds_no_handle::<Option<u32>>());
        assert!(!holds_no_handle::<(u32, String)>());
    }
}
