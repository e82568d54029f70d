//! How OS-backed handles (segments, sockets) travel inside encoded values.
//!
//! A handle encodes as a [`HandleRepr`]: an id, the pid and descriptor number
//! of a process that holds the descriptor, and a little kind-specific data.
//! The receiver finds the descriptor, in this order:
//! 1. in this process's cache of live segments (same id): no syscall at all;
//! 2. among descriptors that arrived beside the bytes (spawn arguments are
//!    sent with `SCM_RIGHTS`, so they survive the sender's death);
//! 3. through `/proc/<pid>/fd/<fd>` of the sender, which must still be alive.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::{Fallible, Source};
use rkyv::{Archive, Deserialize, Place, Portable, Serialize};

use crate::error::Result;
use crate::sys;

/// The encoded form of a handle.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(crate = rkyv)]
pub struct HandleRepr {
    /// Identity of the underlying object (a segment id), stable across processes.
    pub id: u64,
    /// A process that held the descriptor when this was encoded.
    pub pid: i32,
    /// The descriptor number in that process.
    pub fd: i32,
    /// Kind-specific data: an offset into a segment, for example.
    pub offset: u64,
    /// Kind-specific data.
    pub extra: u64,
}

/// What a handle asks to be done once the child that receives it is known
/// (its pid): a pipe end names that child as its owner, for example.
pub(crate) type Handoff = Box<dyn FnOnce(i32)>;

/// What [`collect_fds`] gathered while encoding a child's arguments.
#[derive(Default)]
pub(crate) struct Collected {
    /// The descriptors of every handle encoded, by handle id.
    pub fds: Vec<(u64, OwnedFd)>,
    /// What to do once the child's pid is known.
    pub handoffs: Vec<Handoff>,
}

thread_local! {
    static OUTGOING: RefCell<Option<Collected>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<HashMap<u64, OwnedFd>>> = const { RefCell::new(None) };
}

thread_local! {
    /// Set while encoding something only this process's own children read.
    static FOR_OWN_CHILD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is encoding something only a child process of this
/// one will read: a spawned child's arguments (inside `collect_fds`) or a
/// pool's tasks for its workers. A proxy to a TCP manager puts its authkey
/// into its encoding only then, as Python's children inherit their
/// parent's authkey: the key goes to our own children, never into a
/// message (a queue's, a pipe's, a dict's) that may reach anyone.
pub fn encoding_for_own_child() -> bool {
    FOR_OWN_CHILD.with(|f| f.get()) || OUTGOING.with(|o| o.borrow().is_some())
}

/// Runs `encode`, which encodes something only this process's own children
/// read (see [`encoding_for_own_child`]).
pub fn for_own_child<R>(encode: impl FnOnce() -> R) -> R {
    /// Puts the previous flag back, even if `encode` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = FOR_OWN_CHILD.try_with(|f| f.set(self.0));
        }
    }
    let _restore = Restore(FOR_OWN_CHILD.with(|f| f.replace(true)));
    encode()
}

/// Runs `f` with the thread-local `key` set to `value`, then puts the
/// previous value back, even if `f` panics (user code runs inside: a
/// `Serialize` impl of the user's may), so that no later encoding on this
/// thread finds a scope that ended. Returns `f`'s output and the value
/// `key` held when `f` returned (after a panic it is dropped instead).
pub(crate) fn scoped<T: 'static, R>(
    key: &'static std::thread::LocalKey<RefCell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> (R, Option<T>) {
    struct Restore<'a, T: 'static> {
        key: &'static std::thread::LocalKey<RefCell<T>>,
        previous: Option<T>,
        ended: &'a mut Option<T>,
    }
    impl<T: 'static> Drop for Restore<'_, T> {
        fn drop(&mut self) {
            if let Some(previous) = self.previous.take()
                && let Ok(ended) = self.key.try_with(|slot| slot.replace(previous))
            {
                *self.ended = Some(ended);
            }
        }
    }
    let mut ended = None;
    let restore = Restore {
        key,
        previous: Some(key.with(|slot| slot.replace(value))),
        ended: &mut ended,
    };
    let out = f();
    drop(restore);
    (out, ended)
}

/// What [`redirecting_segments`] calls for each segment handle encoded.
type Redirect = dyn FnMut(&HandleRepr) -> Result<Option<HandleRepr>>;

thread_local! {
    static REDIRECT: RefCell<Option<Box<Redirect>>> = const { RefCell::new(None) };
}

