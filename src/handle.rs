//! Cross-thread access to a loop: the task queue and `ConnHandle`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use gnet_backends::{Addr, Id, Socket, Wake};

use crate::error::{Error, Result};

/// Called on the loop thread once an asynchronous write is in the kernel (`Ok(len)`), or with
/// the reason it never will be (`Err`).
pub type WriteCallback = Box<dyn FnOnce(Result<usize>) + Send>;

/// Work another thread hands to a loop.
pub(crate) enum Task {
    Register {
        socket: Socket,
        peer: Addr,
    },
    Write {
        id: Id,
        bufs: Vec<Bytes>,
        done: Option<WriteCallback>,
    },
    Wake {
        id: Id,
    },
    Close {
        id: Id,
    },
    Stats {
        reply: std::sync::mpsc::Sender<gnet_backends::Stats>,
    },
    /// [`Engine::dial`](crate::Engine::dial): the context type-erased on its way.
    Dial {
        addr: crate::addr::ListenAddr,
        ctx: Option<Box<dyn std::any::Any + Send>>,
    },
    /// [`Engine::enroll`](crate::Engine::enroll).
    Enroll {
        socket: Socket,
        ctx: Option<Box<dyn std::any::Any + Send>>,
    },
    /// [`Engine::for_each_conn`](crate::Engine::for_each_conn): a
    /// [`SharedVisit`](crate::broadcast::SharedVisit) of the handler's `Context`, type-erased.
    ForEach {
        f: Box<dyn std::any::Any + Send>,
    },
    /// [`Engine::broadcast`](crate::Engine::broadcast).
    Broadcast {
        data: Bytes,
    },
    /// [`Engine::with_conn`](crate::Engine::with_conn): a
    /// [`SendVisitOne`](crate::broadcast::SendVisitOne) of the handler's `Context`,
    /// type-erased.
    With {
        id: Id,
        f: Box<dyn std::any::Any + Send>,
    },
}

/// What a queued asynchronous write is charged against the budgets, besides its bytes: the
/// task, its buffer list and the `Bytes` headers, roughly. (Sixteen-byte writes from eight
/// threads used to take a server to 5 GB, mostly in such overhead.)
pub(crate) const WRITE_OVERHEAD: usize = 128;

/// The charge of a write of `len` bytes.
pub(crate) fn charge(len: usize) -> usize {
    len.saturating_add(WRITE_OVERHEAD)
}

/// The part of a loop other threads can reach.
pub(crate) struct LoopShared {
    pub(crate) index: usize,
    tasks: Mutex<VecDeque<Task>>,
    waker: OnceLock<Arc<dyn Wake>>,
    pub(crate) conns: AtomicUsize,
    exited: AtomicBool,
    /// Charges of the writes in `tasks` (see [`charge`]).
    queued: AtomicUsize,
    /// The most `queued` may reach (`Options::max_loop_backlog`).
    queued_limit: usize,
    /// `Options::max_outbound_buffer`, the bound of each connection's handles.
    pub(crate) max_outbound: usize,
}

impl LoopShared {
    pub(crate) fn new(index: usize, queued_limit: usize, max_outbound: usize) -> Self {
        LoopShared {
            index,
            tasks: Mutex::new(VecDeque::new()),
            waker: OnceLock::new(),
            conns: AtomicUsize::new(0),
            exited: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            queued_limit,
            max_outbound,
        }
    }

    /// Takes back the charge of a write the loop has taken from the queue.
    pub(crate) fn uncharge(&self, charge: usize) {
        self.queued.fetch_sub(charge, Ordering::AcqRel);
    }

