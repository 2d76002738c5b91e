//! An echo server on a Unix-domain stream socket.
//!
//! ```text
//! cargo run --release --example unix_echo -- --addr unix:///tmp/gnet-echo.sock --loops 1
//! ```
//!
//! The socket file is created at start (a stale one left by a crashed server is replaced, a
//! live one refused) and removed at a graceful stop (SIGINT or SIGTERM).

mod common;

use gnet::{Action, Conn, Engine, EventHandler};

struct Echo;

impl EventHandler for Echo {
    type Context = ();

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        c.write(d);
        Action::None
    }

    fn on_shutdown(&self, _: &Engine) {
        println!("gnet unix_echo: shut down");
    }
}

fn main() {
    common::init_logger();
    let default = format!(
        "unix://{}",
        std::env::temp_dir().join("gnet-echo.sock").display()
    );
    let args = common::parse("unix_echo", "", &default, &[]);
    if let Some((flag, _)) = args.rest.first() {
        eprintln!("unix_echo: unknown argument {flag}");
        std::process::exit(2);
    }
    common::serve("unix_echo", Echo, args);
}
