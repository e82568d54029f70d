//! Length-prefixed frames over any byte stream.
//!
//! A frame is an 8-byte little-endian `u64` length followed by that many
//! payload bytes. Eight bytes rather than four so that no configuration of the
//! maximum frame size ever needs a second format; the cost is four bytes per
//! message.
//!
//! [`write_frame`] writes one frame with as few calls as the stream allows
//! (header and payload go out together through `write_vectored`).
//! [`FrameReader`] reads frames back: it keeps what it has read in a buffer,
//! so a read that stops early (a timeout, a non-blocking stream that has no
//! more data yet) loses nothing and the next call resumes the same frame.
//! Nothing a peer sends can make it allocate more than the documented bound
//! ([`FrameReader::capacity_bound`]) or panic: an oversized length prefix is
//! rejected from the header alone, before any payload is read. By default
//! that ends the stream (every later read fails); a reader told to
//! [skip oversized frames](FrameReader::set_skip_oversized) instead reads
//! the payload and throws it away, a chunk at a time, then reports
//! [`Error::MessageTooLarge`] once and goes on with the next frame.

use std::io::{IoSlice, Read, Write};

use crate::error::{Error, Result};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;

/// The default largest payload a [`FrameReader`] accepts: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// How much a reader asks the stream for when it has no better idea, and the
/// step its buffer grows by for small frames.
const CHUNK: usize = 16 << 10;

/// A buffer that grew past this for a large frame is given back afterwards.
const KEEP_CAPACITY: usize = 4 * CHUNK;

/// Writes `payload` as one frame (header and payload, retried until all is written).
///
/// A stream error is returned as is, except that a peer that went away
/// (broken pipe, reset) is [`Error::Closed`].
pub fn write_frame<W: Write + ?Sized>(w: &mut W, payload: &[u8]) -> Result<()> {
    let header = (payload.len() as u64).to_le_bytes();
    let mut parts = [IoSlice::new(&header), IoSlice::new(payload)];
    let mut rest: &mut [IoSlice<'_>] = &mut parts;
    // Skip an empty payload slice so the loop ends when the header is out.
    if payload.is_empty() {
        rest = &mut rest[..1];
    }
    while !rest.is_empty() {
        match w.write_vectored(rest) {
            Ok(0) => {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "the stream accepted no bytes",
                )));
            }
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(e)),
        }
    }
    Ok(())
}

/// Maps a stream error: a peer that went away is [`Error::Closed`].
pub(crate) fn stream_error(e: std::io::Error) -> Error {
    use std::io::ErrorKind::*;
    match e.kind() {
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof => Error::Closed,
        _ => Error::Io(e),
    }
}

/// Reads frames from a stream, resuming partial frames across calls.
///
/// Keep one `FrameReader` for the whole life of a stream: it may have read
/// bytes of the next frames already.
#[derive(Debug)]
pub struct FrameReader {
    max_frame: usize,
    /// Initialized storage; the unread bytes are `storage[start..end]`, and
    /// `start` is always at a frame boundary.
    storage: Vec<u8>,
    start: usize,
    end: usize,
    /// Set once the stream is out of sync (oversized or truncated frame):
    /// every later call reports the same error.
    failed: Option<String>,
    /// Whether an oversized frame is read and thrown away instead of
    /// ending the stream.
    skip_oversized: bool,
    /// The oversized frame being thrown away now.
    discarding: Option<Discard>,
}

/// An oversized frame being read and thrown away.
#[derive(Debug, Clone, Copy)]
struct Discard {
    /// Its payload's length.
    size: u64,
    /// Payload bytes not read yet.
    left: u64,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameReader {
    /// A reader that accepts payloads of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> FrameReader {
        FrameReader {
            max_frame,
            storage: Vec::new(),
            start: 0,
            end: 0,
            failed: None,
            skip_oversized: false,
            discarding: None,
        }
    }

    /// Whether a frame longer than the maximum is read and thrown away
    /// (reported once as [`Error::MessageTooLarge`], the stream staying in
    /// step) instead of ending the stream with [`Error::Protocol`].
    ///
    /// Memory stays within [`FrameReader::capacity_bound`] either way: the
    /// payload is dropped a chunk at a time as it arrives.
    pub fn set_skip_oversized(&mut self, skip: bool) {
        self.skip_oversized = skip;
    }

