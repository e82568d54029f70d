//! Mutual authentication over a shared authkey (Python's `deliver_challenge`
//! and `answer_challenge`, in their modern HMAC-SHA256 form).
//!
//! Each side proves it knows the key without sending it:
//! 1. the server sends `#CHALLENGE#{sha256}` followed by 40 random bytes;
//! 2. the client answers `{sha256}` followed by HMAC-SHA256(authkey, message),
//!    where the message is everything after `#CHALLENGE#`;
//! 3. the server checks the digest in constant time and replies `#WELCOME#`
//!    or `#FAILURE#`;
//! 4. then the roles swap: the client challenges the server the same way.
//!
//! Every read is bounded by [`MAX_HANDSHAKE_FRAME`] and by a deadline, so a
//! peer that sends garbage or nothing cannot make either side allocate much
//! or wait forever.
//!
//! A server may answer a new connection with a single frame instead of a
//! challenge: [`BUSY`] (too many handshakes in flight; try again soon),
//! which the client's side reports as an `Io` error of kind
//! `ResourceBusy`, or `#FAILURE#` (refused outright: another user, or a
//! source that failed too often), reported as [`Error::Authentication`].

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::deadline::Deadline;
use crate::error::{Error, Result};

/// The largest frame either side reads during the handshake.
pub const MAX_HANDSHAKE_FRAME: usize = 256;

/// How long a handshake may take unless configured otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
/// The verdict on a wrong answer, and what a server sends instead of a
/// challenge to a peer it refuses without a handshake.
pub const FAILURE: &[u8] = b"#FAILURE#";
/// What a server sends instead of a challenge when it has too many
/// handshakes in flight: the client may try again a little later.
pub const BUSY: &[u8] = b"#BUSY#";
const DIGEST_PREFIX: &[u8] = b"{sha256}";
/// Random bytes in a challenge we send.
const CHALLENGE_RANDOM: usize = 40;
/// Fewest random bytes we accept in a challenge we answer.
const MIN_CHALLENGE_RANDOM: usize = 32;

/// A framed, bidirectional byte transport the handshake runs over.
pub trait FrameTransport {
    /// Sends one frame.
    fn send_frame(&mut self, payload: &[u8]) -> Result<()>;
    /// Receives one frame of at most `limit` bytes before `deadline`.
    ///
    /// A longer frame must be an error, found from its length prefix alone.
    fn recv_frame(&mut self, limit: usize, deadline: Deadline) -> Result<Vec<u8>>;
}

/// The server's side: challenge the client, then answer its challenge.
pub fn server_handshake(
    t: &mut impl FrameTransport,
    authkey: &[u8],
    deadline: Deadline,
) -> Result<()> {
    deliver_challenge(t, authkey, deadline)?;
    answer_challenge(t, authkey, deadline)
}

/// The client's side: answer the server's challenge, then challenge it.
pub fn client_handshake(
    t: &mut impl FrameTransport,
    authkey: &[u8],
    deadline: Deadline,
) -> Result<()> {
    answer_challenge(t, authkey, deadline)?;
    deliver_challenge(t, authkey, deadline)
}

/// Sends a challenge and checks the peer's answer; tells the peer the verdict.
///
/// A wrong answer is [`Error::Authentication`]; a peer that closes, stalls
/// past `deadline` or sends a malformed frame gets the matching error.
pub fn deliver_challenge(
    t: &mut impl FrameTransport,
    authkey: &[u8],
    deadline: Deadline,
) -> Result<()> {
    let mut random = [0u8; CHALLENGE_RANDOM];
    getrandom::fill(&mut random).map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    let mut message = Vec::with_capacity(DIGEST_PREFIX.len() + CHALLENGE_RANDOM);
    message.extend_from_slice(DIGEST_PREFIX);
    message.extend_from_slice(&random);
    let mut frame = CHALLENGE.to_vec();
    frame.extend_from_slice(&message);
    t.send_frame(&frame)?;

    let response = t.recv_frame(MAX_HANDSHAKE_FRAME, deadline)?;
    match verify(authkey, &message, &response) {
        Ok(()) => t.send_frame(WELCOME),
        Err(e) => {
            // Best effort: the peer may already be gone.
            let _ = t.send_frame(FAILURE);
            Err(e)
        }
    }
}

