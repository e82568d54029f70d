//! Objects a server keeps for clients that may wait on them: Lock, RLock,
//! Condition, Semaphore, Event, Barrier and Queue, as remote clients (over TCP) use
//! them. Local clients use the same kinds as shared segments directly.
//!
//! Each object is one mutex and condition variable. A waiting
//! method runs on its connection's server thread without the table's lock,
//! and wakes every [`SLICE`] to check that its client is still there and the
//! server is not stopping, so a vanished client never leaves a thread
//! waiting for ever. Clients wait on a connection of their own (see the
//! proxy crate), so a waiting thread never holds up the other proxies of
//! its process.
//!
//! A lock records which connection holds it (and, for a recursive lock,
//! which thread of that client, and how deep). When that connection ends
//! (its process died or closed it), the server releases the lock and the
//! next acquirer is told, as a local lock reports a dead holder.
//!
//! A condition refers to a lock object of the same table. A waiter
//! registers and releases the lock in one step (`cond_prepare_wait`, under
//! the condition's mutex, which every notify takes too), waits on a
//! connection of its own for its ticket, and takes the lock back with an
//! ordinary acquire. A waiter whose connection ends is forgotten, and a
//! notify it had not taken passes to the next waiter; when the lock's
//! holder is lost, every waiter is woken (the first to take the lock back
//! is told). Mutexes are always taken condition first, then lock.

use std::collections::VecDeque;
use std::time::Duration;

use std::sync::Arc;

use crate::fork_sync::{Condvar, Mutex, MutexGuard};

use crate::deadline::Deadline;
use crate::manager::protocol::{ObjectId, ObjectKind, RemoteError, WAIT_FOREVER};
use crate::manager::table::Stored;

/// How often a waiting method checks its client and the server.
const SLICE: Duration = Duration::from_millis(50);

/// The connection a request came on: its identity (a lock's holder) and
/// whether it has gone (or the server is stopping), checked while waiting.
pub(crate) struct Peer<'a> {
    /// Unique for the server's lifetime.
    pub id: u64,
    /// True once the client left or the server is stopping.
    pub gone: &'a dyn Fn() -> bool,
    /// The client's pid, for a local connection (a TCP peer's is unknown).
    pub pid: Option<i32>,
}

impl Peer<'_> {
    /// A peer that never goes (the server's own requests).
    pub fn server_itself() -> Peer<'static> {
        Peer {
            id: 0,
            gone: &|| false,
            pid: None,
        }
    }
}

/// What a lock's `try_acquire` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Someone holds it.
    Busy,
    /// Taken; it was free or released normally.
    Taken,
    /// Taken from a holder whose connection ended (the pid it declared).
    TakenFromLost(i64),
}

/// Who holds a server-kept lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    /// The holder's connection (its process).
    conn: u64,
    /// The holding thread, as the client names it (a recursive lock's owner;
    /// any thread of the holder's process may release a plain lock).
    thread: u64,
    /// The pid the holder declared.
    pid: i64,
    /// How deep the thread holds a recursive lock (1 for a plain lock).
    count: u64,
}

/// A condition's waiter, from `CondPrepareWait` until its `CondWait` ends.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    id: u64,
    /// The connection that registered it (its process).
    conn: u64,
    /// Notified, not yet woken.
    granted: bool,
}

/// A server-kept condition: its lock (another object of the table, which
/// the condition holds a reference to) and its waiters, oldest first.
#[derive(Debug)]
struct Cond {
    lock: Arc<Waitable>,
    lock_id: ObjectId,
    waiters: VecDeque<Ticket>,
    next_ticket: u64,
    /// The lock's [`Waitable::losses`] the waiters were last woken for.
    seen_losses: u64,
}

impl Cond {
    /// Notifies up to `n` waiters (the oldest not yet notified); how many.
    fn grant(&mut self, n: u64) -> u64 {
        let mut granted = 0;
        for t in self.waiters.iter_mut().filter(|t| !t.granted) {
            if granted == n {
                break;
            }
            t.granted = true;
            granted += 1;
        }
        granted
    }
}

#[derive(Debug)]
enum State {
    Lock {
        holder: Option<Holder>,
        /// The pid of the last holder, if its connection ended while holding it.
        lost: Option<i64>,
        /// How many holders were lost so far (a condition wakes its waiters then).
        losses: u64,
        /// A recursive lock (an RLock) rather than a plain one.
        recursive: bool,
    },
    Condition(Cond),
    Semaphore {
        value: u64,
        /// The largest value a release may reach: the initial value of a
        /// bounded semaphore, `u32::MAX` otherwise.
        bound: u64,
    },
    Event {
        set: bool,
        /// How many times it was raised: a waiter woken by a `set` returns
        /// true even if a `clear` came before it ran again (as in Python).
        sets: u64,
    },
    Barrier {
        parties: u64,
        count: u64,
        generation: u64,
        broken: bool,
        /// Rounds ended by `reset` with parties waiting, and how many of
        /// those have not woken yet (they fail with `BrokenBarrier`).
        resets: Vec<(u64, u64)>,
    },
    Queue {
        items: VecDeque<Stored>,
        maxsize: usize,
        unfinished: u64,
    },
}

#[derive(Debug)]
struct Inner {
    /// The object left the table (its last reference went).
    freed: bool,
    /// Clients asleep in a wait now.
    sleeping: u32,
    state: State,
}

