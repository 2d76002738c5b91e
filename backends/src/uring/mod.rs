//! The io_uring backend (Linux 6.0+): one ring per loop, multishot receive into a registered
//! provided-buffer ring, sends from frozen `Bytes`, an eventfd waker, and accepts through an
//! epoll instance the ring polls.
//!
//! * **Accepting**: the listeners are registered with an epoll instance of the backend's own
//!   (`listeners.rs`, shared with the epoll backend: the same accept loop and the same pause
//!   on resource errors), and the ring keeps one multishot `POLL_ADD` on that instance's
//!   descriptor; when it fires, `accept4` takes what is pending. An io_uring operation on a
//!   listening socket (a multishot `ACCEPT`) holds a reference to it until its completion, and
//!   when a process is killed the kernel tears its rings down asynchronously: the port stayed
//!   taken 5-17 ms after the process was gone, and an immediate restart failed with
//!   `EADDRINUSE`. An epoll instance holds no reference to what it watches, so the listening
//!   socket closes with the process (test `killed_server_frees_its_port_at_once`). Measured
//!   against multishot accept with `cargo bench --bench churn` (connect, 16-byte echo, close;
//!   server and clients on separate cores, alternated): within 2% (13.6k vs 13.8k
//!   connections per second), the `accept4` returning the peer's address where multishot accept
//!   needed a `getpeername`. It also makes the descriptor limit effective at once: a
//!   multishot accept keeps the `RLIMIT_NOFILE` it read when it was armed.
//!
//! * **Set-up** (`setup.rs`): `SUBMIT_ALL | SINGLE_ISSUER | DEFER_TASKRUN`, stepping down to
//!   `COOP_TASKRUN | TASKRUN_FLAG`, then to no optional flags, when the kernel answers
//!   `EINVAL`; the completion queue is four times the submission queue. Every opcode used is
//!   probed. `ENOSYS`/`EPERM`/`EINVAL`/missing opcodes are [`OpenError::Unavailable`].
//! * **Memlock** (`memlock.rs`): without `CAP_IPC_LOCK` the kernel charges the ring (on 6.18:
//!   35 pages for the default 1024 entries) and the buffer ring's descriptors (one page per
//!   256) to `RLIMIT_MEMLOCK`, per user. On `ENOMEM` the open steps down, to 64 submission
//!   entries and 256 ring buffers at the least ([`Uring::reduced`] says by how much: under
//!   the 64 KiB of older distributions one loop gets 256 entries); a smaller ring that fitted
//!   is where the next opens of the process start. When none fits it is
//!   [`OpenError::ResourceLimit`], naming the limit, its value and the ways to raise it.
//! * **Waiting**: submission and waiting are one `io_uring_enter` (`GETEVENTS`, with the poll
//!   timeout passed through `EXT_ARG`). Submissions queued between polls (re-arms, sends,
//!   cancellations) go to the kernel with the next poll, in one batch.
//! * **Receiving** (`bufring.rs`): one multishot `RECV` per connection selecting from the loop's
//!   buffer ring; each completion's bytes are lent to [`Sink::received`] as one slice and
//!   taken back when it returns. On 6.16+ the receive is a bundle (`IORING_RECVSEND_BUNDLE`):
//!   one completion fills as many ring entries as the socket holds: the handler sees
//!   everything that arrived at once and can answer with one large write. Several
//!   back-to-back receives of one socket would also cost extra TCP ACK segments (each receive
//!   that frees window is acknowledged at once) that a reply would have carried. For bundles
//!   the entries are carved in turn from one small area (512 KiB by default) mapped twice
//!   back to back, so a bundle's bytes are contiguous even across the end of the area; plain
//!   receives cycle a window of whole buffers. Either way received bytes are still in cache
//!   when the reply copies them out (see `bufring.rs`).
//!   An empty ring ends the multishot with `ENOBUFS`: the connection waits on a list and is
//!   re-armed when entries are back, the longest waiting first and only as many connections
//!   as the entries can serve at the recent entries per receive (re-arming more would only
//!   fail again), but at least one per poll, and a poll does not block while any waits (one
//!   with nothing to read completes nothing once re-armed). `Flow::Pause` cancels the
//!   multishot; completions already on their way are still delivered (the contract allows
//!   it), so no byte is lost.
//!   One `poll` delivers at most [`Config::poll_read_budget`] bytes; completions past it wait
//!   in a backlog for the next `poll` (which does not block), so the loop flushes replies
//!   before it reads more.
//! * **Sending**: one `SEND` (one buffer) or `SENDMSG` (several) in flight per connection,
//!   from the frozen `Bytes` the loop handed over; a short send is resubmitted for the rest.
//!   Finished operations (box and iovec array) are kept for reuse. `SEND_ZC` is not used:
//!   measured on loopback (`benches/send_zc.rs`) it costs more below 64 KiB, and its buffers
//!   must outlive the send's completion (until the notification), which the one-send
//!   contract does not model yet.
//! * **Closing**: one `ASYNC_CANCEL` by descriptor (all matches); every operation of a
//!   connection is counted and `closed` is reported when the count drops to zero.
//! * **`user_data`** (`ops.rs`): kind, index and generation, so stale completions are
//!   recognised.
//!
//! `Uring` is deliberately not `Send`: with `SINGLE_ISSUER` the ring belongs to the thread
//! that created it, so open the backend on the loop's own thread.

