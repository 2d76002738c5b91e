//! Framing codecs: cut a byte stream into frames, and write frames into a connection's
//! outbound queue.
//!
//! - A [`Decoder`] reads the **borrowed** received bytes and returns a frame borrowed from
//!   them, with how many bytes it consumed, or [`Decoded::NeedMore`], or a [`CodecError`].
//!   Decoding never copies: a receive that holds whole frames is handed out frame by frame
//!   from the backend's own buffer; only an unfinished frame at its end stays in the
//!   connection's inbound buffer, as any unconsumed input does.
//! - An [`Encoder`] appends a frame straight into the connection's outbound queue through a
//!   [`WriteBuf`] ([`Conn::write_with`](crate::Conn::write_with),
//!   [`Conn::encode`](crate::Conn::encode)): no temporary buffer copied afterwards.
//! - [`Conn::decode_each`](crate::Conn::decode_each) is the framed adapter: one callback per
//!   frame, the replies of one receive sent together in one flush, a decoding error closing
//!   that connection only, with [`CloseCause::Codec`](crate::CloseCause::Codec).
//!
//! The built-in codecs decode and encode, and each has a maximum frame length that cannot be
//! left out: [`LineCodec`] (`\n` and `\r\n`), [`DelimiterCodec`] (any byte string),
//! [`FixedLengthCodec`] and [`LengthFieldCodec`] (netty's length-field parameters).
//!
//! # Examples
//!
//! A line-based echo server: each line comes back with `\r\n`, a line longer than 1 KiB
//! closes the connection.
//!
//! ```no_run
//! use gnet::codec::LineCodec;
//! use gnet::{Action, Conn, EventHandler, Options};
//!
//! struct Lines {
//!     codec: LineCodec,
//! }
//!
//! impl EventHandler for Lines {
//!     // The decoder is per connection: it remembers how far it searched.
//!     type Context = LineCodec;
//!
//!     fn on_traffic(&self, c: &mut Conn<'_, LineCodec>) -> Action {
//!         c.decode_each(
//!             |ctx| ctx.get_or_insert_with(|| self.codec.clone()),
//!             |c, line| {
//!                 let _ = c.encode(&self.codec, line);
//!                 Action::None
//!             },
//!         )
//!     }
//! }
//!
//! let codec = LineCodec::new(1024).encode_crlf(true);
//! gnet::run(Lines { codec }, "tcp://127.0.0.1:9000", Options::new()).unwrap();
//! ```

mod delimiter;
mod error;
mod fixed;
mod length_field;
mod line;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testing;
mod write_buf;

pub use delimiter::DelimiterCodec;
pub use error::CodecError;
pub use fixed::FixedLengthCodec;
pub use length_field::{ByteOrder, FieldWidth, LengthFieldBuilder, LengthFieldCodec};
pub use line::LineCodec;
pub use write_buf::WriteBuf;

/// What one call of [`Decoder::decode`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Decoded<'a> {
    /// A whole frame. `frame` is borrowed from the bytes given to `decode` (a part of their
    /// first `consumed` bytes: the delimiter or a stripped header is left out), and
    /// `consumed`, at least 1, is how many bytes of the input the frame took.
    Frame {
        /// The frame's bytes.
        frame: &'a [u8],
        /// How many input bytes it took, `1..=src.len()`.
        consumed: usize,
    },
    /// The input holds no whole frame yet; nothing is consumed. Call again when more bytes
    /// have arrived, with the same bytes in front.
    NeedMore,
}

/// Cuts frames out of a byte stream, without copying them.
///
/// # Contract
///
/// `decode(src)` looks at `src`, the stream's unconsumed bytes, and returns one of:
///
/// - `Ok(Decoded::Frame { frame, consumed })`: the stream starts with a whole frame;
///   `frame` is borrowed from `src`, `1 <= consumed <= src.len()`. The caller drops the first
///   `consumed` bytes and calls again with the rest for the next frame.
/// - `Ok(Decoded::NeedMore)`: no whole frame yet and nothing wrong so far. The caller keeps
///   every byte and calls again once more have arrived: the next `src` starts with the same
///   bytes (the "header arriving alone" case loses nothing).
/// - `Err(e)`: the stream is malformed (a frame too long, a length that cannot be). The
///   stream cannot be resynchronised reliably; [`Conn::decode_each`](crate::Conn::decode_each)
///   closes the connection with the error. After an error the decoder's state is
///   unspecified until [`Decoder::reset`].
///
/// The caller calls `decode` with the stream in order: each `src` starts right after what the
/// previous calls consumed, and extends (never changes) what the previous call was shown when
/// that returned `NeedMore`. A decoder may rely on it to remember how far it already searched
/// (so that a long frame arriving in small pieces is not rescanned from its start each time);
/// it must never hold on to the bytes themselves (the borrow does not outlive the call).
///
/// A decoder never returns `NeedMore` for input that can no longer become a valid frame
/// within its maximum length, so the bytes a connection buffers for an unfinished frame stay
/// below that maximum (plus a delimiter).
pub trait Decoder {
    /// Decodes the frame at the start of `src`; see the trait's contract.
    ///
    /// # Errors
    /// A [`CodecError`] saying what is wrong with the input.
    fn decode<'a>(&mut self, src: &'a [u8]) -> Result<Decoded<'a>, CodecError>;

    /// After [`Decoded::NeedMore`] for `src`: the length of the frame `src` begins with, when
    /// the decoder knows it already (a length field was read), counting every byte from the
    /// start of `src`; `None` (the default) when it does not. The connection then makes room
    /// for the whole frame at once when it buffers the start of it, instead of growing its
    /// buffer (and copying what it holds) as the rest arrives. A hint only: it is bounded by
    /// [`Options::max_inbound_buffer`](crate::Options::max_inbound_buffer).
    fn pending_frame_length(&self, src: &[u8]) -> Option<usize> {
        let _ = src;
        None
    }

    /// Forgets what the decoder remembers of the current stream (how far it searched), to
    /// start on a new stream or after an error. The built-in decoders keep nothing else.
    fn reset(&mut self) {}
}

/// Writes a frame of `Item` (`[u8]` for the built-in codecs) into a connection's outbound
/// queue.
///
/// # Contract
///
/// `encode` appends the whole encoded frame to `dst`, or returns an error having appended
/// nothing that stays: [`Conn::write_with`](crate::Conn::write_with) takes back what an
/// encoder appended before it failed, so a half-written frame never reaches the peer. The
/// encoder takes `&self`: the built-in encoders are configuration only, and one value (in
/// the handler, say) serves every connection of every loop.
pub trait Encoder<Item: ?Sized> {
    /// Appends the frame for `item` to `dst`.
    ///
    /// # Errors
    /// A [`CodecError`] when `item` cannot be encoded (too long, containing the delimiter,
    /// the wrong size).
    fn encode(&self, item: &Item, dst: &mut WriteBuf<'_>) -> Result<(), CodecError>;
}
