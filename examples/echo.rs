//! An echo server: every byte received is sent back.
//!
//! ```text
//! cargo run --release --example echo -- --addr tcp://127.0.0.1:9000 --loops 1
//! ```
//!
//! Options: `--addr URL` (repeatable), `--loops N`, `--backend auto|uring|epoll|stdnet`,
//! `--read-buffer BYTES`, `--ring-buffers N` and `--no-recv-bundles` (io_uring),
//! `--direct-write-min BYTES|off`, `--reuseport`, `--pin`, `--lb rr|least|hash`. The first line printed names the backend in
//! use and the bound address(es).
//!
//! SIGINT or SIGTERM stops it gracefully (`Options::stop_on_signals`): every connection is
//! flushed and closed in order, `gnet echo: shut down` is printed, and it exits with status
//! 0; a second signal ends it at once. Log lines go to stderr, at `info` unless `RUST_LOG`
//! says otherwise.

use std::io::Write;

use gnet::{
    Action, BackendChoice, BackendKind, Conn, Engine, EventHandler, LoadBalancing, Options,
};

struct Echo;

impl EventHandler for Echo {
    type Context = ();

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let data = c.next_all();
        c.write(data);
        Action::None
    }

    fn on_shutdown(&self, _engine: &Engine) {
        println!("gnet echo: shut down");
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("echo: {msg}");
    eprintln!(
        "usage: echo [--addr tcp://127.0.0.1:9000]... [--loops N] \
         [--backend auto|uring|epoll|stdnet] [--read-buffer BYTES] [--ring-buffers N] [--no-recv-bundles] [--direct-write-min BYTES|off] \
         [--reuseport] [--pin] [--lb rr|least|hash]"
    );
    std::process::exit(2)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut addrs: Vec<String> = Vec::new();
    // A build without the `signal` feature stops on the signals' default action instead.
    let mut opts = Options::new().stop_on_signals(cfg!(feature = "signal"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--addr" => addrs.push(val()),
            "--loops" => {
                let n = val()
                    .parse()
                    .unwrap_or_else(|_| usage("--loops takes a number"));
                opts = opts.loops(n);
            }
            "--backend" => {
                let v = val();
                opts = if v == "auto" {
                    opts.backend(BackendChoice::Auto)
                } else {
                    let k = BackendKind::parse(&v).unwrap_or_else(|| usage("unknown backend"));
                    opts.backend(BackendChoice::Only(k))
                };
            }
            "--read-buffer" => {
                let n = val()
                    .parse()
                    .unwrap_or_else(|_| usage("--read-buffer takes a size in bytes"));
                opts = opts.read_buffer_size(n);
            }
            "--ring-buffers" => {
                let n = val()
                    .parse()
                    .unwrap_or_else(|_| usage("--ring-buffers takes a count"));
                opts = opts.ring_buffers(n);
            }
            "--direct-write-min" => {
                let v = val();
                let min = if v == "off" {
                    None
                } else {
                    Some(v.parse().unwrap_or_else(|_| {
                        usage("--direct-write-min takes a size in bytes or off")
                    }))
                };
                opts = opts.direct_write_min(min);
            }
            "--no-recv-bundles" => opts = opts.recv_bundles(false),
            "--reuseport" => opts = opts.reuse_port(true),
            "--pin" => opts = opts.pin_cores(true),
            "--lb" => {
                let lb = match val().as_str() {
                    "rr" => LoadBalancing::RoundRobin,
                    "least" => LoadBalancing::LeastConnections,
                    "hash" => LoadBalancing::SourceAddrHash,
                    _ => usage("--lb takes rr, least or hash"),
                };
                opts = opts.load_balancing(lb);
            }
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if addrs.is_empty() {
        addrs.push("tcp://127.0.0.1:9000".into());
    }
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let running = match gnet::start(Echo, &refs, opts) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(1);
        }
    };
    let engine = running.engine();
    let bound: Vec<String> = engine.addrs().iter().map(|a| a.to_string()).collect();
    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "gnet echo: backend={} addr={} loops={}",
        engine.backend(),
        bound.join(","),
        engine.num_loops()
    );
    if let Some(why) = engine.fallback_reason() {
        let _ = write!(out, " fallback=\"{why}\"");
    }
    let _ = writeln!(out);
    let _ = out.flush();
    drop(out);
    if let Err(e) = running.wait() {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}
