//! The public pools: `Pool` (processes) and `ThreadPool` (threads), one API.

use std::sync::Arc;

use crate::codec::Shareable;
use crate::error::{Error, Result};
use crate::pool::async_result::{AsyncResult, Callbacks};
use crate::pool::core::{Config, Core};
use crate::pool::imap::IMapIterator;
use crate::pool::submit;
use crate::pool::thread_backend::Threads;
use crate::pool::wire::Star2;

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

/// The calls over many items (`map`, `starmap`, `imap`…), on a pool and on
/// its [`Chunked`] view. They need `pool_core()`, `pool_workers()` and
/// `call_chunksize()` on `Self`.
macro_rules! batch_methods {
    () => {
        /// Applies `f` to every item and returns the results in order, or the
        /// error of the first item (by index) that failed, once every item
        /// is done. Chunk size: Python's default here; set one with
        /// [`chunksize`](Self::chunksize).
        ///
        /// The input is read whole first, here; if it panics, the call fails
        /// with [`Error::InputPanicked`] and runs nothing. Its items are
        /// encoded a chunk at a time as workers take them.
        pub fn map<A: Shareable, R: Shareable>(
            &self,
            f: fn(A) -> R,
            items: impl IntoIterator<Item = A>,
        ) -> Result<Vec<R>> {
            self.map_async(f, items)?.get()
        }

        /// [`map`](Self::map) whose result comes later.
        pub fn map_async<A: Shareable, R: Shareable>(
            &self,
            f: fn(A) -> R,
            items: impl IntoIterator<Item = A>,
        ) -> Result<AsyncResult<Vec<R>>> {
            self.map_async_with(f, items, Callbacks::new())
        }

        /// [`map_async`](Self::map_async) with callbacks.
        pub fn map_async_with<A: Shareable, R: Shareable>(
            &self,
            f: fn(A) -> R,
            items: impl IntoIterator<Item = A>,
            callbacks: Callbacks<Vec<R>>,
        ) -> Result<AsyncResult<Vec<R>>> {
            let items: Vec<A> = submit::collect_input(items)?;
            submit::map_async(
                self.pool_core(),
                self.pool_workers(),
                f,
                items,
                self.call_chunksize(),
                callbacks,
            )
        }

        /// Calls `f(a, b)` for every `(a, b)` item (Python's `starmap`).
        pub fn starmap<A: Shareable, B: Shareable, R: Shareable>(
            &self,
            f: fn(A, B) -> R,
            items: impl IntoIterator<Item = (A, B)>,
        ) -> Result<Vec<R>>
        where
            (A, B): Shareable,
        {
            self.starmap_async(f, items)?.get()
        }

        /// [`starmap`](Self::starmap) whose result comes later.
        pub fn starmap_async<A: Shareable, B: Shareable, R: Shareable>(
            &self,
            f: fn(A, B) -> R,
            items: impl IntoIterator<Item = (A, B)>,
        ) -> Result<AsyncResult<Vec<R>>>
        where
            (A, B): Shareable,
        {
            self.starmap_async_with(f, items, Callbacks::new())
        }

        /// [`starmap_async`](Self::starmap_async) with callbacks.
        pub fn starmap_async_with<A: Shareable, B: Shareable, R: Shareable>(
            &self,
            f: fn(A, B) -> R,
            items: impl IntoIterator<Item = (A, B)>,
            callbacks: Callbacks<Vec<R>>,
        ) -> Result<AsyncResult<Vec<R>>>
        where
            (A, B): Shareable,
        {
            let items: Vec<(A, B)> = submit::collect_input(items)?;
            submit::map_async(
                self.pool_core(),
                self.pool_workers(),
                Star2(f),
                items,
                self.call_chunksize(),
                callbacks,
            )
        }

        /// Applies `f` lazily over `items`, yielding results in order.
        /// Chunk size: 1 here, as in Python; set one with
        /// [`chunksize`](Self::chunksize).
        pub fn imap<A, R, I>(&self, f: fn(A) -> R, items: I) -> Result<IMapIterator<R>>
        where
            A: Shareable,
            R: Shareable,
            I: IntoIterator<Item = A>,
            I::IntoIter: Send + 'static,
        {
            submit::imap(
                self.pool_core(),
                self.pool_workers(),
                f,
                items.into_iter(),
                self.call_chunksize(),
                true,
            )
        }

        /// As [`imap`](Self::imap), yielding results as they finish.
        pub fn imap_unordered<A, R, I>(&self, f: fn(A) -> R, items: I) -> Result<IMapIterator<R>>
        where
            A: Shareable,
            R: Shareable,
            I: IntoIterator<Item = A>,
            I::IntoIter: Send + 'static,
        {
            submit::imap(
                self.pool_core(),
                self.pool_workers(),
                f,
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
    ($pool:ty, $backend:ty) => {
        /// Runs `f(arg)` in a worker and waits for the result.
        pub fn apply<A: Shareable, R: Shareable>(&self, f: fn(A) -> R, arg: A) -> Result<R> {
            self.apply_async(f, arg)?.get()
        }

        /// Runs `f(arg)` in a worker; the result comes later.
        pub fn apply_async<A: Shareable, R: Shareable>(
            &self,
            f: fn(A) -> R,
            arg: A,
        ) -> Result<AsyncResult<R>> {
            self.apply_async_with(f, arg, Callbacks::new())
        }

        /// [`apply_async`](Self::apply_async) with callbacks, run in the
        /// pool's result-handler thread before the result is ready.
        pub fn apply_async_with<A: Shareable, R: Shareable>(
            &self,
            f: fn(A) -> R,
            arg: A,
            callbacks: Callbacks<R>,
        ) -> Result<AsyncResult<R>> {
            submit::apply_async(&self.core, f, arg, callbacks)
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

        batch_methods!();

        /// Accepts no more work; workers exit once the submitted work is done.
        pub fn close(&self) {
            self.core.close()
        }

        /// Waits for the workers to exit; an error while the pool is still open.
        pub fn join(&self) -> Result<()> {
            self.core.join()
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
    ($pool:ty, $backend:ty) => {
        impl Chunked<'_, $pool> {
            batch_methods!();

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

chunked_methods!(ThreadPool, Threads);
chunked_methods!(crate::Pool, crate::pool::flavor::PoolBackend);
pub(crate) use pool_methods;

/// A pool of worker threads with the same API as [`Pool`](crate::Pool)
/// (Python's `multiprocessing.pool.ThreadPool`), for I/O-bound work.
///
/// Results are not encoded. A thread cannot be killed: `terminate` stops
/// handing out work and fails what is unfinished, but a task already running
/// runs to its end in the background.
///
/// ```
/// fn double(x: u32) -> u32 { x * 2 }
/// let pool = multiproc::ThreadPool::new(2).unwrap();
/// assert_eq!(pool.map(double, 1..=3).unwrap(), vec![2, 4, 6]);
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
    pub fn with_options<A: Shareable + Clone + Sync>(
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

    pool_methods!(ThreadPool, Threads);
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
