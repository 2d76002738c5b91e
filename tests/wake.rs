//! Waking an idle loop from other threads, on every backend: concurrent wake-ups must never be
//! lost (a lost one would leave cross-thread writes and `Engine::stop` unseen by an idle loop),
//! and a stop made before the loops have started must still be seen.

mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::Duration;

use gnet::{Action, BackendKind, Bytes, Conn, ConnHandle, Engine, EventHandler};
use util::{opts, Server};

struct Keep(Mutex<mpsc::Sender<ConnHandle>>);

impl EventHandler for Keep {
    type Context = ();

    fn on_open(&self, c: &mut Conn<'_, ()>) -> Action {
        let _ = self.0.lock().unwrap().send(c.handle());
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        c.next_all();
        Action::None
    }
}

const ROUNDS: usize = 200;
const THREADS: usize = 8;

/// Round after round, the loop goes idle, then eight threads hand it work at the same moment;
/// every piece must be done promptly.
fn concurrent_wakes_of_an_idle_loop_are_never_lost(kind: BackendKind) {
    let (tx, rx) = mpsc::channel();
    let server = Server::start(Keep(Mutex::new(tx)), &[util::TCP], opts(kind));
    let mut client = server.connect(0);
    let h = rx.recv_timeout(util::WAIT_TIMEOUT).expect("on_open");
    let mut rng = util::Rng::new(7);
    let mut expected = 0;
    for round in 0..ROUNDS {
        // Let the loop fall asleep in its poll (or not quite: the moment varies).
        std::thread::sleep(Duration::from_micros(rng.range(0, 2000) as u64));
        let done = Arc::new(AtomicUsize::new(0));
        let (dtx, drx) = mpsc::channel();
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (h, done, dtx, barrier) =
                    (h.clone(), done.clone(), dtx.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    if t % 2 == 0 {
                        h.wake().expect("wake");
                    }
                    h.async_write_with(Bytes::from_static(b"x"), move |r| {
                        r.expect("the write");
                        if done.fetch_add(1, Ordering::SeqCst) + 1 == THREADS {
                            let _ = dtx.send(());
                        }
                    })
                    .expect("async write");
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| {
                panic!(
                "{kind}: round {round}: {} of {THREADS} writes done after 5 s: a wake-up was lost",
                done.load(Ordering::SeqCst)
            )
            });
        expected += THREADS;
    }
    client.expect(&vec![b'x'; expected]);
    // And a stop from another thread reaches the idle loop.
    std::thread::sleep(Duration::from_millis(5));
    let engine = server.engine.clone();
    std::thread::spawn(move || engine.stop().expect("stop"))
        .join()
        .unwrap();
    server.wait().expect("engine result");
}

/// Stops the engine from `on_boot`, before a loop runs (and before their wakers exist), and
/// says it is fine to go on.
struct StopInBoot;

impl EventHandler for StopInBoot {
    type Context = ();

    fn on_boot(&self, engine: &Engine) -> Action {
        engine.stop().expect("the first stop");
        Action::None
    }

    fn on_traffic(&self, _: &mut Conn<'_, ()>) -> Action {
        Action::None
    }
}

fn a_stop_before_the_loops_run_is_seen(kind: BackendKind) {
    for loops in [1, 2] {
        let server = Server::start(StopInBoot, &[util::TCP], opts(kind).loops(loops));
        server.wait().expect("the engine stops by itself");
    }
}

per_backend!(
    concurrent_wakes_of_an_idle_loop_are_never_lost,
    a_stop_before_the_loops_run_is_seen,
);
