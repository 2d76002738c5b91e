//! Waiting: the waker from another thread, wake-ups coalesced and never lost, a timed poll
//! that sleeps (no busy loop), and a zero timeout that does not block.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::Fixture;
use crate::contract::{Backend, Id};

/// A wake from another thread ends a `poll(None)` and is one `woken`, round after round.
pub(crate) fn wakes_from_another_thread<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    for round in 1..=3 {
        let waker = fx.backend.waker();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            waker.wake().unwrap();
        });
        let start = Instant::now();
        while fx.rec.woken() < round {
            fx.poll_timed(None);
        }
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "round {round}: woken after {took:?}"
        );
        t.join().unwrap();
    }
    assert_eq!(fx.rec.events.len(), 3, "{}", fx.rec.tail());
}

/// Wakes before a poll are one `woken`; none is left pending after it; one made after a poll
/// is not lost; a storm from several threads leaves no wake-up stuck either.
pub(crate) fn wakes_coalesce<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let waker = fx.backend.waker();
    for _ in 0..5 {
        waker.wake().unwrap();
    }
    let took = fx.poll_timed(Some(Duration::from_secs(1)));
    assert!(
        took < Duration::from_millis(500),
        "a pending wake-up did not end the poll"
    );
    assert_eq!(fx.rec.woken(), 1);
    let took = fx.poll_timed(Some(Duration::from_millis(30)));
    assert!(
        took >= Duration::from_millis(30),
        "a wake-up left pending: {took:?}"
    );
    assert_eq!(
        fx.rec.woken(),
        1,
        "five wakes before a poll gave several woken"
    );

    waker.wake().unwrap();
    fx.poll_timed(Some(Duration::from_secs(1)));
    assert_eq!(fx.rec.woken(), 2, "a wake after a poll was lost");

    let storm: Vec<_> = (0..4)
        .map(|_| {
            let w = Arc::clone(&waker);
            thread::spawn(move || (0..1000).for_each(|_| w.wake().unwrap()))
        })
        .collect();
    while !storm.iter().all(|t| t.is_finished()) {
        fx.backend
            .poll(Some(Duration::from_millis(5)), &mut fx.rec)
            .unwrap();
    }
    storm.into_iter().for_each(|t| t.join().unwrap());
    fx.backend.poll(Some(Duration::ZERO), &mut fx.rec).unwrap();
    let woken = fx.rec.woken();
    assert!(woken > 2 && woken <= 2 + 4000, "{woken} woken");
    let took = fx.poll_timed(Some(Duration::from_millis(30)));
    assert!(
        took >= Duration::from_millis(30),
        "a wake-up stuck after the storm: {took:?}"
    );
    assert_eq!(fx.rec.woken(), woken);
    assert_eq!(fx.rec.events.len(), woken, "{}", fx.rec.tail());
}

/// With a listener and an idle connection, a timed poll returns after its timeout (a
/// sub-millisecond one too), reports nothing, and spends no CPU meanwhile.
#[cfg(unix)]
pub(crate) fn idle_poll_sleeps_its_timeout<B: Backend>() {
    use super::peer::thread_cpu_time;
    let mut fx = Fixture::<B>::new();
    let (_l, _) = fx.listen_tcp(Id::new(0, 1));
    let _client = fx.tcp_pair(Id::new(1, 1));
    fx.settle(Duration::from_millis(20));
    let (cpu, wall) = (thread_cpu_time(), Instant::now());
    for _ in 0..4 {
        let timeout = Duration::from_millis(50);
        let took = fx.poll_timed(Some(timeout));
        assert!(took >= timeout, "returned after {took:?}");
        assert!(
            took < timeout + Duration::from_secs(1),
            "returned after {took:?}"
        );
    }
    let (cpu, wall) = (thread_cpu_time() - cpu, wall.elapsed());
    assert!(
        cpu < wall / 4,
        "{cpu:?} of CPU in {wall:?} of idle polls: a busy loop"
    );
    let took = fx.poll_timed(Some(Duration::from_micros(300)));
    assert!(
        took >= Duration::from_micros(300),
        "returned after {took:?}"
    );
    assert!(fx.rec.events.is_empty(), "{}", fx.rec.tail());
}

/// `poll(Some(0))` returns at once, on a fresh backend and on one with a listener and an
/// idle connection.
pub(crate) fn zero_timeout_does_not_block<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let limit = Duration::from_millis(500);
    for _ in 0..3 {
        let took = fx.poll_timed(Some(Duration::ZERO));
        assert!(took < limit, "a zero timeout blocked {took:?}");
    }
    let (_l, _) = fx.listen_tcp(Id::new(0, 1));
    let _client = fx.tcp_pair(Id::new(1, 1));
    for _ in 0..3 {
        let took = fx.poll_timed(Some(Duration::ZERO));
        assert!(took < limit, "a zero timeout blocked {took:?}");
    }
    assert!(fx.rec.events.is_empty(), "{}", fx.rec.tail());
}
