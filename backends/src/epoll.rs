//! The epoll backend (Linux): the readiness engine ([`Epoll`], documented there) on the epoll
//! selector (`selector/epoll.rs`).
//!
//! What is epoll's own: each socket is registered once with the flags of its kind (a stream
//! `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`, so a peer's FIN is seen even when it arrives
//! with data), the `epoll_data` holds the token, `EPOLLHUP`/`EPOLLERR` count as both
//! directions and a hang-up, a short read proves the socket drained (edge triggering
//! signals anything that arrives later), and the waker is an eventfd.

pub use crate::readiness::Readiness as Epoll;
