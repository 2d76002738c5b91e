//! `Conn`: a connection as a callback sees it.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use gnet_backends::{Addr, Id, Socket};

use crate::datagram::DatagramState;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::handle::{ConnHandle, ConnId, HandleShared, LoopShared, WriteCallback};
use crate::handler::CloseCause;
use crate::local::{Local, Op};
use crate::outbound::{BufPool, Outbound};
use std::sync::Arc;
use std::time::Duration;

/// Where a connection is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Being dialed: the backend connects; `on_open` runs once it has.
    Connecting,
    Open,
    /// Closing was decided; queued output is being flushed first.
    Draining {
        cause: CloseCause,
    },
    /// The backend was asked to close; waiting for its `closed`.
    Closing {
        cause: CloseCause,
    },
}

/// Everything the loop keeps for one connection.
pub(crate) struct ConnState<C> {
    pub(crate) socket: Socket,
    pub(crate) id: Id,
    pub(crate) peer: Addr,
    pub(crate) ctx: Option<C>,
    pub(crate) inbound: BytesMut,
    pub(crate) out: Outbound,
    pub(crate) sending: usize,
    pub(crate) written_total: u64,
    pub(crate) sent_total: u64,
    pub(crate) waiters: VecDeque<(u64, usize, WriteCallback)>,
    pub(crate) phase: Phase,
    /// When a drain gives up on the output still queued (set while draining).
    pub(crate) deadline: Option<std::time::Instant>,
    pub(crate) paused: bool,
    pub(crate) eof: bool,
    pub(crate) close_requested: bool,
    pub(crate) dirty: bool,
    /// Writes of at least this many bytes may go straight to the socket (`usize::MAX`: never).
    pub(crate) direct_min: usize,
    /// Shared with the connection's `ConnHandle`s, made with the first of them.
    pub(crate) handle: std::cell::OnceCell<Arc<HandleShared>>,
    /// For a datagram socket: its queue of datagrams (`out` stays empty).
    pub(crate) dgram: Option<DatagramState>,
    /// `on_open` ran: `on_close` is due at the end (a dial that never connected gets
    /// `on_dial_error` instead).
    pub(crate) opened: bool,
}

impl<C> ConnState<C> {
    pub(crate) fn new(socket: Socket, id: Id, peer: Addr) -> Self {
        ConnState {
            socket,
            id,
            peer,
            ctx: None,
            inbound: BytesMut::new(),
            out: Outbound::default(),
            sending: 0,
            written_total: 0,
            sent_total: 0,
            waiters: VecDeque::new(),
            phase: Phase::Open,
            deadline: None,
            paused: false,
            eof: false,
            close_requested: false,
            dirty: false,
            direct_min: usize::MAX,
            handle: std::cell::OnceCell::new(),
            dgram: None,
            opened: false,
        }
    }

    /// A datagram socket: a server one (bound to a listen address, many peers) or a connected
    /// one (one peer); `limit` bounds its queue (`max_outbound_buffer`).
    pub(crate) fn datagram(socket: Socket, id: Id, peer: Addr, server: bool, limit: usize) -> Self {
        let mut st = ConnState::new(socket, id, peer);
        st.dgram = Some(DatagramState::new(server, limit));
        st
    }

    /// A server datagram socket: many peers, no `on_open`/`on_close`, not counted as a
    /// connection.
    pub(crate) fn is_server_datagram(&self) -> bool {
        self.dgram.as_ref().is_some_and(|d| d.server)
    }

    /// Where a datagram written now goes: the sender of the datagram being handled on a server
    /// socket, the connected peer (`None`) otherwise.
    fn reply_to(&self) -> Option<std::net::SocketAddr> {
        match (&self.dgram, &self.peer) {
            (Some(d), Addr::Inet(a)) if d.server => Some(*a),
            _ => None,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// Whether handler writes are still accepted (not once the backend was told to close).
    pub(crate) fn accepts_writes(&self) -> bool {
        !matches!(self.phase, Phase::Closing { .. })
    }

    pub(crate) fn queue(&mut self, mut data: &[u8], pool: &mut BufPool) {
        if self.dgram.is_some() {
            return self.queue_datagram(self.reply_to(), Bytes::copy_from_slice(data));
        }
        if self.accepts_writes() {
            if !data.is_empty() && data.len() >= self.direct_min {
                let n = self.send_direct(data);
                data = &data[n..];
                if data.is_empty() {
                    return;
                }
            }
            self.out.write_pooled(data, pool);
            self.written_total += data.len() as u64;
            self.dirty = true;
        }
    }

    /// Queues one datagram (a datagram socket only).
    pub(crate) fn queue_datagram(&mut self, to: Option<std::net::SocketAddr>, data: Bytes) {
        if !self.accepts_writes() {
            return;
        }
        let in_flight = self.sending;
        if let Some(d) = self.dgram.as_mut() {
            if d.push(to, data, in_flight) {
                self.dirty = true;
            }
        }
    }

    pub(crate) fn queue_bytes(&mut self, data: Bytes) {
        if self.dgram.is_some() {
            return self.queue_datagram(self.reply_to(), data);
        }
        if self.accepts_writes() {
            self.written_total += data.len() as u64;
            self.out.write_bytes(data);
            self.dirty = true;
        }
    }

    /// Hands `data` to the kernel at once if nothing is queued, in flight or awaited, and
    /// returns how much it took (0 on `WouldBlock` or an error: the queued send meets the
    /// error again and reports it the usual way).
    fn send_direct(&mut self, data: &[u8]) -> usize {
        if !self.is_open() || self.sending > 0 || !self.out.is_empty() || !self.waiters.is_empty() {
            return 0;
        }
        match self.socket.try_send(data) {
            Ok(n) => {
                self.written_total += n as u64;
                self.sent_total += n as u64;
                n
            }
            Err(_) => 0,
        }
    }

    /// Gives up on the output: drops what is queued, forgets the send in flight (the backend
    /// abandons it at `close`) and makes the coming close a reset (`SO_LINGER` 0), so that the
    /// peer can tell the stream was cut short: a FIN would pass it off as complete. Returns the
    /// bytes abandoned. (Unix sockets have no reset; their peer sees the end of the stream.)
    pub(crate) fn abandon_output(&mut self) -> usize {
        let unsent = self.pending();
        self.out.clear();
        self.sending = 0;
        if let Some(d) = self.dgram.as_mut() {
            d.clear();
        }
        if let Socket::Tcp(s) = &self.socket {
            if let Err(e) = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO)) {
                log::debug!("gnet: SO_LINGER 0 on a connection being reset: {e}");
            }
        }
        unsent
    }

