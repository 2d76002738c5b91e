//! Datagram sockets where the conformance suite (`crate::conformance`, `datagram.rs`) does
//! not reach: bursts larger than one `recvmmsg`, a `sendmmsg` batch that meets a full socket
//! buffer, a pending network error, and datagrams sharing the loop with busy streams. On the
//! suite's fixture and recorder.

use std::io::{self as stdio, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::thread;
use std::time::Duration;

use bytes::Bytes;

use crate::conformance::peer::set_sndbuf;
use crate::conformance::{Ev, Fixture, Recorder};
use crate::contract::{Backend, Config, Datagram, Id};
use crate::readiness::dgram::MIN_CHARGE;
use crate::readiness::Readiness as Engine;
use crate::socket::Socket;

/// The longest a single `poll` here waits for what it must deliver.
const LONG: Duration = Duration::from_secs(5);

const D: Id = Id(5 | (3 << 32));
const A: Id = Id(1);
const B: Id = Id(2);

/// Asks for a receive buffer of `bytes` (the kernel doubles it, capped by `rmem_max`), so that
/// a burst is not dropped before the backend reads it.
fn set_rcvbuf(s: &UdpSocket, bytes: usize) {
    socket2::SockRef::from(s)
        .set_recv_buffer_size(bytes)
        .expect("SO_RCVBUF");
}

/// A bound, non-blocking UDP socket registered as `id`, with a large receive buffer.
fn datagram_socket(fx: &mut Fixture<Engine>, id: Id) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_nonblocking(true).unwrap();
    set_rcvbuf(&s, 1 << 20);
    let addr = s.local_addr().unwrap();
    fx.add_datagram(id, Socket::Udp(s));
    addr
}

/// Sender `i`'s datagram `n`: its sender and sequence number, then filler to a size that
/// varies.
fn numbered(i: usize, n: usize) -> Vec<u8> {
    let mut d = vec![i as u8, (n >> 8) as u8, n as u8];
    d.resize(3 + (n * 7 + i) % 150, 0xa5);
    d
}

/// Checks that each sender's datagrams arrived complete and in the order sent.
fn assert_in_order(r: &Recorder, senders: &[UdpSocket], per_sender: usize) {
    for (i, c) in senders.iter().enumerate() {
        let from = c.local_addr().unwrap();
        let mine: Vec<&Vec<u8>> = r
            .datagrams
            .iter()
            .filter(|d| d.from == from)
            .map(|d| &d.data)
            .collect();
        assert_eq!(mine.len(), per_sender, "datagrams from sender {i}");
        for (n, d) in mine.iter().enumerate() {
            assert_eq!(**d, numbered(i, n), "sender {i}, datagram {n}");
        }
    }
}

/// No datagram error and no failure on `id`.
fn assert_no_error(r: &Recorder, id: Id) {
    let errors = r.datagram_errors(id);
    assert!(errors.is_empty() && !r.has_failed(id), "{errors:?}");
}

#[test]
fn a_burst_larger_than_one_recvmmsg_arrives_in_one_pass_in_order() {
    let mut fx = Fixture::<Engine>::new();
    let addr = datagram_socket(&mut fx, D);
    assert!(
        fx.backend.area.batch() < 200,
        "the burst must take several calls"
    );
    let senders: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    // Interleaved, 200 in all, every one queued before the backend looks.
    for n in 0..50 {
        for (i, c) in senders.iter().enumerate() {
            c.send_to(&numbered(i, n), addr).unwrap();
        }
    }
    thread::sleep(Duration::from_millis(20));
    // One edge, one pass: recvmmsg again and again until EAGAIN, not one call per poll.
    fx.backend.poll(Some(LONG), &mut fx.rec).expect("poll");
    assert_eq!(
        fx.rec.datagrams.len(),
        200,
        "one poll should drain the burst"
    );
    assert_in_order(&fx.rec, &senders, 50);
    assert!(fx.rec.datagrams.iter().all(|d| d.id == D && !d.truncated));
    assert_no_error(&fx.rec, D);
    fx.close_and_wait(D);
    assert_eq!(fx.stats().conns, 0);
    fx.assert_reaped();
}

/// A Unix datagram socket pair. UDP cannot be used here: on loopback a UDP send never waits
/// (the loopback device releases each datagram's send-buffer charge as it passes it on, so
/// `SO_SNDBUF` at its minimum still never gives `EAGAIN`), while a Unix datagram stays charged
/// to the sender until the reader takes it. The backend sees a datagram socket like any other:
/// the same `sendmmsg`, each datagram to the connected peer.
fn unix_pair() -> (Socket, UnixDatagram) {
    let (ours, theirs) = UnixDatagram::pair().expect("socketpair");
    ours.set_nonblocking(true).unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (Socket::Udp(UdpSocket::from(OwnedFd::from(ours))), theirs)
}

