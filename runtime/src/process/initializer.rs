//! `Initializer`: a `fn(A)` and its argument, made in one process to be run
//! in a child of the same binary (a manager server's initializer, Python's
//! `SyncManager.start(initializer, initargs)`).

use rkyv::{Archive, Deserialize, Serialize};

use crate::codec::Shareable;
use crate::error::{Error, Result};
use crate::process::launch::{self, Outcome};

/// A `fn(A)` and its encoded argument, travelling to a child as offsets in
/// this binary (as process targets do).
///
/// Not for user code: running one is `unsafe`, because its bytes decide
/// which function runs.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
#[rkyv(crate = rkyv)]
pub struct Initializer {
    entry_offset: i64,
    target_offset: i64,
    arg: Vec<u8>,
}

impl Initializer {
    /// `f(arg)`, to run later in a child; fails if `arg` does not encode.
    pub fn new<A: Shareable>(f: fn(A), arg: &A) -> Result<Initializer> {
        let entry: launch::EntryFn = launch::entry::<A, ()>;
        Ok(Initializer {
            entry_offset: launch::offset_of(entry as *const ()),
            target_offset: launch::offset_of(f as *const ()),
            arg: crate::handle::for_own_child(|| arg.encode())?.into_vec(),
        })
    }

    /// Runs the function on its argument, catching a panic:
    /// `Err(Remote)` naming it (or saying why the argument did not decode).
    ///
    /// # Safety
    ///
    /// `self` must come from [`Initializer::new`] in a process running this
    /// same binary: a child started by this crate (spawn checks the binary's
    /// identity before running anything; fork and forkserver children are
    /// copies), never from bytes read from elsewhere.
    pub unsafe fn run(&self) -> Result<()> {
        // SAFETY: by the caller's promise, the offsets were computed from an
        // `EntryFn` and an `fn(A)` of this same binary, and the entry was
        // instantiated for that `A`.
        let entry = unsafe {
            std::mem::transmute::<*const (), launch::EntryFn>(launch::addr_at(self.entry_offset))
        };
        match entry(launch::addr_at(self.target_offset), &self.arg) {
            // An entry never returns the last two (only a spawned child,
            // or its exit handler, sends them).
            Outcome::Returned(_) | Outcome::InitMissing | Outcome::Exited => Ok(()),
            Outcome::Panicked(m) => Err(Error::Remote(format!("the initializer panicked: {m}"))),
            Outcome::Failed(m) | Outcome::Mismatch(m) => {
                Err(Error::Remote(format!("the initializer could not run: {m}")))
            }
        }
    }
}
