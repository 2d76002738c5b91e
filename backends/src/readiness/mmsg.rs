//! Many datagrams per system call on Linux: `recvmmsg(2)` into the loop's datagram buffers,
//! and `sendmmsg(2)` of a slice of [`Datagram`]s, one message per datagram. Elsewhere (the
//! kqueue systems) one datagram per call, `recvmsg(2)` and `sendmsg(2)`, behind the same
//! functions: a batch of one. (FreeBSD, NetBSD and OpenBSD have the `mmsg` calls too, with
//! types of their own; batching there is left for when it can be measured on them.)
//!
//! Both batch calls stop at the first message that fails. `recvmmsg` keeps that error for the next
//! call when it had received something (the kernel stores it as the socket's pending error);
//! `sendmmsg` then returns the count and the error is lost, so the caller starts again at the
//! first message not sent and meets the error on its own.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
#[cfg(target_os = "linux")]
use std::ptr;

use socket2::SockAddr;

use crate::contract::Datagram;
use crate::socket::Addr;
use crate::sys::{self, cvt};

/// The most datagrams one receive takes.
#[cfg(target_os = "linux")]
const RECV_BATCH: usize = 32;
/// The most datagrams one receive takes.
#[cfg(not(target_os = "linux"))]
const RECV_BATCH: usize = 1;

/// The receive buffers together hold at most this much, unless one buffer is larger: 16 at
/// the default `read_buffer_size` of 64 KiB, 32 from 32 KiB down.
const AREA_MAX: usize = 1024 * 1024;

/// The most datagrams one `sendmmsg` is handed (its addresses and iovecs live on the stack).
#[cfg(target_os = "linux")]
const SEND_BATCH: usize = 32;

/// What the kernel said about one datagram of the last receive.
#[derive(Clone, Copy, Debug, Default)]
struct Received {
    len: usize,
    name_len: libc::socklen_t,
    flags: libc::c_int,
}

/// The loop's datagram receive buffers: `batch` buffers of `read_buffer_size` bytes each, one
/// per message of a `recvmmsg`, with room for each source address. Empty until the first
/// datagram socket is added ([`RecvArea::reserve`]), so a loop serving only streams pays
/// nothing. Zeroed memory comes from the kernel untouched, so only the pages datagrams were
/// written into become resident.
pub(super) struct RecvArea {
    size: usize,
    batch: usize,
    bufs: Box<[u8]>,
    names: Box<[libc::sockaddr_storage]>,
    got: [Received; RECV_BATCH],
}

impl RecvArea {
    /// Plans `read_buffer_size` buffers; allocates nothing.
    pub(super) fn new(read_buffer_size: usize) -> Self {
        let size = read_buffer_size.max(1);
        RecvArea {
            size,
            batch: (AREA_MAX / size).clamp(1, RECV_BATCH),
            bufs: Box::default(),
            names: Box::default(),
            got: [Received::default(); RECV_BATCH],
        }
    }

    /// Allocates the buffers, once (`recv` does it too, if need be).
    pub(super) fn reserve(&mut self) {
        if self.bufs.is_empty() {
            self.bufs = vec![0; self.batch * self.size].into_boxed_slice();
            // SAFETY: `sockaddr_storage` is plain old data for which all-zero bytes are a valid
            // value.
            let zero: libc::sockaddr_storage = unsafe { mem::zeroed() };
            self.names = vec![zero; self.batch].into_boxed_slice();
        }
    }

    /// Buffers allocated (0 before [`RecvArea::reserve`]).
    pub(super) fn buffers(&self) -> usize {
        if self.bufs.is_empty() {
            0
        } else {
            self.batch
        }
    }

    /// The most datagrams one [`RecvArea::recv`] can return.
    pub(super) fn batch(&self) -> usize {
        self.batch
    }

