//! The manager server: it owns dicts, lists and namespaces that any process
//! changes through typed proxies (see the `multiproc-proxy` crate).
//!
//! * [`protocol`]: the request and response messages (rkyv, checked).
//! * [`channel`]: the local transport, a shared segment per connection.
//! * the client side: one connection per process and server (`client`), and
//!   the reference-counted core every handle to a server object holds (`core`).
//! * the object table and dispatch (a dict's entries kept compact, `dict`): objects as encoded bytes, reference
//!   counted by connections, stored values and in-flight pins.
//! * [`server`]: the serve loop that runs in the manager's process.
//! * [`startup`]: the server process a `Manager` or `BaseManager` starts,
//!   and what it makes before serving (the registry of names, named and
//!   user objects).
//! * [`remote`]: the TCP transport (authkey handshake, then frames).
//! * the gate: caps on connections still in their handshake, and a source
//!   that keeps failing it is refused for a while.
//! * [`user`]: Rust values a server owns, whose methods clients call by number.
//! * the waitable objects: locks, semaphores, events, barriers and queues the
//!   server keeps for remote clients, whose waits run outside the table's lock.

pub mod channel;
#[doc(hidden)]
pub mod client;
#[doc(hidden)]
pub mod core;
mod deaths;
mod dict;
mod dispatch;
pub(crate) mod frontend;
pub(crate) mod gate;
pub mod protocol;
pub mod remote;
mod response_buf;
pub mod server;
pub mod startup;
mod table;
pub mod user;
mod waitable;

pub use protocol::{LocalAddress, ObjectId, ObjectKind, ServerAddress};
pub use remote::{TcpClient, TcpOptions};
pub use server::{
    DEFAULT_MAX_OBJECTS, Limits, ServeOptions, Server, ServerBoot, ShutdownHandle, serve,
    serve_with,
};
pub use startup::UserTypes;
pub use table::PIN_TIMEOUT;
pub use user::{CallError, Factory, RemoteObject, ServedObject, USER_OBJECT_BIT};
