//! Outbound connections: dials from callbacks and from other threads, enrolled sockets, the
//! operations callbacks ask for on other connections of their loop, and the end of a dial
//! (connected: `on_open`; failed, timed out, cancelled: `on_dial_error`).

use std::any::Any;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::Instant;

use gnet_backends::{Addr, Backend, Id, Socket};

use super::callbacks::panic_message;
use super::deadlines::Timeout;
use super::Core;
use crate::addr::ListenAddr;
use crate::conn::{ConnState, Phase};
use crate::error::Error;
use crate::handle::ConnId;
use crate::handler::{CloseCause, DialError, EventHandler};
use crate::local::Op;

impl<H: EventHandler> Core<H> {
    /// Carries out what callbacks asked for on other connections of this loop.
    pub(super) fn run_ops<B: Backend>(&mut self, backend: &mut B) {
        while !self.local.ops.is_empty() {
            for op in std::mem::take(&mut self.local.ops) {
                match op {
                    Op::Dial { id, addr, ctx } => self.start_dial(backend, id, addr, ctx),
                    Op::WriteTo { to, data } => {
                        if let Some(st) = self.state(to).filter(|s| s.accepts_writes()) {
                            st.queue_bytes(data);
                            self.mark(to);
                        }
                    }
                    Op::Close { id } => self.close_or_cancel(backend, id),
                    Op::ForEach(mut f) => self.visit_all(&mut *f),
                    Op::With { id, f } => self.visit_one(id, f),
                }
            }
        }
    }

    /// A dial asked for by another thread ([`Engine::dial`](crate::Engine::dial)), with its
    /// context type-erased on the way.
    pub(super) fn dial_task(&mut self, addr: ListenAddr, ctx: Option<Box<dyn Any + Send>>) {
        let id = self.local.ids.take();
        match ctx.map(|c| c.downcast::<H::Context>()) {
            Some(Err(_)) => {
                self.local.ids.release(id);
                let failure = DialError {
                    id: ConnId::new(self.index, id),
                    addr: dial_addr(&addr),
                    context: None,
                    error: Error::InvalidOptions(
                        "the context given to Engine::dial is not the handler's Context type"
                            .into(),
                    ),
                };
                self.tell_dial_error(failure);
            }
            ctx => {
                let ctx = ctx.map(|c| *c.unwrap_or_else(|_| unreachable!()));
                self.local.ops.push(Op::Dial { id, addr, ctx });
            }
        }
    }

    /// Creates the socket and asks the backend to connect it; the dial ends in
    /// [`Core::connect_done`] or, when it is closed first, in `on_dial_error` from
    /// `finish_close`.
    fn start_dial<B: Backend>(
        &mut self,
        backend: &mut B,
        id: Id,
        addr: ListenAddr,
        ctx: Option<H::Context>,
    ) {
        let peer = dial_addr(&addr);
        let refused = if self.stopping {
            Some(Error::EngineShutdown)
        } else if let Err(why) = backend.capabilities().connect {
            Some(Error::BackendUnavailable {
                backend: B::KIND,
                reason: format!("it cannot dial here: {why}"),
            })
        } else {
            None
        };
        if let Some(error) = refused {
            return self.dial_failed_early(id, peer, ctx, error);
        }
        let socket = match crate::listen::dial_socket(&addr) {
            Ok(s) => s,
            Err(e) => return self.dial_failed_early(id, peer, ctx, Error::Io(e)),
        };
        let limit = self.opts.max_outbound;
        let mut st = if socket.is_datagram() {
            ConnState::datagram(socket, id, peer.clone(), false, limit)
        } else {
            ConnState::new(socket, id, peer.clone())
        };
        st.phase = Phase::Connecting;
        st.ctx = ctx;
        let st = self.conns.insert_conn(st);
        backend.connect(id, &st.socket, &peer);
        self.set_deadline(id, Timeout::Dial);
    }

    fn dial_failed_early(&mut self, id: Id, addr: Addr, ctx: Option<H::Context>, error: Error) {
        self.local.ids.release(id);
        let failure = DialError {
            id: ConnId::new(self.index, id),
            addr,
            context: ctx,
            error,
        };
        self.tell_dial_error(failure);
    }

    /// The backend's `connected` reports, handled after the poll.
    pub(super) fn connects_done<B: Backend>(&mut self, backend: &mut B) {
        for (id, result) in std::mem::take(&mut self.connect_results) {
            self.connect_done(backend, id, result);
        }
    }

    fn connect_done<B: Backend>(&mut self, backend: &mut B, id: Id, result: io::Result<()>) {
        let Some(st) = self
            .state(id)
            .filter(|s| matches!(s.phase, Phase::Connecting))
        else {
            return;
        };
        let registered = result.and_then(|()| {
            if st.socket.is_datagram() {
                backend.add_datagram(id, &st.socket)
            } else {
                backend.add_conn(id, &st.socket)
            }
        });
        match registered {
            Ok(()) => {
                st.phase = Phase::Open;
                st.deadline = None;
                self.established::<B>(id);
            }
            Err(e) => {
                let Some(mut st) = self.conns.remove_conn(id) else {
                    return;
                };
                self.local.ids.release(id);
                let error = Error::Io(io::Error::new(e.kind(), format!("dial {}: {e}", st.peer)));
                let failure = DialError {
                    id: ConnId::new(self.index, id),
                    addr: st.peer.clone(),
                    context: st.ctx.take(),
                    error,
                };
                self.tell_dial_error(failure);
            }
        }
    }

