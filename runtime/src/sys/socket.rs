//! Unix stream sockets that carry descriptors (SCM_RIGHTS).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::{retry_eintr, syscall};

/// Most descriptors one message may carry.
pub const MAX_FDS: usize = 253;

/// A connected pair of close-on-exec Unix stream sockets.
pub fn socketpair() -> std::io::Result<(UnixStream, UnixStream)> {
    UnixStream::pair()
}

/// A connected pair of close-on-exec Unix sequenced-packet sockets: each
/// send is one record, received whole and never mixed with another
/// sender's, so several processes can share one end.
pub fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    syscall!(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded, so both descriptors are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The first byte of the next record waiting on a sequenced-packet
/// socket, left in place; `None` when nothing waits (or the peer is gone).
/// Descriptors the record carries stay with it.
pub fn peek_record(sock: BorrowedFd<'_>) -> std::io::Result<Option<u8>> {
    let mut byte = 0u8;
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    let n = retry_eintr(|| {
        // SAFETY: `byte` is one writable byte; `sock` is borrowed, so open.
        syscall!(unsafe { libc::recv(sock.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, flags) })
    });
    match n {
        Ok(1) => Ok(Some(byte)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Takes the next record waiting on a sequenced-packet socket and drops it
/// (it must carry no descriptor: see [`peek_record`]).
pub fn discard_record(sock: BorrowedFd<'_>) -> std::io::Result<()> {
    let mut byte = 0u8;
    retry_eintr(|| {
        // SAFETY: `byte` is one writable byte; `sock` is borrowed, so open.
        syscall!(unsafe {
            libc::recv(
                sock.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_DONTWAIT,
            )
        })
    })?;
    Ok(())
}

/// Sends all of `data`, with `fds` attached to the first byte, ignoring SIGPIPE.
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::other("too many descriptors in one message"));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let space = if raw.is_empty() {
        0
    } else {
        // SAFETY: CMSG_SPACE only computes a size.
        unsafe { libc::CMSG_SPACE(std::mem::size_of_val(raw.as_slice()) as u32) as usize }
    };
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut sent = 0usize;
    while sent < data.len() || (sent == 0 && data.is_empty()) {
        let iov = [IoSlice::new(&data[sent..])];
        // SAFETY: msghdr is plain old data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = 1;
        if sent == 0 && !raw.is_empty() {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            // SAFETY: msg_control points to `space` bytes, enough for one
            // header holding `raw.len()` descriptors (CMSG_SPACE above).
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len =
                    libc::CMSG_LEN(std::mem::size_of_val(raw.as_slice()) as u32) as _;
                std::ptr::copy_nonoverlapping(
                    raw.as_ptr(),
                    libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                    raw.len(),
                );
            }
        }
        let n = retry_eintr(|| {
            // SAFETY: `msg` points to `iov` (live, over `data[sent..]`) and, on
            // the first send, to `cbuf` with one well-formed SCM_RIGHTS header;
            // the kernel only reads them. `sock` is borrowed, so open.
            syscall!(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
        })?;
        if data.is_empty() {
            break;
        }
        sent += n as usize;
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and any descriptors sent with them.
///
/// Returns the byte count (0 at end of stream) and the descriptors, now
/// owned. More descriptors than [`MAX_FDS`] is an error (see [`take_all_rights`]).
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    recv_with_at_most(sock, buf, MAX_FDS)
}

/// [`recv_with_fds`] with room for at most `max_fds` descriptors (1 to [`MAX_FDS`]).
pub fn recv_with_at_most(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let max_fds = max_fds.clamp(1, MAX_FDS);
    // SAFETY: CMSG_SPACE only computes a size.
    let space =
        unsafe { libc::CMSG_SPACE((max_fds * std::mem::size_of::<RawFd>()) as u32) as usize };
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = retry_eintr(|| {
        // SAFETY: `msg` points to `iov` over `buf` (live and writable for its
        // length) and to `cbuf` (`space` writable bytes); `sock` is borrowed.
        syscall!(unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) })
    })?;
    // SAFETY: the kernel filled msg_control by this recvmsg.
    let fds = unsafe { take_all_rights(&msg) }?;
    Ok((n as usize, fds))
}

/// Takes ownership of every SCM_RIGHTS descriptor in a received message,
/// failing if the kernel truncated its control data (`MSG_CTRUNC`: more
/// descriptors came than the buffer had room for). Then the descriptors
/// that did arrive are closed here and the kernel closed the rest: a
/// message that lost some of its descriptors is never taken for whole.
///
/// # Safety
/// As for [`take_rights`].
unsafe fn take_all_rights(msg: &libc::msghdr) -> std::io::Result<Vec<OwnedFd>> {
    // SAFETY: the caller's promise.
    let fds = unsafe { take_rights(msg) };
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        let arrived = fds.len();
        drop(fds);
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "a message carried more descriptors than the receiver had room for \
                 ({arrived} arrived and were closed, the rest were dropped)"
            ),
        ));
    }
    Ok(fds)
}

