//! Per-connection state shared with the connection's reader and writer threads, and the two
//! thread bodies.
//!
//! Both threads do blocking I/O on the loop's socket, borrowed (`borrowed.rs`) and shared
//! through an `Arc`, which `add_conn` switches to blocking mode ([`prepare`]): a connection
//! costs one descriptor and needs no other later, so it cannot be killed by a descriptor table
//! that filled up since it was accepted.
//!
//! `close` must wake them without sending a FIN of its own: an orderly close has already shut
//! the write side down (the loop does it once everything is sent), and a close that abandons
//! output must end in a reset, which a FIN ahead of it would disguise as a complete stream.
//! On Unix it shuts down only the read side, which wakes a blocked `recv` (it returns 0);
//! the writer waits on the condition variable, which `close` notifies, or in a `send` that
//! gives up every `WRITER_TICK` (a send timeout) to look at the closing flag. Elsewhere
//! (Windows) `close` shuts both directions down, the reader also gets a receive timeout (one
//! second) in case the `shutdown` did not wake it, and there is no send timeout: Winsock
//! documents the socket state after a timed-out send as indeterminate.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use bytes::Bytes;

use super::borrowed::Borrowed;
use super::queue::{lock, Msg, Shared};
use super::STACK_SIZE;
use crate::contract::{Datagram, Id};
use crate::socket::Socket;

/// Receive chunks a reader may have queued for the loop and not yet seen delivered: the bound
/// on a connection's receive memory (two buffers: one being delivered, one being filled).
pub(super) const MAX_IN_FLIGHT: usize = 2;
/// Size of the reader's stack buffer for reads on a connection that is not streaming (see
/// [`reader`]).
const PROBE: usize = 4 * 1024;
/// Receive timeout of the reader's socket where `shutdown` may not wake a blocked receive; see
/// the module documentation.
#[cfg(not(unix))]
const SAFETY_NET: std::time::Duration = std::time::Duration::from_secs(1);
/// Most slices handed to one vectored write.
const MAX_IOV: usize = 64;
/// The send timeout of a connection's handle (Unix): how long a writer blocked on a full
/// send buffer waits before it checks whether the connection is closing.
#[cfg(unix)]
pub(super) const WRITER_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// What the loop and a connection's threads share, under one mutex.
#[derive(Default)]
pub(super) struct State {
    /// The loop called `close`: threads exit as soon as they see it.
    pub(super) closing: bool,
    /// The loop returned `Flow::Pause`: the reader reads nothing until `resume`.
    pub(super) paused: bool,
    /// Chunks the reader queued that the loop has not yet delivered.
    pub(super) in_flight: usize,
    /// The reader is streaming (its last read filled the buffer) and reads into full-size
    /// buffers; the loop returns delivered full-size buffers to `spare` only in this mode.
    pub(super) hot: bool,
    /// Full-size buffers delivered by the loop, for the reader to reuse.
    pub(super) spare: Vec<Vec<u8>>,
    /// The batch handed to `send`, waiting for the writer thread.
    pub(super) outbox: Option<Vec<Bytes>>,
    /// Datagram sockets: bytes of the datagrams counted in `in_flight`.
    pub(super) queued_bytes: usize,
    /// Datagram sockets: the batch handed to `send_to`, waiting for the writer thread.
    pub(super) datagrams: Option<Vec<Datagram>>,
}

/// [`State`] with the condition variable the threads wait on.
#[derive(Default)]
pub(super) struct ConnShared {
    state: Mutex<State>,
    cv: Condvar,
}

impl ConnShared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Wakes whichever thread waits for a state change.
    pub(super) fn notify(&self) {
        self.cv.notify_all();
    }

    pub(super) fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cv
            .wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn closing(&self) -> bool {
        self.lock().closing
    }
}

/// Sets the loop's socket up for the connection's threads: blocking mode, with the writer's
/// send timeout on Unix and the reader's safety-net receive timeout elsewhere.
///
/// # Errors
/// Setting the mode or a timeout failing.
pub(super) fn prepare(socket: &Socket) -> io::Result<()> {
    socket.set_nonblocking(false)?;
    #[cfg(unix)]
    match socket {
        Socket::Tcp(s) => s.set_write_timeout(Some(WRITER_TICK)),
        Socket::Unix(s) => s.set_write_timeout(Some(WRITER_TICK)),
        Socket::Udp(s) => s.set_write_timeout(Some(WRITER_TICK)),
    }
    #[cfg(not(unix))]
    set_read_timeout(socket)
}

