//! The server's side of CPython's authkey handshake
//! (`multiprocessing.connection.deliver_challenge`, then `answer_challenge`).
//!
//! 1. The server sends `#CHALLENGE#{sha256}` and 40 random bytes.
//! 2. The client answers with an HMAC of everything after `#CHALLENGE#`
//!    under the authkey: `{sha256}` and the digest from Python 3.12 on, a
//!    raw 16-byte HMAC-MD5 from Python 3.11 (which does not know prefixes).
//! 3. The server checks it in constant time and sends `#WELCOME#`, or
//!    `#FAILURE#` and closes.
//! 4. Then the client challenges the server: `{sha256}` and random bytes
//!    (3.12+), or 20 raw random bytes (3.11), which the server answers in
//!    the same form, and the client replies `#WELCOME#`.
//!
//! So a connection with a 3.11 client runs on HMAC-MD5 in both directions.
//! With `allow_md5` off (`--no-md5`), such a client is refused with
//! `#FAILURE#`. Every read is bounded to 256 bytes and by a deadline.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Sha256, Sha384};

use crate::deadline::Deadline;
use crate::error::{Error, Result};

/// The largest handshake message read (as CPython's `recv_bytes(256)`).
pub const MAX_HANDSHAKE_MESSAGE: usize = 256;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in our challenge (CPython 3.12 sends 40).
const RANDOM_LEN: usize = 40;
/// A legacy (3.11) challenge and a legacy answer have these lengths.
const MD5_ONLY_CHALLENGE_LEN: usize = 20;
const MD5_DIGEST_LEN: usize = 16;
/// The longest digest name CPython accepts (`sha3_384`).
const MAX_DIGEST_NAME: usize = 8;

/// A framed transport in CPython's format, as the handshake needs it.
pub trait PyFrames {
    /// Sends one message.
    fn send_message(&mut self, payload: &[u8]) -> Result<()>;
    /// Receives one message of at most `limit` bytes before `deadline`; a
    /// longer one is an error found from its length prefix.
    fn recv_message(&mut self, limit: usize, deadline: Deadline) -> Result<Vec<u8>>;
}

/// The digests a handshake may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// HMAC-MD5, raw (Python 3.11) or prefixed `{md5}`.
    Md5,
    /// HMAC-SHA256 (`{sha256}`, what 3.12+ use by default).
    Sha256,
    /// HMAC-SHA384 (`{sha384}`).
    Sha384,
}

impl Digest {
    fn from_name(name: &[u8]) -> Option<Digest> {
        match name {
            b"md5" => Some(Digest::Md5),
            b"sha256" => Some(Digest::Sha256),
            b"sha384" => Some(Digest::Sha384),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
        }
    }

    /// The HMAC of `message` under `key` (empty if the key were unusable,
    /// which HMAC's any-length keys never are; an empty MAC never matches).
    fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        macro_rules! run {
            ($hash:ty) => {
                match <Hmac<$hash> as Mac>::new_from_slice(key) {
                    Ok(mut m) => {
                        m.update(message);
                        m.finalize().into_bytes().to_vec()
                    }
                    Err(_) => Vec::new(),
                }
            };
        }
        match self {
            Digest::Md5 => run!(Md5),
            Digest::Sha256 => run!(Sha256),
            Digest::Sha384 => run!(Sha384),
        }
    }
}

/// What a handshake settled on: the digest each direction used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// The digest of the client's answer to our challenge.
    pub client_proof: Digest,
    /// The digest of our answer to the client's challenge.
    pub server_proof: Digest,
}

/// The digest and MAC of a message in CPython's format: a legacy (16 or
/// 20 byte) message is raw MD5, else `{name}` prefixes the payload.
fn split_digest(message: &[u8]) -> Option<(Option<Digest>, &[u8])> {
    if message.len() == MD5_ONLY_CHALLENGE_LEN || message.len() == MD5_DIGEST_LEN {
        return Some((None, message));
    }
    let rest = message.strip_prefix(b"{")?;
    let close = rest
        .iter()
        .take(MAX_DIGEST_NAME + 1)
        .position(|b| *b == b'}')?;
    let digest = Digest::from_name(&rest[..close])?;
    Some((Some(digest), &rest[close + 1..]))
}

fn refused(why: &str) -> Error {
    Error::Authentication(why.to_string())
}

