//! Running the handler's connection callbacks: panics caught, actions applied, leftover input
//! kept.

use std::any::Any;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::{Buf, BytesMut};
use gnet_backends::{Flow, Id};

use super::Core;
use crate::conn::Conn;
use crate::error::Error;
use crate::handler::{Action, CloseCause, EventHandler};

pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

impl<H: EventHandler> Core<H> {
    /// Applies what a connection callback returned.
    fn after_callback(&mut self, id: Id, r: std::thread::Result<Action>) {
        if self.state(id).is_some_and(|s| s.is_server_datagram()) {
            // One datagram's callback cannot close the socket every peer sends to.
            return self.after_datagram(id, r);
        }
        match r {
            Ok(Action::None) => {}
            Ok(Action::Close) => {
                // A codec error the callback met is the better reason.
                let cause = self.state(id).and_then(|s| s.close_cause.take());
                self.begin_close(id, cause.unwrap_or(CloseCause::Local));
            }
            Ok(Action::Shutdown) => {
                let _ = self.engine.stop();
            }
            Err(p) => {
                let msg = panic_message(&*p);
                log::error!("gnet: handler panicked, resetting the connection: {msg}");
                // What the callback wrote may be half a reply: it is dropped, and the peer
                // gets a reset rather than an end of stream that would pass for a whole one.
                self.fail(id, CloseCause::Error(Error::HandlerPanic(msg)));
            }
        }
        if let Some(st) = self.state(id) {
            if st.dirty || st.close_requested {
                self.mark(id);
            }
        }
    }

    /// What a callback for one datagram of a server socket returned: `Close` has nothing to
    /// close (there is no connection), a panic costs that datagram's replies only.
    fn after_datagram(&mut self, id: Id, r: std::thread::Result<Action>) {
        if let Some(st) = self.state(id) {
            st.close_requested = false; // `Conn::close` too: nothing to close
            st.close_cause = None;
        }
        match r {
            Ok(Action::Shutdown) => {
                let _ = self.engine.stop();
            }
            Ok(_) => {}
            Err(p) => {
                log::error!(
                    "gnet: handler panicked on a datagram, dropping its replies: {}",
                    panic_message(&*p)
                );
                if let Some(d) = self.state(id).and_then(|s| s.dgram.as_mut()) {
                    d.clear();
                }
            }
        }
        if self.state(id).is_some_and(|s| s.dirty) {
            self.mark(id);
        }
    }

    /// `on_traffic` for one datagram of a datagram socket, `from` its sender. A truncated one
    /// (larger than `read_buffer_size`) is dropped: it must not pass for the whole datagram.
    pub(super) fn datagram(&mut self, id: Id, from: SocketAddr, data: &[u8], truncated: bool) {
        let read_buffer = self.opts.read_buffer_size;
        let Some(st) = self.conns.conn_mut(id).filter(|s| s.is_open()) else {
            return;
        };
        let Some(d) = st.dgram.as_mut() else { return };
        if truncated {
            if !d.warned_truncated {
                d.warned_truncated = true;
                log::warn!(
                    "gnet: dropping datagrams larger than read_buffer_size ({read_buffer} bytes) \
                     on {}; raise Options::read_buffer_size to receive them",
                    st.peer
                );
            }
            return;
        }
        if d.server {
            st.peer = gnet_backends::Addr::Inet(from);
        }
        let handler = &self.handler;
        let mut c = Conn::new(data, st, &mut self.local, &self.shared, &self.engine);
        let r = catch_unwind(AssertUnwindSafe(|| handler.on_traffic(&mut c)));
        // What the handler did not consume of a datagram is gone with it.
        self.after_callback(id, r);
    }

    /// `on_open` for a freshly registered connection.
    pub(super) fn open(&mut self, id: Id) {
        let Some(st) = self.conns.conn_mut(id) else {
            return;
        };
        st.opened = true;
        let handler = &self.handler;
        let mut c = Conn::new(&[], st, &mut self.local, &self.shared, &self.engine);
        let r = catch_unwind(AssertUnwindSafe(|| handler.on_open(&mut c)));
        self.after_callback(id, r);
    }

    /// `on_traffic` with `fresh` bytes from the backend (or none, for a wake). Returns whether
    /// the backend should keep receiving.
    ///
    /// When the handler's decoder said how long the unfinished frame it is waiting for is
    /// ([`crate::codec::Decoder::pending_frame_length`]): bytes that do not complete it are
    /// only buffered, without a call (nothing could be decoded); when `fresh` holds more
    /// than its end, only the bytes that complete it are copied: the handler gets that frame
    /// from the inbound buffer, then the rest of `fresh` where it lies, in a second call (the
    /// replies of both still go out in one flush).
    pub(super) fn traffic(&mut self, id: Id, fresh: Option<&[u8]>) -> Flow {
        let max_in = self.opts.max_inbound;
        let max_out = self.opts.max_outbound;
        let Some(st) = self.conns.conn_mut(id) else {
            return Flow::Continue;
        };
        let need = st.inbound_hint.saturating_sub(st.inbound.len());
        let woken = fresh.is_none();
        let fresh = fresh.unwrap_or(&[]);
        let r = if st.inbound.is_empty() {
            self.in_place(id, fresh)
        } else if need > 0 && fresh.len() < need && !woken {
            // Still short of the frame the decoder waits for.
            st.inbound.extend_from_slice(fresh);
            Ok(Action::None)
        } else if need > 0 && fresh.len() > need {
            let (head, tail) = fresh.split_at(need);
            let r = self.buffered(id, head, true);
            match self.state(id) {
                Some(st)
                    if matches!(r, Ok(Action::None | Action::Shutdown))
                        && st.is_open()
                        && !st.close_requested =>
                {
                    // A wrong hint leaves bytes buffered: the rest is appended, never held back.
                    let r2 = if st.inbound.is_empty() {
                        self.in_place(id, tail)
                    } else {
                        self.buffered(id, tail, false)
                    };
                    match (r, r2) {
                        (Ok(Action::Shutdown), Ok(Action::None)) => Ok(Action::Shutdown),
                        (_, r2) => r2,
                    }
                }
                Some(st) => {
                    st.inbound.extend_from_slice(tail);
                    r
                }
                None => r,
            }
        } else {
            self.buffered(id, fresh, false)
        };
        let Some(st) = self.state(id) else {
            return Flow::Continue;
        };
        let overflow = st.inbound.len() > max_in;
        let flow = if st.pending() > max_out {
            st.paused = true;
            Flow::Pause
        } else {
            Flow::Continue
        };
        self.after_callback(id, r);
        if overflow {
            if let Some(st) = self.state(id) {
                st.inbound = BytesMut::new();
            }
            self.begin_close(
                id,
                CloseCause::Error(Error::InboundOverflow { limit: max_in }),
            );
        }
        if self.state(id).is_some_and(|s| !s.is_open()) {
            // Closing: the rest of the input is not wanted.
            return Flow::Continue;
        }
        flow
    }

