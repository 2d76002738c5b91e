//! Waking a loop blocked in its selector's wait from another thread: a signal of the
//! selector's mechanism and a flag that coalesces wake-ups.
//!
//! | target                      | signal                                                  |
//! |-----------------------------|---------------------------------------------------------|
//! | Linux (epoll)               | an eventfd (`sys::EventFd`), registered for readability  |
//! | macOS, iOS, FreeBSD         | an `EVFILT_USER` event of the kqueue (`kqueue::UserEvent`) |
//! | NetBSD, OpenBSD, DragonFly  | a pipe (`sys::Pipe`), its read end registered            |

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::contract::Wake;

cfg_if::cfg_if! {
    if #[cfg(gnet_epoll)] {
        type Signal = crate::sys::EventFd;
    } else if #[cfg(gnet_kq_user_waker)] {
        type Signal = super::kqueue::UserEvent;
    } else {
        type Signal = crate::sys::Pipe;
    }
}

/// The loop's wake-up handle, shared with other threads as `Arc<dyn Wake>`.
///
/// The `pending` flag coalesces: only the first [`Wake::wake`] after the loop consumed the
/// previous wake-up signals; the others see the flag set and return. The signal's descriptors
/// are owned here (the kqueue's shared with the selector), so a handle that outlives the
/// backend signals a descriptor that is still its own, never a reused number.
#[derive(Debug)]
pub(crate) struct Waker {
    signal: Signal,
    pending: AtomicBool,
}

impl Waker {
    pub(super) fn new(signal: Signal) -> Self {
        Waker {
            signal,
            pending: AtomicBool::new(false),
        }
    }

    /// Consumes a wake-up. The flag is cleared *before* the signal is drained: a `wake`
    /// racing with this either signals after the drain (and the next poll sees it) or is
    /// covered by the `woken` the loop is about to report.
    ///
    /// # Errors
    /// A failure draining the signal.
    pub(crate) fn reset(&self) -> io::Result<()> {
        self.pending.store(false, Ordering::Release);
        self.signal.drain().map(drop)
    }
}

impl Wake for Waker {
    fn wake(&self) -> io::Result<()> {
        if self.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.signal
            .notify()
            .inspect_err(|_| self.pending.store(false, Ordering::Release))
    }
}
