//! `ShareableList`: a fixed-length list of scalars and strings in one
//! segment, in the binary layout of Python's `ShareableList`.
//!
//! The layout (native byte order, as Python's `struct` with `@`):
//!
//! | bytes | what |
//! |---|---|
//! | 8 | `n`, the number of items (i64) |
//! | 8 × (n + 1) | offsets of each item's slot in the data area, then its end (i64) |
//! | offsets[n] | the data area: 8 bytes per int, float, bool or None; a multiple of 8 per string or bytes |
//! | 8 × n | each item's `struct` format, NUL-padded: `q`, `d`, `xxxxxxx?`, `xxxxxx?x` (None), `<len>s` |
//! | n | each item's kind: 0 int/float/bool, 1 str, 2 bytes, 3 None |
//!
//! A Python process can read and write a Rust list (and the other way
//! round) through `ShareableList(name=…)`.

use super::segment::SharedMemory;
use crate::error::{Error, Result};

/// The largest string or bytes slot: its format, "<size>s", fills the 8
/// bytes Python gives each format (a multiple of 8 below 10^7).
const MAX_SLOT: usize = 9_999_992;
const FMT_INT: &[u8] = b"q";
const FMT_FLOAT: &[u8] = b"d";
const FMT_BOOL: &[u8] = b"xxxxxxx?";
const FMT_NONE: &[u8] = b"xxxxxx?x";

const KIND_SCALAR: u8 = 0;
const KIND_STR: u8 = 1;
const KIND_BYTES: u8 = 2;
const KIND_NONE: u8 = 3;

/// One item of a [`ShareableList`].
///
/// Strings and bytes come back without trailing NUL bytes (Python's layout
/// pads them with NULs and strips them on reading).
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A 64-bit integer (Python `int` within that range).
    Int(i64),
    /// A float.
    Float(f64),
    /// A bool.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// Python's `None`.
    None,
}

impl From<i64> for Item {
    fn from(v: i64) -> Item {
        Item::Int(v)
    }
}
impl From<i32> for Item {
    fn from(v: i32) -> Item {
        Item::Int(v.into())
    }
}
impl From<f64> for Item {
    fn from(v: f64) -> Item {
        Item::Float(v)
    }
}
impl From<bool> for Item {
    fn from(v: bool) -> Item {
        Item::Bool(v)
    }
}
impl From<&str> for Item {
    fn from(v: &str) -> Item {
        Item::Str(v.to_string())
    }
}
impl From<String> for Item {
    fn from(v: String) -> Item {
        Item::Str(v)
    }
}
impl From<&[u8]> for Item {
    fn from(v: &[u8]) -> Item {
        Item::Bytes(v.to_vec())
    }
}
impl From<Vec<u8>> for Item {
    fn from(v: Vec<u8>) -> Item {
        Item::Bytes(v)
    }
}

impl Item {
    /// Bytes this item's slot takes when a list is created with it.
    fn slot_len(&self) -> usize {
        match self {
            // As Python: the encoded length rounded up to the next multiple of
            // 8, always leaving room for at least one NUL.
            Item::Str(s) => 8 * (s.len() / 8 + 1),
            Item::Bytes(b) => 8 * (b.len() / 8 + 1),
            _ => 8,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Item::Str(_) => KIND_STR,
            Item::Bytes(_) => KIND_BYTES,
            Item::None => KIND_NONE,
            _ => KIND_SCALAR,
        }
    }
}

/// A fixed-length list in shared memory: Python's `ShareableList`.
///
/// Items are ints, floats, bools, strings, bytes or None ([`Item`]); the
/// length never changes, and a string or bytes item can later hold at most
/// as many bytes as its slot (its first value's length rounded up to a
/// multiple of 8). Any process of the same user attaches it by name,
/// including Python 3's `ShareableList(name=…)`: the layout is Python's.
///
/// Every access is a bounds-checked copy; the list is not locked, so
/// coordinate concurrent writers yourself. The list's header is read once,
/// when attached, and every access stays inside the segment whatever
/// another process writes there.
///
/// ```
/// use multiproc::shared_memory::{Item, ShareableList};
///
/// let list = ShareableList::create(None, &[Item::Int(1), "two".into(), 3.0.into()]).unwrap();
/// let other = ShareableList::attach(list.shm().name()).unwrap();
/// other.set(0, Item::Bool(true)).unwrap();
/// assert_eq!(list.get(0).unwrap(), Item::Bool(true));
/// assert_eq!(list.get(1).unwrap(), Item::Str("two".into()));
/// list.shm().unlink().unwrap();
/// ```
#[derive(Debug)]
pub struct ShareableList {
    shm: SharedMemory,
    /// `n + 1` slot offsets into the data area, read at creation or attach.
    offsets: Vec<usize>,
}

