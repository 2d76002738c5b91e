//! The kqueue backend (macOS, iOS, FreeBSD, NetBSD, OpenBSD, DragonFly): the readiness engine
//! ([`Kqueue`], documented there) on the kqueue selector (`selector/kqueue.rs`).
//!
//! What is kqueue's own: each direction is a filter of its own (`EVFILT_READ`,
//! `EVFILT_WRITE`), added with `EV_CLEAR` (edge-triggered) and `EV_RECEIPT` (so each
//! registration's error comes back in its `data`), so one socket may bring two events per
//! wait; `EV_EOF` is a hang-up (the engine still reads what is queued before the end of
//! stream), on the write filter also after a local `shutdown(SHUT_WR)`, and a failed connect
//! is writability with `EV_EOF` whose `SO_ERROR` says why. A read pass always reads until
//! `EAGAIN`. `SIGPIPE` is kept away by `MSG_NOSIGNAL`, or on Apple's systems by
//! `SO_NOSIGPIPE` on every socket the backend is lent; Apple's systems have no `accept4`
//! either (`accept`, then `fcntl`). The waker is an `EVFILT_USER` event on macOS, iOS and
//! FreeBSD, a pipe on the other BSDs. Datagrams go one per system call (`recvmsg`,
//! `sendmsg`).
//!
//! This backend is type-checked for every kqueue target in CI; where it has run is said in
//! the README.

pub use crate::readiness::Readiness as Kqueue;
