//! The backend contract: what the event loop asks, what a backend reports.
//!
//! The contract is completion-shaped. The loop *asks* (listen, start receiving, send, close,
//! wait) and the backend *reports* what happened through a [`Sink`]. A readiness backend
//! (epoll, kqueue) performs the system calls itself when the descriptor becomes ready and
//! reports the outcome, so the loop above never sees the difference between the two models.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::socket::{Addr, Listener, Socket};

/// Identifies one thing a backend tracks for a loop: a listener or a connection.
///
/// The loop chooses the value (a slab index in the low half and a generation in the high half)
/// and the backend only echoes it back. Indexes are unique among everything live in a loop,
/// whatever its kind, so a backend may keep one table indexed by [`Id::index`]; the generation
/// tells a late event or a stale handle for an earlier occupant of the same index from the
/// current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Id(pub u64);

impl Id {
    /// Builds an id from a slab index and a generation.
    pub fn new(index: usize, generation: u32) -> Self {
        Id((u64::from(generation) << 32) | (index as u64 & 0xffff_ffff))
    }

    /// The slab index: unique among the live things of a loop.
    pub fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// The generation: distinguishes things that reused the same index.
    pub fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index(), self.generation())
    }
}

/// One datagram to send: its bytes, which go out whole or not at all, and where to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Datagram {
    /// The destination; `None` for a connected socket's peer.
    pub to: Option<SocketAddr>,
    /// The datagram (frozen: the backend keeps it until it is in the kernel).
    pub data: Bytes,
}

impl Datagram {
    /// A datagram of `data` for `to` (`None`: the connected peer).
    pub fn new(to: Option<SocketAddr>, data: Bytes) -> Datagram {
        Datagram { to, data }
    }
}

/// What a backend can do besides serving stream connections, each with the reason when it
/// cannot (a kernel without an opcode, a platform without a call). A missing capability
/// degrades that one feature; the backend still serves streams.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Datagram sockets: [`Backend::add_datagram`] and [`Backend::send_to`].
    pub datagrams: Result<(), String>,
    /// Outbound connections: [`Backend::connect`].
    pub connect: Result<(), String>,
}

impl Capabilities {
    /// Everything supported.
    pub fn all() -> Capabilities {
        Capabilities {
            datagrams: Ok(()),
            connect: Ok(()),
        }
    }
}

/// What a backend wants the loop to do after it delivered received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep receiving.
    Continue,
    /// Stop receiving on this connection as soon as possible (backpressure). Bytes the backend
    /// has already taken from the kernel may still be delivered; nothing new is read until
    /// [`Backend::resume`].
    Pause,
}

/// The backends this crate can provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// io_uring (Linux 6.0+): completion-based, provided-buffer ring, multishot operations.
    Uring,
    /// epoll (Linux), edge-triggered.
    Epoll,
    /// kqueue (macOS and the BSDs).
    Kqueue,
    /// The portable fallback on `std::net` threads (Windows, and anywhere else).
    StdNet,
}

