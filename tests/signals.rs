//! Stopping on SIGINT/SIGTERM: the echo example (built by `cargo test` next to this test),
//! sent SIGTERM while 1,000 clients are connected, ends every connection with a FIN, runs
//! `on_shutdown`, exits with status 0, removes its Unix socket file and leaves the port free
//! for an immediate restart; a second signal while it stops ends it at once. In this process:
//! engines started one after another each get the signal and leave no watcher behind, and a
//! build without the `signal` feature refuses the option.
// Without the feature only the last test is compiled.
#![cfg_attr(not(feature = "signal"), allow(dead_code, unused_imports))]

#[path = "util/process.rs"]
mod process;
mod util;

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gnet::{BackendKind, ListenAddr};
use process::{send_signal, EchoProcess};
use util::{random_bytes, Client, PlainEcho, IO_TIMEOUT, TCP, WAIT_TIMEOUT};

const CLIENTS: usize = 1000;
const ROUNDS: usize = 10;
/// What the echo example prints from `on_shutdown`.
const SHUTDOWN_LINE: &str = "gnet echo: shut down";

/// Starts `echo --backend kind --addr ..` and waits for its first line, which must name
/// `kind`.
fn start_echo(kind: BackendKind, addrs: &[String]) -> EchoProcess {
    let mut args = vec!["--backend".to_string(), kind.to_string()];
    for a in addrs {
        args.extend(["--addr".to_string(), a.clone()]);
    }
    let path = util::child::example_binary("echo");
    EchoProcess::spawn(&path, &args, &format!("gnet echo: backend={kind} "))
}

/// Raises the descriptor limit for [`CLIENTS`] clients and their server connections, with
/// the tests of this file running side by side.
fn raise_nofile_limit() {
    process::raise_nofile_limit(3 * CLIENTS + 500);
}

/// A port that was free a moment ago (every round of a test reuses it).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// How the connections ended after the signal.
#[derive(Debug, Default)]
struct Endings {
    eof: usize,
    reset: usize,
    data: usize,
    timeout: usize,
    other: Vec<String>,
}

impl Endings {
    fn of(clients: &mut [Client]) -> Endings {
        let mut e = Endings::default();
        let mut buf = [0u8; 256];
        let mut short = false;
        for c in clients {
            if short {
                c.set_timeouts(Some(Duration::from_millis(10)));
            }
            match c.read(&mut buf) {
                Ok(0) => e.eof += 1,
                Ok(_) => e.data += 1,
                Err(err) => match err.kind() {
                    io::ErrorKind::ConnectionReset => e.reset += 1,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        // One wait of IO_TIMEOUT is enough to know the server hangs.
                        e.timeout += 1;
                        short = true;
                    }
                    _ => e.other.push(err.to_string()),
                },
            }
        }
        e
    }
}

/// One round: start the echo on `addrs`, connect [`CLIENTS`] clients spread over them, echo a
/// message on each, SIGTERM, then check how the connections and the process ended.
fn round(kind: BackendKind, n: usize, addrs: &[String]) {
    let mut echo = start_echo(kind, addrs);
    let parsed: Vec<ListenAddr> = addrs
        .iter()
        .map(|a| ListenAddr::parse(a).expect("address"))
        .collect();
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| Client::connect(&parsed[i % parsed.len()]))
        .collect();
    let msgs: Vec<Vec<u8>> = (0..CLIENTS)
        .map(|i| random_bytes(32 + i % 97, (n * CLIENTS + i) as u64))
        .collect();
    for (c, m) in clients.iter_mut().zip(&msgs) {
        c.write_all(m).expect("client write");
    }
    // Every echo read back in full: the server has consumed all that was sent.
    for (c, m) in clients.iter_mut().zip(&msgs) {
        c.expect(m);
    }
    send_signal(&echo.child, libc::SIGTERM);
    let endings = Endings::of(&mut clients);
    let status = echo.wait_exit(WAIT_TIMEOUT);
    drop(clients);
    echo.output_done();
    let stdout = echo.stdout_text();
    let shut_down = stdout.lines().any(|l| l == SHUTDOWN_LINE);
    let left_behind: Vec<&Path> = parsed
        .iter()
        .filter_map(|a| match a {
            ListenAddr::Unix(p) if p.exists() => Some(p.as_path()),
            _ => None,
        })
        .collect();
    for p in &left_behind {
        let _ = std::fs::remove_file(p);
    }
    let clean = endings.eof == CLIENTS
        && status.is_some_and(|s| s.code() == Some(0))
        && shut_down
        && left_behind.is_empty();
    assert!(
        clean,
        "round {n} of {}: after SIGTERM {CLIENTS} clients saw {endings:?}; exit status {:?} \
         (signal {:?}); `{SHUTDOWN_LINE}` printed: {shut_down}; socket files left: \
         {left_behind:?}\nstdout:\n{stdout}\nstderr:\n{}",
        echo.what,
        status,
        status.and_then(|s| s.signal()),
        echo.stderr_text()
    );
}