    /// A connection (dialed or enrolled) the backend now serves: its options, its direct
    /// writes, the count, `on_open`.
    pub(super) fn established<B: Backend>(&mut self, id: Id) {
        let Some(st) = self.conns.conn(id) else {
            return;
        };
        self.configure(&st.socket);
        let direct = B::DIRECT_SEND.and_then(|d| self.opts.direct_write_min.unwrap_or(Some(d)));
        if let Some(st) = self.state(id) {
            if !st.socket.is_datagram() {
                st.direct_min = direct.unwrap_or(usize::MAX);
            }
        }
        self.shared.conns.fetch_add(1, Ordering::Relaxed);
        self.open(id);
        self.mark(id);
    }

    /// A connected socket handed over by [`Engine::enroll`](crate::Engine::enroll).
    pub(super) fn enroll<B: Backend>(
        &mut self,
        backend: &mut B,
        socket: Socket,
        ctx: Option<Box<dyn Any + Send>>,
    ) {
        let peer = socket.peer_addr().unwrap_or(Addr::Unix(None));
        let id = self.local.ids.take();
        let ctx = match ctx.map(|c| c.downcast::<H::Context>()) {
            Some(Err(_)) => {
                let error = Error::InvalidOptions(
                    "the context given to Engine::enroll is not the handler's Context type".into(),
                );
                return self.dial_failed_early(id, peer, None, error);
            }
            ctx => ctx.map(|c| *c.unwrap_or_else(|_| unreachable!())),
        };
        if self.stopping {
            return self.dial_failed_early(id, peer, ctx, Error::EngineShutdown);
        }
        let registered = socket.set_nonblocking(true).and_then(|()| {
            if socket.is_datagram() {
                backend.add_datagram(id, &socket)
            } else {
                backend.add_conn(id, &socket)
            }
        });
        if let Err(e) = registered {
            return self.dial_failed_early(id, peer, ctx, Error::Io(e));
        }
        let limit = self.opts.max_outbound;
        let mut st = if socket.is_datagram() {
            ConnState::datagram(socket, id, peer, false, limit)
        } else {
            ConnState::new(socket, id, peer)
        };
        st.ctx = ctx;
        self.conns.insert_conn(st);
        self.established::<B>(id);
    }

    /// `Conn::close_conn`: an open connection closes in order, a dial is cancelled.
    fn close_or_cancel<B: Backend>(&mut self, backend: &mut B, id: Id) {
        match self.state(id).map(|s| matches!(s.phase, Phase::Connecting)) {
            Some(true) => self.cancel_dial(backend, id, Error::ConnClosed),
            Some(false) => self.begin_close(id, CloseCause::Local),
            None => {}
        }
    }

    /// Gives up on a dial: the backend closes it, `on_dial_error` follows its `closed`.
    pub(super) fn cancel_dial<B: Backend>(&mut self, backend: &mut B, id: Id, error: Error) {
        if let Some(st) = self.state(id) {
            st.phase = Phase::Closing {
                cause: CloseCause::Error(error),
            };
            backend.close(id);
        }
    }

    /// The dial of a connection that closed before it was established is over.
    pub(super) fn dial_closed(&mut self, mut st: ConnState<H::Context>, cause: CloseCause) {
        let error = match cause {
            CloseCause::Error(e) => e,
            CloseCause::Shutdown => Error::EngineShutdown,
            _ => Error::ConnClosed,
        };
        let failure = DialError {
            id: ConnId::new(self.index, st.id),
            addr: st.peer.clone(),
            context: st.ctx.take(),
            error,
        };
        self.tell_dial_error(failure);
    }

    fn tell_dial_error(&mut self, failure: DialError<H::Context>) {
        let handler = &self.handler;
        let engine = &self.engine;
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| handler.on_dial_error(engine, failure))) {
            log::error!("gnet: on_dial_error panicked: {}", panic_message(&*p));
        }
    }

    /// The dial deadline of `id` came: it is cancelled.
    pub(super) fn dial_timed_out<B: Backend>(&mut self, backend: &mut B, id: Id, at: Instant) {
        let _ = at;
        let addr = self
            .state(id)
            .map(|s| s.peer.to_string())
            .unwrap_or_default();
        let after = self.opts.dial_timeout;
        self.cancel_dial(backend, id, Error::DialTimeout { addr, after });
    }
}

/// The backend-level address a listen-style address dials.
fn dial_addr(addr: &ListenAddr) -> Addr {
    match addr {
        ListenAddr::Tcp(a) | ListenAddr::Udp(a) => Addr::Inet(*a),
        ListenAddr::Unix(p) => Addr::Unix(Some(p.clone())),
    }
}
