//! `ConnHandle` from other threads (stale handles, wake, async writes to a closed peer, after
//! shutdown), a framed protocol relying on `wake` for buffered input, and the half-close.

mod util;

use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use gnet::{
    Action, BackendKind, Bytes, CloseCause, Conn, ConnHandle, Engine, Error, EventHandler,
    WriteCallback,
};
use util::{cause_name, opts, wait_until, Rng, Server};

/// Echoes; hands every connection's handle to the test; counts calls without new bytes.
#[derive(Default)]
struct Shared {
    handles: Mutex<Vec<ConnHandle>>,
    empty_traffic: AtomicUsize,
    closed: AtomicUsize,
}

struct HandleEcho(Arc<Shared>);

impl EventHandler for HandleEcho {
    type Context = ();

    fn on_open(&self, c: &mut Conn<'_, ()>) -> Action {
        self.0.handles.lock().unwrap().push(c.handle());
        c.write(b"hi");
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        if d.is_empty() {
            self.0.empty_traffic.fetch_add(1, Ordering::SeqCst);
            c.write(b"Waking up.");
        }
        c.write(d);
        Action::None
    }

    fn on_close(&self, _: &mut Conn<'_, ()>, _: &gnet::CloseCause) -> Action {
        self.0.closed.fetch_add(1, Ordering::SeqCst);
        Action::None
    }
}

fn stale_handles(kind: BackendKind) {
    for tcp in [true, false] {
        let sh = Arc::new(Shared::default());
        let addr = util::addr_for(tcp);
        let server = Server::start(HandleEcho(sh.clone()), &[&addr], opts(kind));
        let mut old = server.connect(0);
        old.expect(b"hi");
        let stale = sh.handles.lock().unwrap()[0].clone();
        drop(old);
        wait_until("the first connection closed", || {
            sh.closed.load(Ordering::SeqCst) == 1
        });

        // New connections take the freed slot (one loop) and likely the descriptor.
        let mut fresh: Vec<_> = (0..3)
            .map(|_| {
                let mut c = server.connect(0);
                c.expect(b"hi");
                c
            })
            .collect();
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            stale.wake().expect("wake on a live loop");
            stale.close().expect("close on a live loop");
            // Refused at the call, visibly, and the callback told too.
            let r = stale.async_write_with(Bytes::from_static(b"garbage"), move |r| {
                let _ = tx.send(r);
            });
            assert!(matches!(r, Err(Error::ConnClosed)), "stale write: {r:?}");
            assert!(matches!(
                stale.async_write(Bytes::from_static(b"garbage")),
                Err(Error::ConnClosed)
            ));
        });
        worker.join().unwrap();
        let r = rx.recv_timeout(util::WAIT_TIMEOUT).expect("write callback");
        assert!(matches!(r, Err(Error::ConnClosed)), "stale write: {r:?}");
        // The queue ran in order: the wake and the close went before the write's callback.
        for c in &mut fresh {
            c.write_all(b"ping").unwrap();
            c.expect(b"ping");
        }
        assert_eq!(
            sh.empty_traffic.load(Ordering::SeqCst),
            0,
            "a stale wake ran"
        );
        assert_eq!(server.engine.count_connections(), 3);
        assert_eq!(sh.closed.load(Ordering::SeqCst), 1);

        // A handle outliving its engine.
        let live = sh.handles.lock().unwrap()[1].clone();
        server.stop().expect("engine result");
        assert!(matches!(live.wake(), Err(Error::EngineShutdown)));
        assert!(matches!(live.close(), Err(Error::EngineShutdown)));
        let (tx, rx) = mpsc::channel();
        let r = live.async_write_with(&b"late"[..], move |r| {
            let _ = tx.send(r);
        });
        assert!(matches!(r, Err(Error::EngineShutdown)));
        assert!(matches!(rx.try_recv(), Ok(Err(Error::EngineShutdown))));
    }
}

