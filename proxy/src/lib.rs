//! Client side of multiproc managers: typed proxies to objects a manager server owns.
//!
//! [`Manager::start`] starts a server process; its `dict`, `list` and
//! `namespace` methods create objects there and return proxies
//! ([`DictProxy`], [`ListProxy`], [`NamespaceProxy`]). A proxy is cheap to
//! clone, can be passed to child processes (under both start methods) and
//! inside messages, and can be stored inside other managed objects. Each
//! call is a round trip over a shared-memory channel (one per process and
//! server, shared by its threads).
//!
//! [`BaseManager`] serves the same objects over TCP with an authkey
//! (Python's remote managers), plus queues, locks, semaphores, events and
//! barriers kept in the server, whose waiting calls wait in the server.
//! Locks and events are the runtime's own `Lock` and `Event` in their
//! remote flavour, so one function serves both managers, and so are the
//! semaphores, barriers and queues (`Queue`, `JoinableQueue`).
//!
//! Most users depend on the `multiproc` facade crate, which re-exports these.

mod dict;
mod list;
mod manager;
mod namespace;
#[cfg(feature = "redis")]
mod redis;
mod remote;

/// Encoding for a value stored in a Redis container: a manager proxy inside
/// it is refused with `Error::InvalidArgument` (nothing would keep its
/// object while Redis stores the value).
#[cfg(feature = "redis")]
trait EncodeForRedis {
    fn encode_stored(&self)
    -> multiproc_runtime::Result<multiproc_runtime::rkyv::util::AlignedVec>;
}

#[cfg(feature = "redis")]
impl<T: multiproc_runtime::Shareable> EncodeForRedis for T {
    fn encode_stored(
        &self,
    ) -> multiproc_runtime::Result<multiproc_runtime::rkyv::util::AlignedVec> {
        client::storing_outside(|| self.encode())
    }
}

pub use multiproc_runtime::manager::core::{ArchivedProxy, ProxyRepr};
// The client core lives in the runtime (so runtime handles can have a remote
// flavour); the container proxies here name it by these paths.
pub use dict::DictProxy;
pub use list::{ListProxy, SORT_TIMEOUT};
pub use manager::{Manager, ManagerBuilder};
pub use multiproc_proxy_macros::{Shareable, ShmSafe, remote};
pub use multiproc_runtime::manager::ShutdownHandle;
pub use multiproc_runtime::manager::{PIN_TIMEOUT, ServerAddress};
pub use multiproc_runtime::manager::{RemoteObject, UserTypes};
use multiproc_runtime::manager::{client, core};
pub use namespace::NamespaceProxy;
#[cfg(feature = "redis")]
pub use redis::RedisManager;
pub use remote::{
    BaseManager, ManagerServer, ObjectHandle, Parties, Registrable, RemoteManager, SemaphoreValue,
    UserProxy,
};

/// A lock a remote manager keeps: now the one [`Lock`](multiproc_runtime::Lock) type.
#[deprecated(note = "use `Lock`: local and remote locks are one type")]
pub type LockProxy = multiproc_runtime::Lock;
/// The guard of a remote lock: now [`LockGuard`](multiproc_runtime::LockGuard).
#[deprecated(note = "use `LockGuard`: local and remote locks are one type")]
pub type LockProxyGuard<'a> = multiproc_runtime::LockGuard<'a>;
/// An event a remote manager keeps: now the one [`Event`](multiproc_runtime::Event) type.
#[deprecated(note = "use `Event`: local and remote events are one type")]
pub type EventProxy = multiproc_runtime::Event;
/// A semaphore a remote manager keeps: now the one
/// [`Semaphore`](multiproc_runtime::Semaphore) type.
#[deprecated(note = "use `Semaphore`: local and remote semaphores are one type")]
pub type SemaphoreProxy = multiproc_runtime::Semaphore;
/// A bounded semaphore a remote manager keeps: now the one
/// [`BoundedSemaphore`](multiproc_runtime::BoundedSemaphore) type.
#[deprecated(note = "use `BoundedSemaphore`: local and remote semaphores are one type")]
pub type BoundedSemaphoreProxy = multiproc_runtime::BoundedSemaphore;
/// A barrier a remote manager keeps: now the one
/// [`Barrier`](multiproc_runtime::Barrier) type.
#[deprecated(note = "use `Barrier`: local and remote barriers are one type")]
pub type BarrierProxy = multiproc_runtime::Barrier;
/// A queue a remote manager keeps: now the one
/// [`Queue`](multiproc_runtime::Queue) type (a remote [`JoinableQueue`](multiproc_runtime::JoinableQueue)
/// has `task_done`/`join`).
#[deprecated(note = "use `Queue` (or `JoinableQueue`): local and remote queues are one type")]
pub type QueueProxy<T> = multiproc_runtime::Queue<T>;

/// The error for a container proxy decoded from a form that is not one
/// (a shared segment handle), or a Redis form in a build without `redis`.
pub(crate) fn not_a_container(
    what: &str,
    repr: &multiproc_runtime::handle::FlavorRepr,
) -> multiproc_runtime::Error {
    match repr {
        multiproc_runtime::handle::FlavorRepr::Redis(_) => {
            multiproc_runtime::Error::InvalidArgument(format!(
                "a {what} kept in Redis needs multiproc built with the `redis` feature"
            ))
        }
        _ => multiproc_runtime::Error::TypeMismatch {
            expected: what.into(),
            found: "a shared-memory handle".into(),
        },
    }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::remote::{ObjectHandle, UserProxy};
    pub use multiproc_runtime::__internal::field_travels;
    pub use multiproc_runtime::manager::RemoteObject;
    pub use multiproc_runtime::manager::{CallError, ServedObject};
    pub use multiproc_runtime::{Result, Shareable};
}

/// Remembers `authkey` for the TCP manager at `address`, so proxies to its
/// objects decoded in this process (from messages or arguments) can reconnect.
/// The `MULTIPROC_AUTHKEY` environment variable is the fallback.
pub fn set_manager_authkey(address: std::net::SocketAddr, authkey: &[u8]) {
    client::set_authkey(ServerAddress::Tcp(address), authkey)
}
