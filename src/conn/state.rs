//! What the loop keeps for one connection, and where it is in its life.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gnet_backends::{Addr, Id, Socket};

use crate::datagram::DatagramState;
use crate::handle::{ConnHandle, HandleShared, LoopShared, WriteCallback};
use crate::handler::CloseCause;
use crate::outbound::{BufPool, Outbound};

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
    /// The length of the unfinished frame the handler's decoder is waiting for, when it knows
    /// it (`Decoder::pending_frame_length`; 0: unknown): room the inbound buffer is given at
    /// once. Reset by every receive.
    pub(crate) inbound_hint: usize,
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
    /// Why, when the close requested is not a plain local one (a codec error).
    pub(crate) close_cause: Option<CloseCause>,
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
            inbound_hint: 0,
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
            close_cause: None,
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

    /// Lets `f` append to the outbound queue in place (one datagram on a datagram socket).
    /// Nothing is called on a connection that no longer accepts writes.
    pub(crate) fn queue_with<E>(
        &mut self,
        pool: &mut BufPool,
        f: impl FnOnce(&mut crate::codec::WriteBuf<'_>) -> Result<(), E>,
    ) -> Result<usize, E> {
        if !self.accepts_writes() {
            return Ok(0);
        }
        if self.dgram.is_some() {
            let mut datagram = BytesMut::new();
            f(&mut crate::codec::WriteBuf::new(&mut datagram))?;
            let n = datagram.len();
            self.queue_datagram(self.reply_to(), datagram.freeze());
            return Ok(n);
        }
        let n = self.out.append_with(pool, f)?;
        if n > 0 {
            self.written_total += n as u64;
            self.dirty = true;
        }
        Ok(n)
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

    /// A handle for other threads; the first one makes what the handles share.
    pub(crate) fn handle(&self, shared: &Arc<LoopShared>) -> ConnHandle {
        let conn = self.handle.get_or_init(|| {
            let h = Arc::new(HandleShared::new(self.is_server_datagram()));
            h.publish(self.pending());
            if !self.is_open() {
                h.close();
            }
            h
        });
        ConnHandle::new(shared.clone(), conn.clone(), self.id)
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
