//! The codecs' decoders side by side with tokio-util's `LinesCodec` and
//! `LengthDelimitedCodec`, on the same bytes delivered in the same receives: frames per
//! second, many small frames per receive and frames split across receives.
//!
//! Each side is fed as its framework feeds it. gnet's decoder reads the receive where it
//! lies and only an unfinished frame is copied into the connection's inbound buffer (what
//! `Conn::decode_each` does with the backend's buffer); tokio-util's decoder reads a
//! `BytesMut` every receive is appended to (what `FramedRead` does). Lines come out as
//! `&[u8]` in gnet and as `String` (UTF-8 checked) in tokio-util, its API.
//!
//! ```text
//! cargo bench --bench codec
//! ```

use bytes::{Buf, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gnet::codec::{Decoded, Decoder, FieldWidth, LengthFieldCodec, LineCodec};
use tokio_util::codec::{LengthDelimitedCodec, LinesCodec};

/// A stream of frames, cut into receives.
struct Input {
    name: &'static str,
    frames: usize,
    receives: Vec<Vec<u8>>,
}

fn cut(stream: &[u8], receive: usize) -> Vec<Vec<u8>> {
    stream.chunks(receive).map(<[u8]>::to_vec).collect()
}

/// `n` frames of `len` bytes each made by `frame`, cut into receives of `receive` bytes.
fn input(
    name: &'static str,
    n: usize,
    len: usize,
    receive: usize,
    frame: impl Fn(&[u8]) -> Vec<u8>,
) -> Input {
    let mut stream = Vec::new();
    for i in 0..n {
        let body: Vec<u8> = (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect();
        stream.extend_from_slice(&frame(&body));
    }
    Input {
        name,
        frames: n,
        receives: cut(&stream, receive),
    }
}

fn inputs(frame: impl Fn(&[u8]) -> Vec<u8> + Copy) -> [Input; 3] {
    [
        // 1,000 frames of 16 bytes, 16 KiB receives: many frames per receive.
        input("small-frames-16KiB-receives", 1000, 16, 16 * 1024, frame),
        // 4 KiB frames in 1,000-byte receives: every frame split across receives.
        input("4KiB-frames-1000B-receives", 100, 4096, 1000, frame),
        // 200-byte frames in 512-byte receives: frames cut at every offset.
        input("200B-frames-512B-receives", 1000, 200, 512, frame),
    ]
}

/// Feeds `receives` to `d` as a gnet connection does (the event loop's `traffic` with
/// `Conn::decode_each`, modelled here): a receive is decoded where it lies when nothing is
/// buffered, and what is left is copied into the inbound buffer, with room for the whole
/// unfinished frame when the decoder knows its length; when it does, a receive that
/// completes a buffered frame is copied only up to that frame's end, the rest is decoded
/// where it lies, and one that does not complete it is only buffered. Returns the frames
/// decoded.
fn gnet_feed<D: Decoder>(d: &mut D, inbound: &mut BytesMut, receives: &[Vec<u8>]) -> usize {
    let mut frames = 0;
    let mut hint: usize = 0;
    for r in receives {
        let need = hint.saturating_sub(inbound.len());
        hint = if inbound.is_empty() {
            in_place(d, inbound, r, &mut frames)
        } else if need > 0 && r.len() < need {
            inbound.extend_from_slice(r);
            hint
        } else if need > 0 && r.len() > need {
            let (head, tail) = r.split_at(need);
            buffered(d, inbound, head, true, &mut frames);
            if inbound.is_empty() {
                in_place(d, inbound, tail, &mut frames)
            } else {
                buffered(d, inbound, tail, false, &mut frames)
            }
        } else {
            buffered(d, inbound, r, false, &mut frames)
        };
    }
    frames
}

/// The zero-copy path; returns the length hint of what it left buffered.
fn in_place<D: Decoder>(d: &mut D, inbound: &mut BytesMut, r: &[u8], frames: &mut usize) -> usize {
    let (pos, hint) = decode_all(d, r, frames);
    if pos < r.len() {
        inbound.reserve(hint.max(r.len() - pos));
        inbound.extend_from_slice(&r[pos..]);
    } else {
        *inbound = BytesMut::new();
    }
    hint
}

/// The buffered path; returns the length hint of what it left buffered.
fn buffered<D: Decoder>(
    d: &mut D,
    inbound: &mut BytesMut,
    r: &[u8],
    keep: bool,
    frames: &mut usize,
) -> usize {
    inbound.extend_from_slice(r);
    let mut buf = std::mem::take(inbound);
    let (pos, hint) = decode_all(d, &buf, frames);
    buf.advance(pos);
    if buf.is_empty() {
        if !keep {
            buf = BytesMut::new();
        }
    } else if hint > buf.len() {
        buf.reserve(hint - buf.len());
    }
    *inbound = buf;
    hint
}

/// Decodes the frames of `data`; returns the bytes consumed and the length hint of the
/// unfinished frame (0: none).
fn decode_all<D: Decoder>(d: &mut D, data: &[u8], frames: &mut usize) -> (usize, usize) {
    let mut pos = 0;
    while pos < data.len() {
        match d.decode(&data[pos..]) {
            Ok(Decoded::Frame { frame, consumed }) => {
                black_box(frame);
                *frames += 1;
                pos += consumed;
            }
            Ok(Decoded::NeedMore) => {
                return (pos, d.pending_frame_length(&data[pos..]).unwrap_or(0));
            }
            Err(e) => panic!("{e}"),
        }
    }
    (pos, 0)
}

/// Feeds `receives` to a tokio-util decoder as `FramedRead` does; returns the frames.
fn tokio_feed<D: tokio_util::codec::Decoder>(
    d: &mut D,
    buf: &mut BytesMut,
    receives: &[Vec<u8>],
) -> usize
where
    D::Error: std::fmt::Debug,
{
    let mut frames = 0;
    for r in receives {
        buf.extend_from_slice(r);
        while let Some(f) = d.decode(buf).expect("tokio decode") {
            black_box(f);
            frames += 1;
        }
    }
    frames
}

fn lines(c: &mut Criterion) {
    let mut g = c.benchmark_group("lines");
    for i in inputs(|b| [b, &b"\n"[..]].concat()) {
        g.throughput(Throughput::Elements(i.frames as u64));
        g.bench_with_input(BenchmarkId::new("gnet", i.name), &i, |b, i| {
            let mut d = LineCodec::new(8192);
            let mut inbound = BytesMut::new();
            b.iter(|| assert_eq!(gnet_feed(&mut d, &mut inbound, &i.receives), i.frames));
        });
        g.bench_with_input(BenchmarkId::new("tokio-util", i.name), &i, |b, i| {
            let mut d = LinesCodec::new_with_max_length(8192);
            let mut buf = BytesMut::new();
            b.iter(|| assert_eq!(tokio_feed(&mut d, &mut buf, &i.receives), i.frames));
        });
    }
    g.finish();
}

fn length_field(c: &mut Criterion) {
    let mut g = c.benchmark_group("length-field");
    let frame = |b: &[u8]| [&(b.len() as u32).to_be_bytes()[..], b].concat();
    for i in inputs(frame) {
        g.throughput(Throughput::Elements(i.frames as u64));
        g.bench_with_input(BenchmarkId::new("gnet", i.name), &i, |b, i| {
            let mut d = LengthFieldCodec::builder(FieldWidth::Four, 8192)
                .strip(4)
                .build()
                .unwrap();
            let mut inbound = BytesMut::new();
            b.iter(|| assert_eq!(gnet_feed(&mut d, &mut inbound, &i.receives), i.frames));
        });
        g.bench_with_input(BenchmarkId::new("tokio-util", i.name), &i, |b, i| {
            let mut d = LengthDelimitedCodec::builder()
                .length_field_length(4)
                .max_frame_length(8192)
                .new_codec();
            let mut buf = BytesMut::new();
            b.iter(|| assert_eq!(tokio_feed(&mut d, &mut buf, &i.receives), i.frames));
        });
    }
    g.finish();
}

criterion_group!(benches, lines, length_field);
criterion_main!(benches);
