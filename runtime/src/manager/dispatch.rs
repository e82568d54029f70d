//! Runs one request against the object table and encodes the response.
//!
//! Everything here works on the archived (checked, zero-copy) request and on
//! encoded bytes: user data is never decoded. Any request that is malformed,
//! names an unknown object or method, or lacks an argument gets an error
//! response.
//!
//! Every response fits the connection's limit: a method whose answer would
//! not is an error (`TooLarge`), and one that takes a value out (`pop`,
//! `remove`, a queue's `get`) checks the answer before it takes the value,
//! so nothing is lost. Storing methods are charged to the connection's
//! quota first (see the table), and change nothing when refused.

use std::collections::HashMap;
use std::sync::Arc;

use crate::fork_sync::Mutex;

use crate::deadline::Deadline;
use crate::handle::HandleRepr;
use crate::manager::dict::{CompactDict, Value};
use crate::manager::protocol::{
    ArchivedBlob, ArchivedCall, ArchivedObjectKind, ArchivedRequest, Method, ObjectId, ObjectKind,
    QuotaKind, RemoteError, Response, access_request,
};
use crate::manager::response_buf::ResponseBuf;
use crate::manager::table::{Attr, ConnRefs, Container, Data, Stored, Table, free_pending};
use crate::manager::waitable::{Peer, Take, Waitable, deadline_of};

/// What the connection should do after answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// Go on serving.
    Continue,
    /// The client asked the server to shut down.
    Shutdown,
}

fn emit_err(out: &mut ResponseBuf, e: RemoteError) {
    out.emit(&Response::Error(e));
}

/// `TooLarge` if the response in `out` is longer than `limit`.
fn fits(out: &ResponseBuf, limit: usize) -> Result<(), RemoteError> {
    if out.len() > limit {
        return Err(RemoteError::TooLarge {
            size: out.len() as u64,
            limit: limit as u64,
        });
    }
    Ok(())
}

/// Replaces a response longer than `limit` by the error saying so.
pub(crate) fn too_large(out: &mut ResponseBuf, limit: usize) {
    if let Err(e) = fits(out, limit) {
        emit_err(out, e);
    }
}

fn kind_of(k: &ArchivedObjectKind) -> ObjectKind {
    match k {
        ArchivedObjectKind::Dict => ObjectKind::Dict,
        ArchivedObjectKind::List => ObjectKind::List,
        ArchivedObjectKind::Namespace => ObjectKind::Namespace,
        ArchivedObjectKind::Segment => ObjectKind::Segment,
        ArchivedObjectKind::Lock => ObjectKind::Lock,
        ArchivedObjectKind::Semaphore => ObjectKind::Semaphore,
        ArchivedObjectKind::BoundedSemaphore => ObjectKind::BoundedSemaphore,
        ArchivedObjectKind::Event => ObjectKind::Event,
        ArchivedObjectKind::Barrier => ObjectKind::Barrier,
        ArchivedObjectKind::Queue => ObjectKind::Queue,
        ArchivedObjectKind::User => ObjectKind::User,
        ArchivedObjectKind::RLock => ObjectKind::RLock,
        ArchivedObjectKind::Condition => ObjectKind::Condition,
    }
}

fn kind_name(k: ObjectKind) -> &'static str {
    match k {
        ObjectKind::Dict => "dict",
        ObjectKind::List => "list",
        ObjectKind::Namespace => "namespace",
        ObjectKind::Segment => "shared segment",
        ObjectKind::Lock => "lock",
        ObjectKind::Semaphore => "semaphore",
        ObjectKind::BoundedSemaphore => "bounded semaphore",
        ObjectKind::Event => "event",
        ObjectKind::Barrier => "barrier",
        ObjectKind::Queue => "queue",
        ObjectKind::User => "user object",
        ObjectKind::RLock => "recursive lock",
        ObjectKind::Condition => "condition",
    }
}

/// Handles one encoded request, writing the encoded response into `out`
/// (at most `limit` bytes: the largest message the peer accepts).
pub(crate) fn handle(
    table: &Mutex<Table>,
    conn: &mut ConnRefs,
    peer: &Peer<'_>,
    request: &[u8],
    out: &mut ResponseBuf,
    limit: usize,
) -> After {
    let mut settled = false;
    let after = serve(table, conn, peer, request, out, limit, &mut settled);
    if !settled {
        // Objects this request freed: their values go before it is answered.
        free_pending(table);
    }
    after
}