/// Takes ownership of every SCM_RIGHTS descriptor in a received message.
///
/// # Safety
/// `msg`'s control buffer must hold what a successful `recvmsg` wrote
/// there, and nothing else may take those descriptors.
unsafe fn take_rights(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    if msg.msg_control.is_null() {
        return fds;
    }
    // SAFETY: the kernel filled msg_control with well-formed headers (the
    // caller's promise); we walk them with the CMSG macros and take
    // ownership of each SCM_RIGHTS descriptor once.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    fds
}

/// Sends as much of `bufs` as the socket takes in one call, never raising SIGPIPE.
///
/// Returns the number of bytes sent; a closed peer is `BrokenPipe`.
pub fn send_vectored(sock: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix; the kernel
    // only reads through the pointer.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
    let n = retry_eintr(|| {
        // SAFETY: `msg` points to the caller's live `bufs` (IoSlice is
        // ABI-compatible with iovec) and has no control data; the kernel only
        // reads them. `sock` is borrowed, so open.
        syscall!(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
    })?;
    Ok(n as usize)
}

fn set_int_option(
    sock: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the option value is `value`, a live c_int of `len` bytes that
    // the kernel only reads; `sock` is borrowed, so open.
    syscall!(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            len,
        )
    })
    .map(drop)
}

/// Makes a TCP connection notice a peer that vanished without closing (its
/// host died, the network broke): keepalive probes after `idle` of silence,
/// every `interval`, `count` of them; and unacknowledged data for longer
/// than `idle + interval * count` breaks the connection too.
pub fn set_tcp_liveness(
    sock: BorrowedFd<'_>,
    idle: std::time::Duration,
    interval: std::time::Duration,
    count: u32,
) -> std::io::Result<()> {
    let secs = |d: std::time::Duration| d.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
    let total = idle + interval * count;
    set_int_option(sock, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set_int_option(sock, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(idle))?;
    set_int_option(sock, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(interval))?;
    set_int_option(
        sock,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPCNT,
        count.clamp(1, 127) as libc::c_int,
    )?;
    let millis = total.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    set_int_option(sock, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, millis)
}

/// Asks the kernel to acknowledge what arrives on TCP socket `sock` at once
/// instead of delaying the ACK (`TCP_QUICKACK`; the kernel may fall back to
/// delayed ACKs later, so set it again before each read that matters).
///
/// A peer that writes twice before reading (Python's client sends
/// `#WELCOME#`, then its request) otherwise waits for a delayed ACK of the
/// first write under Nagle's algorithm: about 40 ms per connection.
pub fn set_tcp_quickack(sock: BorrowedFd<'_>) -> std::io::Result<()> {
    set_int_option(sock, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1)
}

/// Receives what is queued on `sock` into the spare capacity of `out`,
/// without blocking, with at most `max_fds` descriptors sent alongside.
///
/// Returns the byte count (0 at end of stream) and the descriptors, now
/// owned; `WouldBlock` when nothing is queued. Reserve room in `out` first:
/// with no spare capacity only descriptors can arrive. More than `max_fds`
/// descriptors is an error (see [`take_all_rights`]); the bytes that came
/// with them are still appended to `out`.
pub fn recv_nonblocking(
    sock: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    max_fds: usize,
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let max_fds = max_fds.min(MAX_FDS);
    // SAFETY: CMSG_SPACE only computes a size.
    let space =
        unsafe { libc::CMSG_SPACE((max_fds * std::mem::size_of::<RawFd>()) as u32) as usize };
    let mut cbuf = [0u64; 16];
    let space = if max_fds == 0 {
        0
    } else {
        space.min(8 * cbuf.len())
    };
    let spare = out.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if space > 0 {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
    }
    let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    // SAFETY: `msg` points to `iov` over the spare capacity of `out` (live
    // and writable for its length) and, if any, to `cbuf` (`space` writable
    // bytes); `sock` is borrowed, so open.
    let n = retry_eintr(|| syscall!(unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) }))?
        as usize;
    // SAFETY: the kernel wrote `n` bytes (at most the spare length it was
    // given) at the start of the spare capacity.
    unsafe { out.set_len(out.len() + n) };
    // SAFETY: msg_control (if any) was filled by this recvmsg.
    let fds = unsafe { take_all_rights(&msg) }?;
    Ok((n, fds))
}

/// The send buffer size of `sock` (`SO_SNDBUF`, as the kernel accounts it).
pub fn send_buffer_size(sock: BorrowedFd<'_>) -> std::io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a live c_int and `len` its size, both writable by
    // the kernel; `sock` is borrowed, so open.
    syscall!(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value.max(0) as usize)
}

