//! `Conn`: a connection as a callback sees it (`mod.rs`), the state the loop keeps for it
//! (`state.rs`), its socket options (`sockopt.rs`), and the other connections of its loop as
//! it reaches them (`peer.rs`).

mod framed;
mod peer;
#[cfg(unix)]
mod sockopt;
mod state;

pub use peer::Peer;
pub(crate) use state::{ConnState, Phase};

use std::sync::Arc;

use bytes::Bytes;
use gnet_backends::{Addr, Socket};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::handle::{ConnHandle, ConnId, LoopShared};
use crate::local::{Local, Op};

/// A connection inside a callback: its received bytes, its outbound queue, its context.
///
/// Received bytes are borrowed for the duration of the callback (`'a`): slices returned by
/// [`Conn::next`] and [`Conn::peek`] may be written back with [`Conn::write`] without a copy of
/// their own. Writes are queued and sent together when the callback returns — one `writev` or
/// one io_uring send for everything a callback wrote — except a large write made while
/// nothing is queued, which goes to the socket at once (see
/// [`Options::direct_write_min`](crate::Options::direct_write_min)); either way the bytes
/// leave in the order they were written.
pub struct Conn<'a, C> {
    data: &'a [u8],
    pos: usize,
    st: &'a mut ConnState<C>,
    local: &'a mut Local<C>,
    shared: &'a Arc<LoopShared>,
    engine: &'a Engine,
}

impl<'a, C> Conn<'a, C> {
    pub(crate) fn new(
        data: &'a [u8],
        st: &'a mut ConnState<C>,
        local: &'a mut Local<C>,
        shared: &'a Arc<LoopShared>,
        engine: &'a Engine,
    ) -> Self {
        Conn {
            data,
            pos: 0,
            st,
            local,
            shared,
            engine,
        }
    }

    pub(crate) fn consumed(&self) -> usize {
        self.pos
    }

    fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    /// Bytes received and not consumed yet.
    pub fn inbound_buffered(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Copies up to `buf.len()` bytes into `buf` and consumes them; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let rest = self.rest();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        n
    }