    /// One `recvmmsg(MSG_DONTWAIT)` (elsewhere `recvmsg`) of at most `max` datagrams (and at most
    /// [`RecvArea::batch`]); returns how many arrived, each then read with
    /// [`RecvArea::datagram`].
    ///
    /// # Errors
    /// `WouldBlock` when nothing is queued, `Interrupted`, or an error the kernel had for the
    /// socket (`ConnectionRefused` from an ICMP port unreachable, `EHOSTUNREACH`, ...), which
    /// the next call does not return again.
    #[cfg(target_os = "linux")]
    pub(super) fn recv(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        self.reserve();
        let n = max.min(self.batch);
        let mut iov = [libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        }; RECV_BATCH];
        let base = self.bufs.as_mut_ptr();
        for (i, slot) in iov[..n].iter_mut().enumerate() {
            slot.iov_base = base.wrapping_add(i * self.size).cast();
            slot.iov_len = self.size;
        }
        // SAFETY: `mmsghdr` is plain old data for which all-zero bytes are a valid value.
        let mut hdrs: [libc::mmsghdr; RECV_BATCH] = unsafe { mem::zeroed() };
        let iov_ptr = iov.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        for (i, h) in hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_name = names.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov_ptr.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `fd` is live for the borrow. The first `n` headers are initialised, and each
        // points to: one iovec of the array above (alive to the end of this function) that
        // describes its own `size` bytes of `bufs` (allocated by `reserve` above with
        // batch * size bytes and n <= batch, so in bounds and disjoint), and its own `sockaddr_storage` of `names` (n <= names.len()) with
        // `msg_namelen` its size; no control buffer. Nothing else reads or writes `bufs`,
        // `names` or the arrays during the call. A null timeout is allowed (no timeout).
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                ptr::null_mut(),
            )
        };
        let k = cvt(r)? as usize;
        for (got, h) in self.got.iter_mut().zip(&hdrs[..k]) {
            *got = Received {
                len: h.msg_len as usize,
                name_len: h.msg_hdr.msg_namelen,
                flags: h.msg_hdr.msg_flags,
            };
        }
        Ok(k)
    }

    /// One `recvmsg(MSG_DONTWAIT)` of one datagram (`max` is at least 1 and the batch is 1).
    ///
    /// # Errors
    /// As for the batch: `WouldBlock`, `Interrupted`, or the socket's pending error.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn recv(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        self.reserve();
        let mut iov = libc::iovec {
            iov_base: self.bufs.as_mut_ptr().cast(),
            iov_len: self.size,
        };
        // SAFETY: `msghdr` is plain old data for which all-zero bytes are a valid value.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = self.names.as_mut_ptr().cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        // SAFETY: `fd` is live for the borrow. `msg` points to one iovec describing the first
        // `size` bytes of `bufs` (allocated by `reserve` with at least that many) and to the
        // first `sockaddr_storage` of `names` with `msg_namelen` its size; no control buffer.
        // Nothing else reads or writes them during the call.
        let r = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        let len = cvt(r)? as usize;
        self.got[0] = Received {
            len,
            name_len: msg.msg_namelen,
            flags: msg.msg_flags,
        };
        Ok(1)
    }

    /// The `i`-th datagram of the last [`RecvArea::recv`]: its source, its bytes (at most
    /// `read_buffer_size`), and whether the kernel cut it short (`MSG_TRUNC`).
    ///
    /// The source is `InvalidData` when it is not an IP address (a socket of another family
    /// handed over as a datagram socket).
    pub(super) fn datagram(&self, i: usize) -> (io::Result<SocketAddr>, &[u8], bool) {
        let got = self.got[i];
        let start = i * self.size;
        let data = &self.bufs[start..start + got.len.min(self.size)];
        let from = match sys::sockaddr_to_addr(&self.names[i], got.name_len) {
            Ok(Addr::Inet(a)) => Ok(a),
            Ok(Addr::Unix(_)) | Err(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a datagram from an address that is not an IP address",
            )),
        };
        (from, data, got.flags & libc::MSG_TRUNC != 0)
    }
}

