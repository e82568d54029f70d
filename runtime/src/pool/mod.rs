//! Pools of workers: Python's `Pool` (processes) and `ThreadPool` (threads).
//!
//! Both share one machinery ([`core`](self)) and one API: `apply`,
//! `apply_async`, `map`, `map_async`, `starmap`, `starmap_async`,
//! `starmap3` … `starmap6`, `imap`, `imap_unordered`, `close`, `join`,
//! `terminate`. They differ in what a task is (`backend::Tasks`): a
//! `Pool`'s is a plain `fn` with encoded items and results, a
//! `ThreadPool`'s any `Fn` closure with moved ones. A task that panics gives
//! `Error::Remote` with the panic message, and the worker carries on. A
//! process worker that dies (SIGKILL, abort, OOM) fails exactly the tasks it
//! had taken with `Error::WorkerDied` (they are not retried: a task that kills
//! its worker would kill the next one too) and is replaced; tasks still
//! queued for it run on another worker.

mod api;
mod async_result;
mod backend;
mod core;
mod flavor;
mod imap;
mod jobs;
mod process_backend;
mod process_pool;
#[cfg(feature = "redis")]
mod redis_backend;
#[cfg(feature = "redis")]
mod redis_wire;
#[cfg(feature = "redis")]
pub(crate) mod redis_worker;
mod submit;
mod thread_backend;
mod wire;

pub use api::{Chunked, ThreadPool, ThreadPoolBuilder};
pub use async_result::{AsyncResult, Callbacks};
pub use imap::IMapIterator;
#[cfg(feature = "redis")]
pub use process_pool::{DEFAULT_LEASE, DEFAULT_MAX_RETRIES};
pub use process_pool::{Pool, PoolBuilder};
#[cfg(feature = "redis")]
pub use redis_backend::WorkerInfo;
#[cfg(feature = "redis")]
pub use redis_wire::WORKER_ENV;
