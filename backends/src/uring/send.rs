//! Sending on a stream: one `SEND` (one buffer) or `SENDMSG` (several) in flight per
//! connection, from the frozen `Bytes` the loop handed over, resubmitted for the rest after a
//! short send; `sent` once the whole batch is in the kernel. Finished operations (box and
//! iovec array) are kept for reuse, so a send allocates nothing in the steady state.
//!
//! `SEND_ZC` is not used: measured on loopback (`benches/send_zc.rs`) it costs more below
//! 64 KiB, and its buffers must outlive the send's completion (until the notification),
//! which the one-send contract does not model yet.

use bytes::Bytes;
use io_uring::opcode;
use io_uring::types::Fd;

use super::state::Pending;
use super::user_data::{cqe_error, Kind, Tag};
use super::Uring;
use crate::contract::{Id, Sink};

/// The most finished send operations kept for reuse.
pub(super) const SPARE_SENDS: usize = 1024;

impl Uring {
    /// [`Backend::send`](crate::Backend::send): loads a (reused) operation with `bufs` and
    /// submits it, unless the connection is closing.
    pub(super) fn queue_send(&mut self, conn: Id, bufs: Vec<Bytes>) {
        let mut op = self.spare_sends.pop().unwrap_or_else(SendOp::empty);
        op.load(bufs);
        let Some(c) = self.conn_mut(conn) else {
            log::debug!("io_uring: send on unknown connection {conn:?} dropped");
            return self.recycle_send(op);
        };
        if c.closing {
            return self.recycle_send(op);
        }
        if c.send.is_some() {
            log::error!("io_uring: second send in flight on {conn:?}; dropped (contract)");
            debug_assert!(false, "second send in flight on {conn:?}");
            return self.recycle_send(op);
        }
        if op.total == 0 {
            self.pending.push_back(Pending::Sent(conn, 0));
            return self.recycle_send(op);
        }
        c.send = Some(op);
        self.submit_send(conn.index());
    }

    /// Submits (or resubmits the rest of) the connection's send.
    pub(super) fn submit_send(&mut self, index: usize) {
        let Some(Some(c)) = self.conns.get_mut(index) else {
            return;
        };
        let (fd, ud) = (c.fd, Tag::conn(Kind::Send, c.id).encode());
        let Some(op) = c.send.as_mut() else {
            return;
        };
        c.ops += 1;
        let rest = op.remaining();
        let sqe = if rest.len() == 1 {
            let len = rest[0].iov_len.min(u32::MAX as usize) as u32;
            opcode::Send::new(Fd(fd), rest[0].iov_base as *const u8, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        } else {
            opcode::SendMsg::new(Fd(fd), op.prepare_msg())
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        };
        // SAFETY: the bytes, the iovec array and the msghdr belong to the boxed `SendOp`
        // owned by the connection; it is neither moved nor dropped before this operation's
        // completion is reaped (the connection is only forgotten once its `ops` is zero).
        unsafe { self.push(sqe.user_data(ud)) };
    }

    /// A send completed: done (report `sent`, hand the bytes back), short (send the rest),
    /// or failed.
    pub(super) fn on_send<S: Sink>(&mut self, id: Id, res: i32, sink: &mut S) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        conn.ops -= 1;
        let mut resubmit = false;
        let mut cancel_recv = false;
        let mut finished = None;
        let mut completed = false;
        if conn.closing {
            finished = conn.send.take();
        } else if let Some(op) = conn.send.as_mut() {
            if res >= 0 {
                if op.advance(res as usize) {
                    let total = op.total;
                    finished = conn.send.take();
                    completed = true;
                    sink.sent(id, total);
                } else {
                    resubmit = true;
                }
            } else if res == -libc::EAGAIN || res == -libc::EINTR {
                resubmit = true;
            } else {
                finished = conn.send.take();
                if !conn.failed {
                    conn.failed = true;
                    conn.ended = true;
                    cancel_recv = conn.recv_armed && conn.cancels == 0;
                    sink.failed(id, cqe_error(res));
                }
            }
        }
        if let Some(mut op) = finished {
            if completed {
                sink.reclaim(op.take_bufs());
            }
            self.recycle_send(op);
        }
        if resubmit {
            self.submit_send(id.index());
        }
        if cancel_recv {
            self.cancel_recv(id);
        }
        self.after_op(id, sink);
    }

    /// Releases a finished send's bytes and keeps the operation for reuse.
    fn recycle_send(&mut self, mut op: Box<SendOp>) {
        op.clear();
        if self.spare_sends.len() < SPARE_SENDS {
            self.spare_sends.push(op);
        }
    }
}