    /// The largest payload this reader accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the largest payload this reader accepts (from the next frame on).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Bytes read from the stream and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The bytes this reader has allocated for its buffer.
    pub fn capacity(&self) -> usize {
        self.storage.capacity()
    }

    /// The most this reader ever allocates for its buffer, whatever the stream
    /// holds: one largest frame, or two read chunks (16 KiB each, or one
    /// largest frame if that is smaller).
    pub fn capacity_bound(&self) -> usize {
        HEADER_LEN
            .saturating_add(self.max_frame)
            .max(2 * self.chunk())
    }

    /// How much a read asks for when it has no better idea: small readers
    /// (a handshake's) stay small.
    fn chunk(&self) -> usize {
        CHUNK.min(HEADER_LEN.saturating_add(self.max_frame))
    }

    /// The payload length of the next frame, once its header is buffered.
    pub fn next_len(&self) -> Option<u64> {
        if self.buffered() < HEADER_LEN {
            return None;
        }
        let header = self.storage.get(self.start..self.start + HEADER_LEN)?;
        let mut bytes = [0u8; HEADER_LEN];
        bytes.copy_from_slice(header);
        Some(u64::from_le_bytes(bytes))
    }

    /// Whether part of a frame has arrived and the rest has not: some bytes
    /// are buffered, or an oversized frame is being thrown away.
    pub fn inside_frame(&self) -> bool {
        self.buffered() > 0 || self.discarding.is_some()
    }

    /// Whether a call to [`FrameReader::next_buffered`] would return at once
    /// (with a frame or an error) without reading.
    pub fn is_ready(&self) -> bool {
        if self.failed.is_some() {
            return true;
        }
        if let Some(d) = self.discarding {
            return self.buffered() as u64 >= d.left;
        }
        match self.next_len() {
            None => false,
            Some(len) => {
                let whole = (self.buffered() - HEADER_LEN) as u64 >= len;
                whole || (len > self.max_frame as u64 && !self.skip_oversized)
            }
        }
    }

    /// Takes the next frame if it is completely buffered, without reading.
    ///
    /// A length prefix over the maximum is [`Error::Protocol`], and so is every
    /// call after it: the stream can no longer be followed. (With
    /// [`FrameReader::set_skip_oversized`], the frame is thrown away as it
    /// arrives instead, and the call after its last byte is
    /// [`Error::MessageTooLarge`].)
    pub fn next_buffered(&mut self) -> Result<Option<Vec<u8>>> {
        self.next_buffered_max(usize::MAX)
    }

    /// Like [`FrameReader::next_buffered`], but a frame longer than `limit`
    /// is rejected with [`Error::Protocol`] and left in place (a later call
    /// with a larger limit can still take it).
    pub fn next_buffered_max(&mut self, limit: usize) -> Result<Option<Vec<u8>>> {
        self.check_failed()?;
        if self.discarding.is_some() {
            return self.discard_buffered();
        }
        let Some(len) = self.next_len() else {
            return Ok(None);
        };
        if len > self.max_frame as u64 {
            if self.skip_oversized {
                self.start += HEADER_LEN;
                self.discarding = Some(Discard {
                    size: len,
                    left: len,
                });
                return self.discard_buffered();
            }
            return Err(self.fail(format!(
                "frame of {len} bytes exceeds the maximum of {} bytes",
                self.max_frame
            )));
        }
        // `len <= max_frame`, so it fits a usize.
        let len = len as usize;
        if len > limit {
            return Err(Error::Protocol(format!(
                "message of {len} bytes exceeds the limit of {limit} bytes"
            )));
        }
        if self.buffered() - HEADER_LEN < len {
            return Ok(None);
        }
        let body = self.start + HEADER_LEN;
        let frame = self.storage[body..body + len].to_vec();
        self.start = body + len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        self.shrink();
        Ok(Some(frame))
    }

    /// Drops what is buffered of the oversized frame being thrown away;
    /// once all of it went, reports it.
    fn discard_buffered(&mut self) -> Result<Option<Vec<u8>>> {
        let buffered = self.buffered() as u64;
        let Some(d) = self.discarding.as_mut() else {
            return Ok(None);
        };
        let n = d.left.min(buffered);
        d.left -= n;
        // `n <= buffered()`, a usize.
        self.start += n as usize;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if d.left > 0 {
            return Ok(None);
        }
        let size = d.size;
        self.discarding = None;
        self.shrink();
        Err(Error::MessageTooLarge {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit: self.max_frame,
        })
    }

