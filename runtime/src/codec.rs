//! How user data travels: `rkyv` encoding behind one trait.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::de::Pool;
use rkyv::rancor::Fallible;
use rkyv::rancor::{self, BoxedError, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::{Allocator, Writer};
use rkyv::util::AlignedVec;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Deserialize, Place, Serialize};

use crate::error::{Error, Result};

/// Types that can be sent to another process: arguments, results, messages.
///
/// Implemented for the standard types (integers, `bool`, `char`, `String`,
/// `Vec`, `Option`, `Result`, tuples, arrays, `HashMap`, `BTreeMap` …), the
/// handles of this crate (`Value`, `Array`, `Lock`, `Queue`, proxies …), and
/// your own structs and enums with `#[derive(multiproc::Shareable)]`:
///
/// ```
/// #[derive(multiproc::Shareable, Debug, PartialEq)]
/// struct Point {
///     x: i32,
///     y: i32,
/// }
///
/// use multiproc::Shareable;
/// let bytes = Point { x: 1, y: 2 }.encode().unwrap();
/// assert_eq!(Point::decode(&bytes).unwrap(), Point { x: 1, y: 2 });
/// ```
///
/// Behind it is [rkyv](https://docs.rs/rkyv): any `Send + 'static` type
/// with rkyv's `Archive`, `Serialize` and `Deserialize` (and checked
/// access) is `Shareable`, so a type that derives those directly works
/// too, given `#[rkyv(crate = multiproc::rkyv)]`. Encoded bytes are always
/// validated before use, so a corrupt message is an error, not UB.
///
/// ```
/// use multiproc::Shareable;
/// let bytes = (7u32, String::from("hi")).encode().unwrap();
/// let back = <(u32, String)>::decode(&bytes).unwrap();
/// assert_eq!(back, (7, "hi".to_string()));
///
/// let many = u64::encode_many(&[1, 2, 3]).unwrap();
/// assert_eq!(u64::decode_many(&many).unwrap(), vec![1, 2, 3]);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel to another process (it is not `multiproc::Shareable`)",
    label = "not `Shareable`",
    note = "a struct or enum of yours travels with `#[derive(multiproc::Shareable)]`; \
            references, `Rc`, raw pointers, closures and OS resources (`File`, \
            sockets) cannot travel, nor `PathBuf`, `OsString` or `SystemTime` (send a \
            `String`, bytes, or a `Duration` since `UNIX_EPOCH`); a `Manager` stays in \
            its process: send `m.address().clone()` and call `Manager::connect` there"
)]
pub trait Shareable: Sized + Send + 'static {
    /// Encodes `self` into bytes.
    fn encode(&self) -> Result<AlignedVec>;
    /// Encodes `self` into `out`, replacing its contents but reusing its allocation.
    fn encode_into(&self, out: &mut AlignedVec) -> Result<()>;
    /// Checks and decodes bytes made by [`Shareable::encode`].
    fn decode(bytes: &[u8]) -> Result<Self>;
    /// Encodes many values as one message (cheaper than one each).
    fn encode_many(items: &[Self]) -> Result<AlignedVec>;
    /// Checks and decodes bytes made by [`Shareable::encode_many`].
    fn decode_many(bytes: &[u8]) -> Result<Vec<Self>>;
}

// Encoding and decoding use rancor's `BoxedError`, which keeps the error a
// handle raised (`rancor::Error` drops it in release builds); the
// `rancor::Error` bounds stay so code written against them keeps working.
impl<T> Shareable for T
where
    T: Archive
        + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, BoxedError>>
        + Send
        + 'static,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, Strategy<Pool, rancor::Error>>
        + for<'a> CheckBytes<HighValidator<'a, BoxedError>>
        + Deserialize<T, Strategy<Pool, BoxedError>>,
{
    fn encode(&self) -> Result<AlignedVec> {
        rkyv::to_bytes::<BoxedError>(self).map_err(handle_error)
    }

    fn encode_into(&self, out: &mut AlignedVec) -> Result<()> {
        let mut buf = std::mem::take(out);
        buf.clear();
        *out = rkyv::api::high::to_bytes_in::<_, BoxedError>(self, buf).map_err(handle_error)?;
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        decode_aligned::<T>(bytes)
    }

    fn encode_many(items: &[Self]) -> Result<AlignedVec> {
        rkyv::to_bytes::<BoxedError>(&SliceAsVec(items)).map_err(handle_error)
    }

    fn decode_many(bytes: &[u8]) -> Result<Vec<Self>> {
        decode_aligned::<Vec<T>>(bytes)
    }
}

