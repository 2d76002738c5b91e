//! A flood of cross-thread writes, on every backend: eight threads writing 16-byte messages
//! as fast as they can to 100 connections whose peers do not read. Memory must stay bounded
//! (the writes are refused at the call once a connection or the loop is full), the refusals
//! must be visible without a callback, and an unrelated connection must keep its echo latency.
//!
//! Before, `ConnHandle::async_write` pushed into an unbounded queue and checked the outbound
//! limit only when the loop got to the task: the server grew to gigabytes and a probe
//! connection waited seconds for its echo.
#![cfg(target_os = "linux")]

mod util;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gnet::{Action, BackendKind, Bytes, Conn, ConnHandle, Error, EventHandler};
use util::{opts, Client, Server};

/// The tests measure the process's memory: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const TARGETS: usize = 100;
const THREADS: usize = 8;
const FLOOD: Duration = Duration::from_millis(1500);
/// Growth of the resident set the flood may cause: 100 connections × 64 KiB of outbound
/// queue, the loop's 16 MiB backlog, and the allocator's slack, with room to spare.
const RSS_BOUND: u64 = 160 << 20;

struct Collect(Arc<Mutex<Vec<ConnHandle>>>);

impl EventHandler for Collect {
    type Context = ();

    fn on_open(&self, c: &mut Conn<'_, ()>) -> Action {
        self.0.lock().unwrap().push(c.handle());
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        c.write(d);
        Action::None
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

fn async_write_flood_stays_bounded(kind: BackendKind) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let handles = Arc::new(Mutex::new(Vec::new()));
    let o = opts(kind)
        .max_outbound_buffer(64 * 1024)
        .max_loop_backlog(16 << 20)
        .socket_send_buffer(16 * 1024);
    let server = Server::start(Collect(handles.clone()), &[util::TCP], o);
    let targets: Vec<Client> = (0..TARGETS)
        .map(|_| Client::connect_tcp_small_rcvbuf(&server.addr(0), 16 * 1024))
        .collect();
    let mut probe = server.connect(0);
    util::wait_until("every connection open", || {
        handles.lock().unwrap().len() == TARGETS + 1
    });
    // The probe is the last one opened: flood the others.
    let flooded: Vec<ConnHandle> = handles.lock().unwrap()[..TARGETS].to_vec();
    let base = rss_bytes();
    let (stop, too_big) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let peak = Arc::new(AtomicUsize::new(0));
    let monitor = {
        let (stop, too_big, peak) = (stop.clone(), too_big.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let grown = rss_bytes().saturating_sub(base);
                peak.fetch_max(grown as usize, Ordering::Relaxed);
                if grown > 4 * RSS_BOUND {
                    // Unbounded: stop before the machine runs out of memory.
                    too_big.store(true, Ordering::Relaxed);
                    stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (flooded, stop) = (flooded.clone(), stop.clone());
            let (accepted, refused) = (accepted.clone(), refused.clone());
            std::thread::spawn(move || {
                let msg = Bytes::from_static(b"0123456789abcdef");
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    match flooded[i % TARGETS].async_write(msg.clone()) {
                        Ok(()) => accepted.fetch_add(1, Ordering::Relaxed),
                        Err(Error::OutboundFull { .. }) => refused.fetch_add(1, Ordering::Relaxed),
                        Err(e) => panic!("unexpected refusal: {e}"),
                    };
                    i += THREADS;
                }
            })
        })
        .collect();
    // Meanwhile the probe echoes, and must not wait long.
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    while start.elapsed() < FLOOD && !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        probe.write_all(b"probe").unwrap();
        probe.expect(b"probe");
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("a writer thread");
    }
    monitor.join().unwrap();
    let peak = peak.load(Ordering::Relaxed) as u64;
    assert!(
        !too_big.load(Ordering::Relaxed) && peak < RSS_BOUND,
        "{kind}: the flood grew the process by {} MiB (bound {} MiB)",
        peak >> 20,
        RSS_BOUND >> 20
    );
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "{kind}: {} writes accepted, none refused: the bound never applied",
        accepted.load(Ordering::Relaxed)
    );
    assert!(
        worst < Duration::from_secs(1),
        "{kind}: the probe waited {worst:?} for its echo"
    );
    drop(targets);
    server.stop().expect("engine result");
}

per_backend!(async_write_flood_stays_bounded);
