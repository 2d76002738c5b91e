//! Receiving and sending: echo, large sends, eof, pause/resume, fairness, errors.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{listen, open, pair, poll_until, set_sndbuf, Ev, Recorder};
use crate::contract::{Backend, Config, Id};
use crate::socket::Addr;

const A: Id = Id(1 | (7 << 32));
const B: Id = Id(2);

#[test]
fn accept_and_echo() {
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let (_listener, addr) = listen(&mut ep);
    let mut client = TcpStream::connect(addr).unwrap();
    poll_until(&mut ep, &mut sink, |s| !s.accepted.is_empty());
    match &sink.events[0] {
        Ev::Accepted(Id(0), Addr::Inet(peer)) => {
            assert_eq!(*peer, client.local_addr().unwrap());
        }
        other => panic!("unexpected {other:?}"),
    }
    let server = sink.accepted.pop().unwrap();
    assert!(server.is_tcp());
    ep.add_conn(A, &server).unwrap();

    client.write_all(b"hello").unwrap();
    poll_until(&mut ep, &mut sink, |s| s.bytes(A) == b"hello");
    ep.send(
        A,
        vec![Bytes::from_static(b"hel"), Bytes::from_static(b"lo")],
    );
    poll_until(&mut ep, &mut sink, |s| {
        s.count(|e| matches!(e, Ev::Sent(..))) == 1
    });
    assert!(matches!(sink.events.last(), Some(Ev::Sent(A, 5))));
    // The sent buffers come back for reuse, after `sent`.
    assert_eq!(sink.reclaimed.len(), 2);
    let mut back = [0; 5];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
}

#[test]
fn large_send_is_one_sent() {
    const CHUNK: usize = 512;
    const CHUNKS: usize = 2048; // 1 MiB in more buffers than one sendmsg takes
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let (server, mut client) = pair(&mut ep, A);
    set_sndbuf(server.as_fd(), 4096);
    let bufs: Vec<Bytes> = (0..CHUNKS)
        .map(|i| Bytes::from(vec![(i % 251) as u8; CHUNK]))
        .collect();
    let expected: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
    let reader = thread::spawn(move || {
        let mut got = vec![0; CHUNK * CHUNKS];
        client.read_exact(&mut got).unwrap();
        got
    });
    ep.send(A, bufs);
    assert!(
        ep.table.stream_mut(A).unwrap().sending(),
        "1 MiB should not fit at once"
    );
    poll_until(&mut ep, &mut sink, |s| {
        s.count(|e| matches!(e, Ev::Sent(..))) == 1
    });
    assert!(matches!(sink.events.as_slice(), [Ev::Sent(A, n)] if *n == CHUNK * CHUNKS));
    assert!(
        reader.join().unwrap() == expected,
        "bytes arrived out of order"
    );
    ep.poll(Some(Duration::from_millis(20)), &mut sink).unwrap();
    assert_eq!(sink.count(|e| matches!(e, Ev::Sent(..))), 1);
}

#[test]
fn eof_after_data_and_send_still_works() {
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let (_server, mut client) = pair(&mut ep, A);
    client.write_all(b"last words").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    poll_until(&mut ep, &mut sink, |s| {
        s.count(|e| matches!(e, Ev::Eof(_))) == 1
    });
    assert_eq!(sink.bytes(A), b"last words");
    assert!(matches!(sink.events.last(), Some(Ev::Eof(A))));

    ep.send(A, vec![Bytes::from_static(b"bye")]);
    poll_until(&mut ep, &mut sink, |s| {
        matches!(s.events.last(), Some(Ev::Sent(A, 3)))
    });
    let mut back = [0; 3];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"bye");
    assert_eq!(sink.count(|e| matches!(e, Ev::Eof(_))), 1);
}

#[test]
fn pause_then_resume_rereads_without_new_data() {
    let config = Config {
        read_buffer_size: 16,
        ..Config::default()
    };
    let mut ep = open(&config);
    let mut sink = Recorder {
        pause_after: Some(1),
        ..Recorder::default()
    };
    let (_server, mut client) = pair(&mut ep, A);
    let data: Vec<u8> = (0..100).collect();
    client.write_all(&data).unwrap();
    poll_until(&mut ep, &mut sink, |s| !s.events.is_empty());
    for _ in 0..3 {
        ep.poll(Some(Duration::from_millis(10)), &mut sink).unwrap();
    }
    assert_eq!(
        sink.count(|e| matches!(e, Ev::Received(..))),
        1,
        "read while paused"
    );
    assert_eq!(sink.bytes(A), &data[..16]);

    sink.pause_after = None;
    ep.resume(A);
    let start = Instant::now();
    ep.poll(None, &mut sink).unwrap(); // the resumed connection is due: must not block
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(sink.bytes(A), data);
}

