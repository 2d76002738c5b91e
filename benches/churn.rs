//! `cargo bench --bench churn [-- --secs S --rounds N --clients C --backends uring,epoll]`:
//! connection churn, the cost of accepting.
//!
//! Each run starts a gnet echo server in this process, its one loop pinned to core 0, and
//! `C` client threads pinned to core 1. A client connects, writes 16 bytes, reads them back
//! and closes, over and over, for `S` seconds; the run reports connections per second (each
//! one accepted, registered, echoed once and closed by the server). Rounds alternate the
//! backends (A B A B ...) so that drift affects them alike; the summary gives the median and
//! range per backend and each backend's median against the first one's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gnet::{Action, BackendChoice, BackendKind, Conn, EventHandler, ListenAddr, Options};

struct Echo;

impl EventHandler for Echo {
    type Context = ();

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        c.write(d);
        Action::None
    }
}

struct Args {
    secs: f64,
    rounds: usize,
    clients: usize,
    backends: Vec<BackendKind>,
}

fn parse() -> Args {
    let mut a = Args {
        secs: 3.0,
        rounds: 3,
        clients: 4,
        backends: gnet::compiled_backends(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--secs" => a.secs = value().parse().expect("--secs takes seconds"),
            "--rounds" => a.rounds = value().parse().expect("--rounds takes a count"),
            "--clients" => a.clients = value().parse().expect("--clients takes a count"),
            "--backends" => {
                a.backends = value()
                    .split(',')
                    .map(|b| BackendKind::parse(b).unwrap_or_else(|| panic!("backend {b}?")))
                    .collect()
            }
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Connections per second against one fresh server of `kind`.
fn run(kind: BackendKind, args: &Args) -> f64 {
    let opts = Options::new()
        .backend(BackendChoice::Only(kind))
        .honour_env(false)
        .pin_cores(true);
    let running = gnet::start(Echo, &["tcp://127.0.0.1:0"], opts)
        .expect("the server starts")
        .expect("not stopped in on_boot");
    let ListenAddr::Tcp(addr) = running.engine().addrs()[0].clone() else {
        unreachable!("a tcp address")
    };
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..args.clients)
        .map(|_| {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || client(addr, &stop, &done))
        })
        .collect();
    // Warm up, then measure the window.
    std::thread::sleep(Duration::from_millis(300));
    let (start_count, start) = (done.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(args.secs));
    let count = done.load(Ordering::Relaxed) - start_count;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    running.stop().expect("the server stops");
    count as f64 / elapsed
}

fn client(addr: SocketAddr, stop: &AtomicBool, done: &AtomicU64) {
    if let Err(e) = gnet_backends::pin_current_thread(1) {
        eprintln!("churn: pinning a client to core 1 failed: {e}");
    }
    let msg = [0x42u8; 16];
    let mut back = [0u8; 16];
    while !stop.load(Ordering::Relaxed) {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&msg).expect("write");
        s.read_exact(&mut back).expect("read the echo");
        assert_eq!(back, msg, "echo differs");
        done.fetch_add(1, Ordering::Relaxed);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = parse();
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); args.backends.len()];
    for round in 0..args.rounds {
        for (i, &kind) in args.backends.iter().enumerate() {
            let rate = run(kind, &args);
            println!("round {round} {kind:>6}: {rate:>9.0} connections/s");
            results[i].push(rate);
        }
    }
    println!(
        "\nbackend  median conn/s  (min - max)  vs {}",
        args.backends[0]
    );
    let mut first = None;
    for (kind, rates) in args.backends.iter().zip(results.iter_mut()) {
        let (lo, hi) = (
            rates.iter().copied().fold(f64::MAX, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
        );
        let m = median(rates);
        let base = *first.get_or_insert(m);
        println!("{kind:>7}  {m:>13.0}  ({lo:.0} - {hi:.0})  {:.3}", m / base);
    }
}
