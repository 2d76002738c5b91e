//! The cross-thread waker: an eventfd the loop watches with a multishot poll, re-armed when
//! the kernel ends it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::opcode;
use io_uring::types::Fd;

use super::user_data::{Kind, Tag};
use super::Uring;
use crate::contract::{Sink, Wake};

/// Writes to an eventfd; coalesced with a flag so that a burst of wake-ups costs one write.
pub(super) struct EventFdWaker {
    fd: OwnedFd,
    /// Set by the first `wake` after the loop drained the eventfd.
    pending: AtomicBool,
}

impl EventFdWaker {
    pub fn new() -> io::Result<EventFdWaker> {
        // SAFETY: eventfd takes no pointers; the flags are valid.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EventFdWaker {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: AtomicBool::new(false),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Called by the loop when the poll fired: empties the counter, then re-enables writes.
    ///
    /// Draining first and clearing the flag second means a `wake` racing with this either
    /// found the flag still set (and is covered by the `woken` the loop reports now) or sets
    /// it again and writes, which fires the poll again.
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: `buf` is 8 writable bytes, the size an eventfd read needs; the fd is open
        // for the life of `self`. A failure (EAGAIN: already empty) is harmless.
        let _ = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        self.pending.store(false, Ordering::Release);
    }
}

impl Wake for EventFdWaker {
    fn wake(&self) -> io::Result<()> {
        if self.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let one: u64 = 1;
        loop {
            // SAFETY: writes the 8 bytes of `one`, which outlives the call, to an eventfd
            // that is open for the life of `self`.
            let n = unsafe {
                libc::write(
                    self.fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The counter is near its maximum: the loop is certainly going to wake.
                Some(libc::EAGAIN) => return Ok(()),
                _ => {
                    self.pending.store(false, Ordering::Release);
                    return Err(e);
                }
            }
        }
    }
}

impl Uring {
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

    /// The eventfd poll fired (or ended): report `woken`, re-arm unless shutting down.
    pub(super) fn on_wake<S: Sink>(&mut self, res: i32, more: bool, sink: &mut S) {
        if res >= 0 {
            self.waker.drain();
            sink.woken();
        }
        if !more {
            self.wake_armed = false;
            if !self.shutting_down {
                self.arm_wake();
            }
        }
    }
}