/// Answers the peer's challenge and reads its verdict.
///
/// A rejected answer is [`Error::Authentication`], and so is a malformed
/// challenge or verdict.
pub fn answer_challenge(
    t: &mut impl FrameTransport,
    authkey: &[u8],
    deadline: Deadline,
) -> Result<()> {
    let frame = t.recv_frame(MAX_HANDSHAKE_FRAME, deadline)?;
    if frame == BUSY {
        return Err(busy_error());
    }
    if frame == FAILURE {
        return Err(Error::Authentication(
            "the peer refused this connection before any handshake".into(),
        ));
    }
    let Some(message) = frame.strip_prefix(CHALLENGE) else {
        return Err(Error::Authentication(
            "the peer did not send a challenge".into(),
        ));
    };
    let Some(random) = message.strip_prefix(DIGEST_PREFIX) else {
        return Err(Error::Authentication(
            "the peer asked for an unsupported digest (only sha256 is accepted)".into(),
        ));
    };
    if random.len() < MIN_CHALLENGE_RANDOM {
        return Err(Error::Authentication(format!(
            "the peer's challenge is too short ({} random bytes)",
            random.len()
        )));
    }
    let mut response = DIGEST_PREFIX.to_vec();
    response.extend_from_slice(&mac(authkey, message)?.finalize().into_bytes());
    t.send_frame(&response)?;

    let verdict = t.recv_frame(MAX_HANDSHAKE_FRAME, deadline)?;
    if verdict == WELCOME {
        Ok(())
    } else if verdict == FAILURE {
        Err(Error::Authentication(
            "the peer rejected our digest (wrong authkey?)".into(),
        ))
    } else {
        Err(Error::Authentication(
            "the peer sent an unexpected reply to our digest".into(),
        ))
    }
}

/// The error for a [`BUSY`] answer.
pub fn busy_error() -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::ResourceBusy,
        "the server has too many handshakes in flight",
    ))
}

/// Whether `e` is a server's [`BUSY`] answer (worth another try).
pub fn is_busy(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.kind() == std::io::ErrorKind::ResourceBusy)
}

/// Whether `frame` is a challenge as [`deliver_challenge`] sends it (a
/// client without an authkey that receives one talks to a listener that
/// wants a key).
pub fn is_challenge(frame: &[u8]) -> bool {
    frame
        .strip_prefix(CHALLENGE)
        .and_then(|m| m.strip_prefix(DIGEST_PREFIX))
        .is_some_and(|random| random.len() == CHALLENGE_RANDOM)
}

fn mac(authkey: &[u8], message: &[u8]) -> Result<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(authkey)
        .map_err(|e| Error::InvalidArgument(format!("unusable authkey: {e}")))?;
    mac.update(message);
    Ok(mac)
}

