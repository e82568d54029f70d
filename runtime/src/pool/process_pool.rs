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
use crate::pool::flavor::{PoolBackend, PoolReports};
use crate::pool::imap::IMapIterator;
use crate::pool::process_backend::{InitSpec, ORDER_CHUNKS, Processes};
#[cfg(feature = "redis")]
use crate::pool::redis_backend::{RedisPool, RedisSettings, RedisShared, WorkerInfo};
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
/// that dies fails the tasks it had taken with `Error::WorkerDied` (not
/// retried; those still queued for it go to another worker) and is replaced. Dropping the pool terminates it and reaps every worker.
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
    pub(crate) core: Arc<Core<PoolBackend>>,
    pub(crate) workers: usize,
    /// A distributed pool's Redis side (for `workers()`).
    #[cfg(feature = "redis")]
    redis: Option<Arc<RedisShared>>,
}

/// The default number of retries of a distributed pool's task whose
/// worker died ([`PoolBuilder::max_retries`]).
#[cfg(feature = "redis")]
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// The default lease of a distributed pool's task ([`PoolBuilder::lease`]).
#[cfg(feature = "redis")]
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(10);
/// The least lease: several of a worker's heartbeats (every 500 ms) fit in it.
#[cfg(feature = "redis")]
const MIN_LEASE: std::time::Duration = std::time::Duration::from_secs(2);
/// The most chunks a distributed pool keeps in Redis at once by default.
#[cfg(feature = "redis")]
const REDIS_WINDOW: usize = 1024;
/// The worker count a distributed pool assumes for its default chunk size.
#[cfg(feature = "redis")]
const REDIS_DEFAULT_WORKERS: usize = 4;

/// Builds a [`Pool`] with Python's options.
#[derive(Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    context: Option<Context>,
    init: Option<InitSpec>,
    /// The initializer's argument, kept while the pool lives: a handle in
    /// it is opened by each worker started, through this process.
    init_arg: Option<Box<dyn std::any::Any + Send>>,
    init_error: Option<Error>,
    maxtasks: Option<usize>,
    prefetch: Option<usize>,
    chunks_per_message: Option<usize>,
    #[cfg(feature = "redis")]
    redis: Option<String>,
    #[cfg(feature = "redis")]
    name: Option<String>,
    #[cfg(feature = "redis")]
    max_retries: Option<u32>,
    #[cfg(feature = "redis")]
    lease: Option<std::time::Duration>,
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
            .finish_non_exhaustive()
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
            Ok(spec) => {
                self.init = Some(spec);
                self.init_arg = Some(Box::new(arg));
            }
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
    /// So trivial tasks stream without a round trip between them. Chunks
    /// queued at a worker that has run one chunk for long (20 ms, or four
    /// of the function's recent chunk times if longer) while another worker
    /// is idle are taken back and go to the idle one, whatever `n`: quick
    /// tasks do not wait behind a slow or stuck one. `1` is strictly one
    /// chunk at a time, as Python's pool does.
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
    #[cfg_attr(
        feature = "redis",
        doc = "\nWith [`redis`](Self::redis), connects to Redis instead."
    )]
    pub fn build(self) -> Result<Pool> {
        if let Some(e) = self.init_error {
            return Err(e);
        }
        #[cfg(feature = "redis")]
        if self.redis.is_some() || self.name.is_some() {
            return self.build_redis();
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
            self.init.map(|spec| (spec, self.init_arg)),
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
            core: Arc::new(Core::start(
                PoolBackend::Local(backend),
                PoolReports::Local(reports),
                config,
            )?),
            workers: n,
            #[cfg(feature = "redis")]
            redis: None,
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
    #[cfg_attr(
        feature = "redis",
        doc = "\nA distributed pool has none here: see [`workers`](Self::workers)."
    )]
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

    pool_methods!(Pool, PoolBackend, processes[Shareable]);
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers)
            .field("pids", &self.worker_pids())
            .finish()
    }
}