/// Runs `encode` (which encodes something) with every shared segment
/// handle it encodes passed to `redirect` first: `Ok(Some(repr))` is
/// encoded instead, `Ok(None)` keeps the handle as it is, and an error
/// fails the encoding.
///
/// A manager client uses this for values it stores in a manager: the
/// server keeps the segments those values hold handles to alive, and the
/// stored handles name the server's descriptors, so they can be opened
/// after the storing process dropped its own handles or ended.
pub fn redirecting_segments<R>(
    redirect: impl FnMut(&HandleRepr) -> Result<Option<HandleRepr>> + 'static,
    encode: impl FnOnce() -> R,
) -> R {
    scoped(&REDIRECT, Some(Box::new(redirect)), encode).0
}

/// Passes a segment handle being encoded through the current redirect, if any.
pub(crate) fn redirect_segment(repr: HandleRepr) -> Result<HandleRepr> {
    // Taken out while it runs: whatever it encodes itself is not redirected.
    let Some(mut redirect) = REDIRECT.with(|r| r.borrow_mut().take()) else {
        return Ok(repr);
    };
    let out = redirect(&repr);
    REDIRECT.with(|r| *r.borrow_mut() = Some(redirect));
    Ok(out?.unwrap_or(repr))
}

/// Runs `f` (which encodes a child's arguments) and returns the
/// descriptors of every handle it encoded, so they can be sent beside the
/// bytes, and what the handles ask to be done once the child is known.
pub(crate) fn collect_fds<R>(f: impl FnOnce() -> R) -> (R, Collected) {
    let (out, collected) = scoped(&OUTGOING, Some(Collected::default()), f);
    (out, collected.flatten().unwrap_or_default())
}

/// While encoding a child's arguments (inside [`collect_fds`]): runs
/// `handoff` with the child's pid once it is known. Elsewhere it does nothing.
pub(crate) fn on_handoff(handoff: impl FnOnce(i32) + 'static) {
    OUTGOING.with(|o| {
        if let Some(collected) = o.borrow_mut().as_mut() {
            collected.handoffs.push(Box::new(handoff));
        }
    });
}

/// Runs `f` (which decodes something) with `fds` available to the handles in it.
pub(crate) fn with_received_fds<R>(fds: HashMap<u64, OwnedFd>, f: impl FnOnce() -> R) -> R {
    scoped(&INCOMING, Some(fds), f).0
}

/// Builds the encoded form of a handle whose descriptor is `fd`.
pub(crate) fn encode_fd(
    id: u64,
    fd: BorrowedFd<'_>,
    offset: u64,
    extra: u64,
) -> Result<HandleRepr> {
    use std::os::fd::AsRawFd;
    let collecting = OUTGOING.with(|o| o.borrow().is_some());
    if collecting {
        let dup = fd.try_clone_to_owned()?;
        OUTGOING.with(|o| {
            if let Some(collected) = o.borrow_mut().as_mut()
                && !collected.fds.iter().any(|(i, _)| *i == id)
            {
                collected.fds.push((id, dup));
            }
        });
    }
    Ok(HandleRepr {
        id,
        pid: sys::process::getpid(),
        fd: fd.as_raw_fd(),
        offset,
        extra,
    })
}

/// The descriptor that arrived beside the bytes for handle `id` (step 2
/// above only): for descriptors `/proc/<pid>/fd` cannot reopen (sockets).
pub(crate) fn received_fd(id: u64) -> Option<OwnedFd> {
    INCOMING.with(|i| {
        i.borrow().as_ref().and_then(|m| {
            m.get(&id)
                .and_then(|fd| fd.as_fd().try_clone_to_owned().ok())
        })
    })
}

/// A new handle id for a descriptor that has no id of its own (a socket):
/// random, so it cannot meet another handle's in one message.
pub(crate) fn fresh_id() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes = (n ^ ((sys::process::getpid() as u64) << 40)).to_ne_bytes();
    }
    u64::from_ne_bytes(bytes)
}

/// Finds an owned descriptor for a decoded handle (steps 2 and 3 above).
pub(crate) fn decode_fd(repr: &HandleRepr) -> std::io::Result<OwnedFd> {
    let received = INCOMING.with(|i| {
        i.borrow()
            .as_ref()
            .and_then(|m| m.get(&repr.id).map(|fd| fd.as_fd().try_clone_to_owned()))
    });
    match received {
        Some(fd) => fd,
        None => sys::memfd::open_foreign(repr.pid, repr.fd),
    }
}

