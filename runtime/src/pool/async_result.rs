//! `AsyncResult<R>`: a result that a pool fills in later, and the callbacks run when it does.

use std::sync::Arc;
use std::thread::{self, ThreadId};
use std::time::Duration;

use crate::fork_sync::{Condvar, Mutex};

use crate::deadline::Deadline;
use crate::error::{Error, Result};

/// Functions run in the pool's result-handler thread when a result is ready
/// (Python's `callback` and `error_callback`).
///
/// ```
/// use multiproc::Callbacks;
/// let cb = Callbacks::<u64>::new()
///     .callback(|r| println!("got {r}"))
///     .error_callback(|e| eprintln!("failed: {e}"));
/// # drop(cb);
/// ```
pub struct Callbacks<R> {
    pub(crate) on_ok: Option<OnOk<R>>,
    pub(crate) on_err: Option<OnErr>,
}

type OnOk<R> = Box<dyn FnOnce(&R) + Send>;
type OnErr = Box<dyn FnOnce(&Error) + Send>;

impl<R> Default for Callbacks<R> {
    fn default() -> Self {
        Callbacks {
            on_ok: None,
            on_err: None,
        }
    }
}

impl<R> std::fmt::Debug for Callbacks<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("callback", &self.on_ok.is_some())
            .field("error_callback", &self.on_err.is_some())
            .finish()
    }
}

impl<R> Callbacks<R> {
    /// No callbacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with the result when the task succeeds.
    ///
    /// Callbacks run on the pool's result thread, as in Python: a slow one
    /// holds back every result after it, and one that waits for a result of
    /// its own pool gets [`Error::InvalidState`] (it would wait for ever).
    pub fn callback(mut self, f: impl FnOnce(&R) + Send + 'static) -> Self {
        self.on_ok = Some(Box::new(f));
        self
    }

    /// Runs `f` with the error when the task fails.
    pub fn error_callback(mut self, f: impl FnOnce(&Error) + Send + 'static) -> Self {
        self.on_err = Some(Box::new(f));
        self
    }
}

enum Slot<R> {
    Pending,
    Ready(Result<R>),
    Taken { ok: bool },
}

struct Inner<R> {
    slot: Mutex<Slot<R>>,
    ready: Condvar,
    /// The thread that completes it (the pool's result handler), which
    /// must not wait for it: it runs the pool's callbacks.
    completer: Option<ThreadId>,
    /// The process whose pool delivers it: a forked child that inherited
    /// this waits for nothing ([`pool_of_another_process`]).
    owner: i32,
}

/// The error of a call on a pool (or a pending result of one) in a process
/// other than the one that made the pool: a forked child has a copy of its
/// parent's pool, but not its threads, and the workers are the parent's.
pub(crate) fn pool_of_another_process(owner: i32) -> Error {
    Error::InvalidState(format!(
        "this pool belongs to process {owner}, which made it: a forked child cannot use it \
         or wait for its results (make a pool in the child)"
    ))
}

/// The future result of a task submitted with `apply_async` or `map_async`.
pub struct AsyncResult<R> {
    inner: Arc<Inner<R>>,
}

/// The pool's side of an [`AsyncResult`]: fills it in exactly once.
pub(crate) struct Promise<R> {
    inner: Arc<Inner<R>>,
    callbacks: Callbacks<R>,
}

/// The error of a callback that waits for a result its own pool has yet to
/// deliver: the thread running it is the one that would deliver it.
pub(crate) fn waits_for_itself() -> Error {
    Error::InvalidState(
        "a pool callback waited for a result of its own pool, which only its own thread \
         delivers (callbacks run on the pool's result handler): it would wait for ever"
            .into(),
    )
}

/// A new pending result and the promise that completes it.
pub(crate) fn pending<R>(
    callbacks: Callbacks<R>,
    completer: Option<ThreadId>,
) -> (AsyncResult<R>, Promise<R>) {
    let inner = Arc::new(Inner {
        slot: Mutex::new(Slot::Pending),
        ready: Condvar::new(),
        completer,
        owner: crate::sys::process::getpid(),
    });
    (
        AsyncResult {
            inner: inner.clone(),
        },
        Promise { inner, callbacks },
    )
}

