//! The codecs end to end over real sockets, on every backend: each built-in codec echoing
//! frames split across receives and many frames in one receive, oversized and malformed
//! input closing only that connection with the right `CloseCause::Codec`, and the framed
//! adapter sending every reply of one receive in one flush.

mod util;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use gnet::codec::{
    Decoder, DelimiterCodec, Encoder, FieldWidth, FixedLengthCodec, LengthFieldCodec, LineCodec,
    WriteBuf,
};
use gnet::{Action, BackendKind, CloseCause, Conn, EventHandler, Options};
use util::{cause_name, opts, wait_until, Client, Failures, Rng, Server, TCP};

/// What the server saw.
#[derive(Default)]
struct Log {
    /// `on_close` causes, by `cause_name`.
    closes: Mutex<Vec<String>>,
    /// Per `on_traffic`: frames decoded, reply bytes written, and how many of them were still
    /// queued when the callback ended (all of them, if nothing was flushed early).
    receives: Mutex<Vec<(usize, usize, usize)>>,
    /// Per `on_traffic`: the bytes it was given, and the frames decoded from them.
    calls: Mutex<Vec<(usize, usize)>>,
    failures: Failures,
}

type BoxEncoder = Box<dyn Encoder<[u8]> + Send + Sync>;

/// Decodes with a per-connection copy of `decoder` and sends every frame back, encoded with
/// `encoder`: in place (`Conn::encode`), or encoded aside and written with `Conn::write`
/// (which may take the direct path) when `by_write`.
struct Echo<D> {
    decoder: D,
    encoder: BoxEncoder,
    by_write: bool,
    log: Arc<Log>,
}

impl<D: Decoder + Clone + Send + Sync + 'static> EventHandler for Echo<D> {
    type Context = D;

    fn on_traffic(&self, c: &mut Conn<'_, D>) -> Action {
        let given = c.inbound_buffered();
        let before = c.outbound_buffered();
        let (mut frames, mut written) = (0, 0);
        let action = c.decode_each(
            |ctx| ctx.get_or_insert_with(|| self.decoder.clone()),
            |c, frame| {
                frames += 1;
                if self.by_write {
                    let mut reply = BytesMut::new();
                    self.encoder
                        .encode(frame, &mut WriteBuf::new(&mut reply))
                        .unwrap();
                    c.write(&reply);
                    written += reply.len();
                } else {
                    match c.encode(&*self.encoder, frame) {
                        Ok(n) => written += n,
                        Err(e) => self.log.failures.push(format!("encode: {e}")),
                    }
                }
                Action::None
            },
        );
        let queued = c.outbound_buffered() - before;
        self.log
            .receives
            .lock()
            .unwrap()
            .push((frames, written, queued));
        self.log.calls.lock().unwrap().push((given, frames));
        action
    }

    fn on_close(&self, _c: &mut Conn<'_, D>, cause: &CloseCause) -> Action {
        self.log.closes.lock().unwrap().push(cause_name(cause));
        Action::None
    }
}

fn start<D: Decoder + Clone + Send + Sync + 'static>(
    kind: BackendKind,
    decoder: D,
    encoder: impl Encoder<[u8]> + Send + Sync + 'static,
    options: Option<Options>,
    by_write: bool,
) -> (Server, Arc<Log>) {
    let log = Arc::new(Log::default());
    let h = Echo {
        decoder,
        encoder: Box::new(encoder),
        by_write,
        log: log.clone(),
    };
    let options = options.unwrap_or_else(|| opts(kind));
    (Server::start(h, &[TCP], options), log)
}

fn encode_all(e: &dyn Encoder<[u8]>, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        e.encode(f, &mut WriteBuf::new(&mut out)).unwrap();
    }
    out.to_vec()
}

fn client(s: &Server) -> Client {
    let c = s.connect(0);
    if let Client::Tcp(t) = &c {
        t.set_nodelay(true).unwrap();
    }
    c
}

