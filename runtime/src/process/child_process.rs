//! `Process<R>`: one child process running a target, and its result.

use std::any::TypeId;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::Shareable;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle;
use crate::process::child::{self, finish};
use crate::process::current::{self, current_process};
use crate::process::fork_hooks;
use crate::process::forkserver;
use crate::process::launch::{self, EntryFn, Launch, Outcome};
use crate::process::registry::{self, ChildState, PidfdCache};
use crate::process::sentinel::Sentinel;
use crate::process::start_method::{self, Context, StartMethod};
use crate::shm;
use crate::sys;
use crate::sys::process::{ExitStatus, Forked};

/// What a not-yet-started process will run.
trait Target: Send {
    /// Builds the spawn launch pieces: entry, target, encoded argument, descriptors.
    fn for_spawn(self: Box<Self>) -> Result<SpawnPayload>;
    /// Runs the target in this (forked) process.
    ///
    /// The target's memory is leaked, not freed or marked as taken: in a
    /// new child each page written costs a copy, and the child exits soon.
    fn run_here(self: Box<Self>) -> Outcome;
}

struct SpawnPayload {
    entry: *const (),
    target: *const (),
    args: Vec<u8>,
    fds: Vec<(u64, OwnedFd)>,
    /// What the handles in the argument ask done once the child's pid is known.
    handoffs: Vec<handle::Handoff>,
}

impl SpawnPayload {
    /// Tells the argument's handles that child `pid` has them now.
    fn hand_to(&mut self, pid: i32) {
        for handoff in std::mem::take(&mut self.handoffs) {
            handoff(pid);
        }
    }
}

struct FnTarget<A, R> {
    f: fn(A) -> R,
    arg: A,
}

impl<A: Shareable, R: Shareable> Target for FnTarget<A, R> {
    fn for_spawn(self: Box<Self>) -> Result<SpawnPayload> {
        let (args, collected) = handle::collect_fds(|| self.arg.encode());
        let entry: EntryFn = launch::entry::<A, R>;
        Ok(SpawnPayload {
            entry: entry as *const (),
            target: self.f as *const (),
            args: args?.into_vec(),
            fds: collected.fds,
            handoffs: collected.handoffs,
        })
    }

    fn run_here(self: Box<Self>) -> Outcome {
        let FnTarget { f, arg } = take_leaking(self);
        launch::run_caught(move || f(arg))
    }
}

/// A target without an argument: `fn() -> R`.
struct NoArgTarget<R> {
    f: fn() -> R,
}

impl<R: Shareable> Target for NoArgTarget<R> {
    fn for_spawn(self: Box<Self>) -> Result<SpawnPayload> {
        let entry: EntryFn = launch::entry_no_arg::<R>;
        Ok(SpawnPayload {
            entry: entry as *const (),
            target: self.f as *const (),
            args: Vec::new(),
            fds: Vec::new(),
            handoffs: Vec::new(),
        })
    }

    fn run_here(self: Box<Self>) -> Outcome {
        launch::run_caught(self.f)
    }
}

struct ClosureTarget<F>(F);

impl<R: Shareable, F: FnOnce() -> R + Send + 'static> Target for ClosureTarget<F> {
    fn for_spawn(self: Box<Self>) -> Result<SpawnPayload> {
        Err(Error::InvalidArgument(
            "a closure target needs the Fork start method; under Spawn and Forkserver use \
             a fn(A) -> R"
                .into(),
        ))
    }

    fn run_here(self: Box<Self>) -> Outcome {
        launch::run_caught(take_leaking(self).0)
    }
}