impl<R> Promise<R> {
    /// Runs the matching callback, then makes the result visible to waiters.
    pub fn complete(mut self, result: Result<R>) {
        match &result {
            Ok(r) => {
                if let Some(f) = self.callbacks.on_ok.take() {
                    run_callback(|| f(r));
                }
            }
            Err(e) => {
                if let Some(f) = self.callbacks.on_err.take() {
                    run_callback(|| f(e));
                }
            }
        }
        *self.inner.slot.lock() = Slot::Ready(result);
        self.inner.ready.notify_all();
    }
}

/// A panicking callback must not take the pool's result handler down.
fn run_callback(f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        tracing::error!(
            "a pool callback panicked: {}",
            crate::process::panic_text(p.as_ref())
        );
    }
}

impl<R> AsyncResult<R> {
    /// Waits for the result and takes it.
    ///
    /// `get`, [`try_get`](Self::try_get) and
    /// [`get_timeout`](Self::get_timeout) all take `&self`, so one result can
    /// be polled and then waited for; the result is handed out once, and a
    /// second take is `Error::InvalidState`.
    pub fn get(&self) -> Result<R> {
        self.take(Deadline::Never)
    }

    /// Takes the result if it is ready: `Err(WouldBlock)` if it is not
    /// (the result stays to be fetched later).
    pub fn try_get(&self) -> Result<R> {
        if !self.ready() {
            return Err(Error::WouldBlock);
        }
        self.take(Deadline::Never)
    }

    /// Waits at most `timeout`; `Err(Timeout)` leaves the result to be fetched later.
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        self.take(Deadline::after(timeout))
    }

    fn take(&self, deadline: Deadline) -> Result<R> {
        let mut slot = self.inner.slot.lock();
        loop {
            match std::mem::replace(&mut *slot, Slot::Pending) {
                Slot::Ready(result) => {
                    *slot = Slot::Taken { ok: result.is_ok() };
                    return result;
                }
                taken @ Slot::Taken { .. } => {
                    *slot = taken;
                    return Err(Error::InvalidState("the result was already taken".into()));
                }
                Slot::Pending => {}
            }
            if deadline != Deadline::Now && self.inner.completer == Some(thread::current().id()) {
                return Err(waits_for_itself());
            }
            if self.inner.owner != crate::sys::process::getpid() {
                return Err(pool_of_another_process(self.inner.owner));
            }
            if !self.wait_locked(&mut slot, deadline) {
                return Err(deadline.timeout_error());
            }
        }
    }

    /// `false` when the deadline passed with the result still pending.
    fn wait_locked(
        &self,
        slot: &mut crate::fork_sync::MutexGuard<'_, Slot<R>>,
        deadline: Deadline,
    ) -> bool {
        match deadline.remaining() {
            None => {
                self.inner.ready.wait(slot);
                true
            }
            Some(left) if left.is_zero() => false,
            Some(left) => {
                self.inner.ready.wait_for(slot, left);
                true
            }
        }
    }

    /// Blocks until the result is ready (without taking it). In a forked
    /// child of the pool's process, which would wait for ever, it returns
    /// at once (`get` then says why).
    pub fn wait(&self) {
        let mut slot = self.inner.slot.lock();
        while matches!(*slot, Slot::Pending) {
            if self.inner.owner != crate::sys::process::getpid() {
                return;
            }
            self.inner.ready.wait(&mut slot);
        }
    }

    /// Waits at most `timeout` for the result; returns whether it is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Deadline::after(timeout);
        let mut slot = self.inner.slot.lock();
        while matches!(*slot, Slot::Pending) {
            if self.inner.owner != crate::sys::process::getpid() {
                return false;
            }
            if !self.wait_locked(&mut slot, deadline) {
                return false;
            }
        }
        true
    }

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        !matches!(*self.inner.slot.lock(), Slot::Pending)
    }

    /// Whether the task succeeded; an error if it is not ready yet.
    pub fn successful(&self) -> Result<bool> {
        match &*self.inner.slot.lock() {
            Slot::Pending => Err(Error::InvalidState("the result is not ready".into())),
            Slot::Ready(r) => Ok(r.is_ok()),
            Slot::Taken { ok } => Ok(*ok),
        }
    }
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}
