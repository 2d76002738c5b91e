//! `LineCodec`: frames ended by `\n` or `\r\n`.

use super::{CodecError, Decoded, Decoder, Encoder, WriteBuf};

/// Lines ended by `\n` or `\r\n`; the frame is the line without its ending.
///
/// `max_length` bounds a line, its ending not counted: a line that cannot end within it is
/// [`CodecError::FrameTooLong`] as soon as `max_length + 2` bytes (or `max_length + 1` not
/// ending in `\r`) are buffered without a `\n`, so a connection never buffers more for one
/// line. The decoder remembers how far it searched an unfinished line, so every byte is
/// searched once however the line is split across receives.
///
/// ```text
///  received   "GET a\r\nPUT b\nPA"
///  frames     "GET a", "PUT b"          ("PA" waits for the rest of its line)
/// ```
///
/// Encoding appends `\n` (or `\r\n`, [`LineCodec::encode_crlf`]) to an item, which must be at
/// most `max_length` bytes and contain no `\n` nor end in `\r` (it would not come back as
/// sent).
#[derive(Clone, Debug)]
pub struct LineCodec {
    max: usize,
    /// Bytes at the front of the unconsumed input known to hold no `\n`.
    searched: usize,
    crlf: bool,
}

impl LineCodec {
    /// Lines of at most `max_length` bytes (ending not counted).
    pub fn new(max_length: usize) -> Self {
        LineCodec {
            max: max_length,
            searched: 0,
            crlf: false,
        }
    }

    /// Whether encoded lines end with `\r\n` rather than `\n` (decoding accepts both).
    pub fn encode_crlf(mut self, crlf: bool) -> Self {
        self.crlf = crlf;
        self
    }

    /// The longest line accepted.
    pub fn max_length(&self) -> usize {
        self.max
    }
}

impl Decoder for LineCodec {
    fn decode<'a>(&mut self, src: &'a [u8]) -> Result<Decoded<'a>, CodecError> {
        // A line of `max` bytes ends at index `max` (`\n`) or `max + 1` (`\r\n`) at the latest.
        let window = src.len().min(self.max.saturating_add(2));
        let from = self.searched.min(window);
        match memchr::memchr(b'\n', &src[from..window]) {
            Some(i) => {
                let nl = from + i;
                self.searched = 0;
                let end = if nl > 0 && src[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                if end > self.max {
                    return Err(too_long(end, self.max));
                }
                Ok(Decoded::Frame {
                    frame: &src[..end],
                    consumed: nl + 1,
                })
            }
            None => {
                self.searched = window;
                let full = window > self.max
                    && (window == self.max.saturating_add(2) || src[self.max] != b'\r');
                if full {
                    return Err(too_long(window, self.max));
                }
                Ok(Decoded::NeedMore)
            }
        }
    }

    fn reset(&mut self) {
        self.searched = 0;
    }
}

fn too_long(length: usize, max: usize) -> CodecError {
    CodecError::FrameTooLong {
        length: length as u64,
        max,
    }
}

impl Encoder<[u8]> for LineCodec {
    fn encode(&self, line: &[u8], dst: &mut WriteBuf<'_>) -> Result<(), CodecError> {
        if line.len() > self.max {
            return Err(too_long(line.len(), self.max));
        }
        if line.last() == Some(&b'\r') || memchr::memchr(b'\n', line).is_some() {
            return Err(CodecError::DelimiterInFrame);
        }
        dst.reserve(line.len() + 2);
        dst.extend_from_slice(line);
        dst.extend_from_slice(if self.crlf { b"\r\n" } else { b"\n" });
        Ok(())
    }
}

impl Encoder<str> for LineCodec {
    fn encode(&self, line: &str, dst: &mut WriteBuf<'_>) -> Result<(), CodecError> {
        Encoder::<[u8]>::encode(self, line.as_bytes(), dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testing::{decode_all, decode_split};

    #[test]
    fn lf_and_crlf_lines_and_an_unfinished_one() {
        let mut d = LineCodec::new(16);
        let (frames, rest) = decode_all(&mut d, b"GET a\r\nPUT b\n\nPA").unwrap();
        assert_eq!(frames, [&b"GET a"[..], b"PUT b", b""]);
        assert_eq!(rest, b"PA");
    }

    #[test]
    fn a_lone_cr_is_kept_inside_the_line() {
        let mut d = LineCodec::new(16);
        let (frames, _) = decode_all(&mut d, b"a\rb\n").unwrap();
        assert_eq!(frames, [&b"a\rb"[..]]);
    }

    #[test]
    fn the_maximum_is_the_line_without_its_ending() {
        let mut d = LineCodec::new(3);
        let (frames, _) = decode_all(&mut d, b"abc\nabc\r\n").unwrap();
        assert_eq!(frames.len(), 2);
        // Four bytes with no `\n`: cannot end within 3.
        assert!(matches!(
            LineCodec::new(3).decode(b"abcd"),
            Err(CodecError::FrameTooLong { length: 4, max: 3 })
        ));
        // `abc\r` may still end as `abc\r\n`.
        assert!(matches!(
            LineCodec::new(3).decode(b"abc\r"),
            Ok(Decoded::NeedMore)
        ));
        assert!(LineCodec::new(3).decode(b"abc\r\r").is_err());
        assert!(LineCodec::new(3).decode(b"abcd\n").is_err());
        assert!(LineCodec::new(0).decode(b"\r\n").is_ok());
    }

    #[test]
    fn split_anywhere_gives_the_same_lines_searching_each_byte_once() {
        let input = b"one\r\ntwo\nthree and more\n\r\n";
        let whole = decode_all(&mut LineCodec::new(64), input).unwrap();
        for cut in 0..input.len() {
            let split = decode_split(&mut LineCodec::new(64), input, &[cut]).unwrap();
            assert_eq!(split, whole, "cut at {cut}");
        }
    }

    #[test]
    fn encodes_with_the_chosen_ending_and_refuses_what_would_not_come_back() {
        let mut out = bytes::BytesMut::new();
        let c = LineCodec::new(4);
        c.encode(&b"ab"[..], &mut WriteBuf::new(&mut out)).unwrap();
        c.clone()
            .encode_crlf(true)
            .encode("cd", &mut WriteBuf::new(&mut out))
            .unwrap();
        assert_eq!(&out[..], b"ab\ncd\r\n");
        let mut w = WriteBuf::new(&mut out);
        assert!(matches!(
            c.encode(&b"a\nb"[..], &mut w),
            Err(CodecError::DelimiterInFrame)
        ));
        assert!(c.encode(&b"a\r"[..], &mut w).is_err());
        assert!(c.encode(&b"abcde"[..], &mut w).is_err());
    }
}
