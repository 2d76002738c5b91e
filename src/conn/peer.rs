//! Reaching the other connections of a loop: [`Peer`], a view of one of them, and the `Conn`
//! methods that visit them (`for_each_conn`, `with_conn`, `broadcast`, `broadcast_if`), which
//! the loop carries out when the callback returns. The engine-wide versions, callable from any
//! thread, are in `src/broadcast.rs`.

use std::sync::Arc;

use bytes::Bytes;
use gnet_backends::Addr;

use super::{Conn, ConnState};
use crate::error::{Error, Result};
use crate::handle::{ConnHandle, ConnId, LoopShared};
use crate::local::Op;
use crate::outbound::BufPool;

/// One connection of a loop, as a visit sees it ([`Conn::for_each_conn`],
/// [`Conn::with_conn`], [`Engine::for_each_conn`](crate::Engine::for_each_conn)): its
/// identity, its context, and writes and a close that behave as the connection's own
/// [`Conn::write`] and [`Conn::close`] would. There is no input to read: that is
/// `on_traffic`'s.
///
/// Visits run on the loop thread, after the callback that asked for them (or at the loop's
/// next iteration, from another thread) and see only the connections that are open then:
/// stream connections and connected UDP sockets whose `on_open` ran and that are not closing
/// or still dialing. A UDP server socket serves many peers and is not a connection.
pub struct Peer<'a, C> {
    st: &'a mut ConnState<C>,
    pool: &'a mut BufPool,
    shared: &'a Arc<LoopShared>,
}

impl<'a, C> Peer<'a, C> {
    pub(crate) fn new(
        st: &'a mut ConnState<C>,
        pool: &'a mut BufPool,
        shared: &'a Arc<LoopShared>,
    ) -> Self {
        Peer { st, pool, shared }
    }

    /// Whether a visit shows this connection: open, `on_open` done, no close asked for, not
    /// a UDP server socket.
    pub(crate) fn visible(st: &ConnState<C>) -> bool {
        st.is_open() && st.opened && !st.close_requested && !st.is_server_datagram()
    }

    /// The connection's identity.
    pub fn id(&self) -> ConnId {
        ConnId::new(self.shared.index, self.st.id)
    }

    /// Its context, if set.
    pub fn context(&self) -> Option<&C> {
        self.st.ctx.as_ref()
    }

    /// Its context, mutably.
    pub fn context_mut(&mut self) -> Option<&mut C> {
        self.st.ctx.as_mut()
    }

    /// Its context, made with `C::default()` first if there is none.
    pub fn context_or_default(&mut self) -> &mut C
    where
        C: Default,
    {
        self.st.ctx.get_or_insert_with(C::default)
    }

    /// Sets its context; returns the previous one.
    pub fn set_context(&mut self, ctx: C) -> Option<C> {
        self.st.ctx.replace(ctx)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &Addr {
        &self.st.peer
    }

    /// Whether this is a connected UDP socket (each write is one datagram).
    pub fn is_datagram(&self) -> bool {
        self.st.dgram.is_some()
    }

    /// Queues `data` (copied), as the connection's own [`Conn::write`]: never refused, sent
    /// with the connection's flush at the end of this loop iteration. Past
    /// [`Options::max_outbound_buffer`](crate::Options::max_outbound_buffer) the loop stops
    /// reading from the connection until it drains, as after any write; check
    /// [`Peer::outbound_buffered`] to spare a peer that does not read.
    pub fn write(&mut self, data: &[u8]) {
        self.st.queue(data, self.pool);
    }

    /// [`Peer::write`] without a copy: a broadcast hands every connection the same
    /// allocation.
    pub fn write_bytes(&mut self, data: Bytes) {
        self.st.queue_bytes(data);
    }

    /// Bytes queued for the connection and not yet in the kernel.
    pub fn outbound_buffered(&self) -> usize {
        self.st.pending()
    }

    /// Closes the connection once what was written to it is delivered (as [`Conn::close`]).
    pub fn close(&mut self) {
        self.st.close_requested = true;
    }

    /// A `Send + Clone` handle for other threads (as [`Conn::handle`]).
    pub fn handle(&self) -> ConnHandle {
        self.st.handle(self.shared)
    }
}

impl<C> Conn<'_, C> {
    /// Runs `f` on every connection of this loop — this one included — when this callback
    /// returns, in the same loop iteration, on this thread (so `f` need not be `Send`).
    /// It sees the connections open at that moment (see [`Peer`]); what `f` writes is sent
    /// with each connection's flush of this iteration. Other loops' connections are not
    /// visited: for every connection of the engine, use
    /// [`Engine::for_each_conn`](crate::Engine::for_each_conn).
    ///
    /// A panic in `f` is caught: the connection being visited is reset, as after a panicking
    /// callback, and the visit stops there.
    ///
    /// # Examples
    /// ```no_run
    /// use gnet::{Action, Conn, EventHandler};
    ///
    /// /// Relays every line to the other connections of its loop.
    /// struct Relay;
    /// impl EventHandler for Relay {
    ///     type Context = ();
    ///     fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
    ///         let line = gnet::Bytes::copy_from_slice(c.next_all());
    ///         let me = c.id();
    ///         c.for_each_conn(move |p| {
    ///             if p.id() != me {
    ///                 p.write_bytes(line.clone());
    ///             }
    ///         });
    ///         Action::None
    ///     }
    /// }
    /// ```
    pub fn for_each_conn(&mut self, f: impl FnMut(&mut Peer<'_, C>) + 'static) {
        self.local.ops.push(Op::ForEach(Box::new(f)));
    }

    /// Runs `f` on the connection `id` of this loop when this callback returns, if it is
    /// still open then (see [`Peer`]); otherwise `f` is dropped uncalled. The lookup by
    /// [`ConnId`], for state kept in another connection's context.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a connection of another loop: use its [`ConnHandle`], or
    /// [`Engine::for_each_conn`](crate::Engine::for_each_conn) filtering on the id.
    pub fn with_conn(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut Peer<'_, C>) + 'static,
    ) -> Result<()> {
        if id.loop_index() != self.shared.index {
            return Err(Error::Unsupported(
                "with_conn on a connection of another loop; use its ConnHandle",
            ));
        }
        self.local.ops.push(Op::With {
            id: id.id(),
            f: Box::new(f),
        });
        Ok(())
    }

    /// Writes `data` to every connection of this loop, this one included, when this callback
    /// returns ([`Conn::for_each_conn`] with [`Peer::write_bytes`]: one allocation shared by
    /// all).
    pub fn broadcast(&mut self, data: impl Into<Bytes>) {
        let data = data.into();
        self.for_each_conn(move |p| p.write_bytes(data.clone()));
    }

    /// Writes `data` to every connection of this loop for which `pred` holds, when this
    /// callback returns.
    pub fn broadcast_if(
        &mut self,
        data: impl Into<Bytes>,
        mut pred: impl FnMut(&Peer<'_, C>) -> bool + 'static,
    ) {
        let data = data.into();
        self.for_each_conn(move |p| {
            if pred(p) {
                p.write_bytes(data.clone());
            }
        });
    }
}
