//! A load generator for echo servers, built to stay out of the way of the server it drives.
//!
//! ```text
//! cargo run --release -p gnet-bench --bin loadgen -- --addr tcp://127.0.0.1:9000 --conns 1000 \
//!     --size 512 --pipeline 16 --duration 5 --server-pid "$(pidof echo)"
//! ```
//!
//! One thread, one `mio` poll, no per-message allocation: each connection writes the bytes
//! it may send straight from a shared scratch buffer and checks every echoed byte against
//! the deterministic payload (see `loadgen/payload.rs`). A mismatch stops the run with exit
//! code 2 and names the connection, the message and the offset.
//!
//! * Closed loop (default): each connection keeps `--pipeline` messages in flight, so the
//!   server runs at saturation; latency is from write to full echo.
//! * Open loop (`--rate M`): messages go out in bursts of `--pipeline` D; burst `k` is due
//!   at `k * D / M` seconds and goes to connection `k mod conns`. Latency counts from the
//!   due time, so a stalled server is charged for the messages it delayed (no coordinated
//!   omission). D also caps what each connection has in flight; due messages beyond it
//!   wait, and their wait is counted.
//! * Idle (`--idle`): open the connections, echo once on each, keep them quiet for
//!   `--duration` and report how much the server's RSS grew per connection.
//!
//! With `--server-pid` the server's CPU time over the window is divided by the messages in
//! it; with `--server-core` the busy time of the core it is pinned to, too. The client's own reads, writes and polls per message are reported too: when the
//! client is the bottleneck (its CPU near 100%), they show whether a server's reply pattern
//! (split replies, small bursts) is what costs it. `--json` prints one line for harnesses (`cargo bench --bench echo` reads it).

use std::process::ExitCode;
use std::time::Instant;

#[path = "loadgen/args.rs"]
mod args;
#[path = "loadgen/conn.rs"]
mod conn;
#[path = "loadgen/driver.rs"]
mod driver;
#[path = "loadgen/histogram.rs"]
mod histogram;
#[path = "loadgen/payload.rs"]
mod payload;
#[path = "loadgen/procfs.rs"]
mod procfs;
#[path = "loadgen/report.rs"]
mod report;
#[path = "loadgen/udp.rs"]
mod udp;

use driver::{Driver, Fatal};
use report::Report;

fn fail(fatal: Fatal) -> ExitCode {
    match fatal {
        Fatal::Mismatch(m) => {
            eprintln!("loadgen: ECHO MISMATCH: {m}");
            ExitCode::from(2)
        }
        Fatal::Setup(m) => {
            eprintln!("loadgen: {m}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("loadgen: {msg}");
            }
            eprint!("{}", args::USAGE);
            return ExitCode::from(if msg.is_empty() { 0 } else { 64 });
        }
    };
    match procfs::raise_nofile_limit() {
        Ok(limit) if limit < args.conns as u64 + 64 => eprintln!(
            "loadgen: warning: the descriptor limit ({limit}) is below --conns {} plus slack",
            args.conns
        ),
        Ok(_) => {}
        Err(e) => eprintln!("loadgen: warning: cannot read or raise RLIMIT_NOFILE: {e}"),
    }
    let pid = args.server_pid.map(|p| p.to_string());
    let mut report = Report {
        mode: if args.idle {
            "idle"
        } else if args.rate.is_some() {
            "rate"
        } else {
            "saturation"
        },
        addr: format!("{}://{}", if args.udp { "udp" } else { "tcp" }, args.addr),
        conns: args.conns,
        size: args.size,
        pipeline: args.pipeline,
        rate: args.rate,
        ..Report::default()
    };
    let rss = |pid: &Option<String>| pid.as_deref().and_then(|p| procfs::vm_rss_bytes(p).ok());
    if args.idle {
        report.rss_before = rss(&pid);
    }
    let warmup = (args.warmup, args.warmup_msgs);
    let live = if args.udp {
        let mut driver = match udp::UdpDriver::new(
            args.addr,
            args.conns,
            args.size,
            args.pipeline,
            args.loss_timeout,
        ) {
            Ok(d) => d,
            Err(e) => return fail(Fatal::Setup(format!("cannot create the poller: {e}"))),
        };
        let started = Instant::now();
        if let Err(f) = driver.open_all(args.connect_timeout) {
            return fail(f);
        }
        report.connect_secs = started.elapsed().as_secs_f64();
        let window = driver.run_load(
            args.rate,
            warmup,
            args.duration,
            pid.as_deref(),
            args.server_core,
        );
        match window {
            Ok(w) => report.add_window(&w, args.server_core),
            Err(f) => return fail(f),
        }
        report.lost = Some((driver.window_lost, driver.lost, driver.late));
        report.errors = driver.errors;
        report.last_error = driver.last_error.clone();
        driver.live_conns()
    } else {
        let mut driver = match Driver::new(args.addr, args.conns, args.size, args.pipeline) {
            Ok(d) => d,
            Err(e) => return fail(Fatal::Setup(format!("cannot create the poller: {e}"))),
        };
        let started = Instant::now();
        if let Err(f) = driver.open_all(args.connect_concurrency, args.connect_timeout) {
            return fail(f);
        }
        report.connect_secs = started.elapsed().as_secs_f64();
        if args.idle {
            if let Err(f) = driver.hold_idle(args.duration) {
                return fail(f);
            }
            report.rss_after = rss(&pid);
        } else {
            match driver.run_load(
                args.rate,
                warmup,
                args.duration,
                pid.as_deref(),
                args.server_core,
            ) {
                Ok(w) => report.add_window(&w, args.server_core),
                Err(f) => return fail(f),
            }
        }
        report.errors = driver.errors;
        report.connect_retries = driver.connect_retries;
        report.last_error = driver.last_error.clone();
        let live = driver.live_conns();
        driver.close_all();
        live
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if live == 0 {
        eprintln!("loadgen: every connection failed");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
