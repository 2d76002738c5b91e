//! stdnet's own tests of datagram sockets and connects, where the conformance suite
//! (`crate::conformance`, `datagram.rs` and `connect.rs`) does not reach: how fast `close`
//! wakes a thread blocked in the kernel, that the thread is gone, the bound on datagrams
//! queued ahead of the loop, the polled connect used off Linux. On the suite's fixture and
//! recorder.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use socket2::{Domain, SockAddr, SockRef, Type};

use super::{connect, dgram, StdNet};
use crate::conformance::{Ev, Fixture};
use crate::contract::{Backend, Config, Datagram, Id};
use crate::socket::{Addr, Socket};

type Fx = Fixture<StdNet>;

fn open(read_buffer_size: usize) -> Fx {
    Fx::open(Config {
        read_buffer_size,
        ..Config::default()
    })
}

/// Closes `id` and returns how long `closed` took; checks that it came once, that nothing
/// follows (the recorder also fails on anything about `id` after `closed`) and that the
/// backend tracks nothing any more.
fn close_timed(fx: &mut Fx, id: Id) -> Duration {
    let start = Instant::now();
    fx.close(id);
    assert!(!fx.rec.is_closed(id), "closed reported during close");
    fx.pump("closed", |r, _| r.is_closed(id));
    let took = start.elapsed();
    let seen = fx.rec.events.len();
    fx.settle(Duration::from_millis(30));
    assert_eq!(fx.rec.times(&Ev::Closed(id)), 1);
    assert_eq!(fx.rec.events.len(), seen, "{}", fx.rec.tail());
    assert_eq!(fx.stats().conns, 0);
    fx.assert_reaped();
    took
}

