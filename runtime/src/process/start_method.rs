//! Start methods and contexts.

use std::path::PathBuf;

use parking_lot::Mutex;

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
}

struct Global {
    method: Option<StartMethod>,
    used: bool,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global {
    method: None,
    used: false,
});

/// Sets the default start method, once, before any process was started with it.
///
/// Setting it twice, or after a process started with the default, is an
/// `InvalidState` error (Python raises `RuntimeError` likewise).
pub fn set_start_method(method: StartMethod) -> Result<()> {
    let mut g = GLOBAL.lock();
    if let Some(current) = g.method {
        return Err(Error::InvalidState(format!(
            "the start method was already set to {current:?}"
        )));
    }
    if g.used {
        return Err(Error::InvalidState(
            "the default start method was already used to start a process".into(),
        ));
    }
    g.method = Some(method);
    Ok(())
}

/// The default start method ([`StartMethod::Spawn`] unless set).
pub fn get_start_method() -> StartMethod {
    GLOBAL.lock().method.unwrap_or_default()
}

/// The default start method, marking it as used.
pub(crate) fn use_default_method() -> StartMethod {
    let mut g = GLOBAL.lock();
    g.used = true;
    g.method.unwrap_or_default()
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
}
