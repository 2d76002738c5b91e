//! Sending datagrams: a `send_to` batch is one `SENDMSG` per datagram, each with a `msghdr`,
//! an iovec and a destination address of its own, all in a [`Batch`] boxed in the socket's
//! state until the last completion is reaped.
//!
//! * **Order**: the datagrams of a batch are submitted together as one chain of linked
//!   entries (`IOSQE_IO_LINK`), so the kernel sends each only after the one before it
//!   completed: unlinked, a datagram that met a full send buffer would wait for room while the
//!   next one, issued a moment later, might already find some and overtake it. A chain holds
//!   at most [`MAX_CHAIN`] datagrams, and never more than half the submission queue, so that
//!   it is never split between two submissions (which would make two chains that run side by
//!   side); the next chain is submitted when the last completion of the one before arrives.
//!   The kernel issues each link from deferred task work, one round per wait for a
//!   completion, so the enter after a chain moved asks for all its completions at once
//!   ([`Uring::chain_wait`]).
//! * **Failures**: a datagram that fails (`EMSGSIZE`, an unreachable destination, a pending
//!   ICMP error, ...) is reported with [`Sink::datagram_error`] and its destination. The link
//!   makes the rest of its chain fail with `ECANCELED`; they are submitted again, from the
//!   first of them, as a new chain. Only a socket that cannot send at all (`EBADF`,
//!   `ENOTSOCK`, `EFAULT`) is [`Sink::failed`].
//! * When every datagram is done, [`Sink::sent`] reports the batch with its total length and
//!   the bytes are handed back with [`Sink::reclaim`].
//! * **Close**: the chain's current datagram is cancelled by `user_data` (the link then fails
//!   the rest of the chain at once); `closed` waits until every completion is reaped
//!   (`close.rs`).

use std::net::SocketAddr;

use bytes::Bytes;
use io_uring::opcode;
use io_uring::squeue::Flags;
use io_uring::types::Fd;

use super::state::Pending;
use super::user_data::{cqe_error, Kind, Tag};
use super::Uring;
use crate::contract::{Datagram, Id, Sink};

/// The most datagrams in one chain of linked submissions.
const MAX_CHAIN: usize = 64;

/// One datagram of a batch: what the kernel reads while its `SENDMSG` is in flight.
struct Msg {
    /// The payload the iovec points into (frozen: it cannot move or change).
    data: Bytes,
    to: Option<SocketAddr>,
    /// The destination the `msghdr` points at; `None` for the connected peer.
    addr: Option<socket2::SockAddr>,
    iov: libc::iovec,
    hdr: libc::msghdr,
    /// Its completion arrived (sent, or failed and reported).
    done: bool,
}

/// A `send_to` batch in flight: the datagrams and their kernel structures, boxed in the
/// datagram socket's state. The `msghdr`s point at the iovecs and addresses next to them in
/// `msgs`, whose buffer is allocated once in [`Batch::new`] and never grows, so every address
/// the kernel was given stays valid until the batch is dropped, after its last completion.
pub(super) struct Batch {
    msgs: Vec<Msg>,
    /// The first datagram not submitted yet.
    next: usize,
    /// Submitted and not completed.
    inflight: usize,
    /// The first datagram whose link was broken by a failure before it (`ECANCELED`), to
    /// submit again once the chain is over.
    again: Option<usize>,
    /// The datagrams' total length, for `sent`.
    pub total: usize,
}

impl Batch {
    fn new(batch: Vec<Datagram>) -> Box<Batch> {
        let mut msgs: Vec<Msg> = batch
            .into_iter()
            .map(|d| Msg {
                addr: d.to.map(socket2::SockAddr::from),
                to: d.to,
                iov: libc::iovec {
                    iov_base: d.data.as_ptr() as *mut libc::c_void,
                    iov_len: d.data.len(),
                },
                data: d.data,
                // SAFETY: `msghdr` is a plain C struct for which all-zero bytes is a valid
                // value (null pointers, zero lengths).
                hdr: unsafe { std::mem::zeroed() },
                done: false,
            })
            .collect();
        // The pointers are taken once the vector has its final buffer.
        for m in &mut msgs {
            m.hdr.msg_iov = &mut m.iov;
            m.hdr.msg_iovlen = 1;
            if let Some(a) = &m.addr {
                m.hdr.msg_name = a.as_ptr() as *mut libc::c_void;
                m.hdr.msg_namelen = a.len();
            }
        }
        let total = msgs.iter().map(|m| m.data.len()).sum();
        Box::new(Batch {
            msgs,
            next: 0,
            inflight: 0,
            again: None,
            total,
        })
    }

    /// The datagram the kernel is at: the first submitted one not completed.
    pub fn current(&self) -> Option<usize> {
        if self.inflight == 0 {
            return None;
        }
        self.msgs[..self.next].iter().position(|m| !m.done)
    }

    fn take_bytes(&mut self) -> Vec<Bytes> {
        self.msgs
            .iter_mut()
            .map(|m| std::mem::take(&mut m.data))
            .collect()
    }
}