fn wake_from_another_thread(kind: BackendKind) {
    let sh = Arc::new(Shared::default());
    let server = Server::start(HandleEcho(sh.clone()), &[util::TCP], opts(kind).loops(2));
    let mut clients: Vec<_> = (0..4).map(|_| server.connect(0)).collect();
    for c in &mut clients {
        c.expect(b"hi");
    }
    let handles = sh.handles.lock().unwrap().clone();
    std::thread::spawn(move || {
        for h in handles {
            h.wake().unwrap();
        }
    })
    .join()
    .unwrap();
    for c in &mut clients {
        c.expect(b"Waking up.");
        c.write_all(b"after").unwrap();
        c.expect(b"after");
    }
    assert_eq!(sh.empty_traffic.load(Ordering::SeqCst), 4);
    server.stop().expect("engine result");
}

fn async_write_to_departed_peer(kind: BackendKind) {
    let sh = Arc::new(Shared::default());
    let server = Server::start(HandleEcho(sh.clone()), &[util::TCP], opts(kind));
    let mut c = server.connect(0);
    c.expect(b"hi");
    let h = sh.handles.lock().unwrap()[0].clone();
    c.write_all(b"bye").unwrap();
    c.expect(b"bye");
    drop(c);
    // Keep writing until a callback says the connection is gone.
    let mut outcome = None;
    for _ in 0..2000 {
        let (tx, rx) = mpsc::channel();
        let data = Bytes::from_static(b"are you there?");
        let call = h.async_write_with(data, move |r| {
            let _ = tx.send(r);
        });
        let told = rx.recv_timeout(util::WAIT_TIMEOUT).expect("callback");
        // Once the loop knows, the call itself says so; before, the callback does.
        if let Err(e) = call {
            assert!(matches!(e, Error::ConnClosed), "{e:?}");
            assert!(matches!(told, Err(Error::ConnClosed)), "{told:?}");
        }
        match told {
            Ok(14) => std::thread::sleep(Duration::from_millis(5)),
            Err(Error::ConnClosed) => {
                outcome = Some(());
                break;
            }
            other => panic!("unexpected callback result {other:?}"),
        }
    }
    assert!(outcome.is_some(), "writes to a departed peer never failed");
    server.stop().expect("engine result");
}

/// A 4-byte big-endian length and a body; at most one frame per call, `wake` for the rest.
struct OneFramePerCall {
    calls_with_wake: Arc<AtomicUsize>,
}

fn complete_frame(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..4)?;
    let len = u32::from_be_bytes(head.try_into().unwrap()) as usize;
    (buf.len() >= 4 + len).then_some(4 + len)
}

impl EventHandler for OneFramePerCall {
    type Context = ();

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let Some(n) = complete_frame(c.peek_all()) else {
            return Action::None;
        };
        let frame = c.next(n).expect("frame");
        c.write(frame);
        if complete_frame(c.peek_all()).is_some() {
            self.calls_with_wake.fetch_add(1, Ordering::SeqCst);
            c.handle().wake().expect("wake");
        }
        Action::None
    }
}

fn framed_protocol_with_wake(kind: BackendKind) {
    for tcp in [true, false] {
        let wakes = Arc::new(AtomicUsize::new(0));
        let h = OneFramePerCall {
            calls_with_wake: wakes.clone(),
        };
        let addr = util::addr_for(tcp);
        // Inbound may pile up while frames are served one at a time.
        let o = opts(kind).max_inbound_buffer(16 << 20);
        let server = Server::start(h, &[&addr], o);
        let mut c = server.connect(0);
        let mut rng = Rng::new(if tcp { 11 } else { 12 });
        let frames: Vec<Vec<u8>> = (0..100)
            .map(|_| {
                let n = rng.range(1, 64 * 1024);
                let mut f = (n as u32).to_be_bytes().to_vec();
                f.extend_from_slice(&rng.bytes(n));
                f
            })
            .collect();
        // Pipelined: all frames go in one write, so many arrive together.
        let all: Vec<u8> = frames.concat();
        let mut w = c.try_clone();
        let writer = std::thread::spawn(move || w.write_all(&all));
        for (i, f) in frames.iter().enumerate() {
            let got = c.read_n(f.len());
            util::assert_bytes_eq(&got, f, &format!("frame {i}"));
        }
        writer.join().unwrap().expect("client write");
        server.stop().expect("engine result");
        assert!(
            wakes.load(Ordering::SeqCst) > 0,
            "frames never arrived together: wake was not exercised"
        );
    }
}