    /// Installs the loop's waker. A stop ([`Engine::stop`](crate::Engine::stop): set the flag,
    /// then wake) either finds the waker or happened before this fence, and then the loop's
    /// first iteration, which does not wait, sees its flag.
    pub(crate) fn set_waker(&self, w: Arc<dyn Wake>) {
        let _ = self.waker.set(w);
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    pub(crate) fn wake(&self) {
        if let Some(w) = self.waker.get() {
            if let Err(e) = w.wake() {
                log::error!("gnet: waking loop {} failed: {e}", self.index);
            }
        }
    }

    /// Queues a task and wakes the loop. Refused once the loop has exited.
    pub(crate) fn push(&self, task: Task) -> std::result::Result<(), Task> {
        let was_empty = {
            let mut q = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            if self.exited.load(Ordering::Acquire) {
                return Err(task);
            }
            let was_empty = q.is_empty();
            q.push_back(task);
            was_empty
        };
        if was_empty {
            self.wake();
        }
        Ok(())
    }

    /// Moves up to `max` queued tasks, the oldest first, into `into`; returns whether more are
    /// left (the loop takes them in its next iteration, so that a flood of tasks cannot keep
    /// it from its sockets).
    pub(crate) fn drain(&self, into: &mut Vec<Task>, max: usize) -> bool {
        let mut q = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let n = q.len().min(max);
        into.extend(q.drain(..n));
        !q.is_empty()
    }

    /// Marks the loop gone and returns the tasks nobody will run.
    pub(crate) fn exit(&self) -> Vec<Task> {
        let mut q = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        self.exited.store(true, Ordering::Release);
        self.queued.store(0, Ordering::Release);
        std::mem::take(&mut *q).into()
    }
}

/// What a connection shares with its [`ConnHandle`]s, so that a write can be refused when it
/// is made rather than later, on the loop, where nobody may be listening.
#[derive(Debug, Default)]
pub(crate) struct HandleShared {
    /// Bytes of this connection's writes still in the loop's queue.
    queued: AtomicUsize,
    /// The connection's outbound backlog (queued and in flight), as the loop last published it.
    outbound: AtomicUsize,
    /// The connection is closing or closed: writes are refused with `ConnClosed`.
    closed: AtomicBool,
    /// A UDP server socket: no single peer to write to.
    server_datagram: bool,
}

impl HandleShared {
    pub(crate) fn new(server_datagram: bool) -> Self {
        HandleShared {
            server_datagram,
            ..HandleShared::default()
        }
    }

    /// The loop took one of this connection's writes, of `len` bytes, from its queue.
    pub(crate) fn uncharge(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::AcqRel);
    }

    /// The loop's view of the connection's outbound backlog, for the next writes to be
    /// measured against.
    pub(crate) fn publish(&self, outbound: usize) {
        self.outbound.store(outbound, Ordering::Release);
    }

    /// No more writes: the connection is closing.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl PartialEq for ConnHandle {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for ConnHandle {}

impl std::hash::Hash for ConnHandle {
    fn hash<S: std::hash::Hasher>(&self, state: &mut S) {
        self.id().hash(state);
    }
}

/// Why a write was refused at the call (copied to both the caller and its callback).
#[derive(Clone, Copy, Debug)]
enum Refusal {
    Shutdown,
    Closed,
    NoPeer,
    Full { buffered: usize, limit: usize },
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        match r {
            Refusal::Shutdown => Error::EngineShutdown,
            Refusal::Closed => Error::ConnClosed,
            Refusal::NoPeer => Error::Unsupported(
                "an asynchronous write to a UDP server socket, which has no single peer: \
                 reply from on_traffic with Conn::write or Conn::send_to",
            ),
            Refusal::Full { buffered, limit } => Error::OutboundFull { buffered, limit },
        }
    }
}

/// Fails a task that will never run, telling its callback.
pub(crate) fn refuse(task: Task) {
    if let Task::Write {
        done: Some(done), ..
    } = task
    {
        done(Err(Error::EngineShutdown));
    }
}

/// A connection's identity in its engine: the loop that serves it and its id there. It stays
/// the same for the connection's whole life and never names another connection, not even one
/// that later takes its slot (ids carry a generation). `Copy`, ordered and hashable, so it
/// can key a map of connections; [`Conn::write_to`](crate::Conn::write_to) reaches another
/// connection of the same loop by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    loop_index: u32,
    id: u64,
}

impl ConnId {
    pub(crate) fn new(loop_index: usize, id: Id) -> ConnId {
        ConnId {
            loop_index: loop_index as u32,
            id: id.0,
        }
    }

    /// The index of the loop that serves the connection.
    pub fn loop_index(self) -> usize {
        self.loop_index as usize
    }

    /// The connection's id inside its loop.
    pub(crate) fn id(self) -> Id {
        Id(self.id)
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.loop_index, self.id())
    }
}

/// A handle to one connection, usable from any thread.
///
/// Operations are queued to the connection's loop and run there. A handle outliving its
/// connection is harmless: its operations find a different generation in the slot (even if
/// the descriptor number or the slot was reused) and do nothing; writes report
/// [`Error::ConnClosed`] to their callback.
///
/// Two handles are equal when they are for the same connection ([`ConnHandle::id`]).
#[derive(Clone)]
pub struct ConnHandle {
    shared: Arc<LoopShared>,
    conn: Arc<HandleShared>,
    id: Id,
}

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnHandle")
            .field("loop", &self.shared.index)
            .field("id", &self.id)
            .finish()
    }
}

impl ConnHandle {
    pub(crate) fn new(shared: Arc<LoopShared>, conn: Arc<HandleShared>, id: Id) -> Self {
        ConnHandle { shared, conn, id }
    }

    /// The connection's identity.
    pub fn id(&self) -> ConnId {
        ConnId::new(self.shared.index, self.id)
    }