impl Uring {
    /// Whether the next `io_uring_enter` should run the `send_to` chains to their end: the
    /// number of their datagrams still to complete, when a chain was submitted or moved on
    /// since the last enter. The kernel issues a chain's next datagram from deferred task
    /// work once the one before completed, and a wait for one completion runs one round of
    /// it: a chain of 64 took 62 polls. Asking for that many completions, with a zero timeout,
    /// runs it through in one enter (measured: 1 poll); a chain waiting for room in the send
    /// buffer makes no progress, and the loop then waits as usual until it moves again.
    #[inline]
    pub(super) fn chain_wait(&mut self) -> Option<u32> {
        if !std::mem::take(&mut self.chain_moved) || self.chain_ops == 0 {
            return None;
        }
        let most = self.ring.params().cq_entries();
        Some(u32::try_from(self.chain_ops).unwrap_or(u32::MAX).min(most))
    }

    /// [`Backend::send_to`](crate::Backend::send_to).
    pub(super) fn queue_send_to(&mut self, id: Id, batch: Vec<Datagram>) {
        let Some(d) = self.dgrams.get_mut(id) else {
            log::debug!("io_uring: send_to on unknown datagram socket {id:?} dropped");
            return;
        };
        if d.closing || d.failed {
            return;
        }
        if d.batch.is_some() {
            log::error!("io_uring: second send_to batch in flight on {id:?}; dropped (contract)");
            debug_assert!(false, "second send_to batch in flight on {id:?}");
            return;
        }
        if batch.is_empty() {
            self.pending.push_back(Pending::Sent(id, 0));
            return;
        }
        d.batch = Some(Batch::new(batch));
        self.submit_chain(id);
    }

    /// Submits the next chain of the batch of `id`.
    fn submit_chain(&mut self, id: Id) {
        let room = self.ring.submission().capacity() / 2;
        let Some(d) = self.dgrams.get_mut(id) else {
            return;
        };
        let Some(b) = d.batch.as_mut() else {
            return;
        };
        let (start, end) = (b.next, b.msgs.len().min(b.next + MAX_CHAIN.min(room)));
        let mut chain = std::mem::take(&mut self.chain);
        for (k, m) in b.msgs.iter().enumerate().take(end).skip(start) {
            let sqe = opcode::SendMsg::new(Fd(d.fd), &m.hdr)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
                .user_data(Tag::datagram(id.index(), k).encode());
            chain.push(if k + 1 < end {
                sqe.flags(Flags::IO_LINK)
            } else {
                sqe
            });
        }
        let n = end - start;
        b.next = end;
        b.inflight += n;
        d.ops += n as u32;
        self.chain_ops += n;
        self.chain_moved = true;
        // The whole chain in one submission: make room first. A flush that met `EBUSY` only
        // reaped completions, and the next one submits.
        for _ in 0..8 {
            let free = {
                let sq = self.ring.submission();
                sq.capacity() - sq.len()
            };
            if free >= n {
                break;
            }
            self.flush();
        }
        for sqe in chain.drain(..) {
            // SAFETY: the `msghdr`, its iovec, the destination and the bytes belong to the
            // boxed batch owned by the socket's entry, which is neither moved nor dropped
            // before this operation's completion is reaped (the entry is only forgotten once
            // its `ops` is zero, the batch only dropped once its `inflight` is zero).
            unsafe { self.push(sqe) };
        }
        self.chain = chain;
    }

    /// One datagram's `SENDMSG` completed.
    pub(super) fn on_send_to<S: Sink>(&mut self, tag: Tag, res: i32, sink: &mut S) {
        let position = tag.generation as usize;
        let Some(d) = self.dgrams.by_index(tag.index) else {
            log::error!("io_uring: datagram send completion for unknown socket {tag:?}");
            return;
        };
        let id = d.id;
        d.ops -= 1;
        let Some(b) = d.batch.as_mut().filter(|b| position < b.msgs.len()) else {
            log::error!("io_uring: datagram send completion outside the batch of {id:?}");
            return self.after_dgram_op(id, sink);
        };
        b.inflight -= 1;
        self.chain_ops -= 1;
        self.chain_moved = true;
        let mut cancel_recv = false;
        let m = &mut b.msgs[position];
        if d.closing || d.failed || res >= 0 {
            m.done = true;
        } else if res == -libc::ECANCELED {
            // The link to an earlier datagram that failed: this one was not sent.
            b.again = Some(b.again.map_or(position, |a| a.min(position)));
        } else if matches!(-res, libc::EBADF | libc::ENOTSOCK | libc::EFAULT) {
            m.done = true;
            d.failed = true;
            cancel_recv = d.recv_armed && d.cancels == 0;
            sink.failed(id, cqe_error(res));
        } else {
            m.done = true;
            sink.datagram_error(id, m.to, cqe_error(res));
        }
        if b.inflight == 0 {
            if d.closing || d.failed {
                d.batch = None;
            } else if let Some(from) = b.again.take() {
                b.next = from;
                self.submit_chain(id);
            } else if b.next < b.msgs.len() {
                self.submit_chain(id);
            } else if let Some(mut b) = d.batch.take() {
                sink.sent(id, b.total);
                sink.reclaim(b.take_bytes());
            }
        }
        if cancel_recv {
            self.cancel_dgram_op(id, Tag::conn(Kind::RecvMsg, id));
        }
        self.after_dgram_op(id, sink);
    }
}
