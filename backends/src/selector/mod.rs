//! Selectors: the small interface between the readiness engine (`readiness/`) and a kernel's
//! readiness mechanism, with one implementation per mechanism, `epoll.rs` (Linux) and
//! `kqueue.rs` (macOS and the BSDs). A selector registers a descriptor for an [`Interest`]
//! under a [`Token`], waits, and decodes each event into a token and its [`Ready`] bits;
//! nothing else differs between the two, and everything else (the connection table, reading,
//! sending, accepting, datagrams, connecting) is the engine's.
//!
//! What every selector honours:
//!
//! - **Edge-triggered.** An event says the state changed; the engine reads or writes until
//!   `EAGAIN` before it may expect another one. Spurious events are allowed (an event for a
//!   socket with nothing to read), lost ones are not.
//! - **Registration checks what already holds.** Bytes queued before [`Selector::register`]
//!   produce an event at the next wait.
//! - **One descriptor may produce several events per wait** (kqueue reports each direction as
//!   an event of its own); the engine handles each in turn.
//! - **Deregistering** stops events for the descriptor from the next wait on; the engine
//!   forgets the token first, so an event already fetched for it finds nothing.
//! - **The waker** ([`waker::Waker`]) is created with the selector and registered under
//!   [`Token::Waker`]; [`Waker::reset`](waker::Waker::reset) consumes a wake-up.
#![allow(dead_code)] // The epoll instance is also io_uring's, which uses only part of it.

#[cfg(gnet_readiness)]
use std::{io, os::fd::BorrowedFd, time::Duration};

#[cfg(gnet_readiness)]
use crate::contract::{BackendKind, OpenError};

#[cfg(gnet_epoll_instance)]
pub(crate) mod epoll;
#[cfg(gnet_kqueue)]
pub(crate) mod kqueue;
#[cfg(gnet_readiness)]
pub(crate) mod waker;

/// The selector of this target: the one the readiness engine runs on.
#[cfg(gnet_epoll)]
pub(crate) type Native = epoll::Poller;
/// The selector of this target: the one the readiness engine runs on.
#[cfg(gnet_kqueue)]
pub(crate) type Native = kqueue::Kqueue;

/// What an event is about: the value a selector stores with each registration (`epoll_data`,
/// `udata`).
///
/// Connections store their [`Id::index`](crate::Id::index), listeners their index with the
/// top bit set, the waker all ones: dispatch is a table index, never a lookup by descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// A stream connection, datagram socket or socket connecting, by its index.
    Conn(usize),
    /// A listener, by its [`Id::index`](crate::Id::index).
    Listener(usize),
    Waker,
}

const LISTENER_BIT: usize = 1 << (usize::BITS - 1);
const WAKER: usize = usize::MAX;

impl Token {
    pub(crate) fn encode(self) -> usize {
        match self {
            Token::Conn(index) => index,
            Token::Listener(index) => LISTENER_BIT | index,
            Token::Waker => WAKER,
        }
    }

    pub(crate) fn decode(data: usize) -> Token {
        if data == WAKER {
            Token::Waker
        } else if data & LISTENER_BIT != 0 {
            Token::Listener(data & !LISTENER_BIT)
        } else {
            Token::Conn(data)
        }
    }
}

/// What a descriptor is registered for; each selector maps it to its own flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    /// A stream connection: both directions, and the peer's FIN even when it comes with data.
    Stream,
    /// A datagram socket: both directions (errors the network reports come as readability).
    Datagram,
    /// A socket connecting: writability (and the error or hang-up that ends a failed connect).
    Connect,
    /// A listener: readability.
    Listener,
}

/// The readiness of one event, decoded by the selector into what the engine acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ready(u8);

impl Ready {
    pub(crate) const READABLE: Ready = Ready(1);
    pub(crate) const WRITABLE: Ready = Ready(2);
    pub(crate) const CLOSING: Ready = Ready(4);

    /// The union of two readiness sets.
    #[must_use]
    pub(crate) const fn with(self, other: Ready) -> Ready {
        Ready(self.0 | other.0)
    }

    /// Something to read: bytes, a FIN, or an error that `recv` will return.
    pub(crate) fn readable(self) -> bool {
        self.0 & Self::READABLE.0 != 0
    }

    /// Room to write, or an error that `sendmsg` will return.
    pub(crate) fn writable(self) -> bool {
        self.0 & Self::WRITABLE.0 != 0
    }

    /// The peer is gone or closed its side, or the socket has an error: a short read no longer
    /// proves the socket drained, and a connect that has no peer has ended.
    pub(crate) fn closing(self) -> bool {
        self.0 & Self::CLOSING.0 != 0
    }
}

/// A kernel readiness mechanism, as the readiness engine uses it (see the module
/// documentation for what every implementation honours).
#[cfg(gnet_readiness)]
pub(crate) trait Selector: Sized + Send {
    /// The backend the engine is when it runs on this selector.
    const KIND: BackendKind;

    /// Whether a `recv` that returned less than its buffer proves the socket's queue empty,
    /// so that the read pass may stop without the `EAGAIN` call. Where it is not known for
    /// sure, a pass reads until `EAGAIN`.
    const SHORT_READ_DRAINS: bool;

    /// Creates the mechanism and its waker, registered under [`Token::Waker`].
    ///
    /// # Errors
    /// `Unavailable` when the mechanism is missing or forbidden (a sandbox), `Failed` for the
    /// rest (descriptors, memory).
    fn open() -> Result<(Self, waker::Waker), OpenError>;

    /// Registers `fd` for `interest`, reporting `token`.
    ///
    /// # Errors
    /// The kernel's refusal: `EEXIST` when already registered, `ENOMEM`, a descriptor the
    /// mechanism cannot watch.
    fn register(&mut self, fd: BorrowedFd<'_>, interest: Interest, token: Token) -> io::Result<()>;

    /// Deregisters `fd`, registered for `interest`.
    ///
    /// # Errors
    /// `ENOENT` when it was not registered.
    fn deregister(&mut self, fd: BorrowedFd<'_>, interest: Interest) -> io::Result<()>;

    /// Waits up to `timeout` (`None`: without limit) and returns how many events arrived,
    /// read with [`Selector::event`]. An interrupted wait returns 0 events.
    ///
    /// # Errors
    /// A failure of the wait itself: the selector is broken.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize>;

    /// The `i`-th event of the last wait.
    fn event(&self, i: usize) -> (Token, Ready);
}

/// Sorts a set-up error: a missing or forbidden mechanism may fall back, the rest may not.
#[cfg(gnet_readiness)]
pub(crate) fn open_error(what: &str, e: io::Error) -> OpenError {
    match e.raw_os_error() {
        Some(libc::ENOSYS | libc::EPERM | libc::EACCES | libc::EINVAL) => {
            OpenError::Unavailable(format!("{what}: {e}"))
        }
        _ => OpenError::Failed(e),
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
    fn ready_bits() {
        let r = Ready::READABLE.with(Ready::CLOSING);
        assert!(r.readable() && r.closing() && !r.writable());
        assert_eq!(Ready::default(), Ready(0));
    }
}
