//! Unit tests of the io_uring backend over real loopback sockets.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Uring;
use crate::contract::{Backend, Config, Flow, Id, OpenError, Sink};
use crate::socket::{Addr, Listener, Socket};

/// What the backend reported, in order (fields read through `Debug` in failure messages).
#[derive(Debug)]
#[allow(dead_code)]
pub(super) enum Ev {
    Data(Id, usize),
    Eof(Id),
    Sent(Id, usize),
    Failed(Id, io::ErrorKind),
    Closed(Id),
}

#[derive(Default)]
pub(super) struct Rec {
    pub accepted: Vec<(Id, Socket, Addr)>,
    pub accept_errors: usize,
    pub data: HashMap<Id, Vec<u8>>,
    pub events: Vec<Ev>,
    pub woken: usize,
    /// Answer `Flow::Pause` to every `received`.
    pub pause: bool,
    /// Bytes handed back by `reclaim`.
    pub reclaimed: usize,
}

impl Rec {
    pub fn count(&self, f: impl Fn(&Ev) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
    pub fn is_closed(&self, id: Id) -> bool {
        self.count(|e| matches!(e, Ev::Closed(c) if *c == id)) > 0
    }
    pub fn failures(&self) -> usize {
        self.count(|e| matches!(e, Ev::Failed(..)))
    }
    pub fn len(&self, id: Id) -> usize {
        self.data.get(&id).map_or(0, Vec::len)
    }
}

impl Sink for Rec {
    fn reclaim(&mut self, bufs: Vec<Bytes>) {
        self.reclaimed += bufs.iter().map(Bytes::len).sum::<usize>();
    }
    fn accepted(&mut self, l: Id, s: Socket, peer: Addr) {
        self.accepted.push((l, s, peer));
    }
    fn accept_error(&mut self, _: Id, e: io::Error) {
        eprintln!("accept error: {e}");
        self.accept_errors += 1;
    }
    fn received(&mut self, c: Id, d: &[u8]) -> Flow {
        assert!(!d.is_empty());
        self.data.entry(c).or_default().extend_from_slice(d);
        self.events.push(Ev::Data(c, d.len()));
        if self.pause {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }
    fn eof(&mut self, c: Id) {
        self.events.push(Ev::Eof(c));
    }
    fn sent(&mut self, c: Id, n: usize) {
        self.events.push(Ev::Sent(c, n));
    }
    fn failed(&mut self, c: Id, e: io::Error) {
        self.events.push(Ev::Failed(c, e.kind()));
    }
    fn closed(&mut self, c: Id) {
        self.events.push(Ev::Closed(c));
    }
    fn woken(&mut self) {
        self.woken += 1;
    }
    fn datagram(&mut self, _: Id, _: std::net::SocketAddr, _: &[u8], _: bool) -> Flow {
        panic!("a datagram on a stream test")
    }
    fn datagram_error(&mut self, _: Id, _: Option<std::net::SocketAddr>, e: io::Error) {
        panic!("a datagram error on a stream test: {e}")
    }
    fn connected(&mut self, _: Id, _: io::Result<()>) {
        panic!("connected on a stream test")
    }
}

pub(super) fn config(ring_buffers: u16, read_buffer_size: usize) -> Config {
    Config {
        read_buffer_size,
        ring_buffers,
        ring_entries: 256,
        ..Config::default()
    }
}

pub(super) fn open(cfg: &Config) -> Uring {
    match Uring::open(cfg) {
        Ok(u) => u,
        Err(e) => panic!("io_uring backend unavailable here: {e}"),
    }
}

/// Polls until `done` holds, at most 5 s.
pub(super) fn pump(
    u: &mut Uring,
    rec: &mut Rec,
    what: &str,
    mut done: impl FnMut(&mut Uring, &mut Rec) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(u, rec) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        u.poll(Some(Duration::from_millis(20)), rec).unwrap();
    }
}

/// A listening TCP socket on loopback registered with the backend as listener 0.
pub(super) fn listen(u: &mut Uring) -> (Listener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let l = Listener::Tcp(l);
    u.add_listener(Id(0), &l).unwrap();
    (l, addr)
}

/// Connects a client and registers the accepted server side as `Id::new(index, 1)`.
pub(super) fn connect(
    u: &mut Uring,
    rec: &mut Rec,
    addr: std::net::SocketAddr,
    index: usize,
) -> (TcpStream, Id, Socket) {
    let client = TcpStream::connect(addr).unwrap();
    pump(u, rec, "accept", |_, r| !r.accepted.is_empty());
    let (l, s, peer) = rec.accepted.remove(0);
    assert_eq!(l, Id(0));
    assert_eq!(peer, Addr::Inet(client.local_addr().unwrap()));
    let id = Id::new(index, 1);
    u.add_conn(id, &s).unwrap();
    (client, id, s)
}

pub(super) fn assert_whole(u: &Uring) {
    let s = u.stats();
    assert_eq!(s.buffers_free, s.buffers_total, "{s:?}");
}

#[test]
fn uring_echo_round_trip_and_close() {
    let mut u = open(&config(16, 4096));
    let mut rec = Rec::default();
    let (_l, addr) = listen(&mut u);
    let (mut client, id, sock) = connect(&mut u, &mut rec, addr, 3);
    client.write_all(b"hello").unwrap();
    pump(&mut u, &mut rec, "data", |_, r| r.len(id) == 5);
    assert_eq!(rec.data[&id], b"hello");
    u.send(
        id,
        vec![Bytes::from_static(b"hel"), Bytes::from_static(b"lo!")],
    );
    pump(&mut u, &mut rec, "sent", |_, r| {
        r.count(|e| matches!(e, Ev::Sent(c, 6) if *c == id)) == 1
    });
    let mut back = [0u8; 6];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello!");
    u.send(id, vec![Bytes::from_static(b"single")]);
    pump(&mut u, &mut rec, "sent", |_, r| {
        r.count(|e| matches!(e, Ev::Sent(_, 6))) == 2
    });
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"single");
    drop(client);
    pump(&mut u, &mut rec, "eof", |_, r| {
        r.count(|e| matches!(e, Ev::Eof(_))) == 1
    });
    u.close(id);
    pump(&mut u, &mut rec, "closed", |_, r| r.is_closed(id));
    assert_eq!(rec.failures(), 0);
    drop(sock);
    assert_whole(&u);
    assert_eq!(u.stats().conns, 0);
}