thread_local! {
    /// The forked child's pid while the parent drops its copy of what that
    /// child now owns; 0 otherwise.
    static HANDING_TO_CHILD: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// Drops the parent's copy of a target a forked child now runs: its
/// argument and captures belong to the child, so their drops here must not
/// act for them (a pipe end is not closed but passed to the child, see
/// [`handing_to_fork_child`]).
fn drop_handed_to_child(target: Box<dyn Target>, child: i32) {
    struct Handing;
    impl Drop for Handing {
        fn drop(&mut self) {
            HANDING_TO_CHILD.with(|h| h.set(0));
        }
    }
    HANDING_TO_CHILD.with(|h| h.set(child));
    let _handing = Handing;
    drop(target);
}

/// The pid of the forked child whose target this thread is dropping the
/// parent's copy of, if it is doing so: what is dropped now lives on in
/// that child, which owns it from now on.
pub(crate) fn handing_to_fork_child() -> Option<i32> {
    HANDING_TO_CHILD
        .try_with(|h| h.get())
        .ok()
        .filter(|pid| *pid != 0)
}

/// How much room each read of the outcome socket makes at least (more
/// once the frame's head tells its length).
const RECV_CHUNK: usize = 256;

/// Moves the value out of `boxed` and leaks its allocation: no write to
/// the heap, where freeing would write the allocator's bookkeeping.
fn take_leaking<T>(boxed: Box<T>) -> T {
    let raw = Box::into_raw(boxed);
    // SAFETY: `raw` comes from `Box::into_raw`, so it points to a valid,
    // initialised `T` that nothing else owns; it is read once here and
    // never used again (the allocation is leaked, never dropped or freed).
    unsafe { raw.read() }
}

/// A started child: its state and the socket its outcome arrives on.
struct Running {
    state: Arc<ChildState>,
    /// Opened on the first join with a deadline.
    pidfd: PidfdCache,
    sock: UnixStream,
    received: Vec<u8>,
    /// The memory file a large payload came in.
    file: Option<std::fs::File>,
    eof: bool,
    /// Started by spawn: a child that ends without a result may be a
    /// program whose `main` does not call `init()` first.
    spawned: bool,
}

/// A child process that runs `target(arg)` and returns an `R` (Python's `Process`).
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() {
///     multiproc::init();
///     let mut p = multiproc::Process::new(square, 7).name("squarer");
///     p.start().unwrap();
///     assert_eq!(p.join().unwrap(), 49);
///     assert_eq!(p.exitcode(), Some(0));
/// }
/// ```
pub struct Process<R> {
    target: Option<Box<dyn Target>>,
    /// Given at construction (Python names a process when it is made).
    name: String,
    /// Python's `_identity`: the numbers its default name is made of.
    identity: Vec<u32>,
    daemon: bool,
    method: Option<StartMethod>,
    executable: Option<PathBuf>,
    /// The child's authkey, if not this process's.
    authkey: Option<current::AuthKey>,
    running: Option<Running>,
    joined: bool,
    _result: PhantomData<fn() -> R>,
}

impl<R: Shareable> Process<R> {
    /// A process that will run `target(arg)`; it starts on [`Process::start`].
    pub fn new<A: Shareable>(target: fn(A) -> R, arg: A) -> Process<R> {
        Self::with_target(Box::new(FnTarget { f: target, arg }))
    }

    /// A process that will run `target()`, a function without arguments
    /// (Python's `Process(target=f)`); it starts on [`Process::start`].
    ///
    /// ```
    /// fn hello() -> String {
    ///     format!("hello from {}", multiproc::current_process().pid)
    /// }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let mut p = multiproc::Process::from_fn(hello);
    ///     p.start().unwrap();
    ///     let pid = p.pid().unwrap();
    ///     assert_eq!(p.join().unwrap(), format!("hello from {pid}"));
    /// }
    /// ```
    pub fn from_fn(target: fn() -> R) -> Process<R> {
        Self::with_target(Box::new(NoArgTarget { f: target }))
    }

    /// A process that will run a closure; only valid with [`StartMethod::Fork`]
    /// (it forks whatever the default start method: a closure cannot travel
    /// to a spawned child).
    pub fn from_closure<F>(f: F) -> Process<R>
    where
        F: FnOnce() -> R + Send + 'static,
    {
        Self::with_target(Box::new(ClosureTarget(f))).start_method(StartMethod::Fork)
    }

    fn with_target(target: Box<dyn Target>) -> Process<R> {
        let identity = current::next_child_identity();
        Process {
            target: Some(target),
            name: current::default_name(&identity),
            identity,
            // A daemon's children are daemons unless told otherwise, as in
            // Python (the flag is part of the process's inherited config).
            daemon: current::current_process().daemon,
            method: None,
            executable: None,
            authkey: None,
            running: None,
            joined: false,
            _result: PhantomData,
        }
    }

    /// Sets the process name.
    ///
    /// The default, given when the handle is made, is Python's:
    /// `Process-N` for the N-th handle the main process made, and
    /// `Process-2:1` for the first one its child `Process-2` made.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Makes the child a daemon: it is terminated when this process exits,
    /// normally or not. The default is this process's own flag (false in
    /// the main process), as in Python.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Starts the child with `method` instead of the default.
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Gives the child `key` as its authkey instead of this process's own
    /// (Python's `Process.authkey`; see [`AuthKey`](crate::process::AuthKey)).
    pub fn authkey(mut self, key: current::AuthKey) -> Self {
        self.authkey = Some(key);
        self
    }

    /// Takes the start method and executable from `ctx`.
    pub fn context(mut self, ctx: &Context) -> Self {
        self.method = Some(ctx.start_method());
        self.executable = ctx.executable().cloned();
        self
    }

    /// Starts the child. A process starts at most once.
    pub fn start(&mut self) -> Result<()> {
        if child::missing_init() {
            // A spawned child whose `main` skipped `init()`: the parent is
            // told (unless this process's stdin is not its channel).
            child::exit_missing_init();
            return Err(Error::InvalidState(
                "this process was spawned by multiproc but did not call multiproc::init() \
                 first in main"
                    .into(),
            ));
        }
        let Some(target) = self.target.take() else {
            return Err(Error::InvalidState(
                "a process can be started only once".into(),
            ));
        };
        let method = self.method.unwrap_or_else(start_method::use_default_method);
        let name = self.name.clone();
        let mut running = match method {
            StartMethod::Spawn => self.spawn(target, name)?,
            StartMethod::Fork => self.fork(target, name)?,
            StartMethod::Forkserver => self.forkserver(target, name)?,
        };
        running.spawned = method == StartMethod::Spawn;
        self.running = Some(running);
        Ok(())
    }

    fn spawn(&self, target: Box<dyn Target>, name: String) -> Result<Running> {
        let mut payload = target.for_spawn()?;
        let (parent_sock, child_sock) = sys::socket::socketpair()?;
        let exe = self
            .executable
            .clone()
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        let argv0 = std::env::args_os().next();
        let env = [(launch::CHILD_FD_ENV, launch::CHILD_FD_STDIN.to_string())];
        let pid = sys::process::spawn_exec(&exe, argv0.as_ref(), &env, OwnedFd::from(child_sock))?;
        payload.hand_to(pid);
        let state = ChildState::new(pid, name.clone(), self.daemon);
        registry::register(state.clone());
        self.send_launch(&parent_sock, &payload, name, pid, StartMethod::Spawn);
        Ok(Running::new(state, parent_sock))
    }

    /// Asks the forkserver for the child; the launch goes to it as under spawn.
    fn forkserver(&self, target: Box<dyn Target>, name: String) -> Result<Running> {
        let mut payload = target.for_spawn()?;
        // A server that dies while it takes the request is replaced once.
        for _ in 0..2 {
            let (parent_sock, child_sock) = sys::socket::socketpair()?;
            let pending = forkserver::request(OwnedFd::from(child_sock))?;
            // Sent before the pid is read: the child reads it as soon as
            // it runs, while the server's answer is on its way.
            self.send_launch(
                &parent_sock,
                &payload,
                name.clone(),
                0,
                StartMethod::Forkserver,
            );
            if let Some((pid, served)) = pending.started()? {
                payload.hand_to(pid);
                let state = ChildState::served(pid, name, self.daemon, served);
                registry::register(state.clone());
                return Ok(Running::new(state, parent_sock));
            }
        }
        Err(Error::Io(std::io::Error::other(
            "the forkserver died twice while starting a child",
        )))
    }

    /// Sends a spawned (or forkserver) child its launch message.
    fn send_launch(
        &self,
        sock: &UnixStream,
        payload: &SpawnPayload,
        name: String,
        pid: i32,
        method: StartMethod,
    ) {
        let me = current_process();
        let launch = Launch {
            identity: launch::identity().to_string(),
            anchor_check: launch::anchor_check(),
            entry_offset: launch::offset_of(payload.entry),
            target_offset: launch::offset_of(payload.target),
            args: payload.args.clone(),
            fd_ids: payload.fds.iter().map(|(id, _)| *id).collect(),
            name,
            identity_numbers: self.identity.clone(),
            daemon: self.daemon,
            parent_pid: me.pid,
            parent_ticks: sys::process::own_start_ticks(),
            parent_name: me.name,
            root: current::program_root(),
            authkey: self
                .authkey
                .clone()
                .unwrap_or_else(current::authkey)
                .as_bytes()
                .to_vec(),
            start_method: Some(method),
        };
        let fds: Vec<_> = payload.fds.iter().map(|(_, fd)| fd.as_fd()).collect();
        if let Err(e) = launch::send_launch(sock, &launch, &fds) {
            // The child died before reading (it failed to start): join will say how.
            tracing::debug!(pid, "cannot send the launch message: {e}");
        }
    }

    fn fork(&self, target: Box<dyn Target>, name: String) -> Result<Running> {
        use std::io::Write;
        let (parent_sock, child_sock) = sys::socket::socketpair()?;
        // std's stdout and stderr locks, held across the fork (taken first,
        // before any of the runtime's): the child has only this thread, and
        // would wait for ever on a lock another thread held at the fork the
        // first time it prints, or as it flushes stdout at its end.
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.flush();
        let stdio = (stdout, std::io::stderr().lock());
        let me = current_process();
        let parent_ticks = sys::process::own_start_ticks();
        let root = current::program_root();
        // Made now if it was not yet, so that the child inherits this
        // process's key instead of making its own.
        let parent_key = current::authkey();
        let child_key = self.authkey.clone();
        // Every child encodes its result: set up the encoder in this thread
        // now, so children do not each set it up on pages they must copy.
        launch::prepare_encoder();
        // Before the guards below: a hook may talk to a server, which maps segments.
        let hooks = fork_hooks::prepare();
        let forked = {
            let mut children = registry::fork_guard();
            let _segments = shm::fork_guard();
            // SAFETY: the child runs only this thread's target, with the
            // runtime's tables held across the fork by the guards above and
            // the fork hooks run; it ends in `finish` (exit_now). Python's
            // fork start method makes the same bargain.
            let forked = unsafe { sys::process::fork() }?;
            if let Forked::Child = forked {
                registry::forget_all(&mut children);
            }
            forked
        };
        // Both sides: this thread held them at the fork, so each frees its own.
        drop(stdio);
        match forked {
            Forked::Child => {
                drop(parent_sock);
                hooks.child();
                current::become_child(
                    name,
                    self.identity.clone(),
                    self.daemon,
                    me.pid,
                    parent_ticks,
                    me.name,
                    root,
                );
                if let Some(key) = child_key {
                    current::set_authkey(key);
                }
                start_method::started_with(StartMethod::Fork);
                // Its parent's input stays the parent's (spawned children
                // have /dev/null there too).
                if let Err(e) = sys::process::stdin_from_null() {
                    tracing::debug!("a forked child keeps its parent's stdin: {e}");
                }
                current::watch_parent_if_daemon();
                let outcome = target.run_here();
                finish(&child_sock, outcome)
            }
            Forked::Parent(pid) => {
                hooks.parent(pid);
                drop(parent_key);
                drop(child_sock);
                drop_handed_to_child(target, pid);
                let state = ChildState::new(pid, name, self.daemon);
                registry::register(state.clone());
                Ok(Running::new(state, parent_sock))
            }
        }
    }

    fn running(&self) -> Result<&Running> {
        self.running
            .as_ref()
            .ok_or_else(|| Error::InvalidState("the process was not started".into()))
    }

    /// Waits for the child to end and returns the target's result.
    ///
    /// A panic, a non-zero exit or a signal is [`Error::ChildFailed`] with the
    /// detail; the result can be taken once. A target that ends its process
    /// with `std::process::exit(0)` (Python's `sys.exit(0)`) ends cleanly
    /// when it returns `()`: it has no result to lose.
    pub fn join(&mut self) -> Result<R> {
        self.join_deadline(Deadline::Never)
    }

    /// As [`Process::join`], giving up with `Err(Timeout)` after `timeout`
    /// (the child keeps running; join again later).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R> {
        self.join_deadline(Deadline::after(timeout))
    }

    /// As [`Process::join`] without waiting: the result if the child has
    /// ended, `Err(WouldBlock)` while it runs (Python's `join(0)`, then
    /// `exitcode`).
    pub fn try_join(&mut self) -> Result<R> {
        let (running, joined) = self.joinable()?;
        let Some(status) = running.state.try_reap() else {
            return Err(Error::WouldBlock);
        };
        running.pump();
        *joined = true;
        running.result(status)
    }

    /// The started child, and the flag that says its result was taken
    /// (checked here: it was not).
    fn joinable(&mut self) -> Result<(&mut Running, &mut bool)> {
        let Process {
            running, joined, ..
        } = self;
        let running = running
            .as_mut()
            .ok_or_else(|| Error::InvalidState("join of a process that was not started".into()))?;
        if *joined {
            return Err(Error::InvalidState(
                "the result was already taken by an earlier join".into(),
            ));
        }
        Ok((running, joined))
    }

    fn join_deadline(&mut self, deadline: Deadline) -> Result<R> {
        let (running, joined) = self.joinable()?;
        let status = running.wait(deadline)?;
        *joined = true;
        running.result(status)
    }

    /// The child's pid, once started.
    pub fn pid(&self) -> Option<i32> {
        self.running.as_ref().map(|r| r.state.pid)
    }

    /// The process name (set from construction on: see [`Process::name`]).
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// Whether this is a daemon process.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Whether the child has been started and has not ended.
    pub fn is_alive(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.state.try_reap().is_none())
    }

    /// Python's `exitcode`: `None` while running (or not started), the exit
    /// code, or minus the signal that ended it.
    pub fn exitcode(&self) -> Option<i32> {
        self.running
            .as_ref()
            .and_then(|r| r.state.try_reap())
            .map(ExitStatus::code)
    }

    /// A waitable that is ready once the child has ended (Python's
    /// `Process.sentinel`): for [`wait`](crate::connection::wait) beside
    /// connections and queues, or for an event loop of your own (see
    /// [`Sentinel`]). [`Error::InvalidState`] before `start`, as Python
    /// raises `ValueError`.
    pub fn sentinel(&self) -> Result<Sentinel> {
        self.running()?.state.sentinel()
    }

    /// Sends SIGTERM to the child.
    pub fn terminate(&self) -> Result<()> {
        Ok(self.running()?.state.signal(sys::process::signal::TERM)?)
    }

    /// Sends SIGKILL to the child.
    pub fn kill(&self) -> Result<()> {
        Ok(self.running()?.state.signal(sys::process::signal::KILL)?)
    }

    /// Sends SIGCONT to the child: a stopped one resumes (and acts on a
    /// SIGTERM it holds pending).
    pub(crate) fn resume(&self) -> Result<()> {
        Ok(self.running()?.state.signal(sys::process::signal::CONT)?)
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        // A child still running stays in the registry, which reaps it later.
        if let Some(r) = &self.running {
            r.state.try_reap();
        }
    }
}

