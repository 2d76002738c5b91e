//! The backend contract of [gnet](https://docs.rs/gnet) and its implementations.
//!
//! One trait, [`Backend`], written down in its documentation, and one implementation per
//! kernel interface: `uring` (io_uring, Linux), `epoll` (Linux) and `kqueue` (macOS, BSD), one
//! readiness engine on two selectors, and `stdnet` (portable `std::net` threads). Cargo
//! features choose what is compiled in; [`compiled`] lists what is available in this build.
//!
//! All of gnet's `unsafe` code lives in this crate. Every block carries a `// SAFETY:` comment.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod accept;
mod affinity;
mod contract;
mod socket;

pub use accept::is_resource_shortage;
pub use affinity::pin_current_thread;

pub use contract::{
    Backend, BackendKind, Capabilities, Config, Datagram, Flow, Id, OpenError, Sink, Stats, Wake,
};
pub use socket::{Addr, Listener, Socket};

#[cfg(gnet_selector)]
mod listeners;
#[cfg(gnet_readiness)]
mod readiness;
#[cfg(gnet_selector)]
mod selector;
#[cfg(gnet_selector)]
mod sys;

#[cfg(gnet_epoll)]
pub mod epoll;
#[cfg(gnet_kqueue)]
pub mod kqueue;
#[cfg(gnet_uring)]
pub mod uring;

#[doc(hidden)]
pub mod testing;

#[cfg(test)]
mod conformance;

#[cfg(gnet_stdnet)]
pub mod stdnet;

#[cfg(not(any(gnet_epoll_instance, gnet_kqueue, gnet_stdnet)))]
compile_error!("gnet-backends: no backend compiled in for this target; enable `stdnet` at least");

/// The backends compiled into this build for this target, best first.
pub fn compiled() -> Vec<BackendKind> {
    [
        (cfg!(gnet_uring), BackendKind::Uring),
        (cfg!(gnet_epoll), BackendKind::Epoll),
        (cfg!(gnet_kqueue), BackendKind::Kqueue),
        (cfg!(gnet_stdnet), BackendKind::StdNet),
    ]
    .into_iter()
    .filter_map(|(on, kind)| on.then_some(kind))
    .collect()
}
