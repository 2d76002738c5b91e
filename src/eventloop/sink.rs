//! What the backend reports, turned into loop state and handler calls.

use std::io;

use gnet_backends::{Addr, Flow, Id, Sink, Socket};

use super::Core;
use crate::handle::Task;
use crate::handler::{CloseCause, EventHandler};

fn cause_of(e: io::Error) -> CloseCause {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => CloseCause::Reset,
        _ => CloseCause::Error(e.into()),
    }
}

impl<H: EventHandler> Sink for Core<H> {
    fn accepted(&mut self, _listener: Id, socket: Socket, peer: Addr) {
        if self.stopping {
            return;
        }
        let inner = &self.engine.inner;
        if inner.single_acceptor {
            let target = inner.balancer.pick(&inner.loops, &peer);
            if target != self.index {
                if let Err(t) = inner.loops[target].push(Task::Register { socket, peer }) {
                    drop(t);
                }
                return;
            }
        }
        self.incoming.push((socket, peer));
    }

    fn accept_error(&mut self, listener: Id, error: io::Error) {
        log::warn!(
            "gnet: loop {} accept on listener {} failed: {error}",
            self.index,
            listener.0
        );
    }

    fn received(&mut self, conn: Id, data: &[u8]) -> Flow {
        match self.state(conn) {
            Some(st) if st.is_open() => self.traffic(conn, Some(data)),
            _ => Flow::Continue,
        }
    }

    fn eof(&mut self, conn: Id) {
        if let Some(st) = self.state(conn) {
            st.eof = true;
        }
        self.begin_close(conn, CloseCause::PeerClosed);
    }

    fn sent(&mut self, conn: Id, n: usize) {
        let max_out = self.opts.max_outbound;
        let Some(st) = self.state(conn) else { return };
        st.sending = 0;
        if let Some(d) = st.dgram.as_mut() {
            d.in_flight = false;
        }
        st.sent_total += n as u64;
        while st
            .waiters
            .front()
            .is_some_and(|(end, _, _)| *end <= st.sent_total)
        {
            if let Some((_, len, done)) = st.waiters.pop_front() {
                done(Ok(len));
            }
        }
        if let Some(h) = st.handle.get() {
            h.publish(st.pending());
        }
        let resume = st.paused && st.pending() <= max_out / 2;
        if resume {
            self.resume.push(conn);
        }
        self.mark(conn);
    }

    fn reclaim(&mut self, bufs: Vec<bytes::Bytes>) {
        self.local.pool.put(bufs);
    }

    fn failed(&mut self, conn: Id, error: io::Error) {
        self.fail(conn, cause_of(error));
    }

    fn closed(&mut self, conn: Id) {
        self.finish_close(conn);
    }

    fn woken(&mut self) {
        self.woken = true;
    }

    fn datagram(&mut self, id: Id, from: std::net::SocketAddr, data: &[u8], t: bool) -> Flow {
        Core::datagram(self, id, from, data, t);
        Flow::Continue
    }

    fn datagram_error(&mut self, id: Id, to: Option<std::net::SocketAddr>, e: io::Error) {
        // UDP is lossy: a datagram that could not go, or an ICMP error, is worth a debug line.
        match to {
            Some(to) => log::debug!("gnet: {id}: a datagram to {to} was not sent: {e}"),
            None => log::debug!("gnet: {id}: the network reported: {e}"),
        }
    }

    fn connected(&mut self, id: Id, result: io::Result<()>) {
        self.connect_results.push((id, result));
    }
}