/// Sends `stream` in pieces cut at `cuts`, pausing between them so that each piece is a
/// receive of its own.
fn send_in_pieces(c: &mut Client, stream: &[u8], cuts: &[usize]) {
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        c.write_all(&stream[at..cut]).unwrap();
        c.flush().unwrap();
        at = cut;
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// Frames of every size in `0..=max`, with some repeats, in a shuffled order.
fn frames_of_many_sizes(max: usize, seed: u64, ok: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for len in (0..=max).step_by((max / 40).max(1)).chain([max, 0, 1]) {
        let f = rng.bytes(len);
        if ok(&f) {
            frames.push(f);
        }
    }
    for i in (1..frames.len()).rev() {
        frames.swap(i, rng.range(0, i));
    }
    frames
}

/// Runs `frames` through an echo server with `decoder`/`encoder`: all in one write, then
/// with each piece a receive of its own (cut inside headers, bodies and delimiters), and
/// checks every reply and that the connections closed as the peer did.
fn round_trip<D, E>(kind: BackendKind, decoder: D, encoder: E, frames: &[Vec<u8>])
where
    D: Decoder + Clone + Send + Sync + 'static,
    E: Encoder<[u8]> + Clone + Send + Sync + 'static,
{
    let stream = encode_all(&encoder, frames);
    let (s, log) = start(kind, decoder, encoder.clone(), None, false);
    // Many frames in one receive (the kernel may cut it; the replies are the same).
    let mut c = client(&s);
    c.write_all(&stream).unwrap();
    c.expect(&stream);
    // Cut at many points: one byte, a few bytes, into the middle of frames.
    let mut c2 = client(&s);
    let mut cuts: Vec<usize> = vec![1, 2, 3, 5, 8];
    cuts.extend((13..stream.len()).step_by((stream.len() / 7).max(1)));
    cuts.retain(|&x| x < stream.len());
    send_in_pieces(&mut c2, &stream, &cuts);
    c2.expect(&stream);
    drop((c, c2));
    wait_until("both connections closed", || {
        log.closes.lock().unwrap().len() == 2
    });
    for cause in log.closes.lock().unwrap().iter() {
        assert!(cause == "PeerClosed" || cause == "Reset", "{kind}: {cause}");
    }
    log.failures.assert_none();
    let receives = log.receives.lock().unwrap();
    assert!(
        receives.iter().any(|r| r.0 > 1),
        "{kind}: never more than one frame per receive: {receives:?}"
    );
    drop(receives);
    s.stop().unwrap();
}

fn lines_round_trip(kind: BackendKind) {
    let codec = LineCodec::new(300);
    let frames = frames_of_many_sizes(300, 1, |f| codec.encode(f, &mut scratch()).is_ok());
    round_trip(kind, codec.clone(), codec.clone(), &frames);
    // `\r\n` lines come back as `\r\n` lines.
    let crlf = codec.encode_crlf(true);
    round_trip(kind, crlf.clone(), crlf, &frames);
}

fn scratch() -> WriteBuf<'static> {
    WriteBuf::new(Box::leak(Box::new(BytesMut::new())))
}

fn delimited_round_trip(kind: BackendKind) {
    let codec = DelimiterCodec::new(b"\r\n\r\n", 500).unwrap();
    let frames = frames_of_many_sizes(500, 2, |f| codec.encode(f, &mut scratch()).is_ok());
    round_trip(kind, codec.clone(), codec, &frames);
}

fn fixed_round_trip(kind: BackendKind) {
    let codec = FixedLengthCodec::new(7).unwrap();
    let frames: Vec<Vec<u8>> = (0..200u64).map(|i| Rng::new(i).bytes(7)).collect();
    round_trip(kind, codec, codec, &frames);
}

