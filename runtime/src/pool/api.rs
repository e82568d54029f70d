//! The public pools: `Pool` (processes) and `ThreadPool` (threads), one API.

use std::sync::Arc;

use crate::codec::Shareable;
use crate::error::{Error, Result};
use crate::pool::async_result::{AsyncResult, Callbacks};
use crate::pool::core::{Config, Core};
use crate::pool::imap::IMapIterator;
use crate::pool::submit;
use crate::pool::thread_backend::Threads;

/// The most chunks a worker holds at once while its window adapts
/// (pipelining hides the round trip; see `core`'s scheduling notes).
pub(crate) const MAX_INFLIGHT: usize = 64;

/// Checks a user's `prefetch`.
pub(crate) fn check_prefetch(prefetch: Option<usize>) -> Result<()> {
    if prefetch == Some(0) {
        return Err(Error::InvalidArgument("prefetch must be at least 1".into()));
    }
    Ok(())
}

pub(crate) fn check_workers(n: usize, maxtasks: Option<usize>) -> Result<()> {
    if n == 0 {
        return Err(Error::InvalidArgument(
            "a pool needs at least one worker".into(),
        ));
    }
    if maxtasks == Some(0) {
        return Err(Error::InvalidArgument(
            "maxtasksperchild must be at least 1".into(),
        ));
    }
    Ok(())
}

/// The type of a task function on each kind of pool: a plain `fn` on a
/// process pool (a worker of the same binary finds it by its address), any
/// closure on a thread pool (its threads share it).
macro_rules! task_fn {
    (processes; $($arg:ident),+; $r:ident) => { fn($($arg),+) -> $r };
    (threads; $($arg:ident),+; $r:ident) => { impl Fn($($arg),+) -> $r + Send + Sync + 'static };
}
pub(crate) use task_fn;

/// `f` as the pool's task over single items.
macro_rules! plain_task {
    (processes; $f:ident) => {
        $f
    };
    (threads; $f:ident) => {
        $crate::pool::thread_backend::ThreadFn::new($f)
    };
}
pub(crate) use plain_task;

/// `f` as the pool's task over tuple items whose fields are its arguments.
macro_rules! star_task {
    (processes; $f:ident; $star:ident; $($arg:ident $val:ident),+) => {
        $crate::pool::wire::$star($f)
    };
    (threads; $f:ident; $star:ident; $($arg:ident $val:ident),+) => {
        $crate::pool::thread_backend::ThreadFn::new(
            move |($($val,)+): ($($arg,)+)| $f($($val),+),
        )
    };
}
pub(crate) use star_task;

/// `starmap` and its forms for one number of arguments.
macro_rules! starmap_methods {
    (
        $kind:ident [$($data:tt)+] $n:literal $note:literal
        $starmap:ident $starmap_async:ident $starmap_async_with:ident
        $star:ident ($($arg:ident $val:ident),+)
    ) => {
        #[doc = concat!(
            "Calls `f` with the ", $n, " fields of every tuple item as its arguments ",
            "(Python's `starmap`), and returns the results in order, as [`map`](Self::map).",
            $note
        )]
        pub fn $starmap<$($arg,)+ R: $($data)+>(
            &self,
            f: task_fn!($kind; $($arg),+; R),
            items: impl IntoIterator<Item = ($($arg,)+)>,
        ) -> Result<Vec<R>>
        where
            ($($arg,)+): $($data)+,
        {
            self.$starmap_async(f, items)?.get()
        }

        #[doc = concat!("[`", stringify!($starmap), "`](Self::", stringify!($starmap), ") whose result comes later.")]
        pub fn $starmap_async<$($arg,)+ R: $($data)+>(
            &self,
            f: task_fn!($kind; $($arg),+; R),
            items: impl IntoIterator<Item = ($($arg,)+)>,
        ) -> Result<AsyncResult<Vec<R>>>
        where
            ($($arg,)+): $($data)+,
        {
            self.$starmap_async_with(f, items, Callbacks::new())
        }

        #[doc = concat!("[`", stringify!($starmap_async), "`](Self::", stringify!($starmap_async), ") with callbacks.")]
        pub fn $starmap_async_with<$($arg,)+ R: $($data)+>(
            &self,
            f: task_fn!($kind; $($arg),+; R),
            items: impl IntoIterator<Item = ($($arg,)+)>,
            callbacks: Callbacks<Vec<R>>,
        ) -> Result<AsyncResult<Vec<R>>>
        where
            ($($arg,)+): $($data)+,
        {
            let items: Vec<($($arg,)+)> = submit::collect_input(items)?;
            submit::map_async(
                self.pool_core(),
                self.pool_workers(),
                star_task!($kind; f; $star; $($arg $val),+),
                items,
                self.call_chunksize(),
                callbacks,
            )
        }
    };
}
pub(crate) use starmap_methods;

