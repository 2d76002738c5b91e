//! Options are validated once, before anything starts, with the same bounds and message on
//! every backend: a bad value is an `InvalidOptions` error naming the option, nothing is bound
//! and `on_boot` does not run. (An oversized `read_buffer_size` used to panic epoll with
//! "capacity overflow" and leave stdnet connections unserved.)

mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gnet::{Action, BackendKind, Conn, Engine, Error, EventHandler, ListenAddr, Options};
use util::{opts, Server};

struct Booted(Arc<AtomicBool>);

impl EventHandler for Booted {
    type Context = ();

    fn on_boot(&self, _: &Engine) -> Action {
        self.0.store(true, Ordering::SeqCst);
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        c.write(d);
        Action::None
    }
}

fn bad_options_are_refused_before_anything_starts(kind: BackendKind) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("tcp://127.0.0.1:{port}");
    let secs = Duration::from_secs;
    let cases: Vec<(&str, Options)> = vec![
        ("read_buffer_size", opts(kind).read_buffer_size(usize::MAX)),
        ("read_buffer_size", opts(kind).read_buffer_size(100)),
        (
            "read_buffer_size",
            opts(kind).read_buffer_size((64 << 20) + 1),
        ),
        ("max_inbound_buffer", opts(kind).max_inbound_buffer(0)),
        ("max_outbound_buffer", opts(kind).max_outbound_buffer(10)),
        ("max_loop_backlog", opts(kind).max_loop_backlog(0)),
        ("ring_buffers", opts(kind).ring_buffers(0)),
        ("ring_buffers", opts(kind).ring_buffers(100)),
        ("ring_entries", opts(kind).ring_entries(4)),
        ("ring_entries", opts(kind).ring_entries(1 << 16)),
        ("ring_entries", opts(kind).ring_entries(1000)),
        ("backlog", opts(kind).backlog(0)),
        ("loops", opts(kind).loops(5000)),
        (
            "tcp_keepalive",
            opts(kind).tcp_keepalive(Some(Duration::from_millis(500))),
        ),
        (
            "tcp_keepalive",
            opts(kind).tcp_keepalive(Some(secs(40_000))),
        ),
        (
            "tcp_keepalive_interval",
            opts(kind).tcp_keepalive_interval(secs(0)),
        ),
        ("tcp_keepalive_count", opts(kind).tcp_keepalive_count(0)),
        ("tcp_keepalive_count", opts(kind).tcp_keepalive_count(1000)),
        ("socket_send_buffer", opts(kind).socket_send_buffer(0)),
        (
            "socket_recv_buffer",
            opts(kind).socket_recv_buffer(usize::MAX),
        ),
    ];
    for (name, o) in cases {
        let booted = Arc::new(AtomicBool::new(false));
        match gnet::start(Booted(booted.clone()), &[&addr], o) {
            Err(Error::InvalidOptions(msg)) => {
                assert!(
                    msg.contains(name),
                    "{name}: the message does not name it: {msg}"
                );
                assert!(msg.contains("must be"), "{name}: no bounds in: {msg}");
            }
            Err(e) => panic!("{name}: wrong error: {e}"),
            Ok(_) => panic!("{name}: a bad value was accepted"),
        }
        assert!(!booted.load(Ordering::SeqCst), "{name}: on_boot ran");
        // Nothing was bound.
        drop(std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free"));
    }
}

fn values_at_the_bounds_serve(kind: BackendKind) {
    let cases = [
        opts(kind).read_buffer_size(1024),
        opts(kind).read_buffer_size(64 << 20),
        opts(kind).ring_entries(8).ring_buffers(1),
        opts(kind)
            .tcp_keepalive(Some(Duration::from_secs(1)))
            .tcp_keepalive_count(127)
            .close_timeout(Duration::MAX)
            .shutdown_timeout(Duration::MAX),
    ];
    for o in cases {
        assert!(o.validate().is_ok());
        let booted = Arc::new(AtomicBool::new(false));
        let server = Server::start(Booted(booted), &[util::TCP], o);
        let ListenAddr::Tcp(_) = server.addr(0) else {
            unreachable!()
        };
        server.connect(0).echo(&util::random_bytes(200_000, 5));
        server.stop().expect("engine result");
    }
}

per_backend!(
    bad_options_are_refused_before_anything_starts,
    values_at_the_bounds_serve,
);

/// A backend of another platform is refused at start with a reason that says where it exists,
/// not a hint to turn on a feature that is on.
#[test]
fn a_backend_of_another_platform_says_where_it_exists() {
    let (kind, only) = if cfg!(target_os = "linux") {
        (BackendKind::Kqueue, "macOS and the BSDs")
    } else {
        (BackendKind::Epoll, "Linux")
    };
    match gnet::start(Booted(Arc::default()), &[util::TCP], opts(kind)) {
        Err(Error::BackendUnavailable { backend, reason }) => {
            assert_eq!(backend, kind);
            assert!(
                reason.contains("not available on this target") && reason.contains(only),
                "{reason}"
            );
        }
        other => panic!("{kind} started here: {:?}", other.map(|_| ())),
    }
}
