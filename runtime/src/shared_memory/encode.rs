//! Named segments travel by name, as Python pickles them: a `SharedMemory`,
//! `ShareableList` or `NamedArray` passed to a process (as an argument, in a
//! queue or pipe message) is attached by name where it is decoded.

use std::marker::PhantomData;

use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::{Archive, Deserialize, Place, Portable, Serialize};

use super::array::NamedArray;
use super::list::ShareableList;
use super::segment::SharedMemory;
use crate::error::Result;
use crate::shm::ShmSafe;

/// A value found again by its segment's name.
trait ByName: Sized {
    fn segment_name(&self) -> &str;
    fn attach_by_name(name: &str) -> Result<Self>;
}

impl ByName for SharedMemory {
    fn segment_name(&self) -> &str {
        self.name()
    }
    fn attach_by_name(name: &str) -> Result<Self> {
        SharedMemory::attach(name)
    }
}

impl ByName for ShareableList {
    fn segment_name(&self) -> &str {
        self.shm().name()
    }
    fn attach_by_name(name: &str) -> Result<Self> {
        ShareableList::attach(name)
    }
}

impl<T: ShmSafe> ByName for NamedArray<T> {
    fn segment_name(&self) -> &str {
        self.shm().name()
    }
    fn attach_by_name(name: &str) -> Result<Self> {
        NamedArray::attach(name)
    }
}

/// The archived form of a named segment handle: its name.
#[repr(transparent)]
pub struct ArchivedByName<H> {
    name: ArchivedString,
    _kind: PhantomData<fn() -> H>,
}

// SAFETY: `ArchivedByName` is `repr(transparent)` over `ArchivedString`,
// which is `Portable`; the marker adds no bytes.
unsafe impl<H> Portable for ArchivedByName<H> {}

// SAFETY: the layout is exactly an `ArchivedString` (repr(transparent)), so
// checking that is checking the whole value.
unsafe impl<H, C: Fallible + ?Sized> CheckBytes<C> for ArchivedByName<H>
where
    ArchivedString: CheckBytes<C>,
{
    unsafe fn check_bytes(value: *const Self, context: &mut C) -> Result<(), C::Error> {
        // SAFETY: the caller guarantees `value` is aligned and points to enough
        // initialized bytes for `Self`, hence for the identical inner type.
        unsafe { ArchivedString::check_bytes(value.cast(), context) }
    }
}

macro_rules! by_name {
    (impl<$($g:ident $(: $b:path)?),*> for $ty:ty) => {
        impl<$($g $(: $b)?),*> Archive for $ty {
            type Archived = ArchivedByName<$ty>;
            type Resolver = StringResolver;
            fn resolve(&self, resolver: StringResolver, out: Place<Self::Archived>) {
                // SAFETY: `ArchivedByName` is repr(transparent) over `ArchivedString`.
                let out = unsafe { out.cast_unchecked::<ArchivedString>() };
                ArchivedString::resolve_from_str(self.segment_name(), resolver, out);
            }
        }
        impl<$($g $(: $b)?,)* S> Serialize<S> for $ty
        where
            S: Fallible + Writer + Allocator + ?Sized,
            S::Error: Source,
        {
            fn serialize(&self, serializer: &mut S) -> std::result::Result<StringResolver, S::Error> {
                ArchivedString::serialize_from_str(self.segment_name(), serializer)
            }
        }
        impl<$($g $(: $b)?,)* D> Deserialize<$ty, D> for ArchivedByName<$ty>
        where
            D: Fallible + ?Sized,
            D::Error: Source,
        {
            fn deserialize(&self, _: &mut D) -> std::result::Result<$ty, D::Error> {
                <$ty as ByName>::attach_by_name(self.name.as_str()).map_err(D::Error::new)
            }
        }
    };
}

by_name!(impl<> for SharedMemory);
by_name!(impl<> for ShareableList);
by_name!(impl<T: ShmSafe> for NamedArray<T>);
