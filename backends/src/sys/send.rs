//! Sending a stream's batch: `sendmsg` of iovecs over frozen buffers, and the bookkeeping of
//! partial writes.

use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd};

use bytes::{Buf, Bytes};

use super::{cvt, is_interrupted, is_would_block};

/// The most iovecs one `sendmsg` takes (`UIO_MAXIOV` on Linux, `IOV_MAX` elsewhere; 1024 on
/// every system gnet runs on).
#[cfg(target_os = "linux")]
pub(crate) const IOV_MAX: usize = libc::UIO_MAXIOV as usize;
/// The most iovecs one `sendmsg` takes (`UIO_MAXIOV` on Linux, `IOV_MAX` elsewhere; 1024 on
/// every system gnet runs on).
#[cfg(not(target_os = "linux"))]
pub(crate) const IOV_MAX: usize = libc::IOV_MAX as usize;

/// The flags of every stream send: `MSG_NOSIGNAL`, so that a closed peer is `EPIPE` and never
/// a `SIGPIPE`; none where there is no such flag (the socket has `SO_NOSIGPIPE` instead, see
/// [`super::set_nosigpipe`]).
#[cfg(gnet_msg_nosignal)]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(gnet_msg_nosignal))]
const SEND_FLAGS: libc::c_int = 0;

/// One `sendmsg` (with [`SEND_FLAGS`]) of `iov` (at most [`IOV_MAX`] entries); returns the bytes
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
    let n = cvt(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, SEND_FLAGS) })?;
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
