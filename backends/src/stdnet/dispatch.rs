//! Reporting what the helper threads queued: each message checked against what the loop still
//! expects of its connection (nothing after `close`, nothing but `closed` after `failed`) and
//! handed to the sink.

use std::sync::atomic::Ordering;

use super::conn::MAX_IN_FLIGHT;
use super::dgram;
use super::queue::Msg;
use super::StdNet;
use crate::contract::{Flow, Id, Sink};

impl StdNet {
    pub(super) fn dispatch<S: Sink>(&mut self, msg: Msg, sink: &mut S) {
        match msg {
            Msg::Accepted {
                listener,
                token,
                socket,
                peer,
            } => match self.listeners.get(&listener) {
                Some(l) if l.token == token => {
                    l.queued.fetch_sub(1, Ordering::AcqRel);
                    sink.accepted(listener, socket, peer);
                }
                _ => drop(socket), // the listener was removed: the backend closes it
            },
            Msg::AcceptError {
                listener,
                token,
                error,
            } => {
                if self
                    .listeners
                    .get(&listener)
                    .is_some_and(|l| l.token == token)
                {
                    sink.accept_error(listener, error);
                }
            }
            Msg::Data { conn, buf, len } => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                if c.closing || c.recv_done {
                    return;
                }
                let flow = sink.received(conn, &buf[..len]);
                let mut st = c.state.lock();
                let reader_blocked = st.in_flight >= MAX_IN_FLIGHT;
                st.in_flight -= 1;
                if flow == Flow::Pause {
                    st.paused = true;
                }
                if st.hot && buf.len() == self.read_buffer_size && st.spare.len() < MAX_IN_FLIGHT {
                    st.spare.push(buf);
                }
                let wake = reader_blocked && !st.paused;
                drop(st);
                if wake {
                    c.state.notify();
                }
            }
            Msg::Eof(conn) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    if !c.closing && !c.recv_done {
                        c.recv_done = true;
                        sink.eof(conn);
                    }
                }
            }
            Msg::Sent { conn, n } => {
                if let Some(c) = self.conns.get(&conn) {
                    if !c.closing && !c.failed {
                        sink.sent(conn, n);
                    }
                }
            }
            Msg::Failed { conn, error } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    if !c.closing && !c.failed {
                        c.failed = true;
                        c.recv_done = true;
                        sink.failed(conn, error);
                    }
                }
            }
            Msg::Datagram {
                id,
                from,
                data,
                truncated,
            } => {
                let Some(c) = self.conns.get(&id) else {
                    return;
                };
                if c.closing || c.failed {
                    return;
                }
                let flow = sink.datagram(id, from, &data, truncated);
                let mut st = c.state.lock();
                let reader_blocked = dgram::over_budget(&st, self.read_buffer_size);
                st.in_flight -= 1;
                st.queued_bytes -= data.len();
                if flow == Flow::Pause {
                    st.paused = true;
                }
                let wake = reader_blocked && !st.paused;
                drop(st);
                if wake {
                    c.state.notify();
                }
            }
            Msg::DatagramError { id, to, error } => {
                if let Some(c) = self.conns.get(&id) {
                    if !c.closing && !c.failed {
                        sink.datagram_error(id, to, error);
                    }
                }
            }
            Msg::Connected { id, result } => {
                // The entry (and its handle of the socket) goes before the loop hears of it.
                let Some(entry) = self.connects.remove(&id) else {
                    return;
                };
                let closing = entry.closing;
                drop(entry);
                if closing {
                    self.report_closed(id, sink);
                } else {
                    sink.connected(id, result);
                }
            }
            Msg::Exited(conn) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.threads -= 1;
                    if c.closing && c.threads == 0 {
                        self.conns.remove(&conn);
                        self.report_closed(conn, sink);
                    }
                }
            }
            Msg::Closed(conn) => {
                self.conns.remove(&conn);
                self.report_closed(conn, sink);
            }
        }
    }
}

impl StdNet {
    /// Reports `closed`: the loop drops its socket in the call, and the threads have dropped
    /// theirs, so descriptors are free and a listener resting at the limit may try again.
    pub(super) fn report_closed<S: Sink>(&mut self, conn: Id, sink: &mut S) {
        sink.closed(conn);
        for l in self.listeners.values() {
            l.hurry();
        }
    }
}
