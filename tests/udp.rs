//! UDP servers on every backend: echo to several clients over several loops (a socket per
//! loop), replies as whole datagrams, `send_to` anywhere, datagrams larger than the read
//! buffer dropped (never passed on as whole), and one engine serving tcp, udp and unix.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use gnet::{Action, BackendKind, Conn, EventHandler, ListenAddr};
use util::{opts, Server};

/// Echoes every datagram to its sender; "all?" answers with `send_to` to every sender seen.
#[derive(Default)]
struct UdpEcho {
    seen: Mutex<Vec<SocketAddr>>,
    opens: Mutex<usize>,
}

struct H(Arc<UdpEcho>);

impl EventHandler for H {
    type Context = ();

    fn on_open(&self, _: &mut Conn<'_, ()>) -> Action {
        *self.0.opens.lock().unwrap() += 1;
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let from = match (c.is_datagram(), c.peer_addr()) {
            (true, gnet::Addr::Inet(a)) => Some(*a),
            (true, other) => panic!("a datagram from {other}"),
            (false, _) => None,
        };
        let d = c.next_all();
        if d == b"all?" {
            let seen = self.0.seen.lock().unwrap().clone();
            for to in seen {
                c.send_to(to, b"everyone")
                    .expect("send_to on a datagram socket");
            }
            return Action::None;
        }
        if let Some(from) = from {
            let mut seen = self.0.seen.lock().unwrap();
            if !seen.contains(&from) {
                seen.push(from);
            }
        }
        // Two writes: two datagrams.
        c.write(d);
        c.write(b"!");
        Action::None
    }
}

fn udp_addr(s: &Server, i: usize) -> SocketAddr {
    match s.addr(i) {
        ListenAddr::Udp(a) => a,
        other => panic!("not a udp address: {other}"),
    }
}

fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    c
}

fn recv(c: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let (n, _) = c.recv_from(&mut buf).expect("a datagram back");
    buf.truncate(n);
    buf
}

fn udp_echo_over_several_loops(kind: BackendKind) {
    let h = Arc::new(UdpEcho::default());
    let server = Server::start(H(h.clone()), &["udp://127.0.0.1:0"], opts(kind).loops(2));
    let addr = udp_addr(&server, 0);
    let clients: Vec<UdpSocket> = (0..8).map(|_| client()).collect();
    for round in 0..20 {
        for (i, c) in clients.iter().enumerate() {
            let msg = util::random_bytes(1 + (round * 131 + i * 17) % 1400, (round * 8 + i) as u64);
            c.send_to(&msg, addr).unwrap();
            assert_eq!(recv(c), msg, "{kind}: round {round}, client {i}");
            assert_eq!(
                recv(c),
                b"!",
                "{kind}: the second write is a datagram of its own"
            );
        }
    }
    assert_eq!(
        *h.opens.lock().unwrap(),
        0,
        "on_open is not for server datagram sockets"
    );
    assert_eq!(
        server.engine.count_connections(),
        0,
        "a UDP socket is not a connection"
    );
    server.stop().expect("engine result");
}

fn send_to_reaches_every_sender(kind: BackendKind) {
    let h = Arc::new(UdpEcho::default());
    let server = Server::start(H(h), &["udp://127.0.0.1:0"], opts(kind));
    let addr = udp_addr(&server, 0);
    let clients: Vec<UdpSocket> = (0..10).map(|_| client()).collect();
    for c in &clients {
        c.send_to(b"hi", addr).unwrap();
        assert_eq!(recv(c), b"hi");
        assert_eq!(recv(c), b"!");
    }
    client().send_to(b"all?", addr).unwrap();
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(recv(c), b"everyone", "{kind}: client {i}");
    }
    server.stop().expect("engine result");
}

fn oversized_datagrams_are_dropped_not_cut(kind: BackendKind) {
    let h = Arc::new(UdpEcho::default());
    let server = Server::start(
        H(h),
        &["udp://127.0.0.1:0"],
        opts(kind).read_buffer_size(2048),
    );
    let addr = udp_addr(&server, 0);
    let c = client();
    c.send_to(&vec![7u8; 5000], addr).unwrap();
    c.send_to(b"small", addr).unwrap();
    // The oversized one never comes back, cut or whole; the next one does.
    assert_eq!(recv(&c), b"small", "{kind}");
    assert_eq!(recv(&c), b"!");
    server.stop().expect("engine result");
}

fn one_engine_serves_tcp_udp_and_unix(kind: BackendKind) {
    let h = Arc::new(UdpEcho::default());
    let unix = util::unix_addr();
    let server = Server::start(
        H(h),
        &["tcp://127.0.0.1:0", "udp://127.0.0.1:0", &unix],
        opts(kind).loops(2),
    );
    let c = client();
    c.send_to(b"over udp", udp_addr(&server, 1)).unwrap();
    assert_eq!(recv(&c), b"over udp");
    assert_eq!(recv(&c), b"!");
    let mut tcp = server.connect(0);
    tcp.write_all_and_expect(b"over tcp", b"over tcp!");
    let mut u = server.connect(2);
    u.write_all_and_expect(b"over unix", b"over unix!");
    server.stop().expect("engine result");
}

/// A multicast listen address joins its group: a datagram sent to the group reaches the
/// server (looped back to local members), whose reply comes back to the sender. The group is
/// joined on the interface the system chooses (`multicast_interface(0)`, the default route's).
fn multicast_address_joins_its_group(kind: BackendKind) {
    let h = Arc::new(UdpEcho::default());
    let group = std::net::Ipv4Addr::new(239, 255, 77, 1);
    let port = util::child::free_port();
    let addr = format!("udp://{group}:{port}");
    let server = match gnet::start(H(h), &[&addr], opts(kind)) {
        Ok(Some(r)) => r,
        Ok(None) => unreachable!(),
        Err(e) => panic!(
            "{kind}: a multicast UDP address did not start ({e}); this machine needs a \
             multicast-capable interface with a route (the default route's)"
        ),
    };
    let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    c.set_multicast_loop_v4(true).unwrap();
    c.bind(&std::net::SocketAddr::from(([0, 0, 0, 0], 0)).into())
        .unwrap();
    let c: UdpSocket = c.into();
    c.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    c.send_to(b"to the group", (group, port)).unwrap();
    assert_eq!(recv(&c), b"to the group", "{kind}");
    assert_eq!(recv(&c), b"!");
    server.stop().expect("engine result");
}

per_backend!(
    udp_echo_over_several_loops,
    send_to_reaches_every_sender,
    oversized_datagrams_are_dropped_not_cut,
    one_engine_serves_tcp_udp_and_unix,
    multicast_address_joins_its_group,
);
