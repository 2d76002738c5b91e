//! Shared Linux system-call helpers (accept4, socket options) for epoll and uring.
