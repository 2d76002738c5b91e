//! A length-field protocol server, and (`--client`) the client that checks it.
//!
//! Every frame is a 4-byte big-endian length, then that many bytes of body (at most
//! `MAX_BODY`). The server answers each frame with a frame holding the body reversed,
//! written in place into the outbound queue; a malformed frame (too long) closes that
//! connection only, with `CloseCause::Codec`.
//!
//! ```text
//! cargo run --release --example codec -- --addr tcp://127.0.0.1:9000
//! cargo run --release --example codec -- --client --addr tcp://127.0.0.1:9000 --conns 8 --frames 2000
//! ```
//!
//! The client is a gnet client engine that decodes the replies with the same codec. It sends
//! bursts of frames of many sizes (empty, one byte, small, MTU-sized, up to 256 KiB) in one
//! write each, checks every reply, and exits with status 1 on any error, 0 when all came
//! back. Both take `--addr URL`, `--loops N`, `--backend auto|uring|epoll|stdnet`; the client
//! also `--conns N`, `--frames M` (per connection), `--timeout SECS`. The first line printed
//! names the backend and the address. SIGINT or SIGTERM stops the server gracefully.

mod common;

use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use gnet::codec::{CodecError, FieldWidth, LengthFieldCodec};
use gnet::{Action, CloseCause, Conn, DialError, Engine, EventHandler};

/// The largest body: 1 MiB.
const MAX_BODY: usize = 1 << 20;
/// Frames sent in one write by the client.
const BURST: usize = 16;

/// The protocol's codec: a 4-byte length of the body, stripped on decoding.
fn codec() -> LengthFieldCodec {
    LengthFieldCodec::builder(FieldWidth::Four, 4 + MAX_BODY)
        .strip(4)
        .build()
        .expect("a valid codec")
}

/// Writes a frame holding `body` reversed, in place.
fn reply_reversed(c: &mut Conn<'_, impl Sized>, body: &[u8]) {
    let r = c.write_with(|w| {
        w.reserve(4 + body.len());
        w.extend_from_slice(&(body.len() as u32).to_be_bytes());
        for chunk in body.rchunks(4096) {
            let start = w.len();
            w.extend_from_slice(chunk);
            w.as_mut_slice()[start..].reverse();
        }
        Ok::<_, CodecError>(())
    });
    if let Err(e) = r {
        log::warn!("codec: a reply was not written: {e}");
    }
}

struct Server;

impl EventHandler for Server {
    type Context = LengthFieldCodec;

    fn on_traffic(&self, c: &mut Conn<'_, LengthFieldCodec>) -> Action {
        c.decode_each(
            |ctx| ctx.get_or_insert_with(codec),
            |c, body| {
                reply_reversed(c, body);
                Action::None
            },
        )
    }

    fn on_close(&self, c: &mut Conn<'_, LengthFieldCodec>, cause: &CloseCause) -> Action {
        if let CloseCause::Codec(e) = cause {
            log::warn!("codec: closed {}: {e}", c.peer_addr());
        }
        Action::None
    }

    fn on_shutdown(&self, _engine: &Engine) {
        println!("gnet codec: shut down");
    }
}

/// The size of frame `i` of a connection: every class of size in turn.
fn size(conn: usize, i: usize) -> usize {
    let x = (conn as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64 * 0x2545_F491);
    let x = (x ^ (x >> 29)) as usize;
    match i % 8 {
        0 => 0,
        1 => 1,
        2 => x % 64,
        3 => x % 1500,
        4 => x % 16_384,
        5 => x % (256 * 1024),
        6 => 4096,
        _ => x % 200,
    }
}

/// The body of frame `i` of connection `conn`.
fn body(conn: usize, i: usize) -> Vec<u8> {
    let seed = (conn * 31 + i * 7) as u8;
    (0..size(conn, i))
        .map(|j| seed.wrapping_add((j * 13) as u8))
        .collect()
}

struct Session {
    conn: usize,
    decoder: LengthFieldCodec,
    sent: usize,
    checked: usize,
}

struct Client {
    frames: usize,
    report: Mutex<mpsc::Sender<Result<(), String>>>,
}

impl Client {
    fn tell(&self, r: Result<(), String>) {
        let _ = self.report.lock().unwrap().send(r);
    }

    /// Sends the next burst of frames in one write.
    fn send_burst(&self, c: &mut Conn<'_, Session>) {
        let Some(s) = c.context_mut() else { return };
        let (conn, from) = (s.conn, s.sent);
        let to = (from + BURST).min(self.frames);
        s.sent = to;
        let enc = codec();
        for i in from..to {
            if let Err(e) = c.encode(&enc, &body(conn, i)) {
                self.tell(Err(format!("connection {conn}: encode frame {i}: {e}")));
            }
        }
    }

