//! Slow work off the loop: each request line goes to a `rayon` thread pool, and the result is
//! written back through the connection's `ConnHandle`, so the loop never blocks.
//!
//! ```text
//! cargo run --release --example blocking -- --addr tcp://127.0.0.1:9000 --loops 2 \
//!     --threads 4 --delay 100
//! ```
//!
//! A request is a number `n` on a line; the work is a sleep of `--delay` milliseconds (100 by
//! default: a database, a disk) and a count of the primes below `n` (at most 10,000,000). The
//! reply is `<seq> <request>: <count> primes below <n>`, or `<seq> <request>: not a number`,
//! where `seq` numbers the requests of the connection from 1 (kept in its context). Replies
//! come back as the pool finishes them, so pipelined requests can be answered out of order;
//! the `seq` says which is which. A reply to a connection that closed meanwhile, or that is
//! past `max_outbound_buffer`, is dropped (`async_write` says so at the call). SIGINT or
//! SIGTERM stops it gracefully.

mod common;

use std::time::Duration;

use gnet::{Action, Conn, Engine, EventHandler};

/// The largest `n` a request may ask about.
const MAX_N: u64 = 10_000_000;

struct Blocking {
    pool: rayon::ThreadPool,
    delay: Duration,
}

impl EventHandler for Blocking {
    /// Requests received so far on the connection.
    type Context = u64;

    fn on_traffic(&self, c: &mut Conn<'_, u64>) -> Action {
        // Whole lines only: a partial one stays buffered until the rest arrives.
        while let Some(end) = c.peek_all().iter().position(|&b| b == b'\n') {
            let line = c.next(end + 1).unwrap_or_default();
            let request = String::from_utf8_lossy(&line[..end]).trim().to_string();
            let seq = {
                let n = c.context_or_default();
                *n += 1;
                *n
            };
            let handle = c.handle();
            let delay = self.delay;
            self.pool.spawn(move || {
                let reply = format!("{seq} {request}: {}\n", work(&request, delay));
                if let Err(e) = handle.async_write(reply) {
                    log::debug!("blocking: reply {seq} dropped: {e}");
                }
            });
        }
        Action::None
    }

    fn on_shutdown(&self, _: &Engine) {
        println!("gnet blocking: shut down");
    }
}

/// The slow part, on a pool thread.
fn work(request: &str, delay: Duration) -> String {
    std::thread::sleep(delay);
    match request.parse::<u64>() {
        Ok(n) if n <= MAX_N => format!("{} primes below {n}", primes_below(n)),
        Ok(_) => format!("at most {MAX_N}"),
        Err(_) => "not a number".to_string(),
    }
}

/// Sieve of Eratosthenes.
fn primes_below(n: u64) -> usize {
    let n = n as usize;
    if n < 3 {
        return 0;
    }
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            for j in (i * i..n).step_by(i) {
                composite[j] = true;
            }
        }
    }
    count
}

fn main() {
    common::init_logger();
    let mut args = common::parse(
        "blocking",
        "[--threads N] [--delay MS]",
        "tcp://127.0.0.1:9000",
        &["--threads", "--delay"],
    );
    let (mut threads, mut delay) = (4, Duration::from_millis(100));
    for (flag, value) in std::mem::take(&mut args.rest) {
        let value = value.as_deref();
        match flag.as_str() {
            "--threads" => threads = common::number("blocking", &flag, value, "a count"),
            "--delay" => {
                let ms = common::number("blocking", &flag, value, "milliseconds");
                delay = Duration::from_millis(ms);
            }
            _ => common::bad_arg("blocking", &format!("unknown argument {flag}")),
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("blocking-worker-{i}"))
        .build()
        .unwrap_or_else(|e| {
            eprintln!("blocking: {e}");
            std::process::exit(1)
        });
    common::serve("blocking", Blocking { pool, delay }, args);
}
