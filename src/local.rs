//! What a callback can reach of its loop besides its own connection: the buffer pool, the
//! allocation of ids, and the operations it asks for on other connections of the same loop
//! (dial, write to, close, visit), which the loop carries out when the callback returns, in the same
//! iteration and without crossing threads.

use bytes::Bytes;
use gnet_backends::Id;

use crate::addr::ListenAddr;
use crate::conn::Peer;
use crate::outbound::BufPool;

/// The ids of a loop: indexes reused smallest-first-out, each with a fresh generation, for
/// listeners, connections and sockets being connected alike (one id space, as the backend
/// contract wants).
#[derive(Debug, Default)]
pub(crate) struct Ids {
    free: Vec<usize>,
    next: usize,
    generation: u32,
}

impl Ids {
    /// A new id (its index unused by anything live).
    pub(crate) fn take(&mut self) -> Id {
        self.generation = self.generation.wrapping_add(1);
        let index = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        Id::new(index, self.generation)
    }

    /// `id` is gone: its index may serve again.
    pub(crate) fn release(&mut self, id: Id) {
        self.free.push(id.index());
    }
}

/// A visit of every connection of the loop (`Conn::for_each_conn`).
pub(crate) type VisitAll<C> = Box<dyn FnMut(&mut Peer<'_, C>)>;
/// A visit of one connection (`Conn::with_conn`).
pub(crate) type VisitOne<C> = Box<dyn FnOnce(&mut Peer<'_, C>)>;

/// An operation a callback asked for, carried out when it returns.
pub(crate) enum Op<C> {
    /// Connect to `addr` under `id`; `ctx` becomes the new connection's context.
    Dial {
        id: Id,
        addr: ListenAddr,
        ctx: Option<C>,
    },
    /// Queue `data` on the connection `to`.
    WriteTo { to: Id, data: Bytes },
    /// Close the connection `id` (as `Conn::close`).
    Close { id: Id },
    /// Visit every open connection of the loop (`Conn::for_each_conn`).
    ForEach(VisitAll<C>),
    /// Visit the connection `id`, if it is open (`Conn::with_conn`).
    With { id: Id, f: VisitOne<C> },
}

/// The loop-wide part of what a callback can touch.
pub(crate) struct Local<C> {
    pub(crate) pool: BufPool,
    pub(crate) ids: Ids,
    pub(crate) ops: Vec<Op<C>>,
}

impl<C> Default for Local<C> {
    fn default() -> Self {
        Local {
            pool: BufPool::default(),
            ids: Ids::default(),
            ops: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reuse_indexes_with_new_generations() {
        let mut ids = Ids::default();
        let (a, b) = (ids.take(), ids.take());
        assert_eq!((a.index(), b.index()), (0, 1));
        ids.release(a);
        let c = ids.take();
        assert_eq!(c.index(), 0);
        assert_ne!(c, a, "a reused index gets a new generation");
        assert_eq!(ids.take().index(), 2);
    }
}
