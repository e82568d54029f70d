//! The server's side of CPython's authkey handshake against a client whose
//! messages are the fuzzer's input: it must never authenticate (the input
//! cannot know the HMAC of our random challenge), panic or wait.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use multiproc::deadline::Deadline;
use multiproc::py::auth::{PyFrames, server_handshake};
use multiproc::{Error, Result};

/// A client that replays the fuzzer's messages (each cut to the reader's
/// limit, as the framing refuses longer ones) and then hangs up.
struct Scripted(VecDeque<Vec<u8>>);

impl PyFrames for Scripted {
    fn send_message(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn recv_message(&mut self, limit: usize, _: Deadline) -> Result<Vec<u8>> {
        match self.0.pop_front() {
            Some(m) if m.len() > limit => Err(Error::Protocol("message too long".into())),
            Some(m) => Ok(m),
            None => Err(Error::Closed),
        }
    }
}

fuzz_target!(|input: (bool, Vec<Vec<u8>>)| {
    let (allow_md5, messages) = input;
    let mut client = Scripted(messages.into());
    let result = server_handshake(&mut client, b"fuzz key", allow_md5, Deadline::Now);
    assert!(result.is_err(), "a scripted client authenticated");
});
