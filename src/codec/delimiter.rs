//! `DelimiterCodec`: frames ended by any byte string.

use memchr::memmem::Finder;

use super::{CodecError, Decoded, Decoder, Encoder, WriteBuf};

/// Frames ended by a delimiter of one or more bytes; the frame is what precedes it.
///
/// `max_length` bounds a frame, its delimiter not counted: once `max_length` bytes plus the
/// delimiter's length are buffered without a delimiter, it is [`CodecError::FrameTooLong`].
/// The decoder remembers how far it searched an unfinished frame (less the delimiter's
/// length minus one, which a delimiter split across receives may start in), so no byte is
/// searched twice more than that.
///
/// ```text
///  delimiter  "||"
///  received   "a||bc||||d|"
///  frames     "a", "bc", ""                 ("d|" waits)
/// ```
///
/// Encoding appends the delimiter to an item, which must be at most `max_length` bytes and
/// must not contain the delimiter.
#[derive(Clone, Debug)]
pub struct DelimiterCodec {
    finder: Finder<'static>,
    max: usize,
    searched: usize,
}

impl DelimiterCodec {
    /// Frames ended by `delimiter`, of at most `max_length` bytes (delimiter not counted).
    ///
    /// # Errors
    /// [`CodecError::InvalidConfig`] for an empty delimiter.
    pub fn new(delimiter: &[u8], max_length: usize) -> Result<Self, CodecError> {
        if delimiter.is_empty() {
            return Err(CodecError::InvalidConfig("an empty delimiter"));
        }
        Ok(DelimiterCodec {
            finder: Finder::new(delimiter).into_owned(),
            max: max_length,
            searched: 0,
        })
    }

    /// The delimiter.
    pub fn delimiter(&self) -> &[u8] {
        self.finder.needle()
    }

    /// The longest frame accepted.
    pub fn max_length(&self) -> usize {
        self.max
    }
}

impl Decoder for DelimiterCodec {
    fn decode<'a>(&mut self, src: &'a [u8]) -> Result<Decoded<'a>, CodecError> {
        let dlen = self.finder.needle().len();
        let window = src.len().min(self.max.saturating_add(dlen));
        // A delimiter may have begun in the last `dlen - 1` bytes searched.
        let from = self.searched.saturating_sub(dlen - 1).min(window);
        match self.finder.find(&src[from..window]) {
            Some(i) => {
                self.searched = 0;
                let end = from + i;
                Ok(Decoded::Frame {
                    frame: &src[..end],
                    consumed: end + dlen,
                })
            }
            None if window == self.max.saturating_add(dlen) => Err(CodecError::FrameTooLong {
                length: window as u64,
                max: self.max,
            }),
            None => {
                self.searched = window;
                Ok(Decoded::NeedMore)
            }
        }
    }

    fn reset(&mut self) {
        self.searched = 0;
    }
}

impl Encoder<[u8]> for DelimiterCodec {
    fn encode(&self, item: &[u8], dst: &mut WriteBuf<'_>) -> Result<(), CodecError> {
        if item.len() > self.max {
            return Err(CodecError::FrameTooLong {
                length: item.len() as u64,
                max: self.max,
            });
        }
        let delimiter = self.finder.needle();
        if self.finder.find(item).is_some() || straddles(item, delimiter) {
            return Err(CodecError::DelimiterInFrame);
        }
        dst.reserve(item.len() + delimiter.len());
        dst.extend_from_slice(item);
        dst.extend_from_slice(delimiter);
        Ok(())
    }
}

/// Whether a delimiter begins in the last bytes of `item` and ends in the `delimiter` appended
/// to it (as "aa" does after "xa"): the peer would see the frame end early.
fn straddles(item: &[u8], delimiter: &[u8]) -> bool {
    let k = item.len().min(delimiter.len() - 1);
    (1..=k).any(|j| {
        item[item.len() - j..] == delimiter[..j]
            && delimiter[j..] == delimiter[..delimiter.len() - j]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testing::{decode_all, decode_split};

    #[test]
    fn multi_byte_delimiters_and_empty_frames() {
        let mut d = DelimiterCodec::new(b"||", 8).unwrap();
        let (frames, rest) = decode_all(&mut d, b"a||bc||||d|").unwrap();
        assert_eq!(frames, [&b"a"[..], b"bc", b""]);
        assert_eq!(rest, b"d|");
    }

    #[test]
    fn a_delimiter_split_across_receives_is_found() {
        let input = b"abc\r\n\r\ndef\r\n\r\n";
        let mut d = DelimiterCodec::new(b"\r\n\r\n", 8).unwrap();
        let whole = decode_all(&mut d, input).unwrap();
        assert_eq!(whole.0, [&b"abc"[..], b"def"]);
        for cut in 0..input.len() {
            for cut2 in cut..input.len() {
                let mut d = DelimiterCodec::new(b"\r\n\r\n", 8).unwrap();
                let split = decode_split(&mut d, input, &[cut, cut2]).unwrap();
                assert_eq!(split, whole, "cuts at {cut}, {cut2}");
            }
        }
    }

    #[test]
    fn too_long_once_the_delimiter_cannot_fit() {
        let mut d = DelimiterCodec::new(b"--", 3).unwrap();
        assert!(matches!(d.decode(b"abc-"), Ok(Decoded::NeedMore)));
        assert!(matches!(
            d.decode(b"abc--"),
            Ok(Decoded::Frame { consumed: 5, .. })
        ));
        let mut d = DelimiterCodec::new(b"--", 3).unwrap();
        assert!(matches!(
            d.decode(b"abcd-"),
            Err(CodecError::FrameTooLong { length: 5, max: 3 })
        ));
        assert!(DelimiterCodec::new(b"", 3).is_err());
    }

    #[test]
    fn encoding_refuses_items_that_would_not_come_back() {
        let c = DelimiterCodec::new(b"ab", 8).unwrap();
        let mut out = bytes::BytesMut::new();
        c.encode(&b"xyz"[..], &mut WriteBuf::new(&mut out)).unwrap();
        assert_eq!(&out[..], b"xyzab");
        let mut w = WriteBuf::new(&mut out);
        assert!(c.encode(&b"xaby"[..], &mut w).is_err());
        assert!(
            c.encode(&b"xa"[..], &mut w).is_ok(),
            "xaab: the first ab is the delimiter"
        );
        let aa = DelimiterCodec::new(b"aa", 8).unwrap();
        assert!(
            aa.encode(&b"xa"[..], &mut w).is_err(),
            "xaaa would read as x"
        );
        assert!(c.encode(&[b'x'; 9][..], &mut w).is_err());
    }
}