fn data_before_fin_is_answered(kind: BackendKind) {
    for tcp in [true, false] {
        let sh = Arc::new(Shared::default());
        let addr = util::addr_for(tcp);
        let server = Server::start(HandleEcho(sh.clone()), &[&addr], opts(kind));
        for (i, size) in [10usize, 1 << 20].into_iter().enumerate() {
            let mut c = server.connect(0);
            let payload = util::random_bytes(size, 100 + i as u64);
            let mut w = c.try_clone();
            let p = payload.clone();
            let writer = std::thread::spawn(move || {
                w.write_all(&p).unwrap();
                w.shutdown(Shutdown::Write).unwrap();
            });
            let got = c.read_to_eof();
            writer.join().unwrap();
            let mut want = b"hi".to_vec();
            want.extend_from_slice(&payload);
            util::assert_bytes_eq(&got, &want, "echo of data sent before FIN");
        }
        wait_until("both connections closed", || {
            server.engine.count_connections() == 0
        });
        server.stop().expect("engine result");
    }
}

/// `on_open` returns `Close` (the greeting still arrives) or `Shutdown`.
struct OpenAction(Action, mpsc::Sender<String>);

impl EventHandler for OpenAction {
    type Context = ();

    fn on_open(&self, c: &mut Conn<'_, ()>) -> Action {
        c.write(b"greeting");
        self.0
    }

    fn on_traffic(&self, _: &mut Conn<'_, ()>) -> Action {
        Action::None
    }

    fn on_close(&self, _: &mut Conn<'_, ()>, cause: &CloseCause) -> Action {
        let _ = self.1.send(cause_name(cause));
        Action::None
    }

    fn on_shutdown(&self, engine: &Engine) {
        let dup = engine.dup().map(|l| l.local_addr().is_ok());
        let _ = self.1.send(format!("on_shutdown dup={dup:?}"));
    }
}

fn open_actions(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(OpenAction(Action::Close, tx), &[util::TCP], opts(kind));
    let mut c = server.connect(0);
    assert_eq!(c.read_to_eof(), b"greeting");
    assert_eq!(rx.recv_timeout(util::WAIT_TIMEOUT).unwrap(), "Local");
    server.stop().expect("engine result");
    assert_eq!(
        rx.recv_timeout(util::WAIT_TIMEOUT).unwrap(),
        "on_shutdown dup=Ok(true)"
    );

    let (tx, rx) = mpsc::channel();
    let server = Server::start(OpenAction(Action::Shutdown, tx), &[util::TCP], opts(kind));
    let engine = server.engine.clone();
    let mut c = server.connect(0);
    assert_eq!(c.read_to_eof(), b"greeting");
    server.wait().expect("engine result");
    let events: Vec<String> = rx.try_iter().collect();
    assert_eq!(events, ["Shutdown", "on_shutdown dup=Ok(true)"]);
    assert!(matches!(engine.dup(), Err(Error::EngineShutdown)));
}

/// `on_close` returning `Shutdown` stops the engine.
struct CloseStops;

impl EventHandler for CloseStops {
    type Context = ();

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        c.write(d);
        Action::Close
    }

    fn on_close(&self, _: &mut Conn<'_, ()>, _: &CloseCause) -> Action {
        Action::Shutdown
    }
}

fn on_close_shutdown(kind: BackendKind) {
    let server = Server::start(CloseStops, &[util::TCP], opts(kind).loops(2));
    let mut c = server.connect(0);
    c.write_all(b"last").unwrap();
    assert_eq!(c.read_to_eof(), b"last");
    server.wait().expect("engine result");
}

/// Writes two buffers as one asynchronous operation from another thread.
struct Vectored(mpsc::Sender<gnet::Result<usize>>);

impl EventHandler for Vectored {
    type Context = ();

