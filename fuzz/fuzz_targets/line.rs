#![no_main]

mod common;

use gnet::codec::LineCodec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::check(data, 33, || LineCodec::new(32));
});