impl BackendKind {
    /// The lower-case name used in options, logs and `GNET_BACKEND`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Uring => "uring",
            BackendKind::Epoll => "epoll",
            BackendKind::Kqueue => "kqueue",
            BackendKind::StdNet => "stdnet",
        }
    }

    /// Parses a name as accepted by `GNET_BACKEND` (`uring`, `io_uring`, `epoll`, `kqueue`,
    /// `stdnet`, `std`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "uring" | "io_uring" | "iouring" => Some(BackendKind::Uring),
            "epoll" => Some(BackendKind::Epoll),
            "kqueue" => Some(BackendKind::Kqueue),
            "stdnet" | "std" | "std-net" => Some(BackendKind::StdNet),
            _ => None,
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings a backend reads when it is opened. One value is shared by every loop.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Size of one receive buffer: the per-loop read buffer on readiness backends, the largest
    /// entry of the provided-buffer ring on io_uring, the read size of each reader thread on
    /// stdnet. It is also the largest slice one [`Sink::received`] call delivers, except for
    /// io_uring receive bundles, whose slice spans every entry the completion filled.
    pub read_buffer_size: usize,
    /// Entries in the io_uring provided-buffer ring (a power of two). With receive bundles
    /// the entries are slices of an area of at most `ring_buffers * read_buffer_size` bytes
    /// (512 KiB when that is larger, or 8 entries of `read_buffer_size` if more), so more
    /// entries serve more connections per pass with smaller slices, not more memory. Without,
    /// each entry is a buffer of `read_buffer_size`, of which a window is posted at a time.
    pub ring_buffers: u16,
    /// Submission queue entries of the io_uring ring (a power of two).
    pub ring_entries: u32,
    /// Fairness: the most bytes a readiness backend reads from one connection per wake-up
    /// before it moves on to other connections (it comes back to the connection later).
    pub read_chunk: usize,
    /// The most bytes a readiness backend delivers in one `poll` over all connections. The
    /// loop flushes handler writes after each `poll`, so this bounds what can pile up in
    /// outbound queues between flushes (10,000 busy connections read in one pass would
    /// otherwise buffer up to `read_chunk` each). The rest of the ready list waits for the next
    /// `poll`, which does not block. (On io_uring the buffer ring bounds it instead.)
    pub poll_read_budget: usize,
    /// io_uring: let one receive completion fill several ring buffers (a bundle) where the
    /// kernel supports it well (6.16+). A socket holding more than one buffer's worth is then
    /// drained in one receive, which the kernel acknowledges once instead of per buffer.
    pub recv_bundles: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            read_buffer_size: 64 * 1024,
            ring_buffers: 256,
            ring_entries: 1024,
            read_chunk: 1024 * 1024,
            poll_read_budget: 4 * 1024 * 1024,
            recv_bundles: true,
        }
    }
}

/// Why a backend could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// The mechanism is missing or forbidden here (`ENOSYS`, `EPERM`, `EINVAL`, a missing
    /// opcode, a platform without it). `Auto` falls back to the next backend and logs the
    /// message; an explicit request reports it as an error.
    Unavailable(String),
    /// The mechanism works here, but a resource limit the operator sets leaves it too little
    /// to run with, even at the smallest size the backend would step down to: io_uring's rings
    /// are charged to `RLIMIT_MEMLOCK` (unless the process has `CAP_IPC_LOCK`), which older
    /// distributions set to 64 KiB. The message names the limit, its value and how to raise
    /// it. `Auto` falls back to the next backend and logs the message, as for
    /// [`OpenError::Unavailable`]: another backend serves where this one cannot, and the
    /// operator learns how to get it back. An explicit request reports it as an error.
    ResourceLimit(String),
    /// The mechanism exists but setting it up failed for a reason the operator must fix (a
    /// descriptor limit, the kernel out of memory, an invalid configuration). Never hidden
    /// behind a fallback.
    Failed(io::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Unavailable(why) => write!(f, "unavailable: {why}"),
            OpenError::ResourceLimit(why) => f.write_str(why),
            OpenError::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// Counters a backend exposes; fields a backend does not track stay zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Receive buffers the backend owns in all: on io_uring the provided-buffer ring's entries
    /// and, from the first datagram socket on, those of the datagram buffer group (epoll: its
    /// read buffer and, likewise, its `recvmmsg` buffers).
    pub buffers_total: usize,
    /// Receive buffers currently available to the kernel or free (not lent to the loop),
    /// counted as in `buffers_total`: io_uring's datagram buffer group included.
    pub buffers_free: usize,
    /// Kernel operations submitted and not yet completed (io_uring).
    pub ops_in_flight: usize,
    /// Connections, datagram sockets and connects the backend currently tracks (added and not
    /// yet reported `closed` or, for a connect, `connected`).
    pub conns: usize,
}

/// Wakes a loop blocked in [`Backend::poll`] from any thread.
pub trait Wake: Send + Sync + 'static {
    /// Makes the current or the next [`Backend::poll`] of the loop return promptly (it then
    /// reports [`Sink::woken`]). Wake-ups may be coalesced: many calls before the loop runs
    /// may produce one `woken`.
    ///
    /// # Errors
    /// Only an unexpected failure of the underlying mechanism (for example a closed eventfd).
    fn wake(&self) -> io::Result<()>;
}

/// Receives what a backend reports during [`Backend::poll`].
///
/// The sink must not call back into the backend (it is mutably borrowed while it reports);
/// the loop records what it wants to do and asks the backend after `poll` returns.
pub trait Sink {
    /// A listener accepted a connection. The loop now owns `socket` (already non-blocking and
    /// close-on-exec where the platform has these) and decides which loop serves it.
    fn accepted(&mut self, listener: Id, socket: Socket, peer: Addr);

