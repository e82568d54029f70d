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

/// The methods both pools share, with Python's names.
macro_rules! pool_methods {
    () => {
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

        /// Applies `f` to every item and returns the results in order, or
        /// the first error. `chunksize`: `None` for Python's default.
        ///
        /// The input is read whole first, here; if it panics, the call
        /// fails with [`Error::InputPanicked`] and runs nothing.
        pub fn map<A: Shareable, R: Shareable>(
            &self,
            f: fn(A) -> R,
            items: impl IntoIterator<Item = A>,
            chunksize: impl Into<Option<usize>>,
        ) -> Result<Vec<R>> {
            self.map_async(f, items, chunksize)?.get()
        }

        /// [`map`](Self::map) whose result comes later.
        pub fn map_async<A: Shareable, R: Shareable>(
            &self,
            f: fn(A) -> R,
            items: impl IntoIterator<Item = A>,
            chunksize: impl Into<Option<usize>>,
        ) -> Result<AsyncResult<Vec<R>>> {
            self.map_async_with(f, items, chunksize, Callbacks::new())
        }

        /// [`map_async`](Self::map_async) with callbacks.
        pub fn map_async_with<A: Shareable, R: Shareable>(
            &self,
            f: fn(A) -> R,
            items: impl IntoIterator<Item = A>,
            chunksize: impl Into<Option<usize>>,
            callbacks: Callbacks<Vec<R>>,
        ) -> Result<AsyncResult<Vec<R>>> {
            let items: Vec<A> = submit::collect_input(items)?;
            submit::map_async(
                &self.core,
                self.workers,
                f,
                items,
                chunksize.into(),
                callbacks,
            )
        }

        /// Calls `f(a, b)` for every `(a, b)` item (Python's `starmap`).
        pub fn starmap<A: Shareable, B: Shareable, R: Shareable>(
            &self,
            f: fn(A, B) -> R,
            items: impl IntoIterator<Item = (A, B)>,
            chunksize: impl Into<Option<usize>>,
        ) -> Result<Vec<R>>
        where
            (A, B): Shareable,
        {
            self.starmap_async(f, items, chunksize)?.get()
        }

        /// [`starmap`](Self::starmap) whose result comes later.
        pub fn starmap_async<A: Shareable, B: Shareable, R: Shareable>(
            &self,
            f: fn(A, B) -> R,
            items: impl IntoIterator<Item = (A, B)>,
            chunksize: impl Into<Option<usize>>,
        ) -> Result<AsyncResult<Vec<R>>>
        where
            (A, B): Shareable,
        {
            let items: Vec<(A, B)> = submit::collect_input(items)?;
            submit::map_async(
                &self.core,
                self.workers,
                Star2(f),
                items,
                chunksize.into(),
                Callbacks::new(),
            )
        }

        /// Applies `f` lazily over `items`, yielding results in order.
        /// `chunksize`: `None` means 1, as in Python.
        pub fn imap<A, R, I>(
            &self,
            f: fn(A) -> R,
            items: I,
            chunksize: impl Into<Option<usize>>,
        ) -> Result<IMapIterator<R>>
        where
            A: Shareable,
            R: Shareable,
            I: IntoIterator<Item = A>,
            I::IntoIter: Send + 'static,
        {
            submit::imap(
                &self.core,
                self.workers,
                f,
                items.into_iter(),
                chunksize.into(),
                true,
            )
        }

        /// As [`imap`](Self::imap), yielding results as they finish.
        pub fn imap_unordered<A, R, I>(
            &self,
            f: fn(A) -> R,
            items: I,
            chunksize: impl Into<Option<usize>>,
        ) -> Result<IMapIterator<R>>
        where
            A: Shareable,
            R: Shareable,
            I: IntoIterator<Item = A>,
            I::IntoIter: Send + 'static,
        {
            submit::imap(
                &self.core,
                self.workers,
                f,
                items.into_iter(),
                chunksize.into(),
                false,
            )
        }

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
    };
}
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
/// assert_eq!(pool.map(double, 1..=3, None).unwrap(), vec![2, 4, 6]);
/// ```
pub struct ThreadPool {
    core: Arc<Core<Threads>>,
    workers: usize,
}

impl ThreadPool {
    /// A pool of `n` threads.
    pub fn new(n: usize) -> Result<ThreadPool> {
        Self::build(n, None, None)
    }

    /// A pool of `n` threads, each running `initializer(arg)` first, each
    /// replaced after `maxtasksperchild` chunks if set.
    pub fn with_options<A: Shareable + Clone + Sync>(
        n: usize,
        initializer: Option<(fn(A), A)>,
        maxtasksperchild: Option<usize>,
    ) -> Result<ThreadPool> {
        let init = initializer.map(|(f, a)| {
            let init: crate::pool::thread_backend::Initializer = Arc::new(move || f(a.clone()));
            init
        });
        Self::build(n, init, maxtasksperchild)
    }

    fn build(
        n: usize,
        init: Option<crate::pool::thread_backend::Initializer>,
        maxtasks: Option<usize>,
    ) -> Result<ThreadPool> {
        check_workers(n, maxtasks)?;
        let (backend, reports) = Threads::new(init, maxtasks);
        let config = Config {
            processes: n,
            maxtasks,
            cap: MAX_INFLIGHT,
            prefetch: None,
        };
        Ok(ThreadPool {
            core: Arc::new(Core::start(backend, reports, config)?),
            workers: n,
        })
    }

    pool_methods!();
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("workers", &self.workers)
            .finish()
    }
}
