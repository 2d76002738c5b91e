//! Failure containment: a panicking handler, the inbound and outbound limits.

mod util;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use gnet::{Action, BackendKind, Bytes, CloseCause, Conn, ConnHandle, Error, EventHandler};
use util::{opts, wait_until, Client, Server};

/// Echoes, except: "panic" panics, a connection starting with "hoard" is never consumed.
#[derive(Default)]
struct Touchy {
    closes: Mutex<Vec<String>>,
    handles: Mutex<Vec<ConnHandle>>,
}

struct TouchyH(Arc<Touchy>);

impl EventHandler for TouchyH {
    type Context = ();

    fn on_open(&self, c: &mut Conn<'_, ()>) -> Action {
        self.0.handles.lock().unwrap().push(c.handle());
        c.write(b"hi");
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        if c.peek_all().starts_with(b"hoard") {
            return Action::None;
        }
        let d = c.next_all();
        if d == b"panic" {
            c.write(b"lost");
            panic!("deliberate test panic");
        }
        c.write(d);
        Action::None
    }

    fn on_close(&self, _: &mut Conn<'_, ()>, cause: &CloseCause) -> Action {
        self.0.closes.lock().unwrap().push(match cause {
            CloseCause::Error(Error::HandlerPanic(m)) => format!("panic: {m}"),
            CloseCause::Error(Error::InboundOverflow { limit }) => format!("overflow {limit}"),
            other => util::cause_name(other),
        });
        Action::None
    }
}

fn ping(c: &mut Client, what: &[u8]) {
    c.write_all(what).unwrap();
    c.expect(what);
}

fn panic_closes_only_its_connection(kind: BackendKind) {
    for tcp in [true, false] {
        let t = Arc::new(Touchy::default());
        let addr = util::addr_for(tcp);
        let server = Server::start(TouchyH(t.clone()), &[&addr], opts(kind));
        let mut good = server.connect(0);
        let mut bad = server.connect(0);
        good.expect(b"hi");
        bad.expect(b"hi");
        ping(&mut good, b"before");
        bad.write_all(b"panic").unwrap();
        if tcp {
            // What the panicking callback wrote is dropped, and the peer learns from a reset
            // that the stream was cut short.
            assert_eq!(
                bad.read_until_reset(),
                b"",
                "the half-written reply was sent"
            );
        } else {
            // A Unix stream has no reset: the end of the stream, without the reply.
            assert_eq!(
                bad.read_until_closed(),
                b"",
                "the half-written reply was sent"
            );
        }
        wait_until("on_close of the panicking connection", || {
            !t.closes.lock().unwrap().is_empty()
        });
        assert_eq!(
            *t.closes.lock().unwrap(),
            ["panic: deliberate test panic".to_string()]
        );
        ping(&mut good, b"after");
        assert_eq!(server.engine.count_connections(), 1);
        // The loop still accepts.
        let mut third = server.connect(0);
        third.expect(b"hi");
        ping(&mut third, b"third");
        server.stop().expect("engine result");
    }
}

fn inbound_limit(kind: BackendKind) {
    const LIMIT: usize = 64 * 1024;
    for tcp in [true, false] {
        let t = Arc::new(Touchy::default());
        let addr = util::addr_for(tcp);
        let server = Server::start(
            TouchyH(t.clone()),
            &[&addr],
            opts(kind).max_inbound_buffer(LIMIT),
        );
        let mut good = server.connect(0);
        good.expect(b"hi");
        let mut hoarder = server.connect(0);
        hoarder.expect(b"hi");
        let mut w = hoarder.try_clone();
        let writer = std::thread::spawn(move || {
            let mut data = b"hoard".to_vec();
            data.resize(4 * LIMIT, b'h');
            // The server closes part way: a failed write is expected.
            let _ = w.write_all(&data);
        });
        let got = hoarder.read_until_closed();
        assert!(got.is_empty(), "the hoarder got {} bytes", got.len());
        writer.join().unwrap();
        wait_until("on_close of the hoarder", || {
            !t.closes.lock().unwrap().is_empty()
        });
        assert_eq!(*t.closes.lock().unwrap(), [format!("overflow {LIMIT}")]);
        // Another connection is unaffected, and may send more than the limit in total.
        for i in 0..4 {
            good.echo(&util::random_bytes(LIMIT, i));
        }
        server.stop().expect("engine result");
    }
}

