//! io_uring specifics of the datagram and connect operations (the generic tests are in the
//! conformance suite, `crate::conformance`): the datagram buffer group running out,
//! capabilities missing, closing with a send chain in flight, chains that run through in one
//! poll. On the suite's fixture and recorder.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::opcode;

use super::tests::{config, connect, listen, Fx};
use crate::conformance::Ev;
use crate::contract::{Backend, Datagram, Id};
use crate::socket::{Addr, Socket};

const D: Id = Id(5);

/// A bound, non-blocking datagram socket as the loop hands it over.
fn datagram_socket() -> (Socket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    let a = s.local_addr().unwrap();
    (Socket::Udp(s), a)
}

/// Sets the receive buffer past `net.core.rmem_max`, so that a burst the test sends is
/// certainly all queued by the kernel: what the backend reports must then be all of it.
/// False where the process may not (`SO_RCVBUFFORCE` needs `CAP_NET_ADMIN`).
fn force_rcvbuf(s: &Socket, bytes: libc::c_int) -> bool {
    // SAFETY: a valid descriptor owned by `s`; the option value is a live `c_int` passed with
    // its size, which the kernel only reads.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::addr_of!(bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        eprintln!("SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    }
    r == 0
}

/// The standing operations of a backend without listeners: the waker's poll.
const STANDING: usize = 1;

#[test]
fn uring_no_datagram_group_until_a_datagram_socket() {
    let mut fx = Fx::open(config(16, 4096));
    let before = fx.stats();
    assert!(
        fx.backend.dgram_bufs.is_none(),
        "a stream-only server pays nothing"
    );
    let (sock, _) = datagram_socket();
    fx.add_datagram(D, sock);
    let after = fx.stats();
    assert_eq!(
        after.buffers_total,
        before.buffers_total + usize::from(super::bufring::DGRAM_BUFFERS)
    );
    fx.close_and_wait(D);
    let s = fx.stats();
    assert_eq!((s.buffers_free, s.conns), (s.buffers_total, 0), "{s:?}");
    fx.assert_reaped();
}

/// Far more datagrams queued in the socket than the group has buffers: the multishot ends on
/// `ENOBUFS` again and again, is re-armed each time the buffers are back, and every datagram
/// arrives, once, in the order sent.
#[test]
fn uring_datagram_group_exhaustion_recovers_and_loses_nothing() {
    let mut fx = Fx::open(config(16, 2048));
    fx.backend.dgram_buffers = 8;
    let (sock, addr) = datagram_socket();
    // Without the privilege, a burst that the default receive buffer holds.
    let (n, spread) = if force_rcvbuf(&sock, 8 << 20) {
        (600, 700)
    } else {
        (120, 100)
    };
    fx.add_datagram(D, sock);
    // Let the receive arm and wait in the kernel, then queue everything at once.
    fx.backend.poll(Some(Duration::ZERO), &mut fx.rec).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..n {
        let mut d = (i as u32).to_be_bytes().to_vec();
        d.resize(4 + i % spread, i as u8);
        client.send_to(&d, addr).unwrap();
    }
    fx.pump("every datagram", |r, _| r.datagrams.len() >= n);
    let nobufs = fx.backend.dgram_nobufs;
    assert!(
        nobufs >= 10,
        "the 8 buffers ran out {nobufs} times for {n} datagrams"
    );
    let from = client.local_addr().unwrap();
    for (i, d) in fx.rec.datagrams.iter().enumerate() {
        assert_eq!((d.id, d.from, d.truncated), (D, from, false));
        assert_eq!(
            d.data[..4],
            (i as u32).to_be_bytes(),
            "datagram {i} out of order"
        );
        assert_eq!(d.data.len(), 4 + i % spread);
    }
    assert!(fx.rec.datagram_errors(D).is_empty() && !fx.rec.has_failed(D));
    fx.close_and_wait(D);
    assert_eq!(fx.rec.datagrams.len(), n, "nothing more, nothing twice");
    fx.assert_reaped();
    let s = fx.stats();
    assert_eq!(s.buffers_free, s.buffers_total, "{s:?}");
    assert_eq!((s.conns, s.ops_in_flight), (0, STANDING), "{s:?}");
}