/// Checks `response` against the digest of `message`, in constant time.
fn verify(authkey: &[u8], message: &[u8], response: &[u8]) -> Result<()> {
    let Some(digest) = response.strip_prefix(DIGEST_PREFIX) else {
        return Err(Error::Authentication(
            "the peer's answer is not a sha256 digest".into(),
        ));
    };
    mac(authkey, message)?
        .verify_slice(digest)
        .map_err(|_| Error::Authentication("the peer's digest is wrong (wrong authkey?)".into()))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::mpsc;

    use super::*;

    /// One end of an in-memory frame pipe.
    struct End {
        tx: mpsc::Sender<Vec<u8>>,
        rx: mpsc::Receiver<Vec<u8>>,
    }

    impl FrameTransport for End {
        fn send_frame(&mut self, payload: &[u8]) -> Result<()> {
            self.tx.send(payload.to_vec()).map_err(|_| Error::Closed)
        }
        fn recv_frame(&mut self, limit: usize, deadline: Deadline) -> Result<Vec<u8>> {
            let frame = match deadline.remaining() {
                None => self.rx.recv().map_err(|_| Error::Closed)?,
                Some(d) => self.rx.recv_timeout(d).map_err(|e| match e {
                    mpsc::RecvTimeoutError::Timeout => deadline.timeout_error(),
                    mpsc::RecvTimeoutError::Disconnected => Error::Closed,
                })?,
            };
            if frame.len() > limit {
                return Err(Error::Protocol("too long".into()));
            }
            Ok(frame)
        }
    }

    fn pair() -> (End, End) {
        let (a_tx, b_rx) = mpsc::channel();
        let (b_tx, a_rx) = mpsc::channel();
        (End { tx: a_tx, rx: a_rx }, End { tx: b_tx, rx: b_rx })
    }

    fn run(server_key: &'static [u8], client_key: &'static [u8]) -> (Result<()>, Result<()>) {
        let (mut s, mut c) = pair();
        let deadline = Deadline::after(Duration::from_secs(20));
        let server = std::thread::spawn(move || server_handshake(&mut s, server_key, deadline));
        let client = client_handshake(&mut c, client_key, deadline);
        drop(c);
        (server.join().unwrap(), client)
    }

    #[test]
    fn the_same_key_passes_both_ways() {
        let (s, c) = run(b"secret", b"secret");
        s.unwrap();
        c.unwrap();
        let (s, c) = run(b"", b"");
        s.unwrap();
        c.unwrap();
    }

    #[test]
    fn a_wrong_key_fails_on_both_sides() {
        let (s, c) = run(b"secret", b"guess");
        assert!(matches!(s, Err(Error::Authentication(_))), "{s:?}");
        assert!(matches!(c, Err(Error::Authentication(_))), "{c:?}");
    }

    /// A peer that replays canned frames.
    struct Scripted(VecDeque<Vec<u8>>);

    impl FrameTransport for Scripted {
        fn send_frame(&mut self, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn recv_frame(&mut self, _: usize, _: Deadline) -> Result<Vec<u8>> {
            self.0.pop_front().ok_or(Error::Closed)
        }
    }

    #[test]
    fn busy_and_refused_servers_are_told_apart() {
        let mut t = Scripted(VecDeque::from([BUSY.to_vec()]));
        let r = client_handshake(&mut t, b"k", Deadline::Never);
        assert!(matches!(&r, Err(e) if is_busy(e)), "{r:?}");
        let mut t = Scripted(VecDeque::from([FAILURE.to_vec()]));
        let r = client_handshake(&mut t, b"k", Deadline::Never);
        assert!(matches!(r, Err(Error::Authentication(_))), "{r:?}");
    }

    #[test]
    fn a_challenge_is_recognised_by_its_shape() {
        struct Capture(Vec<Vec<u8>>);
        impl FrameTransport for Capture {
            fn send_frame(&mut self, payload: &[u8]) -> Result<()> {
                self.0.push(payload.to_vec());
                Ok(())
            }
            fn recv_frame(&mut self, _: usize, _: Deadline) -> Result<Vec<u8>> {
                Err(Error::Closed)
            }
        }
        let mut t = Capture(Vec::new());
        assert!(deliver_challenge(&mut t, b"k", Deadline::Never).is_err());
        assert!(is_challenge(&t.0[0]));
        for other in [
            &b"#CHALLENGE#"[..],
            b"#CHALLENGE#{sha256}short",
            b"data",
            b"",
        ] {
            assert!(!is_challenge(other), "{other:?}");
        }
    }

    #[test]
    fn malformed_challenges_and_answers_are_authentication_errors() {
        let bad_challenges: [&[u8]; 4] = [
            b"",
            b"hello",
            b"#CHALLENGE#{md5}0123456789012345678901234567890123456789",
            b"#CHALLENGE#{sha256}short",
        ];
        for c in bad_challenges {
            let mut t = Scripted(VecDeque::from([c.to_vec()]));
            let r = answer_challenge(&mut t, b"k", Deadline::Never);
            assert!(matches!(r, Err(Error::Authentication(_))), "{c:?}: {r:?}");
        }
        for answer in [&b""[..], b"{sha256}", b"{sha256}xx", &[0u8; 40]] {
            let mut t = Scripted(VecDeque::from([answer.to_vec()]));
            let r = deliver_challenge(&mut t, b"k", Deadline::Never);
            assert!(matches!(r, Err(Error::Authentication(_))), "{r:?}");
        }
    }
}
