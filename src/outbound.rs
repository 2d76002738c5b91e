//! A connection's outbound queue: small writes coalesce, `Bytes` pass through without a copy.
//!
//! Public (though hidden from the docs) so the criterion benchmarks can measure it.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Bytes written by the handler and not yet handed to the backend.
///
/// Writes of borrowed slices are appended to `tail` (one allocation grows with them); a
/// zero-copy [`Bytes`] seals the tail and is queued as its own segment. [`Outbound::take`] hands
/// everything over as frozen segments, in order, for one backend send.
#[derive(Debug, Default)]
pub struct Outbound {
    segs: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

/// The most segments handed to one send.
///
/// Segments handed to one send are capped so a send stays a bounded `writev`/`SENDMSG`.
pub const MAX_SEGS_PER_SEND: usize = 512;

impl Outbound {
    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a copy of `data`, coalesced with neighbouring writes.
    pub fn write(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.tail.extend_from_slice(data);
        self.len += data.len();
    }

    /// Queues `data` as its own segment (small buffers are copied instead).
    pub fn write_bytes(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        // Small buffers are cheaper to copy than to carry as their own iovec.
        if data.len() <= 256 {
            self.write(&data);
            return;
        }
        self.seal();
        self.len += data.len();
        self.segs.push_back(data);
    }

    fn seal(&mut self) {
        if !self.tail.is_empty() {
            // Freezing the whole buffer (rather than splitting it) keeps it a plain vector:
            // no shared header is allocated.
            self.segs.push_back(std::mem::take(&mut self.tail).freeze());
        }
    }

    /// Takes up to a bounded number of segments for one send. Empty when nothing is queued.
    pub fn take(&mut self) -> (Vec<Bytes>, usize) {
        let batch: Vec<Bytes> = if self.segs.is_empty() {
            // The common case: only coalesced writes, handed over without touching `segs`.
            if self.tail.is_empty() {
                Vec::new()
            } else {
                vec![std::mem::take(&mut self.tail).freeze()]
            }
        } else {
            self.seal();
            let n = self.segs.len().min(MAX_SEGS_PER_SEND);
            let batch = self.segs.drain(..n).collect();
            if self.segs.is_empty() {
                // An idle connection keeps no outbound memory.
                self.segs = VecDeque::new();
            }
            batch
        };
        let bytes: usize = batch.iter().map(Bytes::len).sum();
        self.len -= bytes;
        (batch, bytes)
    }

    /// Drops everything queued (the connection failed).
    pub fn clear(&mut self) -> usize {
        let n = self.len;
        *self = Outbound::default();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_and_keeps_order() {
        let mut o = Outbound::default();
        o.write(b"ab");
        o.write(b"cd");
        o.write_bytes(Bytes::from(vec![b'x'; 1000]));
        o.write(b"ef");
        assert_eq!(o.len(), 1006);
        let (batch, n) = o.take();
        assert_eq!(n, 1006);
        let flat: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(&flat[..4], b"abcd");
        assert_eq!(&flat[1004..], b"ef");
        assert_eq!(batch.len(), 3);
        assert!(o.is_empty());
        assert_eq!(o.take().1, 0);
    }

    #[test]
    fn caps_segments_per_send() {
        let mut o = Outbound::default();
        for _ in 0..(MAX_SEGS_PER_SEND + 10) {
            o.write_bytes(Bytes::from(vec![1u8; 300]));
        }
        let (b1, _) = o.take();
        assert_eq!(b1.len(), MAX_SEGS_PER_SEND);
        let (b2, _) = o.take();
        assert_eq!(b2.len(), 10);
        assert!(o.is_empty());
    }
}