/// A kernel without multishot `RECVMSG` (here: a probe that pretends so) costs the datagram
/// sockets only: the backend opens, says why, refuses `add_datagram`, and serves streams.
#[test]
fn uring_without_recvmsg_datagrams_are_unavailable_but_streams_work() {
    super::probe::hide_opcodes(&[opcode::RecvMsg::CODE]);
    // Fails the test if the backend does not open without datagrams.
    let mut fx = Fx::open(config(16, 4096));
    super::probe::hide_opcodes(&[]);
    let caps = fx.backend.capabilities();
    let why = caps.datagrams.expect_err("datagrams reported unavailable");
    assert!(why.contains("RECVMSG"), "{why}");
    assert_eq!(caps.connect, Ok(()));
    let (sock, _) = datagram_socket();
    let e = fx
        .backend
        .add_datagram(D, &sock)
        .expect_err("add_datagram refused");
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    assert!(fx.backend.dgram_bufs.is_none());
    assert_eq!(fx.stats().conns, 0);
    // Streams still work: an echo over TCP.
    let (_l, addr) = listen(&mut fx);
    let (mut client, id) = connect(&mut fx, addr, 3);
    std::io::Write::write_all(&mut client, b"still here").unwrap();
    fx.pump("data", |r, _| r.len(id) == 10);
    fx.send(id, vec![Bytes::from_static(b"yes")]);
    fx.pump("sent", |r, _| r.sent_count(id) == 1);
    let mut back = [0u8; 3];
    std::io::Read::read_exact(&mut client, &mut back).unwrap();
    assert_eq!(&back, b"yes");
}

/// Without `CONNECT`, `connect` is reported failed (by the next poll), nothing is tracked.
#[test]
fn uring_without_connect_a_connect_fails_at_once() {
    super::probe::hide_opcodes(&[opcode::Connect::CODE]);
    // Fails the test if the backend does not open without connect.
    let mut fx = Fx::open(config(16, 4096));
    super::probe::hide_opcodes(&[]);
    let caps = fx.backend.capabilities();
    assert!(caps.connect.unwrap_err().contains("CONNECT"));
    assert_eq!(caps.datagrams, Ok(()));
    let (sock, addr) = datagram_socket();
    fx.connect(D, sock, &Addr::Inet(addr));
    assert_eq!(fx.stats().conns, 0);
    assert_eq!(fx.connected(D), Err(std::io::ErrorKind::Unsupported));
    fx.assert_reaped();
}

/// A batch of 64 datagrams is one chain of linked sends, which the kernel runs link by link;
/// the enter after it was submitted runs it to its end, so `sent` comes with the first poll.
#[test]
fn uring_a_send_to_chain_runs_through_in_one_poll() {
    let mut fx = Fx::open(config(16, 4096));
    let (sock, _) = datagram_socket();
    fx.add_datagram(D, sock);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let to = peer.local_addr().unwrap();
    let mut buf = [0u8; 256];
    for round in 1..=3 {
        let batch = (0..64)
            .map(|i| Datagram::new(Some(to), Bytes::from(vec![i as u8; 200])))
            .collect();
        fx.send_to(D, batch);
        let mut polls = 0;
        while fx.rec.sent_count(D) < round {
            fx.backend
                .poll(Some(Duration::from_millis(100)), &mut fx.rec)
                .unwrap();
            polls += 1;
            assert!(polls < 100, "round {round}: no sent after {polls} polls");
        }
        assert!(polls <= 2, "round {round}: the chain took {polls} polls");
        for i in 0..64 {
            let (n, _) = peer.recv_from(&mut buf).unwrap();
            assert_eq!((n, buf[0]), (200, i as u8), "round {round}, datagram {i}");
        }
    }
    assert_eq!(fx.rec.of(D), vec![Ev::Sent(D, 64 * 200); 3]);
    assert_eq!(fx.backend.chain_ops, 0);
}