    /// The connection leaves `Open`: its handles refuse further writes at the call.
    pub(crate) fn refuse_handles(&self) {
        if let Some(h) = self.handle.get() {
            h.close();
        }
    }

    /// Bytes queued or in flight.
    pub(crate) fn pending(&self) -> usize {
        self.out.len() + self.sending + self.dgram.as_ref().map_or(0, DatagramState::queued)
    }
}

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
        let conn = self.st.handle.get_or_init(|| {
            let h = Arc::new(HandleShared::new(self.st.is_server_datagram()));
            h.publish(self.st.pending());
            if !self.st.is_open() {
                h.close();
            }
            h
        });
        ConnHandle::new(self.shared.clone(), conn.clone(), self.st.id)
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

#[cfg(unix)]
impl<C> Conn<'_, C> {
    fn sock(&self) -> socket2::SockRef<'_> {
        socket2::SockRef::from(&self.st.socket)
    }

    fn tcp_only(&self) -> Result<()> {
        if self.is_tcp() {
            Ok(())
        } else {
            Err(Error::Unsupported("TCP option on a non-TCP connection"))
        }
    }

    /// The raw descriptor (still owned by gnet: do not close it).
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.st.socket.as_raw_fd()
    }

    /// A duplicate of the descriptor (close-on-exec), owned by the caller.
    ///
    /// # Errors
    /// Whatever `dup` reports.
    pub fn dup(&self) -> Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        Ok(self.st.socket.as_fd().try_clone_to_owned()?)
    }

    /// `TCP_NODELAY`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on a Unix-domain connection; the kernel's error otherwise.
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        self.tcp_only()?;
        Ok(self.sock().set_nodelay(on)?)
    }

    /// TCP keepalive: `None` turns it off; otherwise idle time, probe interval and count.
    /// Durations under one second are rejected.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on a Unix-domain connection; [`Error::InvalidOptions`] for a
    /// duration under a second; the kernel's error otherwise.
    pub fn set_keepalive(
        &self,
        keepalive: Option<(std::time::Duration, std::time::Duration, u32)>,
    ) -> Result<()> {
        self.tcp_only()?;
        match keepalive {
            None => Ok(self.sock().set_keepalive(false)?),
            Some((idle, interval, count)) => {
                let second = std::time::Duration::from_secs(1);
                if idle < second || interval < second {
                    return Err(Error::InvalidOptions(
                        "keepalive durations must be at least one second".into(),
                    ));
                }
                let ka = socket2::TcpKeepalive::new()
                    .with_time(idle)
                    .with_interval(interval);
                #[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "macos"))]
                let ka = ka.with_retries(count);
                #[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "macos")))]
                let _ = count;
                Ok(self.sock().set_tcp_keepalive(&ka)?)
            }
        }
    }

    /// `SO_LINGER`: `None` turns it off.
    ///
    /// # Errors
    /// The kernel's error.
    pub fn set_linger(&self, linger: Option<std::time::Duration>) -> Result<()> {
        Ok(self.sock().set_linger(linger)?)
    }

    /// `SO_RCVBUF`.
    ///
    /// # Errors
    /// The kernel's error.
    pub fn set_read_buffer(&self, bytes: usize) -> Result<()> {
        Ok(self.sock().set_recv_buffer_size(bytes)?)
    }

    /// `SO_SNDBUF`.
    ///
    /// # Errors
    /// The kernel's error.
    pub fn set_write_buffer(&self, bytes: usize) -> Result<()> {
        Ok(self.sock().set_send_buffer_size(bytes)?)
    }
}