/// [`handle`]; sets `settled` when nothing is left for [`free_pending`]
/// (a method call that succeeded frees what it dropped itself).
fn serve(
    table: &Mutex<Table>,
    conn: &mut ConnRefs,
    peer: &Peer<'_>,
    request: &[u8],
    out: &mut ResponseBuf,
    limit: usize,
    settled: &mut bool,
) -> After {
    let req = match access_request(request) {
        Ok(r) => r,
        Err(e) => {
            emit_err(
                out,
                RemoteError::Malformed(format!("unreadable request: {e}")),
            );
            return After::Continue;
        }
    };
    match req {
        ArchivedRequest::Create {
            kind,
            fingerprint,
            type_name,
            arg,
        } => {
            let kind = kind_of(kind);
            let data = match kind {
                ObjectKind::Dict => Data::container(Container::Dict(CompactDict::new())),
                ObjectKind::List => Data::container(Container::List(Vec::new())),
                ObjectKind::Namespace => Data::container(Container::Namespace(HashMap::new())),
                ObjectKind::Segment => {
                    emit_err(
                        out,
                        RemoteError::Malformed("segments are made with CreateShm".into()),
                    );
                    return After::Continue;
                }
                // Made by `UserObjects::try_create` when the server has factories.
                ObjectKind::User => {
                    emit_err(out, RemoteError::NotFound);
                    return After::Continue;
                }
                ObjectKind::Condition => match condition_over(table, peer, arg.to_native()) {
                    Ok(w) => Data::Waitable(Arc::new(w)),
                    Err(e) => {
                        emit_err(out, e);
                        return After::Continue;
                    }
                },
                _ => match Waitable::new(kind, arg.to_native()) {
                    Ok(w) => Data::Waitable(Arc::new(w)),
                    Err(e) => {
                        emit_err(out, e);
                        return After::Continue;
                    }
                },
            };
            let condition_lock = match &data {
                Data::Waitable(w) if kind == ObjectKind::Condition => w.cond_lock().ok(),
                _ => None,
            };
            let id = table.lock().insert(
                conn,
                peer.id,
                kind,
                fingerprint.to_native(),
                type_name,
                data,
                0,
            );
            match id {
                Ok(id) => out.emit(&Response::Created(id)),
                Err(e) => {
                    // A condition that was not stored drops its hold on its lock.
                    if let Some((lock, _)) = condition_lock {
                        table.lock().decref_all([lock]);
                    }
                    emit_err(out, e)
                }
            }
        }
        ArchivedRequest::CreateShm(spec) => {
            let spec = match rkyv::deserialize::<crate::shm::ShmSpec, rkyv::rancor::Error>(spec) {
                Ok(s) => s,
                Err(e) => return malformed(out, e),
            };
            match create_shm(table, conn, peer, &spec) {
                Ok((object, handle)) => out.emit(&Response::Handle { object, handle }),
                Err(e) => emit_err(out, e),
            }
        }
        ArchivedRequest::AdoptShm { handle } => {
            let repr = match rkyv::deserialize::<HandleRepr, rkyv::rancor::Error>(handle) {
                Ok(r) => r,
                Err(e) => return malformed(out, e),
            };
            match adopt_shm(table, conn, peer, &repr) {
                Ok((object, handle)) => out.emit(&Response::Handle { object, handle }),
                Err(e) => emit_err(out, e),
            }
        }
        ArchivedRequest::Attach {
            object,
            fingerprint,
            type_name,
            pin,
        } => {
            let r = table.lock().attach(
                conn,
                object.to_native(),
                fingerprint.to_native(),
                type_name,
                pin.to_native(),
            );
            match r {
                Ok(()) => out.emit(&Response::Unit),
                Err(e) => emit_err(out, e),
            }
        }
        ArchivedRequest::Release { object, count } => {
            table
                .lock()
                .release(conn, object.to_native(), count.to_native());
            out.emit(&Response::Unit);
        }
        ArchivedRequest::Pin { object } => match table.lock().pin(&[object.to_native()], peer.id) {
            Ok(token) => out.emit(&Response::Token(token)),
            Err(e) => emit_err(out, e),
        },
        ArchivedRequest::PinMany { objects } => {
            let ids: Vec<ObjectId> = objects.iter().map(|o| o.to_native()).collect();
            let mut t = table.lock();
            // Pin only what still exists: the caller may have raced a release.
            let ids: Vec<ObjectId> = ids
                .into_iter()
                .filter(|id| t.get_mut(*id).is_ok())
                .collect();
            match t.pin(&ids, peer.id) {
                Ok(token) => out.emit(&Response::Token(token)),
                Err(e) => emit_err(out, e),
            }
        }
        ArchivedRequest::ClaimMany { token } => match table.lock().claim(conn, token.to_native()) {
            Ok(ids) => out.emit(&Response::Objects(ids)),
            Err(e) => emit_err(out, e),
        },
        // A TCP client's processes may live on another host: its pins
        // keep their timeout.
        ArchivedRequest::NameClaimant { token, pid } => {
            let named = match peer.pid {
                Some(_) => table
                    .lock()
                    .name_claimant(token.to_native(), peer.id, pid.to_native()),
                None => Err(RemoteError::InvalidState(
                    "only a local client names a claimant".into(),
                )),
            };
            match named {
                Ok(()) => out.emit(&Response::Unit),
                Err(e) => emit_err(out, e),
            }
        }
        ArchivedRequest::Call(call) => {
            let waitable =
                Method::from_u32(call.method.to_native()).filter(|m| m.is_waitable_kind());
            let done = match waitable {
                Some(method) => waitable_call(table, conn, peer, call, method, out, limit),
                None => call_method(table, conn, peer.id, call, out, limit),
            };
            match done {
                Ok(()) => *settled = true,
                Err(e) => emit_err(out, e),
            }
        }
        ArchivedRequest::NumberOfObjects => {
            let n = table.lock().len();
            out.emit(&Response::Len(n as u64));
        }
        ArchivedRequest::Shutdown => {
            out.emit(&Response::Unit);
            return After::Shutdown;
        }
    }
    After::Continue
}

/// A new condition for `peer` over the lock object `lock` of the table
/// (0: over a new recursive lock of its own, charged to `peer` too), which
/// the condition holds a reference to.
fn condition_over(
    table: &Mutex<Table>,
    peer: &Peer<'_>,
    lock: ObjectId,
) -> Result<Waitable, RemoteError> {
    let mut t = table.lock();
    let (lock, w) = if lock == 0 {
        let w = Arc::new(Waitable::new(ObjectKind::RLock, 0)?);
        // The condition holds the only reference: no connection does.
        let mut nobody = ConnRefs::new();
        let tag = crate::manager::core::TypeTag::new(crate::manager::protocol::RLOCK_TAG.into());
        let id = t.insert(
            &mut nobody,
            peer.id,
            ObjectKind::RLock,
            tag.fingerprint,
            &tag.name,
            Data::Waitable(w.clone()),
            0,
        )?;
        (id, w)
    } else {
        let o = t.get_mut(lock)?;
        let w = match (&o.kind, &o.data) {
            (ObjectKind::Lock | ObjectKind::RLock, Data::Waitable(w)) => w.clone(),
            _ => {
                return Err(RemoteError::Malformed(format!(
                    "a condition needs a lock or recursive lock, not a {}",
                    kind_name(o.kind)
                )));
            }
        };
        t.incref_all(&[lock])?;
        (lock, w)
    };
    match Waitable::condition(w, lock) {
        Ok(c) => Ok(c),
        Err(e) => {
            t.decref_all([lock]);
            Err(e)
        }
    }
}

/// Creates a segment from `spec` for connection `peer`, within its limits;
/// the server keeps only its descriptor, until the creator released it.
fn create_shm(
    table: &Mutex<Table>,
    conn: &mut ConnRefs,
    peer: &Peer<'_>,
    spec: &crate::shm::ShmSpec,
) -> Result<(ObjectId, HandleRepr), RemoteError> {
    let size = spec
        .total_len()
        .map_err(|e| RemoteError::Failed(e.to_string()))?;
    {
        let t = table.lock();
        let max = t.limits().max_segment;
        if size > max {
            return Err(RemoteError::QuotaExceeded {
                what: QuotaKind::SegmentBytes,
                limit: max,
            });
        }
        t.check_object(peer.id, size)?;
    }
    // Made without the table's lock: mapping a segment to write its header
    // takes a while, and nothing of the table is needed for it.
    let (fd, handle) = spec
        .create_held()
        .map_err(|e| RemoteError::Failed(format!("cannot create the segment: {e}")))?;
    let object = table.lock().insert(
        conn,
        peer.id,
        ObjectKind::Segment,
        spec.fingerprint,
        "shared segment",
        Data::Segment { id: handle.id, fd },
        size,
    )?;
    Ok((object, handle))
}

