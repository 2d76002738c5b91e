//! Errors.

use std::fmt;
use std::io;

use gnet_backends::BackendKind;

/// What went wrong, with a message that says what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An address could not be understood (`"howdy"`, `"tcp://"`, a path on a tcp address).
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The address names a scheme gnet does not serve.
    UnsupportedProtocol {
        /// The address as given.
        addr: String,
        /// The scheme found.
        scheme: String,
    },
    /// The backend asked for cannot run on this machine.
    BackendUnavailable {
        /// The backend asked for.
        backend: BackendKind,
        /// Why (the kernel's answer, a missing feature, a build without it).
        reason: String,
    },
    /// The options are inconsistent.
    InvalidOptions(String),
    /// The engine is shut down or shutting down.
    EngineShutdown,
    /// The connection is closed (or was, and its slot now serves another connection).
    ConnClosed,
    /// An asynchronous write was refused because the connection's outbound buffer is past its
    /// high-water mark: the peer is not reading fast enough.
    OutboundFull {
        /// Bytes queued when the write was refused.
        buffered: usize,
        /// The configured limit (`Options::max_outbound_buffer`).
        limit: usize,
    },
    /// The peer sent more than the handler consumed, past `Options::max_inbound_buffer`.
    InboundOverflow {
        /// The configured limit.
        limit: usize,
    },
    /// A handler callback panicked; the connection was closed, the loop goes on.
    HandlerPanic(String),
    /// An orderly close could not deliver the queued output before the deadline.
    CloseTimeout {
        /// Bytes that were still queued.
        unsent: usize,
    },
    /// A dial did not connect within `Options::dial_timeout`.
    DialTimeout {
        /// Where it dialed.
        addr: String,
        /// The timeout.
        after: std::time::Duration,
    },
    /// A context type was given that is not the handler's `EventHandler::Context`.
    WrongContext {
        /// The handler's `Context` type.
        expected: &'static str,
        /// The type given.
        given: &'static str,
    },
    /// The operation does not apply to this kind of connection or engine.
    Unsupported(&'static str),
    /// A framing codec rejected its input or an item to encode.
    Codec(crate::codec::CodecError),
    /// An operating-system error.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidAddress { addr, reason } => {
                write!(f, "invalid network address {addr:?}: {reason}")
            }
            Error::UnsupportedProtocol { addr, scheme } => write!(
                f,
                "unsupported protocol {scheme:?} in {addr:?}: use tcp, tcp4, tcp6, udp, udp4, udp6 or unix"
            ),
            Error::BackendUnavailable { backend, reason } => {
                write!(f, "backend {backend} is unavailable: {reason}")
            }
            Error::InvalidOptions(why) => write!(f, "invalid options: {why}"),
            Error::EngineShutdown => f.write_str("the engine is shut down"),
            Error::ConnClosed => f.write_str("the connection is closed"),
            Error::OutboundFull { buffered, limit } => write!(
                f,
                "outbound buffer full: {buffered} bytes queued, limit {limit}; the peer is not reading"
            ),
            Error::InboundOverflow { limit } => write!(
                f,
                "the peer sent more than {limit} bytes that the handler did not consume \
                 (raise Options::max_inbound_buffer if frames can be that large)"
            ),
            Error::HandlerPanic(msg) => write!(f, "event handler panicked: {msg}"),
            Error::CloseTimeout { unsent } => {
                write!(f, "close timed out with {unsent} bytes unsent: the peer stopped reading")
            }
            Error::DialTimeout { addr, after } => {
                write!(f, "dial {addr}: not connected after {after:?} (Options::dial_timeout)")
            }
            Error::WrongContext { expected, given } => write!(
                f,
                "the context type {given} is not the handler's Context type {expected}"
            ),
            Error::Unsupported(what) => write!(f, "unsupported operation: {what}"),
            Error::Codec(why) => write!(f, "codec error: {why}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Codec(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::codec::CodecError> for Error {
    fn from(e: crate::codec::CodecError) -> Self {
        Error::Codec(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// `Result` with gnet's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