/// One server-kept object a client may wait on.
#[derive(Debug)]
pub(crate) struct Waitable {
    inner: Mutex<Inner>,
    cond: Condvar,
}

/// What a wait ended with (besides its condition holding).
fn gone_error() -> RemoteError {
    RemoteError::ShuttingDown
}

impl Waitable {
    /// A new object of `kind` (one of the waitable kinds) with its parameter.
    pub fn new(kind: ObjectKind, arg: u64) -> Result<Waitable, RemoteError> {
        let state = match kind {
            ObjectKind::Lock | ObjectKind::RLock => State::Lock {
                holder: None,
                lost: None,
                losses: 0,
                recursive: kind == ObjectKind::RLock,
            },
            ObjectKind::Semaphore | ObjectKind::BoundedSemaphore => {
                // As a local semaphore: a value is a u32, and a release
                // never takes it past its maximum.
                if arg > u64::from(u32::MAX) {
                    return Err(RemoteError::Malformed(format!(
                        "semaphore value {arg} exceeds its maximum {}",
                        u32::MAX
                    )));
                }
                State::Semaphore {
                    value: arg,
                    bound: if kind == ObjectKind::BoundedSemaphore {
                        arg
                    } else {
                        u64::from(u32::MAX)
                    },
                }
            }
            ObjectKind::Event => State::Event {
                set: false,
                sets: 0,
            },
            ObjectKind::Barrier => {
                if arg == 0 {
                    return Err(RemoteError::Malformed(
                        "a barrier needs at least one party".into(),
                    ));
                }
                State::Barrier {
                    parties: arg,
                    count: 0,
                    generation: 0,
                    broken: false,
                    resets: Vec::new(),
                }
            }
            ObjectKind::Queue => State::Queue {
                items: VecDeque::new(),
                maxsize: usize::try_from(arg).unwrap_or(usize::MAX),
                unfinished: 0,
            },
            ObjectKind::Dict
            | ObjectKind::List
            | ObjectKind::Namespace
            | ObjectKind::Segment
            | ObjectKind::User
            | ObjectKind::Condition => {
                return Err(RemoteError::Malformed(format!(
                    "{kind:?} is not a kind made from an argument alone"
                )));
            }
        };
        Ok(Self::with_state(state))
    }

    /// A new condition over `lock` (a Lock or RLock object of the table,
    /// `lock_id`, to which the caller gives the condition a reference).
    pub fn condition(lock: Arc<Waitable>, lock_id: ObjectId) -> Result<Waitable, RemoteError> {
        if lock.lock_is_recursive().is_err() {
            return Err(RemoteError::Malformed(
                "a condition's lock must be a Lock or an RLock".into(),
            ));
        }
        let seen_losses = lock.losses();
        Ok(Self::with_state(State::Condition(Cond {
            lock,
            lock_id,
            waiters: VecDeque::new(),
            next_ticket: 1,
            seen_losses,
        })))
    }

    fn with_state(state: State) -> Waitable {
        Waitable {
            inner: Mutex::new(Inner {
                freed: false,
                sleeping: 0,
                state,
            }),
            cond: Condvar::new(),
        }
    }

    /// Marks the object freed, wakes its waiters, and hands back its
    /// queued values (for the references they held and their charges).
    pub fn free(&self, out: &mut Vec<Stored>) {
        let mut inner = self.inner.lock();
        inner.freed = true;
        match &mut inner.state {
            State::Queue { items, .. } => out.extend(items.drain(..)),
            // The condition's reference to its lock goes with it.
            State::Condition(c) => out.push(Stored {
                refs: Box::from([c.lock_id]),
                ..Stored::default()
            }),
            _ => {}
        }
        drop(inner);
        self.cond.notify_all();
    }

    /// Waits while `blocked` holds: `Ok(true)` once it does not, `Ok(false)`
    /// when the deadline passed first.
    fn wait_while(
        &self,
        inner: &mut MutexGuard<'_, Inner>,
        deadline: Deadline,
        peer: &Peer<'_>,
        mut blocked: impl FnMut(&mut State) -> bool,
    ) -> Result<bool, RemoteError> {
        loop {
            if inner.freed {
                return Err(RemoteError::Failed("the object was freed".into()));
            }
            if !blocked(&mut inner.state) {
                return Ok(true);
            }
            if deadline.expired() {
                return Ok(false);
            }
            if (peer.gone)() {
                return Err(gone_error());
            }
            let slice = deadline.slice(SLICE);
            inner.sleeping += 1;
            self.cond.wait_for(inner, slice);
            inner.sleeping -= 1;
        }
    }

    fn changed(&self) {
        self.cond.notify_all();
    }

    // ---- Lock and RLock ----

    /// Takes a plain lock for `peer` (whose process says its pid is `pid`) if it is free.
    #[cfg(test)]
    pub fn lock_try_acquire(&self, peer: &Peer<'_>, pid: i64) -> Result<Take, RemoteError> {
        self.lock_take(peer, pid, 0, None)
    }