/// Closing while a `send_to` batch is in flight cancels it and reaps every completion:
/// `closed` once, no `sent` for the abandoned batch, nothing left in flight but the waker's
/// poll, every buffer back. Closed at three points: before the batch reached the kernel,
/// right after, and in the middle of a chain.
#[test]
fn uring_close_with_a_send_batch_in_flight_reaps_everything() {
    for when in 0..3 {
        let mut fx = Fx::open(config(16, 4096));
        let (sock, _) = datagram_socket();
        fx.add_datagram(D, sock);
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = peer.local_addr().unwrap();
        let batch: Vec<Datagram> = (0..200)
            .map(|i| Datagram::new(Some(to), Bytes::from(vec![i as u8; 1000])))
            .collect();
        fx.send_to(D, batch);
        match when {
            0 => {}
            1 => fx.backend.flush(),
            _ => {
                // The first chain submitted; its links progress one round at a time.
                fx.backend.flush();
                let _ = fx.backend.enter(Some(Duration::ZERO));
            }
        }
        assert!(
            fx.backend.chain_ops > 0,
            "case {when}: a chain is in flight"
        );
        fx.close_and_wait(D);
        // Nothing more for the id (no sent, failure or error either), and nothing left
        // behind.
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_millis(30) {
            fx.backend
                .poll(Some(Duration::from_millis(5)), &mut fx.rec)
                .unwrap();
        }
        assert_eq!(fx.rec.of(D), [Ev::Closed(D)], "case {when}");
        assert_eq!(fx.backend.chain_ops, 0, "case {when}");
        fx.assert_reaped();
        let s = fx.stats();
        assert_eq!(
            (s.conns, s.ops_in_flight, s.buffers_free),
            (0, STANDING, s.buffers_total),
            "case {when}: {s:?}"
        );
    }
}

/// A connect closed before it completed is cancelled and reaped: `closed`, never `connected`,
/// and the id is free again (here for a datagram socket).
#[test]
fn uring_a_closed_connect_frees_its_id() {
    let mut fx = Fx::open(config(16, 4096));
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    // TEST-NET-1 (RFC 5737): nothing answers, the SYN goes unanswered (or the route is
    // missing, which fails the connect at once: then there is nothing to cancel).
    fx.connect(
        D,
        Socket::Tcp(s.into()),
        &Addr::Inet("192.0.2.1:9".parse().unwrap()),
    );
    fx.close_and_wait(D);
    assert_eq!(fx.rec.connected(D), None);
    let s = fx.stats();
    assert_eq!((s.conns, s.ops_in_flight), (0, STANDING), "{s:?}");
    fx.assert_reaped();
    // The loop would take a new generation; the backend must take the same id as well.
    fx.drop_socket(D);
    let (d, _) = datagram_socket();
    fx.backend.add_datagram(D, &d).expect("the id is free");
}

/// A send chain blocked in the kernel (the peer's queue is full: a Unix datagram pair whose
/// other end never reads, standing in for a send buffer that does not drain) is cancelled by
/// the close: the link fails the rest of the chain, every completion is reaped, `closed`.
#[test]
fn uring_close_cancels_a_send_chain_blocked_on_a_full_peer() {
    let mut fx = Fx::open(config(16, 4096));
    let (mine, _peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
    mine.set_nonblocking(true).unwrap();
    // The descriptor is all the backend uses; a `Socket::Udp` is how the loop hands one over.
    fx.add_datagram(
        D,
        Socket::Udp(UdpSocket::from(std::os::fd::OwnedFd::from(mine))),
    );
    // More than the sender's buffer holds (what the peer has not read stays charged to it).
    let batch: Vec<Datagram> = (0..1000)
        .map(|i| Datagram::new(None, Bytes::from(vec![i as u8; 1000])))
        .collect();
    fx.send_to(D, batch);
    let settle = Instant::now();
    let mut polls = 0;
    while settle.elapsed() < Duration::from_millis(50) {
        fx.backend
            .poll(Some(Duration::from_millis(5)), &mut fx.rec)
            .unwrap();
        polls += 1;
    }
    assert!(
        fx.rec.sending(D),
        "the peer never reads: the batch cannot finish"
    );
    // A chain that cannot move does not keep the loop from sleeping (5 ms polls in 50 ms).
    assert!(polls <= 20, "{polls} polls in 50 ms");
    assert!(fx.backend.chain_ops > 0, "a send waits in the kernel");
    fx.close_and_wait(D);
    assert_eq!(fx.rec.of(D), [Ev::Closed(D)]);
    assert_eq!(fx.backend.chain_ops, 0);
    fx.assert_reaped();
    let s = fx.stats();
    assert_eq!(
        (s.conns, s.ops_in_flight, s.buffers_free),
        (0, STANDING, s.buffers_total),
        "{s:?}"
    );
}