/// Keeps a segment this server created alive for a value connection `peer`
/// is about to store (see `Request::AdoptShm`).
fn adopt_shm(
    table: &Mutex<Table>,
    conn: &mut ConnRefs,
    peer: &Peer<'_>,
    theirs: &HandleRepr,
) -> Result<(ObjectId, HandleRepr), RemoteError> {
    // Only a local client's own descriptors: the server opens them through
    // /proc, which means nothing for a client on another host.
    if peer.pid != Some(theirs.pid) {
        return Err(RemoteError::Failed(
            "only a local client's own segment handles can be kept by the server".into(),
        ));
    }
    if let Some(object) = adopt_existing(&mut table.lock(), conn, theirs.id)? {
        return Ok(object);
    }
    let failed = |e: &dyn std::fmt::Display| {
        RemoteError::Failed(format!("cannot keep segment {:016x}: {e}", theirs.id))
    };
    let fd =
        crate::sys::memfd::open_foreign_segment(theirs.pid, theirs.fd).map_err(|e| failed(&e))?;
    use std::os::fd::AsFd;
    if !crate::shm::created_here(fd.as_fd()).map_err(|e| failed(&e))? {
        return Err(failed(&"it is not a segment this manager created"));
    }
    // Kept under `theirs.id` for every client: the descriptor must still be
    // that segment's (a closed one's number is reused).
    if crate::sys::memfd::segment_id_of(fd.as_fd()) != Some(theirs.id) {
        return Err(failed(&"the descriptor named is another segment's"));
    }
    let size = crate::sys::memfd::file_len(fd.as_fd()).map_err(|e| failed(&e))?;
    let ours = crate::handle::encode_fd(theirs.id, fd.as_fd(), 0, 0).map_err(|e| failed(&e))?;
    let mut t = table.lock();
    // Another request may have kept it meanwhile: one object per segment.
    if let Some(object) = adopt_existing(&mut t, conn, theirs.id)? {
        return Ok(object);
    }
    let object = t.insert(
        conn,
        peer.id,
        ObjectKind::Segment,
        0,
        "shared segment",
        Data::Segment { id: theirs.id, fd },
        size,
    )?;
    Ok((object, ours))
}

/// A new reference on `conn` to the object already holding segment `id`.
fn adopt_existing(
    t: &mut Table,
    conn: &mut ConnRefs,
    segment: u64,
) -> Result<Option<(ObjectId, HandleRepr)>, RemoteError> {
    let Some(object) = t.segment_object(segment) else {
        return Ok(None);
    };
    let handle = match &t.get_mut(object)?.data {
        Data::Segment { id, fd } => {
            use std::os::fd::AsFd;
            crate::handle::encode_fd(*id, fd.as_fd(), 0, 0)
                .map_err(|e| RemoteError::Failed(e.to_string()))?
        }
        _ => return Err(wrong_shape()),
    };
    t.add_ref(conn, object)?;
    Ok(Some((object, handle)))
}

fn malformed(out: &mut ResponseBuf, e: impl std::fmt::Display) -> After {
    emit_err(out, RemoteError::Malformed(e.to_string()));
    After::Continue
}

fn need<'a, T>(arg: Option<&'a T>, what: &str) -> Result<&'a T, RemoteError> {
    arg.ok_or_else(|| RemoteError::Malformed(format!("missing argument: {what}")))
}

/// Resolves a Python-style index (negative counts from the end).
fn resolve(index: i64, len: usize, allow_end: bool) -> Result<usize, RemoteError> {
    let out_of_range = RemoteError::IndexOutOfRange {
        index,
        len: len as u64,
    };
    let i = if index < 0 {
        (len as i64)
            .checked_add(index)
            .ok_or(out_of_range.clone())?
    } else {
        index
    };
    let limit = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if i < 0 || (i as u64) > limit as u64 || (!allow_end && len == 0) {
        return Err(out_of_range);
    }
    Ok(i as usize)
}

/// Stores values charged `charge` bytes to connection `owner` and holding
/// references to `refs`, running `op`: refused (changing nothing) past the
/// connection's quota, and undone if `op` fails. `credit` is what the
/// values `op` replaces charged `owner` (given back once the call ends).
fn storing<R>(
    table: &Mutex<Table>,
    owner: u64,
    (charge, credit): (u64, u64),
    refs: &[ObjectId],
    op: impl FnOnce() -> Result<R, RemoteError>,
) -> Result<R, RemoteError> {
    {
        let mut t = table.lock();
        t.check_bytes(owner, charge.saturating_sub(credit))?;
        if !refs.is_empty() {
            t.incref_all(refs)?;
        }
    }
    // Only this connection's thread charges `owner`: the check still holds.
    let r = op();
    let mut t = table.lock();
    match &r {
        Ok(_) => t.add_charge(owner, charge),
        Err(_) if !refs.is_empty() => t.decref_all(refs.iter().copied()),
        Err(_) => {}
    }
    r
}

/// What `old`, about to be replaced, charged `owner` (0 if someone else).
fn credit(old: Option<&Stored>, owner: u64) -> u64 {
    old.filter(|s| s.owner == owner).map_or(0, |s| s.charge)
}

/// What a dict's `old` value, about to be replaced, charged `owner`.
fn credit_value(old: Option<Value<'_>>, owner: u64) -> u64 {
    old.filter(|v| v.owner == owner).map_or(0, |v| v.charge)
}

/// What the values stored by a call hold: bytes charged and references.
fn load(items: &[Stored]) -> (u64, Vec<ObjectId>) {
    let charge = items.iter().map(|s| s.charge).sum();
    let refs = items.iter().flat_map(|s| s.refs.iter().copied()).collect();
    (charge, refs)
}

/// One call on a dict, list or namespace, run under that object's own lock.
struct Cx<'a, 'r> {
    table: &'a Mutex<Table>,
    owner: u64,
    call: &'a ArchivedCall<'r>,
    method: Method,
    out: &'a mut ResponseBuf,
    limit: usize,
    /// References to hand to the connection after the response is encoded
    /// (and checked to fit).
    give: Vec<ObjectId>,
    /// Values taken out and handed to the connection.
    taken: Vec<Stored>,
    /// Values dropped (overwritten or cleared).
    gone: Vec<Stored>,
}

