//! User objects: Rust values a server owns and whose chosen methods clients
//! call by number (Python's `BaseManager.register("Counter", Counter)`).
//!
//! A user object's id has [`USER_OBJECT_BIT`] set, so it never meets the
//! table's dicts and lists. A call is an ordinary `Request::Call` whose
//! `value` holds the encoded arguments; the answer is a `Response::Value`
//! holding the encoded result. Each object has its own lock: a slow method
//! holds up callers of that object only.
//!
//! A named user object lives as long as the server (it is made when the
//! server starts). A factory (Python's `register(typeid, callable)`) makes
//! a new object for each `Request::Create` of kind `User`: that object sits
//! in the table, counted by its proxies like a dict, and is freed with its
//! last reference (a client that dies releases its references). A factory
//! that panics is the creating caller's `RemoteError::Failed`, nothing else.
//!
//! A method that panics is the caller's error, not the server's: the panic
//! is caught and answered as a `RemoteError::Failed` carrying its message
//! (the client's `Error::Remote`, as Python re-raises a served method's
//! exception in its caller), and the object and its server go on serving.
//! Whatever the method changed before it panicked stays changed (as in
//! Python); the object's lock is released as the panic unwinds.

use std::sync::Arc;

use crate::fork_sync::{Mutex, RwLock};

use crate::manager::protocol::{
    ArchivedRequest, ObjectId, ObjectKind, RemoteError, Response, access_request,
};
use crate::manager::response_buf::ResponseBuf;
use crate::manager::table::{ConnRefs, Data, Table};
use crate::manager::waitable::Peer;
use crate::shm::fingerprint_str;

/// Set in the id of every user object.
pub const USER_OBJECT_BIT: u64 = 1 << 62;

/// Why a user method call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The type has no method with this number.
    UnknownMethod,
    /// The arguments did not decode, or the result did not encode.
    Codec(String),
}

/// A value a server owns and serves: its methods are called by number with
/// encoded arguments and answer encoded results. Implemented by the
/// `#[multiproc::remote]` attribute (or the `remote_object!` macro) of the
/// `multiproc` crate.
///
/// A panic in `call` is caught by the server and answered to the caller as
/// an error carrying the panic message; the server and the object go on.
pub trait ServedObject: Send + 'static {
    /// Runs method `method` on the encoded `args`; returns the encoded result.
    fn call(&mut self, method: u32, args: &[u8]) -> Result<Vec<u8>, CallError>;

    /// The name of method `method`, for errors and logs (the generated
    /// implementations give it).
    fn method_name(&self, _method: u32) -> Option<&'static str> {
        None
    }
}

/// A Rust type a remote manager's server can own (see the
/// `#[multiproc::remote]` attribute, which implements this, as does
/// `multiproc::remote_object!`).
pub trait RemoteObject: ServedObject + Default {
    /// The name both sides check (the type's path).
    const TYPE_NAME: &'static str;
}

type Slot = Arc<Mutex<Box<dyn ServedObject>>>;

/// A user object in the table (made by a factory), shared with the calls
/// running on it now.
pub(crate) struct UserSlot(Slot);

impl std::fmt::Debug for UserSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserSlot")
    }
}

/// Makes a new user object for each `create` (a registered factory).
pub type Factory = Box<dyn Fn() -> Box<dyn ServedObject> + Send + Sync>;

struct Registered {
    type_name: &'static str,
    make: Factory,
}

/// The user objects of one server.
#[derive(Default)]
pub(crate) struct UserObjects {
    objects: RwLock<Vec<Slot>>,
    factories: RwLock<Vec<Arc<Registered>>>,
}

impl UserObjects {
    /// Adds an object; returns its id.
    pub fn add(&self, object: Box<dyn ServedObject>) -> ObjectId {
        let mut objects = self.objects.write();
        objects.push(Arc::new(Mutex::new(object)));
        USER_OBJECT_BIT | (objects.len() as u64 - 1)
    }

