//! A managed dict's entries, stored compactly.
//!
//! As in CPython's own dict, the entries sit side by side in one vector and
//! a separate hash index maps a key to its position (4 bytes a slot): a
//! growing index costs little and entries are never spread over a sparse
//! table. A key or value up to [`INLINE`] bytes (an encoded integer, a
//! short string) is kept inside its entry, with no allocation of its own.
//! A 1 M-key `DictProxy<u64, u64>` so takes about 80 bytes a key in the
//! server (with a `HashMap<Box<[u8]>, Stored>` it took twice as much).
//!
//! Keys are hashed with the standard library's randomly seeded SipHash: a
//! client choosing keys cannot make lookups collide on purpose.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::manager::protocol::ObjectId;
use crate::manager::table::{Stored, charge_of};

/// The longest key or value kept inside its entry.
pub const INLINE: usize = 22;

/// Bytes kept inline when short, on the heap otherwise.
#[derive(Debug, Clone)]
enum Bytes {
    Inline { len: u8, data: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Bytes {
    fn new(b: &[u8]) -> Bytes {
        if b.len() <= INLINE {
            let mut data = [0; INLINE];
            data[..b.len()].copy_from_slice(b);
            Bytes::Inline {
                len: b.len() as u8,
                data,
            }
        } else {
            Bytes::Heap(Box::from(b))
        }
    }

    fn from_box(b: Box<[u8]>) -> Bytes {
        if b.len() <= INLINE {
            Bytes::new(&b)
        } else {
            Bytes::Heap(b)
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Inline { len, data } => &data[..usize::from(*len)],
            Bytes::Heap(b) => b,
        }
    }

    fn into_box(self) -> Box<[u8]> {
        match self {
            Bytes::Inline { .. } => Box::from(self.as_slice()),
            Bytes::Heap(b) => b,
        }
    }
}

/// One entry. What it charged its owner is not kept: a dict entry is
/// always charged its key's and value's bytes and its references (see
/// [`Stored::entry`]).
#[derive(Debug)]
struct Entry {
    key: Bytes,
    value: Bytes,
    refs: Box<[ObjectId]>,
    owner: u64,
}

impl Entry {
    fn into_stored(self) -> Stored {
        let charge = charge_of(
            self.key.as_slice().len() + self.value.as_slice().len(),
            self.refs.len(),
        );
        Stored {
            bytes: self.value.into_box(),
            refs: self.refs,
            owner: self.owner,
            charge,
        }
    }
}

/// A stored value as a dict holds it, read in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Value<'a> {
    pub bytes: &'a [u8],
    pub refs: &'a [ObjectId],
    /// The connection charged for it (0: nobody).
    pub owner: u64,
    /// What it was charged ([`charge_of`]).
    pub charge: u64,
}

/// A managed dict: encoded keys to stored values, in no particular order.
#[derive(Debug, Default)]
pub(crate) struct CompactDict {
    entries: Vec<Entry>,
    /// Positions in `entries`, by the hash of their key.
    index: HashTable<u32>,
    hasher: RandomState,
}

impl CompactDict {
    pub fn new() -> CompactDict {
        CompactDict::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn position(&self, key: &[u8]) -> Option<usize> {
        let entries = &self.entries;
        self.index
            .find(self.hash(key), |&i| {
                entries[i as usize].key.as_slice() == key
            })
            .map(|&i| i as usize)
    }

    fn view(&self, i: usize) -> (&[u8], Value<'_>) {
        let e = &self.entries[i];
        let key = e.key.as_slice();
        let value = e.value.as_slice();
        (
            key,
            Value {
                bytes: value,
                refs: &e.refs,
                owner: e.owner,
                charge: charge_of(key.len() + value.len(), e.refs.len()),
            },
        )
    }

    pub fn get(&self, key: &[u8]) -> Option<Value<'_>> {
        self.position(key).map(|i| self.view(i).1)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.position(key).is_some()
    }

