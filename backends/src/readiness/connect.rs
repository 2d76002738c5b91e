//! Connecting a socket the loop created: a non-blocking `connect(2)`; when it is in progress,
//! writability (or an error) says it ended, and `SO_ERROR` says how.
//!
//! | `connect(2)` returns        | then                                                     |
//! |-----------------------------|----------------------------------------------------------|
//! | 0, `EISCONN`                | connected (Unix sockets, UDP): reported by the next poll |
//! | `EINPROGRESS`, `EINTR`      | registered for writability; the event's `SO_ERROR` decides |
//! | `EALREADY`                  | as `EINPROGRESS` (a connect already under way)           |
//! | anything else               | that error, reported by the next poll                    |

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use socket2::{SockAddr, SockRef};

use crate::contract::Id;
use crate::selector::Ready;
use crate::socket::{Addr, Socket};

/// How `connect(2)` answered.
#[derive(Debug)]
pub(super) enum Start {
    /// In progress: wait for the socket to become writable.
    Pending,
    /// Done at once, either way.
    Done(io::Result<()>),
}

/// Starts connecting `socket` to `to`.
pub(super) fn start(socket: &Socket, to: &Addr) -> Start {
    let addr = match sockaddr(to) {
        Ok(addr) => addr,
        Err(e) => return Start::Done(Err(e)),
    };
    match SockRef::from(socket).connect(&addr) {
        Ok(()) => Start::Done(Ok(())),
        Err(e) => match e.raw_os_error() {
            Some(libc::EISCONN) => Start::Done(Ok(())),
            // EINTR: the connection goes on asynchronously (POSIX), as for EINPROGRESS.
            Some(libc::EINPROGRESS | libc::EINTR | libc::EALREADY) => Start::Pending,
            _ => Start::Done(Err(e)),
        },
    }
}

/// The socket address to connect to.
fn sockaddr(to: &Addr) -> io::Result<SockAddr> {
    match to {
        Addr::Inet(a) => Ok(SockAddr::from(*a)),
        Addr::Unix(Some(path)) => SockAddr::unix(path),
        Addr::Unix(None) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot connect to an unnamed Unix socket",
        )),
    }
}

/// A socket `connect` is connecting, lent by the loop until `connected` or `closed` is
/// reported. Registered with the selector only while `connect(2)` is in progress.
#[derive(Debug)]
pub(super) struct Connecting {
    pub(super) id: Id,
    fd: RawFd,
    registered: bool,
}

impl Connecting {
    pub(super) fn new(id: Id, fd: RawFd, registered: bool) -> Self {
        Connecting { id, fd, registered }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the loop lent this descriptor in `connect` and keeps it open until we report
        // `connected` or `closed`; a `Connecting` exists only between those points (it is
        // removed from the table before either is reported).
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    /// The descriptor, if it is registered with the selector.
    pub(super) fn registered_fd(&self) -> Option<BorrowedFd<'_>> {
        self.registered.then(|| self.fd())
    }

    /// How the connect ended, after an event; `None` if it has not (a wake-up that was not
    /// the end: the socket is not writable and reports no error).
    ///
    /// `SO_ERROR` holds the failure (and reading it clears it); without one the socket is
    /// connected if it has a peer. A socket that reports a hang-up or an error but neither a
    /// failure nor a peer ended without saying why: `NotConnected`.
    pub(super) fn outcome(&self, ready: Ready) -> Option<io::Result<()>> {
        let fd = self.fd();
        let socket = SockRef::from(&fd);
        match socket.take_error() {
            Ok(Some(e)) | Err(e) => return Some(Err(e)),
            Ok(None) => {}
        }
        match socket.peer_addr() {
            Ok(_) => Some(Ok(())),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) && !ready.closing() => None,
            Err(e) => Some(Err(e)),
        }
    }
}
