//! The io_uring backend (Linux 6.0+): one ring per loop, multishot receive into a registered
//! provided-buffer ring, sends from frozen `Bytes`, an eventfd waker, accepts through an epoll
//! instance the ring polls; datagram sockets (multishot `RECVMSG` from a buffer group of their
//! own, linked `SENDMSG` chains) and outbound connects.
//!
//! * **Accepting** (`accept.rs`): the listeners are registered with an epoll instance of the
//!   backend's own (`listeners.rs`, shared with the epoll backend), and the ring keeps one
//!   multishot `POLL_ADD` on that instance's descriptor; when it fires, `accept4` takes what
//!   is pending. The ring thus never holds a reference to a listening socket, so a killed
//!   server's port is free at once (a multishot `ACCEPT` kept it taken 5-17 ms; test
//!   `killed_server_frees_its_port_at_once`), at the same cost per connection.
//!
//! * **Set-up** (`setup.rs`): `SUBMIT_ALL | SINGLE_ISSUER | DEFER_TASKRUN`, stepping down to
//!   `COOP_TASKRUN | TASKRUN_FLAG`, then to no optional flags, when the kernel answers
//!   `EINVAL`; the completion queue is four times the submission queue. Every opcode used is
//!   probed. `ENOSYS`/`EPERM`/`EINVAL`/missing opcodes for streams are
//!   [`OpenError::Unavailable`]; a missing `RECVMSG` or `CONNECT` only makes
//!   [`Backend::capabilities`] say that datagrams or connects are unavailable, and why.
//! * **Memlock** (`memlock.rs`): without `CAP_IPC_LOCK` the kernel charges the ring and the
//!   buffer rings' descriptors to `RLIMIT_MEMLOCK`, per user. On `ENOMEM` the open steps
//!   down, to 64 submission entries and 256 ring buffers at the least ([`Uring::reduced`]
//!   says by how much); when none fits it is [`OpenError::ResourceLimit`], naming the limit,
//!   its value and the ways to raise it. The datagram group's page is charged when the first
//!   datagram socket is added: `ENOMEM` then refuses that `add_datagram` (a resource
//!   shortage the loop retries), nothing else.
//! * **Waiting**: submission and waiting are one `io_uring_enter` (`GETEVENTS`, with the poll
//!   timeout passed through `EXT_ARG`). Submissions queued between polls (re-arms, sends,
//!   cancellations) go to the kernel with the next poll, in one batch.
//! * **Receiving** (`recv.rs`, `bufring.rs`): one multishot `RECV` per connection selecting
//!   from the loop's buffer ring; each completion's bytes are lent to [`Sink::received`] as
//!   one slice and taken back when it returns. On 6.16+ the receive is a bundle: one
//!   completion fills as many ring entries as the socket holds, carved from one small area
//!   mapped twice back to back so that they are contiguous. An empty ring (`ENOBUFS`) is
//!   backpressure: the connection is parked and re-armed when entries are back, at least one
//!   per poll, and a poll does not block while any is parked. `Flow::Pause` cancels the
//!   multishot. One `poll` delivers at most [`Config::poll_read_budget`] bytes, the rest
//!   waits in a backlog for the next.
//! * **Sending** (`send.rs`): one `SEND` (one buffer) or `SENDMSG` (several) in flight per
//!   connection, from the frozen `Bytes` the loop handed over; a short send is resubmitted
//!   for the rest. Finished operations are kept for reuse. No `SEND_ZC` (see `send.rs`).
//! * **Datagrams** (`recvmsg.rs`): one multishot `RECVMSG` per datagram socket, from a
//!   buffer group of its own (`bufring/dgram.rs`): 64 whole buffers of `read_buffer_size`
//!   behind the header and source address the kernel writes first, registered when the first
//!   datagram socket is added (a stream-only server has none). The stream ring's entries are
//!   sized to the stream traffic and would cut datagrams. One completion is one datagram, one
//!   [`Sink::datagram`] with its source, `truncated` when it was longer than the buffer.
//!   `ENOBUFS` waits for the buffers to come back, as for streams; the network's errors
//!   (ICMP) are [`Sink::datagram_error`]s and the receive goes on.
//! * **Sending datagrams** (`sendmsg.rs`): a `send_to` batch is one `SENDMSG` per datagram,
//!   each with its own `msghdr`, iovec and destination in a boxed batch owned by the socket,
//!   submitted as chains of linked entries so that the kernel sends them in order; a datagram
//!   that fails is reported with its destination and the rest go on; `sent` once with the
//!   batch's total. The enter after a chain moved runs it through (one poll per batch, not
//!   one per datagram).
//! * **Connecting** (`connect.rs`): `IORING_OP_CONNECT`, the destination boxed in the entry;
//!   [`Sink::connected`] with the kernel's result, then the id is forgotten.
//! * **Closing** (`close.rs`): an `ASYNC_CANCEL` by `user_data` for each operation a stream,
//!   a datagram socket or a connect has in flight (for a send chain, the datagram it is at:
//!   the link fails the rest); every operation is counted and `closed` is reported when the
//!   count drops to zero, so no buffer, address or descriptor outlives it.
//! * **`user_data`** (`user_data.rs`): kind, index and generation, so stale completions are
//!   recognised (a `send_to` datagram carries its position in the batch instead).
//!
//! # Layout: one file per operation family
//!
//! Each file holds an operation's submission and its completion handling together:
//!
//! | file | operations |
//! |---|---|
//! | `accept.rs` | the multishot `POLL_ADD` on the listeners' epoll instance, `accept4` |
//! | `recv.rs` | a stream's multishot `RECV` (bundle), backpressure, pause and resume |
//! | `send.rs` | a stream's `SEND`/`SENDMSG`, short sends, reused operations |
//! | `recvmsg.rs` | a datagram socket's multishot `RECVMSG`, parsing, backpressure |
//! | `sendmsg.rs` | a `send_to` batch: linked `SENDMSG` chains, per-datagram failures |
//! | `connect.rs` | `CONNECT` |
//! | `close.rs` | cancellations, `closed`, and the ring's shutdown (`Drop`) |
//! | `waker.rs` | the eventfd and its multishot `POLL_ADD` |
//!
//! Around them: `mod.rs` (this file) turns each [`Backend`] call into the operation's
//! function and dispatches each completion by its kind (`Uring::complete`); `ring.rs`
//! queues submissions, enters the kernel and reaps completions; `state.rs` is what is tracked
//! per id; `setup.rs` opens the backend, `probe.rs` finds what the kernel offers; `bufring.rs` (with
//! `area.rs`) is the stream receive buffer ring, `bufring/dgram.rs` the datagram buffer
//! group; `memlock.rs` the steps down under `RLIMIT_MEMLOCK`.
//!
//! A received slice, followed from the kernel to the handler: `Backend::poll` (here) calls
//! `Uring::enter` and `Uring::reap` (`ring.rs`); `reap` hands each completion to
//! `Uring::complete` (here), which takes the buffers it filled out of the ring
//! (`BufRing::take_filled`) and dispatches it by kind to `Uring::on_recv` (`recv.rs`), which
//! lends the bytes (`BufRing::data`) to [`Sink::received`]; back in `complete`, the buffers
//! return to the ring (`BufRing::recycle_run`), published to the kernel before the next
//! submission. A datagram takes the same road to `Uring::complete`, which hands it whole to
//! `Uring::on_recvmsg` (`recvmsg.rs`): the buffer is taken from the datagram group, parsed,
//! lent to [`Sink::datagram`] and given back there.
//!
//! `Uring` is deliberately not `Send`: with `SINGLE_ISSUER` the ring belongs to the thread
//! that created it, so open the backend on the loop's own thread.

