//! An epoll instance: registration, waiting, and the tokens stored in `epoll_data`. The epoll
//! backend watches everything with it; the io_uring backend only its listeners.
#![allow(dead_code)] // Shared by two backends; either may be compiled without the other.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::sys::{cvt, is_interrupted};

/// Interest of a connection, set once at registration: both directions, edge-triggered, with
/// `EPOLLRDHUP` so a peer's FIN is seen even when it arrives together with data.
pub(crate) const CONN_INTEREST: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// Interest of a listener and of the waker's eventfd.
pub(crate) const READ_INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLET) as u32;

const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
const RDHUP: u32 = libc::EPOLLRDHUP as u32;
const HUP: u32 = libc::EPOLLHUP as u32;
const ERR: u32 = libc::EPOLLERR as u32;

const INITIAL_EVENTS: usize = 256;
const MAX_EVENTS: usize = 16 * 1024;

/// What an event is about, decoded from its `epoll_data`.
///
/// Connections store their [`Id::index`](crate::Id::index) (below 2³²), listeners
/// their id with the top bit set, the waker `u64::MAX`: dispatch is a table index, never a
/// lookup by descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    Conn(usize),
    /// A listener, by its [`Id::index`](crate::Id::index).
    Listener(usize),
    Waker,
}

const LISTENER_BIT: u64 = 1 << 63;
const WAKER: u64 = u64::MAX;

impl Token {
    pub(crate) fn encode(self) -> u64 {
        match self {
            Token::Conn(index) => index as u64,
            Token::Listener(index) => LISTENER_BIT | index as u64,
            Token::Waker => WAKER,
        }
    }

    pub(crate) fn decode(data: u64) -> Token {
        if data == WAKER {
            Token::Waker
        } else if data & LISTENER_BIT != 0 {
            Token::Listener((data & !LISTENER_BIT) as usize)
        } else {
            Token::Conn(data as usize)
        }
    }
}

/// The readiness bits of one event, as the backend uses them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ready(u32);

impl Ready {
    /// Something to read: bytes, a FIN, or an error that `recv` will return.
    pub(crate) fn readable(self) -> bool {
        self.0 & (IN | RDHUP | HUP | ERR) != 0
    }

    /// Room to write, or an error that `sendmsg` will return.
    pub(crate) fn writable(self) -> bool {
        self.0 & (OUT | HUP | ERR) != 0
    }

    /// The peer is gone or closed its side: a short read no longer proves the socket drained.
    pub(crate) fn closing(self) -> bool {
        self.0 & (RDHUP | HUP | ERR) != 0
    }
}

/// An epoll descriptor and the event array `epoll_wait` fills (doubled when it comes back
/// full, up to a bound).
pub(crate) struct Poller {
    epfd: OwnedFd,
    events: Vec<libc::epoll_event>,
    len: usize,
}

impl Poller {
    /// Creates the epoll instance (close-on-exec).
    ///
    /// # Errors
    /// Whatever `epoll_create1` reports.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: `epoll_create1` takes no pointers; the flag is valid for it.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `epoll_create1` just returned `fd`: it is open and nothing else owns it.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Poller {
            epfd,
            events: Vec::with_capacity(INITIAL_EVENTS),
            len: 0,
        })
    }

    /// Registers `fd` with `interest`, reporting `token`. Readiness that already holds is
    /// reported by the next wait, also for edge-triggered interest.
    ///
    /// # Errors
    /// `EEXIST` when already registered, `ENOMEM`, `ENOSPC` (`max_user_watches`), `EPERM`
    /// for a descriptor epoll cannot watch.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, interest: u32, token: Token) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: interest,
            u64: token.encode(),
        };
        // SAFETY: both descriptors are live for the call; `event` is valid for reads and the
        // kernel copies it before returning.
        let r = unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        };
        cvt(r).map(drop)
    }

    /// Deregisters `fd`: no event for it is reported by later waits.
    ///
    /// # Errors
    /// `ENOENT` when it was not registered.
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: both descriptors are live for the call; `EPOLL_CTL_DEL` ignores the event
        // pointer, and a null one is accepted since Linux 2.6.9.
        let r = unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        cvt(r).map(drop)
    }

    /// Waits up to `timeout` (`None`: without limit) and returns how many events arrived. An
    /// interrupted wait (`EINTR`) returns 0 events.
    ///
    /// # Errors
    /// A failure of `epoll_wait` itself (`EBADF`, `EFAULT`, `EINVAL`): the poller is broken.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        if self.len == self.events.capacity() && self.len < MAX_EVENTS {
            self.events.reserve(self.len);
        }
        self.events.clear();
        let max = self.events.capacity().min(MAX_EVENTS);
        // SAFETY: the epoll descriptor is owned by `self`; the array is valid for writes of
        // `max` events (its capacity) and the kernel writes at most `max` of them.
        let r = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                max as libc::c_int,
                timeout_ms(timeout),
            )
        };
        self.len = match cvt(r) {
            Ok(n) => n as usize,
            Err(e) if is_interrupted(&e) => 0,
            Err(e) => return Err(e),
        };
        // SAFETY: `epoll_wait` initialised the first `len` (≤ `max` ≤ capacity) events.
        unsafe { self.events.set_len(self.len) };
        Ok(self.len)
    }

    /// The `i`-th event of the last wait.
    pub(crate) fn event(&self, i: usize) -> (Token, Ready) {
        let e = self.events[i];
        (Token::decode(e.u64), Ready(e.events))
    }
}

impl AsRawFd for Poller {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.epfd.as_raw_fd()
    }
}

/// Milliseconds for `epoll_wait`: `-1` for no limit, rounded up so that a deadline 0.3 ms away
/// sleeps 1 ms rather than spinning at 0, saturating at `i32::MAX`.
pub(crate) fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => d
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for t in [
            Token::Conn(0),
            Token::Conn(u32::MAX as usize),
            Token::Listener(7),
            Token::Waker,
        ] {
            assert_eq!(Token::decode(t.encode()), t);
        }
    }

    #[test]
    fn timeouts_round_up() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_micros(300))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(5))), 5);
        assert_eq!(
            timeout_ms(Some(Duration::from_secs(u64::MAX))),
            libc::c_int::MAX
        );
    }
}
