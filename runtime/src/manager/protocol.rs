//! The manager's messages: what a proxy asks, what the server answers.
//!
//! Both are rkyv-encoded enums. Requests borrow their byte payloads (the
//! client serializes straight from its buffers) and the server reads them
//! in archived form after a checked access, so a malformed request is an
//! error response, never a panic. The same frames travel over the local
//! shared-memory channel and, later, over TCP.
//!
//! User data is opaque here: keys and values are encoded bytes (a
//! [`Blob`]) the server stores and compares but never decodes. A blob may
//! name other managed objects it refers to (a dict holding list proxies):
//! the server keeps those alive while the blob is stored.

// rkyv derives resolver types whose tuple-variant fields cannot carry docs.
#![allow(missing_docs)]

use rkyv::with::{InlineAsBox, Map};
use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{Error, Quota, Result};
use crate::handle::HandleRepr;
use crate::shm::ShmSpec;
use crate::sys;

/// The identity of a managed object, unique for the server's lifetime.
pub type ObjectId = u64;

/// Where a local manager server listens.
///
/// Locally a server listens on a Linux abstract Unix socket (nothing on
/// disk) whose name holds the server's pid and a random token. `start_ticks`
/// tells the server from a later process that reuses its pid.
///
/// The name is no secret (any user can list abstract sockets in
/// `/proc/net/unix`): the server checks that a client runs as its own user
/// and knows its authkey. Still, `Debug` leaves the token out.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(crate = rkyv)]
pub struct LocalAddress {
    /// The server process's pid.
    pub pid: i32,
    /// Its start time in clock ticks since boot.
    pub start_ticks: u64,
    /// A random token that makes the socket name unguessable.
    pub token: u64,
}

impl std::fmt::Debug for LocalAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAddress")
            .field("pid", &self.pid)
            .field("start_ticks", &self.start_ticks)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ArchivedLocalAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAddress")
            .field("pid", &self.pid.to_native())
            .field("start_ticks", &self.start_ticks.to_native())
            .finish_non_exhaustive()
    }
}

impl LocalAddress {
    /// The abstract socket name the server listens on.
    pub fn socket_name(&self) -> String {
        format!("multiproc-manager-{}-{:016x}", self.pid, self.token)
    }

    /// Whether the server process may still run: false only once it is
    /// known to have ended (a check that cannot tell, for want of a
    /// descriptor, counts as running).
    pub fn is_alive(&self) -> bool {
        !self.liveness().is_dead()
    }

    /// What can be said about the server process: alive, dead, or unknown.
    pub fn liveness(&self) -> sys::process::Liveness {
        if self.pid == sys::process::getpid() {
            return sys::process::Liveness::Alive;
        }
        sys::process::liveness(self.pid, Some(self.start_ticks))
    }
}

/// Where a manager server can be reached: on this host over its local
/// socket and shared-memory channels, or over TCP (authenticated with an
/// authkey, see [`crate::manager::remote`]).
///
/// A proxy's encoded form holds this, so a proxy passed to another process
/// (or host) reconnects the same way.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(crate = rkyv, derive(Debug))]
pub enum ServerAddress {
    /// A server on this host.
    Local(LocalAddress),
    /// A server reached over TCP.
    Tcp(std::net::SocketAddr),
}

impl ServerAddress {
    /// Whether the server may still be running: a local server's process is
    /// checked (false only once it is known to have ended); a TCP server is
    /// assumed up until a connection says otherwise.
    pub fn is_alive(&self) -> bool {
        match self {
            ServerAddress::Local(l) => l.is_alive(),
            ServerAddress::Tcp(_) => true,
        }
    }

    /// The local server's pid (`None` for a TCP server).
    pub fn pid(&self) -> Option<i32> {
        match self {
            ServerAddress::Local(l) => Some(l.pid),
            ServerAddress::Tcp(_) => None,
        }
    }
}

impl std::fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddress::Local(l) => write!(f, "local server {}", l.pid),
            ServerAddress::Tcp(a) => write!(f, "server at {a}"),
        }
    }
}

