//! What only Linux has among the helpers: the eventfd that wakes an epoll wait.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{cvt, is_interrupted, is_would_block};

/// A non-blocking, close-on-exec eventfd used as a wake-up signal.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates an eventfd with a zero counter.
    ///
    /// # Errors
    /// Whatever `eventfd(2)` reports (`EMFILE`, `ENOMEM`, `ENOSYS` under a sandbox).
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: `eventfd` takes no pointers; the flags are valid for it.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `eventfd` just returned `fd`: it is open and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// The descriptor, to register with a poller.
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Adds one to the counter, making the eventfd readable. A counter at its maximum is
    /// already readable, so `EAGAIN` is success.
    ///
    /// # Errors
    /// Any other error of `write(2)`.
    pub(crate) fn notify(&self) -> io::Result<()> {
        let one: u64 = 1;
        loop {
            // SAFETY: the descriptor is owned by `self`; `one` is valid for reads of 8 bytes,
            // the size an eventfd write requires.
            let r = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            match cvt(r) {
                Ok(_) => return Ok(()),
                Err(e) if is_would_block(&e) => return Ok(()),
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and resets the counter; `Ok(0)` when it was already zero.
    ///
    /// # Errors
    /// Any error of `read(2)` other than `EAGAIN`.
    pub(crate) fn drain(&self) -> io::Result<u64> {
        let mut value: u64 = 0;
        loop {
            // SAFETY: the descriptor is owned by `self`; `value` is valid for writes of 8
            // bytes, the size an eventfd read requires.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
            match cvt(r) {
                Ok(_) => return Ok(value),
                Err(e) if is_would_block(&e) => return Ok(0),
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