/// Starts the reader thread of `conn` on the connection's socket.
pub(super) fn spawn_reader(
    conn: Id,
    socket: Arc<Borrowed>,
    state: Arc<ConnShared>,
    shared: Arc<Shared>,
    size: usize,
) -> io::Result<JoinHandle<()>> {
    spawn("read", conn, socket, state, shared, move |c, s, st, sh| {
        reader(c, s, st, sh, size);
    })
}

/// Starts the writer thread of `conn` on the connection's socket.
pub(super) fn spawn_writer(
    conn: Id,
    socket: Arc<Borrowed>,
    state: Arc<ConnShared>,
    shared: Arc<Shared>,
) -> io::Result<JoinHandle<()>> {
    spawn("write", conn, socket, state, shared, writer)
}

/// Starts a thread of `conn` (named `gnet-{which}-{index}`) running `body` on the connection's
/// socket. Whatever way the body ends, the thread then drops its handle of the socket and
/// reports [`Msg::Exited`], its last message.
pub(super) fn spawn(
    which: &'static str,
    conn: Id,
    socket: Arc<Borrowed>,
    state: Arc<ConnShared>,
    shared: Arc<Shared>,
    body: impl FnOnce(Id, &Socket, &ConnShared, &Shared) + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("gnet-{which}-{}", conn.index()))
        .stack_size(STACK_SIZE)
        .spawn(move || {
            let run = || body(conn, &socket, &state, &shared);
            contain_panic(conn, which, run, &state, &shared);
            drop(socket);
            shared.push(Msg::Exited(conn));
        })
}

/// Runs a thread's body; a panic in it fails the connection instead of leaving it without
/// its thread (and so never closed: `Exited` is still sent by the caller).
fn contain_panic(conn: Id, which: &str, body: impl FnOnce(), state: &ConnShared, shared: &Shared) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() && !state.closing() {
        let error = io::Error::other(format!("stdnet: the {which} thread panicked"));
        shared.push(Msg::Failed { conn, error });
    }
}

/// The reader: reads until end-of-stream, an error or `close`, at most [`MAX_IN_FLIGHT`]
/// chunks ahead of the loop, and not at all while paused.
///
/// An idle connection should hold no receive buffer, yet a blocking read needs one while it
/// waits. So a connection that is not streaming reads into a small buffer on the thread's stack
/// ([`PROBE`] bytes) and queues an exact-size copy; once a read fills its buffer (more is
/// probably waiting) the reader switches to full-size (`read_buffer_size`) buffers, recycled
/// through [`State::spare`], and back to the stack buffer after the first short read.
fn reader(conn: Id, socket: &Socket, state: &ConnShared, shared: &Shared, size: usize) {
    let mut probe = [0u8; PROBE];
    let probe = &mut probe[..size.min(PROBE)];
    let mut hot = false;
    loop {
        let big = {
            let mut st = state.lock();
            while !st.closing && (st.paused || st.in_flight >= MAX_IN_FLIGHT) {
                st = state.wait(st);
            }
            if st.closing {
                return;
            }
            st.hot = hot;
            if hot {
                Some(st.spare.pop().unwrap_or_else(|| vec![0; size]))
            } else {
                st.spare.clear();
                None
            }
        };
        let res = match big {
            Some(mut buf) => read(socket, &mut buf).map(|n| (n, n == buf.len(), Some(buf))),
            None => read(socket, probe).map(|n| (n, n == probe.len(), None)),
        };
        match res {
            Ok((0, ..)) => {
                if !state.closing() {
                    shared.push(Msg::Eof(conn));
                }
                return;
            }
            Ok((len, full, buf)) => {
                hot = full;
                let buf = buf.unwrap_or_else(|| probe[..len].to_vec());
                {
                    let mut st = state.lock();
                    if st.closing {
                        return;
                    }
                    st.in_flight += 1;
                }
                shared.push(Msg::Data { conn, buf, len });
            }
            Err(e) if retry(&e, state) => {}
            Err(error) => {
                if !state.closing() {
                    shared.push(Msg::Failed { conn, error });
                }
                return;
            }
        }
    }
}