    /// Reads once from `r` into the buffer (retrying on `EINTR`), unless a
    /// whole frame is buffered already (then it does nothing).
    ///
    /// End of stream exactly at a frame boundary is [`Error::Closed`]; in the
    /// middle of a frame it is [`Error::Protocol`] (truncated). Other stream
    /// errors are returned as they are ([`Error::Io`]); in particular a
    /// non-blocking or timed-out stream reports `WouldBlock` / `TimedOut`
    /// there, and nothing read so far is lost.
    pub fn fill_from<R: Read + ?Sized>(&mut self, r: &mut R) -> Result<()> {
        self.check_failed()?;
        if self.is_ready() {
            return Ok(());
        }
        let want = self.read_size();
        self.make_room(want);
        let n = loop {
            match r.read(&mut self.storage[self.end..self.end + want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(stream_error(e)),
            }
        };
        if n == 0 {
            return if self.buffered() == 0 && self.discarding.is_none() {
                Err(Error::Closed)
            } else {
                Err(self.fail(format!(
                    "stream ended inside a frame ({} bytes of it received)",
                    self.buffered()
                )))
            };
        }
        // A misbehaving `Read` might claim more than it was given.
        self.end += n.min(want);
        Ok(())
    }

    /// Reads until a whole frame is buffered, and returns its payload.
    ///
    /// Errors as [`FrameReader::fill_from`] and [`FrameReader::next_buffered`].
    /// A non-blocking or timed-out stream's `WouldBlock` / `TimedOut` comes
    /// back as [`Error::Io`] with that kind; call again to resume.
    pub fn read_frame<R: Read + ?Sized>(&mut self, r: &mut R) -> Result<Vec<u8>> {
        loop {
            if let Some(frame) = self.next_buffered()? {
                return Ok(frame);
            }
            self.fill_from(r)?;
        }
    }

    /// How many bytes the next read asks for.
    fn read_size(&self) -> usize {
        if self.discarding.is_some() {
            // Thrown away as it comes: one chunk at a time.
            return self.chunk();
        }
        let buffered = self.buffered();
        match self.next_len() {
            // A large frame: grow geometrically with what has arrived, never
            // past the frame's end, so a length prefix alone allocates nothing.
            Some(len)
                if len <= self.max_frame as u64
                    && HEADER_LEN as u64 + len > self.chunk() as u64 =>
            {
                let missing = HEADER_LEN
                    .saturating_add(len as usize)
                    .saturating_sub(buffered);
                missing.min(buffered.max(self.chunk())).max(1)
            }
            // Headers and small frames: one chunk, which may hold several frames.
            _ => self.chunk(),
        }
    }

    /// Makes `storage[end..end + want]` available.
    fn make_room(&mut self, want: usize) {
        if self.storage.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.storage.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let needed = self.end + want;
        if self.storage.len() < needed {
            self.storage.reserve_exact(needed - self.storage.len());
            self.storage.resize(needed, 0);
        }
    }

    /// Gives back a buffer that grew for a large frame once it is mostly empty.
    fn shrink(&mut self) {
        if self.storage.len() > KEEP_CAPACITY && self.buffered() <= CHUNK {
            let mut small = vec![0u8; self.chunk().max(self.buffered())];
            small[..self.buffered()].copy_from_slice(&self.storage[self.start..self.end]);
            self.end = self.buffered();
            self.start = 0;
            self.storage = small;
        }
    }

    fn check_failed(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(Error::Protocol(why.clone())),
            None => Ok(()),
        }
    }

    fn fail(&mut self, why: String) -> Error {
        self.failed = Some(why.clone());
        // The rest of the stream is meaningless now; let the memory go.
        self.discarding = None;
        self.storage = Vec::new();
        self.start = 0;
        self.end = 0;
        Error::Protocol(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            write_frame(&mut out, p).unwrap();
        }
        out
    }

    #[test]
    fn frames_round_trip_through_a_byte_stream() {
        let big = vec![7u8; 3 * CHUNK + 5];
        let bytes = framed(&[b"", b"hello", &big]);
        assert_eq!(&bytes[..8], &0u64.to_le_bytes());
        let mut r = FrameReader::new(1 << 20);
        let mut s = &bytes[..];
        assert_eq!(r.read_frame(&mut s).unwrap(), b"");
        assert_eq!(r.read_frame(&mut s).unwrap(), b"hello");
        assert_eq!(r.read_frame(&mut s).unwrap(), big);
        assert!(matches!(r.read_frame(&mut s), Err(Error::Closed)));
    }