/// The kinds of objects that live inside the server.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(crate = rkyv, derive(Debug, PartialEq, Eq))]
#[repr(u8)]
pub enum ObjectKind {
    /// A dict: encoded keys to encoded values.
    Dict,
    /// A list of encoded values.
    List,
    /// A namespace: names to typed, encoded values.
    Namespace,
    /// A shared segment the server created (a `Value`, `Array` or `Lock`).
    Segment,
    /// A lock kept by the server, for clients that reach it over TCP.
    Lock,
    /// A semaphore kept by the server (`arg` at creation: its value).
    Semaphore,
    /// A semaphore that may not be released above its initial value.
    BoundedSemaphore,
    /// An event kept by the server.
    Event,
    /// A barrier kept by the server (`arg` at creation: its parties).
    Barrier,
    /// A FIFO queue of encoded values kept by the server, with Python's
    /// `task_done`/`join` (`arg` at creation: its maxsize, 0 for none).
    Queue,
    /// A user object made by a factory the server registered (Python's
    /// `BaseManager.register(typeid, callable)`; `arg` at creation: the
    /// factory's number), counted by its proxies like a dict.
    User,
    /// A recursive lock kept by the server: owned by one thread of one
    /// client, entered again by it, released only by it.
    RLock,
    /// A condition kept by the server over a lock or recursive lock of the
    /// same server (`arg` at creation: that lock's id; 0: a recursive lock
    /// of its own, which the server creates).
    Condition,
}

/// The type name a server-kept recursive lock records: the one an `RLock`'s
/// remote flavour checks (a condition's own lock is made by the server).
pub const RLOCK_TAG: &str = "multiproc::RLockProxy";