#[test]
fn a_send_to_that_fills_the_socket_buffer_waits_for_room_and_completes() {
    const COUNT: usize = 64;
    let mut fx = Fixture::<Engine>::new();
    let (sock, peer) = unix_pair();
    set_sndbuf(sock.as_fd(), 4096); // a few datagrams of 1000 bytes
    fx.add_datagram(D, sock);
    let batch: Vec<Datagram> = (0..COUNT)
        .map(|i| Datagram::new(None, Bytes::from(vec![i as u8; 1000 + i])))
        .collect();
    let total: usize = batch.iter().map(|d| d.data.len()).sum();
    fx.send_to(D, batch);
    assert!(
        fx.backend.table.dgram_mut(D).unwrap().sending(),
        "{COUNT} datagrams should not fit at once"
    );
    // Part of the batch went out before EAGAIN.
    let mut buf = [0u8; 4096];
    let n = peer
        .recv(&mut buf)
        .expect("the first datagram, sent at once");
    assert_eq!(buf[..n], [0u8; 1000]);
    // The reader takes the rest slowly, making room a little at a time, so it goes out over
    // several writability edges.
    let reader = thread::spawn(move || {
        let mut got = vec![buf[..n].to_vec()];
        for _ in 1..COUNT {
            let n = peer.recv(&mut buf).expect("a datagram");
            got.push(buf[..n].to_vec());
            thread::sleep(Duration::from_micros(200));
        }
        got
    });
    fx.pump("sent", |r, _| r.sent_count(D) > 0);
    assert_eq!(fx.rec.of(D), [Ev::Sent(D, total)]);
    let got = reader.join().unwrap();
    for (i, d) in got.iter().enumerate() {
        assert_eq!(*d, vec![i as u8; 1000 + i], "datagram {i}");
    }
    assert_no_error(&fx.rec, D);
    fx.backend
        .poll(Some(Duration::from_millis(20)), &mut fx.rec)
        .unwrap();
    assert_eq!(fx.rec.sent_count(D), 1, "sent once");
    fx.close_and_wait(D);
    fx.assert_reaped();
}

#[test]
fn a_pending_network_error_does_not_cost_the_datagram_that_meets_it() {
    let mut fx = Fixture::<Engine>::new();
    let dead = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(dead).unwrap();
    // The port unreachable this draws comes back as the socket's pending error, which the
    // next send returns instead of sending (no poll reads it before).
    s.send(b"first").unwrap();
    thread::sleep(Duration::from_millis(50));
    s.set_nonblocking(true).unwrap();
    fx.add_datagram(D, Socket::Udp(s));
    let Ok(peer) = UdpSocket::bind(dead) else {
        return; // the port was taken meanwhile: nothing to check
    };
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    fx.send_to(
        D,
        ["second", "third"]
            .map(|d| Datagram::new(None, Bytes::from_static(d.as_bytes())))
            .into(),
    );
    fx.pump("sent", |r, _| r.sent_count(D) > 0);
    assert_eq!(fx.rec.sent_count(D), 1);
    assert!(fx.rec.events.contains(&Ev::Sent(D, 11)));
    let mut buf = [0u8; 16];
    for want in [&b"second"[..], b"third"] {
        let n = peer.recv(&mut buf).expect("a datagram");
        assert_eq!(&buf[..n], want, "the datagram that met the error was sent");
    }
    // The error was the socket's, about "first": reported without a destination.
    let errors = fx.rec.datagram_errors(D);
    assert_eq!(errors, [(None, stdio::ErrorKind::ConnectionRefused)]);
    assert!(!fx.rec.has_failed(D));
    fx.close_and_wait(D);
    fx.assert_reaped();
}

/// Writes to a client until its socket buffer and the server's receive queue are full (some
/// megabytes on loopback), so that the server side stays readable for many passes.
fn fill(client: &mut TcpStream) -> usize {
    client.set_nonblocking(true).unwrap();
    let chunk = [7u8; 64 * 1024];
    let mut n = 0;
    loop {
        match client.write(&chunk) {
            Ok(k) => n += k,
            Err(e) if e.kind() == stdio::ErrorKind::WouldBlock => return n,
            Err(e) => panic!("filling: {e}"),
        }
    }
}

#[test]
fn datagrams_share_the_loop_fairly_with_busy_streams() {
    const CHUNK: usize = 16 * 1024;
    const COUNT: usize = 200;
    let config = Config {
        read_buffer_size: 4096,
        read_chunk: CHUNK,
        ..Config::default()
    };
    let mut fx = Fixture::<Engine>::open(config);
    let mut ca = fx.tcp_pair(A);
    let mut cb = fx.tcp_pair(B);
    let addr = datagram_socket(&mut fx, D);
    let queued = fill(&mut ca).min(fill(&mut cb));
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..COUNT {
        sender.send_to(&numbered(0, n), addr).unwrap();
    }
    thread::sleep(Duration::from_millis(20));
    // Each pass takes at most CHUNK from a stream and CHUNK / MIN_CHARGE datagrams, so the
    // datagrams need this many polls, during which the streams are never drained.
    let per_pass = CHUNK / MIN_CHARGE;
    assert!(
        queued > COUNT.div_ceil(per_pass) * CHUNK,
        "the streams must stay busy: {queued} bytes queued"
    );
    let mut polls = 0;
    while fx.rec.datagrams.len() < COUNT {
        assert!(polls < 10 * COUNT, "datagrams starved");
        let (a, b, d) = (fx.rec.len(A), fx.rec.len(B), fx.rec.datagrams.len());
        fx.backend.poll(Some(LONG), &mut fx.rec).expect("poll");
        let r = &fx.rec;
        let (a, b, d) = (r.len(A) - a, r.len(B) - b, r.datagrams.len() - d);
        // Every poll serves all three, each within its share.
        assert!(
            a > 0 && b > 0 && d > 0,
            "poll {polls}: {a} + {b} bytes, {d} datagrams"
        );
        assert!(a <= CHUNK && b <= CHUNK, "poll {polls}: {a} + {b} bytes");
        assert!(d <= per_pass, "poll {polls}: {d} datagrams");
        polls += 1;
    }
    assert_eq!(polls, COUNT.div_ceil(per_pass), "datagrams per pass");
    assert_in_order(&fx.rec, std::slice::from_ref(&sender), COUNT);
    assert!(
        fx.rec.len(A) < queued && fx.rec.len(B) < queued,
        "streams still busy"
    );
    for id in [A, B, D] {
        fx.close_and_wait(id);
    }
    assert_eq!(fx.stats().conns, 0);
    fx.assert_reaped();
}
