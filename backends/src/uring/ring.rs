//! The ring itself: queueing submissions, submitting and waiting (`io_uring_enter`), and
//! reaping completions within the poll's read budget. What a completion means is decided by
//! its kind in `mod.rs` (`Uring::complete`).

use std::io;
use std::time::Duration;

use io_uring::squeue;

use super::Uring;
use crate::contract::Sink;

/// Rounds of draining the completion queue per poll (new completions can keep arriving
/// without `DEFER_TASKRUN`; the loop must get back to its own work).
const MAX_ROUNDS: usize = 4;

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
        // A `send_to` chain that moved on runs to its end in this enter (see `sendmsg.rs`).
        let chain = self.chain_wait();
        let sub = self.ring.submitter();
        let r = match (chain, wait) {
            (Some(n), _) => timed_enter(&sub, to_submit, n, flags, Duration::ZERO),
            (None, None) => {
                // SAFETY: no argument; every queued entry's pointers are kept valid by the
                // code that pushed it, until its completion.
                unsafe { sub.enter::<libc::sigset_t>(to_submit, 1, flags, None) }
            }
            (None, Some(d)) if d.is_zero() => {
                // SAFETY: as above.
                unsafe { sub.enter::<libc::sigset_t>(to_submit, 0, flags, None) }
            }
            (None, Some(d)) => timed_enter(&sub, to_submit, 1, flags, d),
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

    /// Handles the backlog and whatever is in the completion queue, until the poll's read
    /// budget is spent; completions left over go back to the backlog for the next poll.
    pub(super) fn reap<S: Sink>(&mut self, sink: &mut S) {
        let mut batch = std::mem::take(&mut self.scratch);
        batch.append(&mut self.backlog);
        self.poll_read = 0;
        for round in 0..MAX_ROUNDS {
            if self.poll_read >= self.poll_read_budget {
                // Whatever is still in the completion queue is there for the next poll.
                break;
            }
            batch.extend(self.ring.completion());
            if batch.is_empty() {
                break;
            }
            let mut cqes = batch.drain(..);
            for cqe in cqes.by_ref() {
                self.complete(cqe, sink);
                if self.poll_read >= self.poll_read_budget {
                    break;
                }
            }
            let over = !cqes.as_slice().is_empty();
            self.backlog.extend(cqes);
            self.rearm_starved();
            if !self.dgram_starved.is_empty() {
                self.rearm_starved_dgrams();
            }
            self.bufs.replenish();
            if over {
                break;
            }
            if round + 1 < MAX_ROUNDS && self.ring.completion().is_empty() {
                break;
            }
        }
        self.scratch = batch;
        // Also when nothing completed: a connection re-armed last time may have had nothing
        // to read (see `rearm_starved`).
        self.rearm_starved();
        self.bufs.adapt();
    }
}

/// `io_uring_enter` waiting for `min_complete` completions (the kernel runs deferred task
/// work until it has as many) but at most `d`, passed with `EXT_ARG`.
fn timed_enter(
    sub: &io_uring::Submitter<'_>,
    to_submit: u32,
    min_complete: u32,
    flags: u32,
    d: Duration,
) -> io::Result<usize> {
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
    // SAFETY: `arg` is the `io_uring_getevents_arg` that `ENTER_EXT_ARG` announces, passed
    // with its size; it and the timespec it points to outlive the call. Every queued entry's
    // pointers are kept valid by the code that pushed it, until its completion.
    unsafe { sub.enter(to_submit, min_complete, flags | ENTER_EXT_ARG, Some(&arg)) }
}
