//! Accepting: the listener's full id and the peer's address reported back, sockets handed over
//! non-blocking, listeners removed for good, and a listener that cannot accept.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use super::peer::{read_within, tcp_client};
use super::{Ev, Fixture};
use crate::contract::{Backend, Id};
use crate::socket::{Addr, Socket};

/// The contract's promises about an accepted socket.
fn check_accepted(socket: &Socket) {
    socket
        .local_addr()
        .expect("an accepted socket has an address");
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let (nonblocking, cloexec) = super::peer::nonblocking_and_cloexec(socket.as_fd());
        assert!(
            nonblocking,
            "an accepted socket must be handed over non-blocking"
        );
        assert!(cloexec, "an accepted socket must be close-on-exec");
    }
}

/// Connections on two TCP listeners: each reported with its listener's id (index and
/// generation) and its peer's address; an accepted socket then works as a connection.
pub(crate) fn accepts_tcp<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let (one, two) = (Id::new(1, 0x0102_0304), Id::new(2, u32::MAX));
    let (_l1, addr1) = fx.listen_tcp(one);
    let (_l2, addr2) = fx.listen_tcp(two);
    let mut clients = Vec::new();
    for i in 0..6 {
        let (listener, addr) = if i % 2 == 0 {
            (one, addr1)
        } else {
            (two, addr2)
        };
        let client = tcp_client(addr);
        let (socket, peer) = fx.accept(listener);
        assert!(socket.is_tcp());
        check_accepted(&socket);
        assert_eq!(
            peer,
            Addr::Inet(client.local_addr().unwrap()),
            "peer address"
        );
        assert_eq!(socket.peer_addr().unwrap(), peer);
        clients.push((client, socket));
    }
    assert_eq!(fx.rec.count(|e| matches!(e, Ev::Accepted(..))), 6);
    assert_eq!(fx.rec.events.len(), 6, "{}", fx.rec.tail());

    // Several at once: every one reported, none twice.
    let burst: Vec<_> = (0..10).map(|_| tcp_client(addr1)).collect();
    fx.pump("10 connections accepted", |r, _| r.accepted.len() == 10);
    let peers: HashSet<Addr> = fx.rec.accepted.drain(..).map(|(_, _, peer)| peer).collect();
    let want: HashSet<Addr> = burst
        .iter()
        .map(|c| Addr::Inet(c.local_addr().unwrap()))
        .collect();
    assert_eq!(peers, want);

    let (mut client, socket) = clients.pop().unwrap();
    let conn = Id::new(3, 1);
    fx.add(conn, socket);
    client.write_all(b"over tcp").unwrap();
    fx.pump("bytes on the accepted socket", |r, _| r.len(conn) == 8);
    assert_eq!(fx.rec.bytes(conn), b"over tcp");
    fx.close_and_wait(conn);
    fx.assert_reaped();
}

/// A Unix listener: its id and the client's (unnamed) address reported back; the socket works.
#[cfg(unix)]
pub(crate) fn accepts_unix<B: Backend>() {
    use std::os::unix::net::UnixStream;
    let mut fx = Fixture::<B>::new();
    let lid = Id::new(5, 77);
    let (_l, path) = fx.listen_unix(lid);
    let mut client = UnixStream::connect(&path.0).unwrap();
    client
        .set_read_timeout(Some(super::peer::IO_TIMEOUT))
        .unwrap();
    let (socket, peer) = fx.accept(lid);
    assert_eq!(peer, Addr::Unix(None));
    assert!(matches!(socket, Socket::Unix(_)));
    check_accepted(&socket);
    assert_eq!(
        socket.local_addr().unwrap(),
        Addr::Unix(Some(path.0.clone()))
    );

    let conn = Id::new(6, 2);
    fx.add(conn, socket);
    client.write_all(b"over unix").unwrap();
    fx.pump("bytes on the accepted socket", |r, _| r.len(conn) == 9);
    fx.send(conn, vec![bytes::Bytes::from_static(b"back")]);
    fx.pump("sent", |r, _| r.sent_count(conn) == 1);
    assert_eq!(super::peer::read_n(&client, 4), b"back");
    client.shutdown(std::net::Shutdown::Write).unwrap();
    fx.pump("eof", |r, _| r.ended(conn));
    fx.close_and_wait(conn);
    assert_eq!(
        fx.rec.of(conn),
        [
            Ev::Received(conn, 9),
            Ev::Sent(conn, 4),
            Ev::Eof(conn),
            Ev::Closed(conn)
        ]
    );
    fx.assert_reaped();
}

/// After `remove_listener` nothing more is accepted for it, not even what was pending; once the
/// loop drops the listener, the port is free and its pending clients are turned away; and the
/// id can be registered again.
pub(crate) fn removed_listener_accepts_nothing_and_frees_its_port<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let lid = Id::new(1, 3);
    let (listener, addr) = fx.listen_tcp(lid);
    let _first = tcp_client(addr);
    drop(fx.accept(lid));
    // Pending when the listener is removed (in the kernel's backlog, or taken by the backend
    // and not reported), and arriving after it while the loop still holds the listener.
    let pending = tcp_client(addr);
    std::thread::sleep(Duration::from_millis(30));
    fx.backend.remove_listener(lid);
    let late = tcp_client(addr);
    fx.settle(Duration::from_millis(100));
    assert_eq!(
        fx.rec.events.len(),
        1,
        "accepted after remove_listener: {}",
        fx.rec.tail()
    );
    drop(listener);
    for (what, client) in [("pending", &pending), ("late", &late)] {
        match read_within(client, Duration::from_secs(2)) {
            Ok(Some(0)) | Err(_) => {}
            other => panic!("{what} client still connected after the listener went: {other:?}"),
        }
    }
    // No handle of the old listener survives in the backend.
    let again = TcpListener::bind(addr).expect("the port is still taken");
    drop(again);
    fx.assert_reaped();

    let (_listener, addr) = fx.listen_tcp(lid);
    let _client = tcp_client(addr);
    drop(fx.accept(lid));
    assert_eq!(fx.rec.count(|e| matches!(e, Ev::AcceptError(..))), 0);
    fx.assert_reaped();
}

/// A listener whose `accept` fails for good (shut down: `EINVAL`) is reported once, and then
/// left alone: the backend does not retry it in a busy loop.
#[cfg(unix)]
pub(crate) fn listener_that_cannot_accept_is_reported_once<B: Backend>() {
    use std::os::fd::AsFd;
    let mut fx = Fixture::<B>::new();
    let lid = Id::new(4, 4);
    let (listener, _) = fx.listen_tcp(lid);
    super::peer::shutdown_listener(listener.as_fd());
    let start = std::time::Instant::now();
    let mut polls = 0;
    while start.elapsed() < Duration::from_millis(300) {
        fx.backend
            .poll(Some(Duration::from_millis(20)), &mut fx.rec)
            .unwrap();
        polls += 1;
    }
    assert_eq!(fx.rec.events.len(), 1, "{}", fx.rec.tail());
    assert!(matches!(fx.rec.events[0], Ev::AcceptError(id, _) if id == lid));
    assert!(
        polls <= 16,
        "{polls} polls of 20 ms in 300 ms: something kept waking the loop"
    );
    fx.backend.remove_listener(lid);
    fx.assert_reaped();
}
