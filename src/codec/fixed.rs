//! `FixedLengthCodec`: frames of one size.

use super::{CodecError, Decoded, Decoder, Encoder, WriteBuf};

/// Frames of exactly `length` bytes, back to back; the length is also the maximum.
///
/// ```text
///  length     3
///  received   "abcdefgh"
///  frames     "abc", "def"                  ("gh" waits)
/// ```
///
/// Encoding copies an item of exactly `length` bytes.
#[derive(Clone, Copy, Debug)]
pub struct FixedLengthCodec {
    length: usize,
}

impl FixedLengthCodec {
    /// Frames of `length` bytes.
    ///
    /// # Errors
    /// [`CodecError::InvalidConfig`] for a length of 0.
    pub fn new(length: usize) -> Result<Self, CodecError> {
        if length == 0 {
            return Err(CodecError::InvalidConfig("a fixed frame length of 0"));
        }
        Ok(FixedLengthCodec { length })
    }

    /// The frame length.
    pub fn length(&self) -> usize {
        self.length
    }
}

impl Decoder for FixedLengthCodec {
    fn decode<'a>(&mut self, src: &'a [u8]) -> Result<Decoded<'a>, CodecError> {
        Ok(match src.get(..self.length) {
            Some(frame) => Decoded::Frame {
                frame,
                consumed: self.length,
            },
            None => Decoded::NeedMore,
        })
    }

    fn pending_frame_length(&self, _src: &[u8]) -> Option<usize> {
        Some(self.length)
    }
}

impl Encoder<[u8]> for FixedLengthCodec {
    fn encode(&self, item: &[u8], dst: &mut WriteBuf<'_>) -> Result<(), CodecError> {
        if item.len() != self.length {
            return Err(CodecError::WrongLength {
                length: item.len(),
                expected: self.length,
            });
        }
        dst.extend_from_slice(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testing::decode_all;

    #[test]
    fn whole_frames_only() {
        let mut d = FixedLengthCodec::new(3).unwrap();
        let (frames, rest) = decode_all(&mut d, b"abcdefgh").unwrap();
        assert_eq!(frames, [&b"abc"[..], b"def"]);
        assert_eq!(rest, b"gh");
        assert!(FixedLengthCodec::new(0).is_err());
        let mut out = bytes::BytesMut::new();
        assert!(d.encode(&b"ab"[..], &mut WriteBuf::new(&mut out)).is_err());
        d.encode(&b"xyz"[..], &mut WriteBuf::new(&mut out)).unwrap();
        assert_eq!(&out[..], b"xyz");
    }
}