/// Sends `bufs` (with `fds` attached to the first byte) in one call that
/// never blocks and never raises SIGPIPE; returns the bytes sent, which may
/// be fewer than asked. A full socket is `WouldBlock`.
pub fn send_nowait(
    sock: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().take(MAX_FDS).map(|f| f.as_raw_fd()).collect();
    let space = if raw.is_empty() {
        0
    } else {
        // SAFETY: CMSG_SPACE only computes a size.
        unsafe { libc::CMSG_SPACE(std::mem::size_of_val(raw.as_slice()) as u32) as usize }
    };
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix; the kernel only reads it.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
    if !raw.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` bytes, enough for one header
        // holding `raw.len()` descriptors (CMSG_SPACE above).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(raw.as_slice()) as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                raw.len(),
            );
        }
    }
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    // SAFETY: `msg` points to the caller's live `bufs` (IoSlice is
    // ABI-compatible with iovec) and, if any descriptors go, to `cbuf` with
    // one well-formed SCM_RIGHTS header; the kernel only reads them. `sock`
    // is borrowed, so open.
    let n = retry_eintr(|| syscall!(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) }))?;
    Ok(n as usize)
}

/// Who is at the other end of a connected Unix socket, as the kernel
/// recorded it when the peer connected (`SO_PEERCRED`): it cannot be forged
/// by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// The peer's process id (0 if the kernel does not know it, as for a
    /// peer in another pid namespace).
    pub pid: i32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

/// The credentials of the peer of the connected Unix socket `sock`.
pub fn peer_credentials(sock: BorrowedFd<'_>) -> std::io::Result<PeerCredentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable `ucred` and `len` holds its size, as
    // SO_PEERCRED requires; the kernel writes at most `len` bytes.
    syscall!(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(std::io::Error::other("SO_PEERCRED returned a short answer"));
    }
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// This process's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::time::Duration;

    /// Waits (generously) for `reader` to report end of file: every copy of
    /// the pipe's write end is closed. `false` if a copy stays open.
    fn writer_closed(reader: &mut std::io::PipeReader) -> bool {
        let ready = crate::sys::fd::poll_one(
            reader.as_fd(),
            crate::sys::fd::Interest::Read,
            Some(Duration::from_secs(60)),
        )
        .unwrap();
        let mut byte = [0u8; 1];
        ready && reader.read(&mut byte).unwrap() == 0
    }

    /// Regression: a message with more descriptors than the receiver's
    /// control buffer held was taken as complete (`MSG_CTRUNC` unchecked),
    /// with the descriptors that did arrive kept as if they were all.
    #[test]
    fn truncated_descriptors_are_an_error_and_all_are_closed() {
        for receive in [
            |sock: BorrowedFd<'_>| {
                let mut out = Vec::with_capacity(16);
                recv_nonblocking(sock, &mut out, 2).map(drop)
            },
            |sock: BorrowedFd<'_>| {
                let mut buf = [0u8; 16];
                recv_with_at_most(sock, &mut buf, 2).map(drop)
            },
        ] {
            let (a, b) = socketpair().unwrap();
            let (mut reader, writer) = std::io::pipe().unwrap();
            let copies = [
                writer.as_fd(),
                writer.as_fd(),
                writer.as_fd(),
                writer.as_fd(),
            ];
            send_with_fds(a.as_fd(), b"four", &copies).unwrap();
            drop(writer);
            let err = receive(b.as_fd()).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
            assert!(writer_closed(&mut reader), "a copy of the writer leaked");
        }
    }

    #[test]
    fn descriptors_that_fit_arrive() {
        let (a, b) = socketpair().unwrap();
        let (mut reader, writer) = std::io::pipe().unwrap();
        send_with_fds(a.as_fd(), b"two", &[writer.as_fd(), writer.as_fd()]).unwrap();
        drop(writer);
        let mut out = Vec::with_capacity(16);
        let (n, fds) = recv_nonblocking(b.as_fd(), &mut out, 2).unwrap();
        assert_eq!((n, &out[..], fds.len()), (3, &b"two"[..], 2));
        drop(fds);
        assert!(writer_closed(&mut reader));
    }

    #[test]
    fn a_socket_pair_sees_this_process_as_its_peer() {
        let (a, _b) = socketpair().unwrap();
        let cred = peer_credentials(a.as_fd()).unwrap();
        assert_eq!(cred.pid, crate::sys::process::getpid());
        assert_eq!(cred.uid, effective_uid());
        // SAFETY: getegid has no preconditions and cannot fail.
        assert_eq!(cred.gid, unsafe { libc::getegid() });
    }

    #[test]
    fn a_socket_that_is_not_connected_has_no_peer() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(peer_credentials(file.as_fd()).is_err());
    }
}