/// The writer: writes each batch the loop hands over, whole and in order, then reports `sent`
/// (after dropping the batch); exits at `close` or after an error.
fn writer(conn: Id, socket: &Socket, state: &ConnShared, shared: &Shared) {
    loop {
        let bufs = {
            let mut st = state.lock();
            loop {
                if st.closing {
                    return;
                }
                if let Some(bufs) = st.outbox.take() {
                    break bufs;
                }
                st = state.wait(st);
            }
        };
        let n = bufs.iter().map(Bytes::len).sum();
        let res = write_all(socket, &bufs, state);
        drop(bufs);
        match res {
            Ok(()) => shared.push(Msg::Sent { conn, n }),
            Err(error) => {
                if !state.closing() {
                    shared.push(Msg::Failed { conn, error });
                }
                return;
            }
        }
    }
}

/// Writes every byte of `bufs` with vectored writes, resuming after partial writes.
fn write_all(socket: &Socket, bufs: &[Bytes], state: &ConnShared) -> io::Result<()> {
    let (mut i, mut off) = (0, 0);
    let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(bufs.len().min(MAX_IOV));
    while i < bufs.len() {
        if off == bufs[i].len() {
            i += 1;
            off = 0;
            continue;
        }
        iov.clear();
        iov.push(IoSlice::new(&bufs[i][off..]));
        iov.extend(
            bufs[i + 1..]
                .iter()
                .filter(|b| !b.is_empty())
                .take(MAX_IOV - 1)
                .map(|b| IoSlice::new(b)),
        );
        match write_vectored(socket, &iov) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                while n > 0 {
                    let rest = bufs[i].len() - off;
                    if n >= rest {
                        n -= rest;
                        i += 1;
                        off = 0;
                    } else {
                        off += n;
                        n = 0;
                    }
                }
            }
            Err(e) if retry(&e, state) || send_timed_out(&e, socket, state) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a send gave up on its `WRITER_TICK` timeout while the connection is not closing
/// (Unix): then it is simply tried again. The blocking mode is set again first, in case
/// something switched the shared socket to non-blocking, which would make this a busy loop.
pub(super) fn send_timed_out(e: &io::Error, socket: &Socket, state: &ConnShared) -> bool {
    let timed_out = matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    );
    if !cfg!(unix) || !timed_out || state.closing() {
        return false;
    }
    socket.set_nonblocking(false).is_ok()
}

/// Whether a failed call should simply be repeated: interrupted, or (where the reader has a
/// receive timeout) the timeout expired while the connection is not closing. On Unix a
/// `WouldBlock` means someone made the socket non-blocking behind stdnet's back: an error.
fn retry(e: &io::Error, state: &ConnShared) -> bool {
    match e.kind() {
        io::ErrorKind::Interrupted => true,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => cfg!(not(unix)) && !state.closing(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn set_read_timeout(socket: &Socket) -> io::Result<()> {
    match socket {
        Socket::Tcp(s) => s.set_read_timeout(Some(SAFETY_NET)),
        Socket::Udp(s) => s.set_read_timeout(Some(SAFETY_NET)),
    }
}

fn read(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    match socket {
        Socket::Tcp(s) => (&*s).read(buf),
        #[cfg(unix)]
        Socket::Unix(s) => (&*s).read(buf),
        Socket::Udp(_) => Err(not_a_stream()),
    }
}

fn not_a_stream() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "a datagram socket is not a stream",
    )
}

fn write_vectored(socket: &Socket, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    match socket {
        Socket::Tcp(s) => (&*s).write_vectored(bufs),
        #[cfg(unix)]
        Socket::Unix(s) => (&*s).write_vectored(bufs),
        Socket::Udp(_) => Err(not_a_stream()),
    }
}

/// Wakes the connection's threads at `close` (the handles share one socket; see the module
/// documentation): the read side only on Unix, both directions elsewhere. Errors
/// (`NotConnected` once the peer is gone) do not matter here.
pub(super) fn shutdown(socket: &Socket) {
    let how = if cfg!(unix) {
        Shutdown::Read
    } else {
        Shutdown::Both
    };
    let _ = socket.shutdown(how);
}