#[test]
fn uring_reused_send_operations_carry_only_their_own_bytes() {
    let mut u = open(&config(16, 4096));
    let mut rec = Rec::default();
    let (_l, addr) = listen(&mut u);
    let (mut client, id, _sock) = connect(&mut u, &mut rec, addr, 0);
    let mut expected = Vec::new();
    // Alternate many-segment, single-segment and empty sends so that a recycled operation
    // with a longer iovec array is reused for a shorter one (and the other way round).
    for round in 0..40u8 {
        let bufs: Vec<Bytes> = match round % 3 {
            0 => (0..7)
                .map(|k| Bytes::from(vec![round ^ k; 100 + usize::from(k)]))
                .collect(),
            1 => vec![Bytes::from(vec![round; 3000])],
            _ => vec![Bytes::new(), Bytes::new()],
        };
        for b in &bufs {
            expected.extend_from_slice(b);
        }
        u.send(id, bufs);
        let sends = usize::from(round) + 1;
        pump(&mut u, &mut rec, "sent", |_, r| {
            r.count(|e| matches!(e, Ev::Sent(c, _) if *c == id)) == sends
        });
        assert!(
            u.spare_sends.len() <= 1,
            "{} spare sends",
            u.spare_sends.len()
        );
    }
    let mut back = vec![0u8; expected.len()];
    client.read_exact(&mut back).unwrap();
    assert_eq!(back, expected);
    // Every sent buffer came back for reuse.
    assert_eq!(rec.reclaimed, expected.len());
    assert_eq!(u.spare_sends.len(), 1);
    assert!(u
        .spare_sends
        .iter()
        .all(|op| op.total == 0 && op.remaining().is_empty()));
}

