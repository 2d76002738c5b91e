//! Addresses: bad ones, several per engine, `dup`/`dup_listener`, what a connection knows of
//! its addresses, socket options, unix socket files.

mod util;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use gnet::{Action, Addr, BackendKind, Conn, Error, EventHandler, ListenAddr};
use util::{opts, Client, Server};

struct Echo {
    boots: Arc<AtomicUsize>,
}

impl Echo {
    fn new() -> Echo {
        Echo {
            boots: Arc::default(),
        }
    }
}

impl EventHandler for Echo {
    type Context = ();

    fn on_boot(&self, _: &gnet::Engine) -> Action {
        self.boots.fetch_add(1, Ordering::SeqCst);
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        c.write(d);
        Action::None
    }
}

#[test]
fn every_compiled_backend_is_tested() {
    assert_eq!(gnet::compiled_backends(), util::instantiated_backends());
    assert!(!gnet::compiled_backends().is_empty());
}

fn bad_addresses(kind: BackendKind) {
    let unsupported = ["tulip://127.0.0.1:1", "http://127.0.0.1:0"];
    let invalid = [
        "howdy",
        "tcp://",
        "tcp://127.0.0.1:1/path",
        "tcp://localhost:1/path",
        "unix://",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:",
        "tcp://127.0.0.1:70000",
        "udp://127.0.0.1",
        "udp://127.0.0.1:0/path",
    ];
    for addr in unsupported.iter().chain(&invalid) {
        let h = Echo::new();
        let boots = h.boots.clone();
        let via_run = gnet::run(h, addr, opts(kind)).unwrap_err();
        let via_start = gnet::start(Echo::new(), &[util::TCP, addr], opts(kind))
            .err()
            .expect("start must fail");
        assert_eq!(boots.load(Ordering::SeqCst), 0, "{addr}: on_boot ran");
        for e in [via_run, via_start] {
            let msg = e.to_string();
            assert!(
                msg.contains(addr),
                "{addr}: message {msg:?} does not name it"
            );
            if unsupported.contains(addr) {
                assert!(
                    matches!(e, Error::UnsupportedProtocol { .. }),
                    "{addr}: {e:?}"
                );
                assert!(msg.contains("unsupported protocol"), "{msg}");
            } else {
                assert!(matches!(e, Error::InvalidAddress { .. }), "{addr}: {e:?}");
                assert!(msg.contains("invalid network address"), "{msg}");
            }
        }
    }
    // Nothing to serve.
    let e = gnet::start(Echo::new(), &[], opts(kind))
        .err()
        .expect("no address");
    assert!(matches!(e, Error::InvalidOptions(_)), "{e:?}");
    // A good unix address next to a bad one is not left bound.
    let unix = util::unix_addr();
    assert!(gnet::start(Echo::new(), &[&unix, "howdy"], opts(kind)).is_err());
    assert!(!std::path::Path::new(unix.strip_prefix("unix://").unwrap()).exists());
}

fn address_in_use(kind: BackendKind) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", taken.local_addr().unwrap());
    let e = gnet::start(Echo::new(), &[&addr], opts(kind))
        .err()
        .expect("binding a taken port must fail");
    assert!(matches!(e, Error::Io(_)), "{e:?}");
    let port = taken.local_addr().unwrap().port().to_string();
    assert!(e.to_string().contains(&port), "{e}");
    // The port is free again once the holder is gone.
    drop(taken);
    let server = Server::start(Echo::new(), &[&addr], opts(kind));
    let mut c = server.connect(0);
    c.echo(b"free again");
    server.stop().expect("engine result");
}

fn several_addresses(kind: BackendKind) {
    for reuse_port in [false, true] {
        let unix = util::unix_addr();
        let o = opts(kind).loops(2).reuse_port(reuse_port);
        let server = Server::start(Echo::new(), &[util::TCP, &unix], o);
        let engine = server.engine.clone();
        let addrs = engine.addrs().to_vec();
        assert_eq!(addrs.len(), 2);
        let ListenAddr::Tcp(tcp) = &addrs[0] else {
            panic!("{addrs:?}")
        };
        assert_ne!(tcp.port(), 0, "port 0 not resolved");
        assert_eq!(addrs[1].to_string(), unix);

        let mut clients: Vec<Client> = (0..6).map(|i| server.connect(i % 2)).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            c.echo(&util::random_bytes(100_000, i as u64));
        }
        util::wait_until("six connections", || engine.count_connections() == 6);

        assert!(matches!(engine.dup(), Err(Error::Unsupported(_))));
        let l = engine.dup_listener(&addrs[0].to_string()).expect("dup tcp");
        assert_eq!(l.local_addr().unwrap(), Addr::Inet(*tcp));
        engine
            .dup_listener(util::TCP)
            .expect("dup by the address as asked");
        let l = engine.dup_listener(&unix).expect("dup unix");
        assert!(matches!(l.local_addr().unwrap(), Addr::Unix(Some(_))));
        let e = engine.dup_listener("tcp://127.0.0.1:1").unwrap_err();
        assert!(matches!(e, Error::InvalidAddress { .. }), "{e:?}");
        let e = engine.dup_listener("tulip://127.0.0.1:1").unwrap_err();
        assert!(matches!(e, Error::UnsupportedProtocol { .. }), "{e:?}");

        drop(clients);
        server.stop().expect("engine result");
        assert!(matches!(
            engine.dup_listener(&unix),
            Err(Error::EngineShutdown)
        ));
        let path = unix.strip_prefix("unix://").unwrap();
        assert!(
            !std::path::Path::new(path).exists(),
            "socket file left behind"
        );
    }
}