mod area;
mod bufring;
mod complete;
mod memlock;
mod ops;
mod setup;
mod submit;
mod waker;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bufring;
#[cfg(test)]
mod tests_load;

use std::collections::VecDeque;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{cqueue, IoUring};

use crate::contract::{Backend, BackendKind, Config, Id, OpenError, Sink, Stats, Wake};
use crate::listeners::Listeners;
use crate::poller::{Poller, Token, READ_INTEREST};
use crate::socket::{Listener, Socket};

use bufring::BufRing;
use memlock::{Closing, Ladder};
use ops::{SendOp, MAX_INDEX};
use setup::Tier;
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
    /// Connections added and not yet reported closed ([`Stats::conns`]).
    nconns: usize,
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
    /// Receives are bundles (several buffers per completion), see [`setup::use_bundles`].
    bundles: bool,
    /// Scratch: the buffers one receive completion filled.
    filled: Vec<bufring::Run>,
    /// Finished send operations kept for reuse (at most [`SPARE_SENDS`]), so a send costs
    /// no allocation of its own in the steady state. Boxed because an operation is moved
    /// into its connection and must keep its address while the kernel reads it.
    #[allow(clippy::vec_box)]
    spare_sends: Vec<Box<SendOp>>,
    /// Flags added to every `io_uring_enter` (`IORING_ENTER_NO_IOWAIT` where known).
    enter_flags: u32,
    /// Why the ring is smaller than configured (the memlock limit), see [`Uring::reduced`].
    reduced: Option<String>,
    /// Dropped after the ring (fields drop after `Drop::drop`, which closes it): notes the
    /// close for the opens that follow, see `memlock.rs`.
    _closing: Closing,
}

/// The most finished send operations kept for reuse.
const SPARE_SENDS: usize = 1024;

/// Per-connection state, indexed by [`Id::index`].
struct Conn {
    id: Id,
    /// Borrowed from the loop's `Socket` until `closed`.
    fd: RawFd,
    /// Operations (receive, send, cancellations) submitted and not completed.
    ops: u32,
    /// Cancellations among `ops`: no receive is armed while one is outstanding.
    cancels: u32,
    recv_armed: bool,
    paused: bool,
    /// On the starved list (receive ended with `ENOBUFS`).
    starved: bool,
    /// `eof` or `failed` was reported: receiving is over.
    ended: bool,
    failed: bool,
    closing: bool,
    send: Option<Box<SendOp>>,
}

enum Pending {
    Closed(Id),
    Sent(Id, usize),
}

