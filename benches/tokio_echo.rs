//! A tokio echo server, the baseline that `cargo bench --bench echo` compares gnet with.
//!
//! ```text
//! cargo run --release -p gnet-bench --bin tokio_echo -- --addr 127.0.0.1:9000 --loops 2
//! ```
//!
//! It is shaped like gnet's own echo: `--loops` threads, each with a `current_thread` runtime
//! and its own `SO_REUSEPORT` listener, so the kernel spreads connections over the threads
//! and no task ever moves between threads. `TCP_NODELAY` is set on every accepted socket.
//!
//! A connection holds no buffer while it is idle: each task waits for readiness and reads
//! into its thread's scratch buffer, and keeps an owned copy only of bytes the socket did not
//! take at once. That is how a tuned tokio server is written, and it keeps the idle-memory
//! comparison fair.
//!
//! With `--addr udp://IP:PORT` it echoes datagrams instead: each thread has its own
//! `SO_REUSEPORT` UDP socket (so the kernel spreads senders over the threads, as gnet's
//! `udp://` does) and sends every datagram back to where it came from, received into the
//! thread's scratch buffer (a datagram larger than 64 KiB is cut short).
//!
//! The first line on stdout is `tokio echo: backend=tokio addr=tcp://IP:PORT` (or `udp://`),
//! flushed, so a harness can wait for it and learn the port when `:0` was asked for.
//!
//! SIGINT or SIGTERM stops it: the listeners close, connections in the middle of a write
//! finish it, every connection is closed and it exits with status 0; a second signal ends it
//! at once. This costs an idle connection nothing, as the stop is watched by each thread's
//! accept loop rather than by every connection; the price is that connections are closed
//! without a `shutdown` first, so a peer that answered everything sees a FIN but one still
//! sending at that moment can see a reset (bytes left unread), which gnet's echo avoids.
//! (Watching the stop in every connection, to shut each one down first, cost some 240 bytes
//! per idle connection when tried: 1,240 instead of 1,000.)
//! Log lines go to stderr, at `info` unless `RUST_LOG` says otherwise.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener as StdListener, UdpSocket as StdUdpSocket};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;

use signal_hook::consts::{SIGINT, SIGTERM};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Notify};

const SCRATCH_LEN: usize = 64 * 1024;
const BACKLOG: i32 = 4096;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN]);
    /// This thread's connections in the middle of a write, which a stop lets finish.
    static WRITING: Cell<usize> = const { Cell::new(0) };
    /// Notified when `WRITING` drops to 0.
    static WRITES_DONE: Rc<Notify> = Rc::new(Notify::new());
}

struct Args {
    addr: SocketAddr,
    /// `udp://` was asked for.
    udp: bool,
    loops: usize,
}

fn usage() -> ! {
    eprintln!("usage: tokio_echo [--addr [tcp://|udp://]IP:PORT] [--loops N]");
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        addr: "127.0.0.1:9000".parse().expect("literal address"),
        udp: false,
        loops: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--addr" => {
                let (text, udp) = match value.strip_prefix("udp://") {
                    Some(rest) => (rest, true),
                    None => (value.strip_prefix("tcp://").unwrap_or(&value), false),
                };
                args.addr = text.parse().unwrap_or_else(|_| usage());
                args.udp = udp;
            }
            "--loops" => args.loops = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    args.loops = args.loops.max(1);
    args
}

/// Binds one `SO_REUSEPORT` listener; every loop calls this with the same address.
fn bind_listener(addr: SocketAddr) -> io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds one `SO_REUSEPORT` UDP socket; every loop calls this with the same address.
fn bind_udp(addr: SocketAddr) -> io::Result<StdUdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A loop's socket: a listener, or a datagram socket.
enum Bound {
    Tcp(StdListener),
    Udp(StdUdpSocket),
}

impl Bound {
    fn new(addr: SocketAddr, udp: bool) -> io::Result<Bound> {
        if udp {
            bind_udp(addr).map(Bound::Udp)
        } else {
            bind_listener(addr).map(Bound::Tcp)
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr(),
            Bound::Udp(s) => s.local_addr(),
        }
    }
}

