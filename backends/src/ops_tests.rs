//! The contract's datagram and connect operations, tested generically over `B: Backend` and
//! instantiated for every backend compiled in (`uring::`, `epoll::`, `stdnet::`).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::contract::{Backend, Config, Datagram, Flow, Id, Sink};
use crate::socket::{Addr, Socket};

/// Everything a backend reported, in order, for the datagram and connect tests.
#[derive(Default)]
pub(crate) struct Rec {
    /// (socket, source, bytes, truncated)
    pub datagrams: Vec<(Id, SocketAddr, Vec<u8>, bool)>,
    pub errors: Vec<(Id, Option<SocketAddr>, io::Error)>,
    pub sent: Vec<(Id, usize)>,
    pub connected: Vec<(Id, io::Result<()>)>,
    pub received: HashMap<Id, Vec<u8>>,
    pub failed: Vec<(Id, io::Error)>,
    pub closed: Vec<Id>,
    /// What `datagram` answers.
    pub flow: Option<Flow>,
}

impl Sink for Rec {
    fn accepted(&mut self, _: Id, _: Socket, _: Addr) {}
    fn accept_error(&mut self, _: Id, _: io::Error) {}
    fn received(&mut self, conn: Id, data: &[u8]) -> Flow {
        self.received
            .entry(conn)
            .or_default()
            .extend_from_slice(data);
        Flow::Continue
    }
    fn eof(&mut self, _: Id) {}
    fn sent(&mut self, id: Id, n: usize) {
        self.sent.push((id, n));
    }
    fn failed(&mut self, id: Id, error: io::Error) {
        self.failed.push((id, error));
    }
    fn closed(&mut self, id: Id) {
        self.closed.push(id);
    }
    fn woken(&mut self) {}
    fn datagram(&mut self, id: Id, from: SocketAddr, data: &[u8], truncated: bool) -> Flow {
        self.datagrams.push((id, from, data.to_vec(), truncated));
        self.flow.unwrap_or(Flow::Continue)
    }
    fn datagram_error(&mut self, id: Id, to: Option<SocketAddr>, error: io::Error) {
        self.errors.push((id, to, error));
    }
    fn connected(&mut self, id: Id, result: io::Result<()>) {
        self.connected.push((id, result));
    }
}

fn open<B: Backend>(read_buffer_size: usize) -> B {
    let c = Config {
        read_buffer_size,
        ..Config::default()
    };
    match B::open(&c) {
        Ok(b) => b,
        Err(e) => panic!("{}: open: {e}", B::KIND),
    }
}

/// Polls until `done` holds; panics naming `what` after 10 s.
fn pump<B: Backend>(b: &mut B, r: &mut Rec, what: &str, done: impl Fn(&Rec) -> bool) {
    let start = Instant::now();
    while !done(r) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}: timed out waiting for {what}",
            B::KIND
        );
        b.poll(Some(Duration::from_millis(10)), r).expect("poll");
    }
}

/// Polls for a while, for checking that nothing (more) happens.
fn settle<B: Backend>(b: &mut B, r: &mut Rec, how_long: Duration) {
    let start = Instant::now();
    while start.elapsed() < how_long {
        b.poll(Some(Duration::from_millis(5)), r).expect("poll");
    }
}

fn udp() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A datagram socket as the loop hands it over: bound, non-blocking.
fn server_socket() -> (Socket, SocketAddr) {
    let s = udp();
    s.set_nonblocking(true).unwrap();
    let a = s.local_addr().unwrap();
    (Socket::Udp(s), a)
}

const S: Id = Id(7);

