//! The echo matrix (Go gnet's `TestServer`): tcp and unix, one and three loops, every load
//! balancer, reuse-port on and off, a greeting from `on_open`, concurrent clients echoing
//! random 1 MiB payloads, and four ways for the server to write: `write`, `writev`,
//! `write_bytes` and an asynchronous write from another thread.

mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use gnet::{Action, BackendKind, Bytes, CloseCause, Conn, ConnHandle, EventHandler, LoadBalancing};
use util::{opts, wait_until, Failures, Server};

const GREETING: &[u8] = b"hello\r\n";
const PAYLOAD: usize = 1 << 20;
const ROUNDS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Write,
    Writev,
    WriteBytes,
    Async,
}

const MODES: [Mode; 4] = [Mode::Write, Mode::Writev, Mode::WriteBytes, Mode::Async];

#[derive(Default)]
struct Stats {
    opened: AtomicUsize,
    closed: AtomicUsize,
    loop_of_conn: Mutex<Vec<usize>>,
    async_submitted: AtomicUsize,
    async_ok: AtomicUsize,
    failures: Failures,
}

struct EchoServer {
    mode: Mode,
    stats: Arc<Stats>,
    worker: Option<Mutex<mpsc::Sender<(ConnHandle, Bytes)>>>,
}

impl EventHandler for EchoServer {
    type Context = usize;

    fn on_open(&self, c: &mut Conn<'_, usize>) -> Action {
        let f = &self.stats.failures;
        f.check("on_open: local_addr failed", c.local_addr().is_ok());
        f.check(
            "on_open: unexpected inbound bytes",
            c.inbound_buffered() == 0,
        );
        let n = self.stats.opened.fetch_add(1, Ordering::SeqCst);
        c.set_context(n);
        self.stats
            .loop_of_conn
            .lock()
            .unwrap()
            .push(c.handle().loop_index());
        c.write(GREETING);
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, usize>) -> Action {
        let f = &self.stats.failures;
        let n = c.inbound_buffered();
        let data = c.next_all();
        f.check("next_all length", data.len() == n);
        f.check("inbound after next_all", c.inbound_buffered() == 0);
        f.check("discard on empty", c.discard(1) == 0);
        f.check("next on empty", c.next(1).is_none());
        if data.is_empty() {
            f.push("on_traffic without data or wake");
            return Action::None;
        }
        match self.mode {
            Mode::Write => c.write(data),
            Mode::Writev => {
                let (a, b) = data.split_at(data.len() / 2);
                c.writev(&[a, b]);
            }
            Mode::WriteBytes => c.write_bytes(Bytes::copy_from_slice(data)),
            Mode::Async => {
                let bytes = Bytes::copy_from_slice(data);
                let tx = self.worker.as_ref().expect("worker").lock().unwrap();
                self.stats.async_submitted.fetch_add(1, Ordering::SeqCst);
                tx.send((c.handle(), bytes)).expect("worker gone");
            }
        }
        f.check("flush on an open conn", c.flush().is_ok());
        Action::None
    }

    fn on_close(&self, c: &mut Conn<'_, usize>, cause: &CloseCause) -> Action {
        self.stats.failures.check(
            "on_close without the context set in on_open",
            c.context().is_some(),
        );
        if !matches!(cause, CloseCause::PeerClosed | CloseCause::Reset) {
            self.stats
                .failures
                .push(format!("unexpected close cause {cause}"));
        }
        self.stats.closed.fetch_add(1, Ordering::SeqCst);
        Action::None
    }
}

/// The worker thread of the async mode: writes every buffer back through its handle.
fn spawn_worker(
    stats: Arc<Stats>,
) -> (
    mpsc::Sender<(ConnHandle, Bytes)>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel::<(ConnHandle, Bytes)>();
    let t = std::thread::spawn(move || {
        for (h, b) in rx {
            let len = b.len();
            let st = stats.clone();
            let r = h.async_write_with(b, move |r| match r {
                Ok(n) if n == len => {
                    st.async_ok.fetch_add(1, Ordering::SeqCst);
                }
                other => st
                    .failures
                    .push(format!("async write callback: {other:?}, wanted Ok({len})")),
            });
            if let Err(e) = r {
                stats.failures.push(format!("async_write_with: {e}"));
            }
        }
    });
    (tx, t)
}

struct Case {
    tcp: bool,
    loops: usize,
    lb: LoadBalancing,
    reuse_port: bool,
}

