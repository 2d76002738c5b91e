//! # gnet
//!
//! An event-driven networking framework on the transport layer, in the spirit of Go's
//! [gnet](https://github.com/panjf2000/gnet), with io_uring underneath.
//!
//! You write an [`EventHandler`] — `on_boot`, `on_open`, `on_traffic`, `on_close`, `on_tick`,
//! `on_shutdown` — and gnet runs it on one event loop per core over TCP and Unix sockets. The
//! loops run on the best backend the machine has: io_uring (provided-buffer ring, multishot
//! accept and receive), else epoll (edge-triggered), else a portable `std::net` backend. The
//! choice is made once at startup ([`Options::backend`], or `GNET_BACKEND=uring|epoll|stdnet`)
//! and the loop is monomorphised for it.
//!
//! ## A server in a few lines
//!
//! ```no_run
//! use gnet::{Action, Conn, EventHandler, Options};
//!
//! struct Echo;
//!
//! impl EventHandler for Echo {
//!     type Context = ();
//!
//!     fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
//!         // The received bytes are borrowed from the backend's buffer: no copy until the
//!         // write queues them.
//!         let data = c.next_all();
//!         c.write(data);
//!         Action::None
//!     }
//! }
//!
//! fn main() -> gnet::Result<()> {
//!     gnet::run(Echo, "tcp://127.0.0.1:9000", Options::new().multicore(true))
//! }
//! ```
//!
//! ## Rules of the road
//!
//! - Callbacks run on a loop thread: never block in them. Hand blocking work to your own
//!   threads and answer with [`ConnHandle::async_write`].
//! - Writes are queued and sent together when the callback returns: one `writev` or one
//!   io_uring send per connection per loop iteration, however many `write` calls you made.
//! - What you do not consume in `on_traffic` stays buffered and is presented again with the
//!   next bytes (or on [`ConnHandle::wake`]); it is bounded by [`Options::max_inbound_buffer`].
//! - Closing ([`Action::Close`], [`Conn::close`], [`Engine::stop`]) delivers what was written
//!   first, within [`Options::close_timeout`].
//! - A server that should stop gracefully on Ctrl-C or SIGTERM asks for it with
//!   [`Options::stop_on_signals`]; gnet installs no signal handler otherwise.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod addr;
mod balance;
mod broadcast;
pub mod codec;
mod conn;
mod datagram;
mod engine;
mod error;
mod eventloop;
mod handle;
mod handler;
mod listen;
mod local;
mod options;
#[doc(hidden)]
pub mod outbound;
mod select;
mod signal;

pub use addr::ListenAddr;
pub use conn::{Conn, Peer};
pub use engine::{client, rotate, run, start, Engine, Running};
pub use error::{Error, Result};
pub use gnet_backends::{Addr, BackendKind, Listener, Socket, Stats};
pub use handle::{ConnHandle, ConnId, WriteCallback};
pub use handler::{Action, CloseCause, DialError, EventHandler};
pub use options::{BackendChoice, LoadBalancing, Options};

pub use bytes::Bytes;

/// The backends compiled into this build for this target, best first. Whether one is usable
/// on this machine is found out when an engine starts (see [`Engine::backend`]).
pub fn compiled_backends() -> Vec<BackendKind> {
    gnet_backends::compiled()
}