/// A call on a dict, list or namespace. The table's lock covers only the
/// lookup; the call runs under the object's own lock, taking the table's
/// again (after it) only to charge a value or count references. Calls on
/// different objects so proceed side by side.
fn call_method(
    table: &Mutex<Table>,
    conn: &mut ConnRefs,
    owner: u64,
    call: &ArchivedCall<'_>,
    out: &mut ResponseBuf,
    limit: usize,
) -> Result<(), RemoteError> {
    let id = call.object.to_native();
    let number = call.method.to_native();
    let (method, container) = {
        let mut t = table.lock();
        let o = t.get_mut(id)?;
        let unknown = || RemoteError::UnknownMethod {
            method: number,
            object: kind_name(o.kind).into(),
        };
        // The object and the method's kind first, then the arguments.
        let method = Method::from_u32(number).ok_or_else(unknown)?;
        if method.object_kind() != o.kind {
            return Err(unknown());
        }
        match &o.data {
            Data::Container(c) => (method, c.clone()),
            // Waitable kinds are handled by `waitable_call`.
            _ => return Err(wrong_shape()),
        }
    };
    let mut c = container.lock();
    let mut cx = Cx {
        table,
        owner,
        call,
        method,
        out,
        limit,
        give: Vec::new(),
        taken: Vec::new(),
        gone: Vec::new(),
    };
    match &mut *c {
        Container::Dict(d) => dict_call(&mut cx, d)?,
        Container::List(l) => list_call(&mut cx, l)?,
        Container::Namespace(ns) => namespace_call(&mut cx, ns)?,
        // Freed while this call looked it up.
        Container::Freed => return Err(RemoteError::UnknownObject(id)),
    }
    // Methods that change something answer briefly or checked above; a
    // read whose answer is too large is refused here, before the
    // connection takes the references it would have carried.
    fits(cx.out, limit)?;
    let Cx {
        give, taken, gone, ..
    } = cx;
    if !(give.is_empty() && taken.is_empty() && gone.is_empty()) {
        // Still under the object's lock: the values read cannot go (and
        // free what they refer to) before the connection holds them.
        let mut t = table.lock();
        t.incref_for(conn, &give);
        t.hand_over(conn, taken);
        t.drop_stored(gone);
        let freed_some = t.has_pending();
        drop(t);
        // The freed may include this very object (a value held its last
        // reference): emptied once its lock is let go.
        drop(c);
        if freed_some {
            free_pending(table);
        }
    }
    Ok(())
}

