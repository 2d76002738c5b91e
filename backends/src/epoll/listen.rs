//! Listeners: the accept loop and its back-off when the process runs out of resources.
//!
//! Listeners are registered edge-triggered, so each readiness edge is drained with `accept4`
//! until `EAGAIN`. Per-connection errors (`ECONNABORTED`, `EPROTO`, `EINTR`, ...) are skipped.
//! A resource error (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, or anything unexpected) is
//! reported with [`Sink::accept_error`] and *starves* the listener for [`BACKOFF`]: its edges
//! are ignored and it is retried once the back-off expires, with `poll` shortening its wait to
//! that moment. Level triggering would spin on such a listener; plain edge triggering would
//! leave the queued connections waiting for the next SYN. At most one error per listener is
//! reported per back-off period.

use std::os::fd::{BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use crate::contract::{ListenerId, Sink};
use crate::sys;

/// How long a listener rests after a resource error before `accept` is tried again.
pub(super) const BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Entry {
    /// Lent by the loop, open until `remove_listener` returns.
    fd: RawFd,
    /// Set while starved: when to try again.
    retry_at: Option<Instant>,
}

/// Registered listeners by [`ListenerId`] (small and dense).
#[derive(Debug, Default)]
pub(super) struct Listeners {
    slots: Vec<Option<Entry>>,
    starved: usize,
}

impl Listeners {
    pub(super) fn contains(&self, id: ListenerId) -> bool {
        self.slots.get(id.0).is_some_and(Option::is_some)
    }

    pub(super) fn insert(&mut self, id: ListenerId, fd: RawFd) {
        if id.0 >= self.slots.len() {
            self.slots.resize_with(id.0 + 1, || None);
        }
        self.slots[id.0] = Some(Entry { fd, retry_at: None });
    }

    /// Forgets a listener and returns its descriptor (still open: the loop owns it).
    pub(super) fn remove(&mut self, id: ListenerId) -> Option<RawFd> {
        let entry = self.slots.get_mut(id.0)?.take()?;
        if entry.retry_at.is_some() {
            self.starved -= 1;
        }
        Some(entry.fd)
    }

    /// A readiness edge: accept everything pending, unless the listener is resting.
    pub(super) fn on_ready<S: Sink>(&mut self, id: ListenerId, sink: &mut S) {
        let Some(entry) = self.slots.get_mut(id.0).and_then(Option::as_mut) else {
            return;
        };
        if entry.retry_at.is_none() && accept_all(id, entry.fd, sink) {
            entry.retry_at = Some(Instant::now() + BACKOFF);
            self.starved += 1;
        }
    }

    /// When the earliest resting listener is due, if any rests.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        if self.starved == 0 {
            return None;
        }
        self.slots.iter().flatten().filter_map(|e| e.retry_at).min()
    }

    /// Retries the listeners whose back-off has expired.
    pub(super) fn retry_due<S: Sink>(&mut self, sink: &mut S) {
        if self.starved == 0 {
            return;
        }
        let now = Instant::now();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(entry) = slot.as_mut() else { continue };
            if entry.retry_at.is_some_and(|at| at <= now) {
                if accept_all(ListenerId(index), entry.fd, sink) {
                    entry.retry_at = Some(now + BACKOFF);
                } else {
                    entry.retry_at = None;
                    self.starved -= 1;
                }
            }
        }
    }
}

/// Accepts until `EAGAIN`; returns `true` when it stopped on a resource error (reported).
fn accept_all<S: Sink>(id: ListenerId, fd: RawFd, sink: &mut S) -> bool {
    // SAFETY: the loop lent this descriptor in `add_listener` and keeps it open until
    // `remove_listener` returns, which removes the entry before that.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    loop {
        match sys::accept4(fd) {
            Ok((socket, peer)) => sink.accepted(id, socket, peer),
            Err(e) if sys::is_would_block(&e) => return false,
            Err(e) if sys::is_transient_accept(&e) => {
                log::debug!("epoll: accept on listener {}: {e} (skipped)", id.0);
            }
            Err(e) => {
                sink.accept_error(id, e);
                return true;
            }
        }
    }
}
