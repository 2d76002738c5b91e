//! Lifecycle: closing delivers what was written, close causes, stopping the engine, counting
//! connections, the ticker, `on_boot` shutdown.

mod util;

use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gnet::{Action, BackendKind, Bytes, CloseCause, Conn, Engine, Error, EventHandler};
use util::{cause_name, opts, wait_until, Client, Failures, Server};

const BIG: usize = 8 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum CloseBy {
    Action,
    ConnClose,
    Handle,
    Shutdown,
}

/// `(context seen in on_close, close cause)` of every closed connection.
type Closes<C> = Arc<Mutex<Vec<(Option<C>, String)>>>;

/// On its first bytes, writes `BIG` bytes and closes in the way the test asks.
struct BigThenClose {
    by: CloseBy,
    payload: Bytes,
    closes: Closes<u32>,
    shutdowns: Arc<AtomicUsize>,
    async_results: Arc<Mutex<Vec<String>>>,
}

impl EventHandler for BigThenClose {
    type Context = u32;

    fn on_open(&self, c: &mut Conn<'_, u32>) -> Action {
        c.set_context(7);
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, u32>) -> Action {
        c.next_all();
        let (a, b) = self.payload.split_at(BIG / 2);
        match self.by {
            CloseBy::Action => {
                c.write(a);
                c.write_bytes(self.payload.slice(BIG / 2..));
                Action::Close
            }
            CloseBy::ConnClose => {
                c.writev(&[a, b]);
                c.close();
                Action::None
            }
            CloseBy::Handle => {
                // Half now, the other half and the close from another thread.
                c.write(a);
                let h = c.handle();
                let rest = self.payload.slice(BIG / 2..);
                let results = self.async_results.clone();
                std::thread::spawn(move || {
                    h.async_write_with(rest, move |r| {
                        results.lock().unwrap().push(format!("{r:?}"));
                    })
                    .unwrap();
                    h.close().unwrap();
                });
                Action::None
            }
            CloseBy::Shutdown => {
                c.write_bytes(self.payload.clone());
                Action::Shutdown
            }
        }
    }

    fn on_close(&self, c: &mut Conn<'_, u32>, cause: &CloseCause) -> Action {
        let ctx = c.context().copied();
        self.closes.lock().unwrap().push((ctx, cause_name(cause)));
        Action::None
    }

    fn on_shutdown(&self, _: &Engine) {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}

fn close_delivers(kind: BackendKind, by: CloseBy, tcp: bool) {
    let payload = Bytes::from(util::random_bytes(BIG, 42));
    let closes = Arc::new(Mutex::new(Vec::new()));
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let async_results = Arc::new(Mutex::new(Vec::new()));
    let h = BigThenClose {
        by,
        payload: payload.clone(),
        closes: closes.clone(),
        shutdowns: shutdowns.clone(),
        async_results: async_results.clone(),
    };
    let addr = util::addr_for(tcp);
    // Small kernel buffers so most of the payload is still queued in gnet at close time; an
    // outbound limit above the payload so the asynchronous half is accepted.
    let o = opts(kind)
        .socket_send_buffer(64 * 1024)
        .max_outbound_buffer(2 * BIG);
    let server = Server::start(h, &[&addr], o);
    let mut c = server.connect(0);
    c.write_all(b"go").unwrap();
    let got = c.read_to_eof();
    util::assert_bytes_eq(&got, &payload, &format!("{by:?}: bytes before EOF"));
    let want_cause = if by == CloseBy::Shutdown {
        server.wait().expect("engine result");
        assert_eq!(shutdowns.load(Ordering::SeqCst), 1);
        "Shutdown"
    } else {
        wait_until("on_close", || !closes.lock().unwrap().is_empty());
        server.stop().expect("engine result");
        "Local"
    };
    assert_eq!(
        *closes.lock().unwrap(),
        vec![(Some(7), want_cause.to_string())]
    );
    if by == CloseBy::Handle {
        assert_eq!(*async_results.lock().unwrap(), [format!("Ok({})", BIG / 2)]);
    }
}

fn close_action_delivers_everything(kind: BackendKind) {
    close_delivers(kind, CloseBy::Action, true);
    close_delivers(kind, CloseBy::Action, false);
}

fn conn_close_delivers_everything(kind: BackendKind) {
    close_delivers(kind, CloseBy::ConnClose, true);
}

fn handle_close_delivers_everything(kind: BackendKind) {
    close_delivers(kind, CloseBy::Handle, true);
    close_delivers(kind, CloseBy::Handle, false);
}

fn shutdown_action_delivers_everything(kind: BackendKind) {
    close_delivers(kind, CloseBy::Shutdown, true);
}

/// Echoes; closes on "close"; records every close with its context.
struct Recorder {
    next_id: AtomicUsize,
    closes: Closes<usize>,
    /// Bytes received, per connection id.
    received: Arc<Mutex<Vec<usize>>>,
    big_greeting: bool,
}

impl Recorder {
    fn new(big_greeting: bool) -> Recorder {
        Recorder {
            next_id: AtomicUsize::new(0),
            closes: Arc::default(),
            received: Arc::default(),
            big_greeting,
        }
    }
}

impl EventHandler for Recorder {
    type Context = usize;

