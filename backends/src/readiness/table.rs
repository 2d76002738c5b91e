//! Everything the backend tracks for the loop besides listeners, in one table indexed by
//! [`Id::index`]: the loop keeps indexes unique among everything live, whatever its kind, so
//! an event's token is one index into one table, and a stale id (an older generation at the
//! same index) is told apart by comparing the whole [`Id`].
//!
//! | entry        | registered with the selector for           | leaves the table                 |
//! |--------------|--------------------------------------------|----------------------------------|
//! | `Stream`     | `Interest::Stream`, in `add_conn`          | `close`                          |
//! | `Datagram`   | `Interest::Datagram`, in `add_datagram`    | `close`                          |
//! | `Connecting` | `Interest::Connect` while `connect(2)` is pending | `connected` reported, or `close` |

use std::os::fd::BorrowedFd;

use crate::contract::Id;
use crate::selector::Interest;

use super::conn::Conn;
use super::connect::Connecting;
use super::dgram::Dgram;

/// One tracked socket.
#[derive(Debug)]
pub(super) enum Entry {
    /// A stream connection (`add_conn`).
    Stream(Conn),
    /// A datagram socket (`add_datagram`).
    Datagram(Dgram),
    /// A socket `connect` is connecting, until `connected` is reported.
    Connecting(Connecting),
}

impl Entry {
    pub(super) fn id(&self) -> Id {
        match self {
            Entry::Stream(c) => c.id,
            Entry::Datagram(d) => d.id,
            Entry::Connecting(c) => c.id,
        }
    }

    /// The descriptor and what it is registered for, if it is registered with the selector.
    pub(super) fn registration(&self) -> Option<(BorrowedFd<'_>, Interest)> {
        match self {
            Entry::Stream(c) => Some((c.fd(), Interest::Stream)),
            Entry::Datagram(d) => Some((d.fd(), Interest::Datagram)),
            Entry::Connecting(c) => c.registered_fd().map(|fd| (fd, Interest::Connect)),
        }
    }
}

/// The entries by [`Id::index`].
#[derive(Debug, Default)]
pub(super) struct Table {
    slots: Vec<Option<Entry>>,
    live: usize,
}

impl Table {
    /// Entries live (for [`crate::Stats::conns`]).
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Whether the index is free (the loop may reuse an index only after `closed` or
    /// `connected`).
    pub(super) fn is_free(&self, index: usize) -> bool {
        self.slots.get(index).map_or(true, Option::is_none)
    }

    pub(super) fn insert(&mut self, entry: Entry) {
        let index = entry.id().index();
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || None);
        }
        debug_assert!(self.slots[index].is_none());
        self.slots[index] = Some(entry);
        self.live += 1;
    }

    pub(super) fn remove(&mut self, id: Id) -> Option<Entry> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.as_ref()?.id() != id {
            return None;
        }
        self.live -= 1;
        slot.take()
    }

    pub(super) fn contains(&self, id: Id) -> bool {
        self.slots
            .get(id.index())
            .and_then(Option::as_ref)
            .is_some_and(|e| e.id() == id)
    }

    /// The live entry `id` (index and generation must both match).
    pub(super) fn get_mut(&mut self, id: Id) -> Option<&mut Entry> {
        self.by_index(id.index()).filter(|e| e.id() == id)
    }

    /// The live stream connection `id`.
    pub(super) fn stream_mut(&mut self, id: Id) -> Option<&mut Conn> {
        match self.get_mut(id) {
            Some(Entry::Stream(c)) => Some(c),
            _ => None,
        }
    }

    /// The live datagram socket `id`.
    pub(super) fn dgram_mut(&mut self, id: Id) -> Option<&mut Dgram> {
        match self.get_mut(id) {
            Some(Entry::Datagram(d)) => Some(d),
            _ => None,
        }
    }

    /// The live entry at `index`, as an event's token names it.
    pub(super) fn by_index(&mut self, index: usize) -> Option<&mut Entry> {
        self.slots.get_mut(index).and_then(Option::as_mut)
    }
}
