//! Tests of the readiness engine's own machinery (on this target's selector), over loopback sockets: the fairness of its
//! read passes (`read_chunk`, `poll_read_budget`), a pause that ends the pass at once, the
//! buffers of finished sends handed back, and a send after `failed` dropped; its datagram
//! machinery in `tests/datagram.rs`. The contract itself is tested by the conformance suite
//! (`crate::conformance`).

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

mod datagram;

use super::Readiness as Engine;
use crate::conformance::{Ev, Fixture};
use crate::contract::{Backend, Config, Flow, Id};

const A: Id = Id(1 | (7 << 32));
const B: Id = Id(2);

/// Polls until both connections received `each` bytes, checking that no poll blocked with
/// a ready list and that no poll delivered more than `per_poll(a, b)` allows; returns the
/// number of polls.
fn read_both(
    fx: &mut Fixture<Engine>,
    each: usize,
    per_poll: impl Fn(usize, usize) -> bool,
) -> usize {
    let mut polls = 0;
    while fx.rec.len(A) < each || fx.rec.len(B) < each {
        let (a, b) = (fx.rec.len(A), fx.rec.len(B));
        let start = Instant::now();
        fx.backend
            .poll(Some(Duration::from_secs(2)), &mut fx.rec)
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "blocked with a ready list"
        );
        let (da, db) = (fx.rec.len(A) - a, fx.rec.len(B) - b);
        assert!(per_poll(da, db), "one poll delivered {da} and {db} bytes");
        polls += 1;
    }
    polls
}

#[test]
fn read_chunk_bounds_each_connection_per_poll() {
    let config = Config {
        read_buffer_size: 16,
        read_chunk: 32,
        ..Config::default()
    };
    let mut fx = Fixture::<Engine>::open(config);
    let mut ca = fx.tcp_pair(A);
    let mut cb = fx.tcp_pair(B);
    ca.write_all(&[1; 200]).unwrap();
    cb.write_all(&[2; 200]).unwrap();
    thread::sleep(Duration::from_millis(20));
    let polls = read_both(&mut fx, 200, |a, b| a <= 32 && b <= 32);
    assert!(
        polls >= 7,
        "200 bytes in 32-byte passes take 7 polls, took {polls}"
    );
}

#[test]
fn poll_read_budget_bounds_each_poll_over_all_connections() {
    let config = Config {
        read_buffer_size: 16,
        read_chunk: 64,
        poll_read_budget: 48,
        ..Config::default()
    };
    let mut fx = Fixture::<Engine>::open(config);
    let mut ca = fx.tcp_pair(A);
    let mut cb = fx.tcp_pair(B);
    ca.write_all(&[1; 100]).unwrap();
    cb.write_all(&[2; 100]).unwrap();
    thread::sleep(Duration::from_millis(20));
    let polls = read_both(&mut fx, 100, |a, b| a + b <= 48);
    assert!(
        polls >= 5,
        "200 bytes at 48 per poll take 5 polls, took {polls}"
    );
    assert_eq!(fx.rec.bytes(A), [1; 100]);
    assert_eq!(fx.rec.bytes(B), [2; 100]);
}

/// `Flow::Pause` ends the read pass at once: no read after the one that paused (the contract
/// would allow bytes already read); `resume` reads again without a new edge.
#[test]
fn pause_ends_the_read_pass_at_once() {
    let config = Config {
        read_buffer_size: 16,
        ..Config::default()
    };
    let mut fx = Fixture::<Engine>::open(config);
    fx.rec.answer = Flow::Pause;
    let mut client = fx.tcp_pair(A);
    let data: Vec<u8> = (0..100).collect();
    client.write_all(&data).unwrap();
    fx.pump("the first read", |r, _| r.len(A) > 0);
    fx.settle(Duration::from_millis(30));
    assert_eq!(fx.rec.slices(A), [16], "read while paused");
    fx.rec.answer = Flow::Continue;
    fx.backend.resume(A);
    let took = fx.poll_timed(None);
    assert!(
        took < Duration::from_secs(1),
        "the resumed connection is due: {took:?}"
    );
    assert_eq!(fx.rec.bytes(A), data);
}

/// The buffers of a finished send come back through `reclaim`, all of them, after `sent`.
#[test]
fn sent_buffers_come_back_through_reclaim() {
    let mut fx = Fixture::<Engine>::new();
    let _client = fx.tcp_pair(A);
    fx.send(
        A,
        vec![Bytes::from_static(b"hel"), Bytes::from_static(b"lo")],
    );
    fx.pump("sent", |r, _| r.sent_count(A) == 1);
    assert_eq!(fx.rec.events, [Ev::Sent(A, 5), Ev::Reclaimed(2, 5)]);
    assert_eq!(fx.rec.reclaimed(), (2, 5));
}

/// A send handed in after `failed` (outside the contract: the loop should close) is dropped
/// without a report.
#[cfg(unix)]
#[test]
fn a_send_after_failed_is_dropped() {
    use std::os::fd::AsFd;
    let mut fx = Fixture::<Engine>::new();
    let client = fx.tcp_pair(A);
    crate::conformance::peer::reset_on_close(client.as_fd());
    drop(client);
    fx.pump("failed", |r, _| r.has_failed(A));
    fx.send(A, vec![Bytes::from_static(b"x")]);
    fx.close_and_wait(A);
    assert!(
        matches!(fx.rec.of(A)[..], [Ev::Failed(..), Ev::Closed(_)]),
        "{:?}",
        fx.rec.of(A)
    );
}

/// The backend may be opened on one thread and moved to its loop's thread.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Engine>();
};