/// The calls over many items (`map`, `starmap`, `imap`…), on a pool and on
/// its [`Chunked`] view, for one kind of pool (`processes` or `threads`)
/// whose task arguments and results have the bound in brackets. They need `pool_core()`,
/// `pool_workers()` and `call_chunksize()` on `Self`.
macro_rules! batch_methods {
    ($kind:ident [$($data:tt)+]) => {
        /// Applies `f` to every item and returns the results in order, or the
        /// error of the first item (by index) that failed, once every item
        /// is done. Chunk size: Python's default here; set one with
        /// `chunksize(n)`, which gives a [`Chunked`] view.
        ///
        /// `f` is a plain `fn` on a [`Pool`](crate::Pool) (a worker process
        /// finds it in its copy of this binary) and any `Fn` closure on a
        /// [`ThreadPool`](crate::ThreadPool), as in every call of the pools.
        ///
        /// The input is read whole first, here; if it panics, the call fails
        /// with [`Error::InputPanicked`] and runs nothing. A `Pool` encodes
        /// its items a chunk at a time as workers take them; a `ThreadPool`
        /// moves them to its threads as they are.
        pub fn map<A: $($data)+, R: $($data)+>(
            &self,
            f: task_fn!($kind; A; R),
            items: impl IntoIterator<Item = A>,
        ) -> Result<Vec<R>> {
            self.map_async(f, items)?.get()
        }

        /// [`map`](Self::map) whose result comes later.
        pub fn map_async<A: $($data)+, R: $($data)+>(
            &self,
            f: task_fn!($kind; A; R),
            items: impl IntoIterator<Item = A>,
        ) -> Result<AsyncResult<Vec<R>>> {
            self.map_async_with(f, items, Callbacks::new())
        }

        /// [`map_async`](Self::map_async) with callbacks.
        pub fn map_async_with<A: $($data)+, R: $($data)+>(
            &self,
            f: task_fn!($kind; A; R),
            items: impl IntoIterator<Item = A>,
            callbacks: Callbacks<Vec<R>>,
        ) -> Result<AsyncResult<Vec<R>>> {
            let items: Vec<A> = submit::collect_input(items)?;
            submit::map_async(
                self.pool_core(),
                self.pool_workers(),
                plain_task!($kind; f),
                items,
                self.call_chunksize(),
                callbacks,
            )
        }

        starmap_methods!(
            $kind [$($data)+] "two" "\n\nMore arguments: [`starmap3`](Self::starmap3) … [`starmap6`](Self::starmap6) \
(the number is in the name because a `fn` item becomes a `fn` pointer only where \
the call says how many arguments it takes)."
            starmap starmap_async starmap_async_with Star2 (A a, B b));
        starmap_methods!($kind [$($data)+] "three" "" starmap3 starmap3_async starmap3_async_with Star3 (A a, B b, C c));
        starmap_methods!($kind [$($data)+] "four" "" starmap4 starmap4_async starmap4_async_with Star4 (A a, B b, C c, D d));
        starmap_methods!($kind [$($data)+] "five" "" starmap5 starmap5_async starmap5_async_with Star5 (A a, B b, C c, D d, E e));
        starmap_methods!($kind [$($data)+] "six" "" starmap6 starmap6_async starmap6_async_with Star6 (A a, B b, C c, D d, E e, G g));

        /// Applies `f` lazily over `items`, yielding results in order.
        /// Chunk size: 1 here, as in Python; set one with
        /// `chunksize(n)`, which gives a [`Chunked`] view.
        ///
        /// The call itself can fail (a closed pool), so it is a `Result`
        /// around the iterator, and each item is a `Result` too: write
        /// `for r in pool.imap(f, xs)? { let r = r?; … }`. (A `for` over the
        /// call without the `?` loops over the `Result`, once, with only a
        /// warning.)
        pub fn imap<A, R, I>(&self, f: task_fn!($kind; A; R), items: I) -> Result<IMapIterator<R>>
        where
            A: $($data)+,
            R: $($data)+,
            I: IntoIterator<Item = A>,
            I::IntoIter: Send + 'static,
        {
            submit::imap(
                self.pool_core(),
                self.pool_workers(),
                plain_task!($kind; f),
                items.into_iter(),
                self.call_chunksize(),
                true,
            )
        }

        /// As [`imap`](Self::imap), yielding results as they finish.
        pub fn imap_unordered<A, R, I>(&self, f: task_fn!($kind; A; R), items: I) -> Result<IMapIterator<R>>
        where
            A: $($data)+,
            R: $($data)+,
            I: IntoIterator<Item = A>,
            I::IntoIter: Send + 'static,
        {
            submit::imap(
                self.pool_core(),
                self.pool_workers(),
                plain_task!($kind; f),
                items.into_iter(),
                self.call_chunksize(),
                false,
            )
        }
    };
}
pub(crate) use batch_methods;

