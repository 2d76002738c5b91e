//! Datagram sockets: one report per datagram with its source, never merged or split,
//! truncation told; `send_to` batches whole and in order, one failed datagram not stopping the
//! others; the network's errors not failing the socket; pause, resume and close. (Run on
//! Unix only for now.)

use std::io;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::close::close_promptly;
use super::peer::IO_TIMEOUT;
use super::{Ev, Fixture};
use crate::contract::{Backend, Config, Datagram, Flow, Id};
use crate::socket::Socket;

const S: Id = Id(7);

/// The backend with receive buffers of `read_buffer_size`.
fn open<B: Backend>(read_buffer_size: usize) -> Fixture<B> {
    Fixture::open(Config {
        read_buffer_size,
        ..Config::default()
    })
}

/// A peer's datagram socket: bound on loopback, blocking, with a read timeout.
pub(super) fn udp() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Closes the datagram socket `id` as [`close_promptly`] closes a connection, then checks
/// that nothing more comes (the recorder fails on anything after `closed`) and that
/// everything is reaped.
pub(super) fn close_datagram_socket<B: Backend>(fx: &mut Fixture<B>, id: Id) {
    close_promptly(fx, id);
    fx.settle(Duration::from_millis(20));
    fx.assert_reaped();
}

pub(crate) fn datagrams_arrive_one_by_one_with_their_source<B: Backend>() {
    let mut fx = open::<B>(64 * 1024);
    assert_eq!(fx.backend.capabilities().datagrams, Ok(()));
    let addr = fx.udp(S);
    let clients: Vec<UdpSocket> = (0..4).map(|_| udp()).collect();
    // Sizes 0, 1, ... : never merged, never split, the empty one included.
    for (i, c) in clients.iter().enumerate() {
        for n in 0..25 {
            let len = (n * 97 + i) % 1500;
            c.send_to(&vec![(n + i) as u8; len], addr).unwrap();
        }
    }
    fx.pump("100 datagrams", |r, _| r.datagrams.len() >= 100);
    fx.settle(Duration::from_millis(30));
    assert_eq!(fx.rec.datagrams.len(), 100, "{}", B::KIND);
    for (i, c) in clients.iter().enumerate() {
        let from = c.local_addr().unwrap();
        let mine: Vec<&Vec<u8>> = fx
            .rec
            .datagrams_of(S)
            .into_iter()
            .filter(|d| d.from == from)
            .map(|d| &d.data)
            .collect();
        assert_eq!(mine.len(), 25, "{}: from client {i}", B::KIND);
        for (n, d) in mine.iter().enumerate() {
            assert_eq!(
                d.len(),
                (n * 97 + i) % 1500,
                "{}: datagram {n} of {i}",
                B::KIND
            );
            assert!(d.iter().all(|&x| x == (n + i) as u8));
        }
    }
    assert!(
        fx.rec.datagrams.iter().all(|d| !d.truncated),
        "nothing was truncated"
    );
    close_datagram_socket(&mut fx, S);
}

pub(crate) fn a_datagram_larger_than_the_buffer_is_reported_truncated<B: Backend>() {
    let mut fx = open::<B>(1024);
    let addr = fx.udp(S);
    let c = udp();
    c.send_to(&[9u8; 3000], addr).unwrap();
    c.send_to(b"after", addr).unwrap();
    fx.pump("two datagrams", |r, _| r.datagrams.len() == 2);
    let first = &fx.rec.datagrams[0];
    assert!(
        first.truncated,
        "{}: a 3000-byte datagram into 1024 bytes",
        B::KIND
    );
    assert_eq!(first.data.len(), 1024);
    assert!(first.data.iter().all(|&x| x == 9));
    let second = &fx.rec.datagrams[1];
    assert_eq!((&second.data[..], second.truncated), (&b"after"[..], false));
    close_datagram_socket(&mut fx, S);
}

pub(crate) fn send_to_keeps_datagrams_whole_and_in_order<B: Backend>() {
    let mut fx = open::<B>(64 * 1024);
    let addr = fx.udp(S);
    let c = udp();
    let to = c.local_addr().unwrap();
    let batch: Vec<Datagram> = (0..64)
        .map(|i| Datagram::new(Some(to), Bytes::from(vec![i as u8; 100 + i * 10])))
        .collect();
    let total: usize = batch.iter().map(|d| d.data.len()).sum();
    fx.send_to(S, batch);
    fx.pump("sent", |r, _| r.sent_count(S) > 0);
    assert_eq!(fx.rec.of(S), [Ev::Sent(S, total)], "{}", B::KIND);
    let mut buf = [0u8; 2048];
    for i in 0..64 {
        let (n, from) = c.recv_from(&mut buf).expect("a datagram");
        assert_eq!(from, addr);
        assert_eq!(n, 100 + i * 10, "{}: datagram {i}", B::KIND);
        assert!(buf[..n].iter().all(|&x| x == i as u8));
    }
    assert!(fx.rec.datagram_errors(S).is_empty() && !fx.rec.has_failed(S));
    close_datagram_socket(&mut fx, S);
}