    /// `on_traffic` over `data` where it lies (nothing is buffered): the zero-copy path. Only
    /// what the handler did not consume is copied into the inbound buffer, given room for the
    /// whole unfinished frame when its decoder knows its length.
    fn in_place(&mut self, id: Id, data: &[u8]) -> std::thread::Result<Action> {
        let max_in = self.opts.max_inbound;
        let Some(st) = self.conns.conn_mut(id) else {
            return Ok(Action::None);
        };
        st.inbound_hint = 0;
        let handler = &self.handler;
        let mut c = Conn::new(data, st, &mut self.local, &self.shared, &self.engine);
        let r = catch_unwind(AssertUnwindSafe(|| handler.on_traffic(&mut c)));
        let pos = c.consumed();
        if pos < data.len() {
            let rest = data.len() - pos;
            st.inbound.reserve(st.inbound_hint.min(max_in).max(rest));
            st.inbound.extend_from_slice(&data[pos..]);
        } else {
            // No leftover: no memory kept (a buffer `buffered` kept for this call is freed).
            st.inbound = BytesMut::new();
        }
        r
    }

    /// `on_traffic` over the inbound buffer with `fresh` appended. An emptied buffer is freed,
    /// unless `keep` (the rest of the receive follows, and may leave a frame to buffer).
    fn buffered(&mut self, id: Id, fresh: &[u8], keep: bool) -> std::thread::Result<Action> {
        let max_in = self.opts.max_inbound;
        let Some(st) = self.conns.conn_mut(id) else {
            return Ok(Action::None);
        };
        st.inbound.extend_from_slice(fresh);
        st.inbound_hint = 0;
        let handler = &self.handler;
        let mut buf = std::mem::take(&mut st.inbound);
        let mut c = Conn::new(&buf, st, &mut self.local, &self.shared, &self.engine);
        let r = catch_unwind(AssertUnwindSafe(|| handler.on_traffic(&mut c)));
        let pos = c.consumed();
        buf.advance(pos);
        if buf.is_empty() {
            if !keep {
                buf = BytesMut::new();
            }
        } else if st.inbound_hint > buf.len() {
            buf.reserve(st.inbound_hint.min(max_in).saturating_sub(buf.len()));
        }
        st.inbound = buf;
        r
    }

    /// The backend released `id`: `on_close`, then the socket is dropped (closing the fd).
    pub(super) fn finish_close(&mut self, id: Id) {
        let Some(mut st) = self.conns.remove_conn(id) else {
            return;
        };
        self.local.ids.release(id);
        if st.is_server_datagram() {
            return; // no connection to tell about
        }
        if !st.opened {
            // A dial that never connected: no on_open, so no on_close either.
            let cause = match std::mem::replace(&mut st.phase, crate::conn::Phase::Open) {
                crate::conn::Phase::Closing { cause } | crate::conn::Phase::Draining { cause } => {
                    cause
                }
                _ => CloseCause::Local,
            };
            return self.dial_closed(st, cause);
        }
        self.shared
            .conns
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if !self.held.is_empty() {
            // Its descriptor is about to be freed: the held connections may fit now.
            self.held_retry = Some(std::time::Instant::now());
        }
        let cause = match std::mem::replace(&mut st.phase, crate::conn::Phase::Open) {
            crate::conn::Phase::Closing { cause } | crate::conn::Phase::Draining { cause } => cause,
            crate::conn::Phase::Open | crate::conn::Phase::Connecting => CloseCause::Local,
        };
        // No more writes: `on_close` may not queue output.
        st.phase = crate::conn::Phase::Closing {
            cause: CloseCause::Local,
        };
        for (_, _, done) in st.waiters.drain(..) {
            done(Err(Error::ConnClosed));
        }
        let handler = &self.handler;
        let mut c = Conn::new(&[], &mut st, &mut self.local, &self.shared, &self.engine);
        let r = catch_unwind(AssertUnwindSafe(|| handler.on_close(&mut c, &cause)));
        match r {
            Ok(Action::Shutdown) => {
                let _ = self.engine.stop();
            }
            Ok(_) => {}
            Err(p) => log::error!("gnet: on_close panicked: {}", panic_message(&*p)),
        }
        drop(st);
    }
}
