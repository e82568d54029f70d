//! The object table: every object the server owns, its references, and the
//! in-flight references of proxies on their way between processes.
//!
//! An object's `refcount` counts every holder: connections (one per proxy
//! registration), stored values that contain a proxy to it (a dict of list
//! proxies), and pins (a proxy encoded into a message or a child's
//! arguments, not yet decoded). When it reaches zero the object is freed,
//! and the references its stored values held are dropped in turn.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::manager::protocol::{ArchivedBlob, ObjectId, ObjectKind, RemoteError};
use crate::manager::waitable::Waitable;
use crate::shm::Segment;

/// How long an in-flight reference waits to be taken over before the server
/// drops it: a proxy encoded into a message that nobody decodes within this
/// time no longer keeps its object alive.
pub const PIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Encoded bytes the server stores, with the objects they refer to.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    pub bytes: Box<[u8]>,
    pub refs: Box<[ObjectId]>,
}

impl Stored {
    pub fn from_blob(blob: &ArchivedBlob<'_>) -> Stored {
        Stored {
            bytes: Box::from(&*blob.bytes),
            refs: blob.refs.iter().map(|r| r.to_native()).collect(),
        }
    }

    /// A dict entry's value: the value's bytes, holding the key's refs too.
    pub fn entry(key: &ArchivedBlob<'_>, value: &ArchivedBlob<'_>) -> Stored {
        Stored {
            bytes: Box::from(&*value.bytes),
            refs: key
                .refs
                .iter()
                .chain(value.refs.iter())
                .map(|r| r.to_native())
                .collect(),
        }
    }
}

/// A namespace attribute: a value and the type it was set with.
#[derive(Debug)]
pub(crate) struct Attr {
    pub fingerprint: u64,
    pub type_name: Box<str>,
    pub value: Stored,
}