/// A datagram that fails is one `datagram_error` with its destination; the others go out,
/// and `sent` comes with the batch's total, the failed datagram's bytes included (the
/// recorder checks the total).
pub(crate) fn a_datagram_that_cannot_be_sent_does_not_stop_the_others<B: Backend>() {
    let mut fx = open::<B>(64 * 1024);
    fx.udp(S);
    let c = udp();
    let to = c.local_addr().unwrap();
    let batch = vec![
        Datagram::new(Some(to), Bytes::from_static(b"one")),
        // Larger than any UDP datagram can be: EMSGSIZE.
        Datagram::new(Some(to), Bytes::from(vec![0u8; 70_000])),
        Datagram::new(Some(to), Bytes::from_static(b"three")),
    ];
    fx.send_to(S, batch);
    fx.pump("sent", |r, _| r.sent_count(S) > 0);
    let errors = fx.rec.datagram_errors(S);
    assert_eq!(errors.len(), 1, "{}: {errors:?}", B::KIND);
    assert_eq!(errors[0].0, Some(to));
    assert!(!fx.rec.has_failed(S), "the socket itself did not fail");
    let mut buf = [0u8; 64];
    for want in [&b"one"[..], b"three"] {
        let (n, _) = c.recv_from(&mut buf).expect("a datagram");
        assert_eq!(&buf[..n], want, "{}", B::KIND);
    }
    close_datagram_socket(&mut fx, S);
}

pub(crate) fn an_icmp_error_does_not_kill_a_connected_socket<B: Backend>() {
    let mut fx = open::<B>(64 * 1024);
    // A port nobody listens on (bound a moment ago, then closed).
    let dead = udp().local_addr().unwrap();
    let s = udp();
    s.connect(dead).unwrap();
    s.set_nonblocking(true).unwrap();
    let from = s.local_addr().unwrap();
    fx.add_datagram(S, Socket::Udp(s));
    let hello = || vec![Datagram::new(None, Bytes::from_static(b"anyone?"))];
    let start = Instant::now();
    while fx.rec.datagram_errors(S).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}: no ICMP error reported",
            B::KIND
        );
        let sent = fx.rec.sent_count(S);
        fx.send_to(S, hello());
        fx.pump("sent", |r, _| r.sent_count(S) > sent);
        fx.settle(Duration::from_millis(20));
    }
    let errors = fx.rec.datagram_errors(S);
    assert_eq!(
        errors[0].1,
        io::ErrorKind::ConnectionRefused,
        "{}: {errors:?}",
        B::KIND
    );
    assert!(!fx.rec.has_failed(S), "{}: the socket failed", B::KIND);
    // Someone listens now: the same socket works.
    let Ok(peer) = UdpSocket::bind(dead) else {
        return close_datagram_socket(&mut fx, S); // the port was taken meanwhile
    };
    peer.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    peer.send_to(b"back", from).unwrap();
    fx.pump("the datagram", |r, _| !r.datagrams.is_empty());
    assert_eq!(fx.rec.datagrams[0].data, b"back");
    let sent = fx.rec.sent_count(S);
    fx.send_to(S, hello());
    fx.pump("sent", |r, _| r.sent_count(S) > sent);
    let mut buf = [0u8; 16];
    let (n, _) = peer.recv_from(&mut buf).expect("the datagram");
    assert_eq!(&buf[..n], b"anyone?");
    close_datagram_socket(&mut fx, S);
}

pub(crate) fn pause_and_resume_datagrams<B: Backend>() {
    let mut fx = open::<B>(64 * 1024);
    fx.rec.answer = Flow::Pause;
    let addr = fx.udp(S);
    let c = udp();
    c.send_to(b"first", addr).unwrap();
    fx.pump("the first datagram", |r, _| !r.datagrams.is_empty());
    for _ in 0..10 {
        c.send_to(b"later", addr).unwrap();
    }
    fx.settle(Duration::from_millis(50));
    // A backend may deliver what it had already taken from the kernel, not the rest.
    let while_paused = fx.rec.datagrams.len();
    assert!(
        while_paused < 11,
        "{}: pause did not stop receiving",
        B::KIND
    );
    fx.rec.answer = Flow::Continue;
    fx.backend.resume(S);
    fx.pump("everything after resume", |r, _| r.datagrams.len() == 11);
    close_datagram_socket(&mut fx, S);
}

/// A datagram socket closed while paused, with datagrams waiting in the kernel: `closed`
/// promptly, once, nothing else after `close`; counted in `Stats::conns` until then.
pub(crate) fn close_a_paused_datagram_socket<B: Backend>() {
    let mut fx = open::<B>(64 * 1024);
    fx.rec.answer = Flow::Pause;
    let addr = fx.udp(S);
    let c = udp();
    c.send_to(b"first", addr).unwrap();
    fx.pump("the first datagram", |r, _| !r.datagrams.is_empty());
    for _ in 0..10 {
        c.send_to(b"waiting", addr).unwrap();
    }
    fx.settle(Duration::from_millis(50));
    close_datagram_socket(&mut fx, S);
    assert_eq!(fx.rec.of(S).last(), Some(&Ev::Closed(S)));
}
