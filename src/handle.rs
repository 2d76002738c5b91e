//! Cross-thread access to a loop: the task queue and `ConnHandle`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use gnet_backends::{Addr, ConnId, Socket, Wake};

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
        id: ConnId,
        bufs: Vec<Bytes>,
        done: Option<WriteCallback>,
    },
    Wake {
        id: ConnId,
    },
    Close {
        id: ConnId,
    },
    Stats {
        reply: std::sync::mpsc::Sender<gnet_backends::Stats>,
    },
}

/// The part of a loop other threads can reach.
pub(crate) struct LoopShared {
    pub(crate) index: usize,
    tasks: Mutex<Vec<Task>>,
    waker: OnceLock<Arc<dyn Wake>>,
    pub(crate) conns: AtomicUsize,
    exited: AtomicBool,
}

impl LoopShared {
    pub(crate) fn new(index: usize) -> Self {
        LoopShared {
            index,
            tasks: Mutex::new(Vec::new()),
            waker: OnceLock::new(),
            conns: AtomicUsize::new(0),
            exited: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_waker(&self, w: Arc<dyn Wake>) {
        let _ = self.waker.set(w);
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
            q.push(task);
            was_empty
        };
        if was_empty {
            self.wake();
        }
        Ok(())
    }

    /// Moves every queued task into `into`.
    pub(crate) fn drain(&self, into: &mut Vec<Task>) {
        let mut q = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *q, into);
    }

    /// Marks the loop gone and returns the tasks nobody will run.
    pub(crate) fn exit(&self) -> Vec<Task> {
        let mut q = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        self.exited.store(true, Ordering::Release);
        std::mem::take(&mut *q)
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

/// A handle to one connection, usable from any thread.
///
/// Operations are queued to the connection's loop and run there. A handle outliving its
/// connection is harmless: its operations find a different generation in the slot (even if
/// the descriptor number or the slot was reused) and do nothing; writes report
/// [`Error::ConnClosed`] to their callback.
#[derive(Clone)]
pub struct ConnHandle {
    shared: Arc<LoopShared>,
    id: ConnId,
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
    pub(crate) fn new(shared: Arc<LoopShared>, id: ConnId) -> Self {
        ConnHandle { shared, id }
    }

    fn push(&self, task: Task) -> Result<()> {
        self.shared.push(task).map_err(|t| {
            refuse(t);
            Error::EngineShutdown
        })
    }

    /// Writes `data` from any thread.
    ///
    /// # Errors
    /// [`Error::EngineShutdown`] if the loop is gone. Refusals found on the loop (a closed
    /// connection, a full outbound buffer) are reported only to callbacks: use
    /// [`ConnHandle::async_write_with`] to see them.
    pub fn async_write(&self, data: impl Into<Bytes>) -> Result<()> {
        self.push(Task::Write {
            id: self.id,
            bufs: vec![data.into()],
            done: None,
        })
    }

    /// Writes `data` and calls `done` on the loop thread once the bytes are in the kernel
    /// (`Ok(len)`) — not merely queued — or with the reason they never will be:
    /// [`Error::ConnClosed`], [`Error::OutboundFull`], [`Error::EngineShutdown`].
    ///
    /// # Errors
    /// [`Error::EngineShutdown`] if the loop is gone (`done` has then been called with it).
    pub fn async_write_with<F>(&self, data: impl Into<Bytes>, done: F) -> Result<()>
    where
        F: FnOnce(Result<usize>) + Send + 'static,
    {
        self.push(Task::Write {
            id: self.id,
            bufs: vec![data.into()],
            done: Some(Box::new(done)),
        })
    }

    /// Writes several buffers, in order, as one operation; `done` as for
    /// [`ConnHandle::async_write_with`].
    ///
    /// # Errors
    /// [`Error::EngineShutdown`] if the loop is gone.
    pub fn async_writev(&self, bufs: Vec<Bytes>, done: Option<WriteCallback>) -> Result<()> {
        self.push(Task::Write {
            id: self.id,
            bufs,
            done,
        })
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