/// A distributed pool (feature `redis`): workers anywhere take its tasks
/// from Redis. See the crate docs' "Past one machine" section.
#[cfg(feature = "redis")]
impl PoolBuilder {
    /// Makes the pool a distributed one: tasks go through the Redis server
    /// at `url` (`redis://[:password@]host:port[/db]`) to workers started
    /// with `MULTIPROC_WORKER=<url>/<name>` on any host (the same binary;
    /// see [`worker`](crate::worker)), instead of to local processes.
    ///
    /// [`name`](Self::name) says which workers (default `"default"`).
    /// [`processes`](Self::processes) is then only the worker count the
    /// default chunk size assumes (4 if unset); `start_method`, `context`,
    /// `initializer` and `maxtasksperchild` do not apply (the workers are
    /// not this pool's children) and make `build` fail.
    /// [`prefetch`](Self::prefetch) is the most chunks kept in Redis at
    /// once (default 1024).
    ///
    /// `build` fails with [`Error::BackendUnavailable`] if the server
    /// cannot be reached or refuses the password.
    ///
    /// ```no_run
    /// # fn main() -> multiproc::Result<()> {
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// // Workers: this program, started with
    /// // MULTIPROC_WORKER=redis://127.0.0.1:6379/0/jobs
    /// multiproc::init();
    /// let pool = multiproc::Pool::builder()
    ///     .redis("redis://127.0.0.1:6379/0")
    ///     .name("jobs")
    ///     .build()?;
    /// let r = pool.map_async(square, 0..10)?;
    /// let squares = r.get_timeout(std::time::Duration::from_secs(60))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn redis(mut self, url: &str) -> Self {
        self.redis = Some(url.to_owned());
        self
    }

    /// The distributed pool's name: workers started for this name take its
    /// tasks (`MULTIPROC_WORKER=redis://host:port/db/<name>`). Non-empty,
    /// without `:`, `/` or whitespace.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// How many times a distributed pool's task runs again after the worker
    /// running it died (stopped renewing its claim for a
    /// [`lease`](Self::lease)), on whichever worker takes it next; after
    /// that it fails with [`Error::WorkerDied`] naming the last worker's
    /// pid. Default [`DEFAULT_MAX_RETRIES`].
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = Some(n);
        self
    }

    /// How long a distributed pool's task may go without its worker's
    /// heartbeat (every 500 ms) before it is taken back and retried.
    /// Default [`DEFAULT_LEASE`]; at least 2 s.
    pub fn lease(mut self, lease: std::time::Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    fn build_redis(self) -> Result<Pool> {
        let Some(url) = self.redis else {
            return Err(Error::InvalidArgument(
                "a pool name without a redis URL: call .redis(url) too".into(),
            ));
        };
        if self.method.is_some()
            || self.context.is_some()
            || self.init.is_some()
            || self.maxtasks.is_some()
        {
            return Err(Error::InvalidArgument(
                "a distributed pool's workers are not its children: start method, context, \
                 initializer and maxtasksperchild do not apply"
                    .into(),
            ));
        }
        check_prefetch(self.prefetch)?;
        let n = self.processes.unwrap_or(REDIS_DEFAULT_WORKERS);
        check_workers(n, None)?;
        let lease = self.lease.unwrap_or(DEFAULT_LEASE);
        if lease < MIN_LEASE {
            return Err(Error::InvalidArgument(format!(
                "a lease of {lease:?} is shorter than {MIN_LEASE:?}"
            )));
        }
        let settings = RedisSettings {
            url,
            name: self.name.unwrap_or_else(|| "default".to_owned()),
            max_retries: self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            lease,
        };
        let (backend, reports, shared) = RedisPool::new(&settings)?;
        let window = self.prefetch.unwrap_or(REDIS_WINDOW);
        let config = Config {
            processes: 1,
            maxtasks: None,
            cap: window,
            prefetch: Some(window),
        };
        Ok(Pool {
            core: Arc::new(Core::start(
                PoolBackend::Redis(backend),
                PoolReports::Redis(reports),
                config,
            )?),
            workers: n,
            redis: Some(shared),
        })
    }
}

#[cfg(feature = "redis")]
impl Pool {
    /// A distributed pool's live workers (host, pid, chunks done), from
    /// their heartbeats: a worker is listed until its heartbeat is 5 s
    /// old. Empty for a local pool (see [`worker_pids`](Self::worker_pids)).
    /// A heartbeat goes out every 500 ms: a worker that just started, or
    /// the tasks it just did, show up by the next one.
    pub fn workers(&self) -> Result<Vec<WorkerInfo>> {
        match &self.redis {
            Some(shared) => shared.workers(),
            None => Ok(Vec::new()),
        }
    }
}
