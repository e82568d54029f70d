//! Hooks that other parts of multiproc run around a `Fork` start.
//!
//! A library whose in-process state must be fixed up in a forked child (the
//! manager client re-registers the references its proxies hold, for
//! example) registers a [`ForkHook`]. [`Process`](crate::Process) calls every
//! hook's `prepare` in the parent just before it forks, then `parent` or
//! `child` on each side with what `prepare` returned. Only forks made by
//! multiproc run the hooks (not `std::process::Command`, which execs at once).

use std::any::Any;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Code to run around a fork made by [`Process`](crate::Process) under `Fork`.
pub trait ForkHook: Any + Sync {
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

/// One registered hook, in a list that only grows at its head: nodes are
/// leaked and never change once published, so the list needs no lock. (A
/// lock that another thread held while registering at the moment of a fork
/// would stay held for ever in the child, whose own forks would then hang.)
struct Node {
    hook: &'static dyn ForkHook,
    /// The node registered before this one.
    next: *const Node,
}

/// The hook registered last.
static HOOKS: AtomicPtr<Node> = AtomicPtr::new(std::ptr::null_mut());

/// The hooks of the list from `head` on, last registered first.
fn hooks_from(head: *const Node) -> impl Iterator<Item = &'static dyn ForkHook> {
    let mut at = head;
    std::iter::from_fn(move || {
        // SAFETY: every non-null pointer in the list came from `Box::leak`
        // in `register_fork_hook` and was published (with Release, after
        // its fields were written) only once complete; nodes are never
        // freed nor changed after that.
        let node = unsafe { at.as_ref() }?;
        at = node.next;
        Some(node.hook)
    })
}

/// Whether `a` and `b` are one hook: one address and one type (hooks of
/// different zero-sized types may share an address).
fn same_hook(a: &'static dyn ForkHook, b: &'static dyn ForkHook) -> bool {
    let (a_any, b_any): (&dyn Any, &dyn Any) = (a, b);
    std::ptr::addr_eq(a, b) && a_any.type_id() == b_any.type_id()
}

/// Registers `hook` for every later fork. Registering a hook that is
/// registered already (the same static: one address, one type) does
/// nothing, so a module may call this before each first use of the state
/// its hook guards, with no `Once` (a `Once` that another thread was
/// running at a fork would never end in the child).
pub fn register_fork_hook(hook: &'static dyn ForkHook) {
    let mut head = HOOKS.load(Ordering::Acquire);
    let mut fresh: Option<&'static mut Node> = None;
    loop {
        if hooks_from(head).any(|h| same_hook(h, hook)) {
            // Registered (a node leaked for a lost race stays unused).
            return;
        }
        let node = fresh.get_or_insert_with(|| {
            Box::leak(Box::new(Node {
                hook,
                next: std::ptr::null(),
            }))
        });
        node.next = head;
        let ptr: *mut Node = &mut **node;
        match HOOKS.compare_exchange(head, ptr, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(now) => head = now,
        }
    }
}

/// The hooks' states between `prepare` and the fork's two sides.
pub(crate) struct Prepared {
    states: Vec<(&'static dyn ForkHook, Box<dyn Any>)>,
}

/// Runs every hook's `prepare`, in registration order.
pub(crate) fn prepare() -> Prepared {
    let mut hooks: Vec<&'static dyn ForkHook> = hooks_from(HOOKS.load(Ordering::Acquire)).collect();
    hooks.reverse();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    static FIRST_RUNS: AtomicU32 = AtomicU32::new(0);
    static SECOND_RUNS: AtomicU32 = AtomicU32::new(0);

    /// Two zero-sized hooks: their statics may share one address.
    struct First;
    struct Second;

    impl ForkHook for First {
        fn prepare(&self) -> Box<dyn Any> {
            FIRST_RUNS.fetch_add(1, Ordering::Relaxed);
            Box::new(())
        }
        fn parent(&self, _: Box<dyn Any>) {}
        fn child(&self, _: Box<dyn Any>) {}
    }

    impl ForkHook for Second {
        fn prepare(&self) -> Box<dyn Any> {
            SECOND_RUNS.fetch_add(1, Ordering::Relaxed);
            Box::new(())
        }
        fn parent(&self, _: Box<dyn Any>) {}
        fn child(&self, _: Box<dyn Any>) {}
    }

    static FIRST: First = First;
    static SECOND: Second = Second;

    #[test]
    fn each_hook_runs_once_however_often_registered_and_zero_sized_ones_are_told_apart() {
        for _ in 0..3 {
            register_fork_hook(&FIRST);
            register_fork_hook(&SECOND);
        }
        let (first, second) = (
            FIRST_RUNS.load(Ordering::Relaxed),
            SECOND_RUNS.load(Ordering::Relaxed),
        );
        // Dropped: the parent's side of a fork that did not happen.
        drop(prepare());
        assert_eq!(FIRST_RUNS.load(Ordering::Relaxed), first + 1);
        assert_eq!(SECOND_RUNS.load(Ordering::Relaxed), second + 1);
    }
}