mod accept;
mod area;
mod bufring;
mod close;
mod connect;
mod memlock;
mod probe;
mod recv;
mod recvmsg;
mod ring;
mod send;
mod sendmsg;
mod setup;
mod state;
mod user_data;
mod waker;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bufring;
#[cfg(test)]
mod tests_load;
#[cfg(test)]
mod tests_ops;

use std::collections::VecDeque;
use std::io;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{cqueue, IoUring};

use crate::contract::{
    Backend, BackendKind, Capabilities, Config, Datagram, Id, OpenError, Sink, Stats, Wake,
};
use crate::listeners::Listeners;
use crate::selector::epoll::Poller;
use crate::socket::{Addr, Listener, Socket};

use bufring::{BufRing, DgramRing, Run};
use memlock::Closing;
use send::SendOp;
use setup::Tier;
use state::{Conn, Connecting, Dgram, Pending, Table};
use user_data::{Kind, Tag};
use waker::EventFdWaker;

/// The io_uring backend. See the [module documentation](self).
pub struct Uring {
    /// Dropped by hand in `Drop`, before `bufs`: the kernel must be done with the buffers.
    ring: ManuallyDrop<IoUring>,
    bufs: ManuallyDrop<BufRing>,
    tier: Tier,
    waker: Arc<EventFdWaker>,
    wake_armed: bool,
    conns: Vec<Option<Conn>>,
    /// Stream connections in `conns` ([`Stats::conns`] adds `unreported_closes`).
    nconns: usize,
    /// Ids `close` forgot at once (nothing in flight) whose `closed` waits in `pending`:
    /// [`Stats::conns`] counts them until it is reported.
    unreported_closes: usize,
    /// The listeners, accepted from with `accept4` when `accept_poller` reports them ready.
    listeners: Listeners,
    /// An epoll instance watching the listeners; the ring polls its descriptor (see the
    /// module documentation: the ring then holds no reference to a listening socket).
    accept_poller: Poller,
    /// The ring's multishot poll on `accept_poller` is armed.
    accept_armed: bool,
    /// Connections whose receive ended on an empty buffer ring.
    starved: VecDeque<Id>,
    /// Events produced outside `poll`, reported by the next one.
    pending: VecDeque<Pending>,
    /// Completions reaped outside `poll` (to make room while submitting).
    backlog: Vec<cqueue::Entry>,
    scratch: Vec<cqueue::Entry>,
    /// Submitted operations whose last completion has not been reaped.
    inflight: usize,
    shutting_down: bool,
    /// Receives that ended on an empty buffer ring (backpressure events), for tests.
    nobufs: u64,
    /// Starved receives re-armed since the last submission: each takes buffers as soon as
    /// the kernel sees it, so they count against the buffers available.
    rearms_queued: usize,
    /// [`Config::poll_read_budget`]: received bytes one `poll` delivers before the rest of the
    /// completions wait in `backlog` for the next one.
    poll_read_budget: usize,
    /// Bytes delivered by the current `poll`.
    poll_read: usize,
    /// Receives are bundles (several buffers per completion), see [`probe::use_bundles`].
    bundles: bool,
    /// Scratch: the buffers one receive completion filled.
    filled: Vec<bufring::Run>,
    /// Finished send operations kept for reuse (at most [`send::SPARE_SENDS`]), so a send costs
    /// no allocation of its own in the steady state. Boxed because an operation is moved
    /// into its connection and must keep its address while the kernel reads it.
    #[allow(clippy::vec_box)]
    spare_sends: Vec<Box<SendOp>>,
    /// Flags added to every `io_uring_enter` (`IORING_ENTER_NO_IOWAIT` where known).
    enter_flags: u32,
    /// Why the ring is smaller than configured (the memlock limit), see [`Uring::reduced`].
    reduced: Option<String>,
    /// What the kernel lets the backend do besides streams, found at open.
    caps: Capabilities,
    /// [`Config::read_buffer_size`]: the largest datagram received whole (up to 64 KiB).
    read_buffer_size: usize,
    /// Datagram sockets (`recvmsg.rs`, `sendmsg.rs`).
    dgrams: Table<Dgram>,
    /// The datagram buffer group, registered with the first datagram socket.
    dgram_bufs: Option<DgramRing>,
    /// Buffers the datagram group gets when it is registered.
    dgram_buffers: u16,
    /// Datagram sockets whose receive ended on an empty datagram group.
    dgram_starved: VecDeque<Id>,
    /// Datagram receives that ended on an empty group, for tests.
    dgram_nobufs: u64,
    /// Scratch: the linked submissions of one `send_to` chain.
    chain: Vec<io_uring::squeue::Entry>,
    /// Datagrams of `send_to` chains submitted and not completed.
    chain_ops: usize,
    /// A chain was submitted or moved on since the last enter (see `Uring::chain_wait`).
    chain_moved: bool,
    /// Sockets being connected (`connect.rs`).
    connects: Table<Connecting>,
    /// Dropped after the ring (fields drop after `Drop::drop`, which closes it): notes the
    /// close for the opens that follow, see `memlock.rs`.
    _closing: Closing,
}

