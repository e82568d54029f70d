//! What travels between a process pool and its workers, and the task entry points.

use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::codec::Shareable;
use crate::process::launch;

/// Why one item of a chunk has no result.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
#[rkyv(crate = rkyv)]
pub(crate) enum ItemFailure {
    /// The task panicked with this message, at this place (`file:line:column`)
    /// when the worker's panic hook saw it.
    Panicked {
        message: String,
        location: Option<String>,
    },
    /// The task could not run (argument not decodable, result not encodable).
    Failed(String),
}

/// What a worker sends back for a chunk: the results of the items that
/// returned, encoded together, and the failures by item index.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) struct ChunkOutcome {
    /// `R::encode_many` of the returned results, in item order (kept as
    /// encoded: no copy into a `Vec` before it is sent).
    #[rkyv(with = rkyv::with::AsVec)]
    pub returned: AlignedVec,
    /// Items (index within the chunk) that failed, in order.
    pub failures: Vec<(u32, ItemFailure)>,
}

impl ChunkOutcome {
    /// Every one of `len` items failed the same way.
    pub fn all_failed(len: usize, failure: ItemFailure) -> ChunkOutcome {
        ChunkOutcome {
            returned: AlignedVec::new(),
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

/// What a process worker tells the pool.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) enum ReportMsg {
    /// Outcomes of a chunk's items, in order.
    Done {
        worker: u64,
        job: u64,
        first: u64,
        count: u64,
        /// How long the worker spent running the chunk, in nanoseconds.
        busy_ns: u64,
        outcome: ChunkOutcome,
    },
    /// Outcomes of several chunks of a job, run together.
    DoneMany {
        worker: u64,
        job: u64,
        /// Each chunk's (first item, item count), in the order of the outcomes.
        parts: Vec<(u64, u64)>,
        /// How long the worker spent running them, in nanoseconds.
        busy_ns: u64,
        /// The outcomes of all the parts' items, in order.
        outcome: ChunkOutcome,
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
    /// Run these chunks, in order (one message for several chunks spares
    /// queue round trips when chunks are small).
    RunMany(Vec<TaskMsg>),
    /// Exit once done.
    Stop,
}

/// How a process worker runs chunks of one job: the function's address, each
/// chunk's encoded items and item count, and how long it may go on running
/// chunks after the first. Says how many chunks it ran, and their outcomes.
pub(crate) type ChunkEntryFn = fn(*const (), &[(&[u8], usize)], Duration) -> (usize, ChunkOutcome);

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

/// Task functions of several arguments, for `starmap` (two) and
/// `starmap3` … `starmap6`: each item is a tuple of the arguments.
macro_rules! star_fns {
    ($($name:ident($($arg:ident $val:ident),+);)+) => {$(
        #[doc = concat!("A `", stringify!($name), "` task: `f` called with each tuple item's fields.")]
        pub(crate) struct $name<$($arg,)+ R>(pub fn($($arg),+) -> R);

        impl<$($arg,)+ R> Clone for $name<$($arg,)+ R> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($arg,)+ R> Copy for $name<$($arg,)+ R> {}

        impl<$($arg,)+ R: Shareable> TaskFn<($($arg,)+), R> for $name<$($arg,)+ R>
        where
            ($($arg,)+): Shareable,
        {
            fn call(self, ($($val,)+): ($($arg,)+)) -> R {
                (self.0)($($val),+)
            }
            fn to_ptr(self) -> *const () {
                self.0 as *const ()
            }
            unsafe fn from_ptr(ptr: *const ()) -> Self {
                // SAFETY: the caller guarantees `ptr` came from `to_ptr` of
                // this same type, in this binary: it is such an `fn`.
                $name(unsafe { std::mem::transmute::<*const (), fn($($arg),+) -> R>(ptr) })
            }
        }
    )+};
}

star_fns! {
    Star2(A a, B b);
    Star3(A a, B b, C c);
    Star4(A a, B b, C c, D d);
    Star5(A a, B b, C c, D d, E e);
    Star6(A a, B b, C c, D d, E e, G g);
}

/// Runs chunks in a process worker: decode each chunk's items, call `f` on
/// each (catching panics), and encode all results together. Chunks after the
/// first run only until `budget` has passed.
pub(crate) fn chunk_entry<A: Shareable, R: Shareable, F: TaskFn<A, R>>(
    target: *const (),
    parts: &[(&[u8], usize)],
    budget: Duration,
) -> (usize, ChunkOutcome) {
    // SAFETY: `target` came from `F::to_ptr` in the pool, in this same
    // binary (a spawned worker checked the binary's identity before running).
    let f = unsafe { F::from_ptr(target) };
    let start = Instant::now();
    let mut returned = Vec::new();
    let mut failures = Vec::new();
    // A place noted for a panic before this chunk is not its tasks'.
    let _ = take_panic_location();
    let mut index = 0u32;
    let mut ran = 0;
    for &(args, count) in parts {
        if ran > 0 && start.elapsed() >= budget {
            break;
        }
        ran += 1;
        // A `Deserialize` of the user's may panic: the chunk's items fail
        // with its message, as with a decoding error; the worker goes on.
        let decoded = match launch::caught(|| A::decode_many(args)) {
            Ok(decoded) => decoded,
            Err(message) => {
                let failure = ItemFailure::Panicked {
                    message: format!("decoding the task's argument panicked: {message}"),
                    location: take_panic_location(),
                };
                fail_all(&mut failures, &mut index, count, failure);
                continue;
            }
        };
        let items = match decoded {
            Ok(items) if items.len() == count => items,
            // A corrupt chunk (only a task written to a Redis server by
            // something else can be): its count is not to be trusted.
            Ok(items) => {
                let msg = format!("the chunk holds {} items, not {count}", items.len());
                fail_all(&mut failures, &mut index, count, ItemFailure::Failed(msg));
                continue;
            }
            Err(e) => {
                let msg = format!("cannot decode the task's argument: {e}");
                fail_all(&mut failures, &mut index, count, ItemFailure::Failed(msg));
                continue;
            }
        };
        // Room for what decoded, not for what the counts claim.
        returned.reserve(items.len());
        for item in items {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.call(item))) {
                Ok(r) => returned.push(r),
                Err(p) => failures.push((
                    index,
                    ItemFailure::Panicked {
                        message: launch::panic_message(p.as_ref()),
                        location: take_panic_location(),
                    },
                )),
            }
            index += 1;
        }
    }
    let encoded = launch::caught(|| R::encode_many(&returned)).unwrap_or_else(|message| {
        Err(crate::error::Error::codec(format_args!(
            "encoding panicked: {message}"
        )))
    });
    let outcome = match encoded {
        Ok(bytes) => ChunkOutcome {
            returned: bytes,
            failures,
        },
        Err(e) => ChunkOutcome::all_failed(
            index as usize,
            ItemFailure::Failed(format!("cannot encode the task's result: {e}")),
        ),
    };
    (ran, outcome)
}

std::thread_local! {
    /// Where the latest panic on this thread happened, as the panic hook saw it.
    static PANIC_LOCATION: std::cell::RefCell<Option<String>> =
        const { std::cell::RefCell::new(None) };
}

/// Called from a panic hook: remembers where this thread panicked, for the
/// task that catches it ([`take_panic_location`]).
pub(crate) fn note_panic_location(info: &std::panic::PanicHookInfo<'_>) {
    if let Some(at) = info.location() {
        let at = format!("{}:{}:{}", at.file(), at.line(), at.column());
        // `try_with`: a panic while the thread-local is being torn down.
        let _ = PANIC_LOCATION.try_with(|slot| {
            if let Ok(mut slot) = slot.try_borrow_mut() {
                *slot = Some(at);
            }
        });
    }
}

/// Where the panic just caught on this thread happened, if a hook noted it.
pub(crate) fn take_panic_location() -> Option<String> {
    PANIC_LOCATION
        .try_with(|slot| slot.try_borrow_mut().ok().and_then(|mut s| s.take()))
        .ok()
        .flatten()
}

/// The error of a task that panicked: its message and, when known, where.
pub(crate) fn panic_error(message: &str, location: Option<&str>) -> crate::error::Error {
    crate::error::Error::Remote(match location {
        Some(at) => format!("task panicked at {at}: {message}"),
        None => format!("task panicked: {message}"),
    })
}

/// The most items of one chunk recorded as failed alike.
const MAX_FAILED_ALIKE: usize = 4096;

/// Records that the next `count` items all failed the same way: at most
/// [`MAX_FAILED_ALIKE`] of them, so that a corrupt count cannot make the
/// worker allocate without bound (the pool, which knows each chunk's real
/// length, fails any others as results that never came).
fn fail_all(failures: &mut Vec<(u32, ItemFailure)>, index: &mut u32, count: usize, f: ItemFailure) {
    let recorded = count.min(MAX_FAILED_ALIKE);
    for i in 0..recorded {
        failures.push((index.saturating_add(i as u32), f.clone()));
    }
    *index = index.saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::pool::jobs::RawChunk;

    fn tenfold_but_3(x: u64) -> u64 {
        assert!(x != 3, "no 3");
        x * 10
    }

    fn run(parts: &[(&[u8], usize)], budget: Duration) -> (usize, ChunkOutcome) {
        let f: fn(u64) -> u64 = tenfold_but_3;
        chunk_entry::<u64, u64, fn(u64) -> u64>(f.to_ptr(), parts, budget)
    }

    #[test]
    fn chunks_run_together_keep_each_items_place() {
        let a = u64::encode_many(&[1, 2]).unwrap();
        let b = u64::encode_many(&[3]).unwrap();
        let short = u64::encode_many(&[7]).unwrap();
        let d = u64::encode_many(&[5]).unwrap();
        let parts: [(&[u8], usize); 4] = [(&a, 2), (&b, 1), (&short, 2), (&d, 1)];
        let (ran, outcome) = run(&parts, Duration::from_secs(60));
        assert_eq!(ran, 4);
        let results = RawChunk::Encoded { len: 6, outcome }.into_typed::<u64>();
        assert_eq!(results.len(), 6);
        assert_eq!(results[0].as_ref().ok(), Some(&10));
        assert_eq!(results[1].as_ref().ok(), Some(&20));
        assert!(matches!(&results[2], Err(Error::Remote(m)) if m.contains("no 3")));
        // No hook noted a place in this test thread; the message stands alone.
        assert!(matches!(&results[2], Err(Error::Remote(m)) if m.starts_with("task panicked: ")));
        assert!(matches!(&results[3], Err(Error::Remote(m)) if m.contains("not 2")));
        assert!(matches!(&results[4], Err(Error::Remote(m)) if m.contains("not 2")));
        assert_eq!(results[5].as_ref().ok(), Some(&50));
    }

    /// A count from a tampered Redis task entry: the worker records a
    /// bounded number of failures instead of allocating one per claimed
    /// item (2^40 of them took a worker to an abort). Found by an attack
    /// battery.
    #[test]
    fn a_corrupt_count_costs_a_bounded_report() {
        let one = u64::encode_many(&[1]).unwrap();
        let (ran, outcome) = run(&[(&one, 1 << 40)], Duration::from_secs(60));
        assert_eq!(ran, 1);
        assert_eq!(outcome.failures.len(), MAX_FAILED_ALIKE);
        // What the pool makes of it for a chunk it knows to hold 3 items.
        let results = RawChunk::Encoded { len: 3, outcome }.into_typed::<u64>();
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(Error::Remote(m)) if m.contains("not 1099511627776")))
        );
    }

    #[test]
    fn a_spent_budget_stops_after_the_first_chunk() {
        let a = u64::encode_many(&[1, 2]).unwrap();
        let d = u64::encode_many(&[5]).unwrap();
        let (ran, outcome) = run(&[(&a, 2), (&d, 1)], Duration::ZERO);
        assert_eq!(ran, 1);
        let results = RawChunk::Encoded { len: 2, outcome }.into_typed::<u64>();
        let values: Vec<u64> = results.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(values, vec![10, 20]);
    }
}
