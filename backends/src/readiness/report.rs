//! Reports kept for later: produced outside `poll` (a send that finished at once, a close),
//! delivered by the next `poll`.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::contract::{Id, Sink};

/// An event produced outside `poll` (or kept for later), reported by the next `poll`.
#[derive(Debug)]
pub(super) enum Report {
    /// A send finished: its total, and its buffers for [`Sink::reclaim`].
    Sent(Id, usize, Vec<Bytes>),
    Failed(Id, io::Error),
    Closed(Id),
    /// A datagram the kernel refused (its destination), or an error the network reported for
    /// the socket (`None`).
    DatagramError(Id, Option<SocketAddr>, io::Error),
    /// A connect that ended inside `connect` (delivered by `Epoll::deliver_deferred`, which
    /// forgets the id as it reports it).
    Connected(Id, io::Result<()>),
}

impl Report {
    /// The id the report is about.
    pub(super) fn id(&self) -> Id {
        match self {
            Report::Sent(id, ..)
            | Report::Failed(id, _)
            | Report::Closed(id)
            | Report::DatagramError(id, ..)
            | Report::Connected(id, _) => *id,
        }
    }

    pub(super) fn deliver<S: Sink>(self, sink: &mut S) {
        match self {
            Report::Sent(id, n, bufs) => {
                sink.sent(id, n);
                sink.reclaim(bufs);
            }
            Report::Failed(id, e) => sink.failed(id, e),
            Report::Closed(id) => sink.closed(id),
            Report::DatagramError(id, to, e) => sink.datagram_error(id, to, e),
            Report::Connected(id, result) => sink.connected(id, result),
        }
    }
}