/// What an object holds.
#[derive(Debug)]
pub(crate) enum Data {
    Dict(HashMap<Box<[u8]>, Stored>),
    List(Vec<Stored>),
    Namespace(HashMap<String, Attr>),
    /// Kept until the creator opened it; the memory lives on in its mappings.
    Segment(#[allow(dead_code)] Segment),
    /// A lock, semaphore, event, barrier or queue clients may wait on
    /// (shared with the connection threads waiting on it now).
    Waitable(Arc<Waitable>),
}

impl Data {
    /// Every stored value, to drop their references when the object goes.
    fn into_refs(self, out: &mut Vec<ObjectId>) {
        match self {
            Data::Dict(m) => m.into_values().for_each(|s| out.extend(s.refs)),
            Data::List(v) => v.into_iter().for_each(|s| out.extend(s.refs)),
            Data::Namespace(m) => m.into_values().for_each(|a| out.extend(a.value.refs)),
            Data::Segment(_) => {}
            Data::Waitable(w) => w.free(out),
        }
    }
}

/// One managed object.
#[derive(Debug)]
pub(crate) struct Object {
    pub kind: ObjectKind,
    pub fingerprint: u64,
    pub type_name: Box<str>,
    pub refcount: u64,
    pub data: Data,
}

/// In-flight references, taken over by the decoder or dropped at `expires`.
#[derive(Debug)]
struct Pin {
    objects: Vec<ObjectId>,
    expires: Instant,
}

/// The references one connection holds, by object.
pub(crate) type ConnRefs = HashMap<ObjectId, u64>;

/// All objects of a server (behind one `parking_lot` mutex in the server).
#[derive(Debug)]
pub(crate) struct Table {
    objects: HashMap<ObjectId, Object>,
    next_id: ObjectId,
    pins: HashMap<u64, Pin>,
    next_pin: u64,
    /// The locks among the objects (released when their holder's connection ends).
    locks: HashSet<ObjectId>,
}

impl Table {
    pub fn new() -> Table {
        Table {
            objects: HashMap::new(),
            next_id: 1,
            pins: HashMap::new(),
            next_pin: 1,
            locks: HashSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Adds an object whose first reference `conn` holds.
    pub fn insert(
        &mut self,
        conn: &mut ConnRefs,
        kind: ObjectKind,
        fingerprint: u64,
        type_name: &str,
        data: Data,
    ) -> ObjectId {
        let id = self.next_id;
        self.next_id += 1;
        if kind == ObjectKind::Lock {
            self.locks.insert(id);
        }
        self.objects.insert(
            id,
            Object {
                kind,
                fingerprint,
                type_name: type_name.into(),
                refcount: 1,
                data,
            },
        );
        *conn.entry(id).or_default() += 1;
        id
    }

    pub fn get_mut(&mut self, id: ObjectId) -> Result<&mut Object, RemoteError> {
        self.objects
            .get_mut(&id)
            .ok_or(RemoteError::UnknownObject(id))
    }

    /// Takes one more reference to each of `ids` (for a value being stored);
    /// all or nothing.
    pub fn incref_all(&mut self, ids: &[ObjectId]) -> Result<(), RemoteError> {
        if let Some(missing) = ids.iter().find(|id| !self.objects.contains_key(id)) {
            return Err(RemoteError::UnknownObject(*missing));
        }
        for id in ids {
            if let Some(o) = self.objects.get_mut(id) {
                o.refcount += 1;
            }
        }
        Ok(())
    }

    /// `conn` takes a reference to each of `ids` (objects a response's values
    /// refer to; they exist, since a stored value holds them).
    pub fn incref_for(&mut self, conn: &mut ConnRefs, ids: &[ObjectId]) {
        for id in ids {
            if let Some(o) = self.objects.get_mut(id) {
                o.refcount += 1;
                *conn.entry(*id).or_default() += 1;
            }
        }
    }

    /// Moves references held by a stored value (now removed) to `conn`.
    pub fn transfer_to(&mut self, conn: &mut ConnRefs, ids: &[ObjectId]) {
        for id in ids {
            if self.objects.contains_key(id) {
                *conn.entry(*id).or_default() += 1;
            }
        }
    }

    /// Drops one reference to each of `ids`, freeing what reaches zero.
    pub fn decref_all(&mut self, ids: impl IntoIterator<Item = ObjectId>) {
        let mut work: Vec<ObjectId> = ids.into_iter().collect();
        while let Some(id) = work.pop() {
            self.decref_one(id, 1, &mut work);
        }
    }

    fn decref_one(&mut self, id: ObjectId, count: u64, work: &mut Vec<ObjectId>) {
        let Some(o) = self.objects.get_mut(&id) else {
            return;
        };
        o.refcount = o.refcount.saturating_sub(count);
        if o.refcount == 0
            && let Some(o) = self.objects.remove(&id)
        {
            tracing::trace!(id, "managed object freed");
            self.locks.remove(&id);
            o.data.into_refs(work);
        }
    }

    /// `conn` takes a reference to `id`, checking the proxy's type; with a
    /// `pin`, it takes over that in-flight reference instead of a new one.
    pub fn attach(
        &mut self,
        conn: &mut ConnRefs,
        id: ObjectId,
        fingerprint: u64,
        type_name: &str,
        pin: u64,
    ) -> Result<(), RemoteError> {
        let o = self
            .objects
            .get_mut(&id)
            .ok_or(RemoteError::UnknownObject(id))?;
        if o.fingerprint != fingerprint {
            return Err(RemoteError::TypeMismatch {
                expected: type_name.to_string(),
                found: o.type_name.to_string(),
            });
        }
        let pinned = pin != 0
            && self
                .pins
                .get(&pin)
                .is_some_and(|p| p.objects.as_slice() == [id]);
        if pinned {
            self.pins.remove(&pin);
        } else {
            o.refcount += 1;
        }
        *conn.entry(id).or_default() += 1;
        Ok(())
    }

    /// Drops up to `count` of the references `conn` holds to `id`.
    pub fn release(&mut self, conn: &mut ConnRefs, id: ObjectId, count: u64) {
        let Some(held) = conn.get_mut(&id) else {
            return;
        };
        let n = count.min(*held);
        *held -= n;
        if *held == 0 {
            conn.remove(&id);
        }
        let mut work = Vec::new();
        self.decref_one(id, n, &mut work);
        self.decref_all(work);
    }

    /// Drops every reference a finished connection held, and releases the
    /// locks it held (connection `id`).
    pub fn release_connection(&mut self, conn: ConnRefs, id: u64) {
        for lock in &self.locks {
            if let Some(Object {
                data: Data::Waitable(w),
                ..
            }) = self.objects.get(lock)
            {
                w.connection_ended(id);
            }
        }
        let mut work = Vec::new();
        for (id, n) in conn {
            self.decref_one(id, n, &mut work);
        }
        self.decref_all(work);
    }

    /// Takes an in-flight reference to each of `ids`; returns its token.
    pub fn pin(&mut self, ids: &[ObjectId]) -> Result<u64, RemoteError> {
        self.incref_all(ids)?;
        let token = self.next_pin;
        self.next_pin += 1;
        self.pins.insert(
            token,
            Pin {
                objects: ids.to_vec(),
                expires: Instant::now() + PIN_TIMEOUT,
            },
        );
        Ok(token)
    }

    /// `conn` takes over the references of pin `token`; returns the objects.
    pub fn claim(&mut self, conn: &mut ConnRefs, token: u64) -> Result<Vec<ObjectId>, RemoteError> {
        let pin = self.pins.remove(&token).ok_or(RemoteError::KeyNotFound)?;
        for id in &pin.objects {
            if self.objects.contains_key(id) {
                *conn.entry(*id).or_default() += 1;
            }
        }
        Ok(pin.objects)
    }

    /// Drops the in-flight references nobody took over in time.
    pub fn sweep_pins(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pins
            .iter()
            .filter(|(_, p)| p.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some(pin) = self.pins.remove(&token) {
                tracing::debug!(token, "an in-flight proxy reference expired");
                self.decref_all(pin.objects);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(refs: &[ObjectId]) -> Stored {
        Stored {
            bytes: Box::from(&b"v"[..]),
            refs: refs.into(),
        }
    }

    fn list(t: &mut Table, conn: &mut ConnRefs) -> ObjectId {
        t.insert(conn, ObjectKind::List, 1, "list", Data::List(Vec::new()))
    }

    #[test]
    fn the_last_release_frees_and_cascades_through_stored_refs() {
        let mut t = Table::new();
        let mut conn = ConnRefs::new();
        let inner = list(&mut t, &mut conn);
        let outer = list(&mut t, &mut conn);
        // `outer` stores a value holding a proxy to `inner`.
        t.incref_all(&[inner]).unwrap();
        if let Data::List(l) = &mut t.get_mut(outer).unwrap().data {
            l.push(stored(&[inner]));
        }
        t.release(&mut conn, inner, 1);
        assert_eq!(t.len(), 2, "the stored value keeps inner alive");
        t.release(&mut conn, outer, 1);
        assert_eq!(t.len(), 0, "freeing outer dropped its value's reference");
        assert!(conn.is_empty());
    }

    #[test]
    fn storing_a_ref_to_a_missing_object_changes_nothing() {
        let mut t = Table::new();
        let mut conn = ConnRefs::new();
        let a = list(&mut t, &mut conn);
        assert_eq!(
            t.incref_all(&[a, 999]),
            Err(RemoteError::UnknownObject(999))
        );
        assert_eq!(t.get_mut(a).unwrap().refcount, 1);
    }

    #[test]
    fn a_connection_releases_only_what_it_holds() {
        let mut t = Table::new();
        let mut mine = ConnRefs::new();
        let mut other = ConnRefs::new();
        let a = list(&mut t, &mut mine);
        t.attach(&mut other, a, 1, "list", 0).unwrap();
        t.release(&mut other, a, 100);
        assert_eq!(t.get_mut(a).unwrap().refcount, 1);
        t.release_connection(mine, 1);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn attach_checks_the_type() {
        let mut t = Table::new();
        let mut conn = ConnRefs::new();
        let a = list(&mut t, &mut conn);
        assert_eq!(
            t.attach(&mut conn, a, 2, "dict", 0),
            Err(RemoteError::TypeMismatch {
                expected: "dict".into(),
                found: "list".into()
            })
        );
    }

    #[test]
    fn pins_are_taken_over_once_or_expire() {
        let mut t = Table::new();
        let mut sender = ConnRefs::new();
        let a = list(&mut t, &mut sender);
        let pin = t.pin(&[a]).unwrap();
        t.release_connection(sender, 1);
        assert_eq!(t.len(), 1, "the pin keeps the object while in flight");
        let mut receiver = ConnRefs::new();
        t.attach(&mut receiver, a, 1, "list", pin).unwrap();
        assert_eq!(t.get_mut(a).unwrap().refcount, 1, "the pin was taken over");
        // A second decode of the same bytes finds the pin gone: a plain reference.
        t.attach(&mut receiver, a, 1, "list", pin).unwrap();
        assert_eq!(t.get_mut(a).unwrap().refcount, 2);
        t.release_connection(receiver, 2);
        assert_eq!(t.len(), 0);

        let mut conn = ConnRefs::new();
        let b = list(&mut t, &mut conn);
        t.pin(&[b]).unwrap();
        t.release_connection(conn, 3);
        t.sweep_pins(Instant::now());
        assert_eq!(t.len(), 1, "not expired yet");
        t.sweep_pins(Instant::now() + PIN_TIMEOUT);
        assert_eq!(t.len(), 0, "an expired pin lets the object go");
    }

    #[test]
    fn many_pins_are_claimed_together() {
        let mut t = Table::new();
        let mut parent = ConnRefs::new();
        let a = list(&mut t, &mut parent);
        let b = list(&mut t, &mut parent);
        let token = t.pin(&[a, b]).unwrap();
        let mut child = ConnRefs::new();
        assert_eq!(t.claim(&mut child, token).unwrap(), vec![a, b]);
        assert_eq!(t.claim(&mut child, token), Err(RemoteError::KeyNotFound));
        t.release_connection(parent, 1);
        assert_eq!(t.len(), 2, "the child holds both now");
        t.release_connection(child, 2);
        assert_eq!(t.len(), 0);
    }
}
