//! One connection's state and its two state machines: reading until `EAGAIN` (with a budget)
//! and writing a send batch until it is all in the kernel.
//!
//! | field      | meaning                                                                   |
//! |------------|---------------------------------------------------------------------------|
//! | `readable` | the kernel may hold bytes, a FIN or an error we have not read (edge seen)  |
//! | `closing`  | `RDHUP`/`HUP`/`ERR` seen: read until 0 or an error, short reads prove nothing |
//! | `paused`   | the loop returned [`Flow::Pause`]; nothing is read until `resume`          |
//! | `read_done`| `eof` reported: nothing more to read                                      |
//! | `failed`   | `failed` reported or queued: no more reading or writing                   |
//! | `queued`   | the connection is on the backend's ready list                             |
//! | `out`      | the send in flight, if any                                                 |

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use bytes::Bytes;

use super::report::Report;
use crate::contract::{Flow, Id, Sink};
use crate::selector::{Native, Selector};
use crate::sys::{self, SendQueue};

/// How a read pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadEnd {
    /// Drained, paused, at end of stream, or failed: nothing to come back for.
    Done,
    /// The per-poll budget is spent and the socket may hold more: come back next poll.
    Budget,
}

/// A registered connection. `fd` is lent by the loop, which keeps it open until `closed`.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) id: Id,
    fd: RawFd,
    pub(super) readable: bool,
    closing: bool,
    paused: bool,
    read_done: bool,
    failed: bool,
    pub(super) queued: bool,
    out: Option<SendQueue>,
}

impl Conn {
    pub(super) fn new(id: Id, fd: RawFd) -> Self {
        Conn {
            id,
            fd,
            readable: false,
            closing: false,
            paused: false,
            read_done: false,
            failed: false,
            queued: false,
            out: None,
        }
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the loop lent this descriptor in `add_conn` and keeps it open until we report
        // `closed`; a `Conn` exists only between those two points (`close` removes it first).
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    /// Whether a read pass would do anything.
    pub(super) fn wants_read(&self) -> bool {
        self.readable && !self.paused && !self.read_done && !self.failed
    }

    /// Records an event's readiness; the caller queues the connection if it now wants a read.
    pub(super) fn on_ready(&mut self, readable: bool, closing: bool) {
        self.readable |= readable;
        self.closing |= closing;
    }

    /// Resumes reading after [`Flow::Pause`]. Edge-triggered readiness is not signalled again
    /// for bytes that were already there, so the connection counts as readable.
    pub(super) fn resume(&mut self) -> bool {
        if !self.paused {
            return false;
        }
        self.paused = false;
        self.readable = true;
        self.wants_read()
    }

    fn fail(&mut self, e: io::Error) -> Report {
        self.failed = true;
        self.readable = false;
        self.out = None;
        Report::Failed(self.id, e)
    }

    /// Reads into `buf` until `EAGAIN`, [`Flow::Pause`], end of stream, an error, or `budget`
    /// bytes, reporting each read as it happens. Returns how it ended and the bytes read.
    pub(super) fn read<S: Sink>(
        &mut self,
        buf: &mut [u8],
        budget: usize,
        sink: &mut S,
    ) -> (ReadEnd, usize) {
        let budget = budget.max(1);
        let mut left = budget;
        while self.wants_read() {
            match sys::recv(self.fd(), buf) {
                Ok(0) => {
                    self.read_done = true;
                    self.readable = false;
                    sink.eof(self.id);
                }
                Ok(n) => {
                    // Where the selector says so, a short read proves the queue was empty:
                    // anything arriving later raises a new edge. A pending FIN is the
                    // exception.
                    if Native::SHORT_READ_DRAINS && n < buf.len() && !self.closing {
                        self.readable = false;
                    }
                    if sink.received(self.id, &buf[..n]) == Flow::Pause {
                        self.paused = true;
                    }
                    left = left.saturating_sub(n);
                    if left == 0 && self.wants_read() {
                        return (ReadEnd::Budget, budget);
                    }
                }
                Err(e) if sys::is_would_block(&e) => self.readable = false,
                Err(e) if sys::is_interrupted(&e) => {}
                Err(e) => self.fail(e).deliver(sink),
            }
        }
        (ReadEnd::Done, budget - left)
    }

    /// Starts a send; `Some` when it finished (or failed) at once.
    pub(super) fn send(&mut self, bufs: Vec<Bytes>) -> Option<Report> {
        if self.failed {
            log::debug!(
                "{}: send on failed connection {:?} dropped",
                Native::KIND,
                self.id
            );
            return None;
        }
        match &mut self.out {
            Some(out) => {
                debug_assert!(
                    false,
                    "{}: send on {:?} while a send is in flight",
                    Native::KIND,
                    self.id
                );
                out.extend(bufs);
            }
            None => self.out = Some(SendQueue::new(bufs)),
        }
        self.flush()
    }

    /// Whether a send waits for room in the socket buffer.
    pub(super) fn sending(&self) -> bool {
        self.out.is_some()
    }

    /// Writes what remains of the send in flight; `Some` once it is all in the kernel or failed.
    pub(super) fn flush(&mut self) -> Option<Report> {
        let mut out = self.out.take()?;
        match out.write_to(self.fd()) {
            Ok(true) => Some(Report::Sent(self.id, out.total(), out.take_sent())),
            Ok(false) => {
                self.out = Some(out);
                None
            }
            Err(e) => Some(self.fail(e)),
        }
    }
}