/// Echoes every datagram to its sender until `stop` changes.
async fn serve_datagrams(socket: StdUdpSocket, mut stop: watch::Receiver<bool>) -> io::Result<()> {
    let socket = UdpSocket::from_std(socket)?;
    let mut buf = vec![0; SCRATCH_LEN];
    loop {
        let (n, from) = tokio::select! {
            biased;
            Ok(()) = stop.changed() => return Ok(()),
            got = socket.recv_from(&mut buf) => match got {
                Ok(pair) => pair,
                // An ICMP error from an earlier reply, reported on this socket: keep serving.
                Err(e) => {
                    log::debug!("tokio echo: recv_from: {e}");
                    continue;
                }
            },
        };
        if let Err(e) = socket.send_to(&buf[..n], from).await {
            log::debug!("tokio echo: send_to {from}: {e}");
        }
    }
}

/// What one readiness turn left behind.
enum Turn {
    /// Everything read was written back (or there was nothing to read).
    Done,
    /// The socket took only part of what was read; these bytes still have to go.
    Pending(Vec<u8>),
    /// The peer closed its side.
    Eof,
}

/// Reads what is there into the thread's scratch buffer and writes it straight back.
fn echo_once(stream: &TcpStream) -> io::Result<Turn> {
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        let n = match stream.try_read(&mut buf) {
            Ok(0) => return Ok(Turn::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Turn::Done),
            Err(e) => return Err(e),
        };
        let written = match stream.try_write(&buf[..n]) {
            Ok(w) => w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if written == n {
            Ok(Turn::Done)
        } else {
            Ok(Turn::Pending(buf[written..n].to_vec()))
        }
    })
}

async fn serve(mut stream: TcpStream) -> io::Result<()> {
    loop {
        stream.readable().await?;
        match echo_once(&stream)? {
            Turn::Done => {}
            Turn::Pending(rest) => {
                WRITING.set(WRITING.get() + 1);
                let written = stream.write_all(&rest).await;
                WRITING.set(WRITING.get() - 1);
                if WRITING.get() == 0 {
                    WRITES_DONE.with(|n| n.notify_one());
                }
                written?
            }
            Turn::Eof => return Ok(()),
        }
    }
}

/// Serves `listener` until `stop` changes; then waits for the writes in progress and returns,
/// and the connection tasks are dropped with the runtime (their sockets closed).
fn run_loop(bound: Bound, mut stop: watch::Receiver<bool>) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let listener = match bound {
        Bound::Tcp(l) => l,
        Bound::Udp(s) => return runtime.block_on(serve_datagrams(s, stop)),
    };
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        loop {
            let accepted = tokio::select! {
                biased;
                Ok(()) = stop.changed() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, _) = match accepted {
                Ok(pair) => pair,
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(e) => {
                    log::warn!("tokio echo: accept: {e}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let _ = serve(stream).await;
            });
        }
        drop(listener);
        // This future and the connection tasks share the thread: none of them is between
        // taking bytes from the socket and starting to write them back when this one runs.
        let done = WRITES_DONE.with(Rc::clone);
        while WRITING.get() > 0 {
            done.notified().await;
        }
        Ok(())
    })
}

/// On the first SIGINT or SIGTERM, `stop` is set (logged); a second one while the loops stop
/// runs the signal's default action, from the handler that the first one armed.
fn stop_on_signals(stop: watch::Sender<bool>) -> io::Result<()> {
    let armed = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // The conditional action first, so the first signal finds it unarmed.
        signal_hook::flag::register_conditional_default(sig, armed.clone())?;
        signal_hook::flag::register(sig, armed.clone())?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let name = signal_hook::low_level::signal_name(sig).unwrap_or("a signal");
                log::info!(
                    "tokio echo: {name} received: stopping gracefully; a second signal exits at once"
                );
                let _ = stop.send(true);
            }
        })?;
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = parse_args();
    let first = match Bound::new(args.addr, args.udp) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tokio echo: cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    // With port 0 the first bind picks the port; the other loops join it.
    let local = first.local_addr().expect("bound listener has an address");
    let mut listeners = vec![first];
    for _ in 1..args.loops {
        match Bound::new(local, args.udp) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("tokio echo: cannot add a listener on {local}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let (stop, stopped) = watch::channel(false);
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let stopped = stopped.clone();
            thread::spawn(move || run_loop(l, stopped))
        })
        .collect();
    if let Err(e) = stop_on_signals(stop) {
        eprintln!("tokio echo: cannot watch SIGINT and SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    let mut out = io::stdout().lock();
    let scheme = if args.udp { "udp" } else { "tcp" };
    let _ = writeln!(out, "tokio echo: backend=tokio addr={scheme}://{local}");
    let _ = out.flush();
    drop(out);
    for handle in handles {
        if let Ok(Err(e)) = handle.join() {
            eprintln!("tokio echo: loop failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