/// A dict's methods.
fn dict_call(cx: &mut Cx<'_, '_>, d: &mut CompactDict) -> Result<(), RemoteError> {
    let (table, owner, call, limit) = (cx.table, cx.owner, cx.call, cx.limit);
    let (out, give, taken, gone) = (&mut *cx.out, &mut cx.give, &mut cx.taken, &mut cx.gone);
    let key = || need(call.key.as_ref(), "key");
    let value = || need(call.value.as_ref(), "value");
    use Method::*;
    match cx.method {
        DictGet => {
            let k = key()?;
            match d.get(&k.bytes) {
                Some(v) => {
                    give.extend_from_slice(v.refs);
                    emit_value(out, v);
                }
                None => out.emit(&no_value()),
            }
        }
        DictInsert => {
            let (k, v) = (key()?, value()?);
            let entry = Stored::entry(k, v, owner);
            let freed = credit_value(d.get(&k.bytes), owner);
            let (charge, refs) = (entry.charge, entry.refs.clone());
            storing(table, owner, (charge, freed), &refs, || {
                gone.extend(d.insert(&k.bytes, entry));
                Ok(())
            })?;
            out.emit(&Response::Unit);
        }
        DictRemove => {
            let k = key()?;
            match d.get(&k.bytes) {
                Some(v) => {
                    // Answered before it is taken: too large to send, it stays.
                    emit_value(out, v);
                    fits(out, limit)?;
                    taken.extend(d.remove(&k.bytes));
                }
                None => out.emit(&no_value()),
            }
        }
        DictContains => {
            let k = key()?;
            out.emit(&Response::Bool(d.contains_key(&k.bytes)));
        }
        DictLen => out.emit(&Response::Len(d.len() as u64)),
        method @ (DictKeys | DictValues | DictItems) => {
            let mut items: Vec<&[u8]> = Vec::with_capacity(d.len() * 2);
            for (k, v) in d.iter() {
                if method != DictValues {
                    items.push(k);
                }
                if method != DictKeys {
                    items.push(v.bytes);
                }
                give.extend_from_slice(v.refs);
            }
            out.emit(&Response::Many {
                items,
                refs: give.clone(),
            });
        }
        DictUpdate => {
            if !call.batch.len().is_multiple_of(2) {
                return Err(RemoteError::Malformed(
                    "update needs key/value pairs".into(),
                ));
            }
            let pairs: Vec<(&ArchivedBlob<'_>, Stored)> = call
                .batch
                .chunks(2)
                .map(|kv| (&kv[0], Stored::entry(&kv[0], &kv[1], owner)))
                .collect();
            let charge = pairs.iter().map(|(_, s)| s.charge).sum();
            let freed = {
                let keys: std::collections::HashSet<&[u8]> =
                    pairs.iter().map(|(k, _)| &*k.bytes).collect();
                keys.into_iter()
                    .map(|k| credit_value(d.get(k), owner))
                    .sum()
            };
            let refs: Vec<ObjectId> = pairs
                .iter()
                .flat_map(|(_, s)| s.refs.iter().copied())
                .collect();
            storing(table, owner, (charge, freed), &refs, || {
                for (k, s) in pairs {
                    gone.extend(d.insert(&k.bytes, s));
                }
                Ok(())
            })?;
            out.emit(&Response::Unit);
        }
        DictClear => {
            gone.extend(d.drain());
            out.emit(&Response::Unit);
        }
        DictSetDefault => {
            let (k, v) = (key()?, value()?);
            if let Some(v) = d.get(&k.bytes) {
                give.extend_from_slice(v.refs);
                emit_value(out, v);
            } else {
                let entry = Stored::entry(k, v, owner);
                // The answer is the value stored: checked before storing it.
                emit_stored(out, &entry);
                fits(out, limit)?;
                let (charge, refs) = (entry.charge, entry.refs.clone());
                storing(table, owner, (charge, 0), &refs, || {
                    d.insert(&k.bytes, entry);
                    Ok(())
                })?;
                give.extend_from_slice(&refs);
            }
        }
        DictCompareAndSwap => {
            let (k, v) = (key()?, value()?);
            let expected = call.expected.as_ref().map(|e| &*e.bytes);
            let entry = Stored::entry(k, v, owner);
            let matches = d.get(&k.bytes).map(|v| v.bytes) == expected;
            if matches {
                let freed = credit_value(d.get(&k.bytes), owner);
                let (charge, refs) = (entry.charge, entry.refs.clone());
                storing(table, owner, (charge, freed), &refs, || {
                    gone.extend(d.insert(&k.bytes, entry));
                    Ok(())
                })?;
                out.emit(&Response::Swapped {
                    done: true,
                    current: None,
                    refs: Vec::new(),
                });
            } else {
                let current = d.get(&k.bytes);
                if let Some(v) = current {
                    give.extend_from_slice(v.refs);
                }
                out.emit(&Response::Swapped {
                    done: false,
                    current: current.map(|v| v.bytes),
                    refs: give.clone(),
                });
            }
        }
        DictPopItem => dict_pop_item(d, out, limit, taken)?,
        _ => return Err(wrong_shape()),
    }
    Ok(())
}

/// A list's methods.
fn list_call(cx: &mut Cx<'_, '_>, l: &mut Vec<Stored>) -> Result<(), RemoteError> {
    let (table, owner, call, limit) = (cx.table, cx.owner, cx.call, cx.limit);
    let (out, give, taken, gone) = (&mut *cx.out, &mut cx.give, &mut cx.taken, &mut cx.gone);
    let value = || need(call.value.as_ref(), "value");
    use Method::*;
    match cx.method {
        method @ (ListPush | ListExtend) => {
            let items: Vec<Stored> = if method == ListPush {
                vec![Stored::from_blob(value()?, owner)]
            } else {
                call.batch
                    .iter()
                    .map(|b| Stored::from_blob(b, owner))
                    .collect()
            };
            let (charge, refs) = load(&items);
            storing(table, owner, (charge, 0), &refs, || {
                l.extend(items);
                Ok(())
            })?;
            out.emit(&Response::Unit);
        }
        ListGet => {
            let s = &l[resolve(call.index.to_native(), l.len(), false)?];
            give.extend_from_slice(&s.refs);
            emit_stored(out, s);
        }
        method @ (ListSet | ListInsert) => {
            let item = Stored::from_blob(value()?, owner);
            let freed = match method {
                ListSet => {
                    let i = resolve(call.index.to_native(), l.len(), false).ok();
                    credit(i.and_then(|i| l.get(i)), owner)
                }
                _ => 0,
            };
            let (charge, refs) = (item.charge, item.refs.clone());
            storing(table, owner, (charge, freed), &refs, || {
                let i = resolve(call.index.to_native(), l.len(), method == ListInsert)?;
                if method == ListInsert {
                    l.insert(i, item);
                } else {
                    gone.push(std::mem::replace(&mut l[i], item));
                }
                Ok(())
            })?;
            out.emit(&Response::Unit);
        }
        ListPop => {
            let index = call.index.to_native();
            if l.is_empty() && index == -1 {
                out.emit(&no_value());
            } else {
                let i = resolve(index, l.len(), false)?;
                // Answered before it is taken: too large to send, it stays.
                emit_stored(out, &l[i]);
                fits(out, limit)?;
                taken.push(l.remove(i));
            }
        }
        method @ (ListRemove | ListIndex) => {
            let v = value()?;
            let found = l.iter().position(|s| *s.bytes == *v.bytes);
            match (method, found) {
                (ListRemove, Some(i)) => {
                    gone.push(l.remove(i));
                    out.emit(&Response::Bool(true));
                }
                (ListRemove, None) => out.emit(&Response::Bool(false)),
                (_, Some(i)) => out.emit(&Response::Len(i as u64)),
                (_, None) => return Err(RemoteError::NotFound),
            }
        }
        ListLen => out.emit(&Response::Len(l.len() as u64)),
        ListReverse => {
            l.reverse();
            out.emit(&Response::Unit);
        }
        ListClear => {
            gone.append(l);
            out.emit(&Response::Unit);
        }
        ListSnapshot => {
            let items: Vec<&[u8]> = l.iter().map(|s| &*s.bytes).collect();
            l.iter().for_each(|s| give.extend_from_slice(&s.refs));
            out.emit(&Response::Many {
                items,
                refs: give.clone(),
            });
        }
        ListCount => list_count(l, value()?, out),
        ListGetRange => list_get_range(l, call, out, give)?,
        ListSetRange => list_set_range(table, l, owner, call, out, gone)?,
        ListApplyOrder => list_apply_order(l, call, out)?,
        _ => return Err(wrong_shape()),
    }
    Ok(())
}

/// A namespace's methods.
fn namespace_call(cx: &mut Cx<'_, '_>, ns: &mut HashMap<String, Attr>) -> Result<(), RemoteError> {
    let (table, owner, call) = (cx.table, cx.owner, cx.call);
    let (out, give, gone) = (&mut *cx.out, &mut cx.give, &mut cx.gone);
    use Method::*;
    let method = cx.method;
    match method {
        NsGet | NsSet | NsDelete | NsContains => {
            let key = need(call.key.as_ref(), "key")?;
            let name = std::str::from_utf8(&key.bytes)
                .map_err(|_| RemoteError::Malformed("attribute names are UTF-8".into()))?;
            match method {
                NsSet => {
                    let v = need(call.value.as_ref(), "value")?;
                    let mut value = Stored::from_blob(v, owner);
                    value.charge += name.len() as u64;
                    let (charge, refs) = (value.charge, value.refs.clone());
                    let freed = credit(ns.get(name).map(|a| &a.value), owner);
                    let attr = Attr {
                        fingerprint: call.fingerprint.to_native(),
                        type_name: Box::from(&*call.type_name),
                        value,
                    };
                    storing(table, owner, (charge, freed), &refs, || {
                        gone.extend(ns.insert(name.to_string(), attr).map(|old| old.value));
                        Ok(())
                    })?;
                    out.emit(&Response::Unit);
                }
                NsGet => {
                    let attr = ns.get(name).ok_or(RemoteError::KeyNotFound)?;
                    if attr.fingerprint != call.fingerprint.to_native() {
                        return Err(RemoteError::TypeMismatch {
                            expected: call.type_name.to_string(),
                            found: attr.type_name.to_string(),
                        });
                    }
                    give.extend_from_slice(&attr.value.refs);
                    out.emit(&Response::Value {
                        bytes: Some(&attr.value.bytes),
                        refs: attr.value.refs.to_vec(),
                    });
                }
                NsDelete => {
                    let old = ns.remove(name).ok_or(RemoteError::KeyNotFound)?;
                    gone.push(old.value);
                    out.emit(&Response::Unit);
                }
                _ => out.emit(&Response::Bool(ns.contains_key(name))),
            }
        }
        NsDescribe => ns_describe(ns, out),
        NsNames => {
            let items: Vec<&[u8]> = ns.keys().map(|k| k.as_bytes()).collect();
            out.emit(&Response::Many {
                items,
                refs: Vec::new(),
            });
        }
        _ => return Err(wrong_shape()),
    }
    Ok(())
}

/// Whether an object of kind `object` has the methods of kind `methods`.
fn kind_accepts(object: ObjectKind, methods: ObjectKind) -> bool {
    object == methods
        || (object == ObjectKind::BoundedSemaphore && methods == ObjectKind::Semaphore)
}

/// The calling thread a call names (a [`u64_arg`](crate::manager::protocol::u64_arg) in `key`).
fn thread_of(call: &ArchivedCall<'_>) -> Result<u64, RemoteError> {
    need(call.key.as_ref(), "thread").and_then(|k| {
        crate::manager::protocol::read_u64_arg(&k.bytes)
            .ok_or_else(|| RemoteError::Malformed("a thread is 8 bytes".into()))
    })
}

/// A call on a lock, semaphore, event, barrier or queue. The table's lock
/// covers only the lookup (and a queued value's charge and references):
/// the object's own locks do the rest, so one client's call, waiting or
/// not, holds up no one else.
fn waitable_call(
    table: &Mutex<Table>,
    conn: &mut ConnRefs,
    peer: &Peer<'_>,
    call: &ArchivedCall<'_>,
    method: Method,
    out: &mut ResponseBuf,
    limit: usize,
) -> Result<(), RemoteError> {
    let id = call.object.to_native();
    let w = {
        let mut t = table.lock();
        let o = t.get_mut(id)?;
        if !kind_accepts(o.kind, method.object_kind()) {
            return Err(RemoteError::UnknownMethod {
                method: method as u32,
                object: kind_name(o.kind).into(),
            });
        }
        match &o.data {
            Data::Waitable(w) => w.clone(),
            _ => return Err(wrong_shape()),
        }
    };
    // The server's own requests (before it serves) never wait.
    let deadline = match peer.id {
        0 => Deadline::Now,
        _ => deadline_of(call.wait_us.to_native()),
    };
    use Method::*;
    if method.waits() {
        let answer = match method {
            LockWaitFree | RLockWaitFree => Response::Bool(w.lock_wait_free(deadline, peer)?),
            CondWait => {
                let ticket = u64::try_from(call.index.to_native())
                    .map_err(|_| RemoteError::Malformed("a ticket is not negative".into()))?;
                Response::Bool(w.cond_wait(ticket, deadline, peer)?)
            }
            SemWaitAvailable => Response::Bool(w.sem_wait_available(deadline, peer)?),
            EventWait => Response::Bool(w.event_wait(deadline, peer)?),
            BarrierWait => match w.barrier_wait(deadline, call.index.to_native() != 0, peer)? {
                Some(index) => Response::Len(index),
                None => return Err(RemoteError::WouldBlock),
            },
            QueueWaitNotEmpty => Response::Bool(w.queue_wait(false, deadline, peer)?),
            QueueWaitNotFull => Response::Bool(w.queue_wait(true, deadline, peer)?),
            QueueJoin => Response::Bool(w.queue_join(deadline, peer)?),
            _ => return Err(wrong_shape()),
        };
        out.emit(&answer);
        return Ok(());
    }
    let answer = match method {
        LockTryAcquire => taken(w.lock_take(peer, call.index.to_native(), 0, None)?),
        RLockTryAcquire => {
            let restore = match call.value.as_ref() {
                None => None,
                Some(v) => Some(
                    crate::manager::protocol::read_u64_arg(&v.bytes)
                        .ok_or_else(|| RemoteError::Malformed("a count is 8 bytes".into()))?,
                ),
            };
            taken(w.lock_take(peer, call.index.to_native(), thread_of(call)?, restore)?)
        }
        LockRelease => w.lock_release(peer, 0).map(|()| Response::Unit)?,
        RLockRelease => w
            .lock_release(peer, thread_of(call)?)
            .map(|()| Response::Unit)?,
        LockIsLocked | RLockIsLocked => Response::Bool(w.lock_is_locked()?),
        RLockCount => Response::Len(w.lock_count(peer.id, thread_of(call)?)?),
        CondLock => {
            let (object, recursive) = w.cond_lock()?;
            Response::LockOf { object, recursive }
        }
        CondPrepareWait => {
            let (ticket, saved) = w.cond_prepare_wait(peer, thread_of(call)?)?;
            Response::Waiting { ticket, saved }
        }
        CondNotify => {
            let n = u64::try_from(call.index.to_native()).unwrap_or(0);
            w.cond_notify(peer, thread_of(call)?, n)
                .map(|()| Response::Unit)?
        }
        SemTryAcquire => Response::Bool(w.sem_try_acquire()?),
        SemRelease => w.sem_release().map(|()| Response::Unit)?,
        SemValue => Response::Len(w.sem_value()?),
        EventSet | EventClear => w.event_set(method == EventSet).map(|()| Response::Unit)?,
        EventIsSet => Response::Bool(w.event_is_set()?),
        BarrierAbort => w.barrier_abort().map(|()| Response::Unit)?,
        BarrierReset => w.barrier_reset().map(|()| Response::Unit)?,
        BarrierParties => Response::Len(w.barrier_status()?.0),
        BarrierWaiting => Response::Len(w.barrier_status()?.1),
        BarrierBroken => Response::Bool(w.barrier_status()?.2),
        QueuePut => {
            let item = Stored::from_blob(need(call.value.as_ref(), "value")?, peer.id);
            let (charge, refs) = (item.charge, item.refs.clone());
            storing(table, peer.id, (charge, 0), &refs, || {
                match w.queue_put(item)? {
                    Ok(()) => Ok(()),
                    Err(_) => Err(RemoteError::Full),
                }
            })?;
            Response::Unit
        }
        QueueGet => {
            // Answered before it is taken: too large to send, it stays queued.
            let taken = w.queue_get(|front| {
                emit_stored(out, front);
                fits(out, limit)
            })?;
            let Some(item) = taken else {
                return Err(RemoteError::Empty);
            };
            // The references the queued value held now belong to the getter.
            table.lock().hand_over(conn, vec![item]);
            return Ok(());
        }
        QueueLen => Response::Len(w.queue_status()?.0),
        QueueMaxsize => Response::Len(w.queue_status()?.1),
        QueueUnfinished => Response::Len(w.queue_status()?.2),
        QueueTaskDone => w.queue_task_done().map(|()| Response::Unit)?,
        _ => return Err(wrong_shape()),
    };
    out.emit(&answer);
    Ok(())
}

/// The answer to a lock's try-acquire.
fn taken(take: Take) -> Response<'static> {
    match take {
        Take::Busy => Response::Acquired {
            taken: false,
            lost_holder: None,
        },
        Take::Taken => Response::Acquired {
            taken: true,
            lost_holder: None,
        },
        Take::TakenFromLost(pid) => Response::Acquired {
            taken: true,
            lost_holder: Some(pid),
        },
    }
}

