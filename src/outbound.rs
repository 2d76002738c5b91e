//! A connection's outbound queue: small writes coalesce, `Bytes` pass through without a copy.
//!
//! Public (though hidden from the docs) so the criterion benchmarks can measure it.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::codec::WriteBuf;

/// Bytes written by the handler and not yet handed to the backend.
///
/// Writes of borrowed slices are appended to `tail`, which is sealed into a segment once it
/// holds [`CHUNK`] bytes: a large backlog is a list of chunks, never one buffer that is
/// reallocated (and copied) as it doubles, and every chunk stays below the allocator's `mmap`
/// threshold, so a busy loop reuses heap memory instead of faulting in fresh pages. A
/// zero-copy [`Bytes`] seals the tail and is queued as its own segment. [`Outbound::take`] hands
/// everything over as frozen segments, in order, for one backend send.
#[derive(Debug, Default)]
pub struct Outbound {
    segs: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

/// Buffers of finished sends, kept by a loop for its connections' next writes.
///
/// Without it every reply allocates its buffer and the backend frees it once sent; on a
/// busy loop the allocator then trims and regrows its heap, and each reply pays page faults
/// for fresh zeroed memory. Bounded: at most [`BufPool::MAX_BUFS`] buffers of at most
/// [`CHUNK`] bytes (2 MiB per loop).
#[derive(Debug, Default)]
pub struct BufPool {
    bufs: Vec<BytesMut>,
    vecs: Vec<Vec<Bytes>>,
}

impl BufPool {
    /// The most buffers kept.
    pub const MAX_BUFS: usize = 32;
    /// Buffers smaller than this are not worth keeping.
    const MIN_CAPACITY: usize = 1024;

    /// Takes back the buffers of a finished send: those no longer shared are kept for reuse.
    pub fn put(&mut self, mut bufs: Vec<Bytes>) {
        for b in bufs.drain(..) {
            if self.bufs.len() >= Self::MAX_BUFS {
                break;
            }
            if let Ok(mut m) = b.try_into_mut() {
                if (Self::MIN_CAPACITY..=CHUNK).contains(&m.capacity()) {
                    m.clear();
                    self.bufs.push(m);
                }
            }
        }
        if self.vecs.len() < Self::MAX_BUFS && bufs.capacity() <= 16 {
            self.vecs.push(bufs);
        }
    }

    /// Buffers held.
    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    /// Whether no buffer is held.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// An empty buffer with room for at least `n` bytes (`n <= CHUNK`).
    fn buffer(&mut self, n: usize) -> BytesMut {
        match self.bufs.last() {
            Some(b) if b.capacity() >= n => self.bufs.pop().unwrap_or_default(),
            _ => BytesMut::with_capacity(n),
        }
    }