    /// Accepting on a listener failed with an error that is not about one connection: the
    /// process ran out of resources (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, ...; the listener
    /// pauses and is retried, see below), or the listener cannot accept at all (`EINVAL`,
    /// `EBADF`, `ENOTSOCK`; it accepts nothing more). Reported once per episode, not per
    /// retry; the loop logs it. Every backend follows the policy of `accept.rs`: a paused
    /// listener leaves its pending connections in the kernel's backlog and is tried again after
    /// 100 ms, or as soon as the backend reports a connection [`Sink::closed`].
    fn accept_error(&mut self, listener: Id, error: io::Error);

    /// Bytes arrived on a connection. `data` is borrowed from the backend (the per-loop read
    /// buffer, a provided buffer of the ring, a reader thread's buffer) and returns to it when
    /// this call ends: the loop copies only what it keeps. Never empty.
    fn received(&mut self, conn: Id, data: &[u8]) -> Flow;

    /// The peer closed its sending side (a read returned 0). No more `received` for `conn`.
    /// Sending still works until the loop calls [`Backend::close`].
    fn eof(&mut self, conn: Id);

    /// Everything handed to the last [`Backend::send`] for `conn` reached the kernel; `n` is
    /// its total length. For a datagram socket: the last [`Backend::send_to`] batch is done,
    /// every datagram of it sent or reported with [`Sink::datagram_error`], and `n` is the
    /// total length of the batch, the datagrams that failed included.
    fn sent(&mut self, conn: Id, n: usize);

    /// The buffers of a finished send, handed back after [`Sink::sent`] so the loop can reuse
    /// their memory (a backend may also just drop them: this is an optimisation, not a
    /// promise). The kernel is done with them. The default drops them.
    fn reclaim(&mut self, bufs: Vec<Bytes>) {
        drop(bufs);
    }

    /// An I/O error on `conn` (reset, broken pipe, ...). The backend stopped receiving and
    /// sending on it; the loop must call [`Backend::close`] next.
    fn failed(&mut self, conn: Id, error: io::Error);

    /// The close the loop asked for is complete: every operation on `conn` is finished or
    /// cancelled and reaped, every buffer returned, and the backend forgot `conn`. The loop
    /// may now drop the socket (which closes the descriptor) and reuse the index.
    fn closed(&mut self, conn: Id);

    /// [`Wake::wake`] was called. Coalesced.
    fn woken(&mut self);

    /// A datagram arrived on the datagram socket `id`, from `from`: one call per datagram,
    /// never two merged. `data` is borrowed as in [`Sink::received`]. When the datagram was
    /// larger than the receive buffer ([`Config::read_buffer_size`]) `truncated` is set, `data`
    /// holds its first bytes and the rest is lost: never pass it on as if whole. May be empty
    /// (an empty datagram is one).
    fn datagram(&mut self, id: Id, from: SocketAddr, data: &[u8], truncated: bool) -> Flow;

    /// An error about one datagram, or one the network reported for the socket (an ICMP port
    /// unreachable arriving as `ECONNREFUSED` on a connected socket, `EMSGSIZE` for a
    /// datagram too large, `ENETUNREACH`, ...): the socket goes on receiving and sending. `to`
    /// is the destination of the datagram that could not be sent, `None` for an error about
    /// the socket rather than one datagram (one that came with a receive, or a pending ICMP
    /// error that a send met).
    fn datagram_error(&mut self, id: Id, to: Option<SocketAddr>, error: io::Error);

    /// The connection [`Backend::connect`] started is established (`Ok`) or failed with the
    /// error the kernel gave (`ECONNREFUSED`, `ETIMEDOUT`, `ENETUNREACH`; `EAGAIN` for a Unix
    /// socket whose listener's backlog is full, ...). Either way the
    /// backend has forgotten `id`: the loop registers the socket under the same id with
    /// [`Backend::add_conn`] (a stream) or [`Backend::add_datagram`] (a connected datagram
    /// socket), or drops it.
    fn connected(&mut self, id: Id, result: io::Result<()>);
}