/// The methods both pools share, with Python's names.
macro_rules! pool_methods {
    ($pool:ty, $backend:ty, $kind:ident [$($data:tt)+]) => {
        /// Runs `f(arg)` in a worker and waits for the result.
        pub fn apply<A: $($data)+, R: $($data)+>(&self, f: task_fn!($kind; A; R), arg: A) -> Result<R> {
            self.apply_async(f, arg)?.get()
        }

        /// Runs `f(arg)` in a worker; the result comes later.
        pub fn apply_async<A: $($data)+, R: $($data)+>(
            &self,
            f: task_fn!($kind; A; R),
            arg: A,
        ) -> Result<AsyncResult<R>> {
            self.apply_async_with(f, arg, Callbacks::new())
        }

        /// [`apply_async`](Self::apply_async) with callbacks, run in the
        /// pool's result-handler thread before the result is ready.
        pub fn apply_async_with<A: $($data)+, R: $($data)+>(
            &self,
            f: task_fn!($kind; A; R),
            arg: A,
            callbacks: Callbacks<R>,
        ) -> Result<AsyncResult<R>> {
            submit::apply_async(&self.core, plain_task!($kind; f), arg, callbacks)
        }

        /// The calls over many items with `n` items to a chunk (Python's
        /// `chunksize=`): `pool.chunksize(8).map(f, items)`.
        ///
        /// A chunk goes to one worker as one message and its results come
        /// back together: larger chunks cost fewer hand-overs, smaller ones
        /// share the work out more evenly. `0` makes each call fail with
        /// [`Error::InvalidArgument`].
        pub fn chunksize(&self, n: usize) -> Chunked<'_, $pool> {
            Chunked {
                pool: self,
                chunksize: n,
            }
        }

        batch_methods!($kind [$($data)+]);

        /// Accepts no more work; workers exit once the submitted work is done.
        pub fn close(&self) {
            self.core.close()
        }

        /// Waits for the workers to exit; an error while the pool is still open,
        /// or from one of its own callbacks (which run on the thread it would wait for).
        pub fn join(&self) -> Result<()> {
            self.core.join()
        }

        /// [`join`](Self::join), waiting at most `timeout`: [`Error::Timeout`]
        /// if the workers have not all exited by then (a stopped one, say).
        pub fn join_timeout(&self, timeout: std::time::Duration) -> Result<()> {
            self.core.join_timeout(timeout)
        }

        /// Stops the workers at once; unfinished tasks fail.
        pub fn terminate(&self) {
            self.core.terminate()
        }

        /// The number of workers.
        pub fn processes(&self) -> usize {
            self.workers
        }

        fn pool_core(&self) -> &Arc<Core<$backend>> {
            &self.core
        }

        fn pool_workers(&self) -> usize {
            self.workers
        }

        fn call_chunksize(&self) -> Option<usize> {
            None
        }
    };
}
/// A pool with a chunk size for its calls over many items, from
/// [`Pool::chunksize`](crate::Pool::chunksize) or
/// [`ThreadPool::chunksize`]: `pool.chunksize(8).map(f, items)`.
///
/// It borrows the pool and holds nothing else; make one per call or keep it.
#[derive(Debug, Clone, Copy)]
pub struct Chunked<'a, P> {
    pub(crate) pool: &'a P,
    pub(crate) chunksize: usize,
}

/// `Chunked`'s methods for one kind of pool.
macro_rules! chunked_methods {
    ($pool:ty, $backend:ty, $kind:ident [$($data:tt)+]) => {
        impl Chunked<'_, $pool> {
            batch_methods!($kind [$($data)+]);

            fn pool_core(&self) -> &Arc<Core<$backend>> {
                &self.pool.core
            }

            fn pool_workers(&self) -> usize {
                self.pool.workers
            }

            fn call_chunksize(&self) -> Option<usize> {
                Some(self.chunksize)
            }
        }
    };
}

