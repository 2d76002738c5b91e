//! Submitting and waiting (`io_uring_enter`), arming the long-lived multishot operations, and
//! the shutdown sequence (cancel, reap, unregister, destroy the ring, free the buffers).

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd};
use io_uring::{opcode, squeue};

use super::bufring;
use super::ops::{Kind, Tag};
use super::Uring;
use crate::contract::{Flow, Id, Sink};
use crate::socket::{Addr, Socket};

/// `IORING_ENTER_GETEVENTS`: run the ring's deferred work and wait for `min_complete`.
const ENTER_GETEVENTS: u32 = 1 << 0;
/// `IORING_ENTER_EXT_ARG`: the argument is an `io_uring_getevents_arg` (carrying a timeout).
const ENTER_EXT_ARG: u32 = 1 << 3;
/// `IORING_ENTER_NO_IOWAIT` (Linux 6.15): a loop waiting for traffic is idle, not waiting for
/// I/O. Without it a server on io_uring shows its idle time as `iowait` in `top`.
pub(super) const ENTER_NO_IOWAIT: u32 = 1 << 7;

/// `struct io_uring_getevents_arg` (`linux/io_uring.h`).
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// `struct __kernel_timespec`.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

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

    /// Tops the buffer ring up before the kernel sees the queued submissions (re-armed
    /// receives take buffers as soon as it does); the re-arms are no longer pending after.
    fn before_submit(&mut self) {
        self.bufs.replenish();
        self.rearms_queued = 0;
    }

    /// Submits what is queued without waiting; on `EBUSY`/`EAGAIN` moves completions to the
    /// backlog so that the kernel can go on.
    pub(super) fn flush(&mut self) {
        self.before_submit();
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

    /// Submits what is queued, runs the ring's deferred work and waits up to `wait` for a
    /// completion (`None`: no limit). A zero `wait` arms no timer: it is a plain
    /// `GETEVENTS` with nothing to wait for, where a zero timeout would set one up.
    pub(super) fn enter(&mut self, wait: Option<Duration>) -> io::Result<()> {
        self.before_submit();
        let to_submit = u32::try_from(self.ring.submission().len()).unwrap_or(u32::MAX);
        let flags = ENTER_GETEVENTS | self.enter_flags;
        let sub = self.ring.submitter();
        let r = match wait {
            None => {
                // SAFETY: no argument; every queued entry's pointers are kept valid by the
                // code that pushed it, until its completion.
                unsafe { sub.enter::<libc::sigset_t>(to_submit, 1, flags, None) }
            }
            Some(d) if d.is_zero() => {
                // SAFETY: as above.
                unsafe { sub.enter::<libc::sigset_t>(to_submit, 0, flags, None) }
            }
            Some(d) => {
                let ts = KernelTimespec {
                    tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                    tv_nsec: i64::from(d.subsec_nanos()),
                };
                let arg = GeteventsArg {
                    sigmask: 0,
                    sigmask_sz: 0,
                    min_wait_usec: 0,
                    ts: std::ptr::addr_of!(ts) as u64,
                };
                // SAFETY: `arg` is the `io_uring_getevents_arg` that `ENTER_EXT_ARG` announces,
                // passed with its size; it and the timespec it points to outlive the call.
                unsafe { sub.enter(to_submit, 1, flags | ENTER_EXT_ARG, Some(&arg)) }
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

    /// The first `io_uring_enter`, at start-up: asks for `IORING_ENTER_NO_IOWAIT` and drops
    /// it if the kernel does not know it (before 6.15 it answers `EINVAL` and does nothing).
    pub(super) fn first_enter(&mut self) -> io::Result<()> {
        self.enter_flags = ENTER_NO_IOWAIT;
        match self.enter(Some(Duration::ZERO)) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                log::debug!("io_uring: no IORING_ENTER_NO_IOWAIT here; waits count as I/O wait");
                self.enter_flags = 0;
                self.enter(Some(Duration::ZERO))
            }
            r => r,
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

/// Swallows what the backend reports while it shuts down (accepted sockets are closed).
struct DropSink;

impl Sink for DropSink {
    fn accepted(&mut self, _: Id, _: Socket, _: Addr) {}
    fn accept_error(&mut self, _: Id, _: io::Error) {}
    fn received(&mut self, _: Id, _: &[u8]) -> Flow {
        Flow::Continue
    }
    fn eof(&mut self, _: Id) {}
    fn sent(&mut self, _: Id, _: usize) {}
    fn failed(&mut self, _: Id, _: io::Error) {}
    fn closed(&mut self, _: Id) {}
    fn woken(&mut self) {}
    fn datagram(&mut self, _: Id, _: std::net::SocketAddr, _: &[u8], _: bool) -> Flow {
        Flow::Continue
    }
    fn datagram_error(&mut self, _: Id, _: Option<std::net::SocketAddr>, _: io::Error) {}
    fn connected(&mut self, _: Id, _: io::Result<()>) {}
}

impl Drop for Uring {
    fn drop(&mut self) {
        self.shutting_down = true;
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
