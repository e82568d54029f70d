//! What travels between a process pool and its workers, and the task entry points.

use rkyv::{Archive, Deserialize, Serialize};

use crate::codec::Shareable;
use crate::process::launch::{self, Outcome};

/// One item's outcome, as a worker sends it back.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) enum ItemOutcome {
    /// The encoded result.
    Returned(Vec<u8>),
    /// The task panicked with this message.
    Panicked(String),
    /// The task could not run (argument not decodable, result not encodable).
    Failed(String),
}

impl From<Outcome> for ItemOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Returned(b) => ItemOutcome::Returned(b),
            Outcome::Panicked(m) => ItemOutcome::Panicked(m),
            Outcome::Failed(m) | Outcome::Mismatch(m) => ItemOutcome::Failed(m),
        }
    }
}

/// A chunk of work for one process worker.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) struct TaskMsg {
    pub job: u64,
    pub first: u64,
    pub entry_offset: i64,
    pub target_offset: i64,
    pub args: Vec<Vec<u8>>,
}

/// What a process worker tells the pool.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) enum ReportMsg {
    /// Outcomes of a chunk's items, in order.
    Done {
        worker: u64,
        job: u64,
        first: u64,
        outcomes: Vec<ItemOutcome>,
    },
    /// The initializer failed; the worker exits.
    InitFailed { worker: u64, message: String },
    /// Not from a worker: wakes the result handler.
    Wake,
}

/// What the pool tells a process worker.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) enum OrderMsg {
    /// Run this chunk.
    Run(TaskMsg),
    /// Exit once done.
    Stop,
}

/// A task function: a plain `fn(A) -> R`, or a two-argument one for `starmap`.
pub trait TaskFn<A, R>: Copy + Send + Sync + 'static {
    /// Calls the function.
    #[doc(hidden)]
    fn call(self, arg: A) -> R;
    /// The spawn entry point and function address for process workers.
    #[doc(hidden)]
    fn entry(self) -> EntryPoint;
}

/// Where a process worker finds a task function (see `process::launch`).
#[doc(hidden)]
pub struct EntryPoint {
    pub(crate) entry: launch::EntryFn,
    pub(crate) target: *const (),
}

impl<A: Shareable, R: Shareable> TaskFn<A, R> for fn(A) -> R {
    fn call(self, arg: A) -> R {
        self(arg)
    }
    fn entry(self) -> EntryPoint {
        EntryPoint {
            entry: launch::entry::<A, R>,
            target: self as *const (),
        }
    }
}

/// A two-argument function used by `starmap`: each item is an `(A, B)` pair.
pub struct Star2<A, B, R>(pub fn(A, B) -> R);

impl<A, B, R> Clone for Star2<A, B, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A, B, R> Copy for Star2<A, B, R> {}

impl<A: Shareable, B: Shareable, R: Shareable> TaskFn<(A, B), R> for Star2<A, B, R>
where
    (A, B): Shareable,
{
    fn call(self, (a, b): (A, B)) -> R {
        (self.0)(a, b)
    }
    fn entry(self) -> EntryPoint {
        EntryPoint {
            entry: entry_star2::<A, B, R>,
            target: self.0 as *const (),
        }
    }
}

fn entry_star2<A: Shareable, B: Shareable, R: Shareable>(target: *const (), args: &[u8]) -> Outcome
where
    (A, B): Shareable,
{
    let (a, b) = match <(A, B)>::decode(args) {
        Ok(x) => x,
        Err(e) => return Outcome::Failed(format!("cannot decode the task's arguments: {e}")),
    };
    // SAFETY: `target` is the address of the pool's `fn(A, B) -> R` in this
    // same binary (workers check the binary's identity when they start), and
    // this entry was instantiated for the same A, B and R.
    let f = unsafe { std::mem::transmute::<*const (), fn(A, B) -> R>(target) };
    launch::run_caught(move || f(a, b))
}
