//! CPython's message framing over TCP (`multiprocessing.connection`): a
//! 4-byte big-endian signed length, then the payload; a length of -1 means
//! an 8-byte big-endian length follows (messages over 2 GiB).
//!
//! A message longer than the configured maximum is refused from its header
//! alone, before anything is allocated for it.

use std::io::{BufReader, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::py::auth::PyFrames;

/// How much is read from the socket at a time.
const READ_BUFFER: usize = 64 << 10;

/// The header of a message of `len` bytes.
pub fn header(len: usize) -> ([u8; 12], usize) {
    let mut h = [0u8; 12];
    match i32::try_from(len) {
        Ok(short) => {
            h[..4].copy_from_slice(&short.to_be_bytes());
            (h, 4)
        }
        Err(_) => {
            h[..4].copy_from_slice(&(-1i32).to_be_bytes());
            h[4..].copy_from_slice(&(len as u64).to_be_bytes());
            (h, 12)
        }
    }
}

/// Reads one message's payload from `r`, refusing one over `limit` bytes
/// from its header.
pub fn read_message(r: &mut impl Read, limit: usize) -> Result<Vec<u8>> {
    let mut short = [0u8; 4];
    r.read_exact(&mut short).map_err(stream_error)?;
    let len = match i32::from_be_bytes(short) {
        -1 => {
            let mut long = [0u8; 8];
            r.read_exact(&mut long).map_err(stream_error)?;
            u64::from_be_bytes(long)
        }
        n if n < 0 => {
            return Err(Error::Protocol(format!("a message of negative length {n}")));
        }
        n => n as u64,
    };
    if len > limit as u64 {
        return Err(Error::Protocol(format!(
            "a message of {len} bytes (the limit is {limit})"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).map_err(stream_error)?;
    Ok(payload)
}

/// Writes one message (header and payload in as few writes as the socket allows).
pub fn write_message(w: &mut impl Write, payload: &[u8]) -> Result<()> {
    let (h, n) = header(payload.len());
    let mut parts = [IoSlice::new(&h[..n]), IoSlice::new(payload)];
    let mut rest: &mut [IoSlice<'_>] = &mut parts;
    if payload.is_empty() {
        rest = &mut rest[..1];
    }
    while !rest.is_empty() {
        match w.write_vectored(rest) {
            Ok(0) => return Err(Error::Closed),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(e)),
        }
    }
    Ok(())
}

fn stream_error(e: std::io::Error) -> Error {
    use std::io::ErrorKind::*;
    match e.kind() {
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof => Error::Closed,
        WouldBlock | TimedOut => Error::Timeout(Duration::ZERO),
        _ => Error::Io(e),
    }
}

/// A connection to a CPython client.
pub(crate) struct PyConn {
    reader: BufReader<TcpStream>,
}

impl PyConn {
    pub fn new(stream: TcpStream) -> PyConn {
        PyConn {
            reader: BufReader::with_capacity(READ_BUFFER, stream),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.reader.get_ref().as_fd()
    }

    /// Receives one message of at most `limit` bytes, waiting as long as it takes.
    pub fn recv(&mut self, limit: usize) -> Result<Vec<u8>> {
        // A client that writes twice before reading (its `#WELCOME#`, then
        // its request) would otherwise wait for our delayed ACK.
        let _ = crate::sys::socket::set_tcp_quickack(self.fd());
        read_message(&mut self.reader, limit)
    }

    pub fn send(&mut self, payload: &[u8]) -> Result<()> {
        write_message(self.reader.get_mut(), payload)
    }

    /// Reads block until `deadline` (or forever for [`Deadline::Never`]).
    pub fn set_deadline(&mut self, deadline: Deadline) -> Result<()> {
        let timeout = match deadline.remaining() {
            None => None,
            Some(d) if d.is_zero() => return Err(deadline.timeout_error()),
            Some(d) => Some(d),
        };
        self.reader.get_ref().set_read_timeout(timeout)?;
        Ok(())
    }
}

impl PyFrames for PyConn {
    fn send_message(&mut self, payload: &[u8]) -> Result<()> {
        self.send(payload)
    }

    fn recv_message(&mut self, limit: usize, deadline: Deadline) -> Result<Vec<u8>> {
        self.set_deadline(deadline)?;
        self.recv(limit).map_err(|e| match e {
            Error::Timeout(_) => deadline.timeout_error(),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_in_both_header_forms() {
        let mut out = Vec::new();
        write_message(&mut out, b"hello").unwrap();
        assert_eq!(&out[..4], &5i32.to_be_bytes());
        assert_eq!(read_message(&mut &out[..], 100).unwrap(), b"hello");
        // The long form (as CPython writes for messages over 2 GiB).
        let mut long = (-1i32).to_be_bytes().to_vec();
        long.extend_from_slice(&3u64.to_be_bytes());
        long.extend_from_slice(b"abc");
        assert_eq!(read_message(&mut &long[..], 100).unwrap(), b"abc");
        assert_eq!(header(usize::MAX).1, 12);
    }

    #[test]
    fn oversized_negative_and_truncated_messages_are_refused() {
        let mut huge = (-1i32).to_be_bytes().to_vec();
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            read_message(&mut &huge[..], 1 << 20),
            Err(Error::Protocol(_))
        ));
        let big = i32::MAX.to_be_bytes();
        assert!(matches!(
            read_message(&mut &big[..], 1 << 20),
            Err(Error::Protocol(_))
        ));
        let negative = (-5i32).to_be_bytes();
        assert!(matches!(
            read_message(&mut &negative[..], 10),
            Err(Error::Protocol(_))
        ));
        let mut cut = 10i32.to_be_bytes().to_vec();
        cut.extend_from_slice(b"abc");
        assert!(matches!(
            read_message(&mut &cut[..], 100),
            Err(Error::Closed)
        ));
        assert!(matches!(
            read_message(&mut &[0u8, 0][..], 100),
            Err(Error::Closed)
        ));
    }
}
