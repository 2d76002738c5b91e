//! System-call helpers of the readiness backends (epoll, kqueue) and of io_uring's accept path.
//!
//! Thin, safe wrappers: each converts the C return convention into an [`io::Result`] through
//! [`cvt`] (so errors are `io::Error::last_os_error()`), takes descriptors as [`BorrowedFd`]
//! and owns what it creates as [`OwnedFd`]. This file is POSIX; what one platform has that
//! the others lack lives beside it:
//!
//! | file       | what                                                                    |
//! |------------|-------------------------------------------------------------------------|
//! | `mod.rs`   | errno classification ([`is_would_block`], [`is_interrupted`]; accept errors are sorted by `accept.rs`), [`recv`], [`accept`], [`sockaddr_to_addr`], [`set_nosigpipe`] |
//! | `send.rs`  | [`SendQueue`] (a frozen batch with partial-write bookkeeping) and [`send_vectored`] (`sendmsg` that never raises `SIGPIPE`) |
//! | `linux.rs` | [`EventFd`], the epoll backend's wake-up                                |
//! | `pipe.rs`  | [`Pipe`], the wake-up of kqueue where there is no `EVFILT_USER`          |
//!
//! `SIGPIPE`: Linux and most BSDs have `MSG_NOSIGNAL` per call; Apple's systems do not
//! (`gnet_msg_nosignal` off), so the kqueue backend sets `SO_NOSIGPIPE` on each socket it is
//! lent ([`set_nosigpipe`]) and sends with no flag. `accept4` (non-blocking and close-on-exec
//! in one call) exists everywhere but on Apple's systems (`gnet_no_accept4`), where [`accept`]
//! is `accept` followed by two `fcntl`s.
#![allow(dead_code)] // Shared by three backends; any may be compiled without the others.

#[cfg(gnet_epoll)]
mod linux;
#[cfg(gnet_kq_pipe_waker)]
mod pipe;
#[cfg(gnet_readiness)]
mod send;

#[cfg(gnet_epoll)]
pub(crate) use linux::EventFd;
#[cfg(gnet_kq_pipe_waker)]
pub(crate) use pipe::Pipe;
#[cfg(gnet_readiness)]
pub(crate) use send::SendQueue;

use std::ffi::OsStr;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream};
#[cfg(gnet_no_accept4)]
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use crate::socket::{Addr, Socket};

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

/// Accepts one connection, non-blocking and close-on-exec: `accept4(SOCK_NONBLOCK |
/// SOCK_CLOEXEC)`, or where there is no `accept4` (`gnet_no_accept4`) `accept` and then
/// `fcntl` (another thread's `fork` + `exec` between the two could inherit the descriptor;
/// there is no way around that there).
///
/// The socket becomes a [`Socket::Unix`] for an `AF_UNIX` peer and a [`Socket::Tcp`] for
/// `AF_INET`/`AF_INET6`.
///
/// # Errors
/// `WouldBlock` when no connection is pending; the errors of `accept(2)` (see
/// `crate::accept::classify`); `InvalidData` for an address family other than these three (the
/// connection is then closed); an error of `fcntl` (the connection is then closed).
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<(Socket, Addr)> {
    // SAFETY: `sockaddr_storage` is plain old data for which all-zero bytes are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let addr_ptr = (&mut storage as *mut libc::sockaddr_storage).cast();
    #[cfg(not(gnet_no_accept4))]
    // SAFETY: `listener` is a live descriptor for the duration of the borrow; `storage` is
    // valid for writes of `len` bytes and `len` is valid for reads and writes; the kernel
    // writes at most `len` bytes and stores the real length back into `len`.
    let fd = cvt(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            addr_ptr,
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    #[cfg(gnet_no_accept4)]
    // SAFETY: as for `accept4` above.
    let fd = cvt(unsafe { libc::accept(listener.as_raw_fd(), addr_ptr, &mut len) })?;
    // SAFETY: `accept` just returned `fd`: it is open and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    #[cfg(gnet_no_accept4)]
    set_nonblocking_cloexec(owned.as_fd())?;
    let addr = sockaddr_to_addr(&storage, len)?;
    let socket = match addr {
        Addr::Unix(_) => Socket::Unix(UnixStream::from(owned)),
        Addr::Inet(_) => Socket::Tcp(TcpStream::from(owned)),
    };
    Ok((socket, addr))
}

/// Makes `fd` non-blocking and close-on-exec, with `fcntl`.
///
/// # Errors
/// Whatever `fcntl` reports.
pub(crate) fn set_nonblocking_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: `fd` is live for the borrow; `F_GETFL`/`F_SETFL`/`F_SETFD` take and return
    // integers only.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        cvt(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
        cvt(libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC))?;
    }
    Ok(())
}

/// Asks the kernel not to raise `SIGPIPE` for sends on `fd` (`SO_NOSIGPIPE`), where sends
/// cannot ask it per call (`gnet_msg_nosignal` off: Apple's systems); elsewhere nothing to do.
///
/// # Errors
/// Whatever `setsockopt` reports.
pub(crate) fn set_nosigpipe(fd: BorrowedFd<'_>) -> io::Result<()> {
    #[cfg(not(gnet_msg_nosignal))]
    {
        let on: libc::c_int = 1;
        // SAFETY: `fd` is live for the borrow; `on` is valid for reads of its size, which is
        // the length passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NOSIGPIPE,
                (&on as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        cvt(r)?;
    }
    #[cfg(gnet_msg_nosignal)]
    let _ = fd;
    Ok(())
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
