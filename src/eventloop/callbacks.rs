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
    pub(super) fn traffic(&mut self, id: Id, fresh: Option<&[u8]>) -> Flow {
        let max_in = self.opts.max_inbound;
        let max_out = self.opts.max_outbound;
        let Some(st) = self.conns.conn_mut(id) else {
            return Flow::Continue;
        };
        let handler = &self.handler;
        let r;
        if st.inbound.is_empty() {
            // Zero-copy path: the handler reads the backend's buffer; only a remainder is copied.
            let data = fresh.unwrap_or(&[]);
            let mut c = Conn::new(data, st, &mut self.local, &self.shared, &self.engine);
            r = catch_unwind(AssertUnwindSafe(|| handler.on_traffic(&mut c)));
            let pos = c.consumed();
            if pos < data.len() {
                st.inbound.extend_from_slice(&data[pos..]);
            }
        } else {
            if let Some(d) = fresh {
                st.inbound.extend_from_slice(d);
            }
            let mut buf = std::mem::take(&mut st.inbound);
            let mut c = Conn::new(&buf, st, &mut self.local, &self.shared, &self.engine);
            r = catch_unwind(AssertUnwindSafe(|| handler.on_traffic(&mut c)));
            let pos = c.consumed();
            buf.advance(pos);
            st.inbound = if buf.is_empty() { BytesMut::new() } else { buf };
        }
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
