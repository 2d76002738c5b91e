//! What the backend tracks per id between the loop's requests and the kernel's completions.

use std::os::fd::RawFd;

use super::send::SendOp;
use super::Uring;
use crate::contract::Id;

/// A stream connection, indexed by [`Id::index`] in `Uring::conns`.
pub(super) struct Conn {
    pub id: Id,
    /// Borrowed from the loop's `Socket` until `closed`.
    pub fd: RawFd,
    /// Operations (receive, send, cancellations) submitted and not completed.
    pub ops: u32,
    /// Cancellations among `ops`: no receive is armed while one is outstanding.
    pub cancels: u32,
    pub recv_armed: bool,
    pub paused: bool,
    /// On the starved list (receive ended with `ENOBUFS`).
    pub starved: bool,
    /// `eof` or `failed` was reported: receiving is over.
    pub ended: bool,
    pub failed: bool,
    pub closing: bool,
    pub send: Option<Box<SendOp>>,
}

impl Conn {
    /// A connection that has nothing in flight yet.
    pub fn new(id: Id, fd: RawFd) -> Conn {
        Conn {
            id,
            fd,
            ops: 0,
            cancels: 0,
            recv_armed: false,
            paused: false,
            starved: false,
            ended: false,
            failed: false,
            closing: false,
            send: None,
        }
    }
}

/// Events produced outside `poll`, reported by the next one.
pub(super) enum Pending {
    Closed(Id),
    Sent(Id, usize),
}

impl Uring {
    /// The connection `id`, if it is the current occupant of its index.
    pub(super) fn conn_mut(&mut self, id: Id) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .filter(|c| c.id == id)
    }
}