    /// Checks one reply; returns whether the connection is done (or broken).
    fn check(&self, s: &mut Session, reply: &[u8]) -> Result<bool, String> {
        let i = s.checked;
        if i >= s.sent {
            return Err(format!("connection {}: a reply to nothing", s.conn));
        }
        let mut want = body(s.conn, i);
        want.reverse();
        if reply != want {
            return Err(format!(
                "connection {}: reply {i} ({} bytes) differs from the {} expected",
                s.conn,
                reply.len(),
                want.len()
            ));
        }
        s.checked += 1;
        Ok(s.checked == self.frames)
    }
}

impl EventHandler for Client {
    type Context = Session;

    fn on_open(&self, c: &mut Conn<'_, Session>) -> Action {
        if self.frames == 0 {
            self.tell(Ok(()));
            return Action::Close;
        }
        self.send_burst(c);
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, Session>) -> Action {
        c.decode_each(
            |ctx| &mut ctx.as_mut().expect("a session per connection").decoder,
            |c, reply| {
                let Some(s) = c.context_mut() else {
                    return Action::Close;
                };
                match self.check(s, reply) {
                    Ok(true) => {
                        self.tell(Ok(()));
                        Action::Close
                    }
                    Ok(false) if s.checked == s.sent => {
                        self.send_burst(c);
                        Action::None
                    }
                    Ok(false) => Action::None,
                    Err(e) => {
                        self.tell(Err(e));
                        Action::Close
                    }
                }
            },
        )
    }

    fn on_close(&self, c: &mut Conn<'_, Session>, cause: &CloseCause) -> Action {
        if let Some(s) = c.context() {
            if s.checked < self.frames {
                self.tell(Err(format!(
                    "connection {} closed after {} of {} replies: {cause}",
                    s.conn, s.checked, self.frames
                )));
            }
        }
        Action::None
    }

    fn on_dial_error(&self, _: &Engine, f: DialError<Session>) {
        self.tell(Err(format!("dial {}: {}", f.addr, f.error)));
    }
}

fn number(flag: &str, v: &Option<String>) -> usize {
    v.as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("codec: {flag} takes a number");
            std::process::exit(2)
        })
}

fn run_client(args: common::Args, conns: usize, frames: usize, timeout: u64) {
    let target = args.addrs[0].clone();
    let (tx, rx) = mpsc::channel();
    let handler = Client {
        frames,
        report: Mutex::new(tx),
    };
    let running = gnet::client(handler, args.opts).unwrap_or_else(|e| {
        eprintln!("codec: {e}");
        std::process::exit(1)
    });
    let engine = running.engine().clone();
    println!(
        "gnet codec client: backend={} addr={target} loops={} conns={conns} frames={frames}",
        engine.backend(),
        engine.num_loops()
    );
    let start = Instant::now();
    for conn in 0..conns {
        let s = Session {
            conn,
            decoder: codec(),
            sent: 0,
            checked: 0,
        };
        if let Err(e) = engine.dial(&target, Some(s)) {
            eprintln!("codec: {e}");
            std::process::exit(1);
        }
    }
    let deadline = start + Duration::from_secs(timeout);
    let mut failure = None;
    let mut finished = 0;
    while finished < conns && failure.is_none() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(())) => finished += 1,
            Ok(Err(e)) => failure = Some(e),
            Err(_) => {
                failure = Some(format!(
                    "{finished} of {conns} connections done after {timeout} s"
                ))
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = running.stop();
    if let Some(e) = failure {
        eprintln!("codec: {e}");
        std::process::exit(1);
    }
    let total = conns * frames;
    println!(
        "gnet codec client: {total} replies on {conns} connections checked in {elapsed:.2} s \
         ({:.0} frames/s)",
        total as f64 / elapsed
    );
}

fn main() {
    common::init_logger();
    let args = common::parse(
        "codec",
        "[--client [--conns N] [--frames M] [--timeout SECS]]",
        "tcp://127.0.0.1:9000",
        &["--conns", "--frames", "--timeout"],
    );
    let (mut client, mut conns, mut frames, mut timeout) = (false, 4, 400, 60);
    for (flag, v) in &args.rest {
        match flag.as_str() {
            "--client" => client = true,
            "--conns" => conns = number(flag, v),
            "--frames" => frames = number(flag, v),
            "--timeout" => timeout = number(flag, v),
            other => {
                eprintln!("codec: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    if client {
        run_client(args, conns, frames, timeout as u64);
    } else {
        common::serve("codec", Server, args);
    }
}
