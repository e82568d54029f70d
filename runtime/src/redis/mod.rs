//! Objects kept in Redis (feature `redis`): the connection every Redis
//! flavour and the distributed Pool share, and how a Redis failure becomes
//! a [`multiproc::Error`](crate::Error).
//!
//! Every connection has a deadline on connect, read and write: a Redis
//! server that is unreachable, refuses the password or goes away mid-call
//! is [`Error::BackendUnavailable`] for that call, never a hang. Keys are
//! named `{prefix}:{kind}:{name}`, so processes on any host that use the
//! same URL, prefix and name meet at the same object.

// The flavours and the distributed Pool that use these helpers land next.
#![allow(dead_code)]

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// How long a connection attempt, or one command's reply, may take before
/// the call fails with [`Error::BackendUnavailable`]. A command that blocks
/// on purpose (a blocking pop with a timeout) sets its own read deadline.
pub(crate) const IO_DEADLINE: Duration = Duration::from_secs(10);

/// The prefix keys carry when the caller names none.
pub(crate) const DEFAULT_PREFIX: &str = "multiproc";

/// Where Redis objects live: a server (from a `redis://` URL, whose
/// password and database it carries) and a key prefix.
#[derive(Clone)]
pub(crate) struct RedisTarget {
    client: redis::Client,
    /// The URL with any password replaced by `***`, for messages.
    shown: String,
    prefix: String,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &self.shown)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisTarget {
    /// Parses `url` (`redis://[user:password@]host:port[/db]`). Nothing is
    /// contacted yet; a malformed URL is [`Error::InvalidArgument`].
    pub(crate) fn new(url: &str) -> Result<RedisTarget> {
        let client = redis::Client::open(url).map_err(|e| {
            Error::InvalidArgument(format!("redis URL {}: {e}", hide_password(url)))
        })?;
        Ok(RedisTarget {
            client,
            shown: hide_password(url),
            prefix: DEFAULT_PREFIX.to_owned(),
        })
    }

    /// The same server with keys under `prefix` (which may not be empty
    /// nor contain `:` or whitespace, so that two prefixes never overlap).
    pub(crate) fn with_prefix(mut self, prefix: &str) -> Result<RedisTarget> {
        if prefix.is_empty() || prefix.contains(':') || prefix.contains(char::is_whitespace) {
            return Err(Error::InvalidArgument(format!(
                "redis key prefix {prefix:?}: must be non-empty, without ':' or whitespace"
            )));
        }
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// The key prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The URL with its password hidden, for messages and `Debug`.
    pub(crate) fn shown_url(&self) -> &str {
        &self.shown
    }

    /// The key of the object `name` of `kind` (`dict`, `lock`, …).
    pub(crate) fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    /// A new connection, authenticated and on the URL's database, with
    /// [`IO_DEADLINE`] on connecting, reading and writing.
    pub(crate) fn connect(&self) -> Result<redis::Connection> {
        let conn = self
            .client
            .get_connection_with_timeout(IO_DEADLINE)
            .map_err(|e| self.unavailable(e))?;
        conn.set_read_timeout(Some(IO_DEADLINE))
            .and_then(|()| conn.set_write_timeout(Some(IO_DEADLINE)))
            .map_err(|e| self.unavailable(e))?;
        Ok(conn)
    }

    /// The error a failed command becomes: the connection's failures
    /// (unreachable, refused password, gone mid-call, no reply in time)
    /// are [`Error::BackendUnavailable`] naming the server; an error the
    /// server answered (a key of the wrong type, say) is
    /// [`Error::Remote`].
    pub(crate) fn error(&self, e: redis::RedisError) -> Error {
        if is_connection_failure(&e) {
            self.unavailable(e)
        } else {
            Error::Remote(format!("redis at {}: {e}", self.shown))
        }
    }

    fn unavailable(&self, e: redis::RedisError) -> Error {
        Error::BackendUnavailable {
            backend: "redis",
            cause: format!("{}: {e}", self.shown),
        }
    }
}

/// Whether `e` says the connection (not the command) failed.
fn is_connection_failure(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(e.kind(), redis::ErrorKind::AuthenticationFailed)
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

/// `url` with the password (between `:` and `@` after the scheme) replaced.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows_in_messages() {
        assert_eq!(
            hide_password("redis://:s3cret@h:6379/2"),
            "redis://:***@h:6379/2"
        );
        assert_eq!(
            hide_password("redis://me:s3cret@h:6379"),
            "redis://me:***@h:6379"
        );
        assert_eq!(hide_password("redis://h:6379"), "redis://h:6379");
        let t = RedisTarget::new("redis://:s3cret@127.0.0.1:1/0").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn prefixes_cannot_overlap() {
        let t = RedisTarget::new("redis://127.0.0.1:1").unwrap();
        assert_eq!(t.key("dict", "d"), "multiproc:dict:d");
        let t = t.with_prefix("app").unwrap();
        assert_eq!(t.key("lock", "l"), "app:lock:l");
        for bad in ["", "a:b", "a b"] {
            assert!(matches!(
                t.clone().with_prefix(bad),
                Err(Error::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn an_unreachable_server_is_backend_unavailable_not_a_hang() {
        // Port 1 on loopback: nothing listens, the connect is refused at once.
        let t = RedisTarget::new("redis://127.0.0.1:1").unwrap();
        match t.connect() {
            Err(Error::BackendUnavailable { backend, cause }) => {
                assert_eq!(backend, "redis");
                assert!(cause.contains("127.0.0.1:1"), "{cause}");
            }
            Err(other) => panic!("expected BackendUnavailable, got {other:?}"),
            Ok(_) => panic!("connected to a port where nothing listens"),
        }
    }

    #[test]
    fn a_malformed_url_is_invalid_argument() {
        assert!(matches!(
            RedisTarget::new("http://nope"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
