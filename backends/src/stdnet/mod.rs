//! The portable backend on `std::net` / `std::os::unix::net` and std threads (Windows, and
//! anywhere without a better mechanism), in the model of Go gnet's Windows port: a thread per
//! connection feeding one event queue per loop.
//!
//! # Model
//!
//! - **One event queue per loop** (`Mutex<VecDeque>` + `Condvar`). Helper threads push
//!   messages; [`Backend::poll`] takes everything queued at once and reports it to the sink,
//!   waiting on the condition variable only while the queue is empty. [`Wake`] sets a flag
//!   (coalescing) and signals the same condition variable.
//! - **An accept thread per listener**, on its own non-blocking handle of the listener, polling
//!   with `park_timeout` (1 ms after a connection, up to 10 ms when idle) so that
//!   `remove_listener` can stop and join it at once, releasing its handle before it returns.
//!   Persistent accept errors are reported and followed by a 100 ms back-off.
//! - **A reader thread per connection** (from `add_conn`) doing blocking reads on the loop's
//!   socket (borrowed, not duplicated: see `borrowed.rs`), at most two chunks ahead of the
//!   loop (bounded memory), and none while the connection is paused. A connection that is not
//!   streaming reads into a small stack buffer, so an idle connection holds no heap receive
//!   buffer.
//! - **A writer thread per connection**, started by the first `send`, doing blocking vectored
//!   writes of each batch and reporting `sent` with the total.
//! - **Datagram sockets** (`add_datagram`, `dgram.rs`) get the same pair of threads: a reader
//!   doing one blocking `recv_from` per datagram into a buffer one byte larger than
//!   `read_buffer_size` (a datagram that fills that last byte did not fit: its first
//!   `read_buffer_size` bytes are reported, `truncated`), at most 64 datagrams or two
//!   buffers' worth of bytes ahead of the loop; and, from the first `send_to`, a writer
//!   sending each datagram whole, reporting those that fail and going on. Errors the network
//!   reports (ICMP: `ECONNREFUSED`, unreachable hosts) are datagram errors; only a broken
//!   socket fails.
//! - **A connecting thread per `connect`** of a stream socket (`connect.rs`), on the loop's
//!   socket borrowed until it reports: socket2's `connect_timeout` for TCP on Linux, which
//!   `close` aborts with a `shutdown`; elsewhere, and for Unix-domain sockets, a non-blocking
//!   connect looked at every 1 to 10 ms by a parked thread that `close` unparks. Either gives
//!   up after two minutes of its own (the loop's connect timeout is meant to come first). A
//!   datagram socket connects at once. `connected`, or `closed` for a connect the loop closed,
//!   comes only after the thread dropped its handle of the socket, and the backend forgets
//!   the id then.
//! - **`close`** marks the connection closing, shuts the socket down (the read side on Unix,
//!   which wakes a blocked read, while a blocked write gives up within its 100 ms send
//!   timeout; both directions on Windows: see `conn.rs`) and reports `closed` once every
//!   thread of the connection has exited and dropped its socket handle, so nothing of the
//!   connection is reported after `closed` and the loop's drop of its socket really closes it.
//!   Events of a closing connection still in the queue are dropped. (On non-Unix targets the
//!   reader also has a one-second receive timeout as a safety net.) A datagram socket is shut
//!   down too: Linux wakes its blocked `recv_from` for it, connected or not; elsewhere its
//!   reader has a 100 ms receive timeout, so `closed` comes within about that (`dgram.rs`
//!   says why not a datagram to itself).
//!
//! # Blocking mode
//!
//! The threads need blocking sockets, and on Unix the handles share one open file description,
//! so `add_conn` (and `add_datagram`) switches the socket **to blocking mode**, the loop's own
//! handle included. The loop must do no I/O on a socket it lent to stdnet (it never needs to:
//! all I/O goes through the backend); `shutdown`, addresses and socket options are fine.
//! Sockets reported by [`Sink::accepted`] are non-blocking as the contract says, until
//! `add_conn`, and so are sockets handed back by [`Sink::connected`].
//!
//! Threads get small stacks (128 KiB) and names (`gnet-accept-N`, `gnet-read-N`,
//! `gnet-write-N`; `gnet-recv-N` and `gnet-send-N` for datagram sockets; `gnet-connect-N`).
//! The only `unsafe` code is the borrow of the loop's socket by the threads that serve it
//! (`borrowed.rs`, and its one caller, `StdNet::lend`): a connection costs one descriptor, as
//! on the other backends, and needs none after `add_conn`.
#![deny(unsafe_code)]

