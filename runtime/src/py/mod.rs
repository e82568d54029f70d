//! Python workers on a Rust manager: CPython's `BaseManager` clients,
//! unchanged, use queues a Rust server owns.
//!
//! A server started with Python options (`multiproc serve --python-address`,
//! or the `BaseManager` builder's `python` option) listens on a second TCP
//! port that speaks CPython's manager protocol: its framing, its authkey
//! handshake (HMAC-MD5 for Python 3.11, `{sha256}` for 3.12 and later), and
//! requests as pickles. Each named queue answers Python clients as the
//! typeid of the same name (`QueueManager.register('get_task_queue')`, then
//! `m.get_task_queue()`), and stays reachable from Rust clients on the
//! native port as a queue of [`Value`].
//!
//! * [`Value`]: the Python values that travel (None, bool, int, float, str,
//!   bytes, tuple, list, dict).
//! * [`pickle`]: a bounded reader and writer for the data subset of pickle;
//!   nothing a pickle names is ever imported, looked up or run.
//! * [`auth`]: the server's side of CPython's authkey handshake.
//! * [`PythonOptions`]: where the listener listens and which queues it serves.

pub mod auth;
mod conn;
pub mod pickle;
mod server;
mod value;

pub use pickle::{Limits, PickleError};
pub(crate) use server::PyListener;
pub use server::{PythonOptions, PythonQueue, QUEUE_METHODS};
pub use value::{ArchivedValue, Value, ValueResolver};