impl ShareableList {
    /// Creates a list holding `items` in a new tracked segment, named `name`
    /// or (with `None`) a random name.
    ///
    /// A string or bytes item of 10 MB or more is [`Error::InvalidArgument`]:
    /// its slot's format would not fit the 8 bytes Python's layout gives it.
    pub fn create(name: Option<&str>, items: &[Item]) -> Result<ShareableList> {
        let (size, offsets) = Self::layout(items)?;
        let shm = SharedMemory::create(name, size)?;
        Self::init(shm, items, offsets)
    }

    /// As [`create`](ShareableList::create), but the segment is untracked
    /// (see [`SharedMemory::create_untracked`]).
    pub fn create_untracked(name: Option<&str>, items: &[Item]) -> Result<ShareableList> {
        let (size, offsets) = Self::layout(items)?;
        let shm = SharedMemory::create_untracked(name, size)?;
        Self::init(shm, items, offsets)
    }

    /// Builds a list in a segment created elsewhere (a
    /// [`SharedMemoryManager`](super::SharedMemoryManager), for example).
    pub(crate) fn create_with(
        items: &[Item],
        make: impl FnOnce(usize) -> Result<SharedMemory>,
    ) -> Result<ShareableList> {
        let (size, offsets) = Self::layout(items)?;
        Self::init(make(size)?, items, offsets)
    }

    fn layout(items: &[Item]) -> Result<(usize, Vec<usize>)> {
        let n = items.len();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut off = 0usize;
        offsets.push(0);
        for (index, item) in items.iter().enumerate() {
            let slot = item.slot_len();
            if slot > MAX_SLOT {
                return Err(Error::InvalidArgument(format!(
                    "item {index} needs a slot of {slot} bytes; a ShareableList slot holds at \
                     most {MAX_SLOT} (its format, \"<size>s\", has 8 characters)"
                )));
            }
            off = off
                .checked_add(slot)
                .ok_or_else(|| Error::InvalidArgument("list too large".into()))?;
            offsets.push(off);
        }
        let size = n
            .checked_mul(17)
            .and_then(|meta| meta.checked_add(16))
            .and_then(|meta| meta.checked_add(off))
            .ok_or_else(|| Error::InvalidArgument("list too large".into()))?;
        Ok((size, offsets))
    }