/// Whether a thread of this process has this name (Linux; names are cut at 15 bytes).
fn thread_named(name: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    tasks
        .flatten()
        .any(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
}

/// Waits (briefly: a thread exits right after its last message) until no thread has `name`.
fn assert_thread_gone(name: &str) {
    let start = Instant::now();
    while thread_named(name) {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{name} still runs"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// A bound datagram socket as the loop hands it over, with a receive buffer large enough for
/// the bursts below.
fn udp_socket() -> (Socket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    SockRef::from(&s).set_recv_buffer_size(1 << 20).unwrap();
    s.set_nonblocking(true).unwrap();
    let a = s.local_addr().unwrap();
    (Socket::Udp(s), a)
}

fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

#[test]
fn close_wakes_a_reader_blocked_in_recv_from() {
    for (index, connected) in [(41, false), (42, true)] {
        let mut fx = open(64 * 1024);
        let (sock, _) = udp_socket();
        let peer = client();
        if connected {
            let Socket::Udp(s) = &sock else {
                unreachable!()
            };
            s.connect(peer.local_addr().unwrap()).unwrap();
        }
        let id = Id::new(index, 1);
        fx.add_datagram(id, sock);
        let name = format!("gnet-recv-{index}");
        thread::sleep(Duration::from_millis(50)); // in recv_from by now
        assert!(thread_named(&name));
        let took = close_timed(&mut fx, id);
        assert!(
            took < Duration::from_millis(500),
            "connected {connected}: {took:?}"
        );
        assert_thread_gone(&name);
        assert!(!fx.rec.has_failed(id) && fx.rec.datagram_errors(id).is_empty());
    }
}

/// (On Linux the `shutdown` at close also makes the writer's next send fail with `EPIPE`; the
/// writer's own look at the closing flag between datagrams matters where it does not.)
#[test]
fn close_wakes_a_writer_of_datagrams_and_abandons_its_batch() {
    let mut fx = open(64 * 1024);
    let (sock, _) = udp_socket();
    let id = Id::new(43, 1);
    fx.add_datagram(id, sock);
    let to = client().local_addr().unwrap();
    let batch = (0..20_000)
        .map(|_| Datagram::new(Some(to), Bytes::from(vec![1u8; 8192])))
        .collect();
    fx.send_to(id, batch);
    thread::sleep(Duration::from_millis(5));
    let took = close_timed(&mut fx, id);
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(
        fx.rec.sent_count(id),
        0,
        "the abandoned batch reported sent"
    );
    assert_thread_gone("gnet-send-43");
}

#[test]
fn a_socket_with_a_receive_timeout_of_its_own_does_not_fail_when_idle() {
    let mut fx = open(64 * 1024);
    let (sock, addr) = udp_socket();
    let Socket::Udp(s) = &sock else {
        unreachable!()
    };
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let id = Id::new(44, 1);
    fx.add_datagram(id, sock);
    fx.settle(Duration::from_millis(150));
    assert!(!fx.rec.has_failed(id), "{}", fx.rec.tail());
    client().send_to(b"late", addr).unwrap();
    fx.pump("the datagram", |r, _| !r.datagrams.is_empty());
    assert_eq!(fx.rec.datagrams[0].data, b"late");
    close_timed(&mut fx, id);
}

#[test]
fn truncation_is_told_at_the_exact_boundary() {
    let mut fx = open(1000);
    let (sock, addr) = udp_socket();
    let id = Id::new(45, 1);
    fx.add_datagram(id, sock);
    let c = client();
    for len in [999, 1000, 1001, 0, 65_000] {
        c.send_to(&vec![3u8; len], addr).unwrap();
    }
    fx.pump("five datagrams", |r, _| r.datagrams.len() == 5);
    let got: Vec<(usize, bool)> = fx
        .rec
        .datagrams
        .iter()
        .map(|d| (d.data.len(), d.truncated))
        .collect();
    let want = [
        (999, false),
        (1000, false),
        (1000, true),
        (0, false),
        (1000, true),
    ];
    assert_eq!(got, want);
    close_timed(&mut fx, id);
}

/// Sends `n` datagrams of `len` bytes (each numbered in its first two bytes) while the loop
/// does not poll, checks that the reader stayed within `bound` datagrams ahead of the loop,
/// then that every one arrives, in order.
fn burst(read_buffer_size: usize, n: usize, len: usize, bound: usize) {
    let mut fx = open(read_buffer_size);
    let (sock, addr) = udp_socket();
    let id = Id::new(46, 1);
    fx.add_datagram(id, sock);
    let c = client();
    for i in 0..n {
        let mut d = vec![0u8; len];
        d[..2].copy_from_slice(&(i as u16).to_be_bytes());
        c.send_to(&d, addr).unwrap();
    }
    // The reader fills its budget and waits for the loop.
    let start = Instant::now();
    let queued = || fx.backend.conns[&id].state.lock().in_flight;
    while queued() < bound {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} queued",
            queued()
        );
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(20));
    assert_eq!(queued(), bound, "the reader went past its bound");
    fx.pump("the whole burst", |r, _| r.datagrams.len() == n);
    for (i, d) in fx.rec.datagrams.iter().enumerate() {
        assert_eq!(u16::from_be_bytes([d.data[0], d.data[1]]) as usize, i);
        assert_eq!((d.data.len(), d.truncated), (len, false));
    }
    close_timed(&mut fx, id);
}

#[test]
fn a_burst_larger_than_the_in_flight_bound_all_arrives() {
    // Small datagrams: the count bounds the queue.
    burst(
        64 * 1024,
        4 * dgram::MAX_IN_FLIGHT,
        100,
        dgram::MAX_IN_FLIGHT,
    );
    // Large ones: two buffers' worth of bytes do (900, 1800, then 2700 >= 2 * 1000).
    burst(1000, 50, 900, 3);
}

#[test]
fn send_and_send_to_refuse_the_other_kind_of_socket() {
    let mut fx = open(64 * 1024);
    let (sock, _) = udp_socket();
    let id = Id::new(47, 1);
    assert_eq!(
        fx.backend.add_conn(id, &sock).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    fx.add_datagram(id, sock);
    let (another, _) = udp_socket();
    assert_eq!(
        fx.backend.add_datagram(id, &another).unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    fx.send(id, vec![Bytes::from_static(b"bytes")]);
    fx.pump("failed", |r, _| r.has_failed(id));
    assert_eq!(fx.rec.of(id), [Ev::Failed(id, io::ErrorKind::InvalidInput)]);
    close_timed(&mut fx, id);
}

/// A TCP socket as the loop makes one to connect.
fn tcp_to_connect() -> Socket {
    let s = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    Socket::Tcp(s.into())
}

/// A listener that never accepts, its backlog full: SYNs to it go unanswered.
fn black_hole() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
    let l = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let fill = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()
        })
        .collect();
    (l, fill, addr)
}

#[test]
fn close_during_a_connect_to_a_black_hole() {
    let (_l, _fill, addr) = black_hole();
    let mut fx = open(64 * 1024);
    let id = Id::new(48, 1);
    fx.connect(id, tcp_to_connect(), &Addr::Inet(addr));
    fx.settle(Duration::from_millis(100));
    assert_eq!(fx.rec.connected(id), None);
    assert!(thread_named("gnet-connect-48"));
    assert_eq!(fx.stats().conns, 1);
    let took = close_timed(&mut fx, id);
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(fx.rec.connected(id), None);
    assert_thread_gone("gnet-connect-48");
}

#[test]
fn close_at_once_after_connect_never_reports_connected() {
    // `close` may come before the thread's connect starts, during it, or after it completed:
    // always `closed` promptly, never `connected`.
    let (_l, _fill, hole) = black_hole();
    let open_port = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut fx = open(64 * 1024);
    for i in 0..40 {
        let to = if i % 2 == 0 {
            hole
        } else {
            open_port.local_addr().unwrap()
        };
        let id = Id::new(49, i);
        fx.connect(id, tcp_to_connect(), &Addr::Inet(to));
        if i % 4 >= 2 {
            thread::sleep(Duration::from_micros(200 * u64::from(i)));
        }
        let took = close_timed(&mut fx, id);
        assert!(took < Duration::from_millis(500), "attempt {i}: {took:?}");
    }
    let connected = fx.rec.count(|e| matches!(e, Ev::Connected(..)));
    assert_eq!(connected, 0, "{}", fx.rec.tail());
}

