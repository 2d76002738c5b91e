//! `WriteBuf`: the append-only view of an outbound buffer an encoder writes into.

use bytes::BytesMut;

use super::ByteOrder;

/// Where an [`Encoder`](super::Encoder) (or a [`Conn::write_with`](crate::Conn::write_with)
/// closure) writes: the end of a connection's outbound buffer, append-only.
///
/// What was queued before is out of reach: [`WriteBuf::len`], [`WriteBuf::as_mut_slice`] and
/// [`WriteBuf::truncate`] see only the bytes appended through this `WriteBuf`, so an encoder
/// can leave room for a header, write the body, then fill the header in.
#[derive(Debug)]
pub struct WriteBuf<'b> {
    buf: &'b mut BytesMut,
    start: usize,
}

impl<'b> WriteBuf<'b> {
    /// Appends to `buf`, after what it holds (which stays out of reach): to encode outside a
    /// connection, in a test or into a buffer of your own.
    pub fn new(buf: &'b mut BytesMut) -> Self {
        let start = buf.len();
        WriteBuf { buf, start }
    }

    /// Bytes appended so far.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for at least `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// Appends `data`.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Appends one byte.
    pub fn put_u8(&mut self, b: u8) {
        self.buf.extend_from_slice(&[b]);
    }

    /// Appends the low `width` bytes of `value` (`width` at most 8) in `order`.
    ///
    /// # Panics
    /// If `width` is more than 8.
    pub fn put_uint(&mut self, value: u64, width: usize, order: ByteOrder) {
        assert!(width <= 8, "put_uint: width {width} is more than 8 bytes");
        match order {
            ByteOrder::BigEndian => self
                .buf
                .extend_from_slice(&value.to_be_bytes()[8 - width..]),
            ByteOrder::LittleEndian => self.buf.extend_from_slice(&value.to_le_bytes()[..width]),
        }
    }

    /// The bytes appended so far, to be changed in place (a header filled in last).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }

    /// Keeps only the first `len` bytes appended (no effect if fewer were).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(self.start + len);
    }
}

impl std::io::Write for WriteBuf<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Write for WriteBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_after_what_is_there_and_sees_only_its_own_bytes() {
        let mut b = BytesMut::from(&b"old"[..]);
        let mut w = WriteBuf::new(&mut b);
        w.put_u8(0);
        w.extend_from_slice(b"xyz");
        w.as_mut_slice()[0] = 3;
        assert_eq!(w.len(), 4);
        w.truncate(10);
        w.truncate(3);
        w.put_uint(0x0102, 2, ByteOrder::BigEndian);
        w.put_uint(0x0102, 3, ByteOrder::LittleEndian);
        assert_eq!(&b[..], b"old\x03xy\x01\x02\x02\x01\x00");
    }
}