/// Answers with a stored value and the objects it refers to.
fn emit_stored(out: &mut ResponseBuf, s: &Stored) {
    out.emit(&Response::Value {
        bytes: Some(&s.bytes),
        refs: s.refs.to_vec(),
    });
}

/// Answers with a value a dict holds and the objects it refers to.
fn emit_value(out: &mut ResponseBuf, v: Value<'_>) {
    out.emit(&Response::Value {
        bytes: Some(v.bytes),
        refs: v.refs.to_vec(),
    });
}

fn no_value() -> Response<'static> {
    Response::Value {
        bytes: None,
        refs: Vec::new(),
    }
}

/// The object's data was checked against the method's kind first
/// (`data_of`); a mismatch here would be a server bug, reported as such.
fn wrong_shape() -> RemoteError {
    RemoteError::Failed("object data does not match its kind".into())
}

/// `DictPopItem`: takes out some entry (a dict has no order here), answered
/// with its key and value before it is taken, so a too-large one stays.
fn dict_pop_item(
    d: &mut CompactDict,
    out: &mut ResponseBuf,
    limit: usize,
    taken: &mut Vec<Stored>,
) -> Result<(), RemoteError> {
    let Some((k, v)) = d.any() else {
        return Err(RemoteError::KeyNotFound);
    };
    out.emit(&Response::Many {
        items: vec![k, v.bytes],
        refs: v.refs.to_vec(),
    });
    fits(out, limit)?;
    let k = k.to_vec();
    taken.extend(d.remove(&k));
    Ok(())
}

