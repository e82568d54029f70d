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
//! barriers kept in the server ([`QueueProxy`], [`LockProxy`],
//! [`SemaphoreProxy`], [`BoundedSemaphoreProxy`], [`EventProxy`],
//! [`BarrierProxy`]), whose waiting calls wait in the server.
//!
//! Most users depend on the `multiproc` facade crate, which re-exports these.

mod client;
mod core;
mod dict;
mod list;
mod manager;
mod namespace;
mod queue;
mod remote;
mod sync;

pub use crate::core::{ArchivedProxy, ProxyRepr};
pub use dict::DictProxy;
pub use list::{ListProxy, SORT_TIMEOUT};
pub use manager::{Manager, ManagerBuilder};
pub use multiproc_proxy_macros::{Shareable, remote};
pub use multiproc_runtime::manager::ShutdownHandle;
pub use multiproc_runtime::manager::{PIN_TIMEOUT, ServerAddress};
pub use namespace::NamespaceProxy;
pub use queue::QueueProxy;
pub use remote::{
    BaseManager, ManagerServer, ObjectHandle, Parties, Registrable, RemoteManager, RemoteObject,
    SemaphoreValue, UserProxy, UserTypes,
};
pub use sync::{
    BarrierProxy, BoundedSemaphoreProxy, EventProxy, LockProxy, LockProxyGuard, SemaphoreProxy,
};

#[doc(hidden)]
pub mod __private {
    pub use crate::remote::{ObjectHandle, RemoteObject, UserProxy};
    pub use multiproc_runtime::__internal::field_travels;
    pub use multiproc_runtime::manager::{CallError, ServedObject};
    pub use multiproc_runtime::{Result, Shareable};
}

/// Remembers `authkey` for the TCP manager at `address`, so proxies to its
/// objects decoded in this process (from messages or arguments) can reconnect.
/// The `MULTIPROC_AUTHKEY` environment variable is the fallback.
pub fn set_manager_authkey(address: std::net::SocketAddr, authkey: &[u8]) {
    client::set_authkey(ServerAddress::Tcp(address), authkey)
}
