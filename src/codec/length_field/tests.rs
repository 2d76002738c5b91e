//! The worked examples of `LengthFieldCodec`'s docs, and the failures gnet v1's codec had.

use super::*;
use crate::codec::testing::{decode_all, decode_split};
use crate::codec::FixedLengthCodec;
use bytes::BytesMut;

fn lf(width: FieldWidth, max: usize) -> LengthFieldBuilder {
    LengthFieldCodec::builder(width, max)
}

#[test]
fn the_documented_examples() {
    let mut d = lf(FieldWidth::Two, 64).build().unwrap();
    let (f, rest) = decode_all(&mut d, b"\x00\x05HELLO").unwrap();
    assert_eq!(f, [&b"\x00\x05HELLO"[..]]);
    assert!(rest.is_empty());

    let mut d = lf(FieldWidth::Two, 64).strip(2).build().unwrap();
    assert_eq!(
        decode_all(&mut d, b"\x00\x05HELLO").unwrap().0,
        [&b"HELLO"[..]]
    );

    let mut d = lf(FieldWidth::Two, 64)
        .length_adjustment(-2)
        .build()
        .unwrap();
    assert_eq!(
        decode_all(&mut d, b"\x00\x07HELLO").unwrap().0,
        [&b"\x00\x07HELLO"[..]]
    );

    let mut d = lf(FieldWidth::Three, 64)
        .field_offset(1)
        .strip(4)
        .build()
        .unwrap();
    let (f, rest) = decode_all(&mut d, b"\x07\x00\x00\x03abc\x09\x00\x00\x00").unwrap();
    assert_eq!(f, [&b"abc"[..], b""]);
    assert!(rest.is_empty());

    let mut d = lf(FieldWidth::Four, 64)
        .byte_order(ByteOrder::LittleEndian)
        .length_adjustment(2)
        .strip(4)
        .build()
        .unwrap();
    assert_eq!(
        decode_all(&mut d, b"\x03\x00\x00\x00abc\xc1\xc2")
            .unwrap()
            .0,
        [&b"abc\xc1\xc2"[..]]
    );
}

#[test]
fn the_documented_refusals() {
    let mut d = lf(FieldWidth::Two, 16).build().unwrap();
    assert!(matches!(
        d.decode(b"\x00\x20"),
        Err(CodecError::FrameTooLong {
            length: 34,
            max: 16
        })
    ));
    let mut d = lf(FieldWidth::Two, 16)
        .length_adjustment(-4)
        .build()
        .unwrap();
    assert!(matches!(
        d.decode(b"\x00\x01"),
        Err(CodecError::LengthBelowHeader {
            length: -1,
            header: 2
        })
    ));
    let mut d = lf(FieldWidth::Eight, 16).build().unwrap();
    assert!(matches!(
        d.decode(&[0xff; 8]),
        Err(CodecError::NegativeLength { field: -1 })
    ));
    let mut d = lf(FieldWidth::One, 16).strip(4).build().unwrap();
    assert!(matches!(
        d.decode(b"\x01a"),
        Err(CodecError::StripBeyondFrame {
            strip: 4,
            length: 2
        })
    ));
}

#[test]
fn a_bad_header_is_an_error_at_once_never_incomplete() {
    // gnet v1 read this as "incomplete" and stalled the connection forever.
    let mut d = lf(FieldWidth::Two, 1024)
        .length_adjustment(-10)
        .build()
        .unwrap();
    assert!(d.decode(b"\x00\x03abc").is_err());
    // Too long: refused on the header alone, before any body arrives.
    let mut d = lf(FieldWidth::Four, 1024).build().unwrap();
    assert!(d.decode(b"\x00\x10\x00\x00").is_err());
}

#[test]
fn eight_byte_lengths_do_not_overflow() {
    let mut d = lf(FieldWidth::Eight, 1 << 20)
        .length_adjustment(i64::MAX)
        .build()
        .unwrap();
    let max = i64::MAX.to_be_bytes();
    assert!(matches!(
        d.decode(&max),
        Err(CodecError::FrameTooLong {
            length: u64::MAX,
            ..
        })
    ));
    let mut d = lf(FieldWidth::Eight, 1 << 20)
        .length_adjustment(i64::MIN)
        .build()
        .unwrap();
    assert!(matches!(
        d.decode(&[0; 8]),
        Err(CodecError::LengthBelowHeader { .. })
    ));
    let mut d = lf(FieldWidth::Eight, 64).strip(8).build().unwrap();
    assert_eq!(
        decode_all(&mut d, b"\x00\x00\x00\x00\x00\x00\x00\x02hi")
            .unwrap()
            .0,
        [&b"hi"[..]]
    );
}