#[cfg(not(any(unix, windows)))]
compile_error!("the stdnet backend needs a Unix or Windows target (raw sockets)");

mod accept;
mod borrowed;
mod conn;
mod connect;
mod dgram;
#[cfg(all(test, unix))]
mod dgram_connect_tests;
mod dispatch;
mod queue;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use self::accept::AcceptThread;
use self::borrowed::Borrowed;
use self::conn::ConnShared;
use self::connect::Connecting;
use self::queue::{Msg, Shared, Waker};
use crate::contract::{
    Backend, BackendKind, Capabilities, Config, Datagram, Id, OpenError, Sink, Stats, Wake,
};
use crate::socket::{Addr, Listener, Socket};

/// Stack size of every helper thread: they only run small loops around blocking calls (plus the
/// reader's 4 KiB stack buffer).
const STACK_SIZE: usize = 128 * 1024;

/// The std-threads backend. See the [module documentation](self).
pub struct StdNet {
    shared: Arc<Shared>,
    read_buffer_size: usize,
    listeners: HashMap<Id, AcceptThread>,
    next_token: u64,
    conns: HashMap<Id, Conn>,
    /// Sockets being connected, until `connected` or `closed`.
    connects: HashMap<Id, Connecting>,
    /// Events produced outside `poll` (a `closed` due at once, a writer that could not start).
    pending: VecDeque<Msg>,
    /// The batch being reported (kept to reuse its allocation).
    batch: VecDeque<Msg>,
}

/// The loop's side of one connection or datagram socket.
struct Conn {
    /// A datagram socket: its threads are `dgram.rs`'s, it takes `send_to` and not `send`.
    datagram: bool,
    state: Arc<ConnShared>,
    /// The loop's socket as the connection's threads use it (borrowed: no descriptor of its
    /// own), and used here to shut it down at `close`; dropped then.
    handle: Option<Arc<Borrowed>>,
    /// Threads started and not yet reported exited.
    threads: usize,
    writer: bool,
    closing: bool,
    /// `eof` or `failed` was reported: no more `received` or `eof`.
    recv_done: bool,
    /// `failed` was reported: nothing but `closed` any more.
    failed: bool,
}

impl Conn {
    /// A connection (or datagram socket) whose reader was just started.
    fn new(datagram: bool, state: Arc<ConnShared>, handle: Arc<Borrowed>) -> Conn {
        Conn {
            datagram,
            state,
            handle: Some(handle),
            threads: 1,
            writer: false,
            closing: false,
            recv_done: false,
            failed: false,
        }
    }

    /// Hands the batch just put in the shared state to the writer thread, starting it at the
    /// first send.
    ///
    /// # Errors
    /// The thread could not be started.
    fn start_writer(&mut self, id: Id, shared: &Arc<Shared>) -> io::Result<()> {
        if self.writer {
            self.state.notify();
            return Ok(());
        }
        let socket = self.handle.clone().ok_or(io::ErrorKind::NotConnected)?;
        let (state, shared) = (self.state.clone(), shared.clone());
        if self.datagram {
            dgram::spawn_writer(id, socket, state, shared)?;
        } else {
            conn::spawn_writer(id, socket, state, shared)?;
        }
        self.writer = true;
        self.threads += 1;
        Ok(())
    }
}