fn dup_single_listener(kind: BackendKind) {
    let server = Server::start(Echo::new(), &[util::TCP], opts(kind));
    let engine = server.engine.clone();
    let l = engine.dup().expect("dup");
    let ListenAddr::Tcp(a) = server.addr(0) else {
        panic!()
    };
    assert_eq!(l.local_addr().unwrap(), Addr::Inet(a));
    // The duplicate is a second descriptor: dropping it leaves the engine serving.
    drop(l);
    server.connect(0).echo(b"still here");
    server.stop().expect("engine result");
    assert!(matches!(engine.dup(), Err(Error::EngineShutdown)));
}

fn stale_socket_file_is_replaced(kind: BackendKind) {
    let addr = util::unix_addr();
    let path = addr.strip_prefix("unix://").unwrap().to_string();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(std::path::Path::new(&path).exists());
    let server = Server::start(Echo::new(), &[&addr], opts(kind));
    server.connect(0).echo(b"over a stale file");
    server.stop().expect("engine result");
    assert!(!std::path::Path::new(&path).exists());
}

fn unix_path(addr: &str) -> std::path::PathBuf {
    addr.strip_prefix("unix://").unwrap().into()
}

/// A second server on the path of a live one is refused (it used to remove the file and bind,
/// leaving the first one running and unreachable).
fn live_unix_socket_is_not_taken_over(kind: BackendKind) {
    let addr = util::unix_addr();
    let first = Server::start(Echo::new(), &[&addr], opts(kind));
    match gnet::start(Echo::new(), &[&addr], opts(kind)) {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
            assert!(e.to_string().contains("another server"), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second server took over a live socket path"),
    }
    first.connect(0).echo(b"still the first");
    first.stop().expect("engine result");
    assert!(
        !unix_path(&addr).exists(),
        "the first server's file was left"
    );
}

/// Whatever is at the path and is not a socket is neither removed nor bound over.
fn non_socket_file_is_left_alone(kind: BackendKind) {
    let addr = util::unix_addr();
    let path = unix_path(&addr);
    std::fs::write(&path, b"precious").unwrap();
    match gnet::start(Echo::new(), &[&addr], opts(kind)) {
        Err(e) => assert!(e.to_string().contains("not a socket"), "{e}"),
        Ok(_) => panic!("a server bound over a regular file"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_file(&path).unwrap();
}

/// A server removes its own socket file at shutdown, never one another server put at the same
/// path since (it used to delete whatever was there).
fn a_server_removes_only_its_own_socket_file(kind: BackendKind) {
    let addr = util::unix_addr();
    let path = unix_path(&addr);
    let first = Server::start(Echo::new(), &[&addr], opts(kind));
    std::fs::remove_file(&path).unwrap(); // someone cleaned up behind its back
    let second = Server::start(Echo::new(), &[&addr], opts(kind));
    first.stop().expect("engine result");
    assert!(
        path.exists(),
        "the first server deleted the second one's socket file"
    );
    second.connect(0).echo(b"the second is reachable");
    second.stop().expect("engine result");
    assert!(!path.exists());
}

/// Reports what `on_open` finds out about the connection and its options.
struct Probe(std::sync::Mutex<mpsc::Sender<Report>>);

#[derive(Debug)]
struct Report {
    local: Option<Addr>,
    peer: Addr,
    is_tcp: bool,
    failures: Vec<String>,
}

fn check_options(c: &Conn<'_, ()>, f: &mut Vec<String>) {
    let mut check = |what: &str, ok: bool| {
        if !ok {
            f.push(what.to_string());
        }
    };
    let fd = c.fd();
    check("fd() > 2", fd > 2);
    match c.dup() {
        Ok(d) => {
            use std::os::fd::AsRawFd;
            check("dup() is another descriptor", d.as_raw_fd() != fd);
            let same = socket2::SockRef::from(&d)
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket());
            let orig = socket2::SockRef::from(c.socket())
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket());
            check("dup() is the same socket", same == orig);
        }
        Err(e) => f.push(format!("dup: {e}")),
    }
    let s = socket2::SockRef::from(c.socket());
    let mut check = |what: &str, ok: bool| {
        if !ok {
            f.push(what.to_string());
        }
    };
    check("set_read_buffer", c.set_read_buffer(128 * 1024).is_ok());
    check("set_write_buffer", c.set_write_buffer(128 * 1024).is_ok());
    check(
        "set_linger(1s)",
        c.set_linger(Some(Duration::from_secs(1))).is_ok(),
    );
    check(
        "linger is 1s",
        s.linger().ok() == Some(Some(Duration::from_secs(1))),
    );
    check("set_linger(None)", c.set_linger(None).is_ok());
    check("linger is off", s.linger().ok() == Some(None));
    let ka = Some((Duration::from_secs(10), Duration::from_secs(2), 3));
    let short = Some((Duration::from_millis(500), Duration::from_secs(1), 3));
    if c.is_tcp() {
        check(
            "tcp_nodelay option applied",
            s.nodelay().ok() == Some(false),
        );
        check(
            "tcp_keepalive option applied",
            s.keepalive().ok() == Some(true),
        );
        check("set_nodelay(true)", c.set_nodelay(true).is_ok());
        check("nodelay is on", s.nodelay().ok() == Some(true));
        check("set_keepalive(None)", c.set_keepalive(None).is_ok());
        check("keepalive is off", s.keepalive().ok() == Some(false));
        check("set_keepalive(10s)", c.set_keepalive(ka).is_ok());
        check("keepalive is on", s.keepalive().ok() == Some(true));
        check(
            "keepalive idle",
            s.keepalive_time().ok() == Some(Duration::from_secs(10)),
        );
        check(
            "set_keepalive(500ms) is rejected",
            matches!(c.set_keepalive(short), Err(Error::InvalidOptions(_))),
        );
    } else {
        let unsupported = |r: gnet::Result<()>| matches!(r, Err(Error::Unsupported(_)));
        check("unix set_nodelay", unsupported(c.set_nodelay(true)));
        check("unix set_keepalive", unsupported(c.set_keepalive(ka)));
        check(
            "unix set_keepalive(None)",
            unsupported(c.set_keepalive(None)),
        );
    }
}

impl EventHandler for Probe {
    type Context = ();

    fn on_open(&self, c: &mut Conn<'_, ()>) -> Action {
        let mut failures = Vec::new();
        check_options(c, &mut failures);
        let r = Report {
            local: c.local_addr().ok(),
            peer: c.peer_addr().clone(),
            is_tcp: c.is_tcp(),
            failures,
        };
        let _ = self.0.lock().unwrap().send(r);
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        c.write(d);
        Action::None
    }
}

fn connection_addresses_and_options(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let unix = util::unix_addr();
    let o = opts(kind)
        .tcp_nodelay(false)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .socket_recv_buffer(256 * 1024)
        .socket_send_buffer(256 * 1024);
    let server = Server::start(Probe(tx.into()), &[util::TCP, &unix], o);

    let mut c = server.connect(0);
    let r = rx.recv_timeout(util::WAIT_TIMEOUT).expect("on_open");
    assert!(r.failures.is_empty(), "tcp: {:?}", r.failures);
    assert!(r.is_tcp);
    assert_eq!(r.peer, Addr::Inet(c.local_tcp()));
    let ListenAddr::Tcp(server_addr) = server.addr(0) else {
        panic!()
    };
    assert_eq!(r.local, Some(Addr::Inet(server_addr)));
    c.echo(&util::random_bytes(300_000, 5));

    let mut u = server.connect(1);
    let r = rx.recv_timeout(util::WAIT_TIMEOUT).expect("on_open");
    assert!(r.failures.is_empty(), "unix: {:?}", r.failures);
    assert!(!r.is_tcp);
    assert_eq!(r.peer, Addr::Unix(None));
    let path = unix.strip_prefix("unix://").unwrap();
    assert_eq!(r.local, Some(Addr::Unix(Some(path.into()))));
    u.echo(&util::random_bytes(300_000, 6));
    u.write_all(b"x").unwrap();
    u.expect(b"x");
    server.stop().expect("engine result");
}

fn two_engines_share_a_port(kind: BackendKind) {
    let o = || opts(kind).reuse_port(true);
    let first = Server::start(Echo::new(), &[util::TCP], o());
    let addr = first.addr(0).to_string();
    let second = Server::start(Echo::new(), &[&addr], o());
    assert_eq!(second.addr(0), first.addr(0));
    let mut clients: Vec<Client> = (0..8).map(|_| first.connect(0)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.echo(&util::random_bytes(10_000, i as u64));
    }
    let total = first.engine.count_connections() + second.engine.count_connections();
    assert_eq!(total, 8);
    // One stops; the other keeps serving the port.
    drop(clients);
    first.stop().expect("engine result");
    let mut c = second.connect(0);
    c.echo(b"survivor");
    drop(c);
    second.stop().expect("engine result");
    // And the port can be bound again at once.
    let again = Server::start(Echo::new(), &[&addr], opts(kind));
    again.connect(0).echo(b"again");
    again.stop().expect("engine result");
}

per_backend!(
    bad_addresses,
    address_in_use,
    several_addresses,
    dup_single_listener,
    stale_socket_file_is_replaced,
    live_unix_socket_is_not_taken_over,
    non_socket_file_is_left_alone,
    a_server_removes_only_its_own_socket_file,
    connection_addresses_and_options,
    two_engines_share_a_port,
);