/// A handle type that can travel inside encoded values.
///
/// Not public API (this module is hidden): to put handles in messages, a
/// user type derives `multiproc::Shareable` and has the crate's handles
/// (`Value`, `Queue`, `Lock`, proxies …) as fields. Implementing this trait is only
/// needed for a new kind of OS-backed handle, which the runtime alone can
/// name (a `HandleRepr` refers to a descriptor). Implementing it cannot
/// break the runtime's invariants, so it is a safe trait: `from_repr` gets
/// whatever a peer sent (any bytes decode to some `HandleRepr`), and every
/// implementation here checks what it opens (kind, type fingerprint,
/// bounds) before use; an implementation outside must do the same.
pub trait ShareHandle: Sized {
    /// Encodes this handle (see the module docs).
    fn to_repr(&self) -> Result<HandleRepr>;
    /// Rebuilds a handle in this process from its encoded form.
    fn from_repr(repr: &HandleRepr) -> Result<Self>;
}

/// The archived form of a handle of type `H`.
#[repr(transparent)]
pub struct ArchivedHandle<H> {
    repr: ArchivedHandleRepr,
    _kind: PhantomData<fn() -> H>,
}

// SAFETY: `ArchivedHandle` is `repr(transparent)` over `ArchivedHandleRepr`,
// which is `Portable`; the marker adds no bytes.
unsafe impl<H> Portable for ArchivedHandle<H> {}

// SAFETY: the layout is exactly an `ArchivedHandleRepr` (repr(transparent)),
// so checking that is checking the whole value.
unsafe impl<H, C: Fallible + ?Sized> CheckBytes<C> for ArchivedHandle<H>
where
    ArchivedHandleRepr: CheckBytes<C>,
{
    unsafe fn check_bytes(value: *const Self, context: &mut C) -> Result<(), C::Error> {
        // SAFETY: the caller guarantees `value` is aligned and points to enough
        // initialized bytes for `Self`, hence for the identical inner type.
        unsafe { ArchivedHandleRepr::check_bytes(value.cast(), context) }
    }
}

/// Serializes a handle; used by [`impl_share_handle!`].
#[doc(hidden)]
pub fn serialize_handle<H: ShareHandle, S: Fallible + ?Sized>(
    handle: &H,
    serializer: &mut S,
) -> std::result::Result<(HandleRepr, HandleReprResolver), S::Error>
where
    S::Error: Source,
{
    let repr = handle.to_repr().map_err(S::Error::new)?;
    let resolver = repr.serialize(serializer)?;
    Ok((repr, resolver))
}

/// Resolves a handle; used by [`impl_share_handle!`].
#[doc(hidden)]
pub fn resolve_handle<H>(
    resolver: (HandleRepr, HandleReprResolver),
    out: Place<ArchivedHandle<H>>,
) {
    let (repr, inner) = resolver;
    // SAFETY: `ArchivedHandle<H>` is repr(transparent) over `ArchivedHandleRepr`.
    let out = unsafe { out.cast_unchecked::<ArchivedHandleRepr>() };
    repr.resolve(inner, out);
}

/// Deserializes a handle; used by [`impl_share_handle!`].
#[doc(hidden)]
pub fn deserialize_handle<H: ShareHandle, D: Fallible + ?Sized>(
    archived: &ArchivedHandle<H>,
    deserializer: &mut D,
) -> std::result::Result<H, D::Error>
where
    D::Error: Source,
{
    let repr: HandleRepr = archived.repr.deserialize(deserializer)?;
    H::from_repr(&repr).map_err(D::Error::new)
}

/// Makes a [`ShareHandle`] type encodable (so it is [`crate::Shareable`]).
#[macro_export]
#[doc(hidden)]
macro_rules! impl_share_handle {
    (impl<$($g:ident $(: $b:path)?),*> for $ty:ty) => {
        impl<$($g $(: $b)?),*> $crate::rkyv::Archive for $ty {
            type Archived = $crate::handle::ArchivedHandle<$ty>;
            type Resolver = ($crate::handle::HandleRepr, $crate::handle::HandleReprResolver);
            fn resolve(&self, resolver: Self::Resolver, out: $crate::rkyv::Place<Self::Archived>) {
                $crate::handle::resolve_handle(resolver, out)
            }
        }
        impl<$($g $(: $b)?,)* S> $crate::rkyv::Serialize<S> for $ty
        where
            S: $crate::rkyv::rancor::Fallible + ?Sized,
            S::Error: $crate::rkyv::rancor::Source,
        {
            fn serialize(&self, serializer: &mut S) -> ::std::result::Result<Self::Resolver, S::Error> {
                $crate::handle::serialize_handle(self, serializer)
            }
        }
        impl<$($g $(: $b)?,)* D> $crate::rkyv::Deserialize<$ty, D> for $crate::handle::ArchivedHandle<$ty>
        where
            D: $crate::rkyv::rancor::Fallible + ?Sized,
            D::Error: $crate::rkyv::rancor::Source,
        {
            fn deserialize(&self, deserializer: &mut D) -> ::std::result::Result<$ty, D::Error> {
                $crate::handle::deserialize_handle(self, deserializer)
            }
        }
    };
}

