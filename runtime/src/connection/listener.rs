//! Addresses, listening sockets and clients (Python's
//! `multiprocessing.connection.Listener` and `Client`).

use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{self as unix, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::connection::socket::{SocketConnection, wait_readable};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::wire::auth::DEFAULT_HANDSHAKE_TIMEOUT;

/// Where a [`Listener`] listens and a client connects.
///
/// Parsed from a string ([`FromStr`]):
/// - `"@name"`: a Linux abstract Unix socket (nothing appears on disk);
/// - `"127.0.0.1:5000"`, `"[::1]:0"`: TCP (port 0 picks a free port);
/// - `"host.example:5000"` (a colon, no slash): TCP, resolved now;
/// - anything else, such as `"/tmp/x.sock"`: a Unix socket file.
///
/// An `Address` is [`Shareable`](crate::Shareable), so a child can be told
/// where to connect.
///
/// ```
/// use multiproc::connection::Address;
/// let a: Address = "127.0.0.1:0".parse().unwrap();
/// assert!(matches!(a, Address::Tcp(_)));
/// assert_eq!("@svc".parse::<Address>().unwrap(), Address::UnixAbstract("svc".into()));
/// assert_eq!("@svc".parse::<Address>().unwrap().to_string(), "@svc");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = rkyv)]
pub enum Address {
    /// A Unix socket file; the [`Listener`] that creates it removes it.
    Unix(#[rkyv(with = rkyv::with::AsString)] PathBuf),
    /// A name in Linux's abstract socket namespace (written `@name`); it
    /// vanishes with the last socket bound to it.
    UnixAbstract(String),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl Address {
    /// A fresh abstract Unix address no other listener uses (for local
    /// servers that only need *an* address, like Python's `Listener()`).
    pub fn unique_abstract() -> Address {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut salt = [0u8; 8];
        // Uniqueness comes from pid + counter; the salt only guards against
        // a name left bound by an earlier process with a recycled pid.
        let _ = getrandom::fill(&mut salt);
        Address::UnixAbstract(format!(
            "multiproc-{}-{}-{:016x}",
            crate::sys::process::getpid(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            u64::from_ne_bytes(salt)
        ))
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Address> {
        if s.is_empty() {
            return Err(Error::InvalidArgument("an empty address".into()));
        }
        if let Some(name) = s.strip_prefix('@') {
            if name.is_empty() {
                return Err(Error::InvalidArgument(
                    "an abstract socket address needs a name after '@'".into(),
                ));
            }
            return Ok(Address::UnixAbstract(name.to_string()));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(addr));
        }
        if s.contains(':') && !s.contains('/') {
            let mut addrs = s
                .to_socket_addrs()
                .map_err(|e| Error::InvalidArgument(format!("cannot resolve {s:?}: {e}")))?;
            return addrs
                .next()
                .map(Address::Tcp)
                .ok_or_else(|| Error::InvalidArgument(format!("{s:?} resolves to no address")));
        }
        Ok(Address::Unix(PathBuf::from(s)))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "{}", path.display()),
            Address::UnixAbstract(name) => write!(f, "@{name}"),
            Address::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Tcp(addr)
    }
}

impl From<&Path> for Address {
    fn from(path: &Path) -> Address {
        Address::Unix(path.to_path_buf())
    }
}

/// The socket address of the abstract name `name`: an empty name is
/// refused, as its text form (`@`) is, so that every address a listener
/// binds can be written down and parsed back.
fn abstract_addr(name: &str) -> Result<unix::SocketAddr> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(
            "an abstract socket address needs a name after '@'".into(),
        ));
    }
    unix::SocketAddr::from_abstract_name(name.as_bytes()).map_err(Error::Io)
}

enum Accepted {
    Unix(UnixStream),
    Tcp(TcpStream),
}

#[derive(Debug)]
enum ListenSocket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A socket file this process created, removed when the listener drops.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    /// Device and inode, so a file someone else bound at the same path later
    /// is left alone.
    dev: u64,
    ino: u64,
    /// Only the creating process cleans up (a forked child holds a copy).
    owner: i32,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if crate::sys::process::getpid() != self.owner {
            return;
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove socket file");
                }
            }
            _ => {}
        }
    }
}

/// A listening socket that hands out [`SocketConnection`]s (Python's `Listener`).
///
/// With an authkey, every accepted connection first passes the mutual HMAC
/// handshake of [`crate::wire::auth`]; a client that fails it is dropped and
/// that one `accept` returns [`Error::Authentication`] (the listener stays
/// usable). A Unix socket file made by [`Listener::bind`] is removed when the
/// listener drops.
///
/// ```
/// use multiproc::connection::{client, Address, Listener, SocketConnection};
///
/// let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(b"key")).unwrap();
/// let address = listener.address().clone();
/// let t = std::thread::spawn(move || {
///     let mut c: SocketConnection<String> = client(&address, Some(b"key")).unwrap();
///     c.send(&"hello".to_string()).unwrap();
/// });
/// let mut server: SocketConnection<String> = listener.accept().unwrap();
/// assert_eq!(server.recv().unwrap(), "hello");
/// t.join().unwrap();
/// ```
pub struct Listener {
    socket: ListenSocket,
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
    _socket_file: Option<SocketFile>,
}

