//! Receiving on a stream: one multishot `RECV` per connection (a bundle on 6.16+) selecting
//! from the loop's buffer ring (`bufring.rs`). The trail of a received slice: the completion
//! is reaped (`ring.rs`, `Uring::reap`), its buffers are taken out of the ring and it is
//! dispatched by kind (`mod.rs`, `Uring::complete`), then [`Uring::on_recv`] below lends the
//! bytes to [`Sink::received`] and `complete` puts the buffers back when it returns.
//!
//! On 6.16+ the receive is a bundle (`IORING_RECVSEND_BUNDLE`): one completion fills as many
//! ring entries as the socket holds, so the handler sees everything that arrived at once and
//! can answer with one large write; several back-to-back receives of one socket would also
//! cost extra TCP ACK segments (each receive that frees window is acknowledged at once) that
//! a reply would have carried. For bundles the entries are carved in turn from one small area
//! (512 KiB by default) mapped twice back to back, so a bundle's bytes are contiguous even
//! across the end of the area; plain receives cycle a window of whole buffers. Either way
//! received bytes are still in cache when the reply copies them out (see `bufring.rs`).
//!
//! An empty ring ends the multishot with `ENOBUFS`: the connection waits on the starved list
//! and [`Uring::rearm_starved`] re-arms it once entries are back, the longest waiting first
//! and only as many connections as the entries can serve at the recent entries per receive
//! (re-arming more would only fail again), but at least one per poll, and a poll does not
//! block while any waits (one with nothing to read completes nothing once re-armed, so no
//! completion would come to re-arm those behind it). `Flow::Pause` cancels the multishot;
//! completions already on their way are still delivered (the contract allows it), so no byte
//! is lost; [`Uring::resume_receiving`] arms it again. One `poll` delivers at most
//! [`Config::poll_read_budget`](crate::Config::poll_read_budget) bytes; completions past it
//! wait in a backlog for the next `poll` (which does not block), so the loop flushes replies
//! before it reads more.

use std::io;
use std::os::fd::AsRawFd;

use io_uring::opcode;
use io_uring::types::Fd;

use super::bufring::{Run, BGID};
use super::state::Conn;
use super::user_data::{cqe_error, Kind, Tag, MAX_INDEX};
use super::Uring;
use crate::contract::{Flow, Id, Sink};
use crate::socket::Socket;

