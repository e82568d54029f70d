//! `Pool`: the process pool.

use std::sync::Arc;

use crate::codec::Shareable;
use crate::error::{Error, Result};
use crate::pool::api::{
    Chunked, MAX_INFLIGHT, batch_methods, check_prefetch, check_workers, plain_task, pool_methods,
    star_task, starmap_methods, task_fn,
};
use crate::pool::async_result::{AsyncResult, Callbacks};
use crate::pool::core::{Config, Core};
use crate::pool::imap::IMapIterator;
use crate::pool::process_backend::{InitSpec, ORDER_CHUNKS, Processes};
use crate::pool::submit;
use crate::process::{Context, StartMethod};

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Targets are non-capturing `fn`s, as for [`Process`](crate::Process): a
/// worker finds the function in its copy of this binary. `starmap` takes
/// `fn(A, B) -> R` over `(A, B)` items; `starmap3` … `starmap6` take three to
/// six arguments (`pool.starmap3(add3, [(1, 2, 3)])`). For closures, use a
/// [`ThreadPool`](crate::ThreadPool).
/// Workers are daemon processes started with the pool's start method. A task
/// that panics fails with `Error::Remote` carrying the panic message; a worker
/// that dies fails the tasks it held with `Error::WorkerDied` (not retried)
/// and is replaced. Dropping the pool terminates it and reaps every worker.
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2).unwrap();
///     assert_eq!(pool.map(square, 1..=4).unwrap(), vec![1, 4, 9, 16]);
/// }
/// ```
pub struct Pool {
    pub(crate) core: Arc<Core<Processes>>,
    pub(crate) workers: usize,
}

/// Builds a [`Pool`] with Python's options.
#[derive(Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    context: Option<Context>,
    init: Option<InitSpec>,
    init_error: Option<Error>,
    maxtasks: Option<usize>,
    prefetch: Option<usize>,
    chunks_per_message: Option<usize>,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("start_method", &self.method)
            .field("context", &self.context)
            .field("initializer", &self.init.is_some())
            .field("maxtasksperchild", &self.maxtasks)
            .field("prefetch", &self.prefetch)
            .field("chunks_per_message", &self.chunks_per_message)
            .finish()
    }
}

impl PoolBuilder {
    /// The number of workers (default: `cpu_count()`).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// The start method of the workers (default: the global default).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self.context = None;
        self
    }

    /// Starts the workers as `context` says (Python's `Pool(context=…)`):
    /// its start method, and under spawn the executable the workers run.
    /// The last of `context` and [`start_method`](Self::start_method) wins.
    ///
    /// A worker that cannot start fails [`build`](Self::build) with that
    /// error; a replacement that cannot start (its executable is gone, the
    /// process limit is reached) breaks the pool: every unfinished task and
    /// every later call fails with `Error::Remote("the pool is broken: …")`
    /// instead of waiting for a worker that will not come.
    ///
    /// ```
    /// use multiproc::{Pool, StartMethod, get_context};
    /// let broken = Pool::builder()
    ///     .processes(1)
    ///     .context(&get_context(StartMethod::Spawn).with_executable("/nonexistent/worker"))
    ///     .build();
    /// assert!(broken.is_err());
    /// ```
    pub fn context(mut self, context: &Context) -> Self {
        self.context = Some(context.clone());
        self.method = None;
        self
    }

    /// Runs `f(arg)` once in each worker before it takes tasks.
    pub fn initializer<A: Shareable>(mut self, f: fn(A), arg: A) -> Self {
        match InitSpec::new(f, &arg) {
            Ok(spec) => self.init = Some(spec),
            Err(e) => self.init_error = Some(e),
        }
        self
    }

    /// Replaces each worker after it has run this many chunks.
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.maxtasks = Some(n);
        self
    }

    /// The most chunks a worker holds at once: the one it runs and `n - 1`
    /// queued behind it.
    ///
    /// By default the pool chooses, per task function, from how long its
    /// recent chunks took: up to about 2 ms of work queued at a worker (and
    /// at most 64 chunks), one chunk at a time for a function not seen yet.
    /// So an idle worker takes the next chunk while a busy one runs a long
    /// task, and trivial tasks still stream without a round trip between
    /// them. A larger `n` trades that fairness for fewer hand-overs; `1` is
    /// strictly one chunk at a time, as Python's pool does.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n);
        self
    }

    /// The most chunks one message to a worker carries (default 16).
    ///
    /// Small chunks travel several to a message, because a queue hand-over
    /// costs more than a trivial task, and a worker reports the consecutive
    /// chunks of one `map` from a message together, in one message. `1`
    /// sends every chunk, and brings back its results, in a message of its
    /// own, as Python's pool does. Results and their order are the same
    /// either way; `0` is refused by [`build`](Self::build).
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::builder()
    ///         .processes(2)
    ///         .chunks_per_message(1)
    ///         .build()
    ///         .unwrap();
    ///     assert_eq!(pool.chunksize(1).map(square, 1..=4).unwrap(), vec![1, 4, 9, 16]);
    /// }
    /// ```
    pub fn chunks_per_message(mut self, n: usize) -> Self {
        self.chunks_per_message = Some(n);
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool> {
        if let Some(e) = self.init_error {
            return Err(e);
        }
        let n = self.processes.unwrap_or_else(crate::process::cpu_count);
        check_workers(n, self.maxtasks)?;
        check_prefetch(self.prefetch)?;
        if self.chunks_per_message == Some(0) {
            return Err(Error::InvalidArgument(
                "chunks_per_message must be at least 1".into(),
            ));
        }
        let context = match (self.context, self.method) {
            (Some(context), _) => context,
            (None, Some(method)) => crate::process::get_context(method),
            (None, None) => crate::process::get_context(crate::process::start_method_for_pool()),
        };
        let (backend, reports) = Processes::new(
            context,
            self.init,
            self.maxtasks,
            self.chunks_per_message.unwrap_or(ORDER_CHUNKS),
        )?;
        let config = Config {
            processes: n,
            maxtasks: self.maxtasks,
            cap: MAX_INFLIGHT,
            prefetch: self.prefetch,
        };
        Ok(Pool {
            core: Arc::new(Core::start(backend, reports, config)?),
            workers: n,
        })
    }
}

impl Pool {
    /// A pool of `n` worker processes with the default start method.
    pub fn new(n: usize) -> Result<Pool> {
        Pool::builder().processes(n).build()
    }

    /// A builder for the other options.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The pids of the current workers (they change as workers are replaced).
    pub fn worker_pids(&self) -> Vec<i32> {
        self.core
            .with_workers(|w| w.pid())
            .into_iter()
            .flatten()
            .collect()
    }

    /// The most chunks this pool has held at once: encoded and waiting for
    /// a worker, or sent and not yet reported.
    ///
    /// Inputs are encoded as workers take them, so this stays within about
    /// `processes() × 64 + 1` (or `× prefetch`) whatever the length of the
    /// inputs, besides one chunk per `apply_async` not yet done.
    pub fn chunks_held_peak(&self) -> usize {
        self.core.held_peak()
    }

    pool_methods!(Pool, Processes, processes[Shareable]);
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers)
            .field("pids", &self.worker_pids())
            .finish()
    }
}
