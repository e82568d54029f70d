//! The authkey handshake, both sides, against a peer whose frames are the
//! fuzzer's input: it must never authenticate, panic or wait.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use multiproc::deadline::Deadline;
use multiproc::wire::{FrameTransport, client_handshake, server_handshake};
use multiproc::{Error, Result};

/// A peer that replays the fuzzer's frames (each cut to the reader's limit,
/// as a real frame reader would refuse longer ones) and then hangs up.
struct Scripted(VecDeque<Vec<u8>>);

impl FrameTransport for Scripted {
    fn send_frame(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn recv_frame(&mut self, limit: usize, _: Deadline) -> Result<Vec<u8>> {
        match self.0.pop_front() {
            Some(f) if f.len() > limit => Err(Error::Protocol("frame too long".into())),
            Some(f) => Ok(f),
            None => Err(Error::Closed),
        }
    }
}

fuzz_target!(|input: (bool, Vec<Vec<u8>>)| {
    let (server, frames) = input;
    let mut peer = Scripted(frames.into());
    let result = if server {
        server_handshake(&mut peer, b"fuzz key", Deadline::Now)
    } else {
        client_handshake(&mut peer, b"fuzz key", Deadline::Now)
    };
    assert!(result.is_err(), "a scripted peer authenticated");
});
