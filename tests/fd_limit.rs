//! A server at its descriptor limit, on every backend, in a child process whose
//! `RLIMIT_NOFILE` leaves room for a few connections:
//!
//! - established connections keep working, their first reply included (on stdnet that reply
//!   used to need a descriptor of its own and killed the connection);
//! - connections beyond the limit wait in the backlog, neither accepted and dropped nor reset;
//! - the server burns no CPU while it waits (io_uring used to re-arm its accept on `EMFILE`
//!   at once, a core at 100%), and says so once (one warning per episode, not per retry);
//! - it accepts again as soon as connections close.
#![cfg(target_os = "linux")]

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use gnet::{Action, BackendKind, CloseCause, Conn, EventHandler};
use util::child::{self, Child};

/// Descriptors left free in the child for its engine (a few) and its connections.
const HEADROOM: u64 = 32;
/// Connections opened beyond the limit.
const EXTRA: usize = 10;

/// Echo, printing `OPEN` and `CLOSE` lines for the parent to count.
struct Announce;

impl EventHandler for Announce {
    type Context = ();

    fn on_open(&self, _: &mut Conn<'_, ()>) -> Action {
        println!("OPEN");
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        c.write(d);
        Action::None
    }

    fn on_close(&self, _: &mut Conn<'_, ()>, cause: &CloseCause) -> Action {
        println!("CLOSE {}", util::cause_name(cause));
        Action::None
    }
}

/// Prints warnings and errors as `LOG` lines for the parent to count.
struct LineLogger;

impl log::Log for LineLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            println!("LOG {} {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: LineLogger = LineLogger;

/// The lowest descriptor limit that leaves `free` descriptors available: new descriptors take
/// the lowest free numbers below the limit, and some inherited ones may sit far above the rest.
fn limit_leaving(free: u64) -> u64 {
    let mut open: Vec<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    open.sort_unstable();
    let mut limit = 0;
    let mut left = free;
    let mut used = open.into_iter().peekable();
    while left > 0 {
        if used.next_if_eq(&limit).is_none() {
            left -= 1;
        }
        limit += 1;
    }
    limit
}

/// The child: serves until told to stop, under a descriptor limit just above what it uses.
fn serve_at_the_limit(kind: BackendKind) {
    log::set_logger(&LOGGER).expect("the only logger");
    log::set_max_level(log::LevelFilter::Warn);
    // The limit is set before the engine starts: an io_uring accept armed earlier would keep
    // the limit it saw when it was prepared.
    let limit = limit_leaving(HEADROOM);
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit.max(4096),
    };
    // SAFETY: `rl` is a valid rlimit, read by the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
    let server = util::Server::start(Announce, &[util::TCP], util::opts(kind));
    println!("ADDR {}", server.addr(0));
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .expect("read the parent's command");
    server.stop().expect("a clean stop");
    println!("CHILD-OK");
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, util::IO_TIMEOUT).expect("connect (backlog)");
    s.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    s
}

fn ping(s: &mut TcpStream, what: &str) {
    s.write_all(b"ping")
        .unwrap_or_else(|e| panic!("{what}: write: {e}"));
    let mut b = [0u8; 4];
    s.read_exact(&mut b)
        .unwrap_or_else(|e| panic!("{what}: no echo: {e}"));
    assert_eq!(&b, b"ping", "{what}");
}

fn ping_or_dump(s: &mut TcpStream, what: &str, c: &mut Child) {
    let ok = s.write_all(b"ping").is_ok() && {
        let mut b = [0u8; 4];
        s.read_exact(&mut b).is_ok() && &b == b"ping"
    };
    if !ok {
        c.drain_count("");
        panic!(
            "{what}: no echo; the child printed:\n{}",
            c.transcript.join("\n")
        );
    }
}

/// Neither closed nor reset: a read would block.
fn still_waiting(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let r = (&*s).read(&mut [0u8; 1]);
    s.set_nonblocking(false).unwrap();
    matches!(r, Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn at_the_descriptor_limit(kind: BackendKind) {
    if child::role().as_deref() == Some("fd-limit") {
        return serve_at_the_limit(kind);
    }
    let mut c = Child::spawn(
        &child::test_name(kind, "at_the_descriptor_limit"),
        "fd-limit",
        &[],
    );
    let addr: SocketAddr = c
        .expect_line("ADDR tcp://", Duration::from_secs(20))
        .parse()
        .expect("a socket address");
    // Open connections until the server stops taking them.
    let mut established = Vec::new();
    let mut waiting = Vec::new();
    loop {
        let s = connect(addr);
        if c.next_line("OPEN", Duration::from_secs(2)).is_some() {
            established.push(s);
            assert!(
                established.len() < 200,
                "the descriptor limit never took effect"
            );
        } else {
            waiting.push(s);
            break;
        }
    }
    assert!(
        established.len() >= 4,
        "only {} connections before the limit",
        established.len()
    );
    for _ in 0..EXTRA {
        waiting.push(connect(addr));
    }
    // At the limit: idle, and nothing dropped.
    let pid = c.pid();
    let start = (child::cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let used = child::cpu_ticks(pid) - start.0;
    let per_second =
        used as f64 / start.1.elapsed().as_secs_f64() / child::ticks_per_second() as f64;
    assert!(
        per_second < 0.15,
        "{kind}: the server used {:.0}% of a core while at its descriptor limit",
        per_second * 100.0
    );
    for (i, s) in waiting.iter().enumerate() {
        assert!(
            still_waiting(s),
            "{kind}: connection {i} beyond the limit was closed instead of left in the backlog"
        );
    }
    assert_eq!(
        c.drain_count("OPEN"),
        established.len(),
        "accepted at the limit"
    );
    // Established connections still work, including their first reply.
    for (i, s) in established.iter_mut().enumerate() {
        ping(s, &format!("{kind}: established connection {i}"));
    }
    assert_eq!(c.drain_count("CLOSE"), 0, "{kind}: {:#?}", c.transcript);
    // Closing some lets as many waiting ones in, promptly.
    let freed = 5;
    drop(established.drain(..freed));
    for (i, s) in waiting.iter_mut().enumerate().take(freed) {
        c.expect_line("OPEN", Duration::from_secs(5));
        let what = format!("{kind}: waiting connection {i}, once let in");
        ping_or_dump(s, &what, &mut c);
    }
    let warnings = c.drain_count("LOG WARN");
    let accept_warnings = c
        .transcript
        .iter()
        .filter(|l| l.contains("LOG WARN") && l.contains("accept"))
        .count();
    assert_eq!(
        (accept_warnings, warnings),
        (1, 1),
        "{kind}: one warning for the whole episode:\n{}",
        c.transcript.join("\n")
    );
    drop(established);
    drop(waiting);
    c.send("stop");
    let (status, out) = c.wait(util::WAIT_TIMEOUT);
    assert!(
        status.success(),
        "{kind}: child failed:\n{}",
        out.join("\n")
    );
    assert!(out.iter().any(|l| l == "CHILD-OK"), "{}", out.join("\n"));
}

per_backend!(at_the_descriptor_limit);