    /// Takes the lock for thread `thread` of `peer` (whose process says its
    /// pid is `pid`) if it is free, or enters a recursive lock that thread
    /// holds again. With `restore`, takes a free lock that deep and never
    /// enters it again (a condition waiter restoring its hold).
    pub fn lock_take(
        &self,
        peer: &Peer<'_>,
        pid: i64,
        thread: u64,
        restore: Option<u64>,
    ) -> Result<Take, RemoteError> {
        let mut inner = self.inner.lock();
        match &mut inner.state {
            State::Lock {
                holder,
                lost,
                recursive,
                ..
            } => {
                if let Some(h) = holder {
                    if *recursive && restore.is_none() && h.conn == peer.id && h.thread == thread {
                        h.count = h.count.checked_add(1).ok_or_else(|| {
                            RemoteError::InvalidState("RLock recursion too deep".into())
                        })?;
                        return Ok(Take::Taken);
                    }
                    return Ok(Take::Busy);
                }
                let count = if *recursive {
                    restore.unwrap_or(1).max(1)
                } else {
                    1
                };
                *holder = Some(Holder {
                    conn: peer.id,
                    thread,
                    pid,
                    count,
                });
                Ok(lost.take().map_or(Take::Taken, Take::TakenFromLost))
            }
            _ => Err(wrong_kind()),
        }
    }

    /// Releases the lock: any connection may release a plain lock (as with
    /// Python's Lock); only the holding thread, one level at a time, a
    /// recursive one.
    pub fn lock_release(&self, peer: &Peer<'_>, thread: u64) -> Result<(), RemoteError> {
        let mut inner = self.inner.lock();
        match &mut inner.state {
            State::Lock {
                holder, recursive, ..
            } => match holder {
                None if !*recursive => {
                    return Err(RemoteError::InvalidState(
                        "release of an unlocked lock".into(),
                    ));
                }
                Some(h) if *recursive && (h.conn, h.thread) == (peer.id, thread) => {
                    h.count -= 1;
                    if h.count > 0 {
                        return Ok(());
                    }
                    *holder = None;
                }
                Some(_) if !*recursive => *holder = None,
                _ => return Err(not_owner()),
            },
            _ => return Err(wrong_kind()),
        }
        drop(inner);
        self.changed();
        Ok(())
    }

    /// Releases the lock completely if thread `thread` of connection `conn`
    /// holds it (any thread of the holder's process, for a plain lock), and
    /// returns how deep it was held; `None` if the caller does not hold it.
    fn lock_release_all(&self, conn: u64, thread: u64) -> Result<Option<u64>, RemoteError> {
        let mut inner = self.inner.lock();
        let saved = match &mut inner.state {
            State::Lock {
                holder, recursive, ..
            } => match *holder {
                Some(h) if h.conn == conn && (!*recursive || h.thread == thread) => {
                    *holder = None;
                    h.count
                }
                _ => return Ok(None),
            },
            _ => return Err(wrong_kind()),
        };
        drop(inner);
        self.changed();
        Ok(Some(saved))
    }

    /// How deep thread `thread` of connection `conn` holds the lock (0:
    /// not at all; a plain lock held by any thread of that process: 1).
    pub fn lock_count(&self, conn: u64, thread: u64) -> Result<u64, RemoteError> {
        match &self.inner.lock().state {
            State::Lock {
                holder: Some(h),
                recursive,
                ..
            } if h.conn == conn && (!*recursive || h.thread == thread) => Ok(h.count),
            State::Lock { .. } => Ok(0),
            _ => Err(wrong_kind()),
        }
    }

    /// Whether this is a recursive lock (`Err` if it is no lock).
    fn lock_is_recursive(&self) -> Result<bool, RemoteError> {
        match &self.inner.lock().state {
            State::Lock { recursive, .. } => Ok(*recursive),
            _ => Err(wrong_kind()),
        }
    }

    /// How many holders this lock lost to their connections ending (0 for
    /// anything else).
    fn losses(&self) -> u64 {
        match &self.inner.lock().state {
            State::Lock { losses, .. } => *losses,
            _ => 0,
        }
    }

    /// Waits until the lock is free.
    pub fn lock_wait_free(&self, deadline: Deadline, peer: &Peer<'_>) -> Result<bool, RemoteError> {
        let mut inner = self.inner.lock();
        self.wait_while(&mut inner, deadline, peer, |s| {
            matches!(
                s,
                State::Lock {
                    holder: Some(_),
                    ..
                }
            )
        })
    }

    pub fn lock_is_locked(&self) -> Result<bool, RemoteError> {
        match &self.inner.lock().state {
            State::Lock { holder, .. } => Ok(holder.is_some()),
            _ => Err(wrong_kind()),
        }
    }

    /// What connection `conn` leaves behind when it ends: a lock it holds
    /// is released, and the next acquirer learns that its holder was lost;
    /// a condition forgets the waiters it registered (a notify one of them
    /// had not taken yet passes to the next waiter) and wakes every waiter
    /// if its lock's holder was lost.
    pub fn connection_ended(&self, conn: u64) {
        let mut inner = self.inner.lock();
        match &mut inner.state {
            State::Lock {
                holder,
                lost,
                losses,
                ..
            } => {
                if let Some(h) = *holder
                    && h.conn == conn
                {
                    *holder = None;
                    *lost = Some(h.pid);
                    *losses += 1;
                    drop(inner);
                    tracing::warn!(conn, "a lock's holder left; the lock is released");
                    self.changed();
                }
            }
            State::Condition(c) => {
                // Whichever the table asks first, the lock or its condition.
                c.lock.connection_ended(conn);
                let mut passed = 0;
                c.waiters.retain(|t| {
                    let theirs = t.conn == conn;
                    passed += u64::from(theirs && t.granted);
                    !theirs
                });
                let mut woken = c.grant(passed);
                let losses = c.lock.losses();
                if losses != c.seen_losses {
                    c.seen_losses = losses;
                    woken += c.grant(u64::MAX);
                }
                drop(inner);
                if woken > 0 {
                    self.changed();
                }
            }
            _ => {}
        }
    }