impl<R> std::fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.running.as_ref().map(|r| r.state.pid))
            .field("daemon", &self.daemon)
            .finish()
    }
}

impl Running {
    fn new(state: Arc<ChildState>, sock: UnixStream) -> Running {
        Running {
            state,
            pidfd: None,
            sock,
            received: Vec::new(),
            file: None,
            eof: false,
            spawned: false,
        }
    }

    /// Reads whatever outcome bytes have arrived, up to a complete frame.
    fn pump(&mut self) {
        while !self.eof && !Outcome::is_complete(&self.received, self.file.as_ref()) {
            // Into the heap buffer: a large stack buffer would cost this
            // process a page fault per page after every fork.
            let missing = Outcome::missing(&self.received).unwrap_or(0);
            self.received.reserve(missing.max(RECV_CHUNK));
            match sys::socket::recv_nonblocking(self.sock.as_fd(), &mut self.received, 1) {
                Ok((0, _)) => self.eof = true,
                Ok((_, fds)) => {
                    if let Some(fd) = fds.into_iter().next() {
                        self.file.get_or_insert(std::fs::File::from(fd));
                    }
                }
                Err(_) => break,
            }
        }
    }

    /// Waits until the child ended, then takes its outcome.
    ///
    /// The child queues its whole outcome without ever waiting for this
    /// side to read (see `Outcome::send`), so its exit is the one event to
    /// wait for, and the parent wakes once: in `waitid` without a deadline,
    /// on a pidfd with one (on the status the forkserver sends, for its
    /// children).
    fn wait(&mut self, deadline: Deadline) -> Result<ExitStatus> {
        loop {
            if let Some(status) = self.state.try_reap() {
                self.pump();
                return Ok(status);
            }
            if deadline.expired() {
                return Err(deadline.timeout_error());
            }
            self.state.wait_ended(deadline, &mut self.pidfd)?;
        }
    }

