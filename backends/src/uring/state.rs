//! What the backend tracks per id between the loop's requests and the kernel's completions.

use std::io;
use std::os::fd::RawFd;

use super::send::SendOp;
use super::sendmsg::Batch;
use super::user_data::MAX_INDEX;
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

/// A datagram socket, in `Uring::dgrams`.
pub(super) struct Dgram {
    pub id: Id,
    /// Borrowed from the loop's `Socket` until `closed`.
    pub fd: RawFd,
    /// Operations (receive, sends, cancellations) submitted and not completed.
    pub ops: u32,
    /// Cancellations among `ops`: no receive is armed while one is outstanding.
    pub cancels: u32,
    pub recv_armed: bool,
    pub paused: bool,
    /// On the starved list (receive ended with `ENOBUFS`).
    pub starved: bool,
    pub failed: bool,
    pub closing: bool,
    /// Receive errors since the last datagram (see `recvmsg.rs`).
    pub errors: u32,
    /// The batch of `send_to` in flight.
    pub batch: Option<Box<Batch>>,
}

impl Dgram {
    pub fn new(id: Id, fd: RawFd) -> Dgram {
        Dgram {
            id,
            fd,
            ops: 0,
            cancels: 0,
            recv_armed: false,
            paused: false,
            starved: false,
            failed: false,
            closing: false,
            errors: 0,
            batch: None,
        }
    }
}

/// A socket being connected, in `Uring::connects`. Boxed in its table: the kernel reads the
/// address from it until the connect completes.
pub(super) struct Connecting {
    pub id: Id,
    /// The destination the `CONNECT` points at.
    pub addr: socket2::SockAddr,
    /// The connect and a cancellation of it, submitted and not completed.
    pub ops: u32,
    pub closing: bool,
}

/// Something a [`Table`] holds: knows its id.
pub(super) trait Tracked {
    fn id(&self) -> Id;
}

impl Tracked for Dgram {
    fn id(&self) -> Id {
        self.id
    }
}

impl Tracked for Connecting {
    fn id(&self) -> Id {
        self.id
    }
}

/// Entries indexed by [`Id::index`], boxed so that an empty slot costs a pointer (the indexes
/// are the loop's, shared with the stream connections, so the table is as long as the highest
/// index it ever held).
pub(super) struct Table<T> {
    slots: Vec<Option<Box<T>>>,
    len: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Tracked> Table<T> {
    /// The entry `id`, if it is the current occupant of its index.
    pub fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        self.by_index(id.index()).filter(|e| e.id() == id)
    }

    /// The entry at `index`, whatever its generation.
    pub fn by_index(&mut self, index: usize) -> Option<&mut T> {
        self.slots.get_mut(index).and_then(|s| s.as_deref_mut())
    }

    pub fn contains_index(&self, index: usize) -> bool {
        matches!(self.slots.get(index), Some(Some(_)))
    }

    pub fn insert(&mut self, entry: Box<T>) {
        let index = entry.id().index();
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        debug_assert!(self.slots[index].is_none());
        self.slots[index] = Some(entry);
        self.len += 1;
    }

    pub fn remove(&mut self, id: Id) -> Option<Box<T>> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.as_ref().is_some_and(|e| e.id() == id) {
            self.len -= 1;
            slot.take()
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten().map(|b| &mut **b)
    }
}

/// Events produced outside `poll`, reported by the next one.
pub(super) enum Pending {
    Closed(Id),
    Sent(Id, usize),
    /// A connect that failed before it reached the kernel.
    Connected(Id, io::Error),
}

impl Uring {
    /// The connection `id`, if it is the current occupant of its index.
    pub(super) fn conn_mut(&mut self, id: Id) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .filter(|c| c.id == id)
    }

    /// Checks that `id` can be tracked: its index fits `user_data` and nothing live holds it.
    pub(super) fn check_new_id(&self, id: Id) -> io::Result<()> {
        let index = id.index();
        if index > MAX_INDEX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "index too large",
            ));
        }
        let stream = matches!(self.conns.get(index), Some(Some(_)));
        if stream || self.dgrams.contains_index(index) || self.connects.contains_index(index) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "index in use"));
        }
        Ok(())
    }
}
