//! The object table: every object the server owns, its references, and the
//! in-flight references of proxies on their way between processes.
//!
//! An object's `refcount` counts every holder: connections (one per proxy
//! registration), stored values that contain a proxy to it (a dict of list
//! proxies), and pins (a proxy encoded into a message or a child's
//! arguments, not yet decoded). When it reaches zero the object is freed,
//! and the references its stored values held are dropped in turn.
//!
//! Quotas: each live connection may hold at most [`Limits::max_objects`]
//! objects it created, and [`Limits::max_bytes`] bytes of keys and values
//! it stored that are still stored (plus the segments the server holds for
//! it). An object or a value is charged to the connection that made or
//! stored it until it goes, whoever removes it; once that connection
//! ended, what it left behind is charged to no one. The server's own
//! requests (connection 0) are never limited.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fork_sync::Mutex;

use crate::manager::dict::CompactDict;
use crate::manager::protocol::{ArchivedBlob, ObjectId, ObjectKind, QuotaKind, RemoteError};
use crate::manager::server::Limits;
use crate::manager::user::UserSlot;
use crate::manager::waitable::Waitable;
use crate::sys;

/// How long an in-flight reference waits to be taken over before the server
/// drops it: a proxy encoded into a message that nobody decodes within this
/// time no longer keeps its object alive.
pub const PIN_TIMEOUT: Duration = Duration::from_secs(600);

/// What a stored value costs its owner's `max_bytes` quota: its bytes
/// (a dict entry's key's too) and the references it holds, which the
/// server keeps beside them (a request may carry any number of them).
pub(crate) fn charge_of(bytes: usize, refs: usize) -> u64 {
    let refs = refs.saturating_mul(std::mem::size_of::<ObjectId>());
    bytes.saturating_add(refs) as u64
}

/// Encoded bytes the server stores, with the objects they refer to.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    pub bytes: Box<[u8]>,
    pub refs: Box<[ObjectId]>,
    /// The connection that stored it (charged for it; 0: nobody).
    pub owner: u64,
    /// What it was charged ([`charge_of`]).
    pub charge: u64,
}

impl Stored {
    /// A value stored by connection `owner`.
    pub fn from_blob(blob: &ArchivedBlob<'_>, owner: u64) -> Stored {
        Stored {
            bytes: Box::from(&*blob.bytes),
            refs: blob.refs.iter().map(|r| r.to_native()).collect(),
            owner,
            charge: charge_of(blob.bytes.len(), blob.refs.len()),
        }
    }

