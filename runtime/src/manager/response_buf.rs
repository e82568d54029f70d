//! Where the server encodes a response.
//!
//! Most responses go into a reused buffer, which the transport then copies
//! into a channel slot or onto a socket. On a local channel a response too
//! large for its slot (a big stored value, say) is encoded straight into
//! the connection's overflow segment instead: the buffer would only be
//! copied there, and for a 1 MiB value that copy is a quarter of a `get`.

use rkyv::ser::{Positional, Writer};
use rkyv::util::AlignedVec;

use crate::manager::protocol::{RemoteError, Response, encode_response, encode_response_in};
use crate::shm::Segment;

/// Payloads from this size on are measured before they are encoded into
/// the buffer, which then gets exactly the room they need.
const LARGE: usize = 1 << 20;

/// Where [`ResponseBuf::emit_into_segment`] put a response.
enum Placed {
    /// In the lent segment.
    InSegment,
    /// Left to the buffer; its encoded length, if measured.
    ForBuffer(Option<usize>),
    /// Nowhere it could go, and why.
    Refused(String),
}

/// An encoded response: in `bytes`, or (see the module docs) in the
/// overflow segment lent by a local channel.
#[derive(Debug, Default)]
pub(crate) struct ResponseBuf {
    bytes: AlignedVec,
    spill: Option<Spill>,
}

/// A local channel's overflow segment, lent for one response.
#[derive(Debug)]
pub(crate) struct Spill {
    /// Responses longer than this (the channel's slot) go into `seg`.
    slot_size: usize,
    /// The segment, made or grown here when a response needs it.
    seg: Option<Segment>,
    /// The length of the response in `seg`, when this one went there.
    len: Option<usize>,
}

impl ResponseBuf {
    /// A buffer for a transport that sends only bytes (TCP, tests).
    pub(crate) fn new() -> ResponseBuf {
        ResponseBuf::default()
    }

    /// The length of the response.
    pub(crate) fn len(&self) -> usize {
        match self.spill.as_ref().and_then(|s| s.len) {
            Some(len) => len,
            None => self.bytes.len(),
        }
    }

    /// The encoded response, when it is in the buffer (always, unless a
    /// segment was lent).
    pub(crate) fn bytes(&self) -> &AlignedVec {
        &self.bytes
    }

    /// The encoded response, from a buffer that was lent no segment.
    pub(crate) fn into_bytes(self) -> AlignedVec {
        debug_assert!(self.spill.is_none(), "a lent segment was not taken back");
        self.bytes
    }

    /// The buffer, to encode a response into by hand: the response is then
    /// the buffer's, not the lent segment's.
    pub(crate) fn buffer(&mut self) -> &mut AlignedVec {
        if let Some(spill) = &mut self.spill {
            spill.len = None;
        }
        &mut self.bytes
    }

    /// Encodes `resp`, replacing any earlier response.
    ///
    /// A response that cannot be placed (no memory for it, in a segment or
    /// in the buffer) is replaced by the error saying so, for its caller
    /// alone: the server never dies of an allocation a client asked for.
    pub(crate) fn emit(&mut self, resp: &Response<'_>) {
        let known = match self.emit_into_segment(resp) {
            Placed::InSegment => return,
            Placed::Refused(why) => return self.emit_failed(why),
            Placed::ForBuffer(known) => known,
        };
        let mut buf = reset(std::mem::take(self.buffer()));
        if payload_len(resp) >= LARGE {
            // Room for exactly this response, if the process has it: a
            // growing buffer would double (and an allocation that fails
            // aborts the process).
            let len = match known {
                Some(len) => Ok(len),
                None => encode_response_in(resp, Count(0)).map(|c| c.0),
            };
            let room = len.map_err(|e| e.to_string()).and_then(|len| {
                Vec::<u8>::new()
                    .try_reserve_exact(len)
                    .map(|()| len)
                    .map_err(|e| format!("{len} bytes: {e}"))
            });
            match room {
                Ok(len) => buf.reserve_exact(len),
                Err(why) => {
                    self.bytes = buf;
                    return self.emit_failed(why);
                }
            }
        }
        self.bytes = match encode_response(resp, buf) {
            Ok(b) => b,
            Err(e) => {
                let failed = Response::Error(RemoteError::Failed(format!(
                    "cannot encode the response: {e}"
                )));
                // An error response always encodes; an empty buffer is read as malformed.
                encode_response(&failed, AlignedVec::new()).unwrap_or_default()
            }
        };
    }

