//! Datagram sockets where the generic tests (`ops_tests.rs`) do not reach: bursts larger than
//! one `recvmmsg`, a `sendmmsg` batch that meets a full socket buffer, and datagrams sharing
//! the loop with busy streams.

use std::collections::HashMap;
use std::io::{self as stdio, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::conformance::peer::set_sndbuf;
use crate::contract::{Backend, Config, Datagram, Flow, Id, Sink};
use crate::epoll::dgram::MIN_CHARGE;
use crate::epoll::Epoll;
use crate::socket::{Addr, Socket};

const LONG: Duration = Duration::from_secs(5);

fn open(config: &Config) -> Epoll {
    Epoll::open(config).expect("epoll opens")
}

/// A connected pair: the server side registered as `id`, the client side blocking.
fn pair(ep: &mut Epoll, id: Id) -> (Socket, TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (server, _) = l.accept().expect("accept");
    server.set_nonblocking(true).expect("nonblocking");
    let server = Socket::Tcp(server);
    ep.add_conn(id, &server).expect("add_conn");
    (server, client)
}

const D: Id = Id(5 | (3 << 32));
const A: Id = Id(1);
const B: Id = Id(2);

/// Counts what streams and datagram sockets report.
#[derive(Default)]
struct Rec {
    datagrams: Vec<(Id, SocketAddr, Vec<u8>, bool)>,
    bytes: HashMap<Id, usize>,
    sent: Vec<(Id, usize)>,
    errors: Vec<(Id, Option<SocketAddr>, stdio::Error)>,
    failed: Vec<(Id, stdio::Error)>,
    closed: Vec<Id>,
}

impl Sink for Rec {
    fn accepted(&mut self, _: Id, _: Socket, _: Addr) {}
    fn accept_error(&mut self, _: Id, _: stdio::Error) {}
    fn received(&mut self, conn: Id, data: &[u8]) -> Flow {
        *self.bytes.entry(conn).or_default() += data.len();
        Flow::Continue
    }
    fn eof(&mut self, _: Id) {}
    fn sent(&mut self, id: Id, n: usize) {
        self.sent.push((id, n));
    }
    fn failed(&mut self, id: Id, error: stdio::Error) {
        self.failed.push((id, error));
    }
    fn closed(&mut self, id: Id) {
        self.closed.push(id);
    }
    fn woken(&mut self) {}
    fn datagram(&mut self, id: Id, from: SocketAddr, data: &[u8], truncated: bool) -> Flow {
        self.datagrams.push((id, from, data.to_vec(), truncated));
        Flow::Continue
    }
    fn datagram_error(&mut self, id: Id, to: Option<SocketAddr>, error: stdio::Error) {
        self.errors.push((id, to, error));
    }
    fn connected(&mut self, id: Id, _: stdio::Result<()>) {
        panic!("connected for {id}: nothing connects here")
    }
}

impl Rec {
    fn bytes(&self, id: Id) -> usize {
        self.bytes.get(&id).copied().unwrap_or(0)
    }
}

fn poll_until(ep: &mut Epoll, r: &mut Rec, what: &str, done: impl Fn(&Rec) -> bool) {
    let deadline = Instant::now() + LONG;
    while !done(r) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        ep.poll(Some(Duration::from_millis(10)), r).expect("poll");
    }
}

fn close(ep: &mut Epoll, r: &mut Rec, id: Id) {
    ep.close(id);
    poll_until(ep, r, "closed", |r| r.closed.contains(&id));
}

/// Asks for a receive buffer of `bytes` (the kernel doubles it, capped by `rmem_max`), so that
/// a burst is not dropped before the backend reads it.
fn set_rcvbuf(s: &UdpSocket, bytes: usize) {
    socket2::SockRef::from(s)
        .set_recv_buffer_size(bytes)
        .expect("SO_RCVBUF");
}

/// A bound, non-blocking UDP socket registered as `id`, with a large receive buffer.
fn datagram_socket(ep: &mut Epoll, id: Id) -> (Socket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_nonblocking(true).unwrap();
    set_rcvbuf(&s, 1 << 20);
    let addr = s.local_addr().unwrap();
    let s = Socket::Udp(s);
    ep.add_datagram(id, &s).expect("add_datagram");
    (s, addr)
}

/// Sender `i`'s datagram `n`: its sender and sequence number, then filler to a size that
/// varies.
fn numbered(i: usize, n: usize) -> Vec<u8> {
    let mut d = vec![i as u8, (n >> 8) as u8, n as u8];
    d.resize(3 + (n * 7 + i) % 150, 0xa5);
    d
}