fn length_field_round_trip(kind: BackendKind) {
    for width in [FieldWidth::Two, FieldWidth::Three, FieldWidth::Eight] {
        let codec = LengthFieldCodec::builder(width, 20_000)
            .strip(width.bytes())
            .build()
            .unwrap();
        let frames = frames_of_many_sizes(20_000 - width.bytes(), 3, |_| true);
        round_trip(kind, codec, codec, &frames);
    }
}

/// Sends `good` then `bad` on one connection while another connection stays in use: the bad
/// one gets its replies to `good`, then is closed with `want` (a `cause_name`); the other
/// goes on.
fn rejects<D, E>(kind: BackendKind, decoder: D, encoder: E, good: &[u8], bad: &[u8], want: &str)
where
    D: Decoder + Clone + Send + Sync + 'static,
    E: Encoder<[u8]> + Clone + Send + Sync + 'static,
{
    let (s, log) = start(kind, decoder.clone(), encoder, None, false);
    let mut other = client(&s);
    other.write_all(good).unwrap();
    other.expect(good);
    let mut c = client(&s);
    let mut both = good.to_vec();
    both.extend_from_slice(bad);
    c.write_all(&both).unwrap();
    // The replies to the frames before the bad one arrive, then the stream ends.
    let got = match c.read_to_end_or_error() {
        Ok(got) | Err((got, _)) => got,
    };
    assert_eq!(got, good, "{kind}: replies before the bad frame");
    wait_until("the bad connection closed", || {
        !log.closes.lock().unwrap().is_empty()
    });
    assert_eq!(log.closes.lock().unwrap().as_slice(), [want], "{kind}");
    // The other connection is untouched.
    other.write_all(good).unwrap();
    other.expect(good);
    log.failures.assert_none();
    s.stop().unwrap();
}

fn oversized_line_closes_only_its_connection(kind: BackendKind) {
    let codec = LineCodec::new(16);
    let bad = [b'x'; 40];
    rejects(
        kind,
        codec.clone(),
        codec,
        b"ok\nfine\n",
        &bad,
        "Codec(FrameTooLong { length: 18, max: 16 })",
    );
}

fn oversized_delimited_frame_closes_only_its_connection(kind: BackendKind) {
    let codec = DelimiterCodec::new(b"||", 10).unwrap();
    rejects(
        kind,
        codec.clone(),
        codec,
        b"a||bb||",
        b"0123456789a||",
        "Codec(FrameTooLong { length: 12, max: 10 })",
    );
}

fn length_field_errors_close_only_their_connection(kind: BackendKind) {
    let codec = LengthFieldCodec::builder(FieldWidth::Two, 64)
        .strip(2)
        .build()
        .unwrap();
    let good = encode_all(&codec, &[b"hi".to_vec(), Vec::new(), vec![9; 62]]);
    // Too long, on the header alone: the 1000 bytes are never awaited.
    rejects(
        kind,
        codec,
        codec,
        &good,
        b"\x03\xe8",
        "Codec(FrameTooLong { length: 1002, max: 64 })",
    );
    // A field that counts the whole frame (adjustment -2) and says 1: less than its header.
    let whole = LengthFieldCodec::builder(FieldWidth::Two, 64)
        .length_adjustment(-2)
        .strip(2)
        .build()
        .unwrap();
    let good = encode_all(&whole, &[b"abc".to_vec()]);
    rejects(
        kind,
        whole,
        whole,
        &good,
        b"\x00\x01",
        "Codec(LengthBelowHeader { length: 1, header: 2 })",
    );
    // A negative 8-byte length.
    let eight = LengthFieldCodec::builder(FieldWidth::Eight, 64)
        .strip(8)
        .build()
        .unwrap();
    let good = encode_all(&eight, &[b"abc".to_vec()]);
    rejects(
        kind,
        eight,
        eight,
        &good,
        &[0x80, 0, 0, 0, 0, 0, 0, 0],
        &format!("Codec(NegativeLength {{ field: {} }})", i64::MIN),
    );
    // More to strip than the frame holds.
    let strip = LengthFieldCodec::builder(FieldWidth::One, 64)
        .strip(4)
        .build()
        .unwrap();
    rejects(
        kind,
        strip,
        FixedLengthCodec::new(1).unwrap(),
        b"",
        b"\x01a",
        "Codec(StripBeyondFrame { strip: 4, length: 2 })",
    );
}

