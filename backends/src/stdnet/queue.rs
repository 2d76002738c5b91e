//! The per-loop event queue that helper threads push into and `poll` drains, and the waker.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::contract::{Id, Wake};
use crate::socket::{Addr, Socket};

/// Locks a mutex, ignoring poisoning: every critical section in stdnet leaves its data
/// consistent, so a panic elsewhere must not take the loop down with it.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Something a helper thread (or the backend itself, outside `poll`) has to report.
pub(super) enum Msg {
    /// An accept thread accepted a connection. `token` identifies the registration of the
    /// listener so that a removed (or re-added) listener's leftovers are recognised.
    Accepted {
        listener: Id,
        token: u64,
        socket: Socket,
        peer: Addr,
    },
    /// An accept thread hit a persistent accept error.
    AcceptError {
        listener: Id,
        token: u64,
        error: io::Error,
    },
    /// A reader thread read `len` bytes into `buf` (the reader's buffer; `buf[..len]`).
    Data { conn: Id, buf: Vec<u8>, len: usize },
    /// A reader thread read end-of-stream.
    Eof(Id),
    /// A writer thread wrote a whole batch of `n` bytes.
    Sent { conn: Id, n: usize },
    /// A reader or writer thread hit an I/O error (or a thread could not be started).
    Failed { conn: Id, error: io::Error },
    /// A datagram socket's reader received a datagram (`data`: at most `read_buffer_size`
    /// bytes of it; `truncated` when it was larger).
    Datagram {
        id: Id,
        from: SocketAddr,
        data: Vec<u8>,
        truncated: bool,
    },
    /// An error about one datagram (`to`: its destination) or one the network reported with a
    /// receive (`to` is `None`); the socket goes on.
    DatagramError {
        id: Id,
        to: Option<SocketAddr>,
        error: io::Error,
    },
    /// A connect finished (or was cancelled: then `closed` is due instead). From a connecting
    /// thread this is its last message, sent after it dropped its handle of the socket.
    Connected { id: Id, result: io::Result<()> },
    /// A reader or writer thread of `conn` exited and released its socket handle. The last
    /// message a thread ever sends.
    Exited(Id),
    /// Local only (never crosses threads): `close` found no thread left, so `closed` is due.
    Closed(Id),
}

/// State shared between a loop and its helper threads and wakers.
pub(super) struct Shared {
    queue: Mutex<VecDeque<Msg>>,
    ready: Condvar,
    woken: AtomicBool,
}

impl Shared {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            woken: AtomicBool::new(false),
        })
    }

    /// Queues one message and wakes the loop if it may be waiting.
    pub(super) fn push(&self, msg: Msg) {
        let mut q = lock(&self.queue);
        let was_empty = q.is_empty();
        q.push_back(msg);
        drop(q);
        // The loop waits only while the queue is empty, and whoever made it non-empty wakes it.
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Drops queued messages for which `drop_it` returns true (dropping their payloads, e.g.
    /// closing sockets accepted for a listener that was just removed).
    pub(super) fn purge(&self, mut drop_it: impl FnMut(&Msg) -> bool) {
        let removed: Vec<Msg> = {
            let mut q = lock(&self.queue);
            let mut keep = VecDeque::with_capacity(q.len());
            let mut removed = Vec::new();
            for m in q.drain(..) {
                if drop_it(&m) {
                    removed.push(m);
                } else {
                    keep.push_back(m);
                }
            }
            *q = keep;
            removed
        };
        drop(removed); // outside the lock: closing sockets may take a moment
    }

    /// Moves every queued message into `out` (which must be empty). When `block` is set and
    /// nothing is queued and no wake-up is pending, waits up to `timeout` (`None` = forever).
    pub(super) fn take(&self, timeout: Option<Duration>, block: bool, out: &mut VecDeque<Msg>) {
        debug_assert!(out.is_empty());
        let mut q = lock(&self.queue);
        if block {
            // No timeout, or one too far away to represent: wait until something happens.
            let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
            while q.is_empty() && !self.woken.load(Ordering::Acquire) {
                match deadline {
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            break;
                        }
                        q = self
                            .ready
                            .wait_timeout(q, d - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                    None => q = self.ready.wait(q).unwrap_or_else(PoisonError::into_inner),
                }
            }
        }
        std::mem::swap(&mut *q, out);
    }

    /// Clears the wake-up flag; true if a wake-up was pending.
    pub(super) fn take_woken(&self) -> bool {
        self.woken.load(Ordering::Acquire) && self.woken.swap(false, Ordering::AcqRel)
    }
}

/// The [`Wake`] handle of a stdnet loop.
pub(super) struct Waker(pub(super) Arc<Shared>);

impl Wake for Waker {
    fn wake(&self) -> io::Result<()> {
        let shared = &self.0;
        if !shared.woken.swap(true, Ordering::AcqRel) {
            // Notify under the lock: `take` checks the flag under the same lock before it
            // waits, so the wake-up cannot fall between its check and its wait.
            let _q = lock(&shared.queue);
            shared.ready.notify_one();
        }
        Ok(())
    }
}
