//! What a codec can find wrong.

use std::fmt;

/// Why a codec rejected its input (decoding), an item (encoding) or its configuration.
///
/// A decoding error closes the connection it happened on
/// ([`CloseCause::Codec`](crate::CloseCause::Codec)), never the others.
#[derive(Debug)]
#[non_exhaustive]
pub enum CodecError {
    /// A frame is longer than the codec's maximum. For a length-field frame `length` is the
    /// length its header declares (header included, saturated at `u64::MAX`); for a
    /// delimited frame, how many bytes were searched without finding its end (the frame is
    /// at least that long).
    FrameTooLong {
        /// The frame's length, or a lower bound of it.
        length: u64,
        /// The codec's maximum.
        max: usize,
    },
    /// An 8-byte length field holds a negative number (read as signed, as netty does).
    NegativeLength {
        /// The field's value.
        field: i64,
    },
    /// The length field, with the length adjustment, describes a frame shorter than the
    /// header that holds it (a negative or impossible length).
    LengthBelowHeader {
        /// The frame length it gives (field + adjustment + header).
        length: i64,
        /// Where the length field ends: the least a frame can be.
        header: usize,
    },
    /// More bytes are to be stripped than the frame holds.
    StripBeyondFrame {
        /// The bytes to strip.
        strip: usize,
        /// The frame's length.
        length: usize,
    },
    /// An item given to an encoder contains the delimiter (or a line ends in `\r`): the
    /// peer would see two frames, or another one.
    DelimiterInFrame,
    /// An item given to a fixed-length encoder is not of that length.
    WrongLength {
        /// The item's length.
        length: usize,
        /// The codec's frame length.
        expected: usize,
    },
    /// An item's length does not fit the length field (or is negative after the length
    /// adjustment).
    LengthFieldOverflow {
        /// The item's length.
        length: usize,
        /// The length field's width in bytes.
        width: usize,
    },
    /// The codec cannot do this with its configuration.
    Unsupported(&'static str),
    /// A codec's configuration is invalid.
    InvalidConfig(&'static str),
    /// An error of a codec outside gnet.
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::FrameTooLong { length, max } => write!(
                f,
                "frame too long: {length} bytes or more, the maximum is {max}"
            ),
            CodecError::NegativeLength { field } => {
                write!(f, "negative length field: {field}")
            }
            CodecError::LengthBelowHeader { length, header } => write!(
                f,
                "impossible frame length {length}: shorter than its {header}-byte header \
                 (check the length adjustment)"
            ),
            CodecError::StripBeyondFrame { strip, length } => {
                write!(f, "cannot strip {strip} bytes from a frame of {length}")
            }
            CodecError::DelimiterInFrame => {
                f.write_str("the item contains the delimiter: the peer would see another frame")
            }
            CodecError::WrongLength { length, expected } => write!(
                f,
                "an item of {length} bytes for a codec of fixed {expected}-byte frames"
            ),
            CodecError::LengthFieldOverflow { length, width } => write!(
                f,
                "an item of {length} bytes does not fit a {width}-byte length field"
            ),
            CodecError::Unsupported(what) => write!(f, "unsupported: {what}"),
            CodecError::InvalidConfig(why) => write!(f, "invalid codec configuration: {why}"),
            CodecError::Other(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodecError::Other(e) => Some(&**e),
            _ => None,
        }
    }
}