#[test]
fn uring_poll_read_budget_leaves_the_rest_for_the_next_poll() {
    // Plain receives: the budget is checked per completion, and a bundle may fill many
    // buffers in one.
    let cfg = Config {
        poll_read_budget: 48,
        recv_bundles: false,
        ..config(64, 16)
    };
    let mut u = open(&cfg);
    let mut rec = Rec::default();
    let (_l, addr) = listen(&mut u);
    let (mut ca, a, _sa) = connect(&mut u, &mut rec, addr, 0);
    let (mut cb, b, _sb) = connect(&mut u, &mut rec, addr, 1);
    ca.write_all(&[1; 100]).unwrap();
    cb.write_all(&[2; 100]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut polls = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while rec.len(a) < 100 || rec.len(b) < 100 {
        assert!(Instant::now() < deadline, "timed out");
        let before = rec.len(a) + rec.len(b);
        u.poll(Some(Duration::from_millis(20)), &mut rec).unwrap();
        let got = rec.len(a) + rec.len(b) - before;
        // The budget is checked after each completion: one buffer (16 bytes) may overshoot.
        assert!(
            got < 48 + 16,
            "one poll delivered {got} bytes over a 48-byte budget"
        );
        polls += 1;
    }
    assert!(
        polls >= 4,
        "200 bytes at under 64 per poll take 4 polls, took {polls}"
    );
    assert_eq!(rec.data[&a], [1; 100]);
    assert_eq!(rec.data[&b], [2; 100]);
    assert_whole(&u);
}

#[test]
fn uring_eof_after_data_in_order() {
    let mut u = open(&config(16, 4096));
    let mut rec = Rec::default();
    let (_l, addr) = listen(&mut u);
    let (mut client, id, _sock) = connect(&mut u, &mut rec, addr, 0);
    client.write_all(b"abc").unwrap();
    client.write_all(b"def").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    pump(&mut u, &mut rec, "eof", |_, r| {
        r.count(|e| matches!(e, Ev::Eof(_))) == 1
    });
    assert_eq!(rec.data[&id], b"abcdef");
    assert!(matches!(rec.events.last(), Some(Ev::Eof(c)) if *c == id));
    // Sending still works after eof.
    u.send(id, vec![Bytes::from_static(b"bye")]);
    pump(&mut u, &mut rec, "sent", |_, r| {
        r.count(|e| matches!(e, Ev::Sent(..))) == 1
    });
    let mut back = Vec::new();
    u.close(id);
    pump(&mut u, &mut rec, "closed", |_, r| r.is_closed(id));
    drop(_sock);
    client.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"bye");
    assert_whole(&u);
}

#[test]
fn uring_pause_and_resume() {
    let mut u = open(&config(16, 4096));
    let mut rec = Rec::default();
    let (_l, addr) = listen(&mut u);
    let (client, id, _sock) = connect(&mut u, &mut rec, addr, 1);
    const TOTAL: usize = 512 * 1024;
    let writer = std::thread::spawn(move || {
        let mut client = client;
        let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
        client.write_all(&data).unwrap();
        client
    });
    rec.pause = true;
    pump(&mut u, &mut rec, "first data", |_, r| r.len(id) > 0);
    // Whatever was already in flight may still arrive; then nothing more.
    let settle = Instant::now() + Duration::from_millis(150);
    while Instant::now() < settle {
        u.poll(Some(Duration::from_millis(10)), &mut rec).unwrap();
    }
    let at_pause = rec.len(id);
    for _ in 0..10 {
        u.poll(Some(Duration::from_millis(10)), &mut rec).unwrap();
    }
    assert_eq!(rec.len(id), at_pause, "data arrived while paused");
    assert!(at_pause < TOTAL);
    assert_eq!(
        u.stats().ops_in_flight,
        2,
        "only the accept and the waker poll are armed"
    );
    rec.pause = false;
    u.resume(id);
    pump(&mut u, &mut rec, "all data", |_, r| r.len(id) == TOTAL);
    let expect: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    assert!(rec.data[&id] == expect, "bytes lost or reordered");
    let client = writer.join().unwrap();
    u.close(id);
    pump(&mut u, &mut rec, "closed", |_, r| r.is_closed(id));
    drop(client);
    assert_whole(&u);
}

#[test]
fn uring_close_with_recv_armed() {
    let mut u = open(&config(8, 4096));
    let mut rec = Rec::default();
    let (_l, addr) = listen(&mut u);
    let (_client, id, sock) = connect(&mut u, &mut rec, addr, 5);
    for _ in 0..3 {
        u.poll(Some(Duration::from_millis(5)), &mut rec).unwrap();
    }
    assert_eq!(u.stats().conns, 1);
    assert_eq!(u.stats().ops_in_flight, 3, "accept, waker poll, receive");
    u.close(id);
    pump(&mut u, &mut rec, "closed", |_, r| r.is_closed(id));
    drop(sock);
    let s = u.stats();
    assert_eq!((s.conns, s.ops_in_flight), (0, 2), "{s:?}");
    assert_whole(&u);
    // Closing a connection with nothing in flight is reported by the next poll, without blocking.
    let (_c2, id2, _s2) = connect(&mut u, &mut rec, addr, 5 | (1 << 20));
    u.close(id2);
    let t = Instant::now();
    u.poll(None, &mut rec).unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    pump(&mut u, &mut rec, "closed", |_, r| r.is_closed(id2));
}

#[test]
fn uring_waker_from_another_thread() {
    let mut u = open(&config(8, 4096));
    let mut rec = Rec::default();
    for round in 1..=3 {
        let w = u.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            for _ in 0..5 {
                w.wake().unwrap();
            }
        });
        let start = Instant::now();
        while rec.woken < round {
            u.poll(None, &mut rec).unwrap();
            assert!(start.elapsed() < Duration::from_secs(3));
        }
        t.join().unwrap();
    }
    // Coalesced: a burst before the loop runs gives one `woken`.
    let w = u.waker();
    w.wake().unwrap();
    w.wake().unwrap();
    u.poll(Some(Duration::from_millis(50)), &mut rec).unwrap();
    u.poll(Some(Duration::from_millis(20)), &mut rec).unwrap();
    assert_eq!(rec.woken, 4);
}