impl fmt::Debug for Listener {
    /// Says whether there is an authkey, never what it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("socket", &self.socket)
            .field("address", &self.address)
            .field("authenticates", &self.authkey.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Listens at `address`; clients must prove they know `authkey` if one is given.
    ///
    /// `None` authenticates no one, as Python 3's `Listener(authkey=None)`
    /// (only managers default to the process's key). For Python's usual
    /// parent-and-children set-up, pass this process's key,
    /// `Some(current_process().authkey().as_bytes())`: children inherit it
    /// (or get another through [`Process::authkey`](crate::Process::authkey)),
    /// so they pass the same expression to [`client`] and nothing secret
    /// travels.
    ///
    /// A Unix socket file that already exists, or a TCP port in use, is an
    /// [`Error::Io`] of kind `AddrInUse` (as in Python), whose text names
    /// the address.
    pub fn bind(address: &Address, authkey: Option<&[u8]>) -> Result<Listener> {
        let (socket, address, socket_file) = match address {
            Address::Unix(path) => {
                let l = UnixListener::bind(path)
                    .map_err(|e| Error::cannot_listen(&path.display(), e))?;
                let m = match std::fs::symlink_metadata(path) {
                    Ok(m) => m,
                    Err(e) => {
                        // We made the file but cannot vouch for it later: remove it now.
                        let _ = std::fs::remove_file(path);
                        return Err(Error::Io(e));
                    }
                };
                let file = SocketFile {
                    path: path.clone(),
                    dev: m.dev(),
                    ino: m.ino(),
                    owner: crate::sys::process::getpid(),
                };
                (ListenSocket::Unix(l), address.clone(), Some(file))
            }
            Address::UnixAbstract(name) => {
                let l = UnixListener::bind_addr(&abstract_addr(name)?)?;
                (ListenSocket::Unix(l), address.clone(), None)
            }
            Address::Tcp(addr) => {
                let l = TcpListener::bind(addr).map_err(|e| Error::cannot_listen(addr, e))?;
                let bound = Address::Tcp(l.local_addr()?);
                (ListenSocket::Tcp(l), bound, None)
            }
        };
        // Non-blocking, so an accept after a poll never blocks even if
        // another process took the connection first.
        match &socket {
            ListenSocket::Unix(l) => l.set_nonblocking(true)?,
            ListenSocket::Tcp(l) => l.set_nonblocking(true)?,
        }
        Ok(Listener {
            socket,
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            _socket_file: socket_file,
        })
    }

    /// The address clients connect to (with the real port if bound to port 0).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// How long an accepted client has to complete the handshake (10 s
    /// unless changed). The accepting thread waits at most this long for a
    /// client that stalls.
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// The listening socket's descriptor (readable when a client is waiting).
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            ListenSocket::Unix(l) => l.as_fd(),
            ListenSocket::Tcp(l) => l.as_fd(),
        }
    }

    /// Waits for a client and returns the connection to it (authenticated
    /// if the listener has an authkey).
    pub fn accept<T>(&self) -> Result<SocketConnection<T>> {
        self.accept_deadline(Deadline::Never)
    }

    /// Accepts a client that is already waiting, else [`Error::WouldBlock`].
    pub fn try_accept<T>(&self) -> Result<SocketConnection<T>> {
        self.accept_deadline(Deadline::Now)
    }

    /// Waits at most `timeout` for a client ([`Error::Timeout`]). The
    /// handshake that follows has its own timeout (see
    /// [`Listener::set_handshake_timeout`]).
    pub fn accept_timeout<T>(&self, timeout: Duration) -> Result<SocketConnection<T>> {
        self.accept_deadline(Deadline::after(timeout))
    }

    fn accept_deadline<T>(&self, deadline: Deadline) -> Result<SocketConnection<T>> {
        let (mut conn, peer) = loop {
            if !wait_readable(self.fd(), deadline)? {
                return Err(match deadline {
                    Deadline::Now => Error::WouldBlock,
                    _ => deadline.timeout_error(),
                });
            }
            let accepted = match &self.socket {
                ListenSocket::Unix(l) => l
                    .accept()
                    .map(|(s, _)| (Accepted::Unix(s), String::from("a local client"))),
                ListenSocket::Tcp(l) => l
                    .accept()
                    .map(|(s, peer)| (Accepted::Tcp(s), peer.to_string())),
            };
            match accepted {
                Ok((Accepted::Unix(s), peer)) => break (SocketConnection::from_unix(s)?, peer),
                Ok((Accepted::Tcp(s), peer)) => break (SocketConnection::from_tcp(s)?, peer),
                // Someone else took it, or it was aborted while queued: wait again.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => return Err(Error::Io(e)),
            }
        };
        if let Some(key) = &self.authkey
            && let Err(e) = conn.server_handshake(key, Deadline::after(self.handshake_timeout))
        {
            tracing::warn!(%peer, error = %e, listener = %self.address, "rejected a client that failed the authkey handshake");
            return Err(match e {
                Error::Authentication(_) => e,
                other => Error::Authentication(format!("handshake with {peer} failed: {other}")),
            });
        }
        Ok(conn)
    }
}

