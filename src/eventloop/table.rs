//! The loop's table of everything it has registered with its backend: connections and
//! listeners share one slab, so that their [`Id`]s never share an index (the backend contract:
//! a backend may keep one table by index), and every id carries a generation.

use gnet_backends::{Id, Listener};
use slab::Slab;

use crate::conn::ConnState;

// Connections are nearly all the entries; boxing them to save the few listeners' slots would
// cost an allocation and an indirection per connection.
#[allow(clippy::large_enum_variant)]
enum Entry<C> {
    Conn(ConnState<C>),
    Listener(Id, Listener),
}

pub(super) struct Table<C> {
    slab: Slab<Entry<C>>,
    generation: u32,
    conns: usize,
}

impl<C> Table<C> {
    pub(super) fn new() -> Self {
        Table {
            slab: Slab::new(),
            generation: 0,
            conns: 0,
        }
    }

    /// The id the next insertion gets (call [`Table::insert_conn`] with it before anything else
    /// is inserted).
    pub(super) fn next_id(&mut self) -> Id {
        self.generation = self.generation.wrapping_add(1);
        Id::new(self.slab.vacant_key(), self.generation)
    }

    /// Inserts a connection under the id [`Table::next_id`] gave.
    pub(super) fn insert_conn(&mut self, st: ConnState<C>) -> &mut ConnState<C> {
        let entry = self.slab.vacant_entry();
        debug_assert_eq!(entry.key(), st.id.index());
        self.conns += 1;
        match entry.insert(Entry::Conn(st)) {
            Entry::Conn(st) => st,
            Entry::Listener(..) => unreachable!("just inserted a connection"),
        }
    }

    /// Inserts a listener and returns its id.
    pub(super) fn insert_listener(&mut self, l: Listener) -> Id {
        let id = self.next_id();
        self.slab.insert(Entry::Listener(id, l));
        id
    }

    /// The live connection `id`, or `None` for a stale id or another kind of entry.
    pub(super) fn conn(&self, id: Id) -> Option<&ConnState<C>> {
        match self.slab.get(id.index()) {
            Some(Entry::Conn(st)) if st.id == id => Some(st),
            _ => None,
        }
    }

    /// As [`Table::conn`], mutably.
    pub(super) fn conn_mut(&mut self, id: Id) -> Option<&mut ConnState<C>> {
        match self.slab.get_mut(id.index()) {
            Some(Entry::Conn(st)) if st.id == id => Some(st),
            _ => None,
        }
    }

    /// Removes the connection `id`.
    pub(super) fn remove_conn(&mut self, id: Id) -> Option<ConnState<C>> {
        self.conn(id)?;
        self.conns -= 1;
        match self.slab.remove(id.index()) {
            Entry::Conn(st) => Some(st),
            Entry::Listener(..) => unreachable!("checked above"),
        }
    }

    /// Removes (and drops) the listener `id`.
    pub(super) fn remove_listener(&mut self, id: Id) {
        if matches!(self.slab.get(id.index()), Some(Entry::Listener(l, _)) if *l == id) {
            self.slab.remove(id.index());
        }
    }

    /// The ids of every listener.
    pub(super) fn listener_ids(&self) -> Vec<Id> {
        self.slab
            .iter()
            .filter_map(|(_, e)| match e {
                Entry::Listener(id, _) => Some(*id),
                Entry::Conn(_) => None,
            })
            .collect()
    }

    /// The listeners, with their ids.
    pub(super) fn listeners(&self) -> impl Iterator<Item = (Id, &Listener)> {
        self.slab.iter().filter_map(|(_, e)| match e {
            Entry::Listener(id, l) => Some((*id, l)),
            Entry::Conn(_) => None,
        })
    }

    /// The ids of every connection.
    pub(super) fn conn_ids(&self) -> Vec<Id> {
        self.slab
            .iter()
            .filter_map(|(_, e)| match e {
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