    // ---- Condition ----

    /// The condition's lock: its object id and whether it is recursive.
    pub fn cond_lock(&self) -> Result<(ObjectId, bool), RemoteError> {
        let lock = match &self.inner.lock().state {
            State::Condition(c) => (c.lock.clone(), c.lock_id),
            _ => return Err(wrong_kind()),
        };
        Ok((lock.1, lock.0.lock_is_recursive()?))
    }

    /// Registers thread `thread` of `peer`, which must hold the lock, as a
    /// waiter and releases the lock completely, in one step (no notify
    /// falls between); returns its ticket and how deep it held the lock.
    pub fn cond_prepare_wait(
        &self,
        peer: &Peer<'_>,
        thread: u64,
    ) -> Result<(u64, u64), RemoteError> {
        let mut inner = self.inner.lock();
        if inner.freed {
            return Err(RemoteError::Failed("the object was freed".into()));
        }
        let State::Condition(c) = &mut inner.state else {
            return Err(wrong_kind());
        };
        let Some(saved) = c.lock.lock_release_all(peer.id, thread)? else {
            return Err(RemoteError::InvalidState(
                "wait on a condition whose lock the caller does not hold".into(),
            ));
        };
        let ticket = c.next_ticket;
        c.next_ticket += 1;
        c.waiters.push_back(Ticket {
            id: ticket,
            conn: peer.id,
            granted: false,
        });
        Ok((ticket, saved))
    }

    /// Waits until `ticket` is notified (true) or the deadline passes
    /// (false); the ticket is gone afterwards either way. A wait that
    /// fails (its client left) passes a notify it got on to the next waiter.
    pub fn cond_wait(
        &self,
        ticket: u64,
        deadline: Deadline,
        peer: &Peer<'_>,
    ) -> Result<bool, RemoteError> {
        let mut inner = self.inner.lock();
        let waited = self.wait_while(&mut inner, deadline, peer, |s| match s {
            State::Condition(c) => c.waiters.iter().any(|t| t.id == ticket && !t.granted),
            _ => false,
        });
        let State::Condition(c) = &mut inner.state else {
            return Err(wrong_kind());
        };
        let granted = match c.waiters.iter().position(|t| t.id == ticket) {
            Some(at) => c.waiters.remove(at).is_some_and(|t| t.granted),
            None => false,
        };
        if waited.is_err() && granted && c.grant(1) > 0 {
            drop(inner);
            self.changed();
        }
        waited.map(|_| granted)
    }

    /// Notifies up to `n` waiters; thread `thread` of `peer` must hold the lock.
    pub fn cond_notify(&self, peer: &Peer<'_>, thread: u64, n: u64) -> Result<(), RemoteError> {
        let mut inner = self.inner.lock();
        let State::Condition(c) = &mut inner.state else {
            return Err(wrong_kind());
        };
        if c.lock.lock_count(peer.id, thread)? == 0 {
            return Err(RemoteError::InvalidState(
                "notify on a condition whose lock the caller does not hold".into(),
            ));
        }
        if c.grant(n) > 0 {
            drop(inner);
            self.changed();
        }
        Ok(())
    }

    // ---- Semaphore ----

    pub fn sem_try_acquire(&self) -> Result<bool, RemoteError> {
        match &mut self.inner.lock().state {
            State::Semaphore { value, .. } => Ok(if *value > 0 {
                *value -= 1;
                true
            } else {
                false
            }),
            _ => Err(wrong_kind()),
        }
    }

    pub fn sem_release(&self) -> Result<(), RemoteError> {
        let mut inner = self.inner.lock();
        match &mut inner.state {
            State::Semaphore { value, bound } => {
                if *value >= *bound {
                    return Err(RemoteError::InvalidState(format!(
                        "semaphore released too many times (its value is at most {bound})"
                    )));
                }
                *value += 1;
            }
            _ => return Err(wrong_kind()),
        }
        drop(inner);
        self.changed();
        Ok(())
    }

    pub fn sem_wait_available(
        &self,
        deadline: Deadline,
        peer: &Peer<'_>,
    ) -> Result<bool, RemoteError> {
        let mut inner = self.inner.lock();
        self.wait_while(&mut inner, deadline, peer, |s| {
            matches!(s, State::Semaphore { value: 0, .. })
        })
    }

    pub fn sem_value(&self) -> Result<u64, RemoteError> {
        match &self.inner.lock().state {
            State::Semaphore { value, .. } => Ok(*value),
            _ => Err(wrong_kind()),
        }
    }

    // ---- Event ----

    pub fn event_set(&self, raised: bool) -> Result<(), RemoteError> {
        match &mut self.inner.lock().state {
            State::Event { set, sets } => {
                *set = raised;
                *sets += u64::from(raised);
            }
            _ => return Err(wrong_kind()),
        }
        if raised {
            self.changed();
        }
        Ok(())
    }

    pub fn event_is_set(&self) -> Result<bool, RemoteError> {
        match &self.inner.lock().state {
            State::Event { set, .. } => Ok(*set),
            _ => Err(wrong_kind()),
        }
    }

