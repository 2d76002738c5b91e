#![no_main]

mod common;

use gnet::codec::DelimiterCodec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A delimiter that can overlap itself, to try the searches that resume inside one.
    common::check(data, 32 + 2, || DelimiterCodec::new(b"aab", 32).unwrap());
});