    fn on_open(&self, c: &mut Conn<'_, usize>) -> Action {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        c.set_context(id);
        self.received.lock().unwrap().push(0);
        if self.big_greeting {
            // More than the client will ever read: the server is still writing at the reset.
            c.write_bytes(Bytes::from(vec![b'g'; 4 << 20]));
        } else {
            c.write(b"hi");
        }
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, usize>) -> Action {
        let id = *c.context().unwrap();
        let data = c.next_all();
        self.received.lock().unwrap()[id] += data.len();
        if data == b"close" {
            c.write(b"bye");
            return Action::Close;
        }
        if !self.big_greeting {
            c.write(data);
        }
        Action::None
    }

    fn on_close(&self, c: &mut Conn<'_, usize>, cause: &CloseCause) -> Action {
        self.closes
            .lock()
            .unwrap()
            .push((c.context().copied(), cause_name(cause)));
        Action::None
    }
}

fn close_causes(kind: BackendKind) {
    for tcp in [true, false] {
        let h = Recorder::new(false);
        let closes = h.closes.clone();
        let addr = util::addr_for(tcp);
        let server = Server::start(h, &[&addr], opts(kind));

        // The peer closes.
        let mut a = server.connect(0);
        a.expect(b"hi");
        a.write_all(b"ping").unwrap();
        a.expect(b"ping");
        drop(a);
        wait_until("PeerClosed", || closes.lock().unwrap().len() == 1);
        assert_eq!(closes.lock().unwrap()[0], (Some(0), "PeerClosed".into()));

        // The server closes: the client gets the last words, then EOF.
        let mut b = server.connect(0);
        b.expect(b"hi");
        b.write_all(b"close").unwrap();
        b.expect(b"bye");
        assert_eq!(b.read_to_eof(), b"");
        wait_until("Local", || closes.lock().unwrap().len() == 2);
        assert_eq!(closes.lock().unwrap()[1], (Some(1), "Local".into()));

        // The engine stops.
        let mut c = server.connect(0);
        c.expect(b"hi");
        server.stop().expect("engine result");
        assert_eq!(c.read_to_eof(), b"");
        assert_eq!(closes.lock().unwrap()[2], (Some(2), "Shutdown".into()));
        assert_eq!(closes.lock().unwrap().len(), 3);
    }
}

fn reset_cause(kind: BackendKind) {
    let h = Recorder::new(true);
    let closes = h.closes.clone();
    let received = h.received.clone();
    let server = Server::start(h, &[util::TCP], opts(kind));
    let mut a = server.connect(0);
    a.write_all(b"unread").unwrap();
    // Read a little of the greeting, so the server is certainly writing.
    a.read_n(1000);
    wait_until("the server got the bytes", || {
        received.lock().unwrap()[0] == 6
    });
    a.set_linger_zero();
    drop(a);
    wait_until("on_close after the reset", || {
        closes.lock().unwrap().len() == 1
    });
    assert_eq!(closes.lock().unwrap()[0], (Some(0), "Reset".into()));
    server.stop().expect("engine result");
}

/// Counts connections and records the order of `on_close` and `on_shutdown`.
#[derive(Default)]
struct Counter {
    open_counts: Mutex<Vec<usize>>,
    events: Mutex<Vec<String>>,
    failures: Failures,
}

struct CounterH(Arc<Counter>);

impl EventHandler for CounterH {
    type Context = ();

