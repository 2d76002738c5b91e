//! One accept thread per listener.
//!
//! The thread accepts on its own handle (`try_clone`) of the listener, switched to non-blocking
//! mode, and sleeps with `thread::park_timeout` between empty attempts (1 ms right after a
//! connection, backing off to 10 ms when idle). A blocking `accept` cannot be interrupted
//! portably without closing the loop's listener, whereas a parked thread is woken at once by
//! `unpark`: [`AcceptThread::stop`] sets the stop flag, unparks and joins, so when
//! `remove_listener` returns the thread's handle is closed and the port is free as soon as the
//! loop drops its listener.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::queue::{Msg, Shared};
use super::STACK_SIZE;
use crate::contract::ListenerId;
use crate::socket::Listener;

/// Shortest pause between two empty accept attempts.
const IDLE_MIN: Duration = Duration::from_millis(1);
/// Longest pause between two empty accept attempts (the accept latency of an idle listener).
const IDLE_MAX: Duration = Duration::from_millis(10);
/// Pause after a persistent accept error (`EMFILE`, ...), so a full descriptor table does not
/// turn into a busy loop of errors.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
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
    handle: Option<JoinHandle<()>>,
}

impl AcceptThread {
    /// Starts accepting on a clone of `listener`.
    pub(super) fn spawn(
        id: ListenerId,
        token: u64,
        listener: &Listener,
        shared: &Arc<Shared>,
    ) -> io::Result<Self> {
        let own = listener.try_clone()?;
        set_nonblocking(&own)?;
        let stop = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let handle = {
            let (stop, queued, shared) = (stop.clone(), queued.clone(), shared.clone());
            thread::Builder::new()
                .name(format!("gnet-accept-{}", id.0))
                .stack_size(STACK_SIZE)
                .spawn(move || run(id, token, own, &stop, &queued, &shared))?
        };
        Ok(AcceptThread {
            token,
            queued,
            stop,
            handle: Some(handle),
        })
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
    id: ListenerId,
    token: u64,
    listener: Listener,
    stop: &AtomicBool,
    queued: &AtomicUsize,
    shared: &Shared,
) {
    let mut idle = IDLE_MIN;
    while !stop.load(Ordering::Acquire) {
        if queued.load(Ordering::Acquire) >= MAX_QUEUED {
            thread::park_timeout(IDLE_MIN);
            continue;
        }
        match listener.accept_std() {
            Ok((socket, peer)) => {
                idle = IDLE_MIN;
                // The contract hands accepted sockets to the loop in non-blocking mode; stdnet's
                // `add_conn` switches them back to blocking for its own threads.
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
                thread::park_timeout(idle);
                idle = (idle * 2).min(IDLE_MAX);
            }
            Err(e) if is_transient(&e) => {}
            Err(error) => {
                shared.push(Msg::AcceptError {
                    listener: id,
                    token,
                    error,
                });
                thread::park_timeout(ERROR_BACKOFF);
            }
        }
    }
    // `listener` (the thread's handle) is dropped here, before `join` returns.
}

/// Accept errors that concern one connection only (it went away before it was accepted, or the
/// call was interrupted): try again at once.
fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | TimedOut
    ) {
        return true;
    }
    // Linux's accept(2) also passes on pending network errors of the new connection.
    #[cfg(target_os = "linux")]
    if let Some(code) = e.raw_os_error() {
        return matches!(
            code,
            libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ENETDOWN
        );
    }
    false
}
