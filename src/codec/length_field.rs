//! `LengthFieldCodec`: frames whose header holds their length, with netty's parameters.

use super::{CodecError, Decoded, Decoder, Encoder, WriteBuf};

/// The byte order of a length field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ByteOrder {
    /// Most significant byte first (network order).
    #[default]
    BigEndian,
    /// Least significant byte first.
    LittleEndian,
}

/// The width of a length field. 1 to 4 bytes are read unsigned, 8 bytes signed (a negative
/// value is an error), as netty reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldWidth {
    /// 1 byte.
    One,
    /// 2 bytes.
    Two,
    /// 3 bytes.
    Three,
    /// 4 bytes.
    Four,
    /// 8 bytes.
    Eight,
}

impl FieldWidth {
    /// The width in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            FieldWidth::One => 1,
            FieldWidth::Two => 2,
            FieldWidth::Three => 3,
            FieldWidth::Four => 4,
            FieldWidth::Eight => 8,
        }
    }

    /// The largest value the field holds.
    const fn max_value(self) -> u64 {
        match self {
            FieldWidth::Eight => i64::MAX as u64,
            w => (1u64 << (8 * w.bytes())) - 1,
        }
    }
}

/// Frames that carry their length in a header field: netty's `LengthFieldBasedFrameDecoder`
/// parameters, built with [`LengthFieldCodec::builder`].
///
/// # How a frame is found
///
/// - The length field is `width` bytes at `field_offset` (the bytes before it are part of the
///   header and stay in the frame). Call `header` the offset where it ends,
///   `field_offset + width`.
/// - The frame's length is `field + length_adjustment + header`: the field counts the bytes
///   after it, and the adjustment corrects a field that counts something else (the whole
///   frame: `-header`; the body without a trailer, ...).
/// - That length must be at least `header` ([`CodecError::LengthBelowHeader`] otherwise: a
///   negative or impossible length) and at most `max_frame_length`, **the header included**
///   ([`CodecError::FrameTooLong`], reported as soon as the header is in: the body is never
///   awaited).
/// - The first `strip` bytes of the frame are left out of what is returned
///   ([`CodecError::StripBeyondFrame`] if the frame is shorter).
///
/// The arithmetic is done in 128 bits: no field value or adjustment overflows.
///
/// # Worked examples
///
/// Lengths in hex, `"..."` for body bytes.
///
/// A 2-byte length of the body, nothing stripped: the frame comes out whole.
///
/// ```text
/// builder(FieldWidth::Two, 64)                 header = 2, length = 0x0005 + 0 + 2 = 7
///  received  | 00 05 | "HELLO" |
///  frame     | 00 05 | "HELLO" |               7 bytes consumed, 7 returned
/// ```
///
/// The same with the header stripped: only the body comes out.
///
/// ```text
/// builder(FieldWidth::Two, 64).strip(2)
///  received  | 00 05 | "HELLO" |
///  frame             | "HELLO" |               7 bytes consumed, 5 returned
/// ```
///
/// A field that counts the whole frame, itself included: the adjustment takes the header
/// back off.
///
/// ```text
/// builder(FieldWidth::Two, 64).length_adjustment(-2)      length = 0x0007 - 2 + 2 = 7
///  received  | 00 07 | "HELLO" |
///  frame     | 00 07 | "HELLO" |
/// ```
///
/// A type byte before a 3-byte length, both stripped; a zero-length body is a frame too.
///
/// ```text
/// builder(FieldWidth::Three, 64).field_offset(1).strip(4)  header = 4
///  received  | 07 | 00 00 03 | "abc" | 09 | 00 00 00 |
///  frames                    | "abc" |              ||  (an empty frame)
/// ```
///
/// A 4-byte little-endian length followed by a 2-byte checksum the length does not count:
/// the adjustment adds it; strip 4 returns the body and its checksum.
///
/// ```text
/// builder(FieldWidth::Four, 64).byte_order(ByteOrder::LittleEndian)
///     .length_adjustment(2).strip(4)           length = 3 + 2 + 4 = 9
///  received  | 03 00 00 00 | "abc" | c1 c2 |
///  frame                   | "abc" | c1 c2 |
/// ```
///
/// And what is refused:
///
/// ```text
/// builder(FieldWidth::Two, 16)
///  | 00 20 | ...       length 0x20 + 2 = 34 > 16: FrameTooLong { length: 34, max: 16 },
///                      at once, without waiting for the 32 bytes
/// builder(FieldWidth::Two, 16).length_adjustment(-4)
///  | 00 01 | ...       length 1 - 4 + 2 = -1 < 2: LengthBelowHeader { length: -1, header: 2 }
/// builder(FieldWidth::Eight, 16)
///  | ff ff ff ff ff ff ff ff | ...   negative as signed: NegativeLength { field: -1 }
/// builder(FieldWidth::One, 16).strip(4)
///  | 01 | "a" |        a 2-byte frame, 4 to strip: StripBeyondFrame { strip: 4, length: 2 }
/// ```
///
/// # Encoding
///
/// With `field_offset` 0 (the header is the length field alone), [`Encoder`] writes the
/// length field and then the item, the field set so that this codec decodes the frame back:
/// with `strip` equal to the width, it returns the item. With a `field_offset`, the bytes
/// before the field are the protocol's own: encoding is [`CodecError::Unsupported`], write the
/// header yourself with [`Conn::write_with`](crate::Conn::write_with).
#[derive(Clone, Copy, Debug)]
pub struct LengthFieldCodec {
    order: ByteOrder,
    max: usize,
    offset: usize,
    width: FieldWidth,
    adjustment: i64,
    strip: usize,
    /// The length of the frame the input starts with, once its header was read and the
    /// frame found incomplete: the next calls (the same stream, longer) do not read it again.
    pending: Option<usize>,
}