    /// Answers that the response could not be sent, and why.
    fn emit_failed(&mut self, why: String) {
        let failed = Response::Error(RemoteError::Failed(format!(
            "cannot send the response: {why}"
        )));
        let buf = reset(std::mem::take(self.buffer()));
        self.bytes = encode_response(&failed, buf).unwrap_or_default();
    }

    /// Encodes `resp` into the lent segment if it is too large for a slot
    /// (making or growing the segment to fit). Otherwise it is the
    /// buffer's (small, or no segment lent: a TCP connection), with its
    /// length if measured; or, if no segment could be made for it, refused
    /// (a buffer could not carry it over a local channel either).
    fn emit_into_segment(&mut self, resp: &Response<'_>) -> Placed {
        let Some(spill) = &mut self.spill else {
            return Placed::ForBuffer(None);
        };
        spill.len = None;
        // Only a response carrying a large value can outgrow a slot: the
        // rest skip the measuring pass.
        if payload_len(resp) < spill.slot_size / 2 {
            return Placed::ForBuffer(None);
        }
        let len = match encode_response_in(resp, Count(0)) {
            Ok(counted) => counted.0,
            Err(e) => return Placed::Refused(e.to_string()),
        };
        if len <= spill.slot_size {
            return Placed::ForBuffer(Some(len));
        }
        if spill.seg.as_ref().is_none_or(|s| s.len() < len) {
            // Drop the old one first: its memory may be needed for the new one.
            spill.seg = None;
            match crate::manager::channel::grown_segment(len) {
                Ok(seg) => spill.seg = Some(seg),
                Err(e) => return Placed::Refused(e.to_string()),
            }
        }
        let Some(seg) = &spill.seg else {
            return Placed::Refused("no overflow segment".into());
        };
        let writer = SegmentWriter {
            start: seg.as_ptr(),
            cap: seg.len(),
            pos: 0,
        };
        match encode_response_in(resp, writer) {
            Ok(w) if w.pos == len => {
                spill.len = Some(len);
                self.bytes.clear();
                Placed::InSegment
            }
            Ok(_) => Placed::Refused("the response changed length while encoded".into()),
            Err(e) => Placed::Refused(e.to_string()),
        }
    }

    /// Lends a local channel's overflow segment (`None` if it has none
    /// kept) for the next response.
    pub(crate) fn lend(&mut self, slot_size: usize, seg: Option<Segment>) {
        self.spill = Some(Spill {
            slot_size,
            seg,
            len: None,
        });
    }

    /// Takes the lent segment back: the segment, and the length of the
    /// response in it if the response went there.
    pub(crate) fn take_back(&mut self) -> (Option<Segment>, Option<usize>) {
        match self.spill.take() {
            Some(s) => (s.seg, s.len),
            None => (None, None),
        }
    }
}

fn reset(mut buf: AlignedVec) -> AlignedVec {
    buf.clear();
    buf
}

/// The bytes of stored values a response carries.
fn payload_len(resp: &Response<'_>) -> usize {
    match resp {
        Response::Value { bytes, .. } => bytes.map_or(0, <[u8]>::len),
        Response::Swapped { current, .. } => current.map_or(0, <[u8]>::len),
        Response::Many { items, .. } => items.iter().map(|i| i.len()).sum(),
        _ => 0,
    }
}

/// A writer that only counts: how long an encoding will be.
struct Count(usize);

impl Positional for Count {
    fn pos(&self) -> usize {
        self.0
    }
}

impl<E> Writer<E> for Count {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.0 += bytes.len();
        Ok(())
    }
}

/// A writer into a segment of `cap` bytes at `start`. Writes go through
/// the pointer (no reference to memory another process maps).
struct SegmentWriter {
    start: *mut u8,
    cap: usize,
    pos: usize,
}

