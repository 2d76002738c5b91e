#![no_main]

mod common;

use gnet::codec::FixedLengthCodec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::check(data, 6, || FixedLengthCodec::new(7).unwrap());
});