    fn on_open(&self, c: &mut Conn<'_, ()>) -> Action {
        let h = c.handle();
        let tx = self.0.clone();
        std::thread::spawn(move || {
            let bufs = vec![
                Bytes::from_static(b"first,"),
                Bytes::from(vec![b's'; 100_000]),
            ];
            let done: WriteCallback = Box::new(move |r| {
                let _ = tx.send(r);
            });
            h.async_writev(bufs, Some(done)).unwrap();
            h.async_writev(vec![Bytes::from_static(b",end")], None)
                .unwrap();
        });
        Action::None
    }

    fn on_traffic(&self, _: &mut Conn<'_, ()>) -> Action {
        Action::None
    }
}

fn async_writev(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(Vectored(tx), &[util::TCP], opts(kind));
    let mut c = server.connect(0);
    let mut want = b"first,".to_vec();
    want.extend_from_slice(&[b's'; 100_000]);
    want.extend_from_slice(b",end");
    c.expect(&want);
    let r = rx.recv_timeout(util::WAIT_TIMEOUT).expect("callback");
    assert!(matches!(r, Ok(100_006)), "{r:?}");
    server.stop().expect("engine result");
}

fn concurrent_wake_close_write(kind: BackendKind) {
    const CONNS: usize = 8;
    const WRITES: usize = 50;
    let sh = Arc::new(Shared::default());
    let server = Server::start(HandleEcho(sh.clone()), &[util::TCP], opts(kind).loops(2));
    let mut clients: Vec<_> = (0..CONNS).map(|_| server.connect(0)).collect();
    for c in &mut clients {
        c.expect(b"hi");
    }
    let handles = sh.handles.lock().unwrap().clone();
    let callbacks = Arc::new(AtomicUsize::new(0));
    // Per connection, a thread mixing wakes, writes and (half way) a close; the clients keep
    // talking meanwhile.
    let workers: Vec<_> = handles
        .into_iter()
        .map(|h| {
            let callbacks = callbacks.clone();
            std::thread::spawn(move || {
                for i in 0..WRITES {
                    h.wake().unwrap();
                    let cb = callbacks.clone();
                    let r = h.async_write_with(&b"x"[..], move |r| {
                        assert!(matches!(r, Ok(1) | Err(Error::ConnClosed)), "{r:?}");
                        cb.fetch_add(1, Ordering::SeqCst);
                    });
                    // Refused at the call once the connection is closing.
                    assert!(matches!(r, Ok(()) | Err(Error::ConnClosed)), "{r:?}");
                    if i == WRITES / 2 {
                        h.close().unwrap();
                    }
                }
            })
        })
        .collect();
    std::thread::scope(|s| {
        for c in &mut clients {
            s.spawn(move || {
                let _ = c.write_all(b"chatter");
                let got = c.read_until_closed();
                // Whatever arrived is made of the tokens the server writes, and then EOF.
                let mut rest = &got[..];
                while !rest.is_empty() {
                    let token: &[u8] = [&b"Waking up."[..], b"x", b"chatter"]
                        .into_iter()
                        .find(|t| rest.starts_with(t))
                        .unwrap_or_else(|| {
                            panic!("garbled stream: {:?}", String::from_utf8_lossy(rest))
                        });
                    rest = &rest[token.len()..];
                }
            });
        }
    });
    for w in workers {
        w.join().expect("a handle call panicked");
    }
    wait_until("every connection closed", || {
        server.engine.count_connections() == 0
    });
    wait_until("every write callback", || {
        callbacks.load(Ordering::SeqCst) == CONNS * WRITES
    });
    // The engine is unharmed.
    let mut c = server.connect(0);
    c.expect(b"hi");
    c.write_all(b"still").unwrap();
    c.expect(b"still");
    server.stop().expect("engine result");
}

per_backend!(
    stale_handles,
    wake_from_another_thread,
    async_write_to_departed_peer,
    framed_protocol_with_wake,
    data_before_fin_is_answered,
    open_actions,
    on_close_shutdown,
    async_writev,
    concurrent_wake_close_write,
);
