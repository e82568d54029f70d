//! Hooks that other parts of multiproc run around a `Fork` start.
//!
//! A library whose in-process state must be fixed up in a forked child (the
//! manager client re-registers the references its proxies hold, for
//! example) registers a [`ForkHook`]. [`Process`](crate::Process) calls every
//! hook's `prepare` in the parent just before it forks, then `parent` or
//! `child` on each side with what `prepare` returned. Only forks made by
//! multiproc run the hooks (not `std::process::Command`, which execs at once).

use std::any::Any;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

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
/// leaked and their hook and link never change once published, so the
/// list needs no lock. (A lock that another thread held while registering
/// at the moment of a fork would stay held for ever in the child, whose own
/// forks would then hang.)
struct Node {
    hook: &'static dyn ForkHook,
    /// The node registered before this one.
    next: *const Node,
    /// Every fork that may have read the list before this node was in it
    /// has ended: every fork from now on runs this hook.
    settled: AtomicBool,
}

/// The longest [`register_fork_hook`] waits for forks in progress to end.
const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// The hook registered last.
static HOOKS: AtomicPtr<Node> = AtomicPtr::new(std::ptr::null_mut());

/// Forks of this process between their read of the list and their end
/// in the parent (see [`register_fork_hook`]).
static FORKING: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread is forking (from [`prepare`] to the fork's end): a
    /// hook it registers meanwhile must not wait for its own fork.
    static FORKING_HERE: Cell<bool> = const { Cell::new(false) };
}

/// The nodes of the list from `head` on, last registered first.
fn nodes_from(head: *const Node) -> impl Iterator<Item = &'static Node> {
    let mut at = head;
    std::iter::from_fn(move || {
        // SAFETY: every non-null pointer in the list came from `Box::leak`
        // in `register_fork_hook` and was published (with a SeqCst
        // compare-exchange, after its fields were written) only once
        // complete; nodes are never freed, and only their atomic flag
        // changes after that.
        let node = unsafe { at.as_ref() }?;
        at = node.next;
        Some(node)
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
///
/// It returns once every fork that may have missed the hook (one that read
/// the list before the hook was in it) has ended: from then on, state the
/// caller takes is guarded at every fork. A fork marks itself in
/// [`FORKING`] before it reads the list (both `SeqCst`), so a fork that this
/// call does not see in progress reads a list that has the hook.
pub fn register_fork_hook(hook: &'static dyn ForkHook) {
    let mut head = HOOKS.load(Ordering::SeqCst);
    let mut fresh: Option<&'static mut Node> = None;
    let node: &'static Node = loop {
        if let Some(known) = nodes_from(head).find(|n| same_hook(n.hook, hook)) {
            // (A node leaked for a lost race stays unused.)
            break known;
        }
        let node = fresh.get_or_insert_with(|| {
            Box::leak(Box::new(Node {
                hook,
                next: std::ptr::null(),
                settled: AtomicBool::new(false),
            }))
        });
        node.next = head;
        let ptr: *mut Node = &mut **node;
        match HOOKS.compare_exchange(head, ptr, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => {
                // SAFETY: as in `nodes_from`: published just now, never freed.
                break unsafe { &*ptr };
            }
            Err(now) => head = now,
        }
    };
    if node.settled.load(Ordering::Acquire) || FORKING_HERE.with(Cell::get) {
        return;
    }
    // Forks take a millisecond or so; this happens once per hook, or
    // until the first registration of it has settled. Bounded: a fork whose
    // hook waits for a lock this thread holds would otherwise wait for this
    // wait (no caller registers under such a lock; this is a backstop).
    let started = std::time::Instant::now();
    while FORKING.load(Ordering::SeqCst) != 0 {
        if started.elapsed() > SETTLE_MAX {
            tracing::debug!("a fork hook was registered while a fork went on for long");
            return;
        }
        std::thread::yield_now();
    }
    node.settled.store(true, Ordering::Release);
}

/// The hooks' states between `prepare` and the fork's two sides.
pub(crate) struct Prepared {
    states: Vec<(&'static dyn ForkHook, Box<dyn Any>)>,
    /// Counted in [`FORKING`] until the fork's end in this process.
    counted: bool,
}

/// Runs every hook's `prepare`, in registration order.
pub(crate) fn prepare() -> Prepared {
    FORKING.fetch_add(1, Ordering::SeqCst);
    FORKING_HERE.with(|f| f.set(true));
    let mut hooks: Vec<&'static dyn ForkHook> = nodes_from(HOOKS.load(Ordering::SeqCst))
        .map(|n| n.hook)
        .collect();
    hooks.reverse();
    Prepared {
        states: hooks.into_iter().map(|h| (h, h.prepare())).collect(),
        counted: true,
    }
}

impl Prepared {
    /// Runs every hook's `child` side (in the new child).
    ///
    /// Inline, and with nothing to run nothing is touched but two words:
    /// each new code page a forked child runs costs it a page fault.
    #[inline]
    pub(crate) fn child(mut self) {
        // Only this thread exists here, and it forks no more.
        FORKING.store(0, Ordering::SeqCst);
        FORKING_HERE.with(|f| f.set(false));
        self.counted = false;
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
    /// The parent's side after a failed fork; and, after either side, the
    /// end of the fork in this process.
    fn drop(&mut self) {
        for (hook, state) in std::mem::take(&mut self.states).into_iter().rev() {
            hook.parent(state);
        }
        if self.counted {
            FORKING_HERE.with(|f| f.set(false));
            FORKING.fetch_sub(1, Ordering::SeqCst);
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