/// Checks that each sender's datagrams arrived complete and in the order sent.
fn assert_in_order(r: &Rec, senders: &[UdpSocket], per_sender: usize) {
    for (i, c) in senders.iter().enumerate() {
        let from = c.local_addr().unwrap();
        let mine: Vec<&Vec<u8>> = r
            .datagrams
            .iter()
            .filter(|d| d.1 == from)
            .map(|d| &d.2)
            .collect();
        assert_eq!(mine.len(), per_sender, "datagrams from sender {i}");
        for (n, d) in mine.iter().enumerate() {
            assert_eq!(**d, numbered(i, n), "sender {i}, datagram {n}");
        }
    }
}

#[test]
fn a_burst_larger_than_one_recvmmsg_arrives_in_one_pass_in_order() {
    let mut ep = open(&Config::default());
    let mut r = Rec::default();
    let (sock, addr) = datagram_socket(&mut ep, D);
    assert!(ep.area.batch() < 200, "the burst must take several calls");
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
    ep.poll(Some(LONG), &mut r).expect("poll");
    assert_eq!(r.datagrams.len(), 200, "one poll should drain the burst");
    assert_in_order(&r, &senders, 50);
    assert!(r.datagrams.iter().all(|d| d.0 == D && !d.3));
    assert!(r.errors.is_empty() && r.failed.is_empty());
    close(&mut ep, &mut r, D);
    assert_eq!(ep.stats().conns, 0);
    drop(sock);
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
    let mut ep = open(&Config::default());
    let mut r = Rec::default();
    let (sock, peer) = unix_pair();
    set_sndbuf(sock.as_fd(), 4096); // a few datagrams of 1000 bytes
    ep.add_datagram(D, &sock).expect("add_datagram");
    let batch: Vec<Datagram> = (0..COUNT)
        .map(|i| Datagram::new(None, Bytes::from(vec![i as u8; 1000 + i])))
        .collect();
    let total: usize = batch.iter().map(|d| d.data.len()).sum();
    ep.send_to(D, batch);
    assert!(
        ep.table.dgram_mut(D).unwrap().sending(),
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
    poll_until(&mut ep, &mut r, "sent", |r| !r.sent.is_empty());
    assert_eq!(r.sent, [(D, total)]);
    let got = reader.join().unwrap();
    for (i, d) in got.iter().enumerate() {
        assert_eq!(*d, vec![i as u8; 1000 + i], "datagram {i}");
    }
    assert!(r.errors.is_empty() && r.failed.is_empty(), "{:?}", r.errors);
    ep.poll(Some(Duration::from_millis(20)), &mut r).unwrap();
    assert_eq!(r.sent.len(), 1, "sent once");
    close(&mut ep, &mut r, D);
}

#[test]
fn a_pending_network_error_does_not_cost_the_datagram_that_meets_it() {
    let mut ep = open(&Config::default());
    let mut r = Rec::default();
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
    let sock = Socket::Udp(s);
    ep.add_datagram(D, &sock).expect("add_datagram");
    let Ok(peer) = UdpSocket::bind(dead) else {
        return; // the port was taken meanwhile: nothing to check
    };
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    ep.send_to(
        D,
        ["second", "third"]
            .map(|d| Datagram::new(None, Bytes::from_static(d.as_bytes())))
            .into(),
    );
    poll_until(&mut ep, &mut r, "sent", |r| !r.sent.is_empty());
    assert_eq!(r.sent, [(D, 11)]);
    let mut buf = [0u8; 16];
    for want in [&b"second"[..], b"third"] {
        let n = peer.recv(&mut buf).expect("a datagram");
        assert_eq!(&buf[..n], want, "the datagram that met the error was sent");
    }
    // The error was the socket's, about "first": reported without a destination.
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(
        (r.errors[0].1, r.errors[0].2.kind()),
        (None, stdio::ErrorKind::ConnectionRefused)
    );
    assert!(r.failed.is_empty());
    close(&mut ep, &mut r, D);
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
    let mut ep = open(&config);
    let mut r = Rec::default();
    let (_sa, mut ca) = pair(&mut ep, A);
    let (_sb, mut cb) = pair(&mut ep, B);
    let (sock, addr) = datagram_socket(&mut ep, D);
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
    while r.datagrams.len() < COUNT {
        assert!(polls < 10 * COUNT, "datagrams starved");
        let (a, b, d) = (r.bytes(A), r.bytes(B), r.datagrams.len());
        ep.poll(Some(LONG), &mut r).expect("poll");
        let (a, b, d) = (r.bytes(A) - a, r.bytes(B) - b, r.datagrams.len() - d);
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
    assert_in_order(&r, std::slice::from_ref(&sender), COUNT);
    assert!(
        r.bytes(A) < queued && r.bytes(B) < queued,
        "streams still busy"
    );
    for id in [A, B, D] {
        close(&mut ep, &mut r, id);
    }
    assert_eq!(ep.stats().conns, 0);
    drop(sock);
}