    fn on_open(&self, c: &mut Conn<'_, ()>) -> Action {
        self.0
            .open_counts
            .lock()
            .unwrap()
            .push(c.engine().count_connections());
        c.write(b"hi");
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        c.write(d);
        Action::None
    }

    fn on_close(&self, _: &mut Conn<'_, ()>, cause: &CloseCause) -> Action {
        self.0.events.lock().unwrap().push(cause_name(cause));
        Action::None
    }

    fn on_shutdown(&self, engine: &Engine) {
        let f = &self.0.failures;
        f.check(
            "on_shutdown: connections left",
            engine.count_connections() == 0,
        );
        f.check("on_shutdown: not stopping", engine.is_stopping());
        self.0.events.lock().unwrap().push("on_shutdown".into());
    }
}

fn stop_from_another_thread(kind: BackendKind) {
    const N: usize = 12;
    let h = Arc::new(Counter::default());
    let server = Server::start(CounterH(h.clone()), &[util::TCP], opts(kind).loops(3));
    let mut clients: Vec<Client> = (0..N)
        .map(|_| {
            let mut c = server.connect(0);
            c.expect(b"hi");
            c
        })
        .collect();
    let engine = server.engine.clone();
    assert!(!engine.is_stopping());
    std::thread::spawn(move || engine.stop())
        .join()
        .unwrap()
        .expect("first stop");
    assert!(server.engine.is_stopping());
    for c in &mut clients {
        assert_eq!(c.read_to_eof(), b"", "a client did not see EOF");
    }
    let engine = server.engine.clone();
    server.wait().expect("engine result");
    assert!(engine.is_shut_down());
    assert!(matches!(engine.stop(), Err(Error::EngineShutdown)));
    let events = h.events.lock().unwrap().clone();
    let mut want = vec!["Shutdown".to_string(); N];
    want.push("on_shutdown".into());
    assert_eq!(events, want);
    assert_eq!(engine.count_connections(), 0);
    h.failures.assert_none();
}

fn count_connections(kind: BackendKind) {
    const N: usize = 9;
    let h = Arc::new(Counter::default());
    let server = Server::start(CounterH(h.clone()), &[util::TCP], opts(kind).loops(3));
    let engine = server.engine.clone();
    assert_eq!(engine.count_connections(), 0);
    let mut clients = Vec::new();
    for i in 0..N {
        let mut c = server.connect(0);
        c.expect(b"hi");
        clients.push(c);
        wait_until("count after connect", || {
            engine.count_connections() == i + 1
        });
    }
    assert_eq!(*h.open_counts.lock().unwrap(), (1..=N).collect::<Vec<_>>());
    for i in (0..N).rev() {
        // Half close cleanly, half by a half-close first.
        let c = clients.pop().unwrap();
        if i % 2 == 0 {
            c.shutdown(Shutdown::Write).unwrap();
        }
        drop(c);
        wait_until("count after close", || engine.count_connections() == i);
    }
    assert_eq!(h.events.lock().unwrap().len(), N);
    server.stop().expect("engine result");
    assert_eq!(engine.count_connections(), 0);
    h.failures.assert_none();
}

struct Ticker {
    ticks: Arc<AtomicUsize>,
    n: usize,
}

impl EventHandler for Ticker {
    type Context = ();

    fn on_traffic(&self, _: &mut Conn<'_, ()>) -> Action {
        Action::None
    }