#[test]
fn a_datagram_socket_connects_at_once_and_a_close_before_poll_wins() {
    let mut fx = open(64 * 1024);
    let (sock, _) = udp_socket();
    let peer = client().local_addr().unwrap();
    let id = Id::new(50, 1);
    fx.connect(id, sock, &Addr::Inet(peer));
    assert_eq!(fx.socket(id).peer_addr().unwrap(), Addr::Inet(peer));
    assert_eq!(fx.stats().conns, 1);
    close_timed(&mut fx, id);
    assert_eq!(fx.rec.connected(id), None);
    // An address that does not fit the socket: reported, not panicked on.
    let id = Id::new(50, 2);
    fx.connect(id, tcp_to_connect(), &Addr::Unix(None));
    assert_eq!(fx.connected(id), Err(io::ErrorKind::InvalidInput));
    assert_eq!(fx.stats().conns, 0);
}

#[test]
fn a_connected_socket_is_handed_back_non_blocking() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut fx = open(64 * 1024);
    let id = Id::new(51, 1);
    fx.connect(id, tcp_to_connect(), &Addr::Inet(l.local_addr().unwrap()));
    assert_eq!(fx.connected(id), Ok(()));
    let Socket::Tcp(s) = fx.socket(id) else {
        unreachable!()
    };
    let mut buf = [0u8; 1];
    let read = std::io::Read::read(&mut &*s, &mut buf);
    assert_eq!(read.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    assert_thread_gone("gnet-connect-51");
}

#[cfg(unix)]
#[test]
fn a_unix_connect_waits_out_a_full_backlog() {
    let dir = std::env::temp_dir().join(format!("gnet-stdnet-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("backlog.sock");
    let _ = std::fs::remove_file(&path);
    let l = socket2::Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    l.bind(&SockAddr::unix(&path).unwrap()).unwrap();
    l.listen(0).unwrap();
    // Fill the backlog (Linux: one connection waits in it with a backlog of 0).
    let mut fill = Vec::new();
    loop {
        let s = socket2::Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        match s.connect(&SockAddr::unix(&path).unwrap()) {
            Ok(()) => fill.push(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    let mut fx = open(64 * 1024);
    let to = Addr::Unix(Some(path.clone()));
    let unix = || {
        let s = socket2::Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        Socket::Unix(s.into())
    };
    // Closed while it waits.
    let first = Id::new(52, 1);
    fx.connect(first, unix(), &to);
    fx.settle(Duration::from_millis(50));
    let took = close_timed(&mut fx, first);
    assert!(took < Duration::from_millis(100), "{took:?}");
    // Connected once the listener makes room.
    let second = Id::new(52, 2);
    fx.connect(second, unix(), &to);
    fx.settle(Duration::from_millis(50));
    assert_eq!(fx.rec.connected(second), None);
    let _accepted = l.accept().unwrap();
    assert_eq!(fx.connected(second), Ok(()));
    assert_eq!(fx.stats().conns, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The polled connect, which stdnet uses for TCP off Linux, run here directly.
#[test]
fn polled_connect_connects_fails_and_stops() {
    let tcp = || socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let later = Instant::now() + Duration::from_secs(5);
    let go = AtomicBool::new(false);
    // Connected.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let s = tcp();
    let to = SockAddr::from(l.local_addr().unwrap());
    connect::polled(SockRef::from(&s), &to, later, &go).unwrap();
    assert_eq!(
        s.peer_addr().unwrap().as_socket(),
        Some(l.local_addr().unwrap())
    );
    // Refused.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = connect::polled(SockRef::from(&tcp()), &dead.into(), later, &go).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    // A black hole: the deadline, or a stop that unparks the thread.
    let (_l, _fill, hole) = black_hole();
    let soon = Instant::now() + Duration::from_millis(50);
    let e = connect::polled(SockRef::from(&tcp()), &hole.into(), soon, &go).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s = tcp();
    let t = {
        let stop = stop.clone();
        thread::spawn(move || {
            let start = Instant::now();
            let r = connect::polled(SockRef::from(&s), &hole.into(), later, &stop);
            (r, start.elapsed())
        })
    };
    thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Release);
    t.thread().unpark();
    let (r, took) = t.join().unwrap();
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::Interrupted);
    assert!(took < Duration::from_millis(150), "{took:?}");
}

#[test]
fn drop_stops_readers_and_connects_still_running() {
    let (_l, _fill, hole) = black_hole();
    let (sock, _) = udp_socket();
    let start = Instant::now();
    {
        let mut fx = open(64 * 1024);
        fx.add_datagram(Id::new(53, 1), sock);
        fx.connect(Id::new(54, 1), tcp_to_connect(), &Addr::Inet(hole));
        fx.send_to(
            Id::new(53, 1),
            vec![Datagram::new(Some(hole), Bytes::from_static(b"x"))],
        );
        thread::sleep(Duration::from_millis(50));
        // The loop ended on an error: no close, no poll. The fixture drops the backend
        // first, then the sockets.
    }
    assert!(start.elapsed() < Duration::from_secs(1));
    for name in ["gnet-recv-53", "gnet-send-53", "gnet-connect-54"] {
        assert_thread_gone(name);
    }
}
