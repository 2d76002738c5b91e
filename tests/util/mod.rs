//! Shared helpers of the behavioural tests: one instantiation per compiled backend, an engine
//! guard, blocking loopback clients with generous timeouts, and deterministic random payloads.
#![allow(dead_code)]

#[cfg(unix)]
pub mod child;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gnet::{
    Action, BackendChoice, BackendKind, Conn, Engine, EventHandler, ListenAddr, Options, Running,
};

/// Read/write timeout of every client socket: a bug fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits for a condition or an engine to shut down.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Instantiates each `fn name(kind: BackendKind)` once per compiled backend, as
/// `uring::name`, `epoll::name`, `kqueue::name`, `stdnet::name`, so a failure names its
/// backend.
#[macro_export]
macro_rules! per_backend {
    ($($name:ident),+ $(,)?) => {
        #[cfg(gnet_uring)]
        mod uring {
            $(#[test] fn $name() { super::$name(gnet::BackendKind::Uring) })+
        }
        #[cfg(gnet_epoll)]
        mod epoll {
            $(#[test] fn $name() { super::$name(gnet::BackendKind::Epoll) })+
        }
        #[cfg(gnet_kqueue)]
        mod kqueue {
            $(#[test] fn $name() { super::$name(gnet::BackendKind::Kqueue) })+
        }
        #[cfg(gnet_stdnet)]
        mod stdnet {
            $(#[test] fn $name() { super::$name(gnet::BackendKind::StdNet) })+
        }
    };
}

/// The backends [`per_backend!`] instantiates tests for, in this build.
pub fn instantiated_backends() -> Vec<BackendKind> {
    [
        #[cfg(gnet_uring)]
        BackendKind::Uring,
        #[cfg(gnet_epoll)]
        BackendKind::Epoll,
        #[cfg(gnet_kqueue)]
        BackendKind::Kqueue,
        #[cfg(gnet_stdnet)]
        BackendKind::StdNet,
    ]
    .to_vec()
}

/// Options that run exactly `kind`, whatever `GNET_BACKEND` says.
pub fn opts(kind: BackendKind) -> Options {
    Options::new()
        .backend(BackendChoice::Only(kind))
        .honour_env(false)
}

/// A loopback tcp address with a kernel-chosen port.
pub const TCP: &str = "tcp://127.0.0.1:0";

/// A fresh `unix://` address under the temp directory, unique in this process.
pub fn unix_addr() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("gnet-t-{}-{n}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    format!("unix://{}", path.display())
}

/// `TCP` or a fresh unix address.
pub fn addr_for(tcp: bool) -> String {
    if tcp {
        TCP.to_string()
    } else {
        unix_addr()
    }
}

/// A running engine that is stopped (without waiting) if the test panics.
pub struct Server {
    running: Option<Running>,
    pub engine: Engine,
}

impl Server {
    /// Starts `handler` on `addrs`; panics with the error if it does not start.
    pub fn start<H: EventHandler>(handler: H, addrs: &[&str], opts: Options) -> Server {
        match gnet::start(handler, addrs, opts) {
            Ok(Some(running)) => {
                let engine = running.engine().clone();
                Server {
                    running: Some(running),
                    engine,
                }
            }
            Ok(None) => panic!("gnet::start returned Ok(None): on_boot asked for shutdown"),
            Err(e) => panic!("gnet::start({addrs:?}) failed: {e}"),
        }
    }

    /// The `i`-th bound address.
    pub fn addr(&self, i: usize) -> ListenAddr {
        self.engine.addrs()[i].clone()
    }

    /// A client connected to the `i`-th address.
    pub fn connect(&self, i: usize) -> Client {
        Client::connect(&self.addr(i))
    }

    /// Waits (bounded) for the engine to shut down by itself.
    pub fn wait(mut self) -> gnet::Result<()> {
        let running = self.running.take().expect("running");
        wait_running(running)
    }

    /// `Engine::stop` (which must succeed: nobody stopped it yet), then a bounded wait.
    pub fn stop(mut self) -> gnet::Result<()> {
        let running = self.running.take().expect("running");
        running
            .engine()
            .stop()
            .expect("first Engine::stop must succeed");
        wait_running(running)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.running.is_some() {
            let _ = self.engine.stop();
        }
    }
}

/// `Running::wait`, failing the test after [`WAIT_TIMEOUT`] instead of hanging.
pub fn wait_running(running: Running) -> gnet::Result<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(running.wait());
    });
    rx.recv_timeout(WAIT_TIMEOUT)
        .unwrap_or_else(|_| panic!("the engine did not shut down within {WAIT_TIMEOUT:?}"))
}

/// The plainest server: echoes what it receives.
pub struct PlainEcho;

impl EventHandler for PlainEcho {
    type Context = ();
    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        let d = c.next_all();
        c.write(d);
        Action::None
    }
}