#[test]
fn uring_unix_listener_and_removal() {
    let dir = std::env::temp_dir().join(format!("gnet-uring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let _ = std::fs::remove_file(&path);
    let mut u = open(&config(8, 4096));
    let mut rec = Rec::default();
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    l.set_nonblocking(true).unwrap();
    let l = Listener::Unix(l);
    u.add_listener(Id(2), &l).unwrap();
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    pump(&mut u, &mut rec, "accept", |_, r| !r.accepted.is_empty());
    let (lid, s, peer) = rec.accepted.remove(0);
    assert_eq!((lid, peer), (Id(2), Addr::Unix(None)));
    assert!(matches!(s, Socket::Unix(_)));
    let id = Id::new(9, 7);
    u.add_conn(id, &s).unwrap();
    c.write_all(b"unix").unwrap();
    pump(&mut u, &mut rec, "data", |_, r| r.len(id) == 4);
    u.close(id);
    pump(&mut u, &mut rec, "closed", |_, r| r.is_closed(id));
    u.remove_listener(Id(2));
    drop(l);
    for _ in 0..5 {
        u.poll(Some(Duration::from_millis(5)), &mut rec).unwrap();
    }
    assert!(rec.accepted.is_empty());
    assert_eq!(
        u.stats().ops_in_flight,
        2,
        "only the polls on the waker and on the listeners' epoll instance"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn uring_open_reports_setup_flags() {
    let u = open(&Config::default());
    eprintln!("io_uring setup flags: {}", u.setup_flags());
    let s = u.stats();
    assert_eq!((s.buffers_total, s.buffers_free), (256, 256));
    // An invalid configuration is an operator error, not a fallback.
    let bad = Config {
        ring_buffers: 3,
        ..Config::default()
    };
    assert!(matches!(Uring::open(&bad), Err(OpenError::Failed(_))));
}

use crate::testing;

/// Set in a child process started by [`run_in_child`].
const CHILD: &str = "GNET_URING_TEST_CHILD";

/// True in the child process; in the parent, runs test `name` (a path such as
/// `uring::tests::x`) alone in a fresh process of this test binary, asserts that it passed and
/// returns its standard output, or `None` in the child.
pub(super) fn run_in_child(name: &str) -> Option<String> {
    if std::env::var_os(CHILD).is_some() {
        return None;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
    Some(stdout)
}

#[test]
fn uring_seccomp_denial_is_unavailable() {
    let name = concat!(module_path!(), "::uring_seccomp_denial_is_unavailable");
    if let Some(stdout) = run_in_child(name.split_once("::").map_or(name, |(_, rest)| rest)) {
        assert!(stdout.contains("child: Unavailable"), "{stdout}");
        assert!(stdout.contains("EPERM"), "{stdout}");
        return;
    }
    testing::deny_io_uring().expect("installing the seccomp filter");
    match Uring::open(&Config::default()) {
        Err(OpenError::Unavailable(why)) => {
            assert!(why.contains("EPERM"), "{why}");
            println!("child: Unavailable: {why}");
        }
        Err(e) => panic!("expected Unavailable, got {e:?}"),
        Ok(_) => panic!("io_uring opened despite the seccomp filter"),
    }
}

/// The start-up probe keeps `IORING_ENTER_NO_IOWAIT` where the kernel has it (6.15+) and drops
/// it where the kernel refuses it, and every kind of wait still behaves: a zero wait returns
/// at once, a timed one after its timeout, an unbounded one on a wake-up.
#[test]
fn uring_waits_keep_out_of_iowait_where_the_kernel_allows() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let version = super::probe::parse_release(&release).expect("a kernel release");
    let mut u = open(&config(8, 1024));
    assert_eq!(
        u.waits_without_iowait(),
        version >= (6, 15),
        "kernel {version:?}"
    );
    let mut rec = Rec::default();
    let t = Instant::now();
    u.poll(Some(Duration::ZERO), &mut rec).unwrap();
    u.poll(Some(Duration::ZERO), &mut rec).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "a zero wait blocked"
    );
    let t = Instant::now();
    u.poll(Some(Duration::from_millis(30)), &mut rec).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(25),
        "a timed wait returned early"
    );
    let waker = u.waker();
    let t0 = Instant::now();
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        waker.wake().unwrap();
    });
    while rec.woken == 0 {
        u.poll(None, &mut rec).unwrap();
    }
    assert!(t0.elapsed() >= Duration::from_millis(25));
    th.join().unwrap();
}
