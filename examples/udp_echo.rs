//! A UDP echo server: every datagram goes back to its sender, whole.
//!
//! ```text
//! cargo run --release --example udp_echo -- --addr udp://127.0.0.1:9000 --loops 2
//! ```
//!
//! Every loop binds its own socket to the address (`SO_REUSEPORT`) and the kernel spreads the
//! datagrams over them. SIGINT or SIGTERM stops it gracefully.

mod common;

use gnet::{Action, Conn, Engine, EventHandler};

struct UdpEcho;

impl EventHandler for UdpEcho {
    type Context = ();

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        // One datagram per call; one `write` is one datagram back to its sender.
        let d = c.next_all();
        c.write(d);
        Action::None
    }

    fn on_shutdown(&self, _: &Engine) {
        println!("gnet udp_echo: shut down");
    }
}

fn main() {
    common::init_logger();
    let args = common::parse("udp_echo", "", "udp://127.0.0.1:9000", &[]);
    if let Some((flag, _)) = args.rest.first() {
        eprintln!("udp_echo: unknown argument {flag}");
        std::process::exit(2);
    }
    common::serve("udp_echo", UdpEcho, args);
}