/// The encoded form of a handle with flavours (a `Lock`, `Event` or
/// `Queue` that is either a shared segment or a manager server's object).
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
#[rkyv(crate = rkyv)]
pub enum FlavorRepr {
    /// A shared-memory handle.
    Shm(HandleRepr),
    /// An object a manager server keeps (reached over TCP).
    Remote(crate::manager::core::ProxyRepr),
    /// An object kept in Redis (feature `redis`; a build without it
    /// refuses this form with [`Error::InvalidArgument`](crate::Error::InvalidArgument)).
    Redis(RedisRepr),
}

/// The encoded form of an object kept in Redis: where (the server's URL,
/// the key prefix), which (its name) and as what (the handle's types).
///
/// The URL carries the password only in what this process's own children
/// read, as a remote handle carries its authkey; its `Debug` form never
/// shows it.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq)]
#[rkyv(crate = rkyv)]
pub struct RedisRepr {
    /// The server's `redis://` URL.
    pub url: String,
    /// The key prefix.
    pub prefix: String,
    /// The object's name.
    pub name: String,
    /// The handle's types, readable (compared on decoding).
    pub type_name: String,
    /// The lease of locks (and of a queue consumer's presence), in ms.
    pub lease_ms: u64,
}

impl std::fmt::Debug for RedisRepr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Whatever sits between "//" and "@" is credentials: left out.
        let url = match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.url.clone(),
            },
            None => self.url.clone(),
        };
        f.debug_struct("RedisRepr")
            .field("url", &url)
            .field("prefix", &self.prefix)
            .field("name", &self.name)
            .field("type_name", &self.type_name)
            .finish()
    }
}

/// The error for a Redis handle decoded by a build without the `redis` feature.
#[cfg(not(feature = "redis"))]
pub(crate) fn without_redis() -> crate::Error {
    crate::Error::InvalidArgument(
        "a handle to an object kept in Redis needs multiproc built with the `redis` feature".into(),
    )
}

/// A handle type with flavours that can travel inside encoded values
/// (see [`FlavorRepr`]); [`impl_flavored_handle!`](crate::impl_flavored_handle) makes it encodable.
pub trait FlavoredHandle: Sized {
    /// Encodes this handle.
    fn to_flavor_repr(&self) -> Result<FlavorRepr>;
    /// Rebuilds a handle in this process from its encoded form, checking it.
    fn from_flavor_repr(repr: &FlavorRepr) -> Result<Self>;
}

/// The archived form of a flavoured handle of type `H`.
#[repr(transparent)]
pub struct ArchivedFlavored<H> {
    repr: ArchivedFlavorRepr,
    _kind: PhantomData<fn() -> H>,
}

// SAFETY: `ArchivedFlavored` is `repr(transparent)` over `ArchivedFlavorRepr`,
// which is `Portable`; the marker adds no bytes.
unsafe impl<H> Portable for ArchivedFlavored<H> {}

// SAFETY: the layout is exactly an `ArchivedFlavorRepr` (repr(transparent)),
// so checking that is checking the whole value.
unsafe impl<H, C: Fallible + ?Sized> CheckBytes<C> for ArchivedFlavored<H>
where
    ArchivedFlavorRepr: CheckBytes<C>,
{
    unsafe fn check_bytes(value: *const Self, context: &mut C) -> Result<(), C::Error> {
        // SAFETY: the caller guarantees `value` is aligned and points to enough
        // initialized bytes for `Self`, hence for the identical inner type.
        unsafe { ArchivedFlavorRepr::check_bytes(value.cast(), context) }
    }
}

/// Serializes a flavoured handle; used by [`impl_flavored_handle!`].
#[doc(hidden)]
pub fn serialize_flavored<
    H: FlavoredHandle,
    S: Fallible + rkyv::ser::Writer + rkyv::ser::Allocator + ?Sized,
>(
    handle: &H,
    serializer: &mut S,
) -> std::result::Result<(FlavorRepr, FlavorReprResolver), S::Error>
where
    S::Error: Source,
{
    let repr = handle.to_flavor_repr().map_err(S::Error::new)?;
    let resolver = repr.serialize(serializer)?;
    Ok((repr, resolver))
}

