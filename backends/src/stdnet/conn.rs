//! Per-connection state shared with the connection's reader and writer threads, and the two
//! thread bodies.
//!
//! Both threads do blocking I/O on their own handle (`try_clone`) of the loop's socket, which
//! `add_conn` switches to blocking mode. `close` wakes them by shutting the socket down in both
//! directions: on Linux (tested) and the BSDs a blocked `recv` then returns 0 and a blocked `send`
//! fails with `EPIPE`. Elsewhere (Windows) the reader also gets a receive timeout
//! (one second) so that it notices the close within that time even if the `shutdown` did not
//! wake it; Winsock completes later receives normally after such a timeout. There is no send
//! timeout: Winsock documents the socket state after a timed-out send as indeterminate.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use bytes::Bytes;

use super::queue::{lock, Msg, Shared};
use super::STACK_SIZE;
use crate::contract::ConnId;
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

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cv
            .wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn closing(&self) -> bool {
        self.lock().closing
    }
}

/// Starts the reader thread of `conn` on `socket` (the thread's own handle).
pub(super) fn spawn_reader(
    conn: ConnId,
    socket: Socket,
    state: Arc<ConnShared>,
    shared: Arc<Shared>,
    size: usize,
) -> io::Result<JoinHandle<()>> {
    socket.set_nonblocking(false)?;
    #[cfg(not(unix))]
    set_read_timeout(&socket)?;
    thread::Builder::new()
        .name(format!("gnet-read-{}", conn.index()))
        .stack_size(STACK_SIZE)
        .spawn(move || {
            reader(conn, &socket, &state, &shared, size);
            drop(socket);
            shared.push(Msg::Exited(conn));
        })
}

/// Starts the writer thread of `conn` on `socket` (the thread's own handle).
pub(super) fn spawn_writer(
    conn: ConnId,
    socket: Socket,
    state: Arc<ConnShared>,
    shared: Arc<Shared>,
) -> io::Result<JoinHandle<()>> {
    socket.set_nonblocking(false)?;
    thread::Builder::new()
        .name(format!("gnet-write-{}", conn.index()))
        .stack_size(STACK_SIZE)
        .spawn(move || {
            writer(conn, &socket, &state, &shared);
            drop(socket);
            shared.push(Msg::Exited(conn));
        })
}

/// The reader: reads until end-of-stream, an error or `close`, at most [`MAX_IN_FLIGHT`]
/// chunks ahead of the loop, and not at all while paused.
///
/// An idle connection should hold no receive buffer, yet a blocking read needs one while it
/// waits. So a connection that is not streaming reads into a small buffer on the thread's stack
/// ([`PROBE`] bytes) and queues an exact-size copy; once a read fills its buffer (more is
/// probably waiting) the reader switches to full-size (`read_buffer_size`) buffers, recycled
/// through [`State::spare`], and back to the stack buffer after the first short read.
fn reader(conn: ConnId, socket: &Socket, state: &ConnShared, shared: &Shared, size: usize) {
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
fn writer(conn: ConnId, socket: &Socket, state: &ConnShared, shared: &Shared) {
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
            Err(e) if retry(&e, state) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    }
}

fn read(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    match socket {
        Socket::Tcp(s) => (&*s).read(buf),
        #[cfg(unix)]
        Socket::Unix(s) => (&*s).read(buf),
    }
}

fn write_vectored(socket: &Socket, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    match socket {
        Socket::Tcp(s) => (&*s).write_vectored(bufs),
        #[cfg(unix)]
        Socket::Unix(s) => (&*s).write_vectored(bufs),
    }
}

/// Shuts both directions of the connection down, waking blocked reads and writes of its
/// threads (the handles share one socket). Errors (`NotConnected` once the peer is gone) do
/// not matter here.
pub(super) fn shutdown(socket: &Socket) {
    let _ = socket.shutdown(Shutdown::Both);
}
