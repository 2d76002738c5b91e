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
//!   socket (borrowed, not duplicated: see `borrowed.rs`), at most two chunks ahead of the loop (bounded memory), and none while the
//!   connection is paused. A connection that is not streaming reads into a small stack buffer,
//!   so an idle connection holds no heap receive buffer.
//! - **A writer thread per connection**, started by the first `send`, doing blocking vectored
//!   writes of each batch and reporting `sent` with the total.
//! - **`close`** marks the connection closing, shuts the socket down in both directions (which
//!   wakes blocked reads and writes) and reports `closed` once every thread of the connection
//!   has exited and dropped its socket handle, so nothing of the connection is reported after
//!   `closed` and the loop's drop of its socket really closes it. Events of a closing connection
//!   still in the queue are dropped. (On Linux the `shutdown` wakes blocked calls at once; on
//!   non-Unix targets the reader also has a one-second receive timeout as a safety net.)
//!
//! # Blocking mode
//!
//! The threads need blocking sockets, and on Unix the handles share one open file description,
//! so `add_conn` switches the connection's socket **to blocking mode**, the loop's own handle
//! included. The loop must do no I/O on a socket it lent to stdnet (it never needs to: all I/O
//! goes through the backend); `shutdown`, addresses and socket options are fine. Sockets
//! reported by [`Sink::accepted`] are non-blocking as the contract says, until `add_conn`.
//!
//! Threads get small stacks (128 KiB) and names (`gnet-accept-N`, `gnet-read-N`,
//! `gnet-write-N`). The only `unsafe` code is the borrow of the loop's socket by the
//! connection's threads (`borrowed.rs`): a connection costs one descriptor, as on the other
//! backends, and needs none after `add_conn`.
#![deny(unsafe_code)]

#[cfg(not(any(unix, windows)))]
compile_error!("the stdnet backend needs a Unix or Windows target (raw sockets)");

mod accept;
mod borrowed;
mod conn;
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
use self::queue::{Msg, Shared, Waker};
use crate::contract::{Backend, BackendKind, Config, Id, OpenError, Sink, Stats, Wake};
use crate::socket::{Listener, Socket};

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
    /// Events produced outside `poll` (a `closed` due at once, a writer that could not start).
    pending: VecDeque<Msg>,
    /// The batch being reported (kept to reuse its allocation).
    batch: VecDeque<Msg>,
}

/// The loop's side of one connection.
struct Conn {
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
        if self.conns.contains_key(&id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "connection id already registered",
            ));
        }
        conn::prepare(socket)?;
        // SAFETY: the loop keeps `socket` open until this backend reports `closed` (the
        // contract), which it does only once every thread of the connection, the holders of
        // the clones of `handle`, has exited; the backend drops its own clone at `close`.
        #[allow(unsafe_code)]
        let handle = Arc::new(unsafe { Borrowed::new(socket) });
        let state = Arc::new(ConnShared::default());
        conn::spawn_reader(
            id,
            handle.clone(),
            state.clone(),
            self.shared.clone(),
            self.read_buffer_size,
        )?;
        self.conns.insert(
            id,
            Conn {
                state,
                handle: Some(handle),
                threads: 1,
                writer: false,
                closing: false,
                recv_done: false,
                failed: false,
            },
        );
        Ok(())
    }

    fn send(&mut self, conn: Id, bufs: Vec<Bytes>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        {
            let mut st = c.state.lock();
            debug_assert!(st.outbox.is_none(), "stdnet: a second send in flight");
            st.outbox = Some(bufs);
        }
        if c.writer {
            c.state.notify();
            return;
        }
        let started = c
            .handle
            .clone()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
            .and_then(|s| conn::spawn_writer(conn, s, c.state.clone(), self.shared.clone()));
        match started {
            Ok(_) => {
                c.writer = true;
                c.threads += 1;
            }
            Err(error) => {
                c.state.lock().outbox = None;
                self.pending.push_back(Msg::Failed { conn, error });
            }
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
            st.spare.clear();
        }
        c.state.notify();
        if let Some(handle) = c.handle.take() {
            if c.threads > 0 {
                conn::shutdown(&handle);
            }
        }
        if c.threads == 0 {
            self.pending.push_back(Msg::Closed(conn));
        }
    }

    // PLACEHOLDER on branch `ops`, replaced before it merges: datagrams and connect.
    fn capabilities(&self) -> crate::contract::Capabilities {
        crate::contract::Capabilities {
            datagrams: Err("not written yet".into()),
            connect: Err("not written yet".into()),
        }
    }

    fn add_datagram(&mut self, _id: Id, _socket: &Socket) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "not written yet",
        ))
    }

    fn send_to(&mut self, id: Id, _batch: Vec<crate::contract::Datagram>) {
        log::error!("send_to on {id}: not written yet");
    }

    fn connect(&mut self, id: Id, _socket: &Socket, _to: &crate::socket::Addr) {
        log::error!("connect on {id}: not written yet");
    }

    fn stats(&self) -> Stats {
        Stats {
            conns: self.conns.len(),
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
                let _ = handle.shutdown(std::net::Shutdown::Both);
            }
            left += c.threads;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut batch = VecDeque::new();
        while left > 0 && std::time::Instant::now() < deadline {
            self.shared
                .take(Some(Duration::from_millis(50)), true, &mut batch);
            left -= batch
                .drain(..)
                .filter(|m| matches!(m, Msg::Exited(_)))
                .count();
        }
        if left > 0 {
            log::error!("stdnet: {left} connection threads did not stop at shutdown");
        }
        self.listeners.clear();
    }
}
