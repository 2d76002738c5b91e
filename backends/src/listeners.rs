//! Listeners watched by a selector: the accept loop, and the pause of the accept policy
//! (`accept.rs`) when the process runs out of resources. Shared by the readiness backends
//! (epoll, kqueue) and the io_uring backend, which accepts through an epoll instance of its own
//! so that the ring never holds a reference to a listening socket (see the io_uring module
//! documentation).
//!
//! Listeners are registered edge-triggered, so each readiness edge is drained with `accept`
//! (`accept4` where the system has it) until `EAGAIN`. A paused listener ignores its edges and
//! is retried when its back-off expires or a connection closes, with the backend's wait
//! shortened to that moment ([`Listeners::next_retry`]). Level triggering would spin on such a
//! listener; plain edge triggering would leave the queued connections waiting for the next SYN.
#![allow(dead_code)] // Shared by three backends; any may be compiled without the others.

use std::os::fd::{BorrowedFd, RawFd};
use std::time::Instant;

use crate::accept::{self, Pause, Verdict};
use crate::contract::{Id, Sink};
use crate::sys;

#[derive(Debug)]
struct Entry {
    id: Id,
    /// Lent by the loop, open until `remove_listener` returns.
    fd: RawFd,
    pause: Pause,
    /// The listener cannot accept at all ([`Verdict::Stop`]): its edges are ignored.
    stopped: bool,
}

/// Registered listeners by [`Id::index`].
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    slots: Vec<Option<Entry>>,
    /// Listeners resting, so that the common case (none) costs nothing per poll.
    resting: usize,
}

impl Listeners {
    pub(crate) fn contains(&self, id: Id) -> bool {
        self.slots
            .get(id.index())
            .is_some_and(|e| e.as_ref().is_some_and(|e| e.id == id))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    pub(crate) fn insert(&mut self, id: Id, fd: RawFd) {
        let index = id.index();
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || None);
        }
        self.slots[index] = Some(Entry {
            id,
            fd,
            pause: Pause::default(),
            stopped: false,
        });
    }

    /// Forgets a listener and returns its descriptor (still open: the loop owns it).
    pub(crate) fn remove(&mut self, id: Id) -> Option<RawFd> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.as_ref()?.id != id {
            return None;
        }
        let entry = slot.take()?;
        if entry.pause.resting() {
            self.resting -= 1;
        }
        Some(entry.fd)
    }

    /// A readiness edge for the listener at `index`: accept everything pending, unless it is
    /// resting.
    pub(crate) fn on_ready<S: Sink>(&mut self, index: usize, sink: &mut S) {
        let Some(entry) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if !entry.pause.resting() && !entry.stopped && accept_all(entry, sink) {
            self.resting += 1;
        }
    }

    /// When the earliest resting listener is due, if any rests.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        if self.resting == 0 {
            return None;
        }
        self.slots
            .iter()
            .flatten()
            .filter_map(|e| e.pause.retry_at())
            .min()
    }

    /// A connection closed and its descriptor is free: resting listeners are due at once.
    pub(crate) fn connection_closed(&mut self) {
        if self.resting == 0 {
            return;
        }
        let now = Instant::now();
        for e in self.slots.iter_mut().flatten() {
            e.pause.hurry(now);
        }
    }

    /// Retries the listeners whose rest is over.
    pub(crate) fn retry_due<S: Sink>(&mut self, sink: &mut S) {
        if self.resting == 0 {
            return;
        }
        let now = Instant::now();
        for entry in self.slots.iter_mut().flatten() {
            if entry.pause.due(now) {
                entry.pause.wake();
                if !accept_all(entry, sink) {
                    self.resting -= 1;
                }
            }
        }
    }
}

/// Accepts until `EAGAIN`; returns `true` when the listener paused on a resource error.
fn accept_all<S: Sink>(entry: &mut Entry, sink: &mut S) -> bool {
    let id = entry.id;
    // SAFETY: the loop lent this descriptor in `add_listener` and keeps it open until
    // `remove_listener` returns, which removes the entry before that.
    let fd = unsafe { BorrowedFd::borrow_raw(entry.fd) };
    let mut skipped = 0;
    loop {
        match sys::accept(fd) {
            Ok((socket, peer)) => {
                skipped = 0;
                sink.accepted(id, socket, peer);
            }
            Err(e) if sys::is_would_block(&e) => {
                entry.pause.drained(id);
                return false;
            }
            Err(e) => match accept::classify(&e) {
                Verdict::Retry if skipped < accept::MAX_SKIPPED => {
                    skipped += 1;
                    log::debug!("accept on listener {id}: {e} (skipped)");
                }
                Verdict::Retry | Verdict::Pause => {
                    if let Some(e) = entry.pause.rest(id, e) {
                        sink.accept_error(id, e);
                    }
                    return true;
                }
                Verdict::Stop => {
                    log::error!("accept on listener {id}: {e}; it accepts no more");
                    entry.stopped = true;
                    sink.accept_error(id, e);
                    return false;
                }
            },
        }
    }
}
