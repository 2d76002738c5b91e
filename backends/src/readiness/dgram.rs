//! One datagram socket's state: receiving in `recvmmsg` batches until `EAGAIN`, within the
//! same budgets as a stream, and a `send_to` batch going out in `sendmmsg` batches.
//!
//! | field      | meaning                                                                   |
//! |------------|---------------------------------------------------------------------------|
//! | `readable` | the kernel may hold datagrams or an error we have not read (edge seen)     |
//! | `paused`   | the loop returned [`Flow::Pause`]; nothing is received until `resume`     |
//! | `failed`   | `failed` reported or queued: no more receiving or sending                 |
//! | `queued`   | the socket is on the backend's ready list                                 |
//! | `out`      | the `send_to` batch in flight, if any                                     |
//!
//! Sending, per call of [`Dgram::flush`], for the first datagram not yet handed over:
//!
//! | `sendmmsg` returns          | then                                                        |
//! |-----------------------------|-------------------------------------------------------------|
//! | `k` sent                    | the next `k` are in the kernel; a doubt is resolved as the  |
//! |                             | socket's error (`datagram_error(None)`)                     |
//! | `EAGAIN`                    | wait for writability and go on from there                   |
//! | `EINTR`                     | again                                                       |
//! | a broken socket             | `failed`, the batch dropped                                 |
//! | another error, no doubt     | doubt: try the same datagram once more                      |
//! | another error, in doubt     | the datagram's: `datagram_error(to)` (and the first error   |
//! |                             | too if it differed), skip it                                |
//!
//! The doubt is there because a send also returns the socket's pending error (an ICMP port
//! unreachable for an earlier datagram on a connected socket) and does not send: a datagram
//! that goes on the second try was not refused, and is not dropped for another's error.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use super::conn::ReadEnd;
use super::mmsg::{self, RecvArea};
use super::report::Report;
use crate::contract::{Datagram, Flow, Id, Sink};
use crate::selector::{Native, Selector};
use crate::sys;

/// What one datagram counts for against `read_chunk` and `poll_read_budget` at the least,
/// however small: about what the kernel charges a small datagram against the socket's receive
/// buffer (832 bytes on 6.18 loopback). A pass over small or empty datagrams then ends after
/// as many as the budget's bytes would hold in the kernel (1,024 for the default 1 MiB
/// `read_chunk`), not after millions.
pub(super) const MIN_CHARGE: usize = 1024;

/// A registered datagram socket. `fd` is lent by the loop, which keeps it open until `closed`.
#[derive(Debug)]
pub(super) struct Dgram {
    pub(super) id: Id,
    fd: RawFd,
    readable: bool,
    paused: bool,
    failed: bool,
    pub(super) queued: bool,
    out: Option<Outgoing>,
}

/// A `send_to` batch on its way into the kernel.
#[derive(Debug)]
struct Outgoing {
    batch: Vec<Datagram>,
    /// The first datagram neither in the kernel nor refused.
    next: usize,
    /// The bytes of the whole batch, for `sent`.
    total: usize,
    /// The error the last try at `batch[next]` returned, while it is not known whether it
    /// was the datagram's or the socket's.
    doubt: Option<io::Error>,
}

