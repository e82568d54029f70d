//! User objects: Rust values a server owns and whose chosen methods clients
//! call by number (Python's `BaseManager.register("Counter", Counter)`).
//!
//! A user object's id has [`USER_OBJECT_BIT`] set, so it never meets the
//! table's dicts and lists. A call is an ordinary `Request::Call` whose
//! `value` holds the encoded arguments; the answer is a `Response::Value`
//! holding the encoded result. Each object has its own lock: a slow method
//! holds up callers of that object only.
//!
//! User objects live as long as the server (they are made when it starts).
//!
//! A method that panics is the caller's error, not the server's: the panic
//! is caught and answered as a `RemoteError::Failed` carrying its message
//! (the client's `Error::Remote`, as Python re-raises a served method's
//! exception in its caller), and the object and its server go on serving.
//! Whatever the method changed before it panicked stays changed (as in
//! Python); the object's lock is released as the panic unwinds.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rkyv::util::AlignedVec;

use crate::manager::protocol::{
    ArchivedRequest, ObjectId, RemoteError, Response, access_request, encode_response,
};

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
}

type Slot = Arc<Mutex<Box<dyn ServedObject>>>;

/// The user objects of one server.
#[derive(Default)]
pub(crate) struct UserObjects {
    objects: RwLock<Vec<Slot>>,
}

impl UserObjects {
    /// Adds an object; returns its id.
    pub fn add(&self, object: Box<dyn ServedObject>) -> ObjectId {
        let mut objects = self.objects.write();
        objects.push(Arc::new(Mutex::new(object)));
        USER_OBJECT_BIT | (objects.len() as u64 - 1)
    }

    pub fn is_empty(&self) -> bool {
        self.objects.read().is_empty()
    }

    /// Handles `request` if it is a call on a user object (then `true`).
    pub fn try_handle(&self, request: &[u8], out: &mut AlignedVec) -> bool {
        let Ok(ArchivedRequest::Call(call)) = access_request(request) else {
            return false;
        };
        let id = call.object.to_native();
        if id & USER_OBJECT_BIT == 0 {
            return false;
        }
        let slot = usize::try_from(id & !USER_OBJECT_BIT)
            .ok()
            .and_then(|i| self.objects.read().get(i).cloned());
        let method = call.method.to_native();
        let answer = match slot {
            None => Err(RemoteError::UnknownObject(id)),
            Some(obj) => {
                let args = call.value.as_ref().map_or(&[][..], |b| &b.bytes[..]);
                // User code: a panic must not unwind through the server (the
                // table's locks are not held here; the object's own lock is
                // released by the unwinding guard).
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    obj.lock().call(method, args)
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
                        tracing::warn!(object = id, method, "a served method panicked: {message}");
                        Err(RemoteError::Failed(format!(
                            "served method {method} panicked: {message}"
                        )))
                    }
                }
            }
        };
        let mut buf = std::mem::take(out);
        buf.clear();
        let encoded = match &answer {
            Ok(bytes) => encode_response(
                &Response::Value {
                    bytes: Some(bytes),
                    refs: Vec::new(),
                },
                buf,
            ),
            Err(e) => encode_response(&Response::Error(e.clone()), buf),
        };
        *out = encoded.unwrap_or_default();
        true
    }
}
