//! The buffer ring seen through the backend: bytes streamed through a small ring arrive in
//! order, as one slice per bundle or one buffer per plain receive, and with the second mapping
//! of the buffer area forbidden the ring still works.

use std::io::Write;
use std::time::Duration;

use super::tests::{config, connect, listen, run_in_child, Fx};
use crate::contract::{Backend, Config};
use crate::testing;

/// Sends 96 KiB through a ring of 8 buffers of 1 KiB (it wraps a dozen times) and returns the
/// slice sizes the sink saw, after checking every byte arrived in order.
fn stream_through_small_ring(bundles: bool) -> (Fx, Vec<usize>) {
    let cfg = Config {
        recv_bundles: bundles,
        ..config(8, 1024)
    };
    let mut fx = Fx::open(cfg);
    let (_l, addr) = listen(&mut fx);
    let (mut client, id) = connect(&mut fx, addr, 0);
    let payload: Vec<u8> = (0..96 * 1024u32).map(|i| (i % 251) as u8).collect();
    // Write in pieces that do not line up with buffers, pausing so that several buffers'
    // worth waits in the socket at once.
    for piece in payload.chunks(7 * 1024 + 13) {
        client.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        fx.backend.poll(Some(Duration::ZERO), &mut fx.rec).unwrap();
    }
    fx.pump("all data", |r, _| r.len(id) == payload.len());
    assert!(
        fx.rec.bytes(id) == payload,
        "bytes arrived out of order or altered"
    );
    assert!(!fx.rec.has_failed(id));
    let sizes = fx.rec.slices(id);
    fx.assert_holding_no_buffer(1);
    (fx, sizes)
}

#[test]
fn uring_bundles_deliver_in_order_across_buffers_and_the_wrap() {
    let (fx, sizes) = stream_through_small_ring(true);
    let largest = sizes.iter().copied().max().unwrap_or(0);
    if fx.backend.recv_bundles() {
        // The ring holds 8 KiB, so no slice can be larger; one larger than a buffer proves a
        // bundle reached the sink as one slice.
        assert!(largest > 1024, "no slice spanned buffers: {sizes:?}");
        assert!(
            largest <= 8 * 1024,
            "a slice larger than the ring: {largest}"
        );
    } else {
        // This kernel gets plain receives even when bundles are asked for.
        assert!(largest <= 1024, "a plain receive delivered {largest} bytes");
    }
}

#[test]
fn uring_without_bundles_every_slice_fits_one_buffer() {
    let (fx, sizes) = stream_through_small_ring(false);
    assert!(!fx.backend.recv_bundles());
    assert!(sizes.iter().all(|&n| n <= 1024), "{sizes:?}");
}

/// Where `memfd_create` is forbidden (a seccomp profile can do that) the buffer area is mapped
/// once instead of twice: the backend still opens and every byte still arrives in order, a
/// bundle across the end of the area as two slices.
#[test]
fn uring_without_memfd_the_ring_is_mapped_once_and_works() {
    let name = concat!(
        module_path!(),
        "::uring_without_memfd_the_ring_is_mapped_once_and_works"
    );
    if let Some(stdout) = run_in_child(name.split_once("::").map_or(name, |(_, rest)| rest)) {
        assert!(stdout.contains("child: mapped once"), "{stdout}");
        return;
    }
    testing::deny_syscalls(&[libc::SYS_memfd_create]).expect("installing the seccomp filter");
    let (fx, sizes) = stream_through_small_ring(true);
    assert!(!fx.backend.bufs.mirrored());
    println!(
        "child: mapped once; {} slices, {} completions split at the end of the area",
        sizes.len(),
        fx.backend.bufs.splits()
    );
}