    fn init(shm: SharedMemory, items: &[Item], offsets: Vec<usize>) -> Result<ShareableList> {
        let list = ShareableList { shm, offsets };
        let result = (|| {
            list.shm.write(0, &(items.len() as i64).to_ne_bytes())?;
            for (i, off) in list.offsets.iter().enumerate() {
                list.shm.write(8 + 8 * i, &(*off as i64).to_ne_bytes())?;
            }
            for (i, item) in items.iter().enumerate() {
                list.store(i, item, true)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(list),
            Err(e) => {
                let _ = list.shm.unlink();
                Err(e)
            }
        }
    }

    /// Attaches the list in segment `name`, made by this crate or by Python.
    ///
    /// Errors: those of [`SharedMemory::attach`], and
    /// [`Error::SizeMismatch`] or [`Error::Protocol`] if the segment does not
    /// hold a well-formed list header.
    pub fn attach(name: &str) -> Result<ShareableList> {
        Self::from_shared_memory(SharedMemory::attach(name)?)
    }

    /// Reads the list in an attached segment.
    pub fn from_shared_memory(shm: SharedMemory) -> Result<ShareableList> {
        let bad = |why: String| {
            Error::Protocol(format!("{:?} is not a ShareableList: {why}", shm.name()))
        };
        let read_i64 = |at: usize| -> Result<i64> {
            let mut b = [0u8; 8];
            shm.read(at, &mut b)?;
            Ok(i64::from_ne_bytes(b))
        };
        if shm.size() < 16 {
            return Err(Error::SizeMismatch {
                what: format!("ShareableList {:?} (header)", shm.name()),
                expected: 16,
                found: shm.size(),
            });
        }
        let n = read_i64(0)?;
        let n = usize::try_from(n).map_err(|_| bad(format!("negative length {n}")))?;
        // Each item needs at least 8 + 8 + 8 + 1 bytes: reject absurd lengths
        // before allocating for them.
        if n > shm.size() / 25 {
            return Err(bad(format!(
                "length {n} cannot fit in {} bytes",
                shm.size()
            )));
        }
        let mut offsets = Vec::with_capacity(n + 1);
        for i in 0..=n {
            let off = read_i64(8 + 8 * i)?;
            let off = usize::try_from(off).map_err(|_| bad(format!("negative offset {off}")))?;
            if offsets.last().is_some_and(|&prev| off < prev) || (i == 0 && off != 0) {
                return Err(bad("offsets out of order".into()));
            }
            offsets.push(off);
        }
        let needed = (n * 17 + 16).saturating_add(offsets[n]);
        if needed > shm.size() {
            return Err(Error::SizeMismatch {
                what: format!("ShareableList {:?}", shm.name()),
                expected: needed,
                found: shm.size(),
            });
        }
        Ok(ShareableList { shm, offsets })
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether the list has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segment holding the list (for its name, or to unlink it).
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    fn data_start(&self) -> usize {
        (self.len() + 2) * 8
    }

    fn formats_start(&self) -> usize {
        self.data_start() + self.offsets[self.len()]
    }

    fn kinds_start(&self) -> usize {
        self.formats_start() + 8 * self.len()
    }

    fn check_index(&self, index: usize) -> Result<()> {
        if index >= self.len() {
            return Err(Error::IndexOutOfRange {
                index,
                len: self.len(),
            });
        }
        Ok(())
    }

    /// The item at `index`.
    ///
    /// Errors: [`Error::IndexOutOfRange`]; [`Error::Codec`] for a string that
    /// is not UTF-8; [`Error::Protocol`] if the item's format is not one a
    /// `ShareableList` writes.
    pub fn get(&self, index: usize) -> Result<Item> {
        self.check_index(index)?;
        let mut fmt = [0u8; 8];
        self.shm.read(self.formats_start() + 8 * index, &mut fmt)?;
        let fmt_len = fmt.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        let fmt = &fmt[..fmt_len];
        let mut kind = [0u8; 1];
        self.shm.read(self.kinds_start() + index, &mut kind)?;
        let at = self.data_start() + self.offsets[index];
        let slot = self.offsets[index + 1] - self.offsets[index];
        if kind[0] == KIND_NONE {
            return Ok(Item::None);
        }
        let mut word = [0u8; 8];
        match fmt {
            FMT_INT | FMT_FLOAT | FMT_BOOL | FMT_NONE => self.shm.read(at, &mut word)?,
            _ => {}
        }
        let item = match fmt {
            FMT_INT => Item::Int(i64::from_ne_bytes(word)),
            FMT_FLOAT => Item::Float(f64::from_ne_bytes(word)),
            FMT_BOOL => Item::Bool(word[7] != 0),
            FMT_NONE => Item::None,
            _ => {
                let len = std::str::from_utf8(fmt)
                    .ok()
                    .and_then(|f| f.strip_suffix('s'))
                    .and_then(|f| f.parse::<usize>().ok())
                    .filter(|&len| len <= slot)
                    .ok_or_else(|| {
                        Error::Protocol(format!(
                            "item {index} has format {:?}, not one a ShareableList writes",
                            String::from_utf8_lossy(fmt)
                        ))
                    })?;
                let mut bytes = vec![0u8; len];
                self.shm.read(at, &mut bytes)?;
                if kind[0] == KIND_SCALAR {
                    // Python returns the raw bytes in this case too.
                    return Ok(Item::Bytes(bytes));
                }
                let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                bytes.truncate(end);
                if kind[0] == KIND_STR {
                    Item::Str(String::from_utf8(bytes).map_err(Error::codec)?)
                } else {
                    Item::Bytes(bytes)
                }
            }
        };
        Ok(item)
    }

    /// Replaces the item at `index`. Any kind may replace any other; a string
    /// or bytes value must fit the slot.
    ///
    /// Errors: [`Error::IndexOutOfRange`]; [`Error::InvalidArgument`] for a
    /// string or bytes longer than the slot.
    pub fn set(&self, index: usize, item: impl Into<Item>) -> Result<()> {
        self.check_index(index)?;
        self.store(index, &item.into(), false)
    }

    fn store(&self, index: usize, item: &Item, fresh: bool) -> Result<()> {
        let at = self.data_start() + self.offsets[index];
        let slot = self.offsets[index + 1] - self.offsets[index];
        if slot < 8 {
            // Only a damaged header makes a slot this small.
            return Err(Error::Protocol(format!(
                "item {index} has a {slot}-byte slot; a ShareableList's are at least 8"
            )));
        }
        let mut data = [0u8; 8];
        let (fmt, bytes): (Vec<u8>, &[u8]) = match item {
            Item::Int(v) => {
                data = v.to_ne_bytes();
                (FMT_INT.to_vec(), &data)
            }
            Item::Float(v) => {
                data = v.to_ne_bytes();
                (FMT_FLOAT.to_vec(), &data)
            }
            Item::Bool(v) => {
                data[7] = u8::from(*v);
                (FMT_BOOL.to_vec(), &data)
            }
            Item::None => (FMT_NONE.to_vec(), &data),
            Item::Str(s) => (Vec::new(), s.as_bytes()),
            Item::Bytes(b) => (Vec::new(), b.as_slice()),
        };
        let fmt = if fmt.is_empty() {
            if slot > MAX_SLOT {
                // A header written elsewhere (Python truncates such a format).
                return Err(Error::InvalidArgument(format!(
                    "item {index}'s slot of {slot} bytes is more than a ShareableList \
                     format can name ({MAX_SLOT})"
                )));
            }
            if bytes.len() > slot {
                return Err(Error::InvalidArgument(format!(
                    "item {index} holds at most {slot} bytes; {} given",
                    bytes.len()
                )));
            }
            format!("{slot}s").into_bytes()
        } else {
            fmt
        };
        let mut fmt_field = [0u8; 8];
        fmt_field[..fmt.len()].copy_from_slice(&fmt);
        self.shm
            .write(self.formats_start() + 8 * index, &fmt_field)?;
        self.shm.write(self.kinds_start() + index, &[item.kind()])?;
        if let Item::Str(_) | Item::Bytes(_) = item {
            // Python's "Ns" pads with NULs to the slot's length.
            self.shm.write(at, bytes)?;
            if !fresh || bytes.len() < slot {
                let pad = vec![0u8; slot - bytes.len()];
                self.shm.write(at + bytes.len(), &pad)?;
            }
        } else {
            self.shm.write(at, bytes)?;
        }
        Ok(())
    }

    /// Every item, in order.
    pub fn to_vec(&self) -> Result<Vec<Item>> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Item> {
        vec![
            Item::Int(-5),
            Item::Float(2.5),
            Item::Bool(true),
            Item::Str("héllo wörld".into()),
            Item::Bytes(b"\x00\x01raw".to_vec()),
            Item::None,
            Item::Str(String::new()),
        ]
    }

    #[test]
    fn round_trips_every_kind() {
        let list = ShareableList::create_untracked(None, &sample()).unwrap();
        assert_eq!(list.len(), 7);
        assert_eq!(list.to_vec().unwrap(), sample());
        let again = ShareableList::attach(list.shm().name()).unwrap();
        assert_eq!(again.to_vec().unwrap(), sample());
        list.shm().unlink().unwrap();
    }

    #[test]
    fn set_replaces_and_checks_room() {
        let list = ShareableList::create_untracked(None, &sample()).unwrap();
        list.set(0, "12345678").unwrap();
        assert_eq!(list.get(0).unwrap(), Item::Str("12345678".into()));
        assert!(matches!(
            list.set(0, "123456789"),
            Err(Error::InvalidArgument(_))
        ));
        list.set(3, 7i64).unwrap();
        assert_eq!(list.get(3).unwrap(), Item::Int(7));
        list.set(3, "short").unwrap();
        assert_eq!(list.get(3).unwrap(), Item::Str("short".into()));
        list.set(5, false).unwrap();
        assert_eq!(list.get(5).unwrap(), Item::Bool(false));
        assert!(matches!(
            list.set(7, 1i64),
            Err(Error::IndexOutOfRange { index: 7, len: 7 })
        ));
        assert!(matches!(list.get(99), Err(Error::IndexOutOfRange { .. })));
        list.shm().unlink().unwrap();
    }

    #[test]
    fn an_empty_list_works() {
        let list = ShareableList::create_untracked(None, &[]).unwrap();
        assert!(list.is_empty());
        assert_eq!(ShareableList::attach(list.shm().name()).unwrap().len(), 0);
        list.shm().unlink().unwrap();
    }

    #[test]
    fn a_corrupt_header_is_an_error_not_a_panic() {
        let list = ShareableList::create_untracked(None, &sample()).unwrap();
        let name = list.shm().name().to_string();
        // An absurd length.
        list.shm().write(0, &i64::MAX.to_ne_bytes()).unwrap();
        assert!(matches!(
            ShareableList::attach(&name),
            Err(Error::Protocol(_))
        ));
        list.shm().write(0, &(-1i64).to_ne_bytes()).unwrap();
        assert!(matches!(
            ShareableList::attach(&name),
            Err(Error::Protocol(_))
        ));
        // Offsets past the end.
        list.shm().write(0, &7i64.to_ne_bytes()).unwrap();
        list.shm()
            .write(8 + 8 * 7, &(1i64 << 40).to_ne_bytes())
            .unwrap();
        assert!(matches!(
            ShareableList::attach(&name),
            Err(Error::SizeMismatch { .. })
        ));
        // A bad format on an item attached earlier.
        let attached = ShareableList::attach(&name);
        assert!(attached.is_err());
        list.shm()
            .write(8 + 8 * 7, &(list.offsets[7] as i64).to_ne_bytes())
            .unwrap();
        let fmt_at = list.formats_start() + 8 * 3;
        list.shm().write(fmt_at, b"9999s\0\0\0").unwrap();
        assert!(matches!(list.get(3), Err(Error::Protocol(_))));
        list.shm().write(fmt_at, b"zz\0\0\0\0\0\0").unwrap();
        assert!(matches!(list.get(3), Err(Error::Protocol(_))));
        list.shm().unlink().unwrap();
    }

    /// A slot's format, "<size>s", must fit its 8 bytes: 10 MB or more is
    /// refused before anything is made, and a header written elsewhere that
    /// claims such a slot is an error on `set`, not a panic. Found by an
    /// attack battery.
    #[test]
    fn a_slot_whose_format_would_not_fit_is_refused() {
        let huge = Item::Str("x".repeat(10_000_000));
        assert!(matches!(
            ShareableList::create_untracked(None, &[huge]),
            Err(Error::InvalidArgument(_))
        ));
        let largest = "y".repeat(MAX_SLOT - 1);
        let list = ShareableList::create_untracked(
            None,
            &[Item::Str(largest.clone()), Item::Str("12345678".into())],
        )
        .unwrap();
        assert_eq!(list.get(0).unwrap(), Item::Str(largest));
        // Item 0's slot made to take the whole data area, as another
        // program could write it.
        let whole = (MAX_SLOT + 16) as i64;
        list.shm().write(8 + 8, &whole.to_ne_bytes()).unwrap();
        let attached = ShareableList::attach(list.shm().name()).unwrap();
        assert!(matches!(
            attached.set(0, "hi"),
            Err(Error::InvalidArgument(_))
        ));
        list.shm().unlink().unwrap();
    }
}