/// Most iovecs handed to one `sendmsg` (the kernel's `UIO_MAXIOV`).
const MAX_IOV: usize = 1024;

/// One in-flight send: the frozen `Bytes`, their iovecs and the `msghdr` that points at them.
///
/// Lives in a `Box` owned by the connection until the send completes, so every address the
/// kernel was given (the iovec array, the `msghdr`, the bytes) stays valid and unmoved while
/// the operation is in flight.
pub(super) struct SendOp {
    /// Keeps the bytes alive while the kernel reads them; handed back by `take_bufs`.
    bufs: Vec<Bytes>,
    iov: Vec<libc::iovec>,
    /// First iovec not yet completely sent.
    first: usize,
    pub msg: libc::msghdr,
    pub total: usize,
    pub done: usize,
}

impl SendOp {
    /// An empty operation, ready for [`SendOp::load`].
    pub fn empty() -> Box<SendOp> {
        Box::new(SendOp {
            bufs: Vec::new(),
            iov: Vec::new(),
            first: 0,
            // SAFETY: `msghdr` is a plain C struct for which all-zero bytes is a valid value
            // (null pointers, zero lengths).
            msg: unsafe { std::mem::zeroed() },
            total: 0,
            done: 0,
        })
    }

    /// An operation sending `bufs`.
    #[cfg(test)]
    pub fn new(bufs: Vec<Bytes>) -> Box<SendOp> {
        let mut op = SendOp::empty();
        op.load(bufs);
        op
    }

    /// Makes this (cleared) operation send `bufs`, reusing its iovec array.
    pub fn load(&mut self, bufs: Vec<Bytes>) {
        debug_assert!(self.iov.is_empty() && self.bufs.is_empty());
        self.iov
            .extend(bufs.iter().filter(|b| !b.is_empty()).map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            }));
        self.total = self.iov.iter().map(|v| v.iov_len).sum();
        self.done = 0;
        self.first = 0;
        self.bufs = bufs;
    }

    /// The bytes, taken out once the send completed (for [`crate::Sink::reclaim`]).
    pub fn take_bufs(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.bufs)
    }

    /// Releases the bytes (the send completed or was abandoned) and keeps the allocations
    /// for the next send.
    pub fn clear(&mut self) {
        self.iov.clear();
        self.bufs = Vec::new();
        self.msg.msg_iov = std::ptr::null_mut();
        self.msg.msg_iovlen = 0;
        self.total = 0;
        self.done = 0;
        self.first = 0;
    }

    /// The iovecs still to send (at most [`MAX_IOV`]).
    pub fn remaining(&self) -> &[libc::iovec] {
        let end = self.iov.len().min(self.first + MAX_IOV);
        &self.iov[self.first..end]
    }

    /// Points the `msghdr` at the remaining iovecs and returns it.
    pub fn prepare_msg(&mut self) -> *const libc::msghdr {
        let end = self.iov.len().min(self.first + MAX_IOV);
        let rest = &mut self.iov[self.first..end];
        self.msg.msg_iov = rest.as_mut_ptr();
        self.msg.msg_iovlen = rest.len() as _;
        &self.msg
    }

    /// Accounts for `n` more bytes in the kernel; true when everything is sent.
    pub fn advance(&mut self, mut n: usize) -> bool {
        self.done += n;
        while n > 0 && self.first < self.iov.len() {
            let v = &mut self.iov[self.first];
            if n >= v.iov_len {
                n -= v.iov_len;
                self.first += 1;
            } else {
                // SAFETY: `n < iov_len`, so the advanced pointer stays inside the same `Bytes`.
                v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n) }.cast();
                v.iov_len -= n;
                n = 0;
            }
        }
        self.done >= self.total
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::SendOp;

    #[test]
    fn uring_send_op_advance() {
        let mut op = SendOp::new(vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"defgh"),
        ]);
        assert_eq!(op.total, 8);
        assert_eq!(op.remaining().len(), 2);
        assert!(!op.advance(4));
        assert_eq!(op.remaining().len(), 1);
        assert_eq!(op.remaining()[0].iov_len, 4);
        // SAFETY: the iovec points into the live `Bytes` owned by `op`, 4 bytes long.
        let rest =
            unsafe { std::slice::from_raw_parts(op.remaining()[0].iov_base.cast::<u8>(), 4) };
        assert_eq!(rest, b"efgh");
        assert!(op.advance(4));
    }
}