    pub fn event_wait(&self, deadline: Deadline, peer: &Peer<'_>) -> Result<bool, RemoteError> {
        let mut inner = self.inner.lock();
        let seen = match &inner.state {
            State::Event { sets, .. } => *sets,
            _ => return Err(wrong_kind()),
        };
        self.wait_while(
            &mut inner,
            deadline,
            peer,
            |s| matches!(s, State::Event { set: false, sets } if *sets == seen),
        )
    }

    // ---- Barrier ----

    /// Arrives and waits for the round to complete; returns this party's
    /// arrival index. A timeout, or this client leaving, breaks the barrier
    /// (as Python's timeout does). With `only_if_last`, arrives only if that
    /// completes the round (`Ok(None)` otherwise, having changed nothing).
    pub fn barrier_wait(
        &self,
        deadline: Deadline,
        only_if_last: bool,
        peer: &Peer<'_>,
    ) -> Result<Option<u64>, RemoteError> {
        let mut inner = self.inner.lock();
        let (index, my_generation) = match &mut inner.state {
            State::Barrier {
                parties,
                count,
                generation,
                broken,
                ..
            } => {
                if *broken {
                    return Err(RemoteError::BrokenBarrier);
                }
                let index = *count;
                if index + 1 >= *parties {
                    *count = 0;
                    *generation += 1;
                    drop(inner);
                    self.changed();
                    return Ok(Some(index));
                }
                if only_if_last {
                    return Ok(None);
                }
                *count += 1;
                (index, *generation)
            }
            _ => return Err(wrong_kind()),
        };
        let waited = self.wait_while(&mut inner, deadline, peer, |s| match s {
            State::Barrier {
                generation, broken, ..
            } => *generation == my_generation && !*broken,
            _ => false,
        });
        let State::Barrier {
            count,
            generation,
            broken,
            resets,
            ..
        } = &mut inner.state
        else {
            return Err(wrong_kind());
        };
        if *generation != my_generation {
            let Some(at) = resets.iter().position(|(g, _)| *g == my_generation) else {
                return Ok(Some(index));
            };
            resets[at].1 -= 1;
            if resets[at].1 == 0 {
                resets.swap_remove(at);
            }
            return Err(RemoteError::BrokenBarrier);
        }
        // Still this round: broken, timed out, or the client left. Leave it
        // broken for everyone, as a timeout does in Python.
        *count = count.saturating_sub(1);
        if !*broken {
            *broken = true;
            drop(inner);
            self.changed();
        }
        match waited {
            Err(e) => Err(e),
            Ok(_) => Err(RemoteError::BrokenBarrier),
        }
    }

    pub fn barrier_abort(&self) -> Result<(), RemoteError> {
        match &mut self.inner.lock().state {
            State::Barrier { broken, .. } => *broken = true,
            _ => return Err(wrong_kind()),
        }
        self.changed();
        Ok(())
    }

    /// Returns the barrier to its empty, unbroken state; parties waiting
    /// now fail with `BrokenBarrier`.
    pub fn barrier_reset(&self) -> Result<(), RemoteError> {
        match &mut self.inner.lock().state {
            State::Barrier {
                count,
                generation,
                broken,
                resets,
                ..
            } => {
                if *count > 0 {
                    resets.push((*generation, *count));
                }
                *count = 0;
                *generation += 1;
                *broken = false;
            }
            _ => return Err(wrong_kind()),
        }
        self.changed();
        Ok(())
    }

    /// (parties, waiting now, broken).
    pub fn barrier_status(&self) -> Result<(u64, u64, bool), RemoteError> {
        match &self.inner.lock().state {
            State::Barrier {
                parties,
                count,
                broken,
                ..
            } => Ok((*parties, *count, *broken)),
            _ => Err(wrong_kind()),
        }
    }

    // ---- Queue ----

    /// Adds `item` unless the queue is full (then gives it back).
    pub fn queue_put(&self, item: Stored) -> Result<Result<(), Stored>, RemoteError> {
        let mut inner = self.inner.lock();
        if inner.freed {
            // Freed while the put looked it up (see `dispatch::waitable_call`).
            return Err(RemoteError::Failed("the object was freed".into()));
        }
        match &mut inner.state {
            State::Queue {
                items,
                maxsize,
                unfinished,
            } => {
                if *maxsize != 0 && items.len() >= *maxsize {
                    return Ok(Err(item));
                }
                items.push_back(item);
                *unfinished += 1;
            }
            _ => return Err(wrong_kind()),
        }
        drop(inner);
        self.changed();
        Ok(Ok(()))
    }

    /// Takes the front value, if any, once `accept` agreed to it (an error
    /// from `accept` leaves it in the queue).
    pub fn queue_get(
        &self,
        accept: impl FnOnce(&Stored) -> Result<(), RemoteError>,
    ) -> Result<Option<Stored>, RemoteError> {
        let mut inner = self.inner.lock();
        let item = match &mut inner.state {
            State::Queue { items, .. } => match items.front() {
                Some(front) => {
                    accept(front)?;
                    items.pop_front()
                }
                None => None,
            },
            _ => return Err(wrong_kind()),
        };
        drop(inner);
        if item.is_some() {
            self.changed();
        }
        Ok(item)
    }

    /// Puts `item` back at the front, where a `queue_get` took it from (a
    /// taker that could not hand it on). Ignores `maxsize`: the item had
    /// its place already.
    pub fn queue_unget(&self, item: Stored) -> Result<(), RemoteError> {
        let mut inner = self.inner.lock();
        if inner.freed {
            return Err(RemoteError::Failed("the object was freed".into()));
        }
        match &mut inner.state {
            State::Queue { items, .. } => items.push_front(item),
            _ => return Err(wrong_kind()),
        }
        drop(inner);
        self.changed();
        Ok(())
    }