    /// The join result of a target that ended its process with `exit`.
    fn exited<R: Shareable>(
        &self,
        exitcode: Option<i32>,
        failed: impl Fn(Option<String>) -> Error,
    ) -> Result<R> {
        if exitcode == Some(0) && TypeId::of::<R>() == TypeId::of::<()>() {
            R::decode(&().encode()?)
        } else {
            Err(failed(None))
        }
    }

    /// Turns the received outcome and exit status into the join result.
    fn result<R: Shareable>(&self, status: ExitStatus) -> Result<R> {
        let pid = self.state.pid;
        let (exitcode, signal) = match status {
            ExitStatus::Exited(c) => (Some(c), None),
            ExitStatus::Signaled(s) => (None, Some(s)),
        };
        let failed = |panic: Option<String>| Error::ChildFailed {
            pid,
            exitcode,
            signal,
            panic,
        };
        match Outcome::parse(&self.received, self.file.as_ref()) {
            Some(Ok(Outcome::Returned(bytes))) => R::decode(&bytes),
            Some(Ok(Outcome::Panicked(msg))) => Err(failed(Some(msg))),
            Some(Ok(Outcome::Failed(msg))) => Err(Error::Remote(msg)),
            Some(Ok(Outcome::Mismatch(msg))) => Err(Error::BinaryMismatch(msg)),
            Some(Ok(Outcome::InitMissing)) => Err(Error::InitMissing { pid }),
            Some(Err(e)) => Err(e),
            // The target ended its process with `exit`: with code 0
            // (Python's `sys.exit(0)`) a clean end, and nothing is lost when
            // there was nothing to return. A child that ran a launch message
            // says so from its exit handler; a forked one runs nothing but
            // the target.
            Some(Ok(Outcome::Exited)) => self.exited(exitcode, failed),
            None if !self.spawned => self.exited(exitcode, failed),
            // A spawned child that ran its launch message always reports
            // (its outcome, or its exit from the exit handler): one that
            // ends with code 0 and says nothing ran the program's `main`
            // instead, which does not call `init()` first.
            None if exitcode == Some(0) => Err(Error::InitMissing { pid }),
            None => Err(failed(None)),
        }
    }
}