/// Resolves a flavoured handle; used by [`impl_flavored_handle!`].
#[doc(hidden)]
pub fn resolve_flavored<H>(
    resolver: (FlavorRepr, FlavorReprResolver),
    out: Place<ArchivedFlavored<H>>,
) {
    let (repr, inner) = resolver;
    // SAFETY: `ArchivedFlavored<H>` is repr(transparent) over `ArchivedFlavorRepr`.
    let out = unsafe { out.cast_unchecked::<ArchivedFlavorRepr>() };
    repr.resolve(inner, out);
}

/// Deserializes a flavoured handle; used by [`impl_flavored_handle!`].
#[doc(hidden)]
pub fn deserialize_flavored<H: FlavoredHandle, D: Fallible + ?Sized>(
    archived: &ArchivedFlavored<H>,
    deserializer: &mut D,
) -> std::result::Result<H, D::Error>
where
    D::Error: Source,
{
    let repr: FlavorRepr = archived.repr.deserialize(deserializer)?;
    H::from_flavor_repr(&repr).map_err(D::Error::new)
}

/// Makes a [`FlavoredHandle`] type encodable (so it is [`crate::Shareable`]).
#[macro_export]
#[doc(hidden)]
macro_rules! impl_flavored_handle {
    (impl<$($g:ident $(: $b:path)?),*> for $ty:ty) => {
        impl<$($g $(: $b)?),*> $crate::rkyv::Archive for $ty {
            type Archived = $crate::handle::ArchivedFlavored<$ty>;
            type Resolver = ($crate::handle::FlavorRepr, $crate::handle::FlavorReprResolver);
            fn resolve(&self, resolver: Self::Resolver, out: $crate::rkyv::Place<Self::Archived>) {
                $crate::handle::resolve_flavored(resolver, out)
            }
        }
        impl<$($g $(: $b)?,)* S> $crate::rkyv::Serialize<S> for $ty
        where
            S: $crate::rkyv::rancor::Fallible
                + $crate::rkyv::ser::Writer
                + $crate::rkyv::ser::Allocator
                + ?Sized,
            S::Error: $crate::rkyv::rancor::Source,
        {
            fn serialize(&self, serializer: &mut S) -> ::std::result::Result<Self::Resolver, S::Error> {
                $crate::handle::serialize_flavored(self, serializer)
            }
        }
        impl<$($g $(: $b)?,)* D> $crate::rkyv::Deserialize<$ty, D> for $crate::handle::ArchivedFlavored<$ty>
        where
            D: $crate::rkyv::rancor::Fallible + ?Sized,
            D::Error: $crate::rkyv::rancor::Source,
        {
            fn deserialize(&self, deserializer: &mut D) -> ::std::result::Result<$ty, D::Error> {
                $crate::handle::deserialize_flavored(self, deserializer)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::Segment;

    #[test]
    fn segment_handles_are_redirected_only_inside_redirecting_segments() {
        let seg = Segment::create(64).unwrap();
        let plain = seg.to_repr().unwrap();
        let seen = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = seen.clone();
        let redirected = redirecting_segments(
            move |repr: &HandleRepr| {
                counter.set(counter.get() + 1);
                // What the redirect encodes itself is not redirected again.
                let inner = Segment::create(8)?.to_repr()?;
                assert_eq!(inner.pid, sys::process::getpid());
                Ok(Some(HandleRepr { pid: 1, ..*repr }))
            },
            || seg.to_repr().unwrap(),
        );
        assert_eq!(seen.get(), 1);
        assert_eq!(redirected, HandleRepr { pid: 1, ..plain });
        assert_eq!(seg.to_repr().unwrap(), plain, "no redirect outside");
        // A redirect that declines keeps the handle; one that fails fails it.
        assert_eq!(
            redirecting_segments(|_: &HandleRepr| Ok(None), || seg.to_repr().unwrap()),
            plain
        );
        let failed = redirecting_segments(
            |_: &HandleRepr| Err(crate::Error::ManagerGone("test".into())),
            || seg.to_repr(),
        );
        assert!(matches!(failed, Err(crate::Error::ManagerGone(_))));
        // A panic inside does not leave the redirect behind.
        let caught = std::panic::catch_unwind(|| {
            redirecting_segments(|_: &HandleRepr| Ok(None), || panic!("inside"))
        });
        assert!(caught.is_err());
        assert_eq!(seg.to_repr().unwrap(), plain);
    }
}
