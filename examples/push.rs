//! A push server: the ticker writes a line with a counter to every connection, on every loop.
//!
//! ```text
//! cargo run --release --example push -- --addr tcp://127.0.0.1:9000 --loops 2 --interval 1000
//! ```
//!
//! Every `--interval` milliseconds (1000 by default) `on_tick`, on loop 0, calls
//! `Engine::broadcast_if`: each loop writes `push <n>\n` to its own connections at its next
//! iteration, with no lock and no table of handles. A client that stopped reading is skipped
//! once it has 64 KiB queued, so it costs at most that, and resumes when it catches up.
//! Input is ignored. SIGINT or SIGTERM stops it gracefully.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gnet::{Action, Conn, Engine, EventHandler};

/// Past this many bytes queued for a connection, ticks are not written to it.
const SLOW_READER: usize = 64 * 1024;

struct Push {
    interval: Duration,
    ticks: AtomicU64,
}

impl EventHandler for Push {
    type Context = ();

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        c.discard(usize::MAX);
        Action::None
    }

    fn on_tick(&self, engine: &Engine) -> (Duration, Action) {
        let n = self.ticks.fetch_add(1, Ordering::Relaxed);
        let line = format!("push {n}\n");
        // Refused only once the engine stops.
        let _ = engine.broadcast_if::<()>(line, |p| p.outbound_buffered() < SLOW_READER);
        (self.interval, Action::None)
    }

    fn on_shutdown(&self, _: &Engine) {
        println!("gnet push: shut down");
    }
}

fn main() {
    common::init_logger();
    let mut args = common::parse(
        "push",
        "[--interval MS]",
        "tcp://127.0.0.1:9000",
        &["--interval"],
    );
    let mut interval = Duration::from_secs(1);
    for (flag, value) in std::mem::take(&mut args.rest) {
        match flag.as_str() {
            "--interval" => {
                let ms = common::number("push", &flag, value.as_deref(), "milliseconds");
                interval = Duration::from_millis(ms);
            }
            _ => common::bad_arg("push", &format!("unknown argument {flag}")),
        }
    }
    args.opts = args.opts.ticker(true);
    let push = Push {
        interval,
        ticks: AtomicU64::new(0),
    };
    common::serve("push", push, args);
}