    /// Stores `value` under `key`; returns the value it replaces.
    pub fn insert(&mut self, key: &[u8], value: Stored) -> Option<Stored> {
        let Stored {
            bytes, refs, owner, ..
        } = value;
        let entry = Entry {
            key: Bytes::new(key),
            value: Bytes::from_box(bytes),
            refs,
            owner,
        };
        if let Some(i) = self.position(key) {
            // The stored key stays: equal bytes.
            let old = &mut self.entries[i];
            let was = Entry {
                key: std::mem::replace(&mut old.key, entry.key),
                value: std::mem::replace(&mut old.value, entry.value),
                refs: std::mem::replace(&mut old.refs, entry.refs),
                owner: std::mem::replace(&mut old.owner, entry.owner),
            };
            return Some(was.into_stored());
        }
        // Past u32::MAX entries the quotas stopped the client long before.
        let i = u32::try_from(self.entries.len()).expect("a dict of over 4 G entries");
        let hash = self.hash(key);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.insert_unique(hash, i, |&j| {
            hasher.hash_one(entries[j as usize].key.as_slice())
        });
        self.entries.push(entry);
        None
    }

    /// Takes the value stored under `key` out.
    pub fn remove(&mut self, key: &[u8]) -> Option<Stored> {
        let hash = self.hash(key);
        let entries = &self.entries;
        let slot = self
            .index
            .find_entry(hash, |&i| entries[i as usize].key.as_slice() == key)
            .ok()?;
        let (i, _) = slot.remove();
        let i = i as usize;
        let last = self.entries.len() - 1;
        if i != last {
            // The last entry moves into the gap: its slot now says `i`.
            let moved_hash = self.hash(self.entries[last].key.as_slice());
            if let Some(slot) = self.index.find_mut(moved_hash, |&j| j as usize == last) {
                *slot = i as u32;
            }
        }
        Some(self.entries.swap_remove(i).into_stored())
    }

    /// Some entry (the last stored), if any.
    pub fn any(&self) -> Option<(&[u8], Value<'_>)> {
        self.entries.len().checked_sub(1).map(|i| self.view(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Value<'_>)> {
        (0..self.entries.len()).map(|i| self.view(i))
    }

    /// Takes every value out, leaving the dict empty.
    pub fn drain(&mut self) -> impl Iterator<Item = Stored> + use<> {
        self.index.clear();
        std::mem::take(&mut self.entries)
            .into_iter()
            .map(Entry::into_stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(bytes: &[u8], owner: u64) -> Stored {
        Stored {
            bytes: Box::from(bytes),
            refs: Box::from(&[][..]),
            owner,
            charge: 0,
        }
    }

    #[test]
    fn entries_round_trip_short_and_long() {
        let mut d = CompactDict::new();
        let long = vec![9u8; 100];
        assert!(d.insert(b"a", stored(b"1", 7)).is_none());
        assert!(d.insert(&long, stored(&long, 8)).is_none());
        assert_eq!(d.get(b"a").unwrap().bytes, b"1");
        assert_eq!(d.get(&long).unwrap().bytes, &long[..]);
        assert_eq!(d.get(&long).unwrap().charge, 200);
        let old = d.insert(b"a", stored(b"2", 9)).unwrap();
        assert_eq!((&*old.bytes, old.owner, old.charge), (&b"1"[..], 7, 2));
        assert_eq!(d.len(), 2);
        assert!(d.get(b"b").is_none());
    }

    #[test]
    fn removing_keeps_every_other_key_findable() {
        let mut d = CompactDict::new();
        for i in 0u32..1000 {
            d.insert(&i.to_le_bytes(), stored(&(i * 2).to_le_bytes(), 0));
        }
        for i in (0u32..1000).step_by(3) {
            let v = d.remove(&i.to_le_bytes()).unwrap();
            assert_eq!(*v.bytes, (i * 2).to_le_bytes());
        }
        assert!(d.remove(&0u32.to_le_bytes()).is_none());
        for i in 0u32..1000 {
            let got = d.get(&i.to_le_bytes()).map(|v| v.bytes.to_vec());
            let want = (i % 3 != 0).then(|| (i * 2).to_le_bytes().to_vec());
            assert_eq!(got, want, "{i}");
        }
        assert_eq!(d.iter().count(), d.len());
        let (k, _) = d.any().unwrap();
        let k = k.to_vec();
        d.remove(&k).unwrap();
        assert_eq!(d.drain().count(), 665);
        assert_eq!(d.len(), 0);
        assert!(d.get(&1u32.to_le_bytes()).is_none());
    }
}
