//! Outbound connections on every backend: a client engine dialing tcp, unix and connected udp
//! without blocking the caller, refused and timed-out dials reported with their context,
//! enrolling an established socket, and a proxy whose back-end connections are dialed onto the
//! front-end's own loop and relay 1 MiB payloads byte for byte.

mod util;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gnet::{
    Action, BackendKind, CloseCause, Conn, ConnId, DialError, Engine, Error, EventHandler,
    ListenAddr,
};
use util::{opts, Server};

/// What a client handler saw, sent to the test thread.
#[derive(Debug)]
enum Seen {
    Open(u32),
    Bytes(u32, Vec<u8>),
    DialError(Option<u32>, String, std::io::ErrorKind),
    DialTimeout(Option<u32>),
}

/// Greets on open, reports everything; the context is a tag.
struct Reporter(Mutex<mpsc::Sender<Seen>>);

impl Reporter {
    fn new() -> (Reporter, mpsc::Receiver<Seen>) {
        let (tx, rx) = mpsc::channel();
        (Reporter(Mutex::new(tx)), rx)
    }

    fn send(&self, s: Seen) {
        let _ = self.0.lock().unwrap().send(s);
    }
}

impl EventHandler for Reporter {
    type Context = u32;

    fn on_open(&self, c: &mut Conn<'_, u32>) -> Action {
        let tag = *c.context().expect("the dial's context");
        self.send(Seen::Open(tag));
        c.write(format!("hello {tag}").as_bytes());
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, u32>) -> Action {
        let tag = *c.context().expect("the dial's context");
        let d = c.next_all().to_vec();
        self.send(Seen::Bytes(tag, d));
        Action::None
    }

    fn on_dial_error(&self, _: &Engine, f: DialError<u32>) {
        match f.error {
            Error::DialTimeout { .. } => self.send(Seen::DialTimeout(f.context)),
            Error::Io(e) => self.send(Seen::DialError(f.context, f.addr.to_string(), e.kind())),
            other => panic!("unexpected dial error: {other}"),
        }
    }
}

fn next(rx: &mpsc::Receiver<Seen>) -> Seen {
    rx.recv_timeout(util::WAIT_TIMEOUT).expect("an event")
}

/// Collects bytes for `tag` until `n` have arrived.
fn bytes(rx: &mpsc::Receiver<Seen>, tag: u32, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        match next(rx) {
            Seen::Bytes(t, b) if t == tag => got.extend(b),
            other => panic!("waiting for bytes of {tag}: {other:?}"),
        }
    }
    got
}

fn client_engine(kind: BackendKind) -> (gnet::Running, mpsc::Receiver<Seen>) {
    let (h, rx) = Reporter::new();
    let running = gnet::client(h, opts(kind).dial_timeout(Duration::from_millis(500)))
        .expect("a client engine starts");
    (running, rx)
}

fn dial_tcp_unix_and_udp(kind: BackendKind) {
    let unix = util::unix_addr();
    let server = Server::start(util::PlainEcho, &[util::TCP, &unix], opts(kind));
    let (client, rx) = client_engine(kind);
    let engine = client.engine().clone();
    let start = Instant::now();
    engine
        .dial(&server.addr(0).to_string(), Some(1u32))
        .expect("dial tcp");
    engine.dial(&unix, Some(2u32)).expect("dial unix");
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "dial blocked the caller"
    );
    // A UDP echo peer of its own.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    engine
        .dial(&format!("udp://{peer_addr}"), Some(3u32))
        .expect("dial udp");
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).expect("the udp greeting");
    assert_eq!(&buf[..n], b"hello 3");
    peer.send_to(b"back at you", from).unwrap();
    let mut opened = Vec::new();
    let mut got = std::collections::HashMap::<u32, Vec<u8>>::new();
    while opened.len() < 3 || got.values().map(Vec::len).sum::<usize>() < 7 + 7 + 11 {
        match next(&rx) {
            Seen::Open(t) => opened.push(t),
            Seen::Bytes(t, b) => got.entry(t).or_default().extend(b),
            other => panic!("{kind}: {other:?}"),
        }
    }
    opened.sort_unstable();
    assert_eq!(opened, [1, 2, 3]);
    assert_eq!(got[&1], b"hello 1", "{kind}: the tcp echo");
    assert_eq!(got[&2], b"hello 2", "{kind}: the unix echo");
    assert_eq!(got[&3], b"back at you", "{kind}: the udp reply");
    assert_eq!(engine.count_connections(), 3);
    client.stop().expect("client result");
    server.stop().expect("server result");
}