/// `ListCount`: how many elements have `value`'s bytes.
fn list_count(l: &[Stored], value: &ArchivedBlob<'_>, out: &mut ResponseBuf) {
    let n = l.iter().filter(|s| *s.bytes == *value.bytes).count();
    out.emit(&Response::Len(n as u64));
}

/// The range `index..end` a range call names, checked against `len`:
/// `IndexOutOfRange` naming the first bad bound.
fn range_of(call: &ArchivedCall<'_>, len: usize) -> Result<std::ops::Range<usize>, RemoteError> {
    let end = need(call.key.as_ref(), "range end")?;
    let end = crate::manager::protocol::read_u64_arg(&end.bytes)
        .ok_or_else(|| RemoteError::Malformed("a range end is 8 bytes".into()))?;
    // u64::MAX: to the end of the list, whatever its length.
    let end = if end == u64::MAX { len as u64 } else { end };
    let start = call.index.to_native();
    let bad = |index: i64| RemoteError::IndexOutOfRange {
        index,
        len: len as u64,
    };
    if end > len as u64 {
        return Err(bad(i64::try_from(end).unwrap_or(i64::MAX)));
    }
    if start < 0 || start as u64 > end {
        return Err(bad(start));
    }
    Ok(start as usize..end as usize)
}

/// `ListGetRange`: the elements of a range, in order.
fn list_get_range(
    l: &[Stored],
    call: &ArchivedCall<'_>,
    out: &mut ResponseBuf,
    give: &mut Vec<ObjectId>,
) -> Result<(), RemoteError> {
    let part = &l[range_of(call, l.len())?];
    part.iter().for_each(|s| give.extend_from_slice(&s.refs));
    out.emit(&Response::Many {
        items: part.iter().map(|s| &*s.bytes).collect(),
        refs: give.clone(),
    });
    Ok(())
}

/// `ListSetRange`: replaces a range by the call's batch (of any length, as
/// Python's `l[a:b] = values`); a bad range changes nothing.
fn list_set_range(
    table: &Mutex<Table>,
    l: &mut Vec<Stored>,
    owner: u64,
    call: &ArchivedCall<'_>,
    out: &mut ResponseBuf,
    gone: &mut Vec<Stored>,
) -> Result<(), RemoteError> {
    let items: Vec<Stored> = call
        .batch
        .iter()
        .map(|b| Stored::from_blob(b, owner))
        .collect();
    let (charge, refs) = load(&items);
    let freed = {
        let range = range_of(call, l.len())?;
        l[range].iter().map(|s| credit(Some(s), owner)).sum()
    };
    storing(table, owner, (charge, freed), &refs, || {
        let range = range_of(call, l.len())?;
        gone.extend(l.splice(range, items));
        Ok(())
    })?;
    out.emit(&Response::Unit);
    Ok(())
}

/// `ListApplyOrder`: reorders the list as the caller computed from a
/// snapshot, if the list is still that snapshot (`Bool(false)` otherwise:
/// the caller sorts again). The order must be a permutation of the list's
/// positions.
fn list_apply_order(
    l: &mut Vec<Stored>,
    call: &ArchivedCall<'_>,
    out: &mut ResponseBuf,
) -> Result<(), RemoteError> {
    let expected = need(call.expected.as_ref(), "digest")?;
    let digest = crate::manager::protocol::list_digest(l.iter().map(|s| &*s.bytes));
    if *expected.bytes != digest {
        out.emit(&Response::Bool(false));
        return Ok(());
    }
    let bad = || RemoteError::Malformed("an order must be a permutation of the list".into());
    if call.batch.len() != l.len() {
        return Err(bad());
    }
    let mut seen = vec![false; l.len()];
    let mut order = Vec::with_capacity(l.len());
    for b in call.batch.iter() {
        let i = crate::manager::protocol::read_u64_arg(&b.bytes).ok_or_else(bad)?;
        let i = usize::try_from(i).map_err(|_| bad())?;
        if i >= l.len() || std::mem::replace(&mut seen[i], true) {
            return Err(bad());
        }
        order.push(i);
    }
    let mut old: Vec<Option<Stored>> = std::mem::take(l).into_iter().map(Some).collect();
    // Every position is in `order` exactly once (checked above).
    l.extend(order.into_iter().filter_map(|i| old[i].take()));
    out.emit(&Response::Bool(true));
    Ok(())
}

