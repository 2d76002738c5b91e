//! Closing, waking, listeners and waiting.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{listen, open, pair, poll_until, Ev, Recorder};
use crate::contract::{Backend, Config, Id};
use crate::socket::{Addr, Listener};

const A: Id = Id(3 | (1 << 32));

#[test]
fn close_reports_closed_on_next_poll_and_nothing_after() {
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let (server, mut client) = pair(&mut ep, A);
    assert_eq!(ep.stats().conns, 1);
    ep.close(A);
    assert_eq!(ep.stats().conns, 1, "tracked until closed is reported");
    let start = Instant::now();
    ep.poll(None, &mut sink).unwrap(); // a queued report: must not block
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(matches!(sink.events.as_slice(), [Ev::Closed(A)]));
    assert_eq!(ep.stats().conns, 0);

    client.write_all(b"anyone?").unwrap();
    ep.poll(Some(Duration::from_millis(30)), &mut sink).unwrap();
    assert_eq!(sink.events.len(), 1, "{:?}", sink.events);
    drop(server); // the loop closes the descriptor after `closed`
}

#[test]
fn close_drops_a_queued_sent() {
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let (_server, _client) = pair(&mut ep, A);
    ep.send(A, vec![Bytes::from_static(b"quick")]);
    ep.close(A);
    ep.poll(Some(Duration::ZERO), &mut sink).unwrap();
    assert!(
        matches!(sink.events.as_slice(), [Ev::Closed(A)]),
        "{:?}",
        sink.events
    );
}

#[test]
fn index_reused_after_closed() {
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let (_s1, _c1) = pair(&mut ep, A);
    ep.close(A);
    ep.poll(Some(Duration::ZERO), &mut sink).unwrap();
    let again = Id::new(A.index(), A.generation() + 1);
    let (_s2, mut c2) = pair(&mut ep, again);
    c2.write_all(b"new").unwrap();
    poll_until(&mut ep, &mut sink, |s| s.bytes(again) == b"new");
}

#[test]
fn waker_from_another_thread() {
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let waker = ep.waker();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        waker.wake().unwrap();
    });
    let start = Instant::now();
    ep.poll(None, &mut sink).unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(matches!(sink.events.as_slice(), [Ev::Woken]));
    t.join().unwrap();
}

#[test]
fn wakes_coalesce() {
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let waker = ep.waker();
    for _ in 0..3 {
        waker.wake().unwrap();
    }
    ep.poll(Some(Duration::from_millis(100)), &mut sink)
        .unwrap();
    ep.poll(Some(Duration::from_millis(10)), &mut sink).unwrap();
    assert_eq!(sink.count(|e| matches!(e, Ev::Woken)), 1);
    waker.wake().unwrap();
    ep.poll(Some(Duration::from_millis(100)), &mut sink)
        .unwrap();
    assert_eq!(
        sink.count(|e| matches!(e, Ev::Woken)),
        2,
        "a wake after a poll is not lost"
    );
}

#[test]
fn removed_listener_accepts_nothing() {
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let (listener, addr) = listen(&mut ep);
    ep.remove_listener(Id(0));
    let _client = std::net::TcpStream::connect(addr).unwrap();
    ep.poll(Some(Duration::from_millis(30)), &mut sink).unwrap();
    assert!(sink.events.is_empty(), "{:?}", sink.events);
    drop(listener);
}

#[test]
fn a_listener_that_cannot_accept_is_reported_once_and_left_alone() {
    use std::os::fd::AsRawFd;
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let (listener, _) = listen(&mut ep);
    // A shut-down listening socket wakes its waiters and fails every `accept` with `EINVAL`.
    // SAFETY: the descriptor is live for the call; `shutdown` takes no pointers.
    let r = unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
    assert_eq!(r, 0);
    let start = Instant::now();
    let mut polls = 0;
    while start.elapsed() < Duration::from_millis(250) {
        ep.poll(Some(Duration::from_millis(20)), &mut sink).unwrap();
        polls += 1;
    }
    let errors = sink.count(|e| matches!(e, Ev::AcceptError(Id(0), _)));
    assert_eq!(errors, 1, "{:?}", sink.events);
    assert_eq!(errors, sink.events.len());
    // Nothing to do after the error: every poll slept its full timeout instead of retrying.
    assert!(polls <= 14, "{polls} polls in 250 ms");
}

#[test]
fn accepts_unix_connections() {
    let dir = std::env::temp_dir().join(format!("gnet-epoll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("accept.sock");
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    l.set_nonblocking(true).unwrap();
    let l = Listener::Unix(l);
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    ep.add_listener(Id(2), &l).unwrap();
    let mut client = UnixStream::connect(&path).unwrap();
    poll_until(&mut ep, &mut sink, |s| !s.accepted.is_empty());
    assert!(matches!(
        sink.events[0],
        Ev::Accepted(Id(2), Addr::Unix(None))
    ));
    let server = sink.accepted.pop().unwrap();
    assert!(!server.is_tcp());
    ep.add_conn(A, &server).unwrap();
    client.write_all(b"unix").unwrap();
    poll_until(&mut ep, &mut sink, |s| s.bytes(A) == b"unix");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn sub_millisecond_timeout_still_sleeps() {
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let start = Instant::now();
    ep.poll(Some(Duration::from_micros(300)), &mut sink)
        .unwrap();
    assert!(start.elapsed() >= Duration::from_micros(300));
    assert!(sink.events.is_empty());
}