/// The check `#[derive(Shareable)]` writes for each field whose type names
/// no generic parameter: a type that cannot travel is an error at the field.
#[doc(hidden)]
pub fn field_travels<T: ShareableField>() {}

/// A field of a `#[derive(Shareable)]` type: what [`field_travels`] asks.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel to another process, so it cannot be a field of a \
               `#[derive(Shareable)]` type",
    label = "this field's type is not `Shareable`",
    note = "every field must be `Shareable` itself: a standard type, a handle of this \
            crate, or a struct or enum with `#[derive(multiproc::Shareable)]`; \
            references, `Rc`, raw pointers, closures and OS resources (`File`, \
            sockets) cannot travel, nor `PathBuf`, `OsString` or `SystemTime` (send a \
            `String`, bytes, or a `Duration` since `UNIX_EPOCH`)"
)]
pub trait ShareableField {}

// `do_not_recommend`: the error names this trait (with the message above)
// once, not each of `Shareable`'s bounds the field's type misses.
#[diagnostic::do_not_recommend]
impl<T: Shareable> ShareableField for T {}

/// A borrowed slice that archives exactly as a `Vec` of the same items.
struct SliceAsVec<'a, T>(&'a [T]);

impl<T: Archive> Archive for SliceAsVec<'_, T> {
    type Archived = ArchivedVec<T::Archived>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_slice(self.0, resolver, out);
    }
}

impl<T, S> Serialize<S> for SliceAsVec<'_, T>
where
    T: Serialize<S>,
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> std::result::Result<VecResolver, S::Error> {
        ArchivedVec::serialize_from_slice(self.0, serializer)
    }
}

fn decode_aligned<T>(bytes: &[u8]) -> Result<T>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>
        + Deserialize<T, Strategy<Pool, BoxedError>>,
{
    let align = std::mem::align_of::<T::Archived>().max(16);
    if (bytes.as_ptr() as usize).is_multiple_of(align) {
        rkyv::from_bytes::<T, BoxedError>(bytes).map_err(handle_error)
    } else {
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<T, BoxedError>(&aligned).map_err(handle_error)
    }
}

/// A codec error; one a handle raised while encoding or decoding (a proxy of
/// the wrong type, a manager that is gone or refused this process's key, a
/// process out of descriptors or memory) keeps its variant so callers can
/// match it.
fn handle_error(e: BoxedError) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(BoxedError::inner(&e));
    while let Some(s) = source {
        if let Some(ours) = s.downcast_ref::<Error>() {
            match ours {
                Error::TypeMismatch { expected, found } => {
                    return Error::TypeMismatch {
                        expected: expected.clone(),
                        found: found.clone(),
                    };
                }
                Error::ManagerGone(m) => return Error::ManagerGone(m.clone()),
                // A proxy for a manager whose key this process does not know
                // (or that refused it).
                Error::Authentication(m) => return Error::Authentication(m.clone()),
                // A proxy that may not go where it was put (a container of
                // another manager).
                Error::InvalidArgument(m) => return Error::InvalidArgument(m.clone()),
                // A process at its descriptor or memory limit: the caller
                // may back off and try again, as for any other call.
                Error::Io(io) if crate::sys::fd::is_exhaustion(io) => {
                    return Error::Io(io.raw_os_error().map_or_else(
                        || std::io::Error::new(io.kind(), io.to_string()),
                        std::io::Error::from_raw_os_error,
                    ));
                }
                _ => break,
            }
        }
        source = s.source();
    }
    Error::codec(e)
}

#[cfg(test)]
mod tests {
    use rkyv::rancor::{BoxedError, Source};

    use super::handle_error;
    use crate::error::Error;

    /// A handle that could not be encoded or opened because the process
    /// is out of descriptors (or memory) is `Io`, as any other call at that
    /// limit; another failure of a handle stays a codec error.
    #[test]
    fn a_handle_at_the_descriptor_limit_is_an_io_error() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM] {
            let raised = Error::Io(std::io::Error::from_raw_os_error(errno));
            match handle_error(BoxedError::new(raised)) {
                Error::Io(e) => assert_eq!(e.raw_os_error(), Some(errno)),
                other => panic!("errno {errno}: {other:?}"),
            }
        }
        let gone = Error::Io(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert!(matches!(
            handle_error(BoxedError::new(gone)),
            Error::Codec(_)
        ));
    }
}