/// Hands each connection's handle to the test; reads nothing back.
struct Silent(mpsc::Sender<ConnHandle>);

impl EventHandler for Silent {
    type Context = ();

    fn on_open(&self, c: &mut Conn<'_, ()>) -> Action {
        let _ = self.0.send(c.handle());
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        c.next_all();
        Action::None
    }
}

fn chunk(i: usize, len: usize) -> Bytes {
    (0..len)
        .map(|j| (i * 31 + j % 253) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn outbound_limit(kind: BackendKind) {
    const LIMIT: usize = 256 * 1024;
    const CHUNK: usize = 64 * 1024;
    let (tx, rx) = mpsc::channel();
    let o = opts(kind)
        .max_outbound_buffer(LIMIT)
        .socket_send_buffer(16 * 1024);
    let server = Server::start(Silent(tx), &[util::TCP], o);
    let mut c = Client::connect_tcp_small_rcvbuf(&server.addr(0), 16 * 1024);
    let h = rx.recv_timeout(util::WAIT_TIMEOUT).expect("on_open");

    // The client does not read; the server keeps writing from another thread.
    let results: Arc<Mutex<Vec<Option<gnet::Result<usize>>>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let mut refusal = None;
    for i in 0..2048 {
        results.lock().unwrap().push(None);
        let (res, done2) = (results.clone(), done.clone());
        let r = h.async_write_with(chunk(i, CHUNK), move |r| {
            res.lock().unwrap()[i] = Some(r);
            done2.fetch_add(1, Ordering::SeqCst);
        });
        // Refused at the call, so that a caller without a callback knows too.
        match r {
            Ok(()) => std::thread::sleep(Duration::from_millis(1)),
            Err(Error::OutboundFull { buffered, limit }) => {
                refusal = Some((buffered, limit));
                break;
            }
            Err(e) => panic!("write {i}: {e}"),
        }
    }
    let (buffered, limit) = refusal.expect("the outbound limit never refused a write");
    assert_eq!(limit, LIMIT);
    assert!(
        buffered <= LIMIT,
        "{buffered} bytes queued past the {LIMIT} limit"
    );
    assert!(
        buffered + CHUNK > LIMIT,
        "refused with room left: {buffered}"
    );
    let submitted = results.lock().unwrap().len();

    // Now read: every accepted chunk arrives, in order, and nothing else.
    let reader = std::thread::spawn(move || c.read_to_eof());
    wait_until("every write callback", || {
        done.load(Ordering::SeqCst) == submitted
    });
    h.close().unwrap();
    let got = reader.join().unwrap();
    let results = results.lock().unwrap();
    let mut want = Vec::new();
    for (i, r) in results.iter().enumerate() {
        match r {
            Some(Ok(n)) => {
                assert_eq!(*n, CHUNK);
                want.extend_from_slice(&chunk(i, CHUNK));
            }
            Some(Err(Error::OutboundFull { .. })) => {}
            other => panic!("chunk {i}: {other:?}"),
        }
    }
    assert!(want.len() >= LIMIT, "only {} bytes accepted", want.len());
    util::assert_bytes_eq(&got, &want, "stream after the refusal");
    server.stop().expect("engine result");
}

/// Writes `BIG` bytes at once on the first input, then closes (`Action::Close`) or not.
struct Flood {
    payload: Bytes,
    close: bool,
    causes: mpsc::Sender<String>,
    max_outbound: Arc<AtomicUsize>,
}

impl EventHandler for Flood {
    type Context = ();

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        if self.payload.is_empty() {
            c.write(d);
        } else {
            c.write_bytes(self.payload.clone());
        }
        self.max_outbound
            .fetch_max(c.outbound_buffered(), Ordering::SeqCst);
        if self.close {
            Action::Close
        } else {
            Action::None
        }
    }

    fn on_close(&self, _: &mut Conn<'_, ()>, cause: &CloseCause) -> Action {
        let _ = self.causes.send(match cause {
            CloseCause::Error(Error::CloseTimeout { unsent }) => {
                format!("timeout unsent>0:{}", *unsent > 0)
            }
            other => util::cause_name(other),
        });
        Action::None
    }
}

impl Flood {
    /// Writes `payload` on the first bytes it gets, then closes; `on_close` causes go to the
    /// receiver.
    fn closing_after(payload: Bytes) -> (Flood, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let h = Flood {
            payload,
            close: true,
            causes: tx,
            max_outbound: Arc::default(),
        };
        (h, rx)
    }
}

fn close_timeout(kind: BackendKind) {
    const BIG: usize = 8 << 20;
    let payload = Bytes::from(util::random_bytes(BIG, 9));
    let (h, rx) = Flood::closing_after(payload.clone());
    let o = opts(kind)
        .close_timeout(Duration::from_millis(200))
        .socket_send_buffer(16 * 1024);
    let server = Server::start(h, &[util::TCP], o);
    let mut c = Client::connect_tcp_small_rcvbuf(&server.addr(0), 16 * 1024);
    c.write_all(b"go").unwrap();
    // The client does not read: the close gives up after its timeout, with a reset.
    let cause = rx.recv_timeout(util::WAIT_TIMEOUT).expect("on_close");
    assert_eq!(cause, "timeout unsent>0:true");
    let got = c.read_until_reset();
    assert!(got.len() < BIG, "everything arrived despite the timeout");
    util::assert_bytes_eq(&got, &payload[..got.len()], "prefix before the timeout");
    server.stop().expect("engine result");
}

/// A connection already draining under a long `close_timeout` is cut short by the stop's
/// `shutdown_timeout`: the engine stops in about that time, not the close timeout.
fn stop_cuts_a_long_drain_short(kind: BackendKind) {
    let (h, rx) = Flood::closing_after(Bytes::from(util::random_bytes(8 << 20, 3)));
    let o = opts(kind)
        .close_timeout(Duration::from_secs(3600))
        .shutdown_timeout(Duration::from_millis(200))
        .socket_send_buffer(16 * 1024);
    let server = Server::start(h, &[util::TCP], o);
    let mut c = Client::connect_tcp_small_rcvbuf(&server.addr(0), 16 * 1024);
    c.write_all(b"go").unwrap();
    // Let the close begin (the client never reads), then stop.
    std::thread::sleep(Duration::from_millis(200));
    let start = std::time::Instant::now();
    server.stop().expect("engine result");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the stop waited {:?} for a drain",
        start.elapsed()
    );
    let cause = rx.recv_timeout(util::WAIT_TIMEOUT).expect("on_close");
    assert_eq!(cause, "timeout unsent>0:true");
}