    /// Adds a factory for objects of `type_name`; returns its number (the
    /// `arg` of a `Create` of kind `User`).
    pub fn add_factory(&self, type_name: &'static str, make: Factory) -> u64 {
        let mut factories = self.factories.write();
        factories.push(Arc::new(Registered { type_name, make }));
        factories.len() as u64 - 1
    }

    pub fn is_empty(&self) -> bool {
        self.factories.read().is_empty() && self.objects.read().is_empty()
    }

    /// Handles `request` if it is a call on a user object or the creation
    /// of one (then `true`); otherwise leaves it to the table.
    pub fn try_handle(
        &self,
        table: &crate::fork_sync::Mutex<Table>,
        conn: &mut ConnRefs,
        peer: &Peer<'_>,
        request: &[u8],
        out: &mut ResponseBuf,
    ) -> bool {
        let answer = match access_request(request) {
            Ok(ArchivedRequest::Call(call)) => {
                let id = call.object.to_native();
                let slot = if id & USER_OBJECT_BIT != 0 {
                    usize::try_from(id & !USER_OBJECT_BIT)
                        .ok()
                        .and_then(|i| self.objects.read().get(i).cloned())
                } else if self.factories.read().is_empty() {
                    return false;
                } else {
                    match table.lock().get_mut(id).map(|o| &o.data) {
                        Ok(Data::User(UserSlot(slot))) => Some(slot.clone()),
                        _ => return false,
                    }
                };
                let args = call.value.as_ref().map_or(&[][..], |b| &b.bytes[..]);
                let method = call.method.to_native();
                match slot {
                    None => Err(RemoteError::UnknownObject(id)),
                    Some(obj) => run_method(&obj, id, method, args).map(Some),
                }
            }
            Ok(ArchivedRequest::Create {
                kind: crate::manager::protocol::ArchivedObjectKind::User,
                fingerprint,
                type_name,
                arg,
            }) => self
                .create(
                    table,
                    conn,
                    peer,
                    fingerprint.to_native(),
                    type_name,
                    arg.to_native(),
                )
                .map(|id| {
                    out.emit(&Response::Created(id));
                    None
                }),
            _ => return false,
        };
        match answer {
            Ok(None) => {}
            Ok(Some(bytes)) => out.emit(&Response::Value {
                bytes: Some(&bytes),
                refs: Vec::new(),
            }),
            Err(e) => out.emit(&Response::Error(e)),
        }
        true
    }

    /// Runs factory `index` (checked to make the type the proxy expects)
    /// outside the table's lock, then puts its object in the table with
    /// `conn` holding the first reference.
    fn create(
        &self,
        table: &crate::fork_sync::Mutex<Table>,
        conn: &mut ConnRefs,
        peer: &Peer<'_>,
        fingerprint: u64,
        type_name: &str,
        index: u64,
    ) -> Result<ObjectId, RemoteError> {
        let factory = usize::try_from(index)
            .ok()
            .and_then(|i| self.factories.read().get(i).cloned())
            .ok_or(RemoteError::NotFound)?;
        if fingerprint != fingerprint_str(factory.type_name) {
            return Err(RemoteError::TypeMismatch {
                expected: type_name.into(),
                found: factory.type_name.into(),
            });
        }
        // User code: a panic is the caller's error, and the server goes on.
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (factory.make)()))
            .map_err(|payload| {
                let message = crate::process::panic_text(payload.as_ref());
                tracing::warn!(
                    type_name = factory.type_name,
                    "a served constructor panicked: {message}"
                );
                RemoteError::Failed(format!(
                    "constructor of {} panicked: {message}",
                    factory.type_name
                ))
            })?;
        let slot = UserSlot(Arc::new(Mutex::new(made)));
        table.lock().insert(
            conn,
            peer.id,
            ObjectKind::User,
            fingerprint,
            factory.type_name,
            Data::User(slot),
            0,
        )
    }
}