impl Dgram {
    pub(super) fn new(id: Id, fd: RawFd) -> Self {
        Dgram {
            id,
            fd,
            readable: false,
            paused: false,
            failed: false,
            queued: false,
            out: None,
        }
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the loop lent this descriptor in `add_datagram` and keeps it open until we
        // report `closed`; a `Dgram` exists only between those two points (`close` removes it
        // first).
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    /// Whether a receive pass would do anything.
    pub(super) fn wants_read(&self) -> bool {
        self.readable && !self.paused && !self.failed
    }

    /// Records an event's readiness (an error counts: the receive returns it).
    pub(super) fn on_ready(&mut self, readable: bool) {
        self.readable |= readable;
    }

    /// Resumes receiving after [`Flow::Pause`]; the socket counts as readable, since the
    /// datagrams already queued raise no new edge.
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

    /// Starts sending `batch`; what it produces (at once or later) goes to `emit`.
    pub(super) fn send(&mut self, batch: Vec<Datagram>, emit: &mut impl FnMut(Report)) {
        if self.failed {
            log::debug!(
                "{}: send_to on failed socket {:?} dropped",
                Native::KIND,
                self.id
            );
            return;
        }
        let total = batch.iter().map(|d| d.data.len()).sum();
        match &mut self.out {
            Some(out) => {
                debug_assert!(
                    false,
                    "{}: send_to on {:?} while one is in flight",
                    Native::KIND,
                    self.id
                );
                out.total += total;
                out.batch.extend(batch);
            }
            None => {
                self.out = Some(Outgoing {
                    batch,
                    next: 0,
                    total,
                    doubt: None,
                })
            }
        }
        self.flush(emit);
    }

    /// Whether a batch waits for room in the socket buffer.
    pub(super) fn sending(&self) -> bool {
        self.out.is_some()
    }

    /// Hands the kernel what remains of the batch in flight (see the table above), until it
    /// is all sent or refused (then `sent`), the socket buffer is full, or the socket broke.
    pub(super) fn flush(&mut self, emit: &mut impl FnMut(Report)) {
        let Some(mut out) = self.out.take() else {
            return;
        };
        while out.next < out.batch.len() {
            match mmsg::send(self.fd(), &out.batch[out.next..]) {
                Ok(k) => {
                    if let Some(e) = out.doubt.take() {
                        emit(Report::DatagramError(self.id, None, e));
                    }
                    out.next += k;
                }
                Err(e) if sys::is_interrupted(&e) => {}
                Err(e) if sys::is_would_block(&e) => {
                    self.out = Some(out);
                    return;
                }
                Err(e) if broken_for_send(&e) => return emit(self.fail(e)),
                Err(e) => match out.doubt.take() {
                    None => out.doubt = Some(e),
                    Some(first) => {
                        if first.raw_os_error() != e.raw_os_error() {
                            emit(Report::DatagramError(self.id, None, first));
                        }
                        emit(Report::DatagramError(self.id, out.batch[out.next].to, e));
                        out.next += 1;
                    }
                },
            }
        }
        let bufs = out.batch.into_iter().map(|d| d.data).collect();
        emit(Report::Sent(self.id, out.total, bufs));
    }

    /// Receives until `EAGAIN`, [`Flow::Pause`], a broken socket, or `budget` bytes (each
    /// datagram counting at least [`MIN_CHARGE`]), reporting each datagram. Returns how it
    /// ended and what it counted.
    ///
    /// A pause takes effect after the batch in hand: those datagrams are out of the kernel and
    /// the buffers are the loop's, so they are delivered (the contract allows it).
    pub(super) fn receive<S: Sink>(
        &mut self,
        area: &mut RecvArea,
        budget: usize,
        sink: &mut S,
    ) -> (ReadEnd, usize) {
        let budget = budget.max(1);
        let mut left = budget;
        while self.wants_read() {
            let max = area.batch().min(left.div_ceil(MIN_CHARGE));
            match area.recv(self.fd(), max) {
                Ok(k) => {
                    // Fewer than asked for: the queue was empty, or a message failed and the
                    // kernel kept its error for the next call. An error already pending when
                    // the call began comes back from its first message, so one kept back
                    // arrived during the call, after the last wait: its edge is still due.
                    if k < max {
                        self.readable = false;
                    }
                    for i in 0..k {
                        let (from, data, truncated) = area.datagram(i);
                        left = left.saturating_sub(data.len().max(MIN_CHARGE));
                        match from {
                            Ok(from) => {
                                if sink.datagram(self.id, from, data, truncated) == Flow::Pause {
                                    self.paused = true;
                                }
                            }
                            Err(e) => sink.datagram_error(self.id, None, e),
                        }
                    }
                }
                Err(e) if sys::is_would_block(&e) => self.readable = false,
                Err(e) if sys::is_interrupted(&e) => {}
                Err(e) if broken_for_receive(&e) => self.fail(e).deliver(sink),
                // From the network (ICMP), for the socket: reported, and receiving goes on.
                // It counts, so that an error that kept coming back could not hold the pass.
                Err(e) => {
                    left = left.saturating_sub(MIN_CHARGE);
                    sink.datagram_error(self.id, None, e);
                }
            }
            if left == 0 && self.wants_read() {
                return (ReadEnd::Budget, budget);
            }
        }
        (ReadEnd::Done, budget - left)
    }
}

/// Receive errors that say the socket cannot receive at all (a descriptor that is not a
/// socket, a bug): it fails. Anything else a datagram socket's receive returns is an error the
/// network reported (`ECONNREFUSED`, `EHOSTUNREACH`, `ENETUNREACH`, `EHOSTDOWN`, `ENONET`,
/// `ENOPROTOOPT`, `EPROTO`, `EMSGSIZE`, `EOPNOTSUPP`, ... from ICMP), consumed by being
/// returned.
fn broken_for_receive(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL)
    )
}

/// Send errors that say the socket cannot send at all: it fails. Anything else is about the
/// datagram (`EMSGSIZE`, `ENETUNREACH`, `EHOSTUNREACH`, `EACCES` for a broadcast without
/// `SO_BROADCAST`, `EPERM` from a firewall, `EAFNOSUPPORT`, `EDESTADDRREQ` for `None` on a
/// socket that is not connected, `EINVAL`, `ENOBUFS`, ...) or a pending network error.
fn broken_for_send(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EPIPE)
    )
}