/// A close timeout too large to add to a clock reading means "no deadline", not a panic.
fn unbounded_close_timeout(kind: BackendKind) {
    const BIG: usize = 1 << 20;
    let payload = Bytes::from(util::random_bytes(BIG, 4));
    let (h, rx) = Flood::closing_after(payload.clone());
    let o = opts(kind).close_timeout(Duration::MAX);
    let server = Server::start(h, &[util::TCP], o);
    let mut c = server.connect(0);
    c.write_all(b"go").unwrap();
    util::assert_bytes_eq(&c.read_to_eof(), &payload, "everything, then EOF");
    let cause = rx.recv_timeout(util::WAIT_TIMEOUT).expect("on_close");
    assert_eq!(cause, "Local");
    server.stop().expect("engine result");
}

fn shutdown_timeout_calls_every_callback(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let o = opts(kind)
        .shutdown_timeout(Duration::from_millis(200))
        .max_outbound_buffer(1 << 20)
        .socket_send_buffer(16 * 1024);
    let server = Server::start(Silent(tx), &[util::TCP], o);
    let mut c = Client::connect_tcp_small_rcvbuf(&server.addr(0), 16 * 1024);
    let h = rx.recv_timeout(util::WAIT_TIMEOUT).expect("on_open");
    let calls = Arc::new(Mutex::new(Vec::new()));
    const N: usize = 64;
    for i in 0..N {
        let calls = calls.clone();
        let r = h.async_write_with(chunk(i, 64 * 1024), move |r| {
            calls.lock().unwrap().push((i, format!("{r:?}")));
        });
        assert!(
            matches!(r, Ok(()) | Err(Error::OutboundFull { .. })),
            "{r:?}"
        );
    }
    // The client never reads; the engine must still stop, and every write hear its fate.
    server.stop().expect("engine result");
    let calls = calls.lock().unwrap();
    let mut seen: Vec<usize> = calls.iter().map(|(i, _)| *i).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..N).collect::<Vec<_>>(), "callbacks: {calls:?}");
    assert!(
        calls.iter().any(|(_, r)| r.starts_with("Err")),
        "a non-reading peer took everything: {calls:?}"
    );
    // The stop abandoned output: the peer is told with a reset, not a FIN.
    let got = c.read_until_reset();
    assert!(got.len() < N * 64 * 1024, "everything arrived");
}