pub(crate) fn datagrams_arrive_one_by_one_with_their_source<B: Backend>() {
    let mut b = open::<B>(64 * 1024);
    assert_eq!(b.capabilities().datagrams, Ok(()));
    let mut r = Rec::default();
    let (sock, addr) = server_socket();
    b.add_datagram(S, &sock).expect("add_datagram");
    let clients: Vec<UdpSocket> = (0..4).map(|_| udp()).collect();
    // Sizes 0, 1, ... : never merged, never split, the empty one included.
    for (i, c) in clients.iter().enumerate() {
        for n in 0..25 {
            let len = (n * 97 + i) % 1500;
            c.send_to(&vec![(n + i) as u8; len], addr).unwrap();
        }
    }
    pump(&mut b, &mut r, "100 datagrams", |r| {
        r.datagrams.len() >= 100
    });
    settle(&mut b, &mut r, Duration::from_millis(30));
    assert_eq!(r.datagrams.len(), 100, "{}", B::KIND);
    for (i, c) in clients.iter().enumerate() {
        let from = c.local_addr().unwrap();
        let mine: Vec<&Vec<u8>> = r
            .datagrams
            .iter()
            .filter(|d| d.0 == S && d.1 == from)
            .map(|d| &d.2)
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
    assert!(r.datagrams.iter().all(|d| !d.3), "nothing was truncated");
    close(&mut b, &mut r, S);
}

pub(crate) fn a_datagram_larger_than_the_buffer_is_reported_truncated<B: Backend>() {
    let mut b = open::<B>(1024);
    let mut r = Rec::default();
    let (sock, addr) = server_socket();
    b.add_datagram(S, &sock).expect("add_datagram");
    let c = udp();
    c.send_to(&[9u8; 3000], addr).unwrap();
    c.send_to(b"after", addr).unwrap();
    pump(&mut b, &mut r, "two datagrams", |r| r.datagrams.len() == 2);
    let (_, _, first, truncated) = &r.datagrams[0];
    assert!(
        *truncated,
        "{}: a 3000-byte datagram into 1024 bytes",
        B::KIND
    );
    assert_eq!(first.len(), 1024);
    assert!(first.iter().all(|&x| x == 9));
    assert_eq!(
        (&r.datagrams[1].2[..], r.datagrams[1].3),
        (&b"after"[..], false)
    );
    close(&mut b, &mut r, S);
}

pub(crate) fn send_to_keeps_datagrams_whole_and_in_order<B: Backend>() {
    let mut b = open::<B>(64 * 1024);
    let mut r = Rec::default();
    let (sock, _) = server_socket();
    b.add_datagram(S, &sock).expect("add_datagram");
    let c = udp();
    let to = c.local_addr().unwrap();
    let batch: Vec<Datagram> = (0..64)
        .map(|i| Datagram::new(Some(to), Bytes::from(vec![i as u8; 100 + i * 10])))
        .collect();
    let total: usize = batch.iter().map(|d| d.data.len()).sum();
    b.send_to(S, batch);
    pump(&mut b, &mut r, "sent", |r| !r.sent.is_empty());
    assert_eq!(r.sent, [(S, total)], "{}", B::KIND);
    let mut buf = [0u8; 2048];
    for i in 0..64 {
        let (n, from) = c.recv_from(&mut buf).expect("a datagram");
        assert_eq!(from, sock.local_addr().unwrap().inet());
        assert_eq!(n, 100 + i * 10, "{}: datagram {i}", B::KIND);
        assert!(buf[..n].iter().all(|&x| x == i as u8));
    }
    assert!(r.errors.is_empty() && r.failed.is_empty());
    close(&mut b, &mut r, S);
}

pub(crate) fn a_datagram_that_cannot_be_sent_does_not_stop_the_others<B: Backend>() {
    let mut b = open::<B>(64 * 1024);
    let mut r = Rec::default();
    let (sock, _) = server_socket();
    b.add_datagram(S, &sock).expect("add_datagram");
    let c = udp();
    let to = c.local_addr().unwrap();
    let batch = vec![
        Datagram::new(Some(to), Bytes::from_static(b"one")),
        // Larger than any UDP datagram can be: EMSGSIZE.
        Datagram::new(Some(to), Bytes::from(vec![0u8; 70_000])),
        Datagram::new(Some(to), Bytes::from_static(b"three")),
    ];
    b.send_to(S, batch);
    pump(&mut b, &mut r, "sent", |r| !r.sent.is_empty());
    assert_eq!(r.errors.len(), 1, "{}: {:?}", B::KIND, r.errors);
    assert_eq!(r.errors[0].1, Some(to));
    assert!(r.failed.is_empty(), "the socket itself did not fail");
    let mut buf = [0u8; 64];
    for want in [&b"one"[..], b"three"] {
        let (n, _) = c.recv_from(&mut buf).expect("a datagram");
        assert_eq!(&buf[..n], want, "{}", B::KIND);
    }
    close(&mut b, &mut r, S);
}

pub(crate) fn an_icmp_error_does_not_kill_a_connected_socket<B: Backend>() {
    let mut b = open::<B>(64 * 1024);
    let mut r = Rec::default();
    // A port nobody listens on (bound a moment ago, then closed).
    let dead = udp().local_addr().unwrap();
    let s = udp();
    s.connect(dead).unwrap();
    s.set_nonblocking(true).unwrap();
    let sock = Socket::Udp(s);
    b.add_datagram(S, &sock).expect("add_datagram");
    let hello = || vec![Datagram::new(None, Bytes::from_static(b"anyone?"))];
    let start = Instant::now();
    while r.errors.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}: no ICMP error reported",
            B::KIND
        );
        let sent = r.sent.len();
        b.send_to(S, hello());
        pump(&mut b, &mut r, "sent", |r| r.sent.len() > sent);
        settle(&mut b, &mut r, Duration::from_millis(20));
    }
    assert_eq!(
        r.errors[0].2.kind(),
        io::ErrorKind::ConnectionRefused,
        "{}: {:?}",
        B::KIND,
        r.errors
    );
    assert!(r.failed.is_empty(), "{}: the socket failed", B::KIND);
    // Someone listens now: the same socket works.
    let Ok(peer) = UdpSocket::bind(dead) else {
        return close(&mut b, &mut r, S); // the port was taken meanwhile: nothing to check
    };
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let from = sock.local_addr().unwrap().inet();
    peer.send_to(b"back", from).unwrap();
    pump(&mut b, &mut r, "the datagram", |r| !r.datagrams.is_empty());
    assert_eq!(r.datagrams[0].2, b"back");
    let sent = r.sent.len();
    b.send_to(S, hello());
    pump(&mut b, &mut r, "sent", |r| r.sent.len() > sent);
    let mut buf = [0u8; 16];
    let (n, _) = peer.recv_from(&mut buf).expect("the datagram");
    assert_eq!(&buf[..n], b"anyone?");
    close(&mut b, &mut r, S);
}

