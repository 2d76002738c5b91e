//! Connecting: `connected` with the kernel's result, after which the id is forgotten and the
//! socket is registered again under it; a close before that cancels the connect (`closed`,
//! never `connected`); streams (TCP, Unix) and datagram sockets. (Unix only, as the datagram
//! tests.)

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bytes::Bytes;

use super::datagram::{close_datagram_socket, udp};
use super::peer::IO_TIMEOUT;
use super::Fixture;
use crate::contract::{Backend, Datagram, Id};
use crate::socket::{Addr, Socket};

const C: Id = Id(3);

/// A TCP socket as the loop makes one to connect: not connected, non-blocking.
fn tcp_to_connect() -> Socket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    Socket::Tcp(s.into())
}

pub(crate) fn connect_then_serve_the_connection<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    assert_eq!(fx.backend.capabilities().connect, Ok(()));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    fx.connect(C, tcp_to_connect(), &Addr::Inet(l.local_addr().unwrap()));
    let result = fx.connected(C);
    assert!(result.is_ok(), "{}: {result:?}", B::KIND);
    assert_eq!(fx.stats().conns, 0, "forgotten after connected");
    // The same id and socket, registered as a stream connection.
    fx.socket(C).set_nonblocking(true).unwrap();
    fx.add_connected(C, false);
    let (mut peer, _) = l.accept().unwrap();
    peer.write_all(b"hello").unwrap();
    fx.pump("bytes", |r, _| r.len(C) == 5);
    fx.send(C, vec![Bytes::from_static(b"back")]);
    fx.pump("sent", |r, _| r.sent_count(C) == 1);
    let mut buf = [0u8; 4];
    peer.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    peer.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"back");
    fx.close_and_wait(C);
    fx.assert_reaped();
}

pub(crate) fn connect_refused_reports_the_error<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    fx.connect(C, tcp_to_connect(), &Addr::Inet(dead));
    match fx.connected(C) {
        Err(kind) => assert_eq!(kind, io::ErrorKind::ConnectionRefused, "{}", B::KIND),
        Ok(()) => panic!("{}: connected to a closed port", B::KIND),
    }
    assert_eq!(fx.stats().conns, 0);
    fx.assert_reaped();
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

/// The loop's connect timeout: it closes the id. The connect is cancelled and `closed`
/// comes promptly, never `connected` (the recorder fails on anything after `closed`).
pub(crate) fn close_cancels_a_connect<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let (_l, _fill, addr) = black_hole();
    fx.connect(C, tcp_to_connect(), &Addr::Inet(addr));
    fx.settle(Duration::from_millis(200));
    let reported = fx.rec.connected(C);
    assert!(reported.is_none(), "{}: {reported:?}", B::KIND);
    super::close::close_promptly(&mut fx, C);
    fx.settle(Duration::from_millis(30));
    assert!(
        fx.rec.connected(C).is_none(),
        "{}: connected after closed",
        B::KIND
    );
    assert_eq!(fx.stats().conns, 0);
    fx.assert_reaped();
}

pub(crate) fn connect_unix_and_udp<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    // Unix stream.
    let path = super::peer::TempPath::new("connect");
    let l = std::os::unix::net::UnixListener::bind(&path.0).unwrap();
    let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    fx.connect(C, Socket::Unix(s.into()), &Addr::Unix(Some(path.0.clone())));
    let result = fx.connected(C);
    assert!(result.is_ok(), "{}: {result:?}", B::KIND);
    assert!(l.accept().is_ok());
    // Connected UDP.
    let peer = udp();
    let s = udp();
    s.set_nonblocking(true).unwrap();
    let d = Id(4);
    fx.connect(d, Socket::Udp(s), &Addr::Inet(peer.local_addr().unwrap()));
    let result = fx.connected(d);
    assert!(result.is_ok(), "{}: {result:?}", B::KIND);
    fx.add_connected(d, true);
    fx.send_to(d, vec![Datagram::new(None, Bytes::from_static(b"ping"))]);
    let mut buf = [0u8; 8];
    fx.pump("sent", |r, _| r.sent_count(d) == 1);
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    peer.send_to(b"pong", from).unwrap();
    fx.pump("the reply", |r, _| !r.datagrams.is_empty());
    assert_eq!(fx.rec.datagrams[0].data, b"pong");
    close_datagram_socket(&mut fx, d);
}
