//! What travels between a process pool and its workers, and the task entry points.

use rkyv::{Archive, Deserialize, Serialize};

use crate::codec::Shareable;
use crate::process::launch;

/// Why one item of a chunk has no result.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
#[rkyv(crate = rkyv)]
pub(crate) enum ItemFailure {
    /// The task panicked with this message.
    Panicked(String),
    /// The task could not run (argument not decodable, result not encodable).
    Failed(String),
}

/// What a worker sends back for a chunk: the results of the items that
/// returned, encoded together, and the failures by item index.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) struct ChunkOutcome {
    /// `R::encode_many` of the returned results, in item order.
    pub returned: Vec<u8>,
    /// Items (index within the chunk) that failed, in order.
    pub failures: Vec<(u32, ItemFailure)>,
}

impl ChunkOutcome {
    /// Every one of `len` items failed the same way.
    pub fn all_failed(len: usize, failure: ItemFailure) -> ChunkOutcome {
        ChunkOutcome {
            returned: Vec::new(),
            failures: (0..len as u32).map(|i| (i, failure.clone())).collect(),
        }
    }
}

/// A chunk of work for one process worker.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) struct TaskMsg {
    pub job: u64,
    pub first: u64,
    pub count: u64,
    pub entry_offset: i64,
    pub target_offset: i64,
    /// `A::encode_many` of the chunk's items.
    pub args: Vec<u8>,
    /// The pool wants this chunk's results only with the rest of its job's.
    pub together: bool,
}

/// One chunk's outcomes, in a worker's report.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) struct ChunkDone {
    pub job: u64,
    pub first: u64,
    pub count: u64,
    pub outcome: ChunkOutcome,
}

/// What a process worker tells the pool.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) enum ReportMsg {
    /// Outcomes of some of the chunks the worker holds, in the order it ran them.
    Done { worker: u64, chunks: Vec<ChunkDone> },
    /// The initializer failed; the worker exits.
    InitFailed { worker: u64, message: String },
    /// Not from a worker: wakes the result handler.
    Wake,
}

/// What the pool tells a process worker.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) enum OrderMsg {
    /// Run these chunks, in order (one message for several chunks spares
    /// queue round trips when chunks are small).
    Run(Vec<TaskMsg>),
    /// Exit once done.
    Stop,
}

/// How a process worker runs a chunk: the function's address, the encoded
/// items and their count.
pub(crate) type ChunkEntryFn = fn(*const (), &[u8], usize) -> ChunkOutcome;

/// A task function: a plain `fn(A) -> R`, or a two-argument one for `starmap`.
pub(crate) trait TaskFn<A, R>: Copy + Send + Sync + 'static {
    /// Calls the function.
    fn call(self, arg: A) -> R;
    /// The function's address (to find it again in a worker of this binary).
    fn to_ptr(self) -> *const ();
    /// The function at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must come from [`TaskFn::to_ptr`] of the same type, in this
    /// binary (a worker that checked it runs the same binary).
    unsafe fn from_ptr(ptr: *const ()) -> Self;
}

impl<A: Shareable, R: Shareable> TaskFn<A, R> for fn(A) -> R {
    fn call(self, arg: A) -> R {
        self(arg)
    }
    fn to_ptr(self) -> *const () {
        self as *const ()
    }
    unsafe fn from_ptr(ptr: *const ()) -> Self {
        // SAFETY: the caller guarantees `ptr` is an `fn(A) -> R` of this binary.
        unsafe { std::mem::transmute::<*const (), fn(A) -> R>(ptr) }
    }
}

/// A two-argument function used by `starmap`: each item is an `(A, B)` pair.
pub(crate) struct Star2<A, B, R>(pub fn(A, B) -> R);

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
    fn to_ptr(self) -> *const () {
        self.0 as *const ()
    }
    unsafe fn from_ptr(ptr: *const ()) -> Self {
        // SAFETY: the caller guarantees `ptr` is an `fn(A, B) -> R` of this binary.
        Star2(unsafe { std::mem::transmute::<*const (), fn(A, B) -> R>(ptr) })
    }
}

/// Runs a chunk in a process worker: decode all items, call `f` on each
/// (catching panics), encode all results.
pub(crate) fn chunk_entry<A: Shareable, R: Shareable, F: TaskFn<A, R>>(
    target: *const (),
    args: &[u8],
    count: usize,
) -> ChunkOutcome {
    let items = match A::decode_many(args) {
        Ok(items) if items.len() == count => items,
        Ok(items) => {
            let msg = format!("the chunk holds {} items, not {count}", items.len());
            return ChunkOutcome::all_failed(count, ItemFailure::Failed(msg));
        }
        Err(e) => {
            let msg = format!("cannot decode the task's argument: {e}");
            return ChunkOutcome::all_failed(count, ItemFailure::Failed(msg));
        }
    };
    // SAFETY: `target` came from `F::to_ptr` in the pool, in this same
    // binary (a spawned worker checked the binary's identity before running).
    let f = unsafe { F::from_ptr(target) };
    let mut returned = Vec::with_capacity(count);
    let mut failures = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.call(item))) {
            Ok(r) => returned.push(r),
            Err(p) => failures.push((
                i as u32,
                ItemFailure::Panicked(launch::panic_message(p.as_ref())),
            )),
        }
    }
    match R::encode_many(&returned) {
        Ok(bytes) => ChunkOutcome {
            returned: bytes.into_vec(),
            failures,
        },
        Err(e) => ChunkOutcome::all_failed(
            count,
            ItemFailure::Failed(format!("cannot encode the task's result: {e}")),
        ),
    }
}
