//! The kqueue selector (macOS, iOS, FreeBSD, NetBSD, OpenBSD, DragonFly): a kqueue, its
//! registrations (each direction a filter of its own), its wait, and its events decoded into
//! [`Ready`] bits.
//!
//! Every filter is added with `EV_ADD | EV_CLEAR | EV_RECEIPT`: `EV_CLEAR` makes it
//! edge-triggered (the state resets when the event is fetched), `EV_RECEIPT` returns every
//! change as an `EV_ERROR` entry whose `data` is its errno (0 when it succeeded), so an error
//! names the filter it concerns and the changes before it are not lost. The token is the
//! `udata`.
//!
//! | interest   | filters                           |
//! |------------|-----------------------------------|
//! | `Stream`   | `EVFILT_READ`, `EVFILT_WRITE`     |
//! | `Datagram` | `EVFILT_READ`, `EVFILT_WRITE`     |
//! | `Connect`  | `EVFILT_WRITE`                    |
//! | `Listener` | `EVFILT_READ`                     |
//!
//! | event                                   | readable | writable | closing |
//! |-----------------------------------------|----------|----------|---------|
//! | `EVFILT_READ`                           | yes      |          |         |
//! | `EVFILT_READ` + `EV_EOF` (peer's FIN)    | yes      |          | yes     |
//! | `EVFILT_WRITE`                          |          | yes      |         |
//! | `EVFILT_WRITE` + `EV_EOF`               |          | yes      | yes     |
//! | `EV_EOF` with `fflags` (a socket error), `EV_ERROR` | yes | yes   | yes     |
//!
//! `EV_EOF` on the read filter may come while bytes are still queued: the engine reads until
//! `recv` returns 0, so they are delivered before the end of stream. On the write filter it
//! also follows a local `shutdown(SHUT_WR)`, and it is how a failed connect shows (the
//! engine asks `SO_ERROR`). A registration that fails with `EPIPE` (older macOS, for the
//! write filter of a socket whose peer is gone) is not an error: the filter is there and
//! reports the hang-up. Deregistering ignores `ENOENT` (a filter the kernel already dropped).
//!
//! Types: the `kevent` fields differ by system (NetBSD's `filter` and `flags` are `u32`,
//! elsewhere `i16` and `u16`; FreeBSD's struct has `ext` from FreeBSD 12 on, the ABI the libc
//! crate builds for by default), so entries are zeroed and then filled field by field, and
//! every value is the libc crate's constant, never a number written here (`EVFILT_USER` is
//! -10 on macOS, -11 on FreeBSD, 8 on NetBSD, for one).

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use super::waker::Waker;
use super::{open_error, Interest, Ready, Selector, Token};
use crate::contract::{BackendKind, OpenError};
use crate::sys::{cvt, is_interrupted};

/// The type of `kevent::filter` on this system.
#[cfg(target_os = "netbsd")]
type Filter = u32;
/// The type of `kevent::flags` on this system.
#[cfg(target_os = "netbsd")]
type Flags = u32;
/// The type of `kevent::filter` on this system.
#[cfg(not(target_os = "netbsd"))]
type Filter = i16;
/// The type of `kevent::flags` on this system.
#[cfg(not(target_os = "netbsd"))]
type Flags = u16;

const ADD: Flags = libc::EV_ADD | libc::EV_CLEAR | libc::EV_RECEIPT;
const DELETE: Flags = libc::EV_DELETE | libc::EV_RECEIPT;

const INITIAL_EVENTS: usize = 256;
const MAX_EVENTS: usize = 16 * 1024;

/// A kevent entry, zeroed and then filled, so that fields some systems have and others lack
/// (FreeBSD's `ext`) are zero.
fn kevent(ident: usize, filter: Filter, flags: Flags, fflags: u32, token: usize) -> libc::kevent {
    // SAFETY: `kevent` is plain old data for which all-zero bytes are a valid value (a null
    // `udata`).
    let mut ev: libc::kevent = unsafe { mem::zeroed() };
    ev.ident = ident as _;
    ev.filter = filter;
    ev.flags = flags;
    ev.fflags = fflags;
    // The token is stored as an address and never dereferenced.
    ev.udata = token as _;
    ev
}

/// The filters of an interest (the first table of the module documentation).
fn filters(interest: Interest) -> &'static [Filter] {
    const BOTH: &[Filter] = &[libc::EVFILT_READ, libc::EVFILT_WRITE];
    match interest {
        Interest::Stream | Interest::Datagram => BOTH,
        Interest::Connect => &[libc::EVFILT_WRITE],
        Interest::Listener => &[libc::EVFILT_READ],
    }
}

