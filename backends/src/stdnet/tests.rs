//! Tests of the stdnet backend's own machinery: the size of the chunks its reader threads
//! deliver, and how far they read ahead of a paused loop. The contract itself is tested by the
//! conformance suite (`crate::conformance`).

use std::thread;
use std::time::Duration;

use super::conn::MAX_IN_FLIGHT;
use super::StdNet;
use crate::conformance::peer::{pattern, write_in_pieces};
use crate::conformance::Fixture;
use crate::contract::{Backend, Config, Flow, Id};

const C: Id = Id(1 << 32 | 7);

#[test]
fn chunks_never_exceed_read_buffer_size() {
    const N: usize = 300_000;
    let config = Config {
        read_buffer_size: 1000,
        ..Config::default()
    };
    let mut fx = Fixture::<StdNet>::open(config);
    let client = fx.tcp_pair(C);
    let writer = thread::spawn(move || write_in_pieces(&client, &pattern(N, 1), 64 * 1024, 1));
    fx.pump("every byte", |r, _| r.len(C) == N);
    writer.join().unwrap();
    assert!(fx.rec.bytes(C) == pattern(N, 1), "bytes differ");
    assert!(
        fx.rec.largest_slice() <= 1000,
        "a chunk of {}",
        fx.rec.largest_slice()
    );
    fx.close_and_wait(C);
    let zero = Config {
        read_buffer_size: 0,
        ..Config::default()
    };
    assert!(StdNet::open(&zero).is_err());
}

/// Paused after its first chunk, the reader delivers at most the chunks it had queued (it
/// runs at most [`MAX_IN_FLIGHT`] ahead of the loop), then nothing until `resume`.
#[test]
fn a_paused_reader_stays_at_most_two_chunks_ahead() {
    const N: usize = 4 << 20;
    let mut fx = Fixture::<StdNet>::new();
    let client = fx.tcp_pair(C);
    fx.rec.answer = Flow::Pause;
    let writer = thread::spawn(move || write_in_pieces(&client, &pattern(N, 2), 64 * 1024, 2));
    fx.pump("the first chunk", |r, _| r.len(C) > 0);
    fx.settle(Duration::from_millis(200));
    let chunks = fx.rec.slices(C).len();
    assert!(
        chunks <= 1 + MAX_IN_FLIGHT,
        "{chunks} chunks after a pause at the first"
    );
    fx.rec.answer = Flow::Continue;
    fx.backend.resume(C);
    fx.pump("every byte", |r, _| r.len(C) == N);
    writer.join().unwrap();
    assert!(fx.rec.bytes(C) == pattern(N, 2), "bytes lost or reordered");
    fx.close_and_wait(C);
}