    /// The next `n` bytes without consuming them, or `None` if fewer are buffered.
    pub fn peek(&self, n: usize) -> Option<&'a [u8]> {
        let rest = self.rest();
        (rest.len() >= n).then(|| &rest[..n])
    }

    /// Everything buffered, without consuming it.
    pub fn peek_all(&self) -> &'a [u8] {
        self.rest()
    }

    /// The next `n` bytes, consumed, or `None` (and nothing consumed) if fewer are buffered.
    pub fn next(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.peek(n)?;
        self.pos += n;
        Some(out)
    }

    /// Everything buffered, consumed.
    pub fn next_all(&mut self) -> &'a [u8] {
        let out = self.rest();
        self.pos = self.data.len();
        out
    }

    /// Consumes up to `n` bytes; returns how many.
    pub fn discard(&mut self, n: usize) -> usize {
        let n = n.min(self.inbound_buffered());
        self.pos += n;
        n
    }

    /// Queues `data` for sending (copied into the connection's outbound buffer). On a datagram
    /// socket each call is one datagram, to the sender of the datagram being handled (a server
    /// socket) or to the connected peer.
    pub fn write(&mut self, data: &[u8]) {
        self.st.queue(data, &mut self.local.pool);
    }

    /// Queues several slices, in order (on a datagram socket: as one datagram).
    pub fn writev(&mut self, bufs: &[&[u8]]) {
        if self.st.dgram.is_some() {
            let whole: Vec<u8> = bufs.concat();
            return self.st.queue_bytes(Bytes::from(whole));
        }
        for b in bufs {
            self.st.queue(b, &mut self.local.pool);
        }
    }

    /// Sends `data` as one datagram to `to`, from a datagram socket (a UDP listen address or a
    /// UDP client connection), after this callback returns with the rest of its writes.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on a stream connection.
    pub fn send_to(&mut self, to: std::net::SocketAddr, data: &[u8]) -> Result<()> {
        if self.st.dgram.is_none() {
            return Err(Error::Unsupported("send_to on a stream connection"));
        }
        self.st
            .queue_datagram(Some(to), Bytes::copy_from_slice(data));
        Ok(())
    }

    /// Whether this is a datagram socket (UDP).
    pub fn is_datagram(&self) -> bool {
        self.st.dgram.is_some()
    }

    /// Queues `data` without copying it: the bytes are handed to the kernel from this very
    /// allocation.
    pub fn write_bytes(&mut self, data: Bytes) {
        self.st.queue_bytes(data);
    }

    /// Everything written so far is sent when this callback returns; `flush` exists so that
    /// code written for Go gnet reads the same. It never blocks.
    pub fn flush(&mut self) -> Result<()> {
        if self.st.accepts_writes() {
            Ok(())
        } else {
            Err(Error::ConnClosed)
        }
    }

    /// Bytes queued for this connection and not yet in the kernel.
    pub fn outbound_buffered(&self) -> usize {
        self.st.pending()
    }

    /// Closes the connection once this callback returns and what was written is delivered.
    pub fn close(&mut self) {
        self.st.close_requested = true;
    }

    /// The per-connection context, if set.
    pub fn context(&self) -> Option<&C> {
        self.st.ctx.as_ref()
    }

    /// The per-connection context, mutably.
    pub fn context_mut(&mut self) -> Option<&mut C> {
        self.st.ctx.as_mut()
    }

    /// The per-connection context, made with `C::default()` first if there is none: for a
    /// context that is always there, without an `unwrap`.
    ///
    /// # Examples
    /// ```no_run
    /// use gnet::{Action, Conn, EventHandler};
    ///
    /// #[derive(Default)]
    /// struct Session {
    ///     requests: u64,
    /// }
    ///
    /// struct Counter;
    /// impl EventHandler for Counter {
    ///     type Context = Session;
    ///     fn on_traffic(&self, c: &mut Conn<'_, Session>) -> Action {
    ///         c.discard(usize::MAX);
    ///         c.context_or_default().requests += 1;
    ///         Action::None
    ///     }
    /// }
    /// ```
    pub fn context_or_default(&mut self) -> &mut C
    where
        C: Default,
    {
        self.st.ctx.get_or_insert_with(C::default)
    }

    /// The per-connection context, made with `make` first if there is none.
    pub fn context_or_insert_with(&mut self, make: impl FnOnce() -> C) -> &mut C {
        self.st.ctx.get_or_insert_with(make)
    }

    /// Sets the per-connection context; returns the previous one.
    pub fn set_context(&mut self, ctx: C) -> Option<C> {
        self.st.ctx.replace(ctx)
    }

    /// Removes and returns the context.
    pub fn take_context(&mut self) -> Option<C> {
        self.st.ctx.take()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &Addr {
        &self.st.peer
    }

    /// The local address.
    ///
    /// # Errors
    /// Whatever `getsockname` reports.
    pub fn local_addr(&self) -> Result<Addr> {
        Ok(self.st.socket.local_addr()?)
    }

    /// This connection's identity (see [`ConnId`]).
    pub fn id(&self) -> ConnId {
        ConnId::new(self.shared.index, self.st.id)
    }

    /// Queues `data` on another connection of the same loop, as its own `write` would: the
    /// proxy case, one connection relaying to another without crossing threads. It is written
    /// when this callback returns, in this loop iteration, and sent with that connection's
    /// next flush. A connection that is gone by then (or closing) drops it.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a connection of another loop: use its [`ConnHandle`].
    pub fn write_to(&mut self, to: ConnId, data: &[u8]) -> Result<()> {
        self.write_bytes_to(to, Bytes::copy_from_slice(data))
    }

    /// [`Conn::write_to`] without a copy.
    ///
    /// # Errors
    /// As [`Conn::write_to`].
    pub fn write_bytes_to(&mut self, to: ConnId, data: Bytes) -> Result<()> {
        if to.loop_index() != self.shared.index {
            return Err(Error::Unsupported(
                "write_to a connection of another loop; use its ConnHandle",
            ));
        }
        if to.id() == self.st.id {
            self.write_bytes(data);
        } else {
            self.local.ops.push(Op::WriteTo { to: to.id(), data });
        }
        Ok(())
    }

    /// Closes another connection of the same loop (after what was written to it is
    /// delivered), or cancels its dial, when this callback returns.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a connection of another loop: use its [`ConnHandle`].
    pub fn close_conn(&mut self, id: ConnId) -> Result<()> {
        if id.loop_index() != self.shared.index {
            return Err(Error::Unsupported(
                "close_conn of a connection of another loop; use its ConnHandle",
            ));
        }
        if id.id() == self.st.id {
            self.close();
        } else {
            self.local.ops.push(Op::Close { id: id.id() });
        }
        Ok(())
    }

    /// Dials `addr` (`tcp://`, `udp://` for a connected UDP socket, `unix://`) from this loop:
    /// the new connection lives on the same loop as this one, so the two can write to each
    /// other directly ([`Conn::write_to`]) — a proxy's back-end connection. Returns at once
    /// with the new connection's id; the dial starts when this callback returns. When it
    /// connects, `on_open` runs with `ctx` as its context; when it fails or times out
    /// ([`Options::dial_timeout`](crate::Options::dial_timeout)),
    /// [`EventHandler::on_dial_error`](crate::EventHandler::on_dial_error) gets the context
    /// back with the reason.
    ///
    /// # Errors
    /// [`Error::InvalidAddress`] or [`Error::UnsupportedProtocol`] for an address that cannot
    /// be dialed.
    pub fn dial(&mut self, addr: &str, ctx: Option<C>) -> Result<ConnId> {
        let addr = crate::addr::ListenAddr::parse(addr)?;
        let id = self.local.ids.take();
        self.local.ops.push(Op::Dial { id, addr, ctx });
        Ok(ConnId::new(self.shared.index, id))
    }

    /// A `Send + Clone` handle for other threads: asynchronous writes, wake, close.
    pub fn handle(&self) -> ConnHandle {
        self.st.handle(self.shared)
    }

    /// The engine this connection belongs to.
    pub fn engine(&self) -> &Engine {
        self.engine
    }

    /// The underlying socket, for options this type has no setter for.
    pub fn socket(&self) -> &Socket {
        &self.st.socket
    }

    /// Whether this is a TCP connection (as opposed to a Unix-domain one).
    pub fn is_tcp(&self) -> bool {
        self.st.socket.is_tcp()
    }
}