/// Ten rounds on one port, each started at once after the last exited; every other round
/// also serves a Unix socket.
fn sigterm_stops_gracefully(kind: BackendKind) {
    raise_nofile_limit();
    let tcp = format!("tcp://127.0.0.1:{}", free_port());
    for n in 0..ROUNDS {
        let mut addrs = vec![tcp.clone()];
        if n % 2 == 0 {
            addrs.push(util::unix_addr());
        }
        round(kind, n, &addrs);
    }
}

/// A client that sends without ever reading, until the writes block: the server then holds
/// output it cannot deliver, so its graceful stop would wait for `shutdown_timeout`.
pub fn stuck_client(addr: &ListenAddr) -> (std::thread::JoinHandle<()>, Arc<AtomicUsize>) {
    let mut c = Client::connect(addr);
    let written = Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    let t = std::thread::spawn(move || {
        let chunk = random_bytes(64 * 1024, 9);
        while c.write_all(&chunk).is_ok() {
            w.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    });
    let mut last = 0;
    let mut since = Instant::now();
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = written.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if now > 0 && since.elapsed() > Duration::from_millis(300) {
            return (t, written);
        }
        assert!(
            start.elapsed() < WAIT_TIMEOUT,
            "the client's writes never blocked ({now} bytes written)"
        );
    }
}

/// A second SIGTERM while the first one's graceful stop is waiting ends the process at once,
/// by the signal's default action.
fn second_sigterm_exits_at_once(kind: BackendKind) {
    raise_nofile_limit();
    let addr = format!("tcp://127.0.0.1:{}", free_port());
    let mut echo = start_echo(kind, std::slice::from_ref(&addr));
    let (writer, _) = stuck_client(&ListenAddr::parse(&addr).unwrap());
    send_signal(&echo.child, libc::SIGTERM);
    echo.wait_stderr("stopping gracefully");
    // The first signal alone does not end it: a connection still has output to deliver.
    assert_eq!(
        echo.wait_exit(Duration::from_millis(300)),
        None,
        "{} exited after one SIGTERM although a client was not reading",
        echo.what
    );
    let sent = Instant::now();
    send_signal(&echo.child, libc::SIGTERM);
    let status = echo.wait_exit(IO_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "{} still runs {IO_TIMEOUT:?} after a second SIGTERM",
            echo.what
        )
    });
    let took = sent.elapsed();
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "{}: status {status:?} after a second SIGTERM; stderr:\n{}",
        echo.what,
        echo.stderr_text()
    );
    assert!(
        took < Duration::from_secs(2),
        "the second SIGTERM took {took:?} to end the process"
    );
    echo.output_done();
    assert!(
        !echo.stdout_text().contains(SHUTDOWN_LINE),
        "on_shutdown ran although the process was ended by the second signal"
    );
    writer.join().unwrap();
}

#[cfg(feature = "signal")]
per_backend!(sigterm_stops_gracefully, second_sigterm_exits_at_once);

/// This process's threads named like the signal watcher.
fn watcher_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "gnet-signals")
        .count()
}

/// Four engines in turn, in this process, stopped in turn by a SIGTERM raised here and by
/// `Running::stop`: each ends its connection with a FIN, shuts down and takes its watcher
/// thread with it (one still waiting for a signal would keep its engine alive; a handler
/// action left armed by an earlier engine would end this process at the next signal). Not
/// per backend: the tests of this file run side by side, and a signal raised here reaches
/// every engine of the process.
#[cfg(feature = "signal")]
#[test]
fn engines_one_after_another_each_stop_on_sigterm() {
    let kind = util::instantiated_backends()[0];
    for i in 0..4 {
        let running = match gnet::start(PlainEcho, &[TCP], util::opts(kind).stop_on_signals(true)) {
            Ok(Some(r)) => r,
            Ok(None) => panic!("engine {i}: on_boot asked for shutdown"),
            Err(e) => panic!("engine {i} did not start: {e}"),
        };
        util::wait_until("the watcher thread", || watcher_threads() == 1);
        let mut c = Client::connect(&running.engine().addrs()[0]);
        c.echo(b"before the signal");
        let by_signal = i % 2 == 0;
        if by_signal {
            signal_hook::low_level::raise(libc::SIGTERM).expect("raise SIGTERM");
        } else {
            running.engine().stop().expect("Engine::stop");
        }
        assert_eq!(c.read_to_eof(), b"", "engine {i}: bytes after the echo");
        util::wait_running(running).unwrap_or_else(|e| panic!("engine {i}: {e}"));
        assert_eq!(
            watcher_threads(),
            0,
            "engine {i} (stopped by a signal: {by_signal}) left its watcher thread"
        );
    }
}

/// Without the `signal` feature the option is an error at start, not ignored.
#[cfg(not(feature = "signal"))]
#[test]
fn without_the_feature_stop_on_signals_is_refused() {
    let opts = gnet::Options::new().stop_on_signals(true);
    match gnet::start(PlainEcho, &[TCP], opts) {
        Err(gnet::Error::InvalidOptions(why)) => {
            assert!(why.contains("`signal` Cargo feature"), "the message: {why}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started with stop_on_signals in a build without the signal feature"),
    }
}
