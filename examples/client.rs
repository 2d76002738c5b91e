//! A load-checking client: dials `--conns` connections to an echo server (`tcp://`, `unix://`
//! or `udp://`), sends `--msgs` messages of `--size` bytes on each, one at a time, checks
//! every reply byte for byte, and exits with status 0 when all came back, 1 on any error.
//!
//! ```text
//! cargo run --release --example client -- --addr tcp://127.0.0.1:9000 --conns 100 --msgs 1000
//! ```
//!
//! It is a gnet client engine (`gnet::client`, `Engine::dial`): the dials do not block, and a
//! refused or timed-out dial is an error. `--timeout SECS` (default 60) bounds the whole run.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use gnet::{Action, CloseCause, Conn, DialError, Engine, EventHandler};

/// One connection's progress.
struct Progress {
    conn: usize,
    sent: usize,
    /// Bytes of the current reply received so far.
    got: Vec<u8>,
}

struct Client {
    msgs: usize,
    size: usize,
    datagrams: bool,
    done: AtomicUsize,
    report: Mutex<mpsc::Sender<Result<(), String>>>,
}

/// The `i`-th message of connection `conn`: deterministic, different everywhere.
fn message(conn: usize, i: usize, size: usize) -> Vec<u8> {
    let mut x = (conn as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Client {
    fn tell(&self, r: Result<(), String>) {
        let _ = self.report.lock().unwrap().send(r);
    }

    fn send_next(&self, c: &mut Conn<'_, Progress>) {
        let Some(p) = c.context_mut() else { return };
        let msg = message(p.conn, p.sent, self.size);
        p.sent += 1;
        c.write(&msg);
    }
}

impl EventHandler for Client {
    type Context = Progress;

    fn on_open(&self, c: &mut Conn<'_, Progress>) -> Action {
        if self.msgs == 0 {
            self.tell(Ok(()));
            return Action::Close;
        }
        self.send_next(c);
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, Progress>) -> Action {
        let data = c.next_all().to_vec();
        let size = self.size;
        let Some(p) = c.context_mut() else {
            return Action::Close;
        };
        p.got.extend_from_slice(&data);
        if self.datagrams && p.got.len() != size {
            self.tell(Err(format!(
                "connection {}: a datagram of {} bytes, expected {size}",
                p.conn,
                p.got.len()
            )));
            return Action::Close;
        }
        if p.got.len() < size {
            return Action::None;
        }
        let want = message(p.conn, p.sent - 1, size);
        if p.got[..size] != want[..] || p.got.len() > size {
            self.tell(Err(format!(
                "connection {}: reply {} differs from what was sent",
                p.conn,
                p.sent - 1
            )));
            return Action::Close;
        }
        p.got.clear();
        if p.sent == self.msgs {
            self.done.fetch_add(1, Ordering::SeqCst);
            self.tell(Ok(()));
            return Action::Close;
        }
        self.send_next(c);
        Action::None
    }

    fn on_close(&self, c: &mut Conn<'_, Progress>, cause: &CloseCause) -> Action {
        if let Some(p) = c.context() {
            if p.sent < self.msgs || !p.got.is_empty() {
                self.tell(Err(format!(
                    "connection {} closed after {} of {} messages: {cause}",
                    p.conn, p.sent, self.msgs
                )));
            }
        }
        Action::None
    }

    fn on_dial_error(&self, _: &Engine, f: DialError<Progress>) {
        self.tell(Err(format!("dial {}: {}", f.addr, f.error)));
    }
}

fn number(flag: &str, v: &Option<String>) -> usize {
    v.as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("client: {flag} takes a number");
            std::process::exit(2)
        })
}

fn main() {
    common::init_logger();
    let args = common::parse(
        "client",
        "[--conns N] [--msgs M] [--size BYTES] [--timeout SECS]",
        "tcp://127.0.0.1:9000",
        &["--conns", "--msgs", "--size", "--timeout"],
    );
    let (mut conns, mut msgs, mut size, mut timeout) = (1, 100, 64, 60);
    for (flag, v) in &args.rest {
        match flag.as_str() {
            "--conns" => conns = number(flag, v),
            "--msgs" => msgs = number(flag, v),
            "--size" => size = number(flag, v).max(1),
            "--timeout" => timeout = number(flag, v),
            other => {
                eprintln!("client: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let target = args.addrs[0].clone();
    let (tx, rx) = mpsc::channel();
    let handler = Client {
        msgs,
        size,
        datagrams: target.starts_with("udp"),
        done: AtomicUsize::new(0),
        report: Mutex::new(tx),
    };
    let running = match gnet::client(handler, args.opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("client: {e}");
            std::process::exit(1);
        }
    };
    let engine = running.engine().clone();
    println!(
        "gnet client: backend={} addr={target} loops={} conns={conns} msgs={msgs} size={size}",
        engine.backend(),
        engine.num_loops()
    );
    let start = Instant::now();
    for conn in 0..conns {
        let progress = Progress {
            conn,
            sent: 0,
            got: Vec::new(),
        };
        if let Err(e) = engine.dial(&target, Some(progress)) {
            eprintln!("client: {e}");
            std::process::exit(1);
        }
    }
    let deadline = start + Duration::from_secs(timeout as u64);
    let mut finished = 0;
    let mut failure = None;
    while finished < conns && failure.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(())) => finished += 1,
            Ok(Err(e)) => failure = Some(e),
            Err(_) => {
                failure = Some(format!(
                    "{finished} of {conns} connections done after {timeout} s"
                ))
            }
        }
    }
    let elapsed = start.elapsed();
    let _ = running.stop();
    match failure {
        None => {
            let total = conns * msgs;
            println!(
                "gnet client: {total} messages on {conns} connections checked in {:.2} s ({:.0} msg/s)",
                elapsed.as_secs_f64(),
                total as f64 / elapsed.as_secs_f64()
            );
        }
        Some(e) => {
            eprintln!("client: {e}");
            std::process::exit(1);
        }
    }
}
