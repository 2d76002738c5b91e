//! Shared Linux system-call helpers for the epoll and io_uring backends.
//!
//! Thin, safe wrappers: each converts the C return convention into an [`io::Result`] through
//! [`cvt`] (so errors are `io::Error::last_os_error()`), takes descriptors as [`BorrowedFd`]
//! and owns what it creates as [`OwnedFd`].
//!
//! - errno classification: [`is_would_block`], [`is_interrupted`] (accept errors are sorted by
//!   `accept.rs`, for every backend);
//! - receiving: [`recv`];
//! - accepting: [`accept4`] (non-blocking, close-on-exec) and [`sockaddr_to_addr`];
//! - waking: [`EventFd`];
//! - sending: [`SendQueue`] (a frozen batch with partial-write bookkeeping) and
//!   [`send_vectored`] (`sendmsg` with `MSG_NOSIGNAL`, so a closed peer is `EPIPE`, never a
//!   `SIGPIPE`).
#![allow(dead_code)] // Shared by two backends; either may be compiled without the other.

use std::ffi::OsStr;
use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use bytes::{Buf, Bytes};

use crate::socket::{Addr, Socket};

/// The most iovecs one `sendmsg` takes on Linux (`UIO_MAXIOV`, also `IOV_MAX`).
pub(crate) const IOV_MAX: usize = libc::UIO_MAXIOV as usize;

/// Converts a C return value: `-1` becomes `io::Error::last_os_error()`.
///
/// # Errors
/// The `errno` of the call that returned `-1`; call this right after the system call.
pub(crate) fn cvt<T: Copy + PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `EAGAIN` / `EWOULDBLOCK`: nothing more to do until the next readiness event.
pub(crate) fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// `EINTR`: retry the call.
pub(crate) fn is_interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// One `recv` into `buf`. `Ok(0)` means end of stream (when `buf` is not empty).
///
/// # Errors
/// `WouldBlock` when nothing is queued on a non-blocking socket, `Interrupted`, or the
/// connection's error (`ConnectionReset`, ...).
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `fd` is a live descriptor for the duration of the borrow; `buf` is valid for
    // writes of `buf.len()` bytes and is not aliased while the kernel writes into it.
    let n = cvt(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })?;
    Ok(n as usize)
}

/// Accepts one connection with `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`.
///
/// The socket becomes a [`Socket::Unix`] for an `AF_UNIX` peer and a [`Socket::Tcp`] for
/// `AF_INET`/`AF_INET6`.
///
/// # Errors
/// `WouldBlock` when no connection is pending; the errors of `accept(2)` (see
/// `crate::accept::classify`); `InvalidData` for an address family other than these three (the
/// connection is then closed).
pub(crate) fn accept4(listener: BorrowedFd<'_>) -> io::Result<(Socket, Addr)> {
    // SAFETY: `sockaddr_storage` is plain old data for which all-zero bytes are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: `listener` is a live descriptor for the duration of the borrow; `storage` is
    // valid for writes of `len` bytes and `len` is valid for reads and writes; the kernel
    // writes at most `len` bytes and stores the real length back into `len`.
    let fd = cvt(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            flags,
        )
    })?;
    // SAFETY: `accept4` just returned `fd`: it is open and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = sockaddr_to_addr(&storage, len)?;
    let socket = match addr {
        Addr::Unix(_) => Socket::Unix(UnixStream::from(owned)),
        Addr::Inet(_) => Socket::Tcp(TcpStream::from(owned)),
    };
    Ok((socket, addr))
}

/// Converts the first `len` bytes of `storage`, as filled by `accept`/`getpeername`, into an
/// [`Addr`]. An unnamed or abstract Unix address becomes `Addr::Unix(None)`.
///
/// # Errors
/// `InvalidData` for another address family or a length too short for the family.
pub(crate) fn sockaddr_to_addr(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> io::Result<Addr> {
    let len = len as usize;
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "unexpected socket address");
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, `len` covers it, and
            // `sockaddr_storage` is large and aligned enough for every socket address type.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
            let port = u16::from_be(a.sin_port);
            Ok(Addr::Inet(SocketAddr::V4(SocketAddrV4::new(ip, port))))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            let v6 = SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id);
            Ok(Addr::Inet(SocketAddr::V6(v6)))
        }
        libc::AF_UNIX => {
            // SAFETY: as above, for `sockaddr_un`; only the first `len` bytes are read below.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
            Ok(Addr::Unix(unix_path(a, len)))
        }
        _ => Err(invalid()),
    }
}