/// See `testing::pretend_io_uring_lacks`.
#[doc(hidden)]
pub fn hide_opcodes_in_process(names: &[&str]) {
    probe::hide_in_process(names);
}

impl Uring {
    /// One completion: its buffers (a receive's) are taken out of the ring, it is handled
    /// by the function of its kind, and the buffers go back to the ring.
    pub(super) fn complete<S: Sink>(&mut self, cqe: cqueue::Entry, sink: &mut S) {
        let (res, flags) = (cqe.result(), cqe.flags());
        let more = cqueue::more(flags);
        if !more {
            self.inflight = self.inflight.saturating_sub(1);
        }
        let Some(tag) = Tag::decode(cqe.user_data()) else {
            log::warn!(
                "io_uring: completion with unknown user_data {:#x}",
                cqe.user_data()
            );
            return self.complete_stream(None, res, flags, more, sink);
        };
        match tag.kind {
            // A datagram's buffer belongs to the datagram group, not to the stream ring.
            Kind::RecvMsg => self.on_recvmsg(tag.conn_id(), res, flags, more, sink),
            _ => self.complete_stream(Some(tag), res, flags, more, sink),
        }
    }

    /// A completion of any kind but a datagram receive. Whatever buffers it carries are out
    /// of the stream ring from here until they are put back at the end, after the receive
    /// (the only kind that should carry any) lent them to the sink.
    fn complete_stream<S: Sink>(
        &mut self,
        tag: Option<Tag>,
        res: i32,
        flags: u32,
        more: bool,
        sink: &mut S,
    ) {
        let mut filled = std::mem::take(&mut self.filled);
        if let Some(first) = cqueue::buffer_select(flags) {
            let len = usize::try_from(res).unwrap_or(0);
            self.bufs.take_filled(first, len, &mut filled);
        }
        if let Some(tag) = tag {
            self.dispatch(tag, res, more, &filled, sink);
        }
        for run in filled.drain(..) {
            self.bufs.recycle_run(run);
        }
        self.filled = filled;
    }

