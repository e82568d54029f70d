//! Start methods and contexts.

use std::path::PathBuf;

use std::sync::atomic::{AtomicU8, Ordering};

use crate::codec::Shareable;
use crate::error::{Error, Result};
use crate::process::Process;

/// How a child process is started.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(crate = rkyv)]
pub enum StartMethod {
    /// Re-execute the current binary (Python's "spawn"); the default.
    ///
    /// The child starts fresh: only the target's encoded argument crosses.
    #[default]
    Spawn,
    /// `fork()` the current process (Python's "fork").
    ///
    /// Fast, and the child inherits memory, so closures may be targets. Only
    /// the forking thread exists in the child: do not rely on locks other
    /// threads held at the time.
    Fork,
    /// Ask a server process to fork the child (Python's "forkserver", the
    /// default on Linux since Python 3.14).
    ///
    /// The server is started the first time a process of this program
    /// uses this method: a fresh copy of the program, as under spawn, that
    /// runs no user code and one thread. Each child is then a fork of that
    /// small, clean server: about as fast as fork, without inheriting this
    /// process's threads, locks or memory. Targets and arguments travel as
    /// under spawn (a `fn(A) -> R`, an encoded argument). See
    /// [`Process`](crate::Process) for what children inherit from the server.
    Forkserver,
}

impl StartMethod {
    /// Python's name for the method: `"spawn"`, `"fork"` or `"forkserver"`.
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Spawn => "spawn",
            StartMethod::Fork => "fork",
            StartMethod::Forkserver => "forkserver",
        }
    }
}

impl std::str::FromStr for StartMethod {
    type Err = Error;

    /// Parses Python's name of a start method.
    fn from_str(s: &str) -> Result<StartMethod> {
        match s {
            "spawn" => Ok(StartMethod::Spawn),
            "fork" => Ok(StartMethod::Fork),
            "forkserver" => Ok(StartMethod::Forkserver),
            other => Err(Error::InvalidArgument(format!(
                "unknown start method {other:?} (expected spawn, fork or forkserver)"
            ))),
        }
    }
}

/// Every start method this platform offers, the default first (Python's
/// `get_all_start_methods()`).
///
/// ```
/// use multiproc::{get_all_start_methods, get_start_method, StartMethod};
/// let all = get_all_start_methods();
/// assert_eq!(all, [StartMethod::Spawn, StartMethod::Fork, StartMethod::Forkserver]);
/// assert_eq!(all[0], StartMethod::default());
/// ```
pub fn get_all_start_methods() -> Vec<StartMethod> {
    vec![
        StartMethod::Spawn,
        StartMethod::Fork,
        StartMethod::Forkserver,
    ]
}

/// The chosen default (low bits: 0 for none, else a method's code) and
/// whether the default was used ([`USED`]). One atomic word, not a mutex:
/// a forked child sets it, and must not find it locked by a thread of its
/// parent that does not exist in the child.
static GLOBAL: AtomicU8 = AtomicU8::new(0);

/// Set in [`GLOBAL`] once a process was started with the default.
const USED: u8 = 0x10;

fn code(method: Option<StartMethod>) -> u8 {
    match method {
        None => 0,
        Some(StartMethod::Spawn) => 1,
        Some(StartMethod::Fork) => 2,
        Some(StartMethod::Forkserver) => 3,
    }
}

fn method_of(word: u8) -> Option<StartMethod> {
    match word & !USED {
        1 => Some(StartMethod::Spawn),
        2 => Some(StartMethod::Fork),
        3 => Some(StartMethod::Forkserver),
        _ => None,
    }
}

/// Sets the default start method, once, before any process was started with it.
///
/// Setting it twice, or after a process started with the default, is an
/// `InvalidState` error (Python raises `RuntimeError` likewise); see
/// [`force_start_method`] for Python's `force=True`. A child's default is
/// the method that started it, whatever its parent's default, as in Python
/// (a child started through `get_context(StartMethod::Fork)` forks its own
/// children by default).
pub fn set_start_method(method: StartMethod) -> Result<()> {
    GLOBAL
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            (word == 0).then_some(code(Some(method)))
        })
        .map(drop)
        .map_err(|word| match method_of(word) {
            Some(current) => {
                Error::InvalidState(format!("the start method was already set to {current:?}"))
            }
            None => Error::InvalidState(
                "the default start method was already used to start a process".into(),
            ),
        })
}