/// The path of a Unix socket address of `len` bytes, `None` when unnamed or abstract.
fn unix_path(a: &libc::sockaddr_un, len: usize) -> Option<PathBuf> {
    let offset = mem::offset_of!(libc::sockaddr_un, sun_path);
    let path_len = len.checked_sub(offset)?.min(a.sun_path.len());
    let raw = &a.sun_path[..path_len];
    if raw.first().map_or(true, |&c| c == 0) {
        return None;
    }
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Some(PathBuf::from(OsStr::from_bytes(&bytes)))
}

/// A non-blocking, close-on-exec eventfd used as a wake-up signal.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates an eventfd with a zero counter.
    ///
    /// # Errors
    /// Whatever `eventfd(2)` reports (`EMFILE`, `ENOMEM`, `ENOSYS` under a sandbox).
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: `eventfd` takes no pointers; the flags are valid for it.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `eventfd` just returned `fd`: it is open and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// The descriptor, to register with a poller.
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Adds one to the counter, making the eventfd readable. A counter at its maximum is
    /// already readable, so `EAGAIN` is success.
    ///
    /// # Errors
    /// Any other error of `write(2)`.
    pub(crate) fn notify(&self) -> io::Result<()> {
        let one: u64 = 1;
        loop {
            // SAFETY: the descriptor is owned by `self`; `one` is valid for reads of 8 bytes,
            // the size an eventfd write requires.
            let r = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            match cvt(r) {
                Ok(_) => return Ok(()),
                Err(e) if is_would_block(&e) => return Ok(()),
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and resets the counter; `Ok(0)` when it was already zero.
    ///
    /// # Errors
    /// Any error of `read(2)` other than `EAGAIN`.
    pub(crate) fn drain(&self) -> io::Result<u64> {
        let mut value: u64 = 0;
        loop {
            // SAFETY: the descriptor is owned by `self`; `value` is valid for writes of 8
            // bytes, the size an eventfd read requires.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
            match cvt(r) {
                Ok(_) => return Ok(value),
                Err(e) if is_would_block(&e) => return Ok(0),
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One `sendmsg(MSG_NOSIGNAL)` of `iov` (at most [`IOV_MAX`] entries); returns the bytes
/// taken by the kernel, which may be fewer than the total.
///
/// # Errors
/// `WouldBlock` when the send buffer is full, `Interrupted`, `BrokenPipe`,
/// `ConnectionReset`, ...
///
/// # Safety
/// Every `iovec` in `iov` must describe memory valid for reads of `iov_len` bytes for the
/// duration of the call.
pub(crate) unsafe fn send_vectored(fd: BorrowedFd<'_>, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: `msghdr` is plain old data for which all-zero bytes are a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = iov.len().min(IOV_MAX) as _;
    // SAFETY: `fd` is live for the borrow; `msg` names no address and no control data, and its
    // iovecs are readable for their lengths (the caller's obligation); the kernel only reads.
    let n = cvt(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })?;
    Ok(n as usize)
}

/// A batch of frozen buffers on its way into the kernel, in order, with the bookkeeping of
/// partial writes. Buffers already in the kernel stay in the batch (behind `first`) so the
/// whole batch, vector included, can be handed back for reuse when the send is done.
#[derive(Debug)]
pub(crate) struct SendQueue {
    bufs: Vec<Bytes>,
    /// The first buffer not completely in the kernel.
    first: usize,
    total: usize,
    remaining: usize,
}

impl SendQueue {
    /// Takes a batch (no copy).
    pub(crate) fn new(bufs: Vec<Bytes>) -> Self {
        let total = bufs.iter().map(Bytes::len).sum();
        let mut q = SendQueue {
            bufs,
            first: 0,
            total,
            remaining: total,
        };
        q.skip_empty();
        q
    }

    /// Appends more buffers behind the ones still queued.
    pub(crate) fn extend(&mut self, bufs: Vec<Bytes>) {
        let n: usize = bufs.iter().map(Bytes::len).sum();
        self.total += n;
        self.remaining += n;
        self.bufs.extend(bufs.into_iter().filter(|b| !b.is_empty()));
        self.skip_empty();
    }

    /// The length of everything handed in.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Bytes not yet taken by the kernel.
    pub(crate) fn remaining(&self) -> usize {
        self.remaining
    }

    /// Whether every byte is in the kernel.
    pub(crate) fn is_done(&self) -> bool {
        self.remaining == 0
    }

    /// The batch's buffers (for [`crate::Sink::reclaim`]), once every byte is in the kernel.
    pub(crate) fn take_sent(&mut self) -> Vec<Bytes> {
        debug_assert!(self.is_done());
        self.first = 0;
        std::mem::take(&mut self.bufs)
    }

    /// Records that the kernel took `n` more bytes.
    ///
    /// # Panics
    /// If `n` is more than [`SendQueue::remaining`].
    pub(crate) fn advance(&mut self, mut n: usize) {
        assert!(n <= self.remaining, "advanced past the end of a send");
        self.remaining -= n;
        while n > 0 {
            let front = &mut self.bufs[self.first];
            if n < front.len() {
                front.advance(n);
                break;
            }
            n -= front.len();
            self.first += 1;
        }
        self.skip_empty();
    }

    fn skip_empty(&mut self) {
        while self.bufs.get(self.first).is_some_and(Bytes::is_empty) {
            self.first += 1;
        }
    }

    /// Describes the unsent bytes in `out` (as many buffers as fit) and returns that prefix.
    /// The iovecs point into buffers owned by `self`: they stay valid until `self` is advanced
    /// past them or dropped.
    pub(crate) fn iovecs<'a>(&self, out: &'a mut [MaybeUninit<libc::iovec>]) -> &'a [libc::iovec] {
        let mut count = 0;
        for (slot, buf) in out
            .iter_mut()
            .zip(self.bufs[self.first..].iter().filter(|b| !b.is_empty()))
        {
            slot.write(libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            });
            count += 1;
        }
        // SAFETY: the first `count` elements were initialised just above, and `MaybeUninit<T>`
        // has the layout of `T`.
        unsafe { std::slice::from_raw_parts(out.as_ptr().cast::<libc::iovec>(), count) }
    }

    /// Writes on `fd` until everything is in the kernel (`Ok(true)`) or the socket's send
    /// buffer is full (`Ok(false)`), up to [`IOV_MAX`] buffers per system call.
    ///
    /// # Errors
    /// The socket's error (`BrokenPipe`, `ConnectionReset`, ...); the queue keeps what was not
    /// written.
    pub(crate) fn write_to(&mut self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        let mut storage = [const { MaybeUninit::<libc::iovec>::uninit() }; IOV_MAX];
        while !self.is_done() {
            let iov = self.iovecs(&mut storage);
            // SAFETY: `iovecs` describes bytes of `Bytes` held by `self`, which is borrowed
            // (and so neither advanced nor dropped) for the whole call.
            match unsafe { send_vectored(fd, iov) } {
                Ok(n) => self.advance(n),
                Err(e) if is_interrupted(&e) => continue,
                Err(e) if is_would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_queue_bookkeeping() {
        let parts = vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ];
        let mut q = SendQueue::new(parts);
        assert_eq!((q.total(), q.remaining()), (5, 5));
        q.advance(3);
        let mut storage = [const { MaybeUninit::<libc::iovec>::uninit() }; 4];
        let iov = q.iovecs(&mut storage);
        assert_eq!(iov.len(), 1);
        assert_eq!(iov[0].iov_len, 2);
        q.advance(2);
        assert!(q.is_done());
        assert_eq!(q.total(), 5);
    }
}
