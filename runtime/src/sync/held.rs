//! Which data locks (a `Value`'s or an `Array`'s) this thread holds, and how.
//!
//! A process-shared lock records its holder's process, not its thread, so a
//! thread that asks again for a lock it holds would wait for itself for
//! ever. Python's idiom `with v.get_lock(): v.value += 1` does just that
//! (its default lock is an `RLock`). The guards of a data lock note here
//! that their thread holds it: a read or write of the value through
//! `get`/`set` under the thread's own `get_lock()` guard then goes straight
//! to the data (that guard gives no reference to it, so nothing aliases),
//! and a second guard is an error instead of a wait for ever.

use std::cell::Cell;

use crate::sync::RawLock;

/// How this thread holds a data lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Through a `DataLockGuard` (`get_lock().lock()`): no access to the data.
    Lock,
    /// Through a `ValueGuard` or an `ArrayGuard`: the data is borrowed.
    Data,
}

/// Data locks one thread can be known to hold at once; more are not
/// tracked (a second guard of one of those waits, as before).
const SLOTS: usize = 8;

thread_local! {
    /// Each slot: a held lock's address (8-aligned), plus 1 if held as
    /// [`Holder::Data`]; 0 if free. No destructor and no lazy set-up: a
    /// guard pays two short scans.
    static HELD: [Cell<usize>; SLOTS] = const { [const { Cell::new(0) }; SLOTS] };
}

#[inline]
fn address(lock: &RawLock) -> usize {
    std::ptr::from_ref(lock) as usize
}

/// Notes that this thread now holds `lock` (its guard is not `Send`, so it
/// is released on this thread too).
#[inline]
pub(crate) fn note(lock: &RawLock, how: Holder) {
    let entry = address(lock) | usize::from(how == Holder::Data);
    HELD.with(|slots| {
        if let Some(free) = slots.iter().find(|s| s.get() == 0) {
            free.set(entry);
        }
    });
}

/// Notes that this thread released `lock`.
#[inline]
pub(crate) fn forget(lock: &RawLock) {
    let at = address(lock);
    HELD.with(|slots| {
        if let Some(slot) = slots.iter().find(|s| s.get() & !1 == at) {
            slot.set(0);
        }
    });
}

/// How this thread holds `lock`, if it does (and the lock says this
/// process holds it: a guard leaked and force-unlocked since is not held).
/// An entry a leaked guard left stays true of its lock: a leaked
/// `DataLockGuard` leaks its segment's mapping too, so no other lock comes
/// to that address; a leaked data guard's entry only makes a second guard
/// an error, and a `get` wait as it would anyway.
pub(crate) fn held_here(lock: &RawLock) -> Option<Holder> {
    let at = address(lock);
    let entry = HELD.with(|slots| slots.iter().map(Cell::get).find(|e| e & !1 == at))?;
    let how = if entry & 1 == 1 {
        Holder::Data
    } else {
        Holder::Lock
    };
    lock.held_by_this_process().then_some(how)
}

/// Takes a data lock for a guard of its data if it is free, and notes it.
#[inline]
pub(crate) fn try_for_data(lock: &RawLock) -> bool {
    let taken = lock.try_lock();
    if taken {
        note(lock, Holder::Data);
    }
    taken
}

/// Takes a data lock for a guard of its data by `deadline`, and notes it
/// ([`Holder::Data`]). If it is held, `refuse_own` and this thread holds
/// it: `Err(InvalidState)` instead of a wait for itself. `owner_alive`
/// runs between a wait's slices (a manager-made segment's owner check).
#[inline]
pub(crate) fn take_for_data(
    lock: &RawLock,
    deadline: crate::deadline::Deadline,
    refuse_own: bool,
    owner_alive: impl FnMut() -> crate::Result<()>,
) -> crate::Result<crate::sync::Acquired> {
    if try_for_data(lock) {
        return Ok(crate::sync::Acquired::Clean);
    }
    if refuse_own && held_here(lock).is_some() {
        return Err(would_wait_for_itself());
    }
    let acquired = lock
        .lock_watched(deadline, owner_alive)?
        .ok_or_else(|| deadline.timeout_error())?;
    note(lock, Holder::Data);
    Ok(acquired)
}

/// The error for a second guard of a lock this thread holds.
pub(crate) fn would_wait_for_itself() -> crate::Error {
    crate::Error::InvalidState(
        "this thread holds this shared data's lock already (a guard of it, or of its \
         get_lock(), is alive): locking it again would wait for ever"
            .into(),
    )
}
