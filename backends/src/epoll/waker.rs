//! Waking a loop blocked in `epoll_wait` from another thread: an eventfd and a flag.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::contract::Wake;
use crate::sys::EventFd;

/// The loop's wake-up handle, shared with other threads as `Arc<dyn Wake>`.
///
/// The `pending` flag coalesces: only the first [`Wake::wake`] after the loop consumed the
/// previous wake-up writes to the eventfd; the others see the flag set and return. The eventfd
/// is owned here, so a handle that outlives the backend writes to a descriptor that is still
/// its own, never to a reused number.
#[derive(Debug)]
pub(super) struct Waker {
    eventfd: EventFd,
    pending: AtomicBool,
}

impl Waker {
    /// # Errors
    /// Whatever `eventfd(2)` reports.
    pub(super) fn new() -> io::Result<Self> {
        Ok(Waker {
            eventfd: EventFd::new()?,
            pending: AtomicBool::new(false),
        })
    }

    pub(super) fn as_fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }

    /// Consumes a wake-up. The flag is cleared *before* the counter is read: a `wake` racing
    /// with this either writes after the read (and the next poll sees it) or is covered by the
    /// `woken` the loop is about to report.
    ///
    /// # Errors
    /// A failure reading the eventfd.
    pub(super) fn reset(&self) -> io::Result<()> {
        self.pending.store(false, Ordering::Release);
        self.eventfd.drain().map(drop)
    }
}

impl Wake for Waker {
    fn wake(&self) -> io::Result<()> {
        if self.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.eventfd
            .notify()
            .inspect_err(|_| self.pending.store(false, Ordering::Release))
    }
}