/// Runs the server's side of the handshake with a client that must prove
/// it knows `authkey`; MD5 only if `allow_md5`.
///
/// A client that fails gets `#FAILURE#` (when the protocol has a place for
/// it) and the error is [`Error::Authentication`]; the caller closes.
pub fn server_handshake(
    t: &mut impl PyFrames,
    authkey: &[u8],
    allow_md5: bool,
    deadline: Deadline,
) -> Result<Settled> {
    let client_proof = deliver_challenge(t, authkey, allow_md5, deadline)?;
    let server_proof = answer_challenge(t, authkey, allow_md5, deadline)?;
    Ok(Settled {
        client_proof,
        server_proof,
    })
}

fn deliver_challenge(
    t: &mut impl PyFrames,
    authkey: &[u8],
    allow_md5: bool,
    deadline: Deadline,
) -> Result<Digest> {
    let mut random = [0u8; RANDOM_LEN];
    getrandom::fill(&mut random).map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    let mut message = b"{sha256}".to_vec();
    message.extend_from_slice(&random);
    t.send_message(&[CHALLENGE, &message].concat())?;
    let answer = t.recv_message(MAX_HANDSHAKE_MESSAGE, deadline)?;
    let verdict = match split_digest(&answer) {
        None => Err(refused("the client's answer names no digest we accept")),
        Some((digest, mac)) => {
            let digest = digest.unwrap_or(Digest::Md5);
            if digest == Digest::Md5 && !allow_md5 {
                Err(refused(
                    "the client answered with HMAC-MD5, which this server refuses (--no-md5)",
                ))
            } else {
                let expected = digest.mac(authkey, &message);
                // Constant time, as hmac's verify_slice.
                if !expected.is_empty() && constant_time_eq(&expected, mac) {
                    Ok(digest)
                } else {
                    Err(refused("the client's digest is wrong (wrong authkey?)"))
                }
            }
        }
    };
    match verdict {
        Ok(d) => {
            t.send_message(WELCOME)?;
            Ok(d)
        }
        Err(e) => {
            // Best effort: the client may be gone already.
            let _ = t.send_message(FAILURE);
            Err(e)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0 && a.len() == b.len()
}

fn answer_challenge(
    t: &mut impl PyFrames,
    authkey: &[u8],
    allow_md5: bool,
    deadline: Deadline,
) -> Result<Digest> {
    let frame = t.recv_message(MAX_HANDSHAKE_MESSAGE, deadline)?;
    let message = frame
        .strip_prefix(CHALLENGE)
        .ok_or_else(|| refused("the client sent no challenge"))?;
    if message.len() < MD5_ONLY_CHALLENGE_LEN {
        return Err(refused("the client's challenge is too short"));
    }
    let (digest, _) = split_digest(message)
        .ok_or_else(|| refused("the client's challenge names no digest we know"))?;
    let answer = match digest {
        None if !allow_md5 => {
            return Err(refused(
                "the client's challenge asks for HMAC-MD5, which this server refuses (--no-md5)",
            ));
        }
        None => Digest::Md5.mac(authkey, message),
        Some(Digest::Md5) if !allow_md5 => {
            return Err(refused(
                "the client asks for HMAC-MD5, which this server refuses",
            ));
        }
        Some(d) => {
            let mut a = format!("{{{}}}", d.name()).into_bytes();
            a.extend_from_slice(&d.mac(authkey, message));
            a
        }
    };
    t.send_message(&answer)?;
    let verdict = t.recv_message(MAX_HANDSHAKE_MESSAGE, deadline)?;
    if verdict == WELCOME {
        Ok(digest.unwrap_or(Digest::Md5))
    } else {
        Err(refused("the client rejected our digest"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::strategy::Strategy;

    use super::*;

    /// A client scripted as CPython's `answer_challenge` + `deliver_challenge`.
    struct Client {
        key: Vec<u8>,
        legacy: bool,
        /// What the server sent, in order.
        got: Vec<Vec<u8>>,
        /// What the client sends next, computed on the fly.
        out: VecDeque<Vec<u8>>,
        challenge: Vec<u8>,
    }

    impl Client {
        fn new(key: &[u8], legacy: bool) -> Client {
            Client {
                key: key.to_vec(),
                legacy,
                got: Vec::new(),
                out: VecDeque::new(),
                challenge: Vec::new(),
            }
        }
    }

    impl PyFrames for Client {
        fn send_message(&mut self, payload: &[u8]) -> Result<()> {
            self.got.push(payload.to_vec());
            if let Some(m) = payload.strip_prefix(CHALLENGE) {
                // As CPython's _create_response.
                let answer = if self.legacy {
                    Digest::Md5.mac(&self.key, m)
                } else {
                    [b"{sha256}".as_slice(), &Digest::Sha256.mac(&self.key, m)].concat()
                };
                self.out.push_back(answer);
            } else if payload == WELCOME {
                self.challenge = if self.legacy {
                    vec![7u8; 20]
                } else {
                    [b"{sha256}".as_slice(), &[9u8; 40]].concat()
                };
                self.out.push_back([CHALLENGE, &self.challenge].concat());
            } else if payload != FAILURE {
                // Our answer to the client's challenge: check it as CPython does.
                let expected = if self.legacy {
                    Digest::Md5.mac(&self.key, &self.challenge)
                } else {
                    [
                        b"{sha256}".as_slice(),
                        &Digest::Sha256.mac(&self.key, &self.challenge),
                    ]
                    .concat()
                };
                self.out.push_back(if payload == expected.as_slice() {
                    WELCOME.to_vec()
                } else {
                    FAILURE.to_vec()
                });
            }
            Ok(())
        }
        fn recv_message(&mut self, limit: usize, _: Deadline) -> Result<Vec<u8>> {
            let m = self.out.pop_front().ok_or(Error::Closed)?;
            if m.len() > limit {
                return Err(Error::Protocol("too long".into()));
            }
            Ok(m)
        }
    }

    #[test]
    fn a_312_client_settles_on_sha256_and_a_311_client_on_md5() {
        let mut c = Client::new(b"key", false);
        let s = server_handshake(&mut c, b"key", true, Deadline::Never).unwrap();
        assert_eq!(s.client_proof, Digest::Sha256);
        assert_eq!(s.server_proof, Digest::Sha256);
        assert!(c.got[0].starts_with(b"#CHALLENGE#{sha256}"));

        let mut c = Client::new(b"key", true);
        let s = server_handshake(&mut c, b"key", true, Deadline::Never).unwrap();
        assert_eq!((s.client_proof, s.server_proof), (Digest::Md5, Digest::Md5));
    }

    #[test]
    fn a_wrong_key_or_refused_md5_gets_failure() {
        for (legacy, key, allow_md5) in [
            (false, &b"guess"[..], true),
            (true, &b"guess"[..], true),
            (true, &b"key"[..], false),
        ] {
            let mut c = Client::new(key, legacy);
            let r = server_handshake(&mut c, b"key", allow_md5, Deadline::Never);
            assert!(matches!(r, Err(Error::Authentication(_))), "{r:?}");
            assert_eq!(c.got.last().unwrap(), FAILURE);
        }
        // --no-md5 still serves 3.12.
        let mut c = Client::new(b"key", false);
        server_handshake(&mut c, b"key", false, Deadline::Never).unwrap();
    }

    /// Replays canned messages.
    struct Scripted(VecDeque<Vec<u8>>);

    impl PyFrames for Scripted {
        fn send_message(&mut self, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn recv_message(&mut self, _: usize, _: Deadline) -> Result<Vec<u8>> {
            self.0.pop_front().ok_or(Error::Closed)
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random client messages (with plausible prefixes) never pass.
        #[test]
        fn random_clients_never_authenticate(
            allow_md5 in proptest::prelude::any::<bool>(),
            messages in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 16..=16),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)
                        .prop_map(|t| [b"{sha256}".as_slice(), &t].concat()),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)
                        .prop_map(|t| [CHALLENGE, &t].concat()),
                    proptest::strategy::Just(WELCOME.to_vec()),
                ],
                0..5,
            ),
        ) {
            let mut t = Scripted(messages.into());
            let r = server_handshake(&mut t, b"k", allow_md5, Deadline::Never);
            proptest::prop_assert!(r.is_err());
        }
    }

    #[test]
    fn malformed_answers_and_challenges_never_authenticate() {
        let answers: [&[u8]; 6] = [
            b"",
            b"{sha256}",
            b"{sha3_256}0123456789012345678901234567890123",
            b"{nope}xx",
            &[0u8; 17],
            &[0u8; 16],
        ];
        for a in answers {
            let mut t = Scripted(VecDeque::from([a.to_vec()]));
            let r = server_handshake(&mut t, b"k", true, Deadline::Never);
            assert!(matches!(r, Err(Error::Authentication(_))), "{a:?}: {r:?}");
        }
    }
}