fn slow_reader_backpressure(kind: BackendKind) {
    const LIMIT: usize = 256 * 1024;
    const TOTAL: usize = 6 << 20;
    let (tx, _rx) = mpsc::channel();
    let max_out = Arc::new(AtomicUsize::new(0));
    let h = Flood {
        payload: Bytes::new(),
        close: false,
        causes: tx,
        max_outbound: max_out.clone(),
    };
    // Reads past the pause are bounded by what a backend holds already taken from the kernel:
    // for io_uring, the provided-buffer ring. Keep it small so the bound means something.
    const RING: usize = 16;
    const READ: usize = 16 * 1024;
    let o = opts(kind)
        .max_outbound_buffer(LIMIT)
        .ring_buffers(RING as u16)
        .read_buffer_size(READ);
    let server = Server::start(h, &[util::TCP], o);
    let mut c = server.connect(0);
    let payload = util::random_bytes(TOTAL, 77);
    let mut w = c.try_clone();
    let p = payload.clone();
    let writer = std::thread::spawn(move || w.write_all(&p));
    // Let the writer run ahead of the reader until the server stops reading.
    std::thread::sleep(Duration::from_millis(300));
    let got = c.read_n(TOTAL);
    writer.join().unwrap().expect("client write");
    util::assert_bytes_eq(&got, &payload, "echo after backpressure");
    let peak = max_out.load(Ordering::SeqCst);
    eprintln!("{kind}: peak outbound {peak}");
    assert!(
        peak <= LIMIT + (RING + 1) * READ,
        "outbound grew to {peak} bytes with a {LIMIT} limit"
    );
    server.stop().expect("engine result");
}

/// Panics in `on_open` for every other connection.
struct PanicOnOpen(AtomicUsize, mpsc::Sender<String>);

impl EventHandler for PanicOnOpen {
    type Context = ();

    fn on_open(&self, c: &mut Conn<'_, ()>) -> Action {
        if self.0.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            panic!("open panic");
        }
        c.write(b"hi");
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        c.write(d);
        Action::None
    }

    fn on_close(&self, _: &mut Conn<'_, ()>, cause: &CloseCause) -> Action {
        let _ = self.1.send(util::cause_name(cause));
        Action::None
    }
}

fn panic_in_on_open(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(
        PanicOnOpen(AtomicUsize::new(0), tx),
        &[util::TCP],
        opts(kind),
    );
    let mut goods = Vec::new();
    for _ in 0..3 {
        // The panic resets the connection, so fast that even `connect` may hear of it.
        let gnet::ListenAddr::Tcp(addr) = server.addr(0) else {
            unreachable!()
        };
        if let Ok(s) = std::net::TcpStream::connect(addr) {
            s.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
            let mut bad = Client::Tcp(s);
            assert_eq!(bad.read_until_reset(), b"");
        }
        let cause = rx.recv_timeout(util::WAIT_TIMEOUT).expect("on_close");
        assert!(cause.contains("HandlerPanic(\"open panic\")"), "{cause}");
        let mut good = server.connect(0);
        good.expect(b"hi");
        ping(&mut good, b"fine");
        goods.push(good);
    }
    server.stop().expect("engine result");
}

per_backend!(
    panic_closes_only_its_connection,
    inbound_limit,
    outbound_limit,
    close_timeout,
    stop_cuts_a_long_drain_short,
    unbounded_close_timeout,
    shutdown_timeout_calls_every_callback,
    slow_reader_backpressure,
    panic_in_on_open,
);