/// Sets the default start method even if it was set or used before
/// (Python's `set_start_method(method, force=True)`); `None` forgets the
/// choice, so the default is [`StartMethod::Spawn`] again and
/// [`set_start_method`] may be called once more.
///
/// Processes already started keep the method they were started with.
///
/// ```
/// use multiproc::{force_start_method, get_start_method, set_start_method, StartMethod};
/// set_start_method(StartMethod::Fork).unwrap();
/// assert!(set_start_method(StartMethod::Spawn).is_err());
/// force_start_method(Some(StartMethod::Spawn));
/// assert_eq!(get_start_method(), StartMethod::Spawn);
/// force_start_method(None);
/// set_start_method(StartMethod::Fork).unwrap();
/// ```
pub fn force_start_method(method: Option<StartMethod>) {
    GLOBAL.store(code(method), Ordering::Release);
}

/// The default start method ([`StartMethod::Spawn`] unless set).
pub fn get_start_method() -> StartMethod {
    method_of(GLOBAL.load(Ordering::Acquire)).unwrap_or_default()
}

/// In a new child: the method that started it becomes its default (as
/// Python's `_bootstrap` forces it), whatever its parent's default was.
pub(crate) fn started_with(method: StartMethod) {
    GLOBAL.store(code(Some(method)), Ordering::Release);
}

/// The default start method, marking it as used.
pub(crate) fn use_default_method() -> StartMethod {
    method_of(GLOBAL.fetch_or(USED, Ordering::AcqRel)).unwrap_or_default()
}

/// The start method a pool uses when none is given: the default, marked as used.
pub(crate) fn start_method_for_pool() -> StartMethod {
    use_default_method()
}

/// Starts processes with a chosen method, leaving the global default alone
/// (Python's `get_context(method)`).
///
/// ```
/// use multiproc::{get_context, StartMethod};
/// let ctx = get_context(StartMethod::Fork);
/// assert_eq!(ctx.start_method(), StartMethod::Fork);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Context {
    method: StartMethod,
    executable: Option<PathBuf>,
}

/// A context for `method`.
pub fn get_context(method: StartMethod) -> Context {
    Context {
        method,
        executable: None,
    }
}

impl Context {
    /// The context's start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// Spawned children run `path` instead of the current binary (Python's
    /// `set_executable`). It must be the same program: children check this.
    /// Only [`StartMethod::Spawn`] uses it: the forkserver is always a copy
    /// of the current binary.
    pub fn with_executable(mut self, path: impl Into<PathBuf>) -> Context {
        self.executable = Some(path.into());
        self
    }

    /// The executable spawned children run, if not the current binary.
    pub fn executable(&self) -> Option<&PathBuf> {
        self.executable.as_ref()
    }

    /// A process that runs `target(arg)` with this context's start method.
    pub fn process<A: Shareable, R: Shareable>(&self, target: fn(A) -> R, arg: A) -> Process<R> {
        Process::new(target, arg).context(self)
    }

    /// A pool of `processes` workers started with this context (Python's
    /// `ctx.Pool(n)`; [`Pool::builder`](crate::Pool::builder) with
    /// [`context`](crate::PoolBuilder::context) sets more).
    ///
    /// ```
    /// fn double(x: u32) -> u32 {
    ///     2 * x
    /// }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let ctx = multiproc::get_context(multiproc::StartMethod::Fork);
    ///     let pool = ctx.pool(2).unwrap();
    ///     assert_eq!(pool.map(double, [1, 2, 3]).unwrap(), [2, 4, 6]);
    /// }
    /// ```
    pub fn pool(&self, processes: usize) -> Result<crate::Pool> {
        crate::Pool::builder()
            .processes(processes)
            .context(self)
            .build()
    }
}