    fn dispatch<S: Sink>(&mut self, tag: Tag, res: i32, more: bool, filled: &[Run], sink: &mut S) {
        match tag.kind {
            Kind::Recv => self.on_recv(tag.conn_id(), res, more, filled, sink),
            Kind::Send => self.on_send(tag.conn_id(), res, sink),
            Kind::ConnCancel => self.on_cancel(tag.conn_id(), res, sink),
            Kind::Accept => self.on_accept(res, more, sink),
            Kind::Wake => self.on_wake(res, more, sink),
            Kind::Cancel => {}
            Kind::RecvMsg => {} // routed by `complete`
            Kind::SendTo => self.on_send_to(tag, res, sink),
            Kind::DgramCancel => self.on_dgram_cancel(tag.conn_id(), res, sink),
            Kind::Connect => self.on_connect(tag.conn_id(), res, sink),
            Kind::ConnectCancel => self.on_connect_cancel(tag.conn_id(), res, sink),
        }
    }
}

impl Backend for Uring {
    const KIND: BackendKind = BackendKind::Uring;
    // A direct send is a syscall of its own where a queued one rides in io_uring_enter, but
    // it saves the copy into the queue, the send's completion and often a second
    // io_uring_enter (the one whose wait the send's completion ends at once). Measured at
    // 1,000 connections, 512 B pipeline 16 (8 KiB replies): 6% less server CPU per message
    // at a fixed rate than queuing them, and the same or better throughput at saturation.
    // Smaller writes are coalesced per callback and queued.
    const DIRECT_SEND: Option<usize> = Some(4096);