fn refused_and_timed_out_dials_come_back_with_their_context(kind: BackendKind) {
    let (client, rx) = client_engine(kind);
    let engine = client.engine().clone();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    engine.dial(&format!("tcp://{dead}"), Some(7u32)).unwrap();
    match next(&rx) {
        Seen::DialError(Some(7), addr, kind_) => {
            assert_eq!(kind_, std::io::ErrorKind::ConnectionRefused, "{kind}");
            assert_eq!(addr, dead.to_string());
        }
        other => panic!("{kind}: {other:?}"),
    }
    let (_hole, _fill, addr) = black_hole();
    let start = Instant::now();
    engine.dial(&format!("tcp://{addr}"), Some(8u32)).unwrap();
    match next(&rx) {
        Seen::DialTimeout(Some(8)) => {}
        other => panic!("{kind}: {other:?}"),
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{kind}: the 500 ms dial timeout took {took:?}"
    );
    assert_eq!(engine.count_connections(), 0);
    drop(rx);
    client.stop().expect("client result");
}

/// A listener whose backlog is full and that never accepts: further SYNs are dropped.
fn black_hole() -> (socket2::Socket, Vec<TcpStream>, SocketAddr) {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let fill = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    (l, fill, addr)
}

fn enroll_an_established_socket(kind: BackendKind) {
    let server = Server::start(util::PlainEcho, &[util::TCP], opts(kind));
    let (client, rx) = client_engine(kind);
    let ListenAddr::Tcp(a) = server.addr(0) else {
        unreachable!()
    };
    let s = TcpStream::connect(a).unwrap();
    client
        .engine()
        .enroll(gnet::Socket::Tcp(s), Some(5u32))
        .expect("enroll");
    assert!(matches!(next(&rx), Seen::Open(5)));
    assert_eq!(bytes(&rx, 5, 7), b"hello 5");
    client.stop().expect("client result");
    server.stop().expect("server result");
}

/// A TCP proxy: each front-end connection dials its back-end onto its own loop and the two
/// relay to each other with `write_to`.
enum Role {
    Front { back: Option<ConnId> },
    Back { front: ConnId },
}

struct Proxy {
    upstream: String,
}

impl EventHandler for Proxy {
    type Context = Role;

    fn on_open(&self, c: &mut Conn<'_, Role>) -> Action {
        if c.context().is_none() {
            // A front-end connection: dial its back-end onto this loop.
            let me = c.id();
            let back = c
                .dial(&self.upstream, Some(Role::Back { front: me }))
                .expect("dial the upstream");
            c.set_context(Role::Front { back: Some(back) });
        }
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, Role>) -> Action {
        let other = match c.context() {
            Some(Role::Front { back: Some(b) }) => *b,
            Some(Role::Back { front }) => *front,
            _ => return Action::None,
        };
        let d = c.next_all().to_vec();
        c.write_to(other, &d).expect("the same loop");
        Action::None
    }

    fn on_close(&self, c: &mut Conn<'_, Role>, _: &CloseCause) -> Action {
        let other = match c.context() {
            Some(Role::Front { back: Some(b) }) => Some(*b),
            Some(Role::Back { front }) => Some(*front),
            _ => None,
        };
        if let Some(o) = other {
            let _ = c.close_conn(o);
        }
        Action::None
    }
}

fn proxy_relays_through_a_same_loop_back_end(kind: BackendKind) {
    let upstream = Server::start(util::PlainEcho, &[util::TCP], opts(kind));
    let proxy = Server::start(
        Proxy {
            upstream: upstream.addr(0).to_string(),
        },
        &[util::TCP],
        opts(kind).loops(2),
    );
    let mut clients: Vec<util::Client> = (0..4).map(|_| proxy.connect(0)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let payload = util::random_bytes(1 << 20, 40 + i as u64);
        c.echo(&payload);
    }
    // Every proxied connection is two on the proxy: front and back.
    assert_eq!(proxy.engine.count_connections(), 8, "{kind}");
    drop(clients);
    util::wait_until("the proxy closed both halves", || {
        proxy.engine.count_connections() == 0
    });
    proxy.stop().expect("proxy result");
    upstream.stop().expect("upstream result");
}

per_backend!(
    dial_tcp_unix_and_udp,
    refused_and_timed_out_dials_come_back_with_their_context,
    enroll_an_established_socket,
    proxy_relays_through_a_same_loop_back_end,
);
