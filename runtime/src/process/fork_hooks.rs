//! Hooks that other parts of multiproc run around a `Fork` start.
//!
//! A library whose in-process state must be fixed up in a forked child (the
//! manager client re-registers the references its proxies hold, for
//! example) registers a [`ForkHook`]. [`Process`](crate::Process) calls every
//! hook's `prepare` in the parent just before it forks, then `parent` or
//! `child` on each side with what `prepare` returned. Only forks made by
//! multiproc run the hooks (not `std::process::Command`, which execs at once).

use std::any::Any;

use parking_lot::Mutex;

/// Code to run around a fork made by [`Process`](crate::Process) under `Fork`.
pub trait ForkHook: Sync + 'static {
    /// In the parent, before the fork. What it returns (locks held across the
    /// fork, for example) is handed to `parent` or `child` afterwards.
    fn prepare(&self) -> Box<dyn Any>;
    /// In the parent, after a failed fork (and after a fork that made a
    /// child, unless [`ForkHook::parent_of`] says otherwise).
    fn parent(&self, state: Box<dyn Any>);
    /// In the parent, after a fork that made process `child`. The default
    /// runs [`ForkHook::parent`].
    fn parent_of(&self, state: Box<dyn Any>, child: i32) {
        let _ = child;
        self.parent(state);
    }
    /// In the new child, after the fork, before the target runs; only the
    /// forking thread exists there.
    fn child(&self, state: Box<dyn Any>);
}

static HOOKS: Mutex<Vec<&'static dyn ForkHook>> = Mutex::new(Vec::new());

/// Registers `hook` for every later fork (once per hook: registering the
/// same hook twice runs it twice).
pub fn register_fork_hook(hook: &'static dyn ForkHook) {
    HOOKS.lock().push(hook);
}

/// The hooks' states between `prepare` and the fork's two sides.
pub(crate) struct Prepared {
    states: Vec<(&'static dyn ForkHook, Box<dyn Any>)>,
}

/// Runs every hook's `prepare`, in registration order.
pub(crate) fn prepare() -> Prepared {
    let hooks: Vec<&'static dyn ForkHook> = HOOKS.lock().clone();
    Prepared {
        states: hooks.into_iter().map(|h| (h, h.prepare())).collect(),
    }
}

impl Prepared {
    /// Runs every hook's `child` side (in the new child).
    ///
    /// Inline, and with nothing to run nothing is touched: each new code
    /// page a forked child runs costs it a page fault.
    #[inline]
    pub(crate) fn child(mut self) {
        if self.states.is_empty() {
            // Nothing to run, and an empty list holds no memory.
            std::mem::forget(self);
            return;
        }
        for (hook, state) in std::mem::take(&mut self.states).into_iter().rev() {
            hook.child(state);
        }
    }
}

impl Prepared {
    /// Runs every hook's parent side after a fork that made process `child`.
    pub(crate) fn parent(mut self, child: i32) {
        for (hook, state) in std::mem::take(&mut self.states).into_iter().rev() {
            hook.parent_of(state, child);
        }
    }
}

impl Drop for Prepared {
    /// The parent's side after a failed fork.
    fn drop(&mut self) {
        for (hook, state) in std::mem::take(&mut self.states).into_iter().rev() {
            hook.parent(state);
        }
    }
}
