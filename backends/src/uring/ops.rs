//! What rides in a submission's `user_data`, and the state of one in-flight send.
//!
//! # `user_data` layout
//!
//! ```text
//!  63    60 59                         32 31                          0
//! +--------+-----------------------------+-----------------------------+
//! |  kind  |   index (28 bits)           |   generation (32 bits)      |
//! +--------+-----------------------------+-----------------------------+
//! ```
//!
//! For connection operations `index`/`generation` are the [`Id`]'s, so a completion that
//! arrives for an old connection whose index was reused is recognised (generation mismatch)
//! and dropped after its buffer is returned. The other kinds (the listeners' poll, the
//! waker, global cancellations) carry zeros.

use std::io;

use bytes::Bytes;

use crate::contract::Id;

/// The largest connection or listener index that fits the encoding.
pub(super) const MAX_INDEX: usize = (1 << 28) - 1;

/// The operation a completion belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    /// The multishot poll on the epoll instance that watches the listeners.
    Accept = 1,
    /// Multishot receive on a connection.
    Recv = 2,
    /// Send or sendmsg on a connection.
    Send = 3,
    /// A cancellation aimed at a connection's operations (counted on the connection).
    ConnCancel = 4,
    /// The waker's eventfd poll.
    Wake = 5,
    /// Any other cancellation (listener removal, shutdown): only counted globally.
    Cancel = 6,
}

impl Kind {
    fn from_bits(bits: u8) -> Option<Kind> {
        Some(match bits {
            1 => Kind::Accept,
            2 => Kind::Recv,
            3 => Kind::Send,
            4 => Kind::ConnCancel,
            5 => Kind::Wake,
            6 => Kind::Cancel,
            _ => return None,
        })
    }
}

/// A decoded `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tag {
    pub kind: Kind,
    pub index: usize,
    pub generation: u32,
}

impl Tag {
    pub fn conn(kind: Kind, id: Id) -> Tag {
        Tag {
            kind,
            index: id.index(),
            generation: id.generation(),
        }
    }

    pub fn plain(kind: Kind) -> Tag {
        Tag {
            kind,
            index: 0,
            generation: 0,
        }
    }

    pub fn encode(self) -> u64 {
        debug_assert!(self.index <= MAX_INDEX);
        (u64::from(self.kind as u8) << 60)
            | (((self.index & MAX_INDEX) as u64) << 32)
            | u64::from(self.generation)
    }

    pub fn decode(user_data: u64) -> Option<Tag> {
        Some(Tag {
            kind: Kind::from_bits((user_data >> 60) as u8)?,
            index: ((user_data >> 32) as usize) & MAX_INDEX,
            generation: user_data as u32,
        })
    }

    pub fn conn_id(self) -> Id {
        Id::new(self.index, self.generation)
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

/// The `io::Error` for a negative completion result.
pub(super) fn cqe_error(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uring_user_data_round_trip() {
        let id = Id::new(MAX_INDEX, u32::MAX);
        for kind in [Kind::Recv, Kind::Send, Kind::ConnCancel] {
            let t = Tag::conn(kind, id);
            let back = Tag::decode(t.encode()).unwrap();
            assert_eq!(back, t);
            assert_eq!(back.conn_id(), id);
        }
        let l = Tag::plain(Kind::Accept);
        assert_eq!(Tag::decode(l.encode()), Some(l));
        assert_eq!(Tag::decode(0), None);
    }

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