impl StdNet {
    /// Borrows a socket the loop lent for [`Backend::add_conn`], [`Backend::add_datagram`] or
    /// [`Backend::connect`], for the threads that serve it: the one place stdnet does.
    fn lend(socket: &Socket) -> Arc<Borrowed> {
        // SAFETY: the loop keeps a socket it lent open until this backend reports `closed`
        // (or, for a connect, `connected`: the contract), which it does only once every
        // thread using the socket, the holders of the clones of the handle, has exited; the
        // backend drops its own clone at `close` (or before it reports `connected`).
        #[allow(unsafe_code)]
        Arc::new(unsafe { Borrowed::new(socket) })
    }

    /// Refuses an id already in use.
    fn check_free(&self, id: Id) -> io::Result<()> {
        if self.conns.contains_key(&id) || self.connects.contains_key(&id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "connection id already registered",
            ));
        }
        Ok(())
    }

    /// Reports a misuse by the loop as a failure of the connection.
    fn refuse(&mut self, conn: Id, why: &str) {
        log::error!("stdnet: {conn}: {why}");
        let error = io::Error::new(io::ErrorKind::InvalidInput, why.to_string());
        self.pending.push_back(Msg::Failed { conn, error });
    }
}

impl StdNet {
    /// Lends `socket` to a new reader thread (a stream's or a datagram socket's) and tracks
    /// the connection.
    fn start_reader(&mut self, id: Id, socket: &Socket, datagram: bool) -> io::Result<()> {
        if datagram {
            dgram::prepare(socket)?;
        } else {
            conn::prepare(socket)?;
        }
        let handle = Self::lend(socket);
        let state = Arc::new(ConnShared::default());
        let (shared, size) = (self.shared.clone(), self.read_buffer_size);
        if datagram {
            dgram::spawn_reader(id, handle.clone(), state.clone(), shared, size)?;
        } else {
            conn::spawn_reader(id, handle.clone(), state.clone(), shared, size)?;
        }
        self.conns.insert(id, Conn::new(datagram, state, handle));
        Ok(())
    }
}

impl Backend for StdNet {
    const KIND: BackendKind = BackendKind::StdNet;

