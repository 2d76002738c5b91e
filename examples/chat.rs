//! A chat server: line-based, with nicknames, every message broadcast to the other clients
//! on every loop, and the number of connections logged by the ticker.
//!
//! ```text
//! cargo run --release --example chat -- --addr tcp://127.0.0.1:9000 --loops 2
//! nc 127.0.0.1 9000     # first line: your nickname; then chat; /who, /quit
//! ```
//!
//! Lines end in `\n` or `\r\n` and are at most 1 KiB (`LineCodec`): a longer one closes that
//! client with the codec's error ("line longer than ..."), nobody else notices. The first
//! line is the client's nickname (1 to 32 bytes of letters, digits, `-` and `_`), after
//! which `* NICK joined` goes to everyone else; every later line goes out as `NICK: line`
//! to every other client with a nickname, on whatever loop it is; `/who` answers with the
//! number of clients online and `/quit` says goodbye and closes. Every `--interval`
//! milliseconds (10 s by default) the ticker logs how many clients are connected. SIGINT or
//! SIGTERM stops it gracefully.
//!
//! Broadcasts reach each loop's clients at that loop's next iteration, so a client that
//! joins at the same moment as another may hear `* other joined` although it came second.

mod common;

use std::time::Duration;

use gnet::codec::LineCodec;
use gnet::{Action, CloseCause, Conn, ConnId, Engine, EventHandler};

/// The longest line a client may send.
const MAX_LINE: usize = 1024;
const MAX_NICK: usize = 32;

/// One client: its line decoder and, once it said it, its nickname.
struct Client {
    lines: LineCodec,
    nick: Option<String>,
}

impl Client {
    fn new() -> Self {
        Client {
            lines: LineCodec::new(MAX_LINE),
            nick: None,
        }
    }
}

struct Chat {
    interval: Duration,
}

/// Sends `text` to every client with a nickname but `from`, on every loop.
fn tell_others(engine: &Engine, from: ConnId, text: String) {
    // Refused only once the engine is stopping; there is nobody to tell then.
    let _ = engine.broadcast_if::<Client>(text, move |p| {
        p.id() != from && p.context().is_some_and(|c| c.nick.is_some())
    });
}

fn valid_nick(nick: &str) -> bool {
    (1..=MAX_NICK).contains(&nick.len())
        && nick
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Chat {
    fn line(&self, c: &mut Conn<'_, Client>, line: &[u8]) -> Action {
        let Ok(line) = std::str::from_utf8(line) else {
            c.write(b"* lines must be UTF-8\n");
            return Action::None;
        };
        let nick = c.context().and_then(|cl| cl.nick.clone());
        match (nick, line) {
            (None, nick) if valid_nick(nick) => {
                let online = c.engine().count_connections();
                c.write(format!("* hello {nick}, {online} online\n").as_bytes());
                tell_others(c.engine(), c.id(), format!("* {nick} joined\n"));
                if let Some(cl) = c.context_mut() {
                    cl.nick = Some(nick.to_string());
                }
            }
            (None, _) => {
                c.write(b"* a nickname is 1 to 32 letters, digits, '-' or '_'; try again\n");
            }
            (Some(_), "/quit") => {
                c.write(b"* bye\n");
                return Action::Close;
            }
            (Some(_), "/who") => {
                let online = c.engine().count_connections();
                c.write(format!("* {online} online\n").as_bytes());
            }
            (Some(nick), text) => {
                tell_others(c.engine(), c.id(), format!("{nick}: {text}\n"));
            }
        }
        Action::None
    }
}

impl EventHandler for Chat {
    type Context = Client;

    fn on_open(&self, c: &mut Conn<'_, Client>) -> Action {
        c.set_context(Client::new());
        c.write(b"* welcome; your nickname?\n");
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, Client>) -> Action {
        c.decode_each(
            |ctx| &mut ctx.get_or_insert_with(Client::new).lines,
            |c, line| self.line(c, line),
        )
    }

    fn on_close(&self, c: &mut Conn<'_, Client>, cause: &CloseCause) -> Action {
        if let CloseCause::Codec(e) = cause {
            log::warn!("chat: closed {}: {e}", c.peer_addr());
        }
        if let Some(nick) = c.context().and_then(|cl| cl.nick.clone()) {
            tell_others(c.engine(), c.id(), format!("* {nick} left\n"));
        }
        Action::None
    }

    fn on_tick(&self, engine: &Engine) -> (Duration, Action) {
        log::info!("chat: {} clients connected", engine.count_connections());
        (self.interval, Action::None)
    }

    fn on_shutdown(&self, _: &Engine) {
        println!("gnet chat: shut down");
    }
}

fn main() {
    common::init_logger();
    let mut args = common::parse(
        "chat",
        "[--interval MS]",
        "tcp://127.0.0.1:9000",
        &["--interval"],
    );
    let mut interval = Duration::from_secs(10);
    for (flag, value) in std::mem::take(&mut args.rest) {
        match flag.as_str() {
            "--interval" => {
                let ms = common::number("chat", &flag, value.as_deref(), "milliseconds");
                interval = Duration::from_millis(ms);
            }
            _ => common::bad_arg("chat", &format!("unknown argument {flag}")),
        }
    }
    args.opts = args.opts.ticker(true);
    common::serve("chat", Chat { interval }, args);
}
