//! The event handler a user writes.

use std::time::Duration;

use crate::conn::Conn;
use crate::engine::Engine;
use crate::error::Error;
use crate::handle::ConnId;
use gnet_backends::Addr;

/// What a callback asks the engine to do next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Action {
    /// Carry on.
    #[default]
    None,
    /// Close this connection, after what was written to it has been delivered.
    Close,
    /// Shut the whole engine down (as [`Engine::stop`]).
    Shutdown,
}

/// Why a connection closed, as [`EventHandler::on_close`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseCause {
    /// The peer closed its side (a read returned end of stream).
    PeerClosed,
    /// The peer reset the connection (`ECONNRESET`, `EPIPE`).
    Reset,
    /// The handler closed it: [`Action::Close`], [`Conn::close`] or
    /// [`ConnHandle::close`](crate::ConnHandle::close).
    Local,
    /// The engine is shutting down.
    Shutdown,
    /// The input could not be decoded ([`Conn::decode_each`], [`Conn::close_with_error`]):
    /// a frame too long, an impossible length. What was written before is delivered, then
    /// the connection is closed; the engine's other connections are not affected.
    Codec(crate::codec::CodecError),
    /// An error: I/O, a handler panic, an inbound overflow, a close timeout.
    Error(Error),
}

impl std::fmt::Display for CloseCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseCause::PeerClosed => f.write_str("closed by peer"),
            CloseCause::Reset => f.write_str("reset by peer"),
            CloseCause::Local => f.write_str("closed locally"),
            CloseCause::Shutdown => f.write_str("engine shutdown"),
            CloseCause::Codec(e) => write!(f, "codec error: {e}"),
            CloseCause::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// A dial that did not connect, as [`EventHandler::on_dial_error`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct DialError<C> {
    /// The id the connection would have had.
    pub id: ConnId,
    /// Where it dialed.
    pub addr: Addr,
    /// The context it was given, back.
    pub context: Option<C>,
    /// Why: the kernel's error (refused, unreachable, ...) as [`Error::Io`],
    /// [`Error::DialTimeout`], [`Error::ConnClosed`] when it was closed before it connected,
    /// [`Error::EngineShutdown`] when the engine stopped.
    pub error: Error,
}

/// The callbacks of a server. One value serves every loop (hence `Sync`); per-connection state
/// lives in [`EventHandler::Context`], stored inline with the connection.
///
/// Every callback runs on an event loop thread and must not block it. A panic in a callback is
/// caught: the connection it was about is closed with [`CloseCause::Error`], the loop goes on.
///
/// # Examples
/// ```no_run
/// use gnet::{Action, Conn, EventHandler, Options};
///
/// struct Echo;
/// impl EventHandler for Echo {
///     type Context = ();
///     fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
///         let data = c.next_all();
///         c.write(data);
///         Action::None
///     }
/// }
///
/// gnet::run(Echo, "tcp://127.0.0.1:9000", Options::new()).unwrap();
/// ```
pub trait EventHandler: Send + Sync + 'static {
    /// Per-connection state, set with [`Conn::set_context`]. Use `()` for none.
    type Context: 'static;

    /// Runs once on the thread that called [`run`](crate::run), after the listeners are bound
    /// and before any loop starts. [`Action::Shutdown`] makes `run` return at once.
    fn on_boot(&self, engine: &Engine) -> Action {
        let _ = engine;
        Action::None
    }

    /// Runs once after every loop has stopped and every connection has been closed (and seen
    /// its `on_close`), on the engine's supervising thread; [`run`](crate::run) returns after
    /// it. [`Engine::dup`] still works here.
    fn on_shutdown(&self, engine: &Engine) {
        let _ = engine;
    }

    /// A connection was accepted. Anything written here (a greeting) is sent first.
    fn on_open(&self, conn: &mut Conn<'_, Self::Context>) -> Action {
        let _ = conn;
        Action::None
    }

    /// A connection is gone: its output was flushed (or abandoned, as `cause` says) and its
    /// descriptor is about to be closed. The context is still there; writes are discarded.
    /// Only [`Action::Shutdown`] has an effect.
    fn on_close(&self, conn: &mut Conn<'_, Self::Context>, cause: &CloseCause) -> Action {
        let _ = (conn, cause);
        Action::None
    }

    /// Bytes arrived, or [`ConnHandle::wake`](crate::ConnHandle::wake) was called. Consume
    /// what you can with [`Conn::next`], [`Conn::peek`] + [`Conn::discard`] or [`Conn::read`];
    /// what is left stays buffered and is presented again, with more, next time. Nothing is
    /// re-delivered without new bytes or a wake.
    fn on_traffic(&self, conn: &mut Conn<'_, Self::Context>) -> Action;

    /// A dial ([`Engine::dial`], [`Conn::dial`]) did not connect; `on_open` and `on_close`
    /// are not called for it. The default logs a warning. Runs on the loop that dialed.
    fn on_dial_error(&self, engine: &Engine, failure: DialError<Self::Context>) {
        let _ = engine;
        log::warn!("gnet: dial {} failed: {}", failure.addr, failure.error);
    }

    /// With [`Options::ticker`](crate::Options::ticker): runs on loop 0, first right after
    /// start, then after each returned delay.
    fn on_tick(&self, engine: &Engine) -> (Duration, Action) {
        let _ = engine;
        (Duration::from_secs(1), Action::None)
    }
}