    pub fn queue_wait(
        &self,
        for_room: bool,
        deadline: Deadline,
        peer: &Peer<'_>,
    ) -> Result<bool, RemoteError> {
        let mut inner = self.inner.lock();
        self.wait_while(&mut inner, deadline, peer, |s| match s {
            State::Queue { items, maxsize, .. } => {
                if for_room {
                    *maxsize != 0 && items.len() >= *maxsize
                } else {
                    items.is_empty()
                }
            }
            _ => false,
        })
    }

    /// Clients asleep in a wait on this object now (any wait: a getter,
    /// a putter, a joiner), for diagnostics.
    pub fn sleepers(&self) -> u32 {
        self.inner.lock().sleeping
    }

    /// (length, maxsize, unfinished tasks).
    pub fn queue_status(&self) -> Result<(u64, u64, u64), RemoteError> {
        match &self.inner.lock().state {
            State::Queue {
                items,
                maxsize,
                unfinished,
            } => Ok((items.len() as u64, *maxsize as u64, *unfinished)),
            _ => Err(wrong_kind()),
        }
    }

    pub fn queue_task_done(&self) -> Result<(), RemoteError> {
        let mut inner = self.inner.lock();
        match &mut inner.state {
            State::Queue { unfinished, .. } => {
                // As Python's: counted against the items put.
                if *unfinished == 0 {
                    return Err(RemoteError::InvalidState(
                        "task_done() called more times than there were items put".into(),
                    ));
                }
                *unfinished -= 1;
            }
            _ => return Err(wrong_kind()),
        }
        drop(inner);
        self.changed();
        Ok(())
    }

    pub fn queue_join(&self, deadline: Deadline, peer: &Peer<'_>) -> Result<bool, RemoteError> {
        let mut inner = self.inner.lock();
        self.wait_while(
            &mut inner,
            deadline,
            peer,
            |s| matches!(s, State::Queue { unfinished, .. } if *unfinished > 0),
        )
    }
}

/// The deadline a call's `wait_us` names.
pub(crate) fn deadline_of(wait_us: u64) -> Deadline {
    match wait_us {
        WAIT_FOREVER => Deadline::Never,
        0 => Deadline::Now,
        us => Deadline::after(Duration::from_micros(us)),
    }
}

fn not_owner() -> RemoteError {
    RemoteError::InvalidState("release of an RLock this thread does not hold".into())
}