    fn vec(&mut self) -> Vec<Bytes> {
        self.vecs.pop().unwrap_or_default()
    }
}

/// The size at which the coalescing buffer is sealed into a segment.
pub const CHUNK: usize = 64 * 1024;

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
        self.write_pooled(data, &mut BufPool::default());
    }

    /// [`Outbound::write`], taking a new buffer from `pool` when one is needed.
    pub fn write_pooled(&mut self, mut data: &[u8], pool: &mut BufPool) {
        self.len += data.len();
        while !data.is_empty() {
            if self.tail.len() == CHUNK {
                self.seal();
            }
            let n = data.len().min(CHUNK - self.tail.len());
            let (len, cap) = (self.tail.len(), self.tail.capacity());
            if cap == 0 {
                self.tail = pool.buffer(n);
            } else if cap - len < n {
                // Grown by hand (sized for this write at first, the common case being one
                // message per send; doubling after), so the buffer never exceeds `CHUNK`.
                let mut grown = BytesMut::with_capacity((len + n).max(2 * cap).min(CHUNK));
                grown.extend_from_slice(&self.tail);
                self.tail = grown;
            }
            self.tail.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    /// Lets `f` append to the queue in place (an encoder writing a frame): no buffer of its
    /// own to copy afterwards. What `f` appended is taken back if it fails. Returns how many
    /// bytes it appended.
    ///
    /// What one call appends is contiguous: a frame larger than [`CHUNK`] makes a larger
    /// buffer (which is not pooled afterwards).
    ///
    /// # Errors
    /// What `f` returns.
    pub fn append_with<E>(
        &mut self,
        pool: &mut BufPool,
        f: impl FnOnce(&mut WriteBuf<'_>) -> Result<(), E>,
    ) -> Result<usize, E> {
        if self.tail.len() >= CHUNK {
            self.seal();
        }
        if self.tail.capacity() == 0 {
            self.tail = pool.buffer(BufPool::MIN_CAPACITY);
        }
        let start = self.tail.len();
        let r = f(&mut WriteBuf::new(&mut self.tail));
        let n = self.tail.len() - start;
        if let Err(e) = r {
            self.tail.truncate(start);
            return Err(e);
        }
        self.len += n;
        if self.tail.len() >= CHUNK {
            self.seal();
        }
        Ok(n)
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
            // Freezing the whole buffer (rather than splitting it) keeps one allocation per
            // chunk, which `BufPool::put` can take back once the send is done.
            self.segs.push_back(std::mem::take(&mut self.tail).freeze());
        }
    }

    /// Takes up to a bounded number of segments for one send. Empty when nothing is queued.
    pub fn take(&mut self) -> (Vec<Bytes>, usize) {
        self.take_pooled(&mut BufPool::default())
    }

    /// [`Outbound::take`], reusing a batch vector from `pool`.
    pub fn take_pooled(&mut self, pool: &mut BufPool) -> (Vec<Bytes>, usize) {
        let mut batch = pool.vec();
        if self.segs.is_empty() {
            // The common case: only coalesced writes, handed over without touching `segs`.
            if !self.tail.is_empty() {
                batch.push(std::mem::take(&mut self.tail).freeze());
            }
        } else {
            self.seal();
            let n = self.segs.len().min(MAX_SEGS_PER_SEND);
            batch.extend(self.segs.drain(..n));
            if self.segs.is_empty() {
                // An idle connection keeps no outbound memory.
                self.segs = VecDeque::new();
            }
        }
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
    fn large_backlogs_are_chunked() {
        let mut o = Outbound::default();
        let data: Vec<u8> = (0..(3 * CHUNK + 100)).map(|i| i as u8).collect();
        for piece in data.chunks(1000) {
            o.write(piece);
        }
        o.write(&data[..10]);
        assert_eq!(o.len(), data.len() + 10);
        let (batch, n) = o.take();
        assert_eq!(n, data.len() + 10);
        assert_eq!(batch.len(), 4);
        assert!(batch.iter().all(|b| b.len() <= CHUNK));
        // Growth by doubling from a power of two never allocates past a chunk.
        let mut o2 = Outbound::default();
        for piece in data.chunks(3000) {
            o2.write(piece);
            assert!(o2.tail.capacity() <= CHUNK, "{}", o2.tail.capacity());
        }
        let flat: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(&flat[..data.len()], &data[..]);
        assert_eq!(&flat[data.len()..], &data[..10]);
        // One write larger than a chunk is split too.
        o.write(&data);
        let (batch, _) = o.take();
        assert_eq!(
            batch.iter().map(|b| b.len()).collect::<Vec<_>>(),
            [CHUNK, CHUNK, CHUNK, 100]
        );
    }

    #[test]
    fn pool_reuses_the_memory_of_finished_sends_and_stays_bounded() {
        let mut pool = BufPool::default();
        let mut o = Outbound::default();
        o.write_pooled(&[7u8; 5000], &mut pool);
        let (batch, n) = o.take_pooled(&mut pool);
        assert_eq!(n, 5000);
        let addr = batch[0].as_ptr();
        // Still shared (a clone is alive): not kept.
        let clone = batch[0].clone();
        pool.put(batch.clone());
        assert!(pool.is_empty());
        drop(clone);
        pool.put(batch);
        assert_eq!(pool.len(), 1);
        // The next write lands in the same memory, and the bytes are only the new ones.
        o.write_pooled(b"fresh", &mut pool);
        let (batch, _) = o.take_pooled(&mut pool);
        assert_eq!(batch[0].as_ptr(), addr);
        assert_eq!(&batch[0][..], b"fresh");
        assert!(pool.is_empty());
        // Small buffers are not kept; the pool never holds more than its bound.
        pool.put(vec![Bytes::from(vec![1u8; 10])]);
        assert!(pool.is_empty());
        pool.put((0..100).map(|_| Bytes::from(vec![0u8; 4096])).collect());
        assert_eq!(pool.len(), BufPool::MAX_BUFS);
    }

    #[test]
    fn append_with_writes_in_place_after_queued_bytes_and_takes_back_a_failure() {
        let mut pool = BufPool::default();
        let mut o = Outbound::default();
        o.write(b"ab");
        let n = o
            .append_with(&mut pool, |w| {
                w.extend_from_slice(b"cd");
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!(n, 2);
        let r = o.append_with(&mut pool, |w| {
            w.extend_from_slice(b"half a frame");
            Err("bad")
        });
        assert_eq!(r, Err("bad"));
        assert_eq!(o.len(), 4);
        let (batch, n) = o.take();
        assert_eq!((batch.len(), n, &batch[0][..]), (1, 4, &b"abcd"[..]));
        // A frame past a chunk is sealed after it, whole.
        o.append_with(&mut pool, |w| {
            w.extend_from_slice(&[1; CHUNK + 10]);
            Ok::<_, ()>(())
        })
        .unwrap();
        o.write(b"z");
        let (batch, n) = o.take();
        assert_eq!(n, CHUNK + 11);
        assert_eq!(batch.len(), 2);
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