    fn open(config: &Config) -> Result<Self, OpenError> {
        Uring::open(config)
    }

    fn waker(&self) -> Arc<dyn Wake> {
        self.waker.clone()
    }

    fn add_listener(&mut self, id: Id, listener: &Listener) -> io::Result<()> {
        self.start_accepting(id, listener)
    }

    fn remove_listener(&mut self, id: Id) {
        self.stop_accepting(id)
    }

    fn add_conn(&mut self, id: Id, socket: &Socket) -> io::Result<()> {
        self.start_receiving(id, socket)
    }

    fn send(&mut self, conn: Id, bufs: Vec<Bytes>) {
        self.queue_send(conn, bufs)
    }

    fn resume(&mut self, conn: Id) {
        self.resume_receiving(conn)
    }

    fn close(&mut self, conn: Id) {
        self.start_close(conn)
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    fn add_datagram(&mut self, id: Id, socket: &Socket) -> io::Result<()> {
        self.start_datagrams(id, socket)
    }

    fn send_to(&mut self, id: Id, batch: Vec<Datagram>) {
        self.queue_send_to(id, batch)
    }

    fn connect(&mut self, id: Id, socket: &Socket, to: &Addr) {
        self.start_connect(id, socket, to)
    }

    fn stats(&self) -> Stats {
        let dgram = self
            .dgram_bufs
            .as_ref()
            .map_or((0, 0), |g| (g.total(), g.free()));
        Stats {
            buffers_total: self.bufs.total() + dgram.0,
            buffers_free: self.bufs.free() + dgram.1,
            ops_in_flight: self.inflight,
            conns: self.nconns + self.dgrams.len() + self.connects.len() + self.unreported_closes,
        }
    }

    fn poll<S: Sink>(&mut self, timeout: Option<Duration>, sink: &mut S) -> io::Result<()> {
        let mut reported = !self.backlog.is_empty();
        while let Some(p) = self.pending.pop_front() {
            reported = true;
            match p {
                Pending::Closed(id) => {
                    self.unreported_closes -= 1;
                    self.report_closed(id, sink);
                }
                Pending::Sent(id, n) => sink.sent(id, n),
                Pending::Connected(id, e) => sink.connected(id, Err(e)),
            }
        }
        if !self.wake_armed {
            self.arm_wake();
        }
        // Connections parked on an empty ring are re-armed a few per poll (`rearm_starved`).
        let wait = if reported || !self.starved.is_empty() {
            Some(Duration::ZERO)
        } else {
            match self.listeners.next_retry() {
                None => timeout,
                Some(at) => {
                    let until = at.saturating_duration_since(Instant::now());
                    Some(timeout.map_or(until, |t| t.min(until)))
                }
            }
        };
        self.enter(wait)?;
        self.reap(sink);
        self.listeners.retry_due(sink);
        Ok(())
    }
}
