//! The epoll selector: an epoll instance, its registrations (the [`Interest`]s as epoll flags,
//! the [`Token`] in `epoll_data`), its wait, and its events decoded into [`Ready`] bits. The
//! epoll backend (the readiness engine on this selector) watches everything with it; the
//! io_uring backend only its listeners, through the inherent methods.
//!
//! | interest   | epoll flags                        |
//! |------------|------------------------------------|
//! | `Stream`   | `IN OUT RDHUP ET`                  |
//! | `Datagram` | `IN OUT ET`                        |
//! | `Connect`  | `OUT ET` (`ERR`, `HUP` always)     |
//! | `Listener` | `IN ET` (also the waker's eventfd) |
//!
//! | epoll bits   | readable | writable | closing |
//! |--------------|----------|----------|---------|
//! | `IN`         | yes      |          |         |
//! | `OUT`        |          | yes      |         |
//! | `RDHUP`      | yes      |          | yes     |
//! | `HUP`, `ERR` | yes      | yes      | yes     |

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::{Interest, Ready, Token};
use crate::sys::{cvt, is_interrupted};

/// Interest of a connection, set once at registration: both directions, edge-triggered, with
/// `EPOLLRDHUP` so a peer's FIN is seen even when it arrives together with data.
const CONN_INTEREST: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// Interest of a listener and of the waker's eventfd.
pub(crate) const READ_INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLET) as u32;

/// Interest of a datagram socket, set once at registration: both directions, edge-triggered
/// (`EPOLLERR`, always reported, brings the errors the network sends back).
const DGRAM_INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET) as u32;

/// Interest of a socket being connected: writability, edge-triggered (`EPOLLERR` and
/// `EPOLLHUP` are always reported).
const CONNECT_INTEREST: u32 = (libc::EPOLLOUT | libc::EPOLLET) as u32;

const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
const RDHUP: u32 = libc::EPOLLRDHUP as u32;
const HUP: u32 = libc::EPOLLHUP as u32;
const ERR: u32 = libc::EPOLLERR as u32;

const INITIAL_EVENTS: usize = 256;
const MAX_EVENTS: usize = 16 * 1024;

/// The engine's readiness of one epoll event (the second table of the module documentation).
#[inline]
fn decode(events: u32) -> Ready {
    let mut ready = Ready::default();
    if events & (IN | RDHUP | HUP | ERR) != 0 {
        ready = ready.with(Ready::READABLE);
    }
    if events & (OUT | HUP | ERR) != 0 {
        ready = ready.with(Ready::WRITABLE);
    }
    if events & (RDHUP | HUP | ERR) != 0 {
        ready = ready.with(Ready::CLOSING);
    }
    ready
}

/// The epoll flags of an interest (the first table of the module documentation).
fn flags(interest: Interest) -> u32 {
    match interest {
        Interest::Stream => CONN_INTEREST,
        Interest::Datagram => DGRAM_INTEREST,
        Interest::Connect => CONNECT_INTEREST,
        Interest::Listener => READ_INTEREST,
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
            u64: token.encode() as u64,
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
    #[inline]
    pub(crate) fn event(&self, i: usize) -> (Token, Ready) {
        let e = self.events[i];
        (Token::decode(e.u64 as usize), decode(e.events))
    }
}

#[cfg(gnet_epoll)]
impl super::Selector for Poller {
    const KIND: crate::BackendKind = crate::BackendKind::Epoll;
    // With edge triggering a short read proves the queue was empty: anything arriving later
    // raises a new edge (a pending FIN is the exception, which `CLOSING` covers).
    const SHORT_READ_DRAINS: bool = true;

    fn open() -> Result<(Self, super::waker::Waker), crate::OpenError> {
        use super::open_error;
        let poller = Poller::new().map_err(|e| open_error("epoll_create1", e))?;
        let signal = crate::sys::EventFd::new().map_err(|e| open_error("eventfd", e))?;
        poller
            .add(signal.as_fd(), READ_INTEREST, Token::Waker)
            .map_err(|e| open_error("epoll_ctl(eventfd)", e))?;
        Ok((poller, super::waker::Waker::new(signal)))
    }

    #[inline]
    fn register(&mut self, fd: BorrowedFd<'_>, interest: Interest, token: Token) -> io::Result<()> {
        self.add(fd, flags(interest), token)
    }

    #[inline]
    fn deregister(&mut self, fd: BorrowedFd<'_>, _interest: Interest) -> io::Result<()> {
        self.delete(fd)
    }

    #[inline]
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        Poller::wait(self, timeout)
    }

    #[inline]
    fn event(&self, i: usize) -> (Token, Ready) {
        Poller::event(self, i)
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
    fn events_decode() {
        assert_eq!(decode(IN), Ready::READABLE);
        assert_eq!(decode(OUT), Ready::WRITABLE);
        assert_eq!(decode(IN | RDHUP), Ready::READABLE.with(Ready::CLOSING));
        let all = Ready::READABLE.with(Ready::WRITABLE).with(Ready::CLOSING);
        assert_eq!(decode(HUP), all);
        assert_eq!(decode(ERR), all);
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
