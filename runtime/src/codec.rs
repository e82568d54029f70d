//! How user data travels: `rkyv` encoding behind one trait.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::de::Pool;
use rkyv::rancor::{self, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{Error, Result};

/// Types that can be sent to another process: arguments, results, messages.
///
/// Implemented for every type that derives rkyv's `Archive`, `Serialize` and
/// `Deserialize` (with checked access), and is `Send + 'static`: the standard
/// types (integers, `String`, `Vec`, `Option`, tuples, maps) and the handles
/// of this crate (`Value`, `Array`, `Lock`, `Queue`, …). Encoded bytes are
/// always validated before use, so a corrupt message is an error, not UB.
///
/// ```
/// use multiproc::Shareable;
/// let bytes = (7u32, String::from("hi")).encode().unwrap();
/// let back = <(u32, String)>::decode(&bytes).unwrap();
/// assert_eq!(back, (7, "hi".to_string()));
/// ```
pub trait Shareable: Sized + Send + 'static {
    /// Encodes `self` into bytes.
    fn encode(&self) -> Result<AlignedVec>;
    /// Encodes `self` into `out`, replacing its contents but reusing its allocation.
    fn encode_into(&self, out: &mut AlignedVec) -> Result<()>;
    /// Checks and decodes bytes made by [`Shareable::encode`].
    fn decode(bytes: &[u8]) -> Result<Self>;
}

impl<T> Shareable for T
where
    T: Archive
        + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + Send
        + 'static,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, Strategy<Pool, rancor::Error>>,
{
    fn encode(&self) -> Result<AlignedVec> {
        rkyv::to_bytes::<rancor::Error>(self).map_err(Error::codec)
    }

    fn encode_into(&self, out: &mut AlignedVec) -> Result<()> {
        let mut buf = std::mem::take(out);
        buf.clear();
        *out = rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, buf).map_err(Error::codec)?;
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let align = std::mem::align_of::<T::Archived>().max(16);
        if (bytes.as_ptr() as usize).is_multiple_of(align) {
            rkyv::from_bytes::<T, rancor::Error>(bytes).map_err(Error::codec)
        } else {
            let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
            aligned.extend_from_slice(bytes);
            rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(Error::codec)
        }
    }
}