impl Uring {
    /// [`Backend::add_conn`](crate::Backend::add_conn): tracks the connection and arms its
    /// receive.
    pub(super) fn start_receiving(&mut self, id: Id, socket: &Socket) -> io::Result<()> {
        let index = id.index();
        if index > MAX_INDEX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "connection index too large",
            ));
        }
        if self.conns.len() <= index {
            self.conns.resize_with(index + 1, || None);
        }
        if self.conns[index].is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "connection index in use",
            ));
        }
        self.conns[index] = Some(Conn::new(id, socket.as_raw_fd()));
        self.nconns += 1;
        self.maybe_arm(index);
        Ok(())
    }

    /// [`Backend::resume`](crate::Backend::resume) after `Flow::Pause`.
    pub(super) fn resume_receiving(&mut self, conn: Id) {
        if let Some(c) = self.conn_mut(conn) {
            c.paused = false;
            self.maybe_arm(conn.index());
        } else if let Some(d) = self.dgrams.get_mut(conn) {
            d.paused = false;
            self.arm_recvmsg(conn);
        }
    }

    /// A receive completion: lends each run of bytes to `sink.received` (`filled`, taken out
    /// of the buffer ring by the caller and recycled after this returns), or handles the end
    /// of the stream, backpressure (`ENOBUFS`) or a failure.
    pub(super) fn on_recv<S: Sink>(
        &mut self,
        id: Id,
        res: i32,
        more: bool,
        filled: &[Run],
        sink: &mut S,
    ) {
        let Some(conn) = self.conns.get_mut(id.index()).and_then(Option::as_mut) else {
            return;
        };
        if conn.id != id {
            // A late completion for an older connection on a reused index.
            return;
        }
        if !more {
            conn.recv_armed = false;
            conn.ops -= 1;
        }
        let mut cancel_recv = false;
        if res > 0 {
            if filled.is_empty() {
                log::error!("io_uring: receive completion without a buffer on {id:?}");
            }
            // A bundle may span a wrap of the ring (two runs): both are delivered, in order,
            // even after the sink asked to pause (the contract allows completions already on
            // their way).
            for &run in filled {
                if run.len == 0 || conn.closing || conn.ended {
                    continue;
                }
                // SAFETY: this completion filled `run`, which stays out of the ring until the
                // caller recycles it after this function returns.
                let data = unsafe { self.bufs.data(run) };
                self.poll_read += data.len();
                if sink.received(id, data) == Flow::Pause && !conn.paused {
                    conn.paused = true;
                    cancel_recv = conn.recv_armed && conn.cancels == 0;
                }
            }
        } else if res == 0 {
            if !conn.closing && !conn.ended {
                conn.ended = true;
                sink.eof(id);
            }
        } else {
            match -res {
                libc::ENOBUFS => {
                    // Backpressure: the ring is empty. Wait for buffers, never close.
                    self.nobufs += 1;
                    if !conn.starved && !conn.paused && !conn.closing {
                        conn.starved = true;
                        self.starved.push_back(id);
                    }
                }
                libc::ECANCELED | libc::EAGAIN | libc::EINTR => {}
                _ => {
                    if !conn.closing && !conn.failed {
                        conn.ended = true;
                        conn.failed = true;
                        sink.failed(id, cqe_error(res));
                    }
                }
            }
        }
        if cancel_recv {
            self.cancel_recv(id);
        }
        if !more {
            self.after_op(id, sink);
        }
    }

    /// Arms the multishot receive of connection `index` if it should be running; says
    /// whether it did.
    pub(super) fn maybe_arm(&mut self, index: usize) -> bool {
        let Some(Some(c)) = self.conns.get_mut(index) else {
            return false;
        };
        if c.recv_armed || c.paused || c.closing || c.ended || c.starved || c.cancels > 0 {
            return false;
        }
        c.recv_armed = true;
        c.ops += 1;
        let sqe = if self.bundles {
            opcode::RecvMultiBundle::new(Fd(c.fd), BGID).build()
        } else {
            opcode::RecvMulti::new(Fd(c.fd), BGID).build()
        }
        .user_data(Tag::conn(Kind::Recv, c.id).encode());
        // SAFETY: no pointers: the kernel picks buffers from the registered ring, which lives
        // as long as the io_uring.
        unsafe { self.push(sqe) };
        true
    }

    /// Re-arms connections that ran out of buffers, now that buffers are back: the longest
    /// waiting first, and no more of them than the buffers the ring will hold can serve. One
    /// with data waiting takes a receive's worth of buffers (several, with bundles) as soon as
    /// the kernel sees it, so re-arming more would send them straight back to `ENOBUFS`: with
    /// thousands starved and a few buffers free, every poll would cost thousands of
    /// submissions and failed receives. Re-arms queued but not yet submitted have their
    /// buffers promised already.
    ///
    /// Not every parked connection has data waiting: the kernel picks a buffer before it
    /// reads, so a receive issued while the ring was empty fails whether or not its socket
    /// held anything. Re-armed, such a connection completes nothing, and no completion would
    /// come to re-arm the ones parked behind it. So this runs on every poll (at the end of
    /// `reap`), `poll` does not block while connections are parked, and at least one is
    /// re-armed whenever the ring has an entry: the parked list drains however few buffers a
    /// receive's recent average leaves.
    pub(super) fn rearm_starved(&mut self) {
        let fits = match self.bufs.available() {
            0 => 0,
            n => (n / self.bufs.buffers_per_recv()).max(1),
        };
        let mut budget = fits.saturating_sub(self.rearms_queued);
        while budget > 0 {
            let Some(id) = self.starved.pop_front() else {
                break;
            };
            if let Some(c) = self.conn_mut(id) {
                c.starved = false;
                if self.maybe_arm(id.index()) {
                    budget -= 1;
                    self.rearms_queued += 1;
                }
            }
        }
    }

    /// Cancels the multishot receive of `id` (after `Flow::Pause` or a failure).
    pub(super) fn cancel_recv(&mut self, id: Id) {
        self.cancel_op(id, Kind::Recv);
    }
}