/// An I/O backend: one instance per event loop, used only from that loop's thread.
///
/// # Contract
///
/// **Ownership of descriptors.** The loop owns every [`Socket`] and [`Listener`]; the backend
/// borrows them from [`Backend::add_conn`] / [`Backend::add_listener`] until it reports
/// [`Sink::closed`] (or until [`Backend::remove_listener`] returns). The backend never closes a
/// descriptor it was lent; the loop closes it by dropping the socket after `closed`. Sockets the
/// backend accepts are handed to the loop in [`Sink::accepted`] and are the loop's from then on.
/// A connection the backend accepted after its listener was removed is dropped (closed) by the
/// backend itself.
///
/// **Receiving.** After `add_conn` the backend receives continuously and reports each chunk with
/// [`Sink::received`], in the order the bytes arrived, then at most one of [`Sink::eof`] or
/// [`Sink::failed`]. The borrowed slice is valid only during the call. An idle connection holds
/// no receive buffer. An empty provided-buffer ring is backpressure, never an error: receiving
/// resumes when buffers come back. [`Flow::Pause`] and [`Backend::resume`] pause and resume
/// receiving for one connection.
///
/// **Sending.** At most one send is in flight per connection: the loop calls
/// [`Backend::send`] again only after [`Sink::sent`] for the previous one. The backend keeps the
/// `Bytes` alive (they are frozen: nothing can move or change them) until the whole batch is in
/// the kernel, resubmits partial sends itself, and reports `sent` once with the total. Bytes
/// from one connection are sent in the order they were handed in. An error ends with
/// [`Sink::failed`] instead.
///
/// **Datagrams.** A datagram socket (`Socket::Udp`, bound, perhaps connected) is registered
/// with [`Backend::add_datagram`]; from then on each datagram that arrives is reported with
/// [`Sink::datagram`] with its source address, one report per datagram, a datagram larger than
/// the receive buffer reported as truncated. [`Backend::send_to`] sends a batch of datagrams,
/// each whole and in order, one batch in flight per socket as for streams; a datagram that
/// fails ([`Sink::datagram_error`]) does not stop the others, and [`Sink::sent`] reports the
/// batch done with its total length in bytes (the failed datagrams included). Errors the
/// network reports (ICMP) are [`Sink::datagram_error`]s too; only a failure of the socket
/// itself is [`Sink::failed`]. `Flow::Pause`, `resume` and `close` work as for streams.
///
/// **Connecting.** [`Backend::connect`] starts connecting a socket the loop created (stream or
/// datagram, not connected, non-blocking) and lends it to the backend until it reports
/// [`Sink::connected`] (then the backend has forgotten the id, and the loop registers the
/// socket again, under the same id) or, when the loop closed it first, [`Sink::closed`]. A
/// connect timeout is the loop's: it closes the id when its timer expires.
///
/// **Capabilities.** [`Backend::capabilities`] says which of these the backend can do here;
/// the loop never asks for one it cannot.
///
/// **Closing.** [`Backend::close`] stops receiving, cancels whatever is in flight (an
/// in-flight send is abandoned), reaps every completion, returns every buffer and then reports
/// [`Sink::closed`] — possibly during a later `poll`, never during `close` itself. After
/// `closed` no event for that `Id` is reported again. The loop calls `close` exactly once
/// per connection, also after `eof` and `failed`. An orderly close (flush first, then close) is
/// the loop's business: it waits for `sent` before it calls `close`, and shuts the write side
/// down itself. A backend never sends a FIN of its own (never shuts the write side down in
/// `close`): when output was abandoned the loop has set `SO_LINGER` 0, so that dropping the
/// socket resets the connection, and a FIN ahead of the reset would tell the peer that the
/// stream was complete. (The one exception is stdnet on Windows, which has no other way to
/// wake a writer blocked in a send; see its module documentation.)
///
/// **Waiting.** [`Backend::poll`] reports what is ready and returns; it blocks up to `timeout`
/// (`None` = until something happens) only when it has nothing to report. Events produced by
/// calls made outside `poll` (a synchronous write that completed at once, a close) are kept and
/// reported by the next `poll`, which then does not block.
///
/// **Shutdown.** Dropping the backend releases its kernel objects. The loop first closes every
/// connection and waits for their `closed`, so no buffer the kernel still writes into is freed.
pub trait Backend: Sized + 'static {
    /// Which backend this is.
    const KIND: BackendKind;

    /// Whether the loop may write to a connection's socket itself, with a non-blocking
    /// [`Socket::try_send`], while the connection has no send in flight, and from what write
    /// size on by default (`None`: never). A backend that allows it keeps the socket
    /// non-blocking and does not care how bytes reach the kernel between its sends; the loop
    /// only does it when nothing is queued or in flight, so the byte order is kept. Off by
    /// default (the thread-based stdnet backend writes from its own threads on a blocking
    /// socket).
    const DIRECT_SEND: Option<usize> = None;

    /// Sets the backend up for one loop.
    ///
    /// # Errors
    /// [`OpenError::Unavailable`] when the mechanism is missing or forbidden on this machine,
    /// [`OpenError::ResourceLimit`] when a limit leaves it too little (the engine may fall
    /// back from both), [`OpenError::Failed`] for errors an operator must fix.
    fn open(config: &Config) -> Result<Self, OpenError>;

    /// A handle that wakes this loop from any thread.
    fn waker(&self) -> Arc<dyn Wake>;

    /// Starts accepting on `listener` (already bound, listening and non-blocking).
    ///
    /// # Errors
    /// Registration failures from the kernel.
    fn add_listener(&mut self, id: Id, listener: &Listener) -> io::Result<()>;

    /// Stops accepting on a listener. No `accepted` for `id` is reported after this returns;
    /// the loop may drop the listener right away.
    fn remove_listener(&mut self, id: Id);

    /// Starts receiving on a connection (handed over non-blocking). A backend may change the
    /// socket's blocking mode (the thread-based stdnet backend makes it blocking); the loop
    /// never reads a socket it has lent and writes to it only as [`Backend::DIRECT_SEND`]
    /// allows; otherwise it only shuts it down, asks its addresses and sets options.
    ///
    /// # Errors
    /// Registration failures; there is nothing to `close`. For a shortage of resources
    /// ([`is_resource_shortage`](crate::is_resource_shortage): `EMFILE`, `ENOMEM`, a thread
    /// that could not be started, ...) the loop keeps the socket and offers it again when a
    /// connection closes, or after 100 ms; for anything else it drops the socket. Once
    /// `add_conn` succeeded, a connection must need no further descriptor or other resource
    /// that could fail it later for a reason that is not its own.
    fn add_conn(&mut self, id: Id, socket: &Socket) -> io::Result<()>;

    /// Sends `bufs` in order on `conn`; reports [`Sink::sent`] or [`Sink::failed`]. `bufs` is
    /// not empty and its total length is not zero.
    fn send(&mut self, conn: Id, bufs: Vec<Bytes>);

    /// Resumes receiving after [`Flow::Pause`].
    fn resume(&mut self, conn: Id);

    /// Stops all I/O on `conn` and reports [`Sink::closed`] when nothing is left in flight.
    fn close(&mut self, conn: Id);

    /// What this backend can do besides streams (see [`Capabilities`]), as found when it was
    /// opened.
    fn capabilities(&self) -> Capabilities;

    /// Starts receiving datagrams on a datagram socket (handed over non-blocking, bound,
    /// perhaps connected); reports each one with [`Sink::datagram`].
    ///
    /// # Errors
    /// As [`Backend::add_conn`].
    fn add_datagram(&mut self, id: Id, socket: &Socket) -> io::Result<()>;

    /// Sends `batch` on the datagram socket `id`: every datagram whole, in order; reports
    /// [`Sink::datagram_error`] for each that fails and then [`Sink::sent`] with the total
    /// length of the batch, the failed datagrams included. `batch` is not empty. One batch in
    /// flight per socket.
    fn send_to(&mut self, id: Id, batch: Vec<Datagram>);

    /// Connects `socket` (created by the loop: not connected, non-blocking) to `to`; reports
    /// [`Sink::connected`], or [`Sink::closed`] if the loop closes `id` first. The socket is
    /// lent until then.
    fn connect(&mut self, id: Id, socket: &Socket, to: &Addr);

    /// Counters for tests and operators (buffer ring occupancy, operations in flight). Cheap.
    fn stats(&self) -> Stats {
        Stats::default()
    }

    /// Reports ready events to `sink`, blocking up to `timeout` when there is nothing to report.
    ///
    /// # Errors
    /// A failure of the polling mechanism itself (not of a connection), which ends the loop.
    fn poll<S: Sink>(&mut self, timeout: Option<Duration>, sink: &mut S) -> io::Result<()>;
}