/// Builds a [`LengthFieldCodec`]; every parameter but the width and the maximum has netty's
/// default (big-endian, offset 0, adjustment 0, nothing stripped).
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct LengthFieldBuilder(LengthFieldCodec);

impl LengthFieldCodec {
    /// A codec whose length field is `width` bytes, for frames of at most
    /// `max_frame_length` bytes, header included.
    pub fn builder(width: FieldWidth, max_frame_length: usize) -> LengthFieldBuilder {
        LengthFieldBuilder(LengthFieldCodec {
            order: ByteOrder::BigEndian,
            max: max_frame_length,
            offset: 0,
            width,
            adjustment: 0,
            strip: 0,
            pending: None,
        })
    }

    /// The largest frame accepted, header included.
    pub fn max_frame_length(&self) -> usize {
        self.max
    }

    /// Where the length field ends: the header's length.
    fn header(&self) -> usize {
        self.offset + self.width.bytes()
    }

    /// The field's value; `f` holds the field (`width` bytes).
    fn read_field(&self, f: &[u8]) -> u64 {
        use ByteOrder::{BigEndian as Be, LittleEndian as Le};
        let b = |i: usize| u64::from(f[i]);
        match (self.width, self.order) {
            (FieldWidth::One, _) => b(0),
            (FieldWidth::Two, Be) => b(0) << 8 | b(1),
            (FieldWidth::Two, Le) => b(1) << 8 | b(0),
            (FieldWidth::Three, Be) => b(0) << 16 | b(1) << 8 | b(2),
            (FieldWidth::Three, Le) => b(2) << 16 | b(1) << 8 | b(0),
            (FieldWidth::Four, Be) => u64::from(u32::from_be_bytes([f[0], f[1], f[2], f[3]])),
            (FieldWidth::Four, Le) => u64::from(u32::from_le_bytes([f[0], f[1], f[2], f[3]])),
            (FieldWidth::Eight, Be) => u64::from_be_bytes(f[..8].try_into().unwrap_or([0; 8])),
            (FieldWidth::Eight, Le) => u64::from_le_bytes(f[..8].try_into().unwrap_or([0; 8])),
        }
    }

