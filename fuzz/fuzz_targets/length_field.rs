#![no_main]

mod common;

use gnet::codec::{ByteOrder, FieldWidth, LengthFieldCodec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first four bytes choose the configuration, the rest is the input.
    let Some((cfg, data)) = data.split_first_chunk::<4>() else {
        return;
    };
    let width = [
        FieldWidth::One,
        FieldWidth::Two,
        FieldWidth::Three,
        FieldWidth::Four,
        FieldWidth::Eight,
    ][usize::from(cfg[0]) % 5];
    let order = if cfg[0] & 0x80 == 0 {
        ByteOrder::BigEndian
    } else {
        ByteOrder::LittleEndian
    };
    let offset = usize::from(cfg[1] % 4);
    // Small adjustments, and now and then the extremes.
    let adjustment = match cfg[2] {
        0 => i64::MIN,
        255 => i64::MAX,
        a => i64::from(a as i8),
    };
    let strip = usize::from(cfg[3] % 16);
    let max = 64;
    let Ok(codec) = LengthFieldCodec::builder(width, max)
        .byte_order(order)
        .field_offset(offset)
        .length_adjustment(adjustment)
        .strip(strip)
        .build()
    else {
        return;
    };
    common::check(data, max - 1, || codec);
});