pub(crate) fn pause_and_resume_datagrams<B: Backend>() {
    let mut b = open::<B>(64 * 1024);
    let mut r = Rec {
        flow: Some(Flow::Pause),
        ..Rec::default()
    };
    let (sock, addr) = server_socket();
    b.add_datagram(S, &sock).expect("add_datagram");
    let c = udp();
    c.send_to(b"first", addr).unwrap();
    pump(&mut b, &mut r, "the first datagram", |r| {
        !r.datagrams.is_empty()
    });
    for _ in 0..10 {
        c.send_to(b"later", addr).unwrap();
    }
    settle(&mut b, &mut r, Duration::from_millis(50));
    // A backend may deliver what it had already taken from the kernel, not the rest.
    let while_paused = r.datagrams.len();
    assert!(
        while_paused < 11,
        "{}: pause did not stop receiving",
        B::KIND
    );
    r.flow = None;
    b.resume(S);
    pump(&mut b, &mut r, "everything after resume", |r| {
        r.datagrams.len() == 11
    });
    close(&mut b, &mut r, S);
}

fn close<B: Backend>(b: &mut B, r: &mut Rec, id: Id) {
    b.close(id);
    pump(b, r, "closed", |r| r.closed.contains(&id));
    let n = r.datagrams.len();
    settle(b, r, Duration::from_millis(20));
    assert_eq!(r.datagrams.len(), n, "{}: a datagram after closed", B::KIND);
    assert_eq!(
        b.stats().conns,
        0,
        "{}: still tracked after closed",
        B::KIND
    );
}

/// A TCP socket as the loop makes one to connect: not connected, non-blocking.
fn tcp_to_connect() -> Socket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    Socket::Tcp(s.into())
}

const C: Id = Id(3);

pub(crate) fn connect_then_serve_the_connection<B: Backend>() {
    let mut b = open::<B>(64 * 1024);
    assert_eq!(b.capabilities().connect, Ok(()));
    let mut r = Rec::default();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let sock = tcp_to_connect();
    b.connect(C, &sock, &Addr::Inet(l.local_addr().unwrap()));
    pump(&mut b, &mut r, "connected", |r| !r.connected.is_empty());
    assert!(r.connected[0].1.is_ok(), "{}: {:?}", B::KIND, r.connected);
    assert_eq!(b.stats().conns, 0, "forgotten after connected");
    // The same id and socket, registered as a stream connection.
    sock.set_nonblocking(true).unwrap();
    b.add_conn(C, &sock).expect("add_conn");
    let (mut peer, _) = l.accept().unwrap();
    std::io::Write::write_all(&mut peer, b"hello").unwrap();
    pump(&mut b, &mut r, "bytes", |r| {
        r.received.get(&C).is_some_and(|v| v.len() == 5)
    });
    b.send(C, vec![Bytes::from_static(b"back")]);
    pump(&mut b, &mut r, "sent", |r| !r.sent.is_empty());
    let mut buf = [0u8; 4];
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Read::read_exact(&mut peer, &mut buf).unwrap();
    assert_eq!(&buf, b"back");
    b.close(C);
    pump(&mut b, &mut r, "closed", |r| r.closed.contains(&C));
}