/// `NsDescribe`: each attribute's name and the type it was set as.
fn ns_describe(ns: &HashMap<String, Attr>, out: &mut ResponseBuf) {
    let items: Vec<&[u8]> = ns
        .iter()
        .flat_map(|(name, a)| [name.as_bytes(), a.type_name.as_bytes()])
        .collect();
    out.emit(&Response::Many {
        items,
        refs: Vec::new(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::protocol::{
        ArchivedResponse, Blob, Call, Request, WAIT_FOREVER, access_response, encode_request,
    };
    use crate::manager::waitable::Peer;
    use rkyv::util::AlignedVec;

    fn run(table: &Mutex<Table>, conn: &mut ConnRefs, req: &Request<'_>) -> AlignedVec {
        let peer = Peer {
            id: 1,
            gone: &|| false,
            pid: None,
        };
        let request = encode_request(req, AlignedVec::new()).unwrap();
        let mut out = ResponseBuf::new();
        handle(table, conn, &peer, &request, &mut out, usize::MAX);
        out.into_bytes()
    }

    fn create(table: &Mutex<Table>, conn: &mut ConnRefs, kind: ObjectKind) -> ObjectId {
        let req = Request::Create {
            kind,
            fingerprint: 1,
            type_name: "t",
            arg: 0,
        };
        match access_response(&run(table, conn, &req)).unwrap() {
            ArchivedResponse::Created(id) => id.to_native(),
            _ => panic!("the create failed"),
        }
    }

    fn call<'a>(
        object: ObjectId,
        method: Method,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
    ) -> Request<'a> {
        Request::Call(Call {
            object,
            method: method as u32,
            index: 0,
            key: key.map(Blob::plain),
            value: value.map(Blob::plain),
            expected: None,
            batch: Vec::new(),
            fingerprint: 1,
            type_name: "t",
            wait_us: WAIT_FOREVER,
        })
    }

    /// The object's own lock, as a slow call on it would hold it.
    fn container(table: &Mutex<Table>, id: ObjectId) -> Arc<Mutex<Container>> {
        match &table.lock().get_mut(id).unwrap().data {
            Data::Container(c) => c.clone(),
            _ => panic!("not a container"),
        }
    }

    #[test]
    fn a_call_held_up_on_one_object_holds_up_no_other() {
        let table = Mutex::new(Table::new());
        let mut conn = ConnRefs::new();
        let busy = create(&table, &mut conn, ObjectKind::Dict);
        let free = create(&table, &mut conn, ObjectKind::Dict);
        let held = container(&table, busy);
        let held = held.lock();
        // Under the busy dict's lock, another connection still stores,
        // reads, creates and frees objects.
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let mut other = ConnRefs::new();
                let t = &table;
                run(
                    t,
                    &mut other,
                    &call(free, Method::DictInsert, Some(b"k"), Some(b"v")),
                );
                let got = run(
                    t,
                    &mut other,
                    &call(free, Method::DictGet, Some(b"k"), None),
                );
                let got = match access_response(&got).unwrap() {
                    ArchivedResponse::Value { bytes, .. } => bytes.as_ref().map(|b| b.to_vec()),
                    _ => panic!("the get failed"),
                };
                let list = create(t, &mut other, ObjectKind::List);
                run(
                    t,
                    &mut other,
                    &Request::Release {
                        object: list,
                        count: 1,
                    },
                );
                got
            });
            assert_eq!(worker.join().unwrap(), Some(b"v".to_vec()));
        });
        drop(held);
        // The held object answers once its lock is free.
        let got = run(&table, &mut conn, &call(busy, Method::DictLen, None, None));
        assert!(matches!(
            access_response(&got).unwrap(),
            ArchivedResponse::Len(n) if n.to_native() == 0
        ));
    }

    /// The references a stored value holds count against `max_bytes` as
    /// the server keeps them (8 bytes each): a client that sent empty
    /// values with millions of references each grew the server without
    /// limit, charged nothing. Found by an attack battery.
    #[test]
    fn references_in_a_stored_value_are_charged() {
        let limits = crate::manager::server::Limits {
            max_bytes: 1000,
            ..Default::default()
        };
        let table = Mutex::new(Table::with_limits(limits));
        let mut conn = ConnRefs::new();
        let list = create(&table, &mut conn, ObjectKind::List);
        let dict = create(&table, &mut conn, ObjectKind::Dict);
        let push = |refs: &[ObjectId]| {
            let req = Request::Call(Call {
                value: Some(Blob { bytes: b"", refs }),
                ..match call(list, Method::ListPush, None, None) {
                    Request::Call(c) => c,
                    _ => unreachable!(),
                }
            });
            let out = run(&table, &mut ConnRefs::new(), &req);
            matches!(
                access_response(&out).unwrap(),
                ArchivedResponse::Error(
                    crate::manager::protocol::ArchivedRemoteError::QuotaExceeded { .. }
                )
            )
        };
        assert!(!push(&[dict; 100]), "800 bytes of references fit");
        assert!(push(&[dict; 100]), "1600 do not");
        assert!(push(&vec![dict; 1_000_000]), "nor a million");
    }

    #[test]
    fn an_object_freed_by_a_call_drops_what_it_stored() {
        let table = Mutex::new(Table::new());
        let mut conn = ConnRefs::new();
        let outer = create(&table, &mut conn, ObjectKind::List);
        let inner = create(&table, &mut conn, ObjectKind::Dict);
        // `outer` stores a proxy to `inner`, then `inner` is let go: only
        // the stored value keeps it.
        let refs = [inner];
        let push = Request::Call(Call {
            value: Some(Blob {
                bytes: b"proxy",
                refs: &refs,
            }),
            ..match call(outer, Method::ListPush, None, None) {
                Request::Call(c) => c,
                _ => unreachable!(),
            }
        });
        run(&table, &mut conn, &push);
        run(
            &table,
            &mut conn,
            &Request::Release {
                object: inner,
                count: 1,
            },
        );
        assert_eq!(table.lock().len(), 2);
        // Clearing the list drops the value, freeing `inner` before the
        // call is answered; releasing `outer` then frees the rest.
        run(
            &table,
            &mut conn,
            &call(outer, Method::ListClear, None, None),
        );
        assert_eq!(table.lock().len(), 1);
        run(
            &table,
            &mut conn,
            &Request::Release {
                object: outer,
                count: 1,
            },
        );
        assert_eq!(table.lock().len(), 0);
        assert!(!table.lock().has_pending());
    }
}
