//! The loop's table of everything it has registered with its backend: connections (streams,
//! datagram sockets, sockets being connected) and listeners, by the index of their [`Id`].
//! Ids come from the loop's [`Ids`](crate::local::Ids), which callbacks can reach too (a dial
//! from a callback gets its id at once), so the table only stores: their indexes never
//! coincide, as the backend contract wants, and every id carries a generation.

use gnet_backends::{Id, Listener};

use crate::conn::ConnState;

// Connections are nearly all the entries; boxing them to save the few listeners' slots would
// cost an allocation and an indirection per connection.
#[allow(clippy::large_enum_variant)]
enum Entry<C> {
    Conn(ConnState<C>),
    Listener(Id, Listener),
}

pub(super) struct Table<C> {
    entries: Vec<Option<Entry<C>>>,
    conns: usize,
}

impl<C> Table<C> {
    pub(super) fn new() -> Self {
        Table {
            entries: Vec::new(),
            conns: 0,
        }
    }

    fn slot(&mut self, id: Id) -> &mut Option<Entry<C>> {
        let index = id.index();
        if index >= self.entries.len() {
            self.entries.resize_with(index + 1, || None);
        }
        &mut self.entries[index]
    }

    /// Inserts a connection under its id (taken from the loop's `Ids`, its slot free).
    pub(super) fn insert_conn(&mut self, st: ConnState<C>) -> &mut ConnState<C> {
        self.conns += 1;
        let slot = self.slot(st.id);
        debug_assert!(slot.is_none(), "an id in use twice");
        match slot.insert(Entry::Conn(st)) {
            Entry::Conn(st) => st,
            Entry::Listener(..) => unreachable!("just inserted a connection"),
        }
    }

    /// Inserts a listener under its id.
    pub(super) fn insert_listener(&mut self, id: Id, l: Listener) {
        *self.slot(id) = Some(Entry::Listener(id, l));
    }

    /// The live connection `id`, or `None` for a stale id or another kind of entry.
    pub(super) fn conn(&self, id: Id) -> Option<&ConnState<C>> {
        match self.entries.get(id.index()) {
            Some(Some(Entry::Conn(st))) if st.id == id => Some(st),
            _ => None,
        }
    }

    /// As [`Table::conn`], mutably.
    pub(super) fn conn_mut(&mut self, id: Id) -> Option<&mut ConnState<C>> {
        match self.entries.get_mut(id.index()) {
            Some(Some(Entry::Conn(st))) if st.id == id => Some(st),
            _ => None,
        }
    }

    /// Removes the connection `id` (the caller releases the id).
    pub(super) fn remove_conn(&mut self, id: Id) -> Option<ConnState<C>> {
        self.conn(id)?;
        self.conns -= 1;
        match self.entries[id.index()].take() {
            Some(Entry::Conn(st)) => Some(st),
            _ => unreachable!("checked above"),
        }
    }

    /// Removes (and drops) the listener `id`.
    pub(super) fn remove_listener(&mut self, id: Id) {
        let slot = self.slot(id);
        if matches!(slot, Some(Entry::Listener(l, _)) if *l == id) {
            *slot = None;
        }
    }

    /// The ids of every listener.
    pub(super) fn listener_ids(&self) -> Vec<Id> {
        self.entries
            .iter()
            .flatten()
            .filter_map(|e| match e {
                Entry::Listener(id, _) => Some(*id),
                Entry::Conn(_) => None,
            })
            .collect()
    }

    /// The listeners, with their ids.
    pub(super) fn listeners(&self) -> impl Iterator<Item = (Id, &Listener)> {
        self.entries.iter().flatten().filter_map(|e| match e {
            Entry::Listener(id, l) => Some((*id, l)),
            Entry::Conn(_) => None,
        })
    }

    /// Every connection, in index order.
    pub(super) fn conns_mut(&mut self) -> impl Iterator<Item = &mut ConnState<C>> {
        self.entries.iter_mut().flatten().filter_map(|e| match e {
            Entry::Conn(st) => Some(st),
            Entry::Listener(..) => None,
        })
    }

    /// The ids of every connection.
    pub(super) fn conn_ids(&self) -> Vec<Id> {
        self.entries
            .iter()
            .flatten()
            .filter_map(|e| match e {
                Entry::Conn(st) => Some(st.id),
                Entry::Listener(..) => None,
            })
            .collect()
    }

    /// Whether no connection is left (listeners aside).
    pub(super) fn no_conns(&self) -> bool {
        self.conns == 0
    }
}
