//! What a datagram socket keeps besides what every connection has: its queue of outgoing
//! datagrams, each kept whole, and whether it serves many peers (a server socket, bound to a
//! listen address) or one (a connected client socket).

use std::net::SocketAddr;

use bytes::Bytes;
use gnet_backends::Datagram;

/// The most datagrams handed to the backend in one batch.
pub(crate) const MAX_BATCH: usize = 1024;

#[derive(Debug)]
pub(crate) struct DatagramState {
    /// A server socket: many peers, no `on_open`/`on_close`, replies go to the sender of the
    /// datagram being handled.
    pub(crate) server: bool,
    queue: Vec<Datagram>,
    queued_bytes: usize,
    /// Datagrams dropped because the queue was past `max_outbound_buffer` (UDP is lossy; a
    /// sender that outruns the socket loses, it does not grow memory).
    pub(crate) dropped: u64,
    /// Truncated datagrams were reported once already.
    pub(crate) warned_truncated: bool,
    /// `Options::max_outbound_buffer`.
    limit: usize,
    /// A batch is with the backend (its bytes may add up to zero: empty datagrams).
    pub(crate) in_flight: bool,
}

impl DatagramState {
    pub(crate) fn new(server: bool, limit: usize) -> Self {
        DatagramState {
            server,
            queue: Vec::new(),
            queued_bytes: 0,
            dropped: 0,
            warned_truncated: false,
            limit,
            in_flight: false,
        }
    }

    /// Bytes queued (not yet handed to the backend).
    pub(crate) fn queued(&self) -> usize {
        self.queued_bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues one datagram for `to` (`None`: the connected peer); drops it when the limit is
    /// reached already (counting what is in flight, `in_flight`). Returns whether it was
    /// queued.
    pub(crate) fn push(&mut self, to: Option<SocketAddr>, data: Bytes, in_flight: usize) -> bool {
        let limit = self.limit;
        let waiting = self.queued_bytes + in_flight;
        if waiting > 0 && waiting + data.len() > limit {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                log::debug!(
                    "gnet: {} datagrams dropped: the queue holds {waiting} bytes (limit {limit})",
                    self.dropped
                );
            }
            return false;
        }
        self.queued_bytes += data.len();
        self.queue.push(Datagram::new(to, data));
        true
    }

    /// The next batch for the backend, and its length in bytes.
    pub(crate) fn take_batch(&mut self) -> (Vec<Datagram>, usize) {
        let batch: Vec<Datagram> = if self.queue.len() <= MAX_BATCH {
            std::mem::take(&mut self.queue)
        } else {
            self.queue.drain(..MAX_BATCH).collect()
        };
        let bytes: usize = batch.iter().map(|d| d.data.len()).sum();
        self.queued_bytes -= bytes;
        self.in_flight = true;
        (batch, bytes)
    }

    /// Drops everything queued.
    pub(crate) fn clear(&mut self) {
        self.queue = Vec::new();
        self.queued_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_batched() {
        let mut d = DatagramState::new(true, 10);
        let to = Some("127.0.0.1:1".parse().unwrap());
        assert!(d.push(to, Bytes::from_static(b"abc"), 0));
        assert!(d.push(to, Bytes::from_static(b"defgh"), 0));
        assert!(!d.push(to, Bytes::from_static(b"ijk"), 0), "past the limit");
        assert_eq!((d.queued(), d.dropped), (8, 1));
        // The first datagram is always taken, however large.
        let mut e = DatagramState::new(false, 10);
        assert!(e.push(None, Bytes::from(vec![0; 100]), 0));
        let (batch, bytes) = d.take_batch();
        assert_eq!((batch.len(), bytes, d.queued()), (2, 8, 0));
        assert!(d.is_empty());
        let mut d = DatagramState::new(true, usize::MAX);
        for _ in 0..(MAX_BATCH + 5) {
            d.push(None, Bytes::from_static(b"x"), 0);
        }
        assert_eq!(d.take_batch().0.len(), MAX_BATCH);
        assert_eq!(d.take_batch().0.len(), 5);
    }
}
