//! One accept thread per listener.
//!
//! The thread accepts on its own handle (`try_clone`) of the listener, switched to non-blocking
//! mode, and sleeps with `thread::park_timeout` between empty attempts (1 ms right after a
//! connection, backing off to 10 ms when idle). A blocking `accept` cannot be interrupted
//! portably without closing the loop's listener, whereas a parked thread is woken at once by
//! `unpark`: [`AcceptThread::stop`] sets the stop flag, unparks and joins, so when
//! `remove_listener` returns the thread's handle is closed and the port is free as soon as the
//! loop drops its listener.
//!
//! Errors follow the policy of `accept.rs`: a listener out of descriptors rests for
//! [`accept::BACKOFF`], or until the backend reports a connection closed
//! ([`AcceptThread::hurry`] unparks it), and its pending connections wait in the backlog.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::queue::{Msg, Shared};
use super::STACK_SIZE;
use crate::accept::{self, Pause, Verdict};
use crate::contract::Id;
use crate::socket::Listener;

/// Shortest pause between two empty accept attempts.
const IDLE_MIN: Duration = Duration::from_millis(1);
/// Longest pause between two empty accept attempts (the accept latency of an idle listener).
const IDLE_MAX: Duration = Duration::from_millis(10);
/// Accepted connections queued for the loop and not yet reported: past this the thread stops
/// accepting (the kernel's backlog holds the rest) until the loop catches up.
const MAX_QUEUED: usize = 128;

/// A running accept thread.
pub(super) struct AcceptThread {
    /// Identifies this registration in the messages of its thread.
    pub(super) token: u64,
    /// Accepted connections queued and not yet reported (or dropped) by the loop.
    pub(super) queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// The thread rests after a resource error (and may be woken early).
    resting: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl AcceptThread {
    /// Starts accepting on a clone of `listener`.
    pub(super) fn spawn(
        id: Id,
        token: u64,
        listener: &Listener,
        shared: &Arc<Shared>,
    ) -> io::Result<Self> {
        let own = listener.try_clone()?;
        set_nonblocking(&own)?;
        let stop = Arc::new(AtomicBool::new(false));
        let resting = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let handle = {
            let (stop, resting, queued, shared) = (
                stop.clone(),
                resting.clone(),
                queued.clone(),
                shared.clone(),
            );
            thread::Builder::new()
                .name(format!("gnet-accept-{}", id.0))
                .stack_size(STACK_SIZE)
                .spawn(move || run(id, token, own, &stop, &resting, &queued, &shared))?
        };
        Ok(AcceptThread {
            token,
            queued,
            stop,
            resting,
            handle: Some(handle),
        })
    }

    /// A connection closed and freed its descriptors: a resting thread tries again now.
    pub(super) fn hurry(&self) {
        if self.resting.load(Ordering::Acquire) {
            if let Some(h) = &self.handle {
                h.thread().unpark();
            }
        }
    }

    /// Stops the thread and waits for it, so its listener handle is closed on return.
    pub(super) fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.stop.store(true, Ordering::Release);
            handle.thread().unpark();
            if handle.join().is_err() {
                log::error!("stdnet: an accept thread panicked");
            }
        }
    }
}

impl Drop for AcceptThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn set_nonblocking(l: &Listener) -> io::Result<()> {
    match l {
        Listener::Tcp(l) => l.set_nonblocking(true),
        #[cfg(unix)]
        Listener::Unix(l) => l.set_nonblocking(true),
    }
}

fn run(
    id: Id,
    token: u64,
    listener: Listener,
    stop: &AtomicBool,
    resting: &AtomicBool,
    queued: &AtomicUsize,
    shared: &Shared,
) {
    let mut idle = IDLE_MIN;
    let mut pause = Pause::default();
    let mut skipped = 0;
    while !stop.load(Ordering::Acquire) {
        if let Some(at) = pause.retry_at() {
            resting.store(true, Ordering::Release);
            thread::park_timeout(at.saturating_duration_since(Instant::now()));
            resting.store(false, Ordering::Release);
            pause.wake();
            continue;
        }
        if queued.load(Ordering::Acquire) >= MAX_QUEUED {
            thread::park_timeout(IDLE_MIN);
            continue;
        }
        match listener.accept_std() {
            Ok((socket, peer)) => {
                idle = IDLE_MIN;
                skipped = 0;
                // The contract hands accepted sockets to the loop in non-blocking mode;
                // stdnet's `add_conn` switches them back to blocking for its own threads.
                if let Err(e) = socket.set_nonblocking(true) {
                    log::debug!("stdnet: set_nonblocking on an accepted socket: {e}");
                }
                queued.fetch_add(1, Ordering::AcqRel);
                shared.push(Msg::Accepted {
                    listener: id,
                    token,
                    socket,
                    peer,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pause.drained(id);
                thread::park_timeout(idle);
                idle = (idle * 2).min(IDLE_MAX);
            }
            Err(e) => match accept::classify(&e) {
                Verdict::Retry if skipped < accept::MAX_SKIPPED => {
                    skipped += 1;
                    log::debug!("stdnet: accept on listener {}: {e} (skipped)", id.0);
                }
                Verdict::Retry | Verdict::Pause => {
                    skipped = 0;
                    report(id, token, &mut pause, e, shared);
                }
                Verdict::Stop => {
                    log::error!(
                        "stdnet: accept on listener {}: {e}; it accepts no more",
                        id.0
                    );
                    shared.push(Msg::AcceptError {
                        listener: id,
                        token,
                        error: e,
                    });
                    return;
                }
            },
        }
    }
    // `listener` (the thread's handle) is dropped here, before `join` returns.
}

/// Pauses the thread's listener; the first error of an episode goes to the loop.
fn report(id: Id, token: u64, pause: &mut Pause, error: io::Error, shared: &Shared) {
    if let Some(error) = pause.rest(id, error) {
        shared.push(Msg::AcceptError {
            listener: id,
            token,
            error,
        });
    }
}
