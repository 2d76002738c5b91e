//! A non-blocking pipe as a wake-up signal, for kqueue where there is no `EVFILT_USER`
//! (NetBSD, OpenBSD, DragonFly): a byte written to one end makes the other readable.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{cvt, is_interrupted, is_would_block};

/// Both ends of a pipe, non-blocking and close-on-exec.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// # Errors
    /// Whatever `pipe2(2)` reports (`EMFILE`, `ENFILE`).
    pub(crate) fn new() -> io::Result<Self> {
        let mut fds = [-1 as libc::c_int; 2];
        // SAFETY: `fds` is valid for writes of two descriptors, which is what `pipe2` writes.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
        // SAFETY: `pipe2` just returned both descriptors: open, and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { read, write })
    }

    /// The end to watch for readability.
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Writes one byte. A full pipe is already readable, so `EAGAIN` is success.
    ///
    /// # Errors
    /// Any other error of `write(2)`.
    pub(crate) fn notify(&self) -> io::Result<()> {
        let byte = 1u8;
        loop {
            // SAFETY: the descriptor is owned by `self`; `byte` is valid for reads of 1 byte.
            let r = unsafe { libc::write(self.write.as_raw_fd(), (&byte as *const u8).cast(), 1) };
            match cvt(r) {
                Ok(_) => return Ok(()),
                Err(e) if is_would_block(&e) => return Ok(()),
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads everything written so far.
    ///
    /// # Errors
    /// Any error of `read(2)` other than `EAGAIN`.
    pub(crate) fn drain(&self) -> io::Result<()> {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: the descriptor is owned by `self`; `buf` is valid for writes of its length.
            let r =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match cvt(r) {
                Ok(n) if (n as usize) < buf.len() => return Ok(()),
                Ok(_) => {}
                Err(e) if is_would_block(&e) => return Ok(()),
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