/// One `sendmmsg(MSG_NOSIGNAL | MSG_DONTWAIT)` of the first [`SEND_BATCH`] datagrams at most,
/// each one message of one iovec, to its `to` or, for `None`, the connected peer. Returns how
/// many the kernel took, from the first; each whole (a datagram is never sent in part).
///
/// # Errors
/// The error of the first datagram, which was not sent: `WouldBlock` (the send buffer is
/// full), `Interrupted`, or why the kernel refused it (`EMSGSIZE`, `ENETUNREACH`, a pending
/// `ECONNREFUSED`, ...).
#[cfg(target_os = "linux")]
pub(super) fn send(fd: BorrowedFd<'_>, dgrams: &[Datagram]) -> io::Result<usize> {
    let n = dgrams.len().min(SEND_BATCH);
    if n == 0 {
        return Ok(0);
    }
    let names: [Option<SockAddr>; SEND_BATCH] =
        std::array::from_fn(|i| dgrams.get(i).and_then(|d| d.to).map(SockAddr::from));
    let mut iov = [libc::iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    }; SEND_BATCH];
    for (slot, d) in iov.iter_mut().zip(&dgrams[..n]) {
        slot.iov_base = d.data.as_ptr().cast_mut().cast();
        slot.iov_len = d.data.len();
    }
    // SAFETY: `mmsghdr` is plain old data for which all-zero bytes are a valid value.
    let mut hdrs: [libc::mmsghdr; SEND_BATCH] = unsafe { mem::zeroed() };
    let iov_ptr = iov.as_mut_ptr();
    for (i, (h, name)) in hdrs[..n].iter_mut().zip(&names).enumerate() {
        if let Some(name) = name {
            h.msg_hdr.msg_name = name.as_ptr().cast_mut().cast();
            h.msg_hdr.msg_namelen = name.len();
        }
        h.msg_hdr.msg_iov = iov_ptr.wrapping_add(i);
        h.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `fd` is live for the borrow. The first `n` headers are initialised, and each
    // points to one iovec of the array above describing the bytes of a `Bytes` in `dgrams`
    // (borrowed, so alive and unchanged for the call), and names either no address or a
    // `SockAddr` of `names` with its length; no control buffer. The kernel only reads those,
    // and writes only `msg_len` of the headers.
    let r = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            (libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) as _,
        )
    };
    match cvt(r)? {
        // Not seen from Linux (an error comes back instead); never a loop without progress.
        0 => Err(io::ErrorKind::WouldBlock.into()),
        k => Ok(k as usize),
    }
}

/// One `sendmsg(MSG_DONTWAIT)` of the first datagram (a datagram socket raises no
/// `SIGPIPE`), to its `to` or, for `None`, the connected peer: the batch of one of the
/// systems without `sendmmsg` here. Returns 1 when the kernel took it, whole.
///
/// # Errors
/// As for the batch: why the kernel did not take the datagram.
#[cfg(not(target_os = "linux"))]
pub(super) fn send(fd: BorrowedFd<'_>, dgrams: &[Datagram]) -> io::Result<usize> {
    let Some(d) = dgrams.first() else {
        return Ok(0);
    };
    let name = d.to.map(SockAddr::from);
    let mut iov = libc::iovec {
        iov_base: d.data.as_ptr().cast_mut().cast(),
        iov_len: d.data.len(),
    };
    // SAFETY: `msghdr` is plain old data for which all-zero bytes are a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    if let Some(name) = &name {
        msg.msg_name = name.as_ptr().cast_mut().cast();
        msg.msg_namelen = name.len();
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: `fd` is live for the borrow; `msg` points to one iovec describing the bytes of a
    // `Bytes` in `dgrams` (borrowed, so alive and unchanged for the call) and names either no
    // address or `name` with its length; no control buffer. The kernel only reads them.
    let r = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
    cvt(r)?;
    Ok(1)
}