pub(crate) fn connect_refused_reports_the_error<B: Backend>() {
    let mut b = open::<B>(64 * 1024);
    let mut r = Rec::default();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sock = tcp_to_connect();
    b.connect(C, &sock, &Addr::Inet(dead));
    pump(&mut b, &mut r, "connected", |r| !r.connected.is_empty());
    match &r.connected[0].1 {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{}", B::KIND),
        Ok(()) => panic!("{}: connected to a closed port", B::KIND),
    }
    assert_eq!(b.stats().conns, 0);
}

/// A listener whose backlog is full and that never accepts: the kernel drops further SYNs,
/// so a connect to it hangs until it gives up.
fn black_hole() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    // Connections that complete fill the accept queue; the rest of the SYNs are dropped.
    for _ in 0..4 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fill.push(s);
        }
    }
    (l, fill, addr)
}

pub(crate) fn close_cancels_a_connect<B: Backend>() {
    let mut b = open::<B>(64 * 1024);
    let mut r = Rec::default();
    let (_l, _fill, addr) = black_hole();
    let sock = tcp_to_connect();
    b.connect(C, &sock, &Addr::Inet(addr));
    settle(&mut b, &mut r, Duration::from_millis(200));
    assert!(r.connected.is_empty(), "{}: {:?}", B::KIND, r.connected);
    // The loop's connect timeout: it closes the id.
    b.close(C);
    pump(&mut b, &mut r, "closed", |r| r.closed.contains(&C));
    settle(&mut b, &mut r, Duration::from_millis(30));
    assert!(
        r.connected.is_empty(),
        "{}: connected after closed",
        B::KIND
    );
    assert_eq!(b.stats().conns, 0);
}

pub(crate) fn connect_unix_and_udp<B: Backend>() {
    let mut b = open::<B>(64 * 1024);
    let mut r = Rec::default();
    // Unix stream.
    let dir = std::env::temp_dir().join(format!("gnet-ops-{}-{}", B::KIND, std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.sock");
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    let unix = Socket::Unix(s.into());
    b.connect(C, &unix, &Addr::Unix(Some(path.clone())));
    pump(&mut b, &mut r, "unix connected", |r| {
        !r.connected.is_empty()
    });
    assert!(r.connected[0].1.is_ok(), "{}: {:?}", B::KIND, r.connected);
    assert!(l.accept().is_ok());
    // Connected UDP.
    let peer = udp();
    let s = udp();
    s.set_nonblocking(true).unwrap();
    let dgram = Socket::Udp(s);
    let d = Id(4);
    b.connect(d, &dgram, &Addr::Inet(peer.local_addr().unwrap()));
    pump(&mut b, &mut r, "udp connected", |r| r.connected.len() == 2);
    assert!(r.connected[1].1.is_ok(), "{}: {:?}", B::KIND, r.connected);
    b.add_datagram(d, &dgram).expect("add_datagram");
    b.send_to(d, vec![Datagram::new(None, Bytes::from_static(b"ping"))]);
    let mut buf = [0u8; 8];
    pump(&mut b, &mut r, "sent", |r| !r.sent.is_empty());
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    peer.send_to(b"pong", from).unwrap();
    pump(&mut b, &mut r, "the reply", |r| !r.datagrams.is_empty());
    assert_eq!(r.datagrams[0].2, b"pong");
    close(&mut b, &mut r, d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The socket address of a UDP socket's `Addr`.
trait Inet {
    fn inet(self) -> SocketAddr;
}

impl Inet for Addr {
    fn inet(self) -> SocketAddr {
        match self {
            Addr::Inet(a) => a,
            other => panic!("not an inet address: {other}"),
        }
    }
}

/// One `#[test]` per backend compiled in for each generic test.
macro_rules! ops_tests {
    ($($name:ident),+ $(,)?) => {
        #[cfg(all(target_os = "linux", feature = "uring"))]
        mod uring {
            $(#[test] fn $name() { super::$name::<crate::uring::Uring>() })+
        }
        #[cfg(all(target_os = "linux", feature = "epoll"))]
        mod epoll {
            $(#[test] fn $name() { super::$name::<crate::epoll::Epoll>() })+
        }
        #[cfg(feature = "stdnet")]
        mod stdnet {
            $(#[test] fn $name() { super::$name::<crate::stdnet::StdNet>() })+
        }
    };
}

ops_tests!(
    datagrams_arrive_one_by_one_with_their_source,
    a_datagram_larger_than_the_buffer_is_reported_truncated,
    send_to_keeps_datagrams_whole_and_in_order,
    a_datagram_that_cannot_be_sent_does_not_stop_the_others,
    an_icmp_error_does_not_kill_a_connected_socket,
    pause_and_resume_datagrams,
    connect_then_serve_the_connection,
    connect_refused_reports_the_error,
    close_cancels_a_connect,
    connect_unix_and_udp,
);