fn run_echo(kind: BackendKind, case: &Case, mode: Mode) {
    let stats = Arc::new(Stats::default());
    let (worker, worker_thread) = if mode == Mode::Async {
        let (tx, t) = spawn_worker(stats.clone());
        (Some(Mutex::new(tx)), Some(t))
    } else {
        (None, None)
    };
    let handler = EchoServer {
        mode,
        stats: stats.clone(),
        worker,
    };
    let addr = util::addr_for(case.tcp);
    let o = opts(kind)
        .loops(case.loops)
        .load_balancing(case.lb)
        .reuse_port(case.reuse_port);
    let server = Server::start(handler, &[&addr], o);
    assert_eq!(server.engine.backend(), kind);
    assert_eq!(server.engine.num_loops(), case.loops);
    let nclients = if case.loops == 1 { 3 } else { 2 * case.loops };

    // Connect one at a time, each reading its greeting first, so placement is deterministic.
    let mut clients = Vec::new();
    for _ in 0..nclients {
        let mut c = server.connect(0);
        c.expect(GREETING);
        clients.push(c);
    }
    wait_until("every connection counted", || {
        server.engine.count_connections() == nclients
    });

    std::thread::scope(|s| {
        for (i, c) in clients.iter_mut().enumerate() {
            s.spawn(move || {
                for r in 0..ROUNDS {
                    let payload = util::random_bytes(PAYLOAD, (i * 100 + r) as u64 + 1);
                    c.echo(&payload);
                }
            });
        }
    });

    let placed = stats.loop_of_conn.lock().unwrap().clone();
    assert_eq!(placed.len(), nclients);
    let mut per_loop = vec![0usize; case.loops];
    for &l in &placed {
        per_loop[l] += 1;
    }
    let single_acceptor = case.loops > 1 && !case.reuse_port;
    if case.loops == 1 {
        assert_eq!(per_loop, vec![nclients]);
    } else if single_acceptor {
        match (case.lb, case.tcp) {
            // Every client comes from 127.0.0.1: one loop serves them all.
            (LoadBalancing::SourceAddrHash, true) => {
                assert!(per_loop.contains(&nclients), "hash spread {per_loop:?}")
            }
            // Round-robin, least-connections (clients stay connected), and the hash's
            // round-robin fallback for unnamed unix peers: an even spread.
            _ => assert!(
                per_loop.iter().all(|&n| n == nclients / case.loops),
                "{:?} spread {per_loop:?}",
                case.lb
            ),
        }
    }

    drop(clients);
    wait_until("every connection closed", || {
        server.engine.count_connections() == 0 && stats.closed.load(Ordering::SeqCst) == nclients
    });
    if mode == Mode::Async {
        wait_until("every async write callback", || {
            stats.async_ok.load(Ordering::SeqCst) == stats.async_submitted.load(Ordering::SeqCst)
        });
        assert!(stats.async_ok.load(Ordering::SeqCst) >= nclients * ROUNDS);
    }
    server.stop().expect("engine result");
    if let Some(t) = worker_thread {
        t.join().unwrap();
    }
    stats.failures.assert_none();
    assert_eq!(stats.opened.load(Ordering::SeqCst), nclients);
}

fn run_case(kind: BackendKind, case: Case) {
    for mode in MODES {
        eprintln!("{kind} {mode:?}");
        run_echo(kind, &case, mode);
    }
}

fn tcp_1_loop(kind: BackendKind) {
    run_case(
        kind,
        Case {
            tcp: true,
            loops: 1,
            lb: LoadBalancing::RoundRobin,
            reuse_port: false,
        },
    );
}

fn tcp_1_loop_reuse_port(kind: BackendKind) {
    run_case(
        kind,
        Case {
            tcp: true,
            loops: 1,
            lb: LoadBalancing::RoundRobin,
            reuse_port: true,
        },
    );
}

fn tcp_3_loops_round_robin(kind: BackendKind) {
    run_case(
        kind,
        Case {
            tcp: true,
            loops: 3,
            lb: LoadBalancing::RoundRobin,
            reuse_port: false,
        },
    );
}

fn tcp_3_loops_least_connections(kind: BackendKind) {
    run_case(
        kind,
        Case {
            tcp: true,
            loops: 3,
            lb: LoadBalancing::LeastConnections,
            reuse_port: false,
        },
    );
}

fn tcp_3_loops_source_addr_hash(kind: BackendKind) {
    run_case(
        kind,
        Case {
            tcp: true,
            loops: 3,
            lb: LoadBalancing::SourceAddrHash,
            reuse_port: false,
        },
    );
}

fn tcp_3_loops_reuse_port(kind: BackendKind) {
    run_case(
        kind,
        Case {
            tcp: true,
            loops: 3,
            lb: LoadBalancing::LeastConnections,
            reuse_port: true,
        },
    );
}

fn unix_1_loop(kind: BackendKind) {
    run_case(
        kind,
        Case {
            tcp: false,
            loops: 1,
            lb: LoadBalancing::RoundRobin,
            reuse_port: false,
        },
    );
}

fn unix_3_loops_round_robin(kind: BackendKind) {
    run_case(
        kind,
        Case {
            tcp: false,
            loops: 3,
            lb: LoadBalancing::RoundRobin,
            reuse_port: false,
        },
    );
}

fn unix_3_loops_least_connections(kind: BackendKind) {
    run_case(
        kind,
        Case {
            tcp: false,
            loops: 3,
            lb: LoadBalancing::LeastConnections,
            reuse_port: false,
        },
    );
}

fn unix_3_loops_source_addr_hash(kind: BackendKind) {
    run_case(
        kind,
        Case {
            tcp: false,
            loops: 3,
            lb: LoadBalancing::SourceAddrHash,
            reuse_port: false,
        },
    );
}

fn unix_3_loops_reuse_port(kind: BackendKind) {
    run_case(
        kind,
        Case {
            tcp: false,
            loops: 3,
            lb: LoadBalancing::RoundRobin,
            reuse_port: true,
        },
    );
}

per_backend!(
    tcp_1_loop,
    tcp_1_loop_reuse_port,
    tcp_3_loops_round_robin,
    tcp_3_loops_least_connections,
    tcp_3_loops_source_addr_hash,
    tcp_3_loops_reuse_port,
    unix_1_loop,
    unix_3_loops_round_robin,
    unix_3_loops_least_connections,
    unix_3_loops_source_addr_hash,
    unix_3_loops_reuse_port,
);