    fn open(config: &Config) -> Result<Self, OpenError> {
        if config.read_buffer_size == 0 {
            return Err(OpenError::Failed(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read_buffer_size must not be zero",
            )));
        }
        Ok(StdNet {
            shared: Shared::new(),
            read_buffer_size: config.read_buffer_size,
            listeners: HashMap::new(),
            next_token: 0,
            conns: HashMap::new(),
            connects: HashMap::new(),
            pending: VecDeque::new(),
            batch: VecDeque::new(),
        })
    }

    fn waker(&self) -> Arc<dyn Wake> {
        Arc::new(Waker(self.shared.clone()))
    }

    fn add_listener(&mut self, id: Id, listener: &Listener) -> io::Result<()> {
        if self.listeners.contains_key(&id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "listener id already registered",
            ));
        }
        self.next_token += 1;
        let thread = AcceptThread::spawn(id, self.next_token, listener, &self.shared)?;
        self.listeners.insert(id, thread);
        Ok(())
    }

    fn remove_listener(&mut self, id: Id) {
        if let Some(mut thread) = self.listeners.remove(&id) {
            thread.stop();
            // Close what it accepted and the loop has not seen yet.
            let token = thread.token;
            self.shared.purge(
                |m| matches!(m, Msg::Accepted { listener, token: t, .. } if *listener == id && *t == token),
            );
        }
    }

    fn add_conn(&mut self, id: Id, socket: &Socket) -> io::Result<()> {
        self.check_free(id)?;
        if socket.is_datagram() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "add_conn with a datagram socket: use add_datagram",
            ));
        }
        self.start_reader(id, socket, false)
    }

    fn send(&mut self, conn: Id, bufs: Vec<Bytes>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        if c.datagram {
            return self.refuse(
                conn,
                "send on a datagram socket: datagrams go through send_to",
            );
        }
        {
            let mut st = c.state.lock();
            debug_assert!(st.outbox.is_none(), "stdnet: a second send in flight");
            st.outbox = Some(bufs);
        }
        if let Err(error) = c.start_writer(conn, &self.shared) {
            c.state.lock().outbox = None;
            self.pending.push_back(Msg::Failed { conn, error });
        }
    }

    fn resume(&mut self, conn: Id) {
        if let Some(c) = self.conns.get(&conn) {
            let mut st = c.state.lock();
            if st.paused {
                st.paused = false;
                drop(st);
                c.state.notify();
            }
        }
    }

    fn close(&mut self, conn: Id) {
        if let Some(c) = self.connects.get_mut(&conn) {
            // `closed` comes with the end of the connect (its thread's last message).
            c.cancel();
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        {
            let mut st = c.state.lock();
            st.closing = true;
            st.outbox = None;
            st.datagrams = None;
            st.spare.clear();
        }
        c.state.notify();
        if let Some(handle) = c.handle.take() {
            if c.threads > 0 && c.datagram {
                dgram::wake(&handle);
            } else if c.threads > 0 {
                conn::shutdown(&handle);
            }
        }
        if c.threads == 0 {
            self.pending.push_back(Msg::Closed(conn));
        }
    }

    /// Everything, on every platform stdnet builds for (Unix-domain sockets exist only on
    /// Unix, and the loop has none to hand over elsewhere).
    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    fn add_datagram(&mut self, id: Id, socket: &Socket) -> io::Result<()> {
        self.check_free(id)?;
        self.start_reader(id, socket, true)
    }

    fn send_to(&mut self, id: Id, batch: Vec<Datagram>) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.closing {
            return;
        }
        if !c.datagram {
            return self.refuse(id, "send_to on a stream connection: bytes go through send");
        }
        {
            let mut st = c.state.lock();
            debug_assert!(st.datagrams.is_none(), "stdnet: a second send_to in flight");
            st.datagrams = Some(batch);
        }
        if let Err(error) = c.start_writer(id, &self.shared) {
            c.state.lock().datagrams = None;
            self.pending.push_back(Msg::Failed { conn: id, error });
        }
    }

    fn connect(&mut self, id: Id, socket: &Socket, to: &Addr) {
        if let Err(e) = self.check_free(id) {
            log::error!("stdnet: connect on {id}: {e}");
            return;
        }
        let (entry, done) = Connecting::start(id, socket, to, &self.shared);
        if let Some(result) = done {
            self.pending.push_back(Msg::Connected { id, result });
        }
        self.connects.insert(id, entry);
    }

    fn stats(&self) -> Stats {
        Stats {
            conns: self.conns.len() + self.connects.len(),
            ..Stats::default()
        }
    }

    fn poll<S: Sink>(&mut self, timeout: Option<Duration>, sink: &mut S) -> io::Result<()> {
        let mut batch = std::mem::take(&mut self.batch);
        self.shared
            .take(timeout, self.pending.is_empty(), &mut batch);
        if self.shared.take_woken() {
            sink.woken();
        }
        while let Some(msg) = self.pending.pop_front() {
            self.dispatch(msg, sink);
        }
        while let Some(msg) = batch.pop_front() {
            self.dispatch(msg, sink);
        }
        self.batch = batch;
        Ok(())
    }
}

impl Drop for StdNet {
    fn drop(&mut self) {
        // The loop closed every connection and waited for `closed` before, unless it ended on
        // an error: then stop the stragglers and wait for them, since they borrow sockets the
        // loop is about to close.
        let mut left: usize = 0;
        for c in self.conns.values_mut() {
            c.state.lock().closing = true;
            c.state.notify();
            if let Some(handle) = c.handle.take() {
                if c.datagram {
                    dgram::wake(&handle);
                } else {
                    let _ = handle.shutdown(std::net::Shutdown::Both);
                }
            }
            left += c.threads;
        }
        for c in self.connects.values_mut() {
            c.cancel();
            left += usize::from(c.has_thread());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut batch = VecDeque::new();
        while left > 0 && std::time::Instant::now() < deadline {
            self.shared
                .take(Some(Duration::from_millis(50)), true, &mut batch);
            left -= batch
                .drain(..)
                .filter(|m| matches!(m, Msg::Exited(_) | Msg::Connected { .. }))
                .count();
        }
        if left > 0 {
            log::error!("stdnet: {left} connection threads did not stop at shutdown");
        }
        self.listeners.clear();
    }
}