#[test]
fn read_chunk_bounds_each_connection_per_poll() {
    let config = Config {
        read_buffer_size: 16,
        read_chunk: 32,
        ..Config::default()
    };
    let mut ep = open(&config);
    let mut sink = Recorder::default();
    let (_sa, mut ca) = pair(&mut ep, A);
    let (_sb, mut cb) = pair(&mut ep, B);
    ca.write_all(&[1; 200]).unwrap();
    cb.write_all(&[2; 200]).unwrap();
    thread::sleep(Duration::from_millis(20));
    let mut polls = 0;
    while sink.bytes(A).len() < 200 || sink.bytes(B).len() < 200 {
        let (a, b) = (sink.bytes(A).len(), sink.bytes(B).len());
        let start = Instant::now();
        ep.poll(Some(Duration::from_secs(2)), &mut sink).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "blocked with a ready list"
        );
        assert!(sink.bytes(A).len() - a <= 32 && sink.bytes(B).len() - b <= 32);
        polls += 1;
    }
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
    let mut ep = open(&config);
    let mut sink = Recorder::default();
    let (_sa, mut ca) = pair(&mut ep, A);
    let (_sb, mut cb) = pair(&mut ep, B);
    ca.write_all(&[1; 100]).unwrap();
    cb.write_all(&[2; 100]).unwrap();
    thread::sleep(Duration::from_millis(20));
    let mut polls = 0;
    while sink.bytes(A).len() < 100 || sink.bytes(B).len() < 100 {
        let before = sink.bytes(A).len() + sink.bytes(B).len();
        let start = Instant::now();
        ep.poll(Some(Duration::from_secs(2)), &mut sink).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "blocked with a ready list"
        );
        let got = sink.bytes(A).len() + sink.bytes(B).len() - before;
        assert!(
            got <= 48,
            "one poll delivered {got} bytes over a 48-byte budget"
        );
        polls += 1;
    }
    assert!(
        polls >= 5,
        "200 bytes at 48 per poll take 5 polls, took {polls}"
    );
    assert_eq!(sink.bytes(A), [1; 100]);
    assert_eq!(sink.bytes(B), [2; 100]);
}

/// Sets `SO_LINGER` to zero so that dropping the socket sends a reset.
fn reset_on_drop(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is live for the call; the option value points to a `linger`
    // valid for reads of `size_of::<linger>()` bytes, the size passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn reset_is_one_failed() {
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let (_server, client) = pair(&mut ep, A);
    reset_on_drop(&client);
    drop(client);
    poll_until(&mut ep, &mut sink, |s| !s.events.is_empty());
    assert!(matches!(
        sink.events.as_slice(),
        [Ev::Failed(A, std::io::ErrorKind::ConnectionReset)]
    ));
    ep.send(A, vec![Bytes::from_static(b"x")]);
    ep.close(A);
    poll_until(&mut ep, &mut sink, |s| s.events.len() > 1);
    assert!(matches!(
        sink.events.as_slice(),
        [Ev::Failed(..), Ev::Closed(A)]
    ));
}

#[test]
fn send_to_reset_peer_fails_once() {
    let mut ep = open(&Config::default());
    let mut sink = Recorder::default();
    let (_server, client) = pair(&mut ep, A);
    reset_on_drop(&client);
    drop(client);
    thread::sleep(Duration::from_millis(20));
    ep.send(A, vec![Bytes::from_static(b"into the void")]);
    poll_until(&mut ep, &mut sink, |s| !s.events.is_empty());
    for _ in 0..3 {
        ep.poll(Some(Duration::from_millis(5)), &mut sink).unwrap();
    }
    assert_eq!(sink.events.len(), 1, "{:?}", sink.events);
    assert!(matches!(sink.events[0], Ev::Failed(A, _)));
}