    /// A dict entry's value: the value's bytes, holding the key's refs too
    /// (and charged for the key's bytes as well).
    pub fn entry(key: &ArchivedBlob<'_>, value: &ArchivedBlob<'_>, owner: u64) -> Stored {
        Stored {
            bytes: Box::from(&*value.bytes),
            refs: key
                .refs
                .iter()
                .chain(value.refs.iter())
                .map(|r| r.to_native())
                .collect(),
            owner,
            charge: charge_of(
                key.bytes.len() + value.bytes.len(),
                key.refs.len() + value.refs.len(),
            ),
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

/// The contents of a dict, list or namespace, behind the object's own lock.
#[derive(Debug)]
pub(crate) enum Container {
    Dict(CompactDict),
    List(Vec<Stored>),
    Namespace(HashMap<String, Attr>),
    /// The object was freed while a call still held it (a client calling
    /// an object it holds no reference to): calls find it gone.
    Freed,
}

impl Container {
    /// Takes every stored value out, leaving the container freed.
    fn drain_into(&mut self, out: &mut Vec<Stored>) {
        match std::mem::replace(self, Container::Freed) {
            Container::Dict(mut d) => out.extend(d.drain()),
            Container::List(v) => out.extend(v),
            Container::Namespace(m) => out.extend(m.into_values().map(|a| a.value)),
            Container::Freed => {}
        }
    }
}

/// What an object holds.
#[derive(Debug)]
pub(crate) enum Data {
    /// A dict, list or namespace. Its lock is taken without the table's
    /// (a call holds only its own object), or before the table's (to
    /// charge or count references at the end of a call), never after: the
    /// table hands freed containers to [`free_pending`] instead of
    /// emptying them under its own lock.
    Container(Arc<Mutex<Container>>),
    /// A shared segment the server created: its descriptor (never mapped
    /// here, so segments the server holds cost it no address space), kept
    /// while the creator opens it or a stored value holds a handle to it.
    /// Clients open it through `/proc/<server>/fd/<fd>`.
    Segment {
        /// The segment's id (as in its handles).
        id: u64,
        /// The server's descriptor.
        fd: OwnedFd,
    },
    /// A lock, semaphore, event, barrier or queue clients may wait on
    /// (shared with the connection threads waiting on it now).
    Waitable(Arc<Waitable>),
    /// A user object made by a registered factory.
    User(UserSlot),
}

impl Data {
    /// A new dict, list or namespace.
    pub fn container(c: Container) -> Data {
        Data::Container(Arc::new(Mutex::new(c)))
    }

    /// Every stored value, to drop their references and charges when the
    /// object goes; a container or a user object is left to [`free_pending`].
    fn into_stored(self, out: &mut Vec<Stored>, pending: &mut Pending) {
        match self {
            Data::Container(c) => pending.containers.push(c),
            Data::Segment { .. } => {}
            Data::Waitable(w) => w.free(out),
            Data::User(u) => pending.users.push(u),
        }
    }
}

/// Freed objects still to be emptied or dropped, outside the table's lock.
#[derive(Debug, Default)]
struct Pending {
    /// Containers whose values are still to be dropped.
    containers: Vec<Arc<Mutex<Container>>>,
    /// User objects still to be dropped: their `Drop` is the user's code,
    /// which may be slow or panic.
    users: Vec<UserSlot>,
}

/// Empties the containers freed since the last call (outside the table's
/// lock, see [`Data::Container`]) and drops what they stored, until no
/// freed object is left to empty. Called after every request and every
/// release, so a freed object's values go before its answer is sent.
///
/// A freed user object is dropped here too, and a panic in its `Drop` is
/// logged: the connection that let it go serves on, with its other objects.
pub(crate) fn free_pending(table: &Mutex<Table>) {
    loop {
        let Pending { containers, users } = std::mem::take(&mut table.lock().pending);
        if containers.is_empty() && users.is_empty() {
            return;
        }
        for user in users {
            if let Err(message) = crate::process::launch::caught(|| drop(user)) {
                tracing::error!("dropping a freed managed object panicked: {message}");
            }
        }
        let mut freed = Vec::new();
        for c in containers {
            c.lock().drain_into(&mut freed);
        }
        table.lock().drop_stored(freed);
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
    /// The connection that created it (0: the server itself).
    pub owner: u64,
    /// The bytes charged to `owner` while it lives (a held segment's size).
    pub charge: u64,
}

/// In-flight references, taken over by the decoder or dropped at `expires`.
#[derive(Debug)]
struct Pin {
    objects: Vec<ObjectId>,
    expires: Instant,
    /// The connection that took it.
    by: u64,
    /// The forked child that is to claim it (pid and start time), once its
    /// parent named it: the pin goes when that process ends unclaimed.
    claimant: Option<(i32, Option<u64>)>,
}

impl Pin {
    /// Whether it expired, or its named claimant ended (`ended` says
    /// whether a process did, so a sweep looks at each one once).
    fn ended(&self, now: Instant, ended: &mut impl FnMut((i32, Option<u64>)) -> bool) -> bool {
        self.expires <= now || self.claimant.is_some_and(ended)
    }
}

/// Whether process `pid` (started at `ticks`) has ended.
fn process_ended((pid, ticks): (i32, Option<u64>)) -> bool {
    sys::process::liveness(pid, ticks).is_dead()
}

/// The references one connection holds, by object.
pub(crate) type ConnRefs = HashMap<ObjectId, u64>;

/// What one connection holds now, against its quotas.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    objects: u64,
    bytes: u64,
}

/// All objects of a server (behind one mutex in the server,
/// held only to find, add, count or free objects: a dict, list or
/// namespace call runs under that object's own lock).
#[derive(Debug)]
pub(crate) struct Table {
    objects: HashMap<ObjectId, Object>,
    /// Freed objects still to be emptied or dropped (by [`free_pending`]).
    pending: Pending,
    next_id: ObjectId,
    pins: HashMap<u64, Pin>,
    next_pin: u64,
    /// The locks and conditions among the objects: what their clients hold
    /// or wait for is let go when the client's connection ends.
    locks: HashSet<ObjectId>,
    /// The quotas of every connection.
    limits: Limits,
    /// What each live connection holds, by connection id.
    usage: HashMap<u64, Usage>,
    /// The objects holding segments, by segment id.
    segments: HashMap<u64, ObjectId>,
}

impl Table {
    #[cfg(test)]
    pub fn new() -> Table {
        Table::with_limits(Limits::default())
    }

    /// An empty table whose connections have these quotas.
    pub fn with_limits(limits: Limits) -> Table {
        Table {
            objects: HashMap::new(),
            pending: Pending::default(),
            next_id: 1,
            pins: HashMap::new(),
            next_pin: 1,
            locks: HashSet::new(),
            limits,
            usage: HashMap::new(),
            segments: HashMap::new(),
        }
    }

    /// Whether freed objects wait for [`free_pending`].
    pub fn has_pending(&self) -> bool {
        !self.pending.containers.is_empty() || !self.pending.users.is_empty()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// The quotas.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether connection `owner` may create one more object charged `charge` bytes.
    pub fn check_object(&self, owner: u64, charge: u64) -> Result<(), RemoteError> {
        if owner == 0 {
            return Ok(());
        }
        let used = self.usage.get(&owner).copied().unwrap_or_default();
        if used.objects >= self.limits.max_objects {
            return Err(RemoteError::QuotaExceeded {
                what: QuotaKind::Objects,
                limit: self.limits.max_objects,
            });
        }
        self.check_bytes(owner, charge)
    }

    /// Whether connection `owner` may be charged `bytes` more.
    pub fn check_bytes(&self, owner: u64, bytes: u64) -> Result<(), RemoteError> {
        if owner == 0 || bytes == 0 {
            return Ok(());
        }
        let used = self.usage.get(&owner).map_or(0, |u| u.bytes);
        if used.saturating_add(bytes) > self.limits.max_bytes {
            return Err(RemoteError::QuotaExceeded {
                what: QuotaKind::Bytes,
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    /// Charges connection `owner` for `bytes` stored, within its quota.
    #[cfg(test)]
    pub fn charge(&mut self, owner: u64, bytes: u64) -> Result<(), RemoteError> {
        self.check_bytes(owner, bytes)?;
        self.add_charge(owner, bytes);
        Ok(())
    }

    /// Charges connection `owner` for `bytes` stored (checked before with
    /// [`Table::check_bytes`], less what the call frees of its own).
    pub fn add_charge(&mut self, owner: u64, bytes: u64) {
        if owner != 0 && bytes != 0 {
            self.usage.entry(owner).or_default().bytes += bytes;
        }
    }

    /// Gives back what a stored value or object charged (if its connection still lives).
    pub fn uncharge(&mut self, owner: u64, bytes: u64) {
        if let Some(u) = self.usage.get_mut(&owner) {
            u.bytes = u.bytes.saturating_sub(bytes);
        }
    }

    /// Adds an object whose first reference `conn` holds, created by
    /// connection `owner` (within its quotas) and charged `charge` bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        conn: &mut ConnRefs,
        owner: u64,
        kind: ObjectKind,
        fingerprint: u64,
        type_name: &str,
        data: Data,
        charge: u64,
    ) -> Result<ObjectId, RemoteError> {
        self.check_object(owner, charge)?;
        if owner != 0 {
            let u = self.usage.entry(owner).or_default();
            u.objects += 1;
            u.bytes += charge;
        }
        let id = self.next_id;
        self.next_id += 1;
        if matches!(
            kind,
            ObjectKind::Lock | ObjectKind::RLock | ObjectKind::Condition
        ) {
            self.locks.insert(id);
        }
        if let Data::Segment { id: segment, .. } = &data {
            self.segments.insert(*segment, id);
        }
        self.objects.insert(
            id,
            Object {
                kind,
                fingerprint,
                type_name: type_name.into(),
                refcount: 1,
                data,
                owner,
                charge,
            },
        );
        *conn.entry(id).or_default() += 1;
        Ok(id)
    }

    /// The object that holds the segment with this id, if there is one.
    pub fn segment_object(&self, segment: u64) -> Option<ObjectId> {
        self.segments.get(&segment).copied()
    }

    /// `conn` takes one more reference to `id` (no type check: for the
    /// server's own segment objects).
    pub fn add_ref(&mut self, conn: &mut ConnRefs, id: ObjectId) -> Result<(), RemoteError> {
        let o = self.get_mut(id)?;
        o.refcount += 1;
        *conn.entry(id).or_default() += 1;
        Ok(())
    }

    /// Stored values taken out of objects (overwritten, removed, cleared):
    /// their charges go and the references they held are dropped.
    pub fn drop_stored(&mut self, gone: Vec<Stored>) {
        let mut refs = Vec::new();
        for s in gone {
            self.uncharge(s.owner, s.charge);
            refs.extend(s.refs);
        }
        if !refs.is_empty() {
            self.decref_all(refs);
        }
    }

    /// Stored values handed to `conn` in a response (popped, removed): their
    /// charges go and the references they held move to `conn`.
    pub fn hand_over(&mut self, conn: &mut ConnRefs, taken: Vec<Stored>) {
        for s in taken {
            self.uncharge(s.owner, s.charge);
            self.transfer_to(conn, &s.refs);
        }
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
            if let Some(u) = self.usage.get_mut(&o.owner) {
                u.objects = u.objects.saturating_sub(1);
                u.bytes = u.bytes.saturating_sub(o.charge);
            }
            if let Data::Segment { id: segment, .. } = &o.data
                && self.segments.get(segment) == Some(&id)
            {
                self.segments.remove(segment);
            }
            let mut freed = Vec::new();
            o.data.into_stored(&mut freed, &mut self.pending);
            for s in freed {
                self.uncharge(s.owner, s.charge);
                work.extend(s.refs);
            }
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
    /// locks it held (connection `id`); what it created or stored is no
    /// longer charged to anyone.
    pub fn release_connection(&mut self, conn: ConnRefs, id: u64) {
        self.usage.remove(&id);
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

    /// Takes an in-flight reference to each of `ids` for connection `by`;
    /// returns its token.
    pub fn pin(&mut self, ids: &[ObjectId], by: u64) -> Result<u64, RemoteError> {
        self.incref_all(ids)?;
        let token = self.next_pin;
        self.next_pin += 1;
        self.pins.insert(
            token,
            Pin {
                objects: ids.to_vec(),
                expires: Instant::now() + PIN_TIMEOUT,
                by,
                claimant: None,
            },
        );
        Ok(token)
    }

    /// Names the local process `pid` (a child forked by connection `by`'s
    /// process) as the one that is to claim pin `token`: the pin then goes
    /// as soon as that process ends unclaimed, not at its timeout. A pin
    /// already claimed (or gone) is left as it is; one another connection
    /// took is not this one's to name.
    pub fn name_claimant(&mut self, token: u64, by: u64, pid: i32) -> Result<(), RemoteError> {
        let Some(pin) = self.pins.get_mut(&token) else {
            return Ok(());
        };
        if pin.by != by {
            return Err(RemoteError::InvalidState(
                "the pin was taken by another connection".into(),
            ));
        }
        pin.claimant = Some((pid, sys::process::start_ticks(pid)));
        if pin.ended(Instant::now(), &mut process_ended) {
            let pin = self.pins.remove(&token).expect("the pin was just found");
            self.decref_all(pin.objects);
        }
        Ok(())
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

    /// Drops the in-flight references nobody took over in time, and those
    /// whose named claimant ended without taking them over.
    pub fn sweep_pins(&mut self, now: Instant) {
        // Each claimant is looked at once, however many pins name it.
        let mut seen: HashMap<(i32, Option<u64>), bool> = HashMap::new();
        let mut ended = |claimant| {
            *seen
                .entry(claimant)
                .or_insert_with(|| process_ended(claimant))
        };
        let expired: Vec<u64> = self
            .pins
            .iter()
            .filter(|(_, p)| p.ended(now, &mut ended))
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
            owner: 0,
            charge: 0,
        }
    }

    fn list(t: &mut Table, conn: &mut ConnRefs) -> ObjectId {
        t.insert(
            conn,
            0,
            ObjectKind::List,
            1,
            "list",
            Data::container(Container::List(Vec::new())),
            0,
        )
        .unwrap()
    }

    #[test]
    fn the_last_release_frees_and_cascades_through_stored_refs() {
        let mut t = Table::new();
        let mut conn = ConnRefs::new();
        let inner = list(&mut t, &mut conn);
        let outer = list(&mut t, &mut conn);
        // `outer` stores a value holding a proxy to `inner`.
        t.incref_all(&[inner]).unwrap();
        if let Data::Container(c) = &t.get_mut(outer).unwrap().data
            && let Container::List(l) = &mut *c.lock()
        {
            l.push(stored(&[inner]));
        }
        t.release(&mut conn, inner, 1);
        assert_eq!(t.len(), 2, "the stored value keeps inner alive");
        t.release(&mut conn, outer, 1);
        assert_eq!(t.len(), 1, "outer is freed, its values not yet dropped");
        let t = Mutex::new(t);
        free_pending(&t);
        assert_eq!(
            t.lock().len(),
            0,
            "freeing outer dropped its value's reference"
        );
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
        let pin = t.pin(&[a], 1).unwrap();
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
        t.pin(&[b], 1).unwrap();
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
        let token = t.pin(&[a, b], 1).unwrap();
        let mut child = ConnRefs::new();
        assert_eq!(t.claim(&mut child, token).unwrap(), vec![a, b]);
        assert_eq!(t.claim(&mut child, token), Err(RemoteError::KeyNotFound));
        t.release_connection(parent, 1);
        assert_eq!(t.len(), 2, "the child holds both now");
        t.release_connection(child, 2);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_pin_goes_with_the_claimant_its_connection_named() {
        let mut t = Table::new();
        let mut parent = ConnRefs::new();
        let a = list(&mut t, &mut parent);
        /// Ended and reaped however the test ends.
        struct Reaped(std::process::Child);
        impl Drop for Reaped {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let child = Reaped(
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .unwrap(),
        );
        let pid = child.0.id() as i32;
        let token = t.pin(&[a], 1).unwrap();
        assert!(
            matches!(
                t.name_claimant(token, 2, pid),
                Err(RemoteError::InvalidState(_))
            ),
            "only the connection that pinned names the claimant"
        );
        t.name_claimant(token, 1, pid).unwrap();
        t.release_connection(parent, 1);
        t.sweep_pins(Instant::now());
        assert_eq!(t.len(), 1, "the claimant lives");
        drop(child);
        t.sweep_pins(Instant::now());
        assert_eq!(t.len(), 0, "the claimant ended unclaimed");
        // Named once it has ended already: the pin goes at once; a pin
        // already claimed is left as it is.
        let mut parent = ConnRefs::new();
        let b = list(&mut t, &mut parent);
        let token = t.pin(&[b], 1).unwrap();
        t.name_claimant(token, 1, pid).unwrap();
        t.release_connection(parent, 1);
        assert_eq!(t.len(), 0);
        let mut parent = ConnRefs::new();
        let c = list(&mut t, &mut parent);
        let token = t.pin(&[c], 1).unwrap();
        let mut heir = ConnRefs::new();
        t.claim(&mut heir, token).unwrap();
        t.name_claimant(token, 1, pid).unwrap();
        t.release_connection(parent, 1);
        assert_eq!(t.len(), 1, "the claim holds it");
        t.release_connection(heir, 3);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn quotas_bound_each_connection_and_free_with_what_they_charged() {
        let mut t = Table::with_limits(Limits {
            max_objects: 2,
            max_bytes: 100,
            ..Limits::default()
        });
        let (mut a, mut b) = (ConnRefs::new(), ConnRefs::new());
        let new = |t: &mut Table, conn: &mut ConnRefs, owner| {
            t.insert(
                conn,
                owner,
                ObjectKind::List,
                1,
                "list",
                Data::container(Container::List(Vec::new())),
                0,
            )
        };
        let l1 = new(&mut t, &mut a, 7).unwrap();
        new(&mut t, &mut a, 7).unwrap();
        assert_eq!(
            new(&mut t, &mut a, 7),
            Err(RemoteError::QuotaExceeded {
                what: QuotaKind::Objects,
                limit: 2
            })
        );
        // Another connection has its own quota; the server itself has none.
        new(&mut t, &mut b, 8).unwrap();
        for _ in 0..5 {
            new(&mut t, &mut b, 0).unwrap();
        }
        t.charge(7, 60).unwrap();
        assert_eq!(
            t.charge(7, 41),
            Err(RemoteError::QuotaExceeded {
                what: QuotaKind::Bytes,
                limit: 100
            })
        );
        t.drop_stored(vec![Stored {
            owner: 7,
            charge: 60,
            ..Stored::default()
        }]);
        t.charge(7, 100).unwrap();
        // Freeing an object gives its slot back.
        t.release(&mut a, l1, 1);
        new(&mut t, &mut a, 7).unwrap();
        // A connection's usage ends with it.
        t.release_connection(ConnRefs::new(), 7);
        t.charge(7, 100).unwrap();
    }
}