impl Uring {
    /// The setup flags the kernel accepted for this ring.
    pub fn setup_flags(&self) -> &'static str {
        self.tier.describe()
    }

    /// Submission queue entries: [`Config::ring_entries`], or fewer when `RLIMIT_MEMLOCK`
    /// did not hold a ring that large (see [`Uring::reduced`]).
    pub fn ring_entries(&self) -> u32 {
        self.ring.params().sq_entries()
    }

    /// Entries of the provided-buffer ring: [`Config::ring_buffers`], or fewer when
    /// `RLIMIT_MEMLOCK` did not hold that many.
    pub fn ring_buffers(&self) -> usize {
        self.bufs.total()
    }

    /// When the ring is smaller than configured: why (the memlock limit, its value, how to
    /// raise it) and by how much. `None` for a ring of the configured sizes.
    pub fn reduced(&self) -> Option<&str> {
        self.reduced.as_deref()
    }

    /// Whether receives are bundles (one completion may fill several ring buffers).
    pub fn recv_bundles(&self) -> bool {
        self.bundles
    }

    /// Whether the loop's waits are kept out of the I/O wait figures
    /// (`IORING_ENTER_NO_IOWAIT`, Linux 6.15+).
    pub fn waits_without_iowait(&self) -> bool {
        self.enter_flags & submit::ENTER_NO_IOWAIT != 0
    }

    /// Releases a finished send's bytes and keeps the operation for reuse.
    fn recycle_send(&mut self, mut op: Box<SendOp>) {
        op.clear();
        if self.spare_sends.len() < SPARE_SENDS {
            self.spare_sends.push(op);
        }
    }

    fn conn_mut(&mut self, id: Id) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .filter(|c| c.id == id)
    }

    /// Reports `closed`, and stops counting the connection: the loop drops the socket in the
    /// call, so a descriptor is free and a listener paused at the descriptor limit can try
    /// again at once.
    fn report_closed<S: Sink>(&mut self, id: Id, sink: &mut S) {
        self.nconns -= 1;
        sink.closed(id);
        self.listeners.connection_closed();
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
        let waker = EventFdWaker::new().map_err(OpenError::Failed)?;
        let accept_poller = Poller::new().map_err(OpenError::Failed)?;
        let mut ladder = Ladder::new(config);
        let (ring, tier, bundles, bufs) = loop {
            let (ring, tier) = setup::build(&mut ladder)?;
            setup::probe(&ring)?;
            let bundles = setup::use_bundles(config, &ring);
            // SAFETY: `bufs` is stored in the `Uring` below next to the ring; its `Drop`
            // unregisters the group and destroys the ring before it frees the buffer memory.
            if let Some(bufs) = unsafe { setup::buffers(&ring, config, bundles, &mut ladder) }? {
                break (ring, tier, bundles, bufs);
            }
            // Not even the fewest buffers fit beside this ring: close it, try a smaller one.
        };
        log::debug!(
            "io_uring backend: {}, sq {} cq {}, {} buffers of {} bytes, {} receives",
            tier.describe(),
            ring.params().sq_entries(),
            ring.params().cq_entries(),
            bufs.total(),
            config.read_buffer_size,
            if bundles { "bundled" } else { "plain" }
        );
        let mut me = Uring {
            ring: ManuallyDrop::new(ring),
            bufs: ManuallyDrop::new(bufs),
            tier,
            waker: Arc::new(waker),
            wake_armed: false,
            conns: Vec::new(),
            nconns: 0,
            listeners: Listeners::default(),
            accept_poller,
            accept_armed: false,
            starved: VecDeque::new(),
            pending: VecDeque::new(),
            backlog: Vec::new(),
            scratch: Vec::new(),
            inflight: 0,
            shutting_down: false,
            nobufs: 0,
            rearms_queued: 0,
            poll_read_budget: config.poll_read_budget.max(1),
            poll_read: 0,
            bundles,
            filled: Vec::new(),
            spare_sends: Vec::new(),
            enter_flags: 0,
            reduced: None,
            _closing: Closing,
        };
        me.arm_wake();
        me.first_enter().map_err(OpenError::Failed)?;
        me.reduced = ladder.fitted();
        Ok(me)
    }

    fn waker(&self) -> Arc<dyn Wake> {
        self.waker.clone()
    }

    fn add_listener(&mut self, id: Id, listener: &Listener) -> io::Result<()> {
        if self.listeners.contains(id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "listener id in use",
            ));
        }
        // Readiness that already holds (connections queued before this call) makes the epoll
        // instance readable at once: `EPOLL_CTL_ADD` checks it.
        self.accept_poller
            .add(listener.as_fd(), READ_INTEREST, Token::Listener(id.index()))?;
        self.listeners.insert(id, listener.as_raw_fd());
        if !self.accept_armed {
            self.arm_accept();
        }
        Ok(())
    }

    fn remove_listener(&mut self, id: Id) {
        let Some(fd) = self.listeners.remove(id) else {
            log::warn!(
                "io_uring: remove_listener({}) for an unknown listener",
                id.0
            );
            return;
        };
        // SAFETY: the loop keeps the listener open until this call returns.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        // Synchronous: no accept for this listener can happen after this returns, and the
        // ring never held a reference to it.
        if let Err(e) = self.accept_poller.delete(fd) {
            log::warn!("io_uring: deregistering listener {}: {e}", id.0);
        }
    }

    fn add_conn(&mut self, id: Id, socket: &Socket) -> io::Result<()> {
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
        self.conns[index] = Some(Conn {
            id,
            fd: socket.as_raw_fd(),
            ops: 0,
            cancels: 0,
            recv_armed: false,
            paused: false,
            starved: false,
            ended: false,
            failed: false,
            closing: false,
            send: None,
        });
        self.nconns += 1;
        self.maybe_arm(index);
        Ok(())
    }

    fn send(&mut self, conn: Id, bufs: Vec<Bytes>) {
        let mut op = self.spare_sends.pop().unwrap_or_else(SendOp::empty);
        op.load(bufs);
        let Some(c) = self.conn_mut(conn) else {
            log::debug!("io_uring: send on unknown connection {conn:?} dropped");
            return self.recycle_send(op);
        };
        if c.closing {
            return self.recycle_send(op);
        }
        if c.send.is_some() {
            log::error!("io_uring: second send in flight on {conn:?}; dropped (contract)");
            debug_assert!(false, "second send in flight on {conn:?}");
            return self.recycle_send(op);
        }
        if op.total == 0 {
            self.pending.push_back(Pending::Sent(conn, 0));
            return self.recycle_send(op);
        }
        c.send = Some(op);
        self.submit_send(conn.index());
    }

    fn resume(&mut self, conn: Id) {
        if let Some(c) = self.conn_mut(conn) {
            c.paused = false;
            self.maybe_arm(conn.index());
        }
    }

    fn close(&mut self, conn: Id) {
        let Some(c) = self.conn_mut(conn) else {
            log::debug!("io_uring: close of unknown connection {conn:?}");
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        if c.ops == 0 {
            // Forgotten now, but counted in `Stats::conns` until `closed` is reported.
            self.conns[conn.index()] = None;
            self.pending.push_back(Pending::Closed(conn));
        } else {
            self.cancel_conn(conn.index());
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            buffers_total: self.bufs.total(),
            buffers_free: self.bufs.free(),
            ops_in_flight: self.inflight,
            conns: self.nconns,
        }
    }

    fn poll<S: Sink>(&mut self, timeout: Option<Duration>, sink: &mut S) -> io::Result<()> {
        let mut reported = !self.backlog.is_empty();
        while let Some(p) = self.pending.pop_front() {
            reported = true;
            match p {
                Pending::Closed(id) => self.report_closed(id, sink),
                Pending::Sent(id, n) => sink.sent(id, n),
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
