//! `SharedMemoryManager`: segments that go away together when it stops.

use crate::fork_sync::Mutex;

use super::list::{Item, ShareableList};
use super::segment::{self, SharedMemory};
use crate::error::{Error, Result};

/// Creates segments and unlinks all of them when it stops: Python's
/// `multiprocessing.managers.SharedMemoryManager`.
///
/// [`shutdown`](SharedMemoryManager::shutdown) (or dropping the manager)
/// unlinks every segment it made that is still there; processes that have
/// them mapped keep their mappings. The segments are tracked as well, so if
/// this process is killed before it shuts the manager down, its tracker
/// unlinks them. Python runs the manager as a server process; here it lives
/// in the process that starts it (pass the segments' names to others).
///
/// ```
/// use multiproc::shared_memory::{Item, SharedMemory, SharedMemoryManager};
///
/// let smm = SharedMemoryManager::start().unwrap();
/// let shm = smm.shared_memory(128).unwrap();
/// let list = smm.shareable_list(&[Item::Int(1), Item::Int(2)]).unwrap();
/// let name = shm.name().to_string();
/// smm.shutdown().unwrap();
/// assert!(SharedMemory::attach(&name).is_err());
/// # drop(list);
/// ```
#[derive(Debug)]
pub struct SharedMemoryManager {
    /// Names still to unlink; `None` once stopped.
    names: Mutex<Option<Vec<String>>>,
}

impl SharedMemoryManager {
    /// A running manager with no segments yet.
    pub fn start() -> Result<SharedMemoryManager> {
        Ok(SharedMemoryManager {
            names: Mutex::new(Some(Vec::new())),
        })
    }

    fn track(&self, make: impl FnOnce() -> Result<SharedMemory>) -> Result<SharedMemory> {
        let mut names = self.names.lock();
        let Some(names) = names.as_mut() else {
            return Err(Error::InvalidState(
                "the shared memory manager has been shut down".into(),
            ));
        };
        let shm = make()?;
        names.push(shm.name().to_string());
        Ok(shm)
    }

    /// A new segment of `size` bytes with a random name (Python's
    /// `smm.SharedMemory(size)`).
    ///
    /// [`Error::InvalidState`] after shutdown; otherwise as
    /// [`SharedMemory::create`].
    pub fn shared_memory(&self, size: usize) -> Result<SharedMemory> {
        self.track(|| SharedMemory::create(None, size))
    }

    /// A new [`ShareableList`] holding `items` (Python's `smm.ShareableList(seq)`).
    pub fn shareable_list(&self, items: &[Item]) -> Result<ShareableList> {
        ShareableList::create_with(items, |size| self.shared_memory(size))
    }

    /// The names of the segments this manager will unlink.
    pub fn segment_names(&self) -> Vec<String> {
        self.names.lock().clone().unwrap_or_default()
    }

    /// Unlinks every segment this manager made (those someone else already
    /// unlinked are skipped) and stops it; later calls do nothing. Reports
    /// the first failure after trying every segment.
    pub fn shutdown(&self) -> Result<()> {
        let Some(names) = self.names.lock().take() else {
            return Ok(());
        };
        let mut first_error = None;
        for name in names {
            match segment::unlink(&name) {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for SharedMemoryManager {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!("shared memory manager: could not unlink a segment: {e}");
        }
    }
}