    fn on_tick(&self, _: &Engine) -> (Duration, Action) {
        let t = self.ticks.fetch_add(1, Ordering::SeqCst) + 1;
        let action = if t == self.n {
            Action::Shutdown
        } else {
            Action::None
        };
        (Duration::from_millis(10), action)
    }
}

fn ticker(kind: BackendKind) {
    for loops in [1, 2] {
        let ticks = Arc::new(AtomicUsize::new(0));
        let h = Ticker {
            ticks: ticks.clone(),
            n: 20,
        };
        let server = Server::start(h, &[util::TCP], opts(kind).ticker(true).loops(loops));
        server.wait().expect("engine result");
        assert_eq!(ticks.load(Ordering::SeqCst), 20);
    }
    // Without the option, no tick.
    let ticks = Arc::new(AtomicUsize::new(0));
    let h = Ticker {
        ticks: ticks.clone(),
        n: 1,
    };
    let server = Server::start(h, &[util::TCP], opts(kind));
    let mut c = server.connect(0);
    c.write_all(b"x").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    server.stop().expect("engine result");
    assert_eq!(ticks.load(Ordering::SeqCst), 0);
}

/// `on_boot` returns `Shutdown`.
struct BootShutdown {
    engine: Arc<Mutex<Option<Engine>>>,
    shutdowns: Arc<AtomicUsize>,
}

impl EventHandler for BootShutdown {
    type Context = ();

    fn on_boot(&self, engine: &Engine) -> Action {
        assert_eq!(engine.count_connections(), 0);
        assert_eq!(engine.addrs().len(), 1);
        *self.engine.lock().unwrap() = Some(engine.clone());
        Action::Shutdown
    }

    fn on_traffic(&self, _: &mut Conn<'_, ()>) -> Action {
        Action::None
    }

    fn on_shutdown(&self, _: &Engine) {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}

fn boot_shutdown(kind: BackendKind) {
    let engine = Arc::new(Mutex::new(None));
    let h = BootShutdown {
        engine: engine.clone(),
        shutdowns: Arc::default(),
    };
    let addr = util::unix_addr();
    let r = gnet::start(h, &[&addr], opts(kind)).expect("start");
    assert!(
        r.is_none(),
        "start must return Ok(None) after on_boot's Shutdown"
    );
    let engine = engine.lock().unwrap().take().expect("on_boot ran");
    assert!(engine.is_shut_down());
    assert!(matches!(engine.dup(), Err(Error::EngineShutdown)));
    assert!(matches!(engine.stop(), Err(Error::EngineShutdown)));
    let path = addr.strip_prefix("unix://").unwrap();
    assert!(
        !std::path::Path::new(path).exists(),
        "the socket file is left behind"
    );

    // Same through `run`, which returns Ok at once.
    let h = BootShutdown {
        engine: Arc::default(),
        shutdowns: Arc::default(),
    };
    gnet::run(h, util::TCP, opts(kind)).expect("run");
}

per_backend!(
    close_action_delivers_everything,
    conn_close_delivers_everything,
    handle_close_delivers_everything,
    shutdown_action_delivers_everything,
    close_causes,
    reset_cause,
    stop_from_another_thread,
    count_connections,
    ticker,
    boot_shutdown,
    restart_binds_the_same_port_at_once,
);

/// After `Engine::stop` returns through `wait`, the port is free again at once: no armed
/// operation (io_uring's multishot accept holds a reference to the listener) outlives the
/// engine, so a restarted server binds the same address without retrying.
fn restart_binds_the_same_port_at_once(kind: BackendKind) {
    let h = Arc::new(Counter::default());
    let server = Server::start(CounterH(h.clone()), &[util::TCP], opts(kind).loops(2));
    let addr = server.addr(0);
    let mut clients: Vec<Client> = (0..4)
        .map(|_| {
            let mut c = server.connect(0);
            c.expect(b"hi");
            c.echo(b"ping");
            c
        })
        .collect();
    server.stop().expect("engine result");
    for c in &mut clients {
        assert_eq!(c.read_to_eof(), b"", "a client did not see EOF");
    }
    let again = Server::start(
        CounterH(Arc::default()),
        &[&addr.to_string()],
        opts(kind).loops(2),
    );
    assert_eq!(again.addr(0), addr);
    let mut c = again.connect(0);
    c.expect(b"hi");
    c.echo(b"pong");
    again.stop().expect("second engine result");
    h.failures.assert_none();
}