/// Connects to a [`Listener`] at `address`, authenticating with `authkey`
/// if given (Python's `Client`; `None` authenticates nothing, as Python 3's
/// `Client(authkey=None)`: pass `Some(current_process().authkey().as_bytes())`
/// to use the key this process inherited, see [`Listener::bind`]).
///
/// A listener that rejects the key makes this [`Error::Authentication`],
/// and so does a listener without a key (it sends no challenge: this side
/// gives up when the handshake's time is over). The handshake waits at
/// most 10 s for the server; use [`SocketConnection::connect_timeout`] to
/// bound everything.
///
/// Without a key against a listener that has one, the connection is made,
/// but the listener's `accept` fails with [`Error::Authentication`] and so
/// does this side's first receive (it finds the listener's challenge where
/// a message should be); what this side sent before that is dropped.
pub fn client<T>(address: &Address, authkey: Option<&[u8]>) -> Result<SocketConnection<T>> {
    connect(address, authkey, Deadline::Never)
}

pub(crate) fn connect<T>(
    address: &Address,
    authkey: Option<&[u8]>,
    deadline: Deadline,
) -> Result<SocketConnection<T>> {
    let mut conn = match address {
        Address::Unix(path) => SocketConnection::from_unix(UnixStream::connect(path)?)?,
        Address::UnixAbstract(name) => {
            SocketConnection::from_unix(UnixStream::connect_addr(&abstract_addr(name)?)?)?
        }
        Address::Tcp(addr) => {
            let stream = match deadline.remaining() {
                None => TcpStream::connect(addr)?,
                Some(left) if left.is_zero() => return Err(deadline.timeout_error()),
                Some(left) => {
                    TcpStream::connect_timeout(addr, left).map_err(|e| match e.kind() {
                        std::io::ErrorKind::TimedOut => deadline.timeout_error(),
                        _ => Error::Io(e),
                    })?
                }
            };
            SocketConnection::from_tcp(stream)?
        }
    };
    match authkey {
        Some(key) => {
            let handshake = match deadline {
                Deadline::Never => Deadline::after(DEFAULT_HANDSHAKE_TIMEOUT),
                other => other,
            };
            // A listener without a key sends no challenge: this side
            // waits for one until the deadline, and says why.
            let fd = conn.fd().ok_or(Error::Closed)?;
            if !wait_readable(fd, handshake)? {
                return Err(Error::Authentication(format!(
                    "{address} sent no challenge in time: a listener without an authkey?"
                )));
            }
            conn.client_handshake(key, handshake)?;
        }
        None => conn.expect_no_challenge(),
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Shareable;

    #[test]
    fn addresses_parse_and_print_back() {
        let cases = [
            ("@name", Address::UnixAbstract("name".into())),
            ("/tmp/x.sock", Address::Unix("/tmp/x.sock".into())),
            ("rel.sock", Address::Unix("rel.sock".into())),
            ("127.0.0.1:0", Address::Tcp("127.0.0.1:0".parse().unwrap())),
            ("[::1]:80", Address::Tcp("[::1]:80".parse().unwrap())),
        ];
        for (text, want) in cases {
            let got: Address = text.parse().unwrap();
            assert_eq!(got, want);
            assert_eq!(got.to_string(), text);
            assert_eq!(Address::decode(&got.encode().unwrap()).unwrap(), want);
        }
        assert!(matches!("localhost:7".parse(), Ok(Address::Tcp(_))));
        for bad in ["", "@", "no-such-host.invalid:x"] {
            assert!(bad.parse::<Address>().is_err(), "{bad:?}");
        }
        // What cannot be written down is not bound either.
        let empty = Address::UnixAbstract(String::new());
        assert!(matches!(
            Listener::bind(&empty, None),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            client::<u8>(&empty, None),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn a_unix_socket_file_is_removed_by_its_creator_only() {
        let dir = std::env::temp_dir().join(format!(
            "multiproc-listener-test-{}",
            crate::sys::process::getpid()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.sock");
        let address = Address::Unix(path.clone());
        let l = Listener::bind(&address, None).unwrap();
        assert!(path.exists());
        // Binding the same path again fails and removes nothing.
        assert!(Listener::bind(&address, None).is_err());
        assert!(path.exists());
        drop(l);
        assert!(!path.exists());
        // A file that replaced ours is not ours to remove.
        let l = Listener::bind(&address, None).unwrap();
        std::fs::remove_file(&path).unwrap();
        let other = Listener::bind(&address, None).unwrap();
        drop(l);
        assert!(path.exists());
        drop(other);
        assert!(!path.exists());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn port_zero_reports_the_bound_port() {
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
        match l.address() {
            Address::Tcp(a) => assert_ne!(a.port(), 0),
            other => panic!("{other:?}"),
        }
        assert!(matches!(l.try_accept::<u8>(), Err(Error::WouldBlock)));
        assert!(matches!(
            l.accept_timeout::<u8>(Duration::from_millis(20)),
            Err(Error::Timeout(_))
        ));
    }
}