    fn push(&self, task: Task) -> Result<()> {
        self.shared.push(task).map_err(|t| {
            refuse(t);
            Error::EngineShutdown
        })
    }

    /// Queues a write if the connection and the loop have room for it; otherwise tells
    /// `done` and returns why not.
    fn write(&self, bufs: Vec<Bytes>, done: Option<WriteCallback>) -> Result<()> {
        let len: usize = bufs.iter().map(Bytes::len).sum();
        if let Err(refusal) = self.reserve(len) {
            if let Some(done) = done {
                done(Err(refusal.into()));
            }
            return Err(refusal.into());
        }
        self.push(Task::Write {
            id: self.id,
            bufs,
            done,
        })
    }

    /// Charges a write to the connection's and the loop's budgets, or refuses it: past the
    /// connection's `max_outbound_buffer` (counting what its queue holds and the bytes other
    /// threads handed it that the loop has not taken yet) or the loop's `max_loop_backlog`
    /// (bytes plus [`WRITE_OVERHEAD`] per write, since that is what the queue costs). A write
    /// into an empty budget is always taken, however large, as on the loop.
    fn reserve(&self, len: usize) -> std::result::Result<(), Refusal> {
        let c = &self.conn;
        if self.shared.exited.load(Ordering::Acquire) {
            return Err(Refusal::Shutdown);
        }
        if c.closed.load(Ordering::Acquire) {
            return Err(Refusal::Closed);
        }
        if c.server_datagram {
            return Err(Refusal::NoPeer);
        }
        let outbound = c.outbound.load(Ordering::Acquire);
        let before = c.queued.fetch_add(len, Ordering::AcqRel);
        let buffered = outbound.saturating_add(before);
        let limit = self.shared.max_outbound;
        if buffered > 0 && buffered.saturating_add(len) > limit {
            c.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(Refusal::Full { buffered, limit });
        }
        let l = &self.shared;
        let cost = charge(len);
        let before = l.queued.fetch_add(cost, Ordering::AcqRel);
        if before > 0 && before.saturating_add(cost) > l.queued_limit {
            l.queued.fetch_sub(cost, Ordering::AcqRel);
            c.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(Refusal::Full {
                buffered: before,
                limit: l.queued_limit,
            });
        }
        Ok(())
    }

    /// Writes `data` from any thread.
    ///
    /// # Errors
    /// Refusals are known at the call, so a caller without a callback sees them too:
    /// [`Error::OutboundFull`] when the connection's outbound backlog (its queue, what is in
    /// flight, and what other threads have handed it and the loop not yet taken) would pass
    /// [`Options::max_outbound_buffer`](crate::Options::max_outbound_buffer), or the loop's
    /// queue of such writes [`Options::max_loop_backlog`](crate::Options::max_loop_backlog)
    /// (wait for the peer to read, or for the loop to catch up, and try again);
    /// [`Error::ConnClosed`] once the connection is closing; [`Error::EngineShutdown`] if the
    /// loop is gone. A write that was accepted is sent unless the connection closes first.
    pub fn async_write(&self, data: impl Into<Bytes>) -> Result<()> {
        self.write(vec![data.into()], None)
    }

    /// Writes `data` and calls `done` on the loop thread once the bytes are in the kernel
    /// (`Ok(len)`) — not merely queued — or with the reason they never will be
    /// ([`Error::ConnClosed`] when the connection closes first).
    ///
    /// # Errors
    /// As [`ConnHandle::async_write`]; `done` is then called at once, on this thread, with
    /// the same error. Either way `done` is called exactly once.
    pub fn async_write_with<F>(&self, data: impl Into<Bytes>, done: F) -> Result<()>
    where
        F: FnOnce(Result<usize>) + Send + 'static,
    {
        self.write(vec![data.into()], Some(Box::new(done)))
    }

    /// Writes several buffers, in order, as one operation; `done` as for
    /// [`ConnHandle::async_write_with`].
    ///
    /// # Errors
    /// As [`ConnHandle::async_write_with`].
    pub fn async_writev(&self, bufs: Vec<Bytes>, done: Option<WriteCallback>) -> Result<()> {
        self.write(bufs, done)
    }

    /// Runs `on_traffic` for the connection with whatever it has buffered.
    ///
    /// # Errors
    /// [`Error::EngineShutdown`] if the loop is gone.
    pub fn wake(&self) -> Result<()> {
        self.push(Task::Wake { id: self.id })
    }

    /// Closes the connection after what was written to it is delivered.
    ///
    /// # Errors
    /// [`Error::EngineShutdown`] if the loop is gone.
    pub fn close(&self) -> Result<()> {
        self.push(Task::Close { id: self.id })
    }

    /// The index of the loop serving the connection.
    pub fn loop_index(&self) -> usize {
        self.shared.index
    }
}
