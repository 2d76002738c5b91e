//! Accepting, through an epoll instance of the backend's own: the listeners are registered
//! with it (`listeners.rs`, shared with the epoll backend: the same accept loop and the same
//! pause on resource errors) and the ring keeps one multishot `POLL_ADD` on its descriptor;
//! when that fires, `accept4` takes what is pending.
//!
//! Why not a multishot `ACCEPT`: an io_uring operation on a listening socket holds a
//! reference to it until its completion, and when a process is killed the kernel tears its
//! rings down asynchronously: the port stayed taken 5-17 ms after the process was gone, and an
//! immediate restart failed with `EADDRINUSE`. An epoll instance holds no reference to what it
//! watches, so the listening socket closes with the process (test
//! `killed_server_frees_its_port_at_once`). Measured against multishot accept with
//! `cargo bench --bench churn` (connect, 16-byte echo, close; server and clients on separate
//! cores, alternated): within 2% (13.6k vs 13.8k connections per second), the `accept4`
//! returning the peer's address where multishot accept needed a `getpeername`. It also makes
//! the descriptor limit effective at once: a multishot accept keeps the `RLIMIT_NOFILE` it
//! read when it was armed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use io_uring::opcode;
use io_uring::types::Fd;

use super::user_data::{cqe_error, Kind, Tag};
use super::Uring;
use crate::contract::{Id, Sink};
use crate::selector::epoll::READ_INTEREST;
use crate::selector::Token;
use crate::socket::Listener;

impl Uring {
    /// [`Backend::add_listener`](crate::Backend::add_listener).
    pub(super) fn start_accepting(&mut self, id: Id, listener: &Listener) -> io::Result<()> {
        if self.listeners.contains(id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "listener id in use",
            ));
        }
        // Readiness that already holds (connections queued before this call) makes the epoll
        // instance readable at once: `EPOLL_CTL_ADD` checks it.
        self.accept_poller
            .add(listener.as_fd(), READ_INTEREST, Token::Listener(id.index()))?;
        self.listeners.insert(id, listener.as_raw_fd());
        if !self.accept_armed {
            self.arm_accept();
        }
        Ok(())
    }

    /// [`Backend::remove_listener`](crate::Backend::remove_listener): synchronous.
    pub(super) fn stop_accepting(&mut self, id: Id) {
        let Some(fd) = self.listeners.remove(id) else {
            log::warn!(
                "io_uring: remove_listener({}) for an unknown listener",
                id.0
            );
            return;
        };
        // SAFETY: the loop keeps the listener open until this call returns.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        // Synchronous: no accept for this listener can happen after this returns, and the
        // ring never held a reference to it.
        if let Err(e) = self.accept_poller.delete(fd) {
            log::warn!("io_uring: deregistering listener {}: {e}", id.0);
        }
    }

    /// The listeners' epoll instance is readable: accept from the listeners it names.
    pub(super) fn on_accept<S: Sink>(&mut self, res: i32, more: bool, sink: &mut S) {
        if !more {
            self.accept_armed = false;
        }
        if res >= 0 {
            match self.accept_poller.wait(Some(std::time::Duration::ZERO)) {
                Ok(n) => {
                    for i in 0..n {
                        if let (Token::Listener(index), _) = self.accept_poller.event(i) {
                            self.listeners.on_ready(index, sink);
                        }
                    }
                }
                Err(e) => log::error!("io_uring: epoll_wait on the listeners failed: {e}"),
            }
        } else {
            // Cancelled at shutdown; anything else would fail again if re-armed.
            if res != -libc::ECANCELED {
                log::error!(
                    "io_uring: the poll on the listeners failed: {}; no more accepts",
                    cqe_error(res)
                );
            }
            return;
        }
        if !self.accept_armed && !self.shutting_down && !self.listeners.is_empty() {
            self.arm_accept();
        }
    }

    /// Arms the multishot poll on the listeners' epoll instance.
    pub(super) fn arm_accept(&mut self) {
        let sqe = opcode::PollAdd::new(Fd(self.accept_poller.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(Tag::plain(Kind::Accept).encode());
        // SAFETY: no pointers; the epoll descriptor lives as long as `self`, and the ring
        // keeps its own reference while the poll is armed.
        unsafe { self.push(sqe) };
        self.accept_armed = true;
    }
}
