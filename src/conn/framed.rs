//! `Conn`'s codec methods: the framed adapter (`decode_each`) and writing in place
//! (`write_with`, `encode`).

use super::Conn;
use crate::codec::{CodecError, Decoded, Decoder, Encoder, WriteBuf};
use crate::handler::{Action, CloseCause};

impl<'a, C> Conn<'a, C> {
    /// The framed adapter: decodes every whole frame buffered and calls `on_frame` for each,
    /// in order, with the frame borrowed from the received bytes (no copy). `decoder` picks
    /// the connection's decoder from its context (creating it on first use if it likes:
    /// `|ctx| ctx.get_or_insert_with(..)`), since a decoder remembers the stream it decodes.
    ///
    /// - What `on_frame` writes is queued, and **everything written for the frames of one
    ///   receive goes out in one flush** when the callback returns: within `decode_each` no
    ///   write takes the direct path
    ///   ([`Options::direct_write_min`](crate::Options::direct_write_min)), so a reply is
    ///   never sent on its own while later frames are still being answered.
    /// - Bytes of an unfinished frame stay buffered, as unconsumed input always does, and
    ///   come back with the next receive; the decoder then does not search them again. When
    ///   the decoder knows the unfinished frame's length
    ///   ([`Decoder::pending_frame_length`]: a length field, a fixed length), the loop gives
    ///   the buffer room for it at once, buffers a receive that cannot complete it without
    ///   calling `on_traffic`, and copies from the receive that does only up to the frame's
    ///   end: that frame comes in one `on_traffic`, the frames after it, where they lie, in a
    ///   second one for the same receive (their replies still leave in the same flush).
    /// - A frame `on_frame` answers with anything but [`Action::None`] is the last one
    ///   handled; that action is returned, to be returned from `on_traffic`. So is a
    ///   [`Conn::close`] made in `on_frame`.
    /// - A decoding error closes this connection, once what was written before it is
    ///   delivered, with [`CloseCause::Codec`] (what `on_close` sees); no later frame is
    ///   handled. The engine's other connections go on.
    ///
    /// Frames live as long as the received bytes (`'a`): they can be written back with
    /// [`Conn::write`] or kept until `on_traffic` returns, never longer. A frame cannot alias a
    /// buffer that is reused later:
    ///
    /// ```compile_fail
    /// # use gnet::{codec::LineCodec, Action, Conn};
    /// fn keep<'a>(c: &mut Conn<'a, LineCodec>, kept: &mut Vec<&'static [u8]>) {
    ///     c.decode_each(|d| d.get_or_insert_with(|| LineCodec::new(64)), |_, line| {
    ///         kept.push(line); // error: the frame does not live long enough
    ///         Action::None
    ///     });
    /// }
    /// ```
    ///
    /// # Examples
    /// ```no_run
    /// use gnet::codec::{FieldWidth, LengthFieldCodec};
    /// use gnet::{Action, Conn, EventHandler};
    ///
    /// struct Server {
    ///     codec: LengthFieldCodec, // 2-byte big-endian length, stripped; frames up to 4 KiB
    /// }
    ///
    /// impl EventHandler for Server {
    ///     type Context = LengthFieldCodec;
    ///
    ///     fn on_traffic(&self, c: &mut Conn<'_, LengthFieldCodec>) -> Action {
    ///         c.decode_each(
    ///             |ctx| ctx.get_or_insert(self.codec),
    ///             |c, frame| {
    ///                 // Echo the body back in a frame of its own.
    ///                 let _ = c.encode(&self.codec, frame);
    ///                 Action::None
    ///             },
    ///         )
    ///     }
    /// }
    ///
    /// let codec = LengthFieldCodec::builder(FieldWidth::Two, 4096).strip(2).build().unwrap();
    /// gnet::run(Server { codec }, "tcp://127.0.0.1:9000", gnet::Options::new()).unwrap();
    /// ```
    ///
    /// # Panics
    /// If the decoder breaks its contract by returning a frame that consumes no byte or more
    /// than it was given (the panic is caught and closes the connection, as any callback's).
    pub fn decode_each<D, S, F>(&mut self, mut decoder: S, mut on_frame: F) -> Action
    where
        D: Decoder + ?Sized,
        S: FnMut(&mut Option<C>) -> &mut D,
        F: FnMut(&mut Self, &'a [u8]) -> Action,
    {
        let direct_min = std::mem::replace(&mut self.st.direct_min, usize::MAX);
        let mut action = Action::None;
        while self.st.is_open() && !self.st.close_requested {
            let rest = self.rest();
            if rest.is_empty() {
                break;
            }
            let d = decoder(&mut self.st.ctx);
            match d.decode(rest) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    assert!(
                        (1..=rest.len()).contains(&consumed),
                        "Decoder contract broken: a frame consumed {consumed} of {} bytes",
                        rest.len()
                    );
                    self.pos += consumed;
                    action = on_frame(self, frame);
                    if action != Action::None {
                        break;
                    }
                }
                Ok(Decoded::NeedMore) => {
                    self.st.inbound_hint = d.pending_frame_length(rest).unwrap_or(0);
                    break;
                }
                Err(e) => {
                    self.close_with_error(e);
                    break;
                }
            }
        }
        self.st.direct_min = direct_min;
        action
    }

    /// Closes the connection because its input is malformed, once this callback returns and
    /// what was written is delivered: as [`Conn::close`], but `on_close` sees
    /// [`CloseCause::Codec`] with `error`. For decoding loops of your own; the framed adapter
    /// [`Conn::decode_each`] calls it.
    pub fn close_with_error(&mut self, error: CodecError) {
        self.st.close_requested = true;
        self.st.close_cause = Some(CloseCause::Codec(error));
    }

    /// Lets `f` append bytes to the outbound queue in place, through a [`WriteBuf`]: an
    /// encoder writes its frame straight into the connection's outbound buffer, not into a
    /// buffer of its own that is copied afterwards. Returns how many bytes `f` appended. If
    /// `f` fails, what it appended is taken back (the peer never sees half a frame) and its
    /// error returned. On a datagram socket what `f` appends is one datagram, as a
    /// [`Conn::write`]. On a connection that no longer takes writes, `f` is not called and 0
    /// is returned.
    ///
    /// The bytes are sent with the rest of this callback's writes, never directly
    /// ([`Options::direct_write_min`](crate::Options::direct_write_min) applies to
    /// [`Conn::write`] only).
    ///
    /// # Errors
    /// What `f` returns.
    ///
    /// # Examples
    /// ```
    /// # fn reply(c: &mut gnet::Conn<'_, ()>, body: &[u8]) {
    /// // A 4-byte length prefix, then the body, written in place.
    /// c.write_with(|w| {
    ///     w.extend_from_slice(&(body.len() as u32).to_be_bytes());
    ///     w.extend_from_slice(body);
    ///     Ok::<_, std::convert::Infallible>(())
    /// })
    /// .unwrap();
    /// # }
    /// ```
    pub fn write_with<E>(
        &mut self,
        f: impl FnOnce(&mut WriteBuf<'_>) -> Result<(), E>,
    ) -> Result<usize, E> {
        self.st.queue_with(&mut self.local.pool, f)
    }

    /// Encodes `item` with `encoder` straight into the outbound queue
    /// ([`Conn::write_with`]); returns the bytes queued.
    ///
    /// # Errors
    /// The encoder's: the item is not queued, nothing of it is.
    pub fn encode<T, E>(&mut self, encoder: &E, item: &T) -> Result<usize, CodecError>
    where
        T: ?Sized,
        E: Encoder<T> + ?Sized,
    {
        self.write_with(|w| encoder.encode(item, w))
    }
}
