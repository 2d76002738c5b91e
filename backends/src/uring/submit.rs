//! Submitting and waiting (`io_uring_enter`), arming the long-lived multishot operations, and
//! the shutdown sequence (cancel, reap, unregister, destroy the ring, free the buffers).

use std::io;
use std::mem::ManuallyDrop;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd};
use io_uring::{opcode, squeue};

use super::bufring;
use super::ops::{Kind, Tag};
use super::Uring;
use crate::contract::{ConnId, Flow, ListenerId, Sink};
use crate::socket::{Addr, Socket};

impl Uring {
    /// Queues one submission, flushing the queue to the kernel first when it is full.
    ///
    /// # Safety
    /// Every pointer in `sqe` must stay valid until its last completion is reaped.
    pub(super) unsafe fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: the caller guarantees the entry's pointers outlive the operation.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                self.inflight += 1;
                return;
            }
            self.flush();
        }
    }

    /// Submits what is queued without waiting; on `EBUSY`/`EAGAIN` moves completions to the
    /// backlog so that the kernel can go on.
    pub(super) fn flush(&mut self) {
        match self.ring.submit() {
            Ok(_) => {}
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                    self.backlog.extend(self.ring.completion());
                    // GETEVENTS with a zero wait flushes overflowed completions and task work.
                    let ts = io_uring::types::Timespec::new();
                    let args = io_uring::types::SubmitArgs::new().timespec(&ts);
                    let _ = self.ring.submitter().submit_with_args(1, &args);
                    self.backlog.extend(self.ring.completion());
                }
                _ => log::error!("io_uring submit failed: {e}"),
            },
        }
    }

    /// Submits what is queued and waits up to `wait` for a completion.
    pub(super) fn enter(&mut self, wait: Option<Duration>) -> io::Result<()> {
        let sub = self.ring.submitter();
        let r = match wait {
            None => sub.submit_and_wait(1),
            Some(d) => {
                let ts = io_uring::types::Timespec::new()
                    .sec(d.as_secs())
                    .nsec(d.subsec_nanos());
                let args = io_uring::types::SubmitArgs::new().timespec(&ts);
                sub.submit_with_args(1, &args)
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    /// Arms the multishot poll on the waker's eventfd.
    pub(super) fn arm_wake(&mut self) {
        let sqe = opcode::PollAdd::new(Fd(self.waker.fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(Tag::plain(Kind::Wake).encode());
        // SAFETY: no pointers; the eventfd lives as long as `self.waker`, longer than the ring.
        unsafe { self.push(sqe) };
        self.wake_armed = true;
    }

    /// Arms the multishot accept of listener `index` (if it is still registered).
    pub(super) fn arm_accept(&mut self, index: usize) {
        let Some(Some(l)) = self.listeners.get(index) else {
            return;
        };
        let sqe = opcode::AcceptMulti::new(Fd(l.fd))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(Tag::listener(ListenerId(index), l.epoch).encode());
        // SAFETY: no pointers (multishot accept asks for no address).
        unsafe { self.push(sqe) };
    }
}

/// Swallows what the backend reports while it shuts down (accepted sockets are closed).
struct DropSink;

impl Sink for DropSink {
    fn accepted(&mut self, _: ListenerId, _: Socket, _: Addr) {}
    fn accept_error(&mut self, _: ListenerId, _: io::Error) {}
    fn received(&mut self, _: ConnId, _: &[u8]) -> Flow {
        Flow::Continue
    }
    fn eof(&mut self, _: ConnId) {}
    fn sent(&mut self, _: ConnId, _: usize) {}
    fn failed(&mut self, _: ConnId, _: io::Error) {}
    fn closed(&mut self, _: ConnId) {}
    fn woken(&mut self) {}
}

impl Drop for Uring {
    fn drop(&mut self) {
        self.shutting_down = true;
        self.listeners.clear();
        for c in self.conns.iter_mut().flatten() {
            c.closing = true;
        }
        if self.inflight > 0 {
            let sqe = opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(Tag::plain(Kind::Cancel).encode());
            // SAFETY: no pointers.
            unsafe { self.push(sqe) };
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.inflight > 0 || !self.backlog.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let _ = self.enter(Some((deadline - now).min(Duration::from_millis(50))));
            self.reap(&mut DropSink);
        }
        let clean = self.inflight == 0;
        if let Err(e) = self.ring.submitter().unregister_buf_ring(bufring::BGID) {
            log::debug!("io_uring: unregistering the buffer ring failed: {e}");
        }
        // SAFETY: `ring` is dropped exactly once, here, and not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.ring) };
        if clean {
            // SAFETY: dropped once, after the ring is gone and with nothing in flight, so the
            // kernel no longer writes into the buffers.
            unsafe { ManuallyDrop::drop(&mut self.bufs) };
        } else {
            log::warn!(
                "io_uring: {} operations still in flight at shutdown; leaking the receive \
                 buffers rather than freeing memory the kernel may write",
                self.inflight
            );
        }
    }
}