impl Positional for SegmentWriter {
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E: rkyv::rancor::Source> Writer<E> for SegmentWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        let end = self.pos.checked_add(bytes.len()).filter(|&e| e <= self.cap);
        let Some(end) = end else {
            return Err(E::new(SegmentFull));
        };
        // SAFETY: `pos..end` lies within the segment's `cap` bytes, which
        // stay mapped while the writer lives (the caller holds the segment).
        // The client reads them only once the response is published.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.start.add(self.pos), bytes.len())
        };
        self.pos = end;
        Ok(())
    }
}

/// The segment was smaller than the measured encoding (never expected).
#[derive(Debug)]
struct SegmentFull;

impl std::fmt::Display for SegmentFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the response outgrew its measured length")
    }
}

impl std::error::Error for SegmentFull {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::protocol::{ArchivedResponse, access_response};

    fn value(bytes: &[u8]) -> Response<'_> {
        Response::Value {
            bytes: Some(bytes),
            refs: Vec::new(),
        }
    }

    /// The response as the client sees it: copied out of wherever it is.
    fn sent(buf: &mut ResponseBuf, slot_size: usize) -> (AlignedVec, Option<Segment>) {
        let (seg, len) = buf.take_back();
        let mut copy = AlignedVec::new();
        match len {
            Some(len) => {
                let seg = seg.as_ref().expect("a spilled response has its segment");
                // SAFETY: the segment holds `len` bytes of the response.
                copy.extend_from_slice(unsafe { std::slice::from_raw_parts(seg.as_ptr(), len) });
                assert!(len > slot_size);
            }
            None => copy.extend_from_slice(buf.bytes()),
        }
        (copy, seg)
    }

    fn value_of(bytes: &AlignedVec) -> Vec<u8> {
        match access_response(bytes).unwrap() {
            ArchivedResponse::Value { bytes, .. } => bytes.as_ref().unwrap().to_vec(),
            _ => panic!("not a value"),
        }
    }

    #[test]
    fn a_large_response_goes_into_the_lent_segment_and_reads_back_alike() {
        let slot = 4096;
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut buf = ResponseBuf::new();

        buf.lend(slot, None);
        buf.emit(&value(&big));
        assert!(buf.bytes().is_empty());
        assert!(buf.len() > big.len());
        let (copy, seg) = sent(&mut buf, slot);
        assert_eq!(value_of(&copy), big);
        let seg = seg.expect("a segment was made for the large response");
        let first = seg.id();

        // A smaller large response reuses it; a small one stays in the buffer.
        buf.lend(slot, Some(seg));
        buf.emit(&value(&big[..50_000]));
        let (copy, seg) = sent(&mut buf, slot);
        assert_eq!(value_of(&copy), &big[..50_000]);
        assert_eq!(seg.as_ref().map(Segment::id), Some(first));

        buf.lend(slot, seg);
        buf.emit(&value(b"small"));
        assert_eq!(buf.len(), buf.bytes().len());
        let (copy, seg) = sent(&mut buf, slot);
        assert_eq!(value_of(&copy), b"small");
        assert_eq!(seg.as_ref().map(Segment::id), Some(first));
    }

    #[test]
    fn a_later_response_replaces_one_in_the_segment() {
        let slot = 4096;
        let big = vec![3u8; 20_000];
        let mut buf = ResponseBuf::new();
        buf.lend(slot, None);
        buf.emit(&value(&big));
        // Found too large after all, say: the error answers instead.
        buf.emit(&Response::Error(
            crate::manager::protocol::RemoteError::NotFound,
        ));
        let (copy, _) = sent(&mut buf, slot);
        assert!(matches!(
            access_response(&copy).unwrap(),
            ArchivedResponse::Error(_)
        ));
    }

    #[test]
    fn without_a_lent_segment_everything_stays_in_the_buffer() {
        let big = vec![9u8; 200_000];
        let mut buf = ResponseBuf::new();
        buf.emit(&value(&big));
        assert_eq!(buf.len(), buf.bytes().len());
        assert_eq!(value_of(buf.bytes()), big);
    }
}