/// Runs `method` of the user object `obj` (id `id`) on `args`, catching a panic.
fn run_method(obj: &Slot, id: ObjectId, method: u32, args: &[u8]) -> Result<Vec<u8>, RemoteError> {
    // User code: a panic must not unwind through the server (the table's
    // locks are not held here; the object's own lock is released by the
    // unwinding guard).
    let mut name = None;
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut obj = obj.lock();
        name = obj.method_name(method);
        obj.call(method, args)
    }));
    match ran {
        Ok(answer) => answer.map_err(|e| match e {
            CallError::UnknownMethod => RemoteError::UnknownMethod {
                method,
                object: "user object".into(),
            },
            CallError::Codec(m) => RemoteError::Malformed(m),
        }),
        Err(payload) => {
            let message = crate::process::panic_text(payload.as_ref());
            let method = match name {
                Some(name) => format!("{name} (method {method})"),
                None => format!("{method}"),
            };
            tracing::warn!(object = id, method, "a served method panicked: {message}");
            Err(RemoteError::Failed(format!(
                "served method {method} panicked: {message}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::protocol::{
        ArchivedResponse, Blob, Call, Request, access_response, encode_request,
    };
    use rkyv::util::AlignedVec;

    struct Echo;

    impl ServedObject for Echo {
        fn call(&mut self, method: u32, args: &[u8]) -> Result<Vec<u8>, CallError> {
            match method {
                1 => Ok(args.to_vec()),
                _ => Err(CallError::UnknownMethod),
            }
        }
    }

    fn run(
        users: &UserObjects,
        table: &crate::fork_sync::Mutex<Table>,
        req: &Request<'_>,
    ) -> AlignedVec {
        let bytes = encode_request(req, AlignedVec::new()).unwrap();
        let mut conn = ConnRefs::new();
        let mut out = ResponseBuf::new();
        assert!(users.try_handle(table, &mut conn, &Peer::server_itself(), &bytes, &mut out));
        out.into_bytes()
    }

    fn create(fingerprint: u64, arg: u64) -> Request<'static> {
        Request::Create {
            kind: ObjectKind::User,
            fingerprint,
            type_name: "test",
            arg,
        }
    }

    #[test]
    fn a_factory_makes_one_object_per_create_and_refuses_lies() {
        let users = UserObjects::default();
        let table = crate::fork_sync::Mutex::new(Table::new());
        let echo = users.add_factory("Echo", Box::new(|| Box::new(Echo)));
        let broken = users.add_factory("Broken", Box::new(|| panic!("no way")));
        let fp = fingerprint_str("Echo");
        let mut ids = Vec::new();
        for _ in 0..2 {
            let out = run(&users, &table, &create(fp, echo));
            match access_response(&out).unwrap() {
                ArchivedResponse::Created(id) => ids.push(id.to_native()),
                _ => panic!("not created"),
            }
        }
        assert_ne!(ids[0], ids[1]);
        assert_eq!(table.lock().len(), 2);
        // A call reaches the object in the table.
        let arg = [7u8; 4];
        let out = run(
            &users,
            &table,
            &Request::Call(Call {
                object: ids[0],
                method: 1,
                index: 0,
                key: None,
                value: Some(Blob::plain(&arg)),
                expected: None,
                batch: Vec::new(),
                fingerprint: 0,
                type_name: "",
                wait_us: 0,
            }),
        );
        assert!(matches!(
            access_response(&out).unwrap(),
            ArchivedResponse::Value { .. }
        ));
        // A factory number nobody registered, a type the factory does not
        // make, a constructor that panics: errors, nothing made.
        let refused = |req: &Request<'_>| {
            let out = run(&users, &table, req);
            match access_response(&out).unwrap() {
                ArchivedResponse::Error(e) => {
                    rkyv::deserialize::<RemoteError, rkyv::rancor::Error>(e).unwrap()
                }
                _ => panic!("not refused"),
            }
        };
        assert_eq!(refused(&create(fp, 99)), RemoteError::NotFound);
        assert!(matches!(
            refused(&create(fp ^ 1, echo)),
            RemoteError::TypeMismatch { .. }
        ));
        match refused(&create(fingerprint_str("Broken"), broken)) {
            RemoteError::Failed(m) => assert!(m.contains("no way"), "{m}"),
            e => panic!("{e:?}"),
        }
        assert_eq!(table.lock().len(), 2);
    }
}