chunked_methods!(ThreadPool, Threads, threads [Send + 'static]);
chunked_methods!(
    crate::Pool,
    crate::pool::flavor::PoolBackend,
    processes[Shareable]
);
pub(crate) use pool_methods;

/// A pool of worker threads with the same API as [`Pool`](crate::Pool)
/// (Python's `multiprocessing.pool.ThreadPool`), for I/O-bound work.
///
/// Its tasks run in this process, so they may be closures
/// (`Fn(A) -> R + Send + Sync + 'static`, shared by the threads) as well as
/// `fn` items, and nothing is encoded: arguments and results are moved to
/// and from the threads, so they need only be `Send + 'static`, not
/// [`Shareable`]. A task that panics fails with `Error::Remote` carrying the
/// panic message, and its thread takes the next task.
///
/// A thread cannot be killed: `terminate` stops handing out work and fails
/// what is unfinished, but a task already running runs to its end in the
/// background.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// fn double(x: u32) -> u32 { x * 2 }
/// let pool = multiproc::ThreadPool::new(2).unwrap();
/// assert_eq!(pool.map(double, 1..=3).unwrap(), vec![2, 4, 6]);
///
/// let calls = Arc::new(AtomicU32::new(0));
/// let counted = calls.clone();
/// let tripled = pool
///     .map(move |x: u32| { counted.fetch_add(1, Ordering::Relaxed); x * 3 }, 1..=3)
///     .unwrap();
/// assert_eq!(tripled, vec![3, 6, 9]);
/// assert_eq!(calls.load(Ordering::Relaxed), 3);
/// ```
pub struct ThreadPool {
    pub(crate) core: Arc<Core<Threads>>,
    pub(crate) workers: usize,
}

impl ThreadPool {
    /// A pool of `n` threads.
    pub fn new(n: usize) -> Result<ThreadPool> {
        ThreadPool::builder().threads(n).build()
    }

    /// A builder for the other options.
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::builder()
    ///     .threads(2)
    ///     .initializer(|| println!("a worker thread starts"))
    ///     .maxtasksperchild(100)
    ///     .build()
    ///     .unwrap();
    /// # drop(pool);
    /// ```
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::default()
    }

    /// A pool of `n` threads, each running `initializer(arg)` first, each
    /// replaced after `maxtasksperchild` chunks if set.
    ///
    /// [`ThreadPool::builder`] does the same, and takes a closure.
    pub fn with_options<A: Clone + Send + Sync + 'static>(
        n: usize,
        initializer: Option<(fn(A), A)>,
        maxtasksperchild: Option<usize>,
    ) -> Result<ThreadPool> {
        let mut builder = ThreadPool::builder().threads(n);
        if let Some((f, a)) = initializer {
            builder = builder.initializer(move || f(a.clone()));
        }
        if let Some(m) = maxtasksperchild {
            builder = builder.maxtasksperchild(m);
        }
        builder.build()
    }

    pool_methods!(ThreadPool, Threads, threads [Send + 'static]);
}

/// Builds a [`ThreadPool`] (Python's `ThreadPool(processes, initializer,
/// initargs, maxtasksperchild)`).
#[derive(Default)]
pub struct ThreadPoolBuilder {
    threads: Option<usize>,
    init: Option<crate::pool::thread_backend::Initializer>,
    maxtasks: Option<usize>,
    prefetch: Option<usize>,
}

impl std::fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("threads", &self.threads)
            .field("initializer", &self.init.is_some())
            .field("maxtasksperchild", &self.maxtasks)
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

impl ThreadPoolBuilder {
    /// The number of threads (default: `cpu_count()`).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Runs `f` once at the start of each worker thread. A panic in it
    /// breaks the pool: its calls fail with `Error::Remote`.
    pub fn initializer(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.init = Some(Arc::new(f));
        self
    }

    /// Replaces each thread after it has run this many chunks.
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.maxtasks = Some(n);
        self
    }

    /// The most chunks a thread holds at once, as
    /// [`PoolBuilder::prefetch`](crate::PoolBuilder::prefetch).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n);
        self
    }

    /// Starts the threads.
    pub fn build(self) -> Result<ThreadPool> {
        let n = self.threads.unwrap_or_else(crate::process::cpu_count);
        check_workers(n, self.maxtasks)?;
        check_prefetch(self.prefetch)?;
        let (backend, reports) = Threads::new(self.init, self.maxtasks);
        let config = Config {
            processes: n,
            maxtasks: self.maxtasks,
            cap: MAX_INFLIGHT,
            prefetch: self.prefetch,
        };
        Ok(ThreadPool {
            core: Arc::new(Core::start(backend, reports, config)?),
            workers: n,
        })
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("workers", &self.workers)
            .finish()
    }
}
