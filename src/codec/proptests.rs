//! Property tests of every built-in codec: a valid stream of frames cut anywhere decodes to
//! the frames it was made of; arbitrary bytes cut anywhere never panic and never leave more
//! buffered than an unfinished frame can take.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;

use super::testing::{decode_all, decode_bounded, decode_split};
use super::*;

/// Encodes `frames` back to back with `codec`.
fn stream<E: Encoder<[u8]>>(codec: &E, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        codec
            .encode(f, &mut WriteBuf::new(&mut out))
            .unwrap_or_else(|e| panic!("encode {f:?}: {e}"));
    }
    out.to_vec()
}

/// Cut points, sorted, within `len`.
fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut c: Vec<usize> = raw.iter().map(|r| r % (len + 1)).collect();
    c.sort_unstable();
    c
}

/// Decoding `input` whole and cut at `raw` cuts gives `frames`, nothing left over.
fn decodes_back<D: Decoder + Clone>(d: &D, input: &[u8], raw: &[usize], frames: &[Vec<u8>]) {
    let whole = decode_all(&mut d.clone(), input).expect("whole");
    assert_eq!(whole.0, frames);
    assert!(whole.1.is_empty());
    let split = decode_split(&mut d.clone(), input, &cuts(input.len(), raw)).expect("split");
    assert_eq!(split, whole);
}

fn width() -> impl Strategy<Value = FieldWidth> {
    prop_oneof![
        Just(FieldWidth::One),
        Just(FieldWidth::Two),
        Just(FieldWidth::Three),
        Just(FieldWidth::Four),
        Just(FieldWidth::Eight),
    ]
}

fn order() -> impl Strategy<Value = ByteOrder> {
    prop_oneof![Just(ByteOrder::BigEndian), Just(ByteOrder::LittleEndian)]
}

/// A line: no `\n`, not ending in `\r`.
fn line() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..40).prop_map(|mut l| {
        l.retain(|&b| b != b'\n');
        while l.last() == Some(&b'\r') {
            l.pop();
        }
        l
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn lines_cut_anywhere(frames in vec(line(), 0..20), crlf: bool, raw in vec(any::<usize>(), 0..8)) {
        let codec = LineCodec::new(40).encode_crlf(crlf);
        decodes_back(&codec, &stream(&codec, &frames), &raw, &frames);
    }

    #[test]
    fn delimited_frames_cut_anywhere(
        delim in vec(any::<u8>(), 1..4),
        frames in vec(vec(any::<u8>(), 0..30), 0..20),
        raw in vec(any::<usize>(), 0..8),
    ) {
        let codec = DelimiterCodec::new(&delim, 30).unwrap();
        // Only the frames the encoder takes (no delimiter inside) make a valid stream.
        let frames: Vec<Vec<u8>> = frames
            .into_iter()
            .filter(|f| codec.encode(f, &mut WriteBuf::new(&mut BytesMut::new())).is_ok())
            .collect();
        decodes_back(&codec, &stream(&codec, &frames), &raw, &frames);
    }

    #[test]
    fn fixed_frames_cut_anywhere(len in 1usize..20, n in 0usize..20, seed: u8, raw in vec(any::<usize>(), 0..8)) {
        let codec = FixedLengthCodec::new(len).unwrap();
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|i| (0..len).map(|j| seed.wrapping_add((i * 31 + j) as u8)).collect())
            .collect();
        decodes_back(&codec, &stream(&codec, &frames), &raw, &frames);
    }

    #[test]
    fn length_field_frames_cut_anywhere(
        width in width(),
        order in order(),
        adjustment in -8i64..8,
        strip_header: bool,
        frames in vec(vec(any::<u8>(), 8..200), 0..12),
        raw in vec(any::<usize>(), 0..8),
    ) {
        let w = width.bytes();
        let strip = if strip_header { w } else { 0 };
        let codec = LengthFieldCodec::builder(width, 300)
            .byte_order(order)
            .length_adjustment(adjustment)
            .strip(strip)
            .build()
            .unwrap();
        let input = stream(&codec, &frames);
        // Without stripping, the frames come back with their headers.
        let expected: Vec<Vec<u8>> = if strip_header {
            frames
        } else {
            let mut at = 0;
            frames
                .iter()
                .map(|f| {
                    let whole = input[at..at + w + f.len()].to_vec();
                    at += w + f.len();
                    whole
                })
                .collect()
        };
        decodes_back(&codec, &input, &raw, &expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_buffer_past_the_maximum(
        input in vec(any::<u8>(), 0..600),
        raw in vec(any::<usize>(), 0..10),
        max in 0usize..64,
        delim in vec(any::<u8>(), 1..4),
        width in width(),
        order in order(),
        offset in 0usize..4,
        adjustment in any::<i64>(),
        strip in 0usize..16,
    ) {
        let cuts = cuts(input.len(), &raw);
        let _ = decode_bounded(&mut LineCodec::new(max), &input, &cuts, max + 1);
        let mut d = DelimiterCodec::new(&delim, max).unwrap();
        let _ = decode_bounded(&mut d, &input, &cuts, max + delim.len() - 1);
        let mut d = FixedLengthCodec::new(max + 1).unwrap();
        let _ = decode_bounded(&mut d, &input, &cuts, max);
        let built = LengthFieldCodec::builder(width, max + 8)
            .byte_order(order)
            .field_offset(offset)
            .length_adjustment(adjustment)
            .strip(strip)
            .build();
        if let Ok(mut d) = built {
            let _ = decode_bounded(&mut d, &input, &cuts, max + 7);
        }
    }

    #[test]
    fn length_fields_with_small_adjustments_never_panic(
        input in vec(any::<u8>(), 0..300),
        raw in vec(any::<usize>(), 0..10),
        width in width(),
        offset in 0usize..4,
        adjustment in -20i64..20,
        strip in 0usize..16,
    ) {
        // Small adjustments reach the frame-below-header and strip checks often.
        let cuts = cuts(input.len(), &raw);
        if let Ok(mut d) = LengthFieldCodec::builder(width, 40)
            .field_offset(offset)
            .length_adjustment(adjustment)
            .strip(strip)
            .build()
        {
            let _ = decode_bounded(&mut d, &input, &cuts, 39);
        }
    }
}