/// Every reply to the frames of one receive is still queued when the callback returns, to
/// go out in one flush: even replies written with `Conn::write` under
/// `direct_write_min(1)`, which outside `decode_each` would each go to the socket at once.
fn replies_of_one_receive_go_out_in_one_flush(kind: BackendKind) {
    let codec = LengthFieldCodec::builder(FieldWidth::Four, 1 << 16)
        .strip(4)
        .build()
        .unwrap();
    let frames: Vec<Vec<u8>> = (0..50u64)
        .map(|i| Rng::new(i).bytes(100 + i as usize))
        .collect();
    let stream = encode_all(&codec, &frames);
    for by_write in [true, false] {
        let options = opts(kind).direct_write_min(Some(1));
        let (s, log) = start(kind, codec, codec, Some(options), by_write);
        let mut c = client(&s);
        for _ in 0..5 {
            c.write_all(&stream).unwrap();
            c.expect(&stream);
        }
        let receives = log.receives.lock().unwrap().clone();
        assert!(
            receives.iter().any(|r| r.0 > 1),
            "{kind}: never several frames in one receive: {receives:?}"
        );
        for (frames, written, queued) in receives {
            assert_eq!(
                queued, written,
                "{kind} (by_write {by_write}): {frames} frames answered with {written} bytes, \
                 only {queued} left for the flush"
            );
        }
        log.failures.assert_none();
        s.stop().unwrap();
    }
}

/// A decoder that knows the length of the frame it waits for (a length field) makes the loop
/// buffer a receive that cannot complete it without a call, and copy only the end of the
/// frame from the receive that completes it: the frames after it are decoded where they lie,
/// in a second call.
fn known_frame_lengths_spare_calls_and_copies(kind: BackendKind) {
    let codec = LengthFieldCodec::builder(FieldWidth::Four, 4096)
        .strip(4)
        .build()
        .unwrap();
    let a = encode_all(&codec, &[vec![1; 996]]);
    let bc = encode_all(&codec, &[vec![2; 46], vec![3; 96]]);
    let (s, log) = start(kind, codec, codec, None, false);
    let mut c = client(&s);
    // 10 bytes (header known), 100 more (still short), then the rest of A with B and C.
    let mut stream = a.clone();
    stream.extend_from_slice(&bc);
    send_in_pieces(&mut c, &stream, &[10, 110]);
    c.expect(&stream);
    let calls = log.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [(10, 0), (a.len(), 1), (bc.len(), 2)],
        "{kind}: (bytes given, frames) per on_traffic"
    );
    // Without a length to wait for (lines), every receive is a call over all it buffered.
    let lines = LineCodec::new(2000);
    let (s2, log) = start(kind, lines.clone(), lines.clone(), None, false);
    let mut c = client(&s2);
    let stream = encode_all(&lines, &[vec![b'x'; 996], b"b".to_vec(), b"c".to_vec()]);
    send_in_pieces(&mut c, &stream, &[10, 110]);
    c.expect(&stream);
    let calls = log.calls.lock().unwrap().clone();
    assert_eq!(calls, [(10, 0), (110, 0), (stream.len(), 3)], "{kind}");
    drop(c);
    s.stop().unwrap();
    s2.stop().unwrap();
}

per_backend!(
    known_frame_lengths_spare_calls_and_copies,
    lines_round_trip,
    delimited_round_trip,
    fixed_round_trip,
    length_field_round_trip,
    oversized_line_closes_only_its_connection,
    oversized_delimited_frame_closes_only_its_connection,
    length_field_errors_close_only_their_connection,
    replies_of_one_receive_go_out_in_one_flush,
);
