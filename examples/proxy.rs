//! A TCP proxy: every client connection gets a back-end connection to `--upstream`, dialed
//! onto the client connection's own loop (`Conn::dial`), and the two relay to each other with
//! `Conn::write_to`, without a cross-thread hop.
//!
//! ```text
//! cargo run --release --example proxy -- --addr tcp://127.0.0.1:9001 --upstream tcp://127.0.0.1:9000 --loops 2
//! ```
//!
//! Bytes a client sends before its back-end is connected wait in the back-end's queue. When
//! either side closes, so does the other. SIGINT or SIGTERM stops it gracefully.

mod common;

use gnet::{Action, CloseCause, Conn, ConnId, DialError, Engine, EventHandler};

/// Which half of a proxied pair a connection is.
enum Half {
    Front { back: ConnId },
    Back { front: ConnId },
}

struct Proxy {
    upstream: String,
}

impl Proxy {
    fn other(c: &Conn<'_, Half>) -> Option<ConnId> {
        match c.context()? {
            Half::Front { back } => Some(*back),
            Half::Back { front } => Some(*front),
        }
    }
}

impl EventHandler for Proxy {
    type Context = Half;

    fn on_open(&self, c: &mut Conn<'_, Half>) -> Action {
        if c.context().is_some() {
            return Action::None; // a back-end, dialed by its front
        }
        let front = c.id();
        match c.dial(&self.upstream, Some(Half::Back { front })) {
            Ok(back) => {
                c.set_context(Half::Front { back });
                Action::None
            }
            Err(e) => {
                log::warn!("proxy: cannot dial {}: {e}", self.upstream);
                Action::Close
            }
        }
    }

    fn on_traffic(&self, c: &mut Conn<'_, Half>) -> Action {
        let Some(other) = Self::other(c) else {
            return Action::None;
        };
        let d = c.next_all().to_vec();
        if c.write_to(other, &d).is_err() {
            return Action::Close;
        }
        Action::None
    }

    fn on_close(&self, c: &mut Conn<'_, Half>, _: &CloseCause) -> Action {
        if let Some(other) = Self::other(c) {
            let _ = c.close_conn(other);
        }
        Action::None
    }

    fn on_dial_error(&self, _: &Engine, f: DialError<Half>) {
        log::warn!("proxy: upstream {} unreachable: {}", f.addr, f.error);
        // The front-end that waited for it has nothing to talk to; it closes when its client
        // sends or leaves (a `ConnHandle` kept in the context could close it at once).
    }

    fn on_shutdown(&self, _: &Engine) {
        println!("gnet proxy: shut down");
    }
}

fn main() {
    common::init_logger();
    let args = common::parse(
        "proxy",
        "--upstream tcp://HOST:PORT",
        "tcp://127.0.0.1:9001",
        &["--upstream"],
    );
    let mut upstream = None;
    for (flag, value) in &args.rest {
        match flag.as_str() {
            "--upstream" => upstream = value.clone(),
            other => {
                eprintln!("proxy: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let Some(upstream) = upstream else {
        eprintln!("proxy: --upstream tcp://HOST:PORT is required");
        std::process::exit(2);
    };
    common::serve("proxy", Proxy { upstream }, args);
}