/// Polls `cond` until it holds; panics naming `what` after [`WAIT_TIMEOUT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > WAIT_TIMEOUT {
            panic!("timed out after {WAIT_TIMEOUT:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A blocking loopback client, tcp or unix, with [`IO_TIMEOUT`] on reads and writes.
#[derive(Debug)]
pub enum Client {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Client {
    pub fn connect(addr: &ListenAddr) -> Client {
        let c = match addr {
            ListenAddr::Tcp(a) => Client::Tcp(
                TcpStream::connect_timeout(a, IO_TIMEOUT)
                    .unwrap_or_else(|e| panic!("connect {a}: {e}")),
            ),
            ListenAddr::Unix(p) => Client::Unix(
                UnixStream::connect(p).unwrap_or_else(|e| panic!("connect {}: {e}", p.display())),
            ),
            other => panic!("no stream client for {other}"),
        };
        c.set_timeouts(Some(IO_TIMEOUT));
        c
    }

    /// A tcp client whose receive buffer is set small before connecting.
    pub fn connect_tcp_small_rcvbuf(addr: &ListenAddr, rcvbuf: usize) -> Client {
        let ListenAddr::Tcp(a) = addr else {
            panic!("not a tcp address: {addr}")
        };
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(rcvbuf).unwrap();
        s.connect_timeout(&(*a).into(), IO_TIMEOUT).unwrap();
        let c = Client::Tcp(s.into());
        c.set_timeouts(Some(IO_TIMEOUT));
        c
    }

    pub fn set_timeouts(&self, t: Option<Duration>) {
        match self {
            Client::Tcp(s) => {
                s.set_read_timeout(t).unwrap();
                s.set_write_timeout(t).unwrap();
            }
            Client::Unix(s) => {
                s.set_read_timeout(t).unwrap();
                s.set_write_timeout(t).unwrap();
            }
        }
    }

    pub fn try_clone(&self) -> Client {
        match self {
            Client::Tcp(s) => Client::Tcp(s.try_clone().unwrap()),
            Client::Unix(s) => Client::Unix(s.try_clone().unwrap()),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Client::Tcp(s) => s.shutdown(how),
            Client::Unix(s) => s.shutdown(how),
        }
    }

    /// `SO_LINGER` 0: closing this client then resets the connection.
    pub fn set_linger_zero(&self) {
        match self {
            Client::Tcp(s) => socket2::SockRef::from(s)
                .set_linger(Some(Duration::ZERO))
                .unwrap(),
            Client::Unix(s) => socket2::SockRef::from(s)
                .set_linger(Some(Duration::ZERO))
                .unwrap(),
        }
    }

    /// The client's own address (tcp only).
    pub fn local_tcp(&self) -> std::net::SocketAddr {
        match self {
            Client::Tcp(s) => s.local_addr().unwrap(),
            Client::Unix(_) => panic!("not tcp"),
        }
    }

    /// Reads exactly `n` bytes; panics saying how far it got.
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.read(&mut buf[got..]) {
                Ok(0) => panic!("unexpected EOF after {got} of {n} bytes"),
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read failed after {got} of {n} bytes: {e}"),
            }
        }
        buf
    }

    /// Reads exactly `want.len()` bytes and checks them.
    pub fn expect(&mut self, want: &[u8]) {
        let got = self.read_n(want.len());
        assert_bytes_eq(&got, want, "expected bytes");
    }

    /// Reads until end of stream; panics on an error (a reset included).
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return out,
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read failed after {} bytes (expected EOF): {e}", out.len()),
            }
        }
    }

    /// Reads until the stream ends, by EOF or by an error other than a timeout; returns the
    /// bytes read. Panics on a timeout.
    pub fn read_until_closed(&mut self) -> Vec<u8> {
        match self.read_to_end_or_error() {
            Ok(got) | Err((got, _)) => got,
        }
    }

    /// Reads until the stream ends and says how: `Ok(bytes)` at an end of stream (a FIN),
    /// `Err((bytes, error))` at a reset or another error. Panics on a timeout.
    pub fn read_to_end_or_error(&mut self) -> Result<Vec<u8>, (Vec<u8>, io::Error)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("the server did not close the connection within {IO_TIMEOUT:?}")
                }
                Err(e) => return Err((out, e)),
            }
        }
    }

    /// Reads until the stream ends, which must be a reset (`ECONNRESET`): the server says it
    /// cut the stream short. Returns what arrived before.
    pub fn read_until_reset(&mut self) -> Vec<u8> {
        match self.read_to_end_or_error() {
            Err((got, e)) if e.kind() == io::ErrorKind::ConnectionReset => got,
            Err((got, e)) => panic!(
                "the stream ended in {e} after {} bytes, not a reset",
                got.len()
            ),
            Ok(got) => panic!(
                "the stream ended in a FIN after {} bytes, as if complete: a reset was due",
                got.len()
            ),
        }
    }

    /// Writes `data`, then reads exactly `want` back.
    pub fn write_all_and_expect(&mut self, data: &[u8], want: &[u8]) {
        self.write_all(data).expect("client write");
        self.expect(want);
    }

    /// Writes `payload` from a second thread while reading its echo; checks it byte for byte.
    pub fn echo(&mut self, payload: &[u8]) {
        let mut w = self.try_clone();
        let got = std::thread::scope(|s| {
            let h = s.spawn(move || w.write_all(payload));
            let got = self.read_n(payload.len());
            h.join().unwrap().expect("client write");
            got
        });
        assert_bytes_eq(&got, payload, "echo");
    }
}

impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Client::Tcp(s) => s.read(buf),
            Client::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Client::Tcp(s) => s.write(buf),
            Client::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compares two byte strings without printing megabytes on failure.
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: got {} bytes, want {}; first difference at {:?}",
        got.len(),
        want.len(),
        first
    );
}

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// `n` pseudo-random bytes from `seed`.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(n)
}

/// Failures seen inside callbacks, asserted from the test thread (a panic in a callback would
/// only close a connection).
#[derive(Default)]
pub struct Failures(std::sync::Mutex<Vec<String>>);

impl Failures {
    pub fn push(&self, msg: impl Into<String>) {
        self.0.lock().unwrap().push(msg.into());
    }

    pub fn check(&self, what: &str, cond: bool) {
        if !cond {
            self.push(what);
        }
    }

    pub fn assert_none(&self) {
        let v = self.0.lock().unwrap();
        assert!(v.is_empty(), "failures inside callbacks: {v:#?}");
    }
}

/// A short, comparable name of a close cause.
pub fn cause_name(c: &gnet::CloseCause) -> String {
    match c {
        gnet::CloseCause::PeerClosed => "PeerClosed".into(),
        gnet::CloseCause::Reset => "Reset".into(),
        gnet::CloseCause::Local => "Local".into(),
        gnet::CloseCause::Shutdown => "Shutdown".into(),
        gnet::CloseCause::Error(e) => format!("Error({e:?})"),
        other => format!("{other:?}"),
    }
}