/// The method's kind was checked first; a mismatch here is a server bug.
fn wrong_kind() -> RemoteError {
    RemoteError::Failed("object state does not match its kind".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn peer(id: u64) -> Peer<'static> {
        Peer {
            id,
            gone: &|| false,
            pid: None,
        }
    }

    #[test]
    fn a_lock_lost_with_its_connection_says_so_once() {
        let l = Waitable::new(ObjectKind::Lock, 0).unwrap();
        assert_eq!(l.lock_try_acquire(&peer(1), 101).unwrap(), Take::Taken);
        assert_eq!(l.lock_try_acquire(&peer(2), 102).unwrap(), Take::Busy);
        l.connection_ended(2);
        assert!(
            l.lock_is_locked().unwrap(),
            "only the holder's end releases"
        );
        l.connection_ended(1);
        assert_eq!(
            l.lock_try_acquire(&peer(2), 102).unwrap(),
            Take::TakenFromLost(101)
        );
        l.lock_release(&peer(1), 0).unwrap();
        assert_eq!(l.lock_try_acquire(&peer(3), 103).unwrap(), Take::Taken);
        l.lock_release(&peer(1), 0).unwrap();
        assert!(matches!(
            l.lock_release(&peer(1), 0),
            Err(RemoteError::InvalidState(_))
        ));
    }

    #[test]
    fn an_rlock_belongs_to_one_thread_of_one_connection() {
        let l = Waitable::new(ObjectKind::RLock, 0).unwrap();
        assert_eq!(l.lock_take(&peer(1), 101, 7, None).unwrap(), Take::Taken);
        assert_eq!(l.lock_take(&peer(1), 101, 7, None).unwrap(), Take::Taken);
        assert_eq!(l.lock_count(1, 7).unwrap(), 2);
        // Another thread of the holder's process, or the same thread id on
        // another connection, neither enters nor releases it.
        assert_eq!(l.lock_take(&peer(1), 101, 8, None).unwrap(), Take::Busy);
        assert_eq!(l.lock_take(&peer(2), 102, 7, None).unwrap(), Take::Busy);
        assert!(matches!(
            l.lock_release(&peer(1), 8),
            Err(RemoteError::InvalidState(_))
        ));
        assert!(matches!(
            l.lock_release(&peer(2), 7),
            Err(RemoteError::InvalidState(_))
        ));
        assert_eq!(l.lock_count(1, 8).unwrap(), 0);
        l.lock_release(&peer(1), 7).unwrap();
        assert!(l.lock_is_locked().unwrap());
        // Lost with its connection, two deep: the next holder is one deep.
        l.connection_ended(1);
        assert_eq!(
            l.lock_take(&peer(2), 102, 9, None).unwrap(),
            Take::TakenFromLost(101)
        );
        assert_eq!(l.lock_count(2, 9).unwrap(), 1);
        l.lock_release(&peer(2), 9).unwrap();
        assert!(!l.lock_is_locked().unwrap());
        // A restore takes a free lock that deep, and never re-enters.
        assert_eq!(l.lock_take(&peer(3), 103, 1, Some(3)).unwrap(), Take::Taken);
        assert_eq!(l.lock_take(&peer(3), 103, 1, Some(3)).unwrap(), Take::Busy);
        assert_eq!(l.lock_count(3, 1).unwrap(), 3);
    }

    fn condition() -> (Arc<Waitable>, Waitable) {
        let lock = Arc::new(Waitable::new(ObjectKind::RLock, 0).unwrap());
        let cond = Waitable::condition(lock.clone(), 42).unwrap();
        (lock, cond)
    }

    /// Thread 1 of connection `conn` takes the lock and registers as a waiter.
    fn register(lock: &Waitable, cond: &Waitable, conn: u64) -> u64 {
        assert_eq!(
            lock.lock_take(&peer(conn), conn as i64, 1, None).unwrap(),
            Take::Taken
        );
        let (ticket, saved) = cond.cond_prepare_wait(&peer(conn), 1).unwrap();
        assert_eq!(saved, 1);
        ticket
    }

    #[test]
    fn a_condition_notifies_exactly_n_of_its_waiters() {
        let (lock, cond) = condition();
        assert!(matches!(
            cond.cond_prepare_wait(&peer(1), 1),
            Err(RemoteError::InvalidState(_))
        ));
        let tickets: Vec<u64> = (1..=3).map(|c| register(&lock, &cond, c)).collect();
        assert!(!lock.lock_is_locked().unwrap(), "waiting released the lock");
        assert!(matches!(
            cond.cond_notify(&peer(9), 1, 1),
            Err(RemoteError::InvalidState(_))
        ));
        lock.lock_take(&peer(9), 9, 1, None).unwrap();
        cond.cond_notify(&peer(9), 1, 2).unwrap();
        let woken: Vec<bool> = tickets
            .iter()
            .map(|t| cond.cond_wait(*t, Deadline::Now, &peer(5)).unwrap())
            .collect();
        // The oldest two; the third timed out and left.
        assert_eq!(woken, [true, true, false]);
        cond.cond_notify(&peer(9), 1, u64::MAX).unwrap();
        assert!(!cond.cond_wait(tickets[2], Deadline::Now, &peer(5)).unwrap());
        assert_eq!(cond.cond_lock().unwrap(), (42, true));
    }

    #[test]
    fn a_dead_waiters_notify_passes_on_and_a_dead_holder_wakes_everyone() {
        let (lock, cond) = condition();
        let first = register(&lock, &cond, 1);
        let second = register(&lock, &cond, 2);
        let third = register(&lock, &cond, 3);
        lock.lock_take(&peer(9), 9, 1, None).unwrap();
        cond.cond_notify(&peer(9), 1, 1).unwrap();
        lock.lock_release(&peer(9), 1).unwrap();
        // The waiter notified dies before it woke: the next one gets it.
        cond.connection_ended(1);
        assert!(!cond.cond_wait(first, Deadline::Now, &peer(5)).unwrap());
        assert!(cond.cond_wait(second, Deadline::Now, &peer(5)).unwrap());
        // A holder of the lock dies: the lock is released and every waiter woken.
        lock.lock_take(&peer(7), 77, 1, None).unwrap();
        cond.connection_ended(7);
        assert!(!lock.lock_is_locked().unwrap());
        assert!(cond.cond_wait(third, Deadline::Now, &peer(5)).unwrap());
        assert_eq!(
            lock.lock_take(&peer(3), 3, 1, Some(1)).unwrap(),
            Take::TakenFromLost(77)
        );
    }

    #[test]
    fn a_freed_condition_lets_its_lock_go() {
        let (_lock, cond) = condition();
        let mut out = Vec::new();
        cond.free(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&*out[0].refs, &[42]);
    }

    #[test]
    fn a_waiting_lock_wakes_on_release_and_times_out_otherwise() {
        let l = Arc::new(Waitable::new(ObjectKind::Lock, 0).unwrap());
        assert_eq!(l.lock_try_acquire(&peer(1), 1).unwrap(), Take::Taken);
        assert!(
            !l.lock_wait_free(Deadline::after(Duration::from_millis(20)), &peer(2))
                .unwrap()
        );
        let waiter = {
            let l = l.clone();
            std::thread::spawn(move || l.lock_wait_free(Deadline::Never, &peer(2)))
        };
        l.lock_release(&peer(1), 0).unwrap();
        assert!(waiter.join().unwrap().unwrap());
    }

    #[test]
    fn a_wait_ends_when_its_client_goes() {
        let e = Waitable::new(ObjectKind::Event, 0).unwrap();
        let gone = Peer {
            id: 1,
            gone: &|| true,
            pid: None,
        };
        assert_eq!(
            e.event_wait(Deadline::Never, &gone),
            Err(RemoteError::ShuttingDown)
        );
    }

    #[test]
    fn a_barrier_gives_distinct_indices_and_breaks_on_timeout_and_reset() {
        let b = Arc::new(Waitable::new(ObjectKind::Barrier, 3).unwrap());
        let waiters: Vec<_> = (0..2)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || b.barrier_wait(Deadline::Never, false, &peer(i)))
            })
            .collect();
        while b.barrier_status().unwrap().1 < 2 {
            std::thread::yield_now();
        }
        let last = b.barrier_wait(Deadline::Never, false, &peer(9)).unwrap();
        let mut got: Vec<u64> = waiters
            .into_iter()
            .map(|w| w.join().unwrap().unwrap().unwrap())
            .collect();
        got.push(last.unwrap());
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2]);

        assert_eq!(
            b.barrier_wait(Deadline::after(Duration::from_millis(10)), false, &peer(1)),
            Err(RemoteError::BrokenBarrier)
        );
        assert!(b.barrier_status().unwrap().2, "a timeout breaks it");
        assert_eq!(
            b.barrier_wait(Deadline::Never, false, &peer(1)),
            Err(RemoteError::BrokenBarrier)
        );
        b.barrier_reset().unwrap();
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || b.barrier_wait(Deadline::Never, false, &peer(1)))
        };
        while b.barrier_status().unwrap().1 < 1 {
            std::thread::yield_now();
        }
        b.barrier_reset().unwrap();
        assert_eq!(waiter.join().unwrap(), Err(RemoteError::BrokenBarrier));
        assert_eq!(b.barrier_wait(Deadline::Now, true, &peer(1)), Ok(None));
    }

    #[test]
    fn every_waiter_woken_by_a_set_sees_it_even_if_cleared_at_once() {
        let e = Arc::new(Waitable::new(ObjectKind::Event, 0).unwrap());
        let waiters: Vec<_> = (0..8)
            .map(|i| {
                let e = e.clone();
                std::thread::spawn(move || e.event_wait(Deadline::Never, &peer(i)))
            })
            .collect();
        // Every waiter is asleep, having seen the flag lowered.
        while e.inner.lock().sleeping < 8 {
            std::thread::yield_now();
        }
        e.event_set(true).unwrap();
        e.event_set(false).unwrap();
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(true));
        }
    }

    #[test]
    fn waiters_of_a_reset_round_fail_however_many_rounds_pass_meanwhile() {
        let b = Waitable::new(ObjectKind::Barrier, 2).unwrap();
        // A round with one waiter, reset; then many rounds reset while empty.
        let stuck = {
            let mut inner = b.inner.lock();
            if let State::Barrier { count, .. } = &mut inner.state {
                *count = 1;
            }
            0
        };
        b.barrier_reset().unwrap();
        for _ in 0..40 {
            b.barrier_reset().unwrap();
        }
        match &b.inner.lock().state {
            State::Barrier { resets, .. } => assert_eq!(resets, &vec![(stuck, 1)]),
            _ => unreachable!(),
        }
    }

    #[test]
    fn an_item_put_back_is_the_next_one_taken() {
        let q = Waitable::new(ObjectKind::Queue, 1).unwrap();
        let item = |b: &[u8]| Stored {
            bytes: Box::from(b),
            refs: Box::from(&[][..]),
            owner: 0,
            charge: 0,
        };
        assert!(q.queue_put(item(b"1")).unwrap().is_ok());
        let taken = q.queue_get(|_| Ok(())).unwrap().unwrap();
        assert!(q.queue_put(item(b"2")).unwrap().is_ok());
        // Back at the front, even though the queue is at its maxsize.
        q.queue_unget(taken).unwrap();
        assert_eq!(q.queue_status().unwrap(), (2, 1, 2));
        assert_eq!(&*q.queue_get(|_| Ok(())).unwrap().unwrap().bytes, b"1");
        assert_eq!(&*q.queue_get(|_| Ok(())).unwrap().unwrap().bytes, b"2");
    }

    #[test]
    fn a_queue_counts_tasks_and_respects_maxsize() {
        let q = Waitable::new(ObjectKind::Queue, 1).unwrap();
        let item = || Stored {
            bytes: Box::from(&b"x"[..]),
            ..Stored::default()
        };
        assert!(q.queue_put(item()).unwrap().is_ok());
        assert!(q.queue_put(item()).unwrap().is_err(), "full at maxsize");
        assert!(
            !q.queue_join(Deadline::after(Duration::from_millis(10)), &peer(1))
                .unwrap()
        );
        let refuse = |_: &Stored| Err(RemoteError::Full);
        assert!(matches!(q.queue_get(refuse), Err(RemoteError::Full)));
        assert_eq!(
            q.queue_status().unwrap().0,
            1,
            "a refused get leaves the item"
        );
        assert!(q.queue_get(|_| Ok(())).unwrap().is_some());
        assert!(q.queue_get(|_| Ok(())).unwrap().is_none());
        q.queue_task_done().unwrap();
        assert!(q.queue_join(Deadline::Now, &peer(1)).unwrap());
        assert!(matches!(
            q.queue_task_done(),
            Err(RemoteError::InvalidState(_))
        ));
    }

    #[test]
    fn a_release_past_the_maximum_is_refused_bounded_or_not() {
        let s = Waitable::new(ObjectKind::Semaphore, u64::from(u32::MAX) - 1).unwrap();
        s.sem_release().unwrap();
        assert!(matches!(s.sem_release(), Err(RemoteError::InvalidState(_))));
        assert_eq!(s.sem_value().unwrap(), u64::from(u32::MAX));
        let b = Waitable::new(ObjectKind::BoundedSemaphore, 1).unwrap();
        assert!(matches!(b.sem_release(), Err(RemoteError::InvalidState(_))));
        assert!(Waitable::new(ObjectKind::Semaphore, u64::from(u32::MAX) + 1).is_err());
    }
}