/// The engine's readiness of one event (the second table of the module documentation).
fn decode(ev: &libc::kevent) -> Ready {
    let eof = ev.flags & libc::EV_EOF != 0;
    if ev.flags & libc::EV_ERROR != 0 || (eof && ev.fflags != 0) {
        return Ready::READABLE.with(Ready::WRITABLE).with(Ready::CLOSING);
    }
    let closing = if eof {
        Ready::CLOSING
    } else {
        Ready::default()
    };
    if ev.filter == libc::EVFILT_WRITE {
        Ready::WRITABLE.with(closing)
    } else {
        // `EVFILT_READ`, and the waker's filter, whose readiness is not looked at.
        Ready::READABLE.with(closing)
    }
}

/// Applies `changes`, each with `EV_RECEIPT`, and returns the first error a receipt carries
/// that `ignore` does not excuse.
fn apply(kq: BorrowedFd<'_>, changes: &mut [libc::kevent], ignore: i32) -> io::Result<()> {
    // SAFETY: `timespec` is plain old data for which all-zero bytes are a valid value (no
    // wait: every change comes back as a receipt at once).
    let zero: libc::timespec = unsafe { mem::zeroed() };
    loop {
        // SAFETY: `kq` is a live kqueue for the borrow; `changes` is valid for reads and
        // writes of its length, and the kernel may use one array for both lists, writing at
        // most that many receipts; `zero` is valid for reads.
        let r = unsafe {
            libc::kevent(
                kq.as_raw_fd(),
                changes.as_ptr(),
                changes.len() as _,
                changes.as_mut_ptr(),
                changes.len() as _,
                &zero,
            )
        };
        match cvt(r) {
            Ok(n) => {
                let receipts = &changes[..(n as usize).min(changes.len())];
                return receipts
                    .iter()
                    .filter(|ev| ev.flags & libc::EV_ERROR != 0)
                    .map(|ev| ev.data as i32)
                    .find(|&errno| errno != 0 && errno != ignore)
                    .map_or(Ok(()), |errno| Err(io::Error::from_raw_os_error(errno)));
            }
            // Adding or deleting again is harmless: the receipts say how it went.
            Err(e) if is_interrupted(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A kqueue descriptor and the event array `kevent` fills (doubled when it comes back full,
/// up to a bound).
pub(crate) struct Kqueue {
    /// Shared with the `EVFILT_USER` waker, which triggers its event on it.
    kq: Arc<OwnedFd>,
    events: Vec<libc::kevent>,
    len: usize,
}

// SAFETY: the only thing in a `Kqueue` that is not `Send` is `kevent::udata`, a pointer field
// that holds a token (an integer) and is never dereferenced.
unsafe impl Send for Kqueue {}

impl std::fmt::Debug for Kqueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kqueue")
            .field("kq", &self.kq)
            .finish_non_exhaustive()
    }
}

impl Kqueue {
    /// Creates the kqueue (close-on-exec).
    ///
    /// # Errors
    /// Whatever `kqueue` or `fcntl` report.
    fn new() -> io::Result<Self> {
        // SAFETY: `kqueue` takes no arguments.
        let fd = cvt(unsafe { libc::kqueue() })?;
        // SAFETY: `kqueue` just returned `fd`: it is open and nothing else owns it.
        let kq = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `fd` is open (owned by `kq`); `F_SETFD` takes an integer.
        cvt(unsafe { libc::fcntl(kq.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
        Ok(Kqueue {
            kq: Arc::new(kq),
            events: Vec::with_capacity(INITIAL_EVENTS),
            len: 0,
        })
    }

    /// Adds `filters` for `fd` under `token`; a failure takes back those that were added.
    fn add(&self, fd: BorrowedFd<'_>, filters: &[Filter], token: Token) -> io::Result<()> {
        let mut changes = [kevent(0, 0, 0, 0, 0), kevent(0, 0, 0, 0, 0)];
        let ident = fd.as_raw_fd() as usize;
        for (slot, &filter) in changes.iter_mut().zip(filters) {
            *slot = kevent(ident, filter, ADD, 0, token.encode());
        }
        let changes = &mut changes[..filters.len()];
        apply(self.kq.as_fd(), changes, libc::EPIPE).inspect_err(|_| {
            let _ = self.delete(fd, filters);
        })
    }

    /// Deletes `filters` for `fd`; one that is not there is not an error.
    fn delete(&self, fd: BorrowedFd<'_>, filters: &[Filter]) -> io::Result<()> {
        let mut changes = [kevent(0, 0, 0, 0, 0), kevent(0, 0, 0, 0, 0)];
        let ident = fd.as_raw_fd() as usize;
        for (slot, &filter) in changes.iter_mut().zip(filters) {
            *slot = kevent(ident, filter, DELETE, 0, 0);
        }
        apply(self.kq.as_fd(), &mut changes[..filters.len()], libc::ENOENT)
    }
}

impl Selector for Kqueue {
    const KIND: BackendKind = BackendKind::Kqueue;
    // Not relied on: a read pass reads until `EAGAIN`, whatever the system's receive path
    // does with a short read.
    const SHORT_READ_DRAINS: bool = false;

    fn open() -> Result<(Self, Waker), OpenError> {
        let kq = Kqueue::new().map_err(|e| open_error("kqueue", e))?;
        let signal = waker_signal(&kq).map_err(|e| open_error("kqueue waker", e))?;
        Ok((kq, Waker::new(signal)))
    }

    fn register(&mut self, fd: BorrowedFd<'_>, interest: Interest, token: Token) -> io::Result<()> {
        self.add(fd, filters(interest), token)
    }

    fn deregister(&mut self, fd: BorrowedFd<'_>, interest: Interest) -> io::Result<()> {
        self.delete(fd, filters(interest))
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        if self.len == self.events.capacity() && self.len < MAX_EVENTS {
            self.events.reserve(self.len);
        }
        self.events.clear();
        let max = self.events.capacity().min(MAX_EVENTS);
        let ts = timeout.map(|d| {
            // SAFETY: `timespec` is plain old data for which all-zero bytes are a valid value.
            let mut ts: libc::timespec = unsafe { mem::zeroed() };
            ts.tv_sec = d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t;
            ts.tv_nsec = d.subsec_nanos() as _;
            ts
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: the kqueue is owned by `self`; no changes; the array is valid for writes of
        // `max` events (its capacity) and the kernel writes at most `max`; `ts_ptr` is null
        // (no limit) or points to `ts`, alive to the end of the call.
        let r = unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                ptr::null(),
                0,
                self.events.as_mut_ptr(),
                max as _,
                ts_ptr,
            )
        };
        self.len = match cvt(r) {
            Ok(n) => n as usize,
            Err(e) if is_interrupted(&e) => 0,
            Err(e) => return Err(e),
        };
        // SAFETY: `kevent` initialised the first `len` (≤ `max` ≤ capacity) events.
        unsafe { self.events.set_len(self.len) };
        Ok(self.len)
    }

    fn event(&self, i: usize) -> (Token, Ready) {
        let ev = &self.events[i];
        (Token::decode(ev.udata as usize), decode(ev))
    }
}

/// The waker's signal: an `EVFILT_USER` event of the kqueue, added with `EV_CLEAR`.
#[cfg(gnet_kq_user_waker)]
fn waker_signal(kq: &Kqueue) -> io::Result<UserEvent> {
    let mut change = [kevent(0, libc::EVFILT_USER, ADD, 0, Token::Waker.encode())];
    apply(kq.kq.as_fd(), &mut change, 0)?;
    Ok(UserEvent {
        kq: Arc::clone(&kq.kq),
    })
}

/// The waker's signal: a pipe whose read end is watched for readability.
#[cfg(gnet_kq_pipe_waker)]
fn waker_signal(kq: &Kqueue) -> io::Result<crate::sys::Pipe> {
    let pipe = crate::sys::Pipe::new()?;
    kq.add(pipe.as_fd(), &[libc::EVFILT_READ], Token::Waker)?;
    Ok(pipe)
}

/// The `EVFILT_USER` event of a kqueue, triggered from any thread.
#[cfg(gnet_kq_user_waker)]
#[derive(Debug)]
pub(crate) struct UserEvent {
    kq: Arc<OwnedFd>,
}

#[cfg(gnet_kq_user_waker)]
impl UserEvent {
    /// Triggers the event. The change carries no `EV_ADD` (that would make the event
    /// level-triggered on some systems), only `NOTE_TRIGGER`; an interrupted call is retried.
    ///
    /// # Errors
    /// Whatever `kevent` reports.
    pub(crate) fn notify(&self) -> io::Result<()> {
        let change = kevent(0, libc::EVFILT_USER, 0, libc::NOTE_TRIGGER, 0);
        loop {
            // SAFETY: the kqueue is owned (shared) by `self`; `change` is valid for reads;
            // no event list, so nothing is written and the call does not wait.
            let r = unsafe {
                libc::kevent(
                    self.kq.as_raw_fd(),
                    &change,
                    1,
                    ptr::null_mut(),
                    0,
                    ptr::null(),
                )
            };
            match cvt(r) {
                Ok(_) => return Ok(()),
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Nothing to consume: `EV_CLEAR` reset the event when it was fetched.
    ///
    /// # Errors
    /// None.
    pub(crate) fn drain(&self) -> io::Result<()> {
        Ok(())
    }
}
