//! The buffer ring seen through the backend: bytes streamed through a small ring arrive in
//! order, as one slice per bundle or one buffer per plain receive, and with the second mapping
//! of the buffer area forbidden the ring still works.

use std::io::Write;
use std::time::Duration;

use super::tests::{assert_whole, config, connect, listen, open, pump, run_in_child, Ev, Rec};
use super::Uring;
use crate::contract::{Backend, Config};
use crate::testing;

/// Sends 96 KiB through a ring of 8 buffers of 1 KiB (it wraps a dozen times) and returns the
/// slice sizes the sink saw, after checking every byte arrived in order.
fn stream_through_small_ring(bundles: bool) -> (Uring, Vec<usize>) {
    let cfg = Config {
        recv_bundles: bundles,
        ..config(8, 1024)
    };
    let mut u = open(&cfg);
    let mut rec = Rec::default();
    let (_l, addr) = listen(&mut u);
    let (mut client, id, _sock) = connect(&mut u, &mut rec, addr, 0);
    let payload: Vec<u8> = (0..96 * 1024u32).map(|i| (i % 251) as u8).collect();
    // Write in pieces that do not line up with buffers, pausing so that several buffers'
    // worth waits in the socket at once.
    for piece in payload.chunks(7 * 1024 + 13) {
        client.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        u.poll(Some(Duration::ZERO), &mut rec).unwrap();
    }
    pump(&mut u, &mut rec, "all data", |_, r| {
        r.len(id) == payload.len()
    });
    assert!(
        rec.data[&id] == payload,
        "bytes arrived out of order or altered"
    );
    assert_eq!(rec.failures(), 0);
    let sizes = rec
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Data(c, n) if *c == id => Some(*n),
            _ => None,
        })
        .collect();
    assert_whole(&u);
    (u, sizes)
}

#[test]
fn uring_bundles_deliver_in_order_across_buffers_and_the_wrap() {
    let (u, sizes) = stream_through_small_ring(true);
    let largest = sizes.iter().copied().max().unwrap_or(0);
    if u.recv_bundles() {
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
    let (u, sizes) = stream_through_small_ring(false);
    assert!(!u.recv_bundles());
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
    let (u, sizes) = stream_through_small_ring(true);
    assert!(!u.bufs.mirrored());
    println!(
        "child: mapped once; {} slices, {} completions split at the end of the area",
        sizes.len(),
        u.bufs.splits()
    );
}