    #[test]
    fn an_oversized_prefix_is_rejected_from_the_header_alone() {
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let mut r = FrameReader::new(1024);
        let mut s = &bytes[..];
        assert!(matches!(r.read_frame(&mut s), Err(Error::Protocol(_))));
        assert!(r.capacity() <= r.capacity_bound());
        // The stream is out of sync: it stays an error.
        assert!(matches!(r.read_frame(&mut s), Err(Error::Protocol(_))));
    }

    #[test]
    fn truncation_is_a_protocol_error_and_a_clean_end_is_closed() {
        let bytes = framed(&[b"abcdef"]);
        for cut in 1..bytes.len() {
            let mut r = FrameReader::default();
            let mut s = &bytes[..cut];
            assert!(
                matches!(r.read_frame(&mut s), Err(Error::Protocol(_))),
                "cut at {cut}"
            );
        }
        let mut r = FrameReader::default();
        assert!(matches!(r.read_frame(&mut &[][..]), Err(Error::Closed)));
    }

    #[test]
    fn a_limit_rejects_without_consuming() {
        let bytes = framed(&[b"0123456789"]);
        let mut r = FrameReader::default();
        r.fill_from(&mut &bytes[..]).unwrap();
        assert!(matches!(r.next_buffered_max(4), Err(Error::Protocol(_))));
        assert_eq!(r.next_buffered_max(10).unwrap().unwrap(), b"0123456789");
    }

    #[test]
    fn a_skipping_reader_throws_an_oversized_frame_away_and_stays_in_step() {
        let big = vec![9u8; 5 * CHUNK + 3];
        let bytes = framed(&[b"before", &big, b"after", &big[..1025]]);
        let mut r = FrameReader::new(1024);
        r.set_skip_oversized(true);
        let mut s = Trickle {
            data: &bytes,
            step: 1000,
            blocked: false,
        };
        let mut got = Vec::new();
        while got.len() < 4 {
            match r.read_frame(&mut s) {
                Ok(f) => got.push(Ok(f)),
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(Error::MessageTooLarge { size, limit }) => got.push(Err((size, limit))),
                Err(e) => panic!("{e}"),
            }
            assert!(r.capacity() <= r.capacity_bound());
        }
        assert_eq!(
            got,
            [
                Ok(b"before".to_vec()),
                Err((big.len(), 1024)),
                Ok(b"after".to_vec()),
                Err((1025, 1024)),
            ]
        );
        assert!(matches!(r.read_frame(&mut s), Err(Error::Closed)));
    }

    #[test]
    fn a_stream_that_ends_inside_a_skipped_frame_is_truncated() {
        let mut bytes = 100_000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 10]);
        let mut r = FrameReader::new(16);
        r.set_skip_oversized(true);
        assert!(matches!(
            r.read_frame(&mut &bytes[..]),
            Err(Error::Protocol(_))
        ));
    }

    /// A stream that hands out its bytes a few at a time, with a `WouldBlock`
    /// between pieces, like a socket read with a timeout.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        blocked: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.blocked = !self.blocked;
            if self.blocked && !self.data.is_empty() {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn an_interrupted_read_resumes_the_same_frame() {
        let bytes = framed(&[b"first frame", b"second"]);
        let mut s = Trickle {
            data: &bytes,
            step: 3,
            blocked: false,
        };
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        let mut would_block = 0;
        while got.len() < 2 {
            match r.read_frame(&mut s) {
                Ok(f) => got.push(f),
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => would_block += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(would_block > 3);
        assert_eq!(got, [b"first frame".to_vec(), b"second".to_vec()]);
    }

    #[test]
    fn a_large_frame_does_not_keep_its_buffer() {
        let big = vec![1u8; 8 * CHUNK];
        let bytes = framed(&[&big, b"x"]);
        let mut r = FrameReader::default();
        let mut s = &bytes[..];
        assert_eq!(r.read_frame(&mut s).unwrap().len(), big.len());
        assert!(r.capacity() <= KEEP_CAPACITY);
        assert_eq!(r.read_frame(&mut s).unwrap(), b"x");
    }
}