    /// The frame length the header in `src` declares (`src` holds the header), checked.
    fn frame_length(&self, src: &[u8]) -> Result<usize, CodecError> {
        let header = self.header();
        let field = self.read_field(&src[self.offset..header]);
        if self.width == FieldWidth::Eight && field > i64::MAX as u64 {
            return Err(CodecError::NegativeLength {
                field: field as i64,
            });
        }
        let length = i128::from(field) + i128::from(self.adjustment) + header as i128;
        if length < header as i128 {
            // At least i64::MIN + header: it fits.
            return Err(CodecError::LengthBelowHeader {
                length: length as i64,
                header,
            });
        }
        if length > self.max as i128 {
            return Err(CodecError::FrameTooLong {
                length: u64::try_from(length).unwrap_or(u64::MAX),
                max: self.max,
            });
        }
        let length = length as usize;
        if self.strip > length {
            return Err(CodecError::StripBeyondFrame {
                strip: self.strip,
                length,
            });
        }
        Ok(length)
    }
}

impl LengthFieldBuilder {
    /// The length field's byte order (default big-endian).
    pub fn byte_order(mut self, order: ByteOrder) -> Self {
        self.0.order = order;
        self
    }

    /// Header bytes before the length field (default 0); they stay in the frame unless
    /// stripped.
    pub fn field_offset(mut self, offset: usize) -> Self {
        self.0.offset = offset;
        self
    }

    /// Added to the field's value to get the number of bytes after the field (default 0).
    pub fn length_adjustment(mut self, adjustment: i64) -> Self {
        self.0.adjustment = adjustment;
        self
    }

    /// Bytes left out at the front of every frame returned (default 0): the header's length
    /// to get the body alone.
    pub fn strip(mut self, strip: usize) -> Self {
        self.0.strip = strip;
        self
    }

    /// The codec.
    ///
    /// # Errors
    /// [`CodecError::InvalidConfig`] when the header (offset and field) or the strip does
    /// not fit in the maximum frame length: no frame could ever be decoded.
    pub fn build(self) -> Result<LengthFieldCodec, CodecError> {
        let c = self.0;
        let header = c.offset.checked_add(c.width.bytes());
        if header.map_or(true, |h| h > c.max) {
            return Err(CodecError::InvalidConfig(
                "the length field ends past the maximum frame length",
            ));
        }
        if c.strip > c.max {
            return Err(CodecError::InvalidConfig(
                "more bytes to strip than the maximum frame length",
            ));
        }
        Ok(c)
    }
}

impl Decoder for LengthFieldCodec {
    fn decode<'a>(&mut self, src: &'a [u8]) -> Result<Decoded<'a>, CodecError> {
        let length = match self.pending {
            // The common case of a frame split across receives: one comparison per receive.
            Some(length) if src.len() < length => return Ok(Decoded::NeedMore),
            Some(length) => length,
            None if src.len() < self.header() => return Ok(Decoded::NeedMore),
            None => self.frame_length(src)?,
        };
        match src.get(self.strip..length) {
            Some(frame) => {
                self.pending = None;
                Ok(Decoded::Frame {
                    frame,
                    consumed: length,
                })
            }
            None => {
                self.pending = Some(length);
                Ok(Decoded::NeedMore)
            }
        }
    }

    fn pending_frame_length(&self, _src: &[u8]) -> Option<usize> {
        self.pending
    }

    fn reset(&mut self) {
        self.pending = None;
    }
}

impl Encoder<[u8]> for LengthFieldCodec {
    fn encode(&self, item: &[u8], dst: &mut WriteBuf<'_>) -> Result<(), CodecError> {
        if self.offset != 0 {
            return Err(CodecError::Unsupported(
                "encoding with a field offset: the header bytes before the field are the \
                 protocol's; write them with Conn::write_with",
            ));
        }
        let width = self.width.bytes();
        let overflow = CodecError::LengthFieldOverflow {
            length: item.len(),
            width,
        };
        // frame = field + item, and frame = value + adjustment + width: value = item - adjustment.
        let value = item.len() as i128 - i128::from(self.adjustment);
        if value < 0 || value > i128::from(self.width.max_value()) {
            return Err(overflow);
        }
        let length = width + item.len();
        if length > self.max {
            return Err(CodecError::FrameTooLong {
                length: length as u64,
                max: self.max,
            });
        }
        dst.reserve(length);
        dst.put_uint(value as u64, width, self.order);
        dst.extend_from_slice(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