#[test]
fn a_header_arriving_alone_loses_nothing_and_zero_length_bodies_are_frames() {
    let input = b"\x00\x00\x00\x03abc\x00\x00\x00\x00\x00\x00\x00\x01z";
    let mut d = lf(FieldWidth::Four, 64).strip(4).build().unwrap();
    let whole = decode_all(&mut d, input).unwrap();
    assert_eq!(whole.0, [&b"abc"[..], b"", b"z"]);
    for a in 0..input.len() {
        for b in a..input.len() {
            let split = decode_split(&mut d, input, &[a, b]).unwrap();
            assert_eq!(split, whole, "cut at {a} and {b}");
        }
    }
}

#[test]
fn builds_only_what_can_decode_a_frame() {
    assert!(lf(FieldWidth::Four, 3).build().is_err());
    assert!(lf(FieldWidth::Two, 8).field_offset(7).build().is_err());
    assert!(lf(FieldWidth::Two, 8)
        .field_offset(usize::MAX)
        .build()
        .is_err());
    assert!(lf(FieldWidth::Two, 8).strip(9).build().is_err());
    assert!(lf(FieldWidth::Two, 8)
        .field_offset(6)
        .strip(8)
        .build()
        .is_ok());
}

#[test]
fn encodes_what_it_decodes_for_every_width_and_order() {
    let widths = [
        FieldWidth::One,
        FieldWidth::Two,
        FieldWidth::Three,
        FieldWidth::Four,
        FieldWidth::Eight,
    ];
    for width in widths {
        for order in [ByteOrder::BigEndian, ByteOrder::LittleEndian] {
            for adjustment in [-(width.bytes() as i64), 0, 3] {
                let mut c = lf(width, 300)
                    .byte_order(order)
                    .length_adjustment(adjustment)
                    .strip(width.bytes())
                    .build()
                    .unwrap();
                let mut out = BytesMut::new();
                let items: [&[u8]; 3] = [b"", b"hello", &[7u8; 250]];
                for item in items {
                    match c.encode(item, &mut WriteBuf::new(&mut out)) {
                        Ok(()) => {}
                        // A negative field (item shorter than the adjustment).
                        Err(CodecError::LengthFieldOverflow { .. }) => {
                            assert!((item.len() as i64) < adjustment);
                            continue;
                        }
                        Err(e) => panic!("{e}"),
                    }
                    let (frames, rest) = decode_all(&mut c, &out).unwrap();
                    assert_eq!(frames, [item], "{width:?} {order:?} {adjustment}");
                    assert!(rest.is_empty());
                    out.clear();
                }
            }
        }
    }
}

#[test]
fn encoding_refuses_lengths_the_field_or_maximum_cannot_hold() {
    let c = lf(FieldWidth::One, 1024).build().unwrap();
    let mut out = BytesMut::new();
    let mut w = WriteBuf::new(&mut out);
    assert!(matches!(
        c.encode(&[0u8; 256][..], &mut w),
        Err(CodecError::LengthFieldOverflow {
            length: 256,
            width: 1
        })
    ));
    assert!(c.encode(&[0u8; 255][..], &mut w).is_ok());
    let c = lf(FieldWidth::Two, 10).build().unwrap();
    assert!(matches!(
        c.encode(&[0u8; 9][..], &mut w),
        Err(CodecError::FrameTooLong {
            length: 11,
            max: 10
        })
    ));
    let c = lf(FieldWidth::Two, 10).field_offset(1).build().unwrap();
    assert!(matches!(
        c.encode(&b"x"[..], &mut w),
        Err(CodecError::Unsupported(_))
    ));
}

#[test]
fn remembers_the_length_of_the_frame_it_waits_for() {
    let mut d = lf(FieldWidth::Two, 64).strip(2).build().unwrap();
    assert!(matches!(d.decode(b"\x00"), Ok(Decoded::NeedMore)));
    assert_eq!(
        d.pending_frame_length(b"\x00"),
        None,
        "the header is not in yet"
    );
    assert!(matches!(d.decode(b"\x00\x05HE"), Ok(Decoded::NeedMore)));
    assert_eq!(d.pending_frame_length(b"\x00\x05HE"), Some(7));
    // The next call continues the stream: the header is not read again.
    assert!(matches!(
        d.decode(b"\x00\x05HELLO\x00"),
        Ok(Decoded::Frame {
            frame: b"HELLO",
            consumed: 7
        })
    ));
    assert_eq!(d.pending_frame_length(b"\x00"), None);
    assert!(matches!(d.decode(b"\x00\x05HE"), Ok(Decoded::NeedMore)));
    d.reset();
    assert_eq!(d.pending_frame_length(b""), None);
    let f = FixedLengthCodec::new(3).unwrap();
    assert_eq!(f.pending_frame_length(b"a"), Some(3));
}