/// Declares [`Method`] from one table, grouped by the kind of object each
/// method applies to: the number of a method, its kind and the reverse
/// lookup all come from the same line, so a new method cannot be filed
/// under another kind, and a number no line names is no method.
macro_rules! methods {
    ($($kind:ident { $($(#[$doc:meta])* $name:ident = $n:literal,)* })*) => {
        /// The methods a [`Request::Call`] may name, by number.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u32)]
        #[allow(missing_docs)]
        pub enum Method {
            $($($(#[$doc])* $name = $n,)*)*
        }

        impl Method {
            /// The method with this number, if there is one.
            pub fn from_u32(n: u32) -> Option<Method> {
                match n {
                    $($($n => Some(Method::$name),)*)*
                    _ => None,
                }
            }

            /// The kind of object the method applies to.
            pub fn object_kind(self) -> ObjectKind {
                match self {
                    $($(Method::$name => ObjectKind::$kind,)*)*
                }
            }
        }
    };
}

methods! {
    Dict {
        DictGet = 1,
        DictInsert = 2,
        DictRemove = 3,
        DictContains = 4,
        DictLen = 5,
        DictKeys = 6,
        DictValues = 7,
        DictItems = 8,
        DictUpdate = 9,
        DictClear = 10,
        DictSetDefault = 11,
        DictCompareAndSwap = 12,
        /// Takes out some entry: `Many([key, value])`; `Error(KeyNotFound)` when empty.
        DictPopItem = 13,
    }
    List {
        ListPush = 30,
        ListExtend = 31,
        ListGet = 32,
        ListSet = 33,
        ListInsert = 34,
        ListPop = 35,
        ListRemove = 36,
        ListLen = 37,
        ListIndex = 38,
        ListReverse = 39,
        ListSnapshot = 40,
        ListClear = 41,
        /// How many elements equal `value` (by bytes): `Len(n)`.
        ListCount = 42,
        /// The elements `index..end` ([`u64_arg`] in `key`; `u64::MAX`: to the
        /// end): `Many(items)`.
        ListGetRange = 43,
        /// Replaces the elements `index..end` ([`u64_arg`] in `key`) by `batch`.
        ListSetRange = 44,
        /// Reorders the list: element `i` becomes the one at old position
        /// `batch[i]` ([`u64_arg`] each), only if the list's [`list_digest`] is
        /// still `expected`: `Bool(done)`.
        ListApplyOrder = 45,
    }
    Namespace {
        NsGet = 60,
        NsSet = 61,
        NsDelete = 62,
        NsContains = 63,
        NsNames = 64,
        /// The attributes' names and type names, in pairs: `Many`.
        NsDescribe = 65,
    }
    Lock {
        /// Takes the lock if it is free (never waits), for the process whose
        /// pid is `index`: answered with `Acquired`.
        LockTryAcquire = 90,
        LockRelease = 91,
        /// Waits up to `wait_us` until the lock is free: `Bool(free)`.
        LockWaitFree = 92,
        LockIsLocked = 93,
    }
    RLock {
        /// Takes the lock if it is free, or enters it again if the calling
        /// thread holds it (never waits), for the process whose pid is
        /// `index` and its thread [`u64_arg`] in `key`; with a [`u64_arg`]
        /// count in `value`, takes a free lock that deep (a condition wait
        /// restoring it) and never enters it again: answered with `Acquired`.
        RLockTryAcquire = 140,
        /// Releases one level; only the holding thread (`key`) may.
        RLockRelease = 141,
        /// Waits up to `wait_us` until the lock is free: `Bool(free)`.
        RLockWaitFree = 142,
        RLockIsLocked = 143,
        /// How deep the thread in `key` holds the lock (0: not at all): `Len`.
        RLockCount = 144,
    }
    Condition {
        /// The condition's lock: `LockOf`.
        CondLock = 150,
        /// Registers the caller (its thread [`u64_arg`] in `key`), who must
        /// hold the lock, as a waiter and releases the lock completely, in
        /// one step: `Waiting { ticket, saved }`.
        CondPrepareWait = 151,
        /// Waits up to `wait_us` until ticket `index` is notified; the
        /// ticket is gone afterwards either way: `Bool(notified)`.
        CondWait = 152,
        /// Wakes up to `index` waiters (`i64::MAX`: all); the caller (thread
        /// in `key`) must hold the lock.
        CondNotify = 153,
    }
    Semaphore {
        /// Takes one unit if there is one (never waits): `Bool(taken)`.
        SemTryAcquire = 100,
        SemRelease = 101,
        /// Waits up to `wait_us` until a unit is free: `Bool(free)`.
        SemWaitAvailable = 102,
        SemValue = 103,
    }
    Event {
        EventSet = 110,
        EventClear = 111,
        EventIsSet = 112,
        /// Waits up to `wait_us` for the flag: `Bool(set)`.
        EventWait = 113,
    }
    Barrier {
        /// Arrives and waits up to `wait_us` for the round: `Len(index)`; with
        /// `index != 0`, arrives only if that completes the round (`WouldBlock`
        /// otherwise, changing nothing).
        BarrierWait = 120,
        BarrierAbort = 121,
        BarrierReset = 122,
        BarrierParties = 123,
        BarrierWaiting = 124,
        BarrierBroken = 125,
    }
    Queue {
        /// Adds `value` unless the queue is full (never waits).
        QueuePut = 130,
        /// Takes the front value (never waits); `Error(Empty)` when empty.
        QueueGet = 131,
        /// Waits up to `wait_us` until the queue holds a value: `Bool(ready)`.
        QueueWaitNotEmpty = 132,
        /// Waits up to `wait_us` until the queue has room: `Bool(ready)`.
        QueueWaitNotFull = 133,
        QueueLen = 134,
        QueueMaxsize = 135,
        QueueTaskDone = 136,
        /// Waits up to `wait_us` until every value put was marked done: `Bool(done)`.
        QueueJoin = 137,
        QueueUnfinished = 138,
    }
}

impl Method {
    /// Whether the method belongs to a kind the server keeps for waiting
    /// clients (Lock, RLock, Condition, Semaphore, Event, Barrier, Queue).
    pub fn is_waitable_kind(self) -> bool {
        !matches!(
            self.object_kind(),
            ObjectKind::Dict | ObjectKind::List | ObjectKind::Namespace | ObjectKind::Segment
        )
    }

    /// Whether the method may wait (it runs outside the table's lock and
    /// honours the call's `wait_us`).
    pub fn waits(self) -> bool {
        use Method::*;
        matches!(
            self,
            LockWaitFree
                | RLockWaitFree
                | CondWait
                | SemWaitAvailable
                | EventWait
                | BarrierWait
                | QueueWaitNotEmpty
                | QueueWaitNotFull
                | QueueJoin
        )
    }
}

/// A number as a call carries it in a blob (8 bytes, little-endian): the
/// end of a list range in `key`, the positions of a list order in `batch`.
pub fn u64_arg(n: u64) -> [u8; 8] {
    n.to_le_bytes()
}

/// Reads what [`u64_arg`] made; `None` if it is not 8 bytes.
pub fn read_u64_arg(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// A digest of a list's encoded elements, in order: what
/// [`Method::ListApplyOrder`] checks to know that the list is still the one
/// its order was computed from.
pub fn list_digest<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for item in items {
        h.update((item.len() as u64).to_le_bytes());
        h.update(item);
    }
    h.finalize().into()
}

/// Encoded user data, with the managed objects it refers to.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
#[rkyv(crate = rkyv)]
pub struct Blob<'a> {
    /// The encoded bytes, opaque to the server.
    #[rkyv(with = InlineAsBox)]
    pub bytes: &'a [u8],
    /// Objects of this server the bytes hold proxies to; the server keeps
    /// them alive while it stores the bytes.
    #[rkyv(with = InlineAsBox)]
    pub refs: &'a [ObjectId],
}

impl<'a> Blob<'a> {
    /// Bytes that refer to no object.
    pub fn plain(bytes: &'a [u8]) -> Blob<'a> {
        Blob { bytes, refs: &[] }
    }
}

/// A method call on one object. Arguments a method does not use are left empty.
#[derive(Archive, Serialize, Debug)]
#[rkyv(crate = rkyv)]
pub struct Call<'a> {
    /// The object called.
    pub object: ObjectId,
    /// A [`Method`] number.
    pub method: u32,
    /// A list index (negative counts from the end where the method allows).
    pub index: i64,
    /// A dict key or namespace name.
    pub key: Option<Blob<'a>>,
    /// A value to store.
    pub value: Option<Blob<'a>>,
    /// For compare-and-swap: the value expected now (`None`: the key is absent).
    pub expected: Option<Blob<'a>>,
    /// Several items (extend) or key/value pairs, flattened (update).
    pub batch: Vec<Blob<'a>>,
    /// The fingerprint of the value's type (namespace attributes).
    pub fingerprint: u64,
    /// The name of the value's type (namespace attributes).
    #[rkyv(with = InlineAsBox)]
    pub type_name: &'a str,
    /// How long a waiting method may wait, in microseconds ([`WAIT_FOREVER`]:
    /// no limit; 0: not at all).
    pub wait_us: u64,
}

/// `Call::wait_us` for a wait without a time limit.
pub const WAIT_FOREVER: u64 = u64::MAX;

/// `Call::wait_us` for a deadline: [`WAIT_FOREVER`] for `Never`, 0 for
/// `Now`, and at least 1 for a deadline (even one that just passed: the
/// call is a timed one, not a `try_`).
pub fn wait_us(deadline: crate::deadline::Deadline) -> u64 {
    use crate::deadline::Deadline;
    match deadline {
        Deadline::Never => WAIT_FOREVER,
        Deadline::Now => 0,
        Deadline::At(..) => deadline.remaining().map_or(WAIT_FOREVER, |d| {
            u64::try_from(d.as_micros())
                .unwrap_or(WAIT_FOREVER - 1)
                .max(1)
        }),
    }
}

/// What a client asks the server.
#[derive(Archive, Serialize, Debug)]
#[rkyv(crate = rkyv, attr(allow(missing_docs)))]
pub enum Request<'a> {
    /// Creates an object; the caller's connection holds the first reference.
    Create {
        /// Dict, list or namespace.
        kind: ObjectKind,
        /// Fingerprint of the proxy's types.
        fingerprint: u64,
        /// The proxy's types, for error messages.
        #[rkyv(with = InlineAsBox)]
        type_name: &'a str,
        /// The kind's parameter: a semaphore's value, a barrier's parties,
        /// a queue's maxsize (0 otherwise).
        arg: u64,
    },
    /// Creates a shared segment from a spec; answered with a handle the
    /// client opens directly. The connection holds a reference until it
    /// releases it (after opening).
    CreateShm(ShmSpec),
    /// Takes a reference to an existing object on this connection, checking
    /// its type; with a nonzero `pin`, takes over that in-flight reference.
    Attach {
        /// The object.
        object: ObjectId,
        /// Fingerprint of the proxy's types.
        fingerprint: u64,
        /// The proxy's types, for error messages.
        #[rkyv(with = InlineAsBox)]
        type_name: &'a str,
        /// An in-flight reference to take over, or 0.
        pin: u64,
    },
    /// Drops `count` references this connection holds.
    Release {
        /// The object.
        object: ObjectId,
        /// How many references.
        count: u64,
    },
    /// Keeps a segment this server created alive for a value about to be
    /// stored: `handle` is the client's own handle to it (its pid and
    /// descriptor). Answered with a `Handle`: the object that now holds the
    /// segment (the connection holds one reference to it, to release once
    /// the value is stored, which names the object among its refs) and a
    /// handle through the server's own descriptor, to encode instead. A
    /// segment the server did not create is refused.
    AdoptShm {
        /// The client's handle to the segment.
        handle: HandleRepr,
    },
    /// Takes an in-flight reference (for a proxy being encoded), answered with its token.
    Pin {
        /// The object.
        object: ObjectId,
    },
    /// Takes in-flight references to several objects at once (before a
    /// fork), answered with one token.
    PinMany {
        /// The objects.
        objects: Vec<ObjectId>,
    },
    /// Takes over the references of a [`Request::PinMany`] token; answered
    /// with the objects it held.
    ClaimMany {
        /// The token.
        token: u64,
    },
    /// Names the forked child that is to claim a [`Request::PinMany`]
    /// token this connection took (a local server only): the server drops
    /// the pin as soon as that process ends without claiming it.
    NameClaimant {
        /// The token.
        token: u64,
        /// The child's pid.
        pid: i32,
    },
    /// Calls a method.
    Call(Call<'a>),
    /// How many objects the server holds.
    NumberOfObjects,
    /// Stops the server.
    Shutdown,
}

/// Why the server refused a request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(crate = rkyv, attr(allow(missing_docs)))]
pub enum RemoteError {
    /// No such object (never created, or already freed).
    UnknownObject(ObjectId),
    /// No such method, or not one for this kind of object.
    UnknownMethod {
        /// The method number.
        method: u32,
        /// What the object is.
        object: String,
    },
    /// The proxy's types do not match the object's.
    TypeMismatch {
        /// What the proxy expected.
        expected: String,
        /// What the object is.
        found: String,
    },
    /// A list index out of range.
    IndexOutOfRange {
        /// The index asked for.
        index: i64,
        /// The list's length.
        len: u64,
    },
    /// No such key or attribute.
    KeyNotFound,
    /// A value the server compared was not in the list.
    NotFound,
    /// The request could not be read, or lacked an argument.
    Malformed(String),
    /// The server is shutting down.
    ShuttingDown,
    /// Anything else (a segment could not be created, for example).
    Failed(String),
    /// A wait ran out of time.
    Timeout,
    /// A queue was empty.
    Empty,
    /// A queue was full.
    Full,
    /// A barrier was broken (aborted, reset, timed out, or a waiting party left).
    BrokenBarrier,
    /// A call that must not wait could not complete now.
    WouldBlock,
    /// The object cannot do that in its state (releasing an unlocked lock).
    InvalidState(String),
    /// The request or its response is larger than the connection allows.
    TooLarge {
        /// The message's size in bytes.
        size: u64,
        /// The largest size allowed.
        limit: u64,
    },
    /// The request would take the connection past one of the server's limits.
    QuotaExceeded {
        /// Which limit.
        what: QuotaKind,
        /// Its value.
        limit: u64,
    },
}

/// Which limit a [`RemoteError::QuotaExceeded`] names (as [`Quota`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(crate = rkyv, derive(Debug))]
#[repr(u8)]
pub enum QuotaKind {
    /// Objects created through one connection.
    Objects,
    /// Bytes stored through one connection.
    Bytes,
    /// Bytes of one shared segment.
    SegmentBytes,
}

impl From<QuotaKind> for Quota {
    fn from(q: QuotaKind) -> Quota {
        match q {
            QuotaKind::Objects => Quota::Objects,
            QuotaKind::Bytes => Quota::Bytes,
            QuotaKind::SegmentBytes => Quota::SegmentBytes,
        }
    }
}

impl From<RemoteError> for Error {
    fn from(e: RemoteError) -> Error {
        match e {
            RemoteError::UnknownObject(id) => Error::InvalidState(format!(
                "managed object {id} no longer exists (its last proxy was dropped)"
            )),
            RemoteError::UnknownMethod { method, object } => {
                Error::Protocol(format!("method {method} is not a method of a {object}"))
            }
            RemoteError::TypeMismatch { expected, found } => {
                Error::TypeMismatch { expected, found }
            }
            RemoteError::IndexOutOfRange { index, len } => Error::IndexOutOfRange {
                index: usize::try_from(index).unwrap_or(usize::MAX),
                len: len as usize,
            },
            // The server does not send the key back: the proxy that asked,
            // which knows it, names it (see `multiproc_proxy`'s calls).
            RemoteError::KeyNotFound => {
                Error::KeyNotFound("(a key the server did not name)".into())
            }
            RemoteError::NotFound => Error::KeyNotFound("(a value not in the list)".into()),
            RemoteError::Malformed(m) => Error::Protocol(m),
            RemoteError::ShuttingDown => Error::ManagerGone("the manager is shutting down".into()),
            RemoteError::Timeout => Error::Timeout(std::time::Duration::ZERO),
            RemoteError::Empty => Error::Empty,
            RemoteError::Full => Error::Full,
            RemoteError::BrokenBarrier => Error::BrokenBarrier,
            RemoteError::WouldBlock => Error::WouldBlock,
            RemoteError::InvalidState(m) => Error::InvalidState(m),
            RemoteError::Failed(m) => Error::Remote(m),
            RemoteError::TooLarge { size, limit } => Error::MessageTooLarge {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            },
            RemoteError::QuotaExceeded { what, limit } => Error::QuotaExceeded {
                what: what.into(),
                limit,
            },
        }
    }
}

/// What the server answers.
#[derive(Archive, Serialize, Debug)]
#[rkyv(crate = rkyv, attr(allow(missing_docs)))]
pub enum Response<'a> {
    /// Done, nothing to return.
    Unit,
    /// A yes or no.
    Bool(bool),
    /// A length or count.
    Len(u64),
    /// The id of a new object.
    Created(ObjectId),
    /// An in-flight reference's token.
    Token(u64),
    /// A handle to a segment the server created, and the object that keeps
    /// it until the creator released it (after opening the handle).
    Handle {
        /// The object to release once the handle is open.
        object: ObjectId,
        /// The handle.
        handle: HandleRepr,
    },
    /// One stored value, if there was one. The connection now holds one
    /// reference to each of `refs` (for the proxies inside the bytes).
    Value {
        /// The encoded value.
        #[rkyv(with = Map<InlineAsBox>)]
        bytes: Option<&'a [u8]>,
        /// Objects the bytes refer to, now referenced by the connection.
        refs: Vec<ObjectId>,
    },
    /// Several stored values (for items: key, value, key, value …), with
    /// the objects they refer to, as for `Value`.
    Many {
        /// The encoded values.
        #[rkyv(with = Map<InlineAsBox>)]
        items: Vec<&'a [u8]>,
        /// Objects the values refer to, now referenced by the connection.
        refs: Vec<ObjectId>,
    },
    /// The result of a compare-and-swap: if it failed, the value found
    /// instead (whose refs the connection now holds, as for `Value`).
    Swapped {
        /// Whether the new value was stored.
        done: bool,
        /// The value found, when not done.
        #[rkyv(with = Map<InlineAsBox>)]
        current: Option<&'a [u8]>,
        /// Objects `current` refers to, now referenced by the connection.
        refs: Vec<ObjectId>,
    },
    /// Several object ids (the objects a claimed token held).
    Objects(Vec<ObjectId>),
    /// The request failed.
    Error(RemoteError),
    /// What a lock's try-acquire did.
    Acquired {
        /// Whether the caller holds the lock now.
        taken: bool,
        /// The pid of the previous holder, if its connection ended while
        /// it held the lock (the server released it then).
        lost_holder: Option<i64>,
    },
    /// The lock a condition uses.
    LockOf {
        /// The lock's object id.
        object: ObjectId,
        /// Whether it is a recursive lock (else a plain lock).
        recursive: bool,
    },
    /// A condition waiter registered, its lock released.
    Waiting {
        /// What the waiter waits on (`CondWait`).
        ticket: u64,
        /// How deep the waiter held the lock, to restore after the wait.
        saved: u64,
    },
}

/// Encodes a request (client side).
pub fn encode_request(
    req: &Request<'_>,
    buf: rkyv::util::AlignedVec,
) -> Result<rkyv::util::AlignedVec> {
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(req, buf).map_err(Error::codec)
}

/// Encodes a response (server side).
pub fn encode_response(
    resp: &Response<'_>,
    buf: rkyv::util::AlignedVec,
) -> Result<rkyv::util::AlignedVec> {
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(resp, buf).map_err(Error::codec)
}

/// Encodes a response into any rkyv writer (the server side, see
/// `ResponseBuf`).
pub(crate) fn encode_response_in<W: rkyv::ser::Writer<rkyv::rancor::Error>>(
    resp: &Response<'_>,
    writer: W,
) -> Result<W> {
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(resp, writer).map_err(Error::codec)
}

/// Checks and views an encoded request (`bytes` must be 16-aligned).
pub fn access_request(bytes: &[u8]) -> Result<&ArchivedRequest<'_>> {
    rkyv::access::<ArchivedRequest<'_>, rkyv::rancor::Error>(bytes).map_err(Error::codec)
}

/// Checks and views an encoded response (`bytes` must be 16-aligned).
pub fn access_response(bytes: &[u8]) -> Result<&ArchivedResponse<'_>> {
    rkyv::access::<ArchivedResponse<'_>, rkyv::rancor::Error>(bytes).map_err(Error::codec)
}

/// The error a response carries, as an [`Error`].
pub fn remote_error(e: &ArchivedRemoteError) -> Error {
    match rkyv::deserialize::<RemoteError, rkyv::rancor::Error>(e) {
        Ok(e) => e.into(),
        Err(e) => Error::codec(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_number_names_one_method_and_an_unknown_one_none() {
        let known: Vec<Method> = (0..1000).filter_map(Method::from_u32).collect();
        assert!(known.len() > 50);
        for m in &known {
            assert_eq!(Method::from_u32(*m as u32), Some(*m));
        }
        // Gaps between the kinds' ranges and numbers past the last method
        // are no method, never a method of the kind that follows.
        for n in [0, 14, 29, 46, 66, 94, 139, 145, 154, 200, u32::MAX] {
            assert_eq!(Method::from_u32(n), None, "{n}");
        }
        assert_eq!(Method::QueueUnfinished.object_kind(), ObjectKind::Queue);
        assert_eq!(Method::BarrierBroken.object_kind(), ObjectKind::Barrier);
        assert!(!Method::DictGet.is_waitable_kind());
        assert!(Method::LockRelease.is_waitable_kind());
        assert_eq!(Method::RLockCount.object_kind(), ObjectKind::RLock);
        assert_eq!(Method::CondNotify.object_kind(), ObjectKind::Condition);
        assert!(Method::CondWait.waits() && !Method::CondPrepareWait.waits());
    }

    #[test]
    fn an_address_debug_form_leaves_the_token_out() {
        let a = LocalAddress {
            pid: 42,
            start_ticks: 7,
            token: 0xfeed_f00d_dead_beef,
        };
        let shown = format!("{a:?} {:?}", ServerAddress::Local(a));
        assert!(shown.contains("42"), "{shown}");
        assert!(!shown.to_lowercase().contains("feedf00d"), "{shown}");
        assert!(!shown.contains(&a.token.to_string()), "{shown}");
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&a).unwrap();
        let archived = rkyv::access::<ArchivedLocalAddress, rkyv::rancor::Error>(&bytes).unwrap();
        let shown = format!("{archived:?}");
        assert!(!shown.contains(&a.token.to_string()), "{shown}");
    }
}
