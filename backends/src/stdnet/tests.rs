//! Tests over real loopback TCP and Unix sockets with a recording sink.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::StdNet;
use crate::contract::{Backend, Config, Flow, Id, Sink};
use crate::socket::{Addr, Listener, Socket};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Data,
    Eof,
    Sent(usize),
    Failed,
    Closed,
}

#[derive(Default)]
struct Rec {
    accepted: Vec<(Id, Socket, Addr)>,
    accept_errors: usize,
    data: HashMap<Id, Vec<u8>>,
    chunks: usize,
    max_chunk: usize,
    events: Vec<(Id, Ev)>,
    woken: usize,
    pause: bool,
}

impl Rec {
    fn count(&self, conn: Id, ev: Ev) -> usize {
        self.events.iter().filter(|e| **e == (conn, ev)).count()
    }
    fn has(&self, conn: Id, ev: Ev) -> bool {
        self.count(conn, ev) > 0
    }
    fn bytes(&self, conn: Id) -> usize {
        self.data.get(&conn).map_or(0, Vec::len)
    }
}

impl Sink for Rec {
    fn accepted(&mut self, listener: Id, socket: Socket, peer: Addr) {
        self.accepted.push((listener, socket, peer));
    }
    fn accept_error(&mut self, _: Id, _: io::Error) {
        self.accept_errors += 1;
    }
    fn received(&mut self, conn: Id, data: &[u8]) -> Flow {
        assert!(!data.is_empty());
        self.max_chunk = self.max_chunk.max(data.len());
        self.data.entry(conn).or_default().extend_from_slice(data);
        self.chunks += 1;
        self.events.push((conn, Ev::Data));
        if self.pause {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }
    fn eof(&mut self, conn: Id) {
        self.events.push((conn, Ev::Eof));
    }
    fn sent(&mut self, conn: Id, n: usize) {
        self.events.push((conn, Ev::Sent(n)));
    }
    fn failed(&mut self, conn: Id, _: io::Error) {
        self.events.push((conn, Ev::Failed));
    }
    fn closed(&mut self, conn: Id) {
        self.events.push((conn, Ev::Closed));
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

const C: Id = Id(1 << 32 | 7);
const L: Id = Id(3);

fn open() -> StdNet {
    StdNet::open(&Config::default()).unwrap()
}

/// Polls until `done` holds, failing the test after two seconds.
fn poll_until(b: &mut StdNet, rec: &mut Rec, done: impl Fn(&Rec) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !done(rec) {
        assert!(
            Instant::now() < deadline,
            "timed out; events: {:?}",
            rec.events
        );
        b.poll(Some(Duration::from_millis(50)), rec).unwrap();
    }
}

fn tcp_listener() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// A TCP connection accepted through the backend and added as `C`; returns the client side.
fn tcp_conn(b: &mut StdNet, rec: &mut Rec) -> (TcpStream, Listener) {
    let (l, addr) = tcp_listener();
    let l = Listener::Tcp(l);
    b.add_listener(L, &l).unwrap();
    let client = TcpStream::connect(addr).unwrap();
    poll_until(b, rec, |r| !r.accepted.is_empty());
    let (id, sock, peer) = rec.accepted.pop().unwrap();
    assert_eq!(id, L);
    assert_eq!(peer, Addr::Inet(client.local_addr().unwrap()));
    b.add_conn(C, &sock).unwrap();
    rec.accepted.push((id, sock, peer)); // keep the loop's socket alive
    (client, l)
}

fn close_and_wait(b: &mut StdNet, rec: &mut Rec, conn: Id) {
    b.close(conn);
    assert!(!rec.has(conn, Ev::Closed), "closed reported during close");
    poll_until(b, rec, |r| r.has(conn, Ev::Closed));
    assert_eq!(rec.count(conn, Ev::Closed), 1);
    assert_eq!(b.stats().conns, 0);
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn tcp_echo_round_trip() {
    let (mut b, mut rec) = (open(), Rec::default());
    let (mut client, _l) = tcp_conn(&mut b, &mut rec);
    assert_eq!(b.stats().conns, 1);
    client.write_all(b"hello").unwrap();
    poll_until(&mut b, &mut rec, |r| r.bytes(C) == 5);
    b.send(
        C,
        vec![Bytes::from_static(b"hel"), Bytes::from_static(b"lo")],
    );
    poll_until(&mut b, &mut rec, |r| r.has(C, Ev::Sent(5)));
    let mut buf = [0; 5];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    close_and_wait(&mut b, &mut rec, C);
    rec.accepted.clear(); // the loop drops its socket after `closed`
    assert_eq!(client.read(&mut buf).unwrap(), 0);
}

#[cfg(unix)]
#[test]
fn unix_echo_round_trip() {
    use std::os::unix::net::{UnixListener, UnixStream};
    let path = std::env::temp_dir().join(format!("gnet-stdnet-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    l.set_nonblocking(true).unwrap();
    let l = Listener::Unix(l);
    let (mut b, mut rec) = (open(), Rec::default());
    b.add_listener(L, &l).unwrap();
    let mut client = UnixStream::connect(&path).unwrap();
    poll_until(&mut b, &mut rec, |r| !r.accepted.is_empty());
    let sock = &rec.accepted[0].1;
    b.add_conn(C, sock).unwrap();
    client.write_all(b"ping").unwrap();
    poll_until(&mut b, &mut rec, |r| r.bytes(C) == 4);
    b.send(C, vec![Bytes::from_static(b"pong")]);
    poll_until(&mut b, &mut rec, |r| r.has(C, Ev::Sent(4)));
    let mut buf = [0; 4];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    client.shutdown(Shutdown::Write).unwrap();
    poll_until(&mut b, &mut rec, |r| r.has(C, Ev::Eof));
    close_and_wait(&mut b, &mut rec, C);
    // A second connection closed while its reader is blocked in a read.
    let _client2 = UnixStream::connect(&path).unwrap();
    poll_until(&mut b, &mut rec, |r| r.accepted.len() == 2);
    let c2 = Id::new(8, 1);
    b.add_conn(c2, &rec.accepted[1].1).unwrap();
    thread::sleep(Duration::from_millis(20));
    let start = Instant::now();
    close_and_wait(&mut b, &mut rec, c2);
    assert!(start.elapsed() < Duration::from_millis(500));
    assert_eq!(rec.events.last(), Some(&(c2, Ev::Closed)));
    b.remove_listener(L);
    drop(l);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn one_mib_both_ways() {
    const N: usize = 1 << 20;
    let (mut b, mut rec) = (open(), Rec::default());
    let (client, _l) = tcp_conn(&mut b, &mut rec);
    let mut w = client.try_clone().unwrap();
    let writer = thread::spawn(move || w.write_all(&payload(N)).unwrap());
    poll_until(&mut b, &mut rec, |r| r.bytes(C) == N);
    writer.join().unwrap();
    assert!(rec.data[&C] == payload(N));
    assert!(rec.max_chunk <= Config::default().read_buffer_size);
    let mut r = client;
    let reader = thread::spawn(move || {
        let mut got = vec![0; N];
        r.read_exact(&mut got).unwrap();
        got
    });
    let data = Bytes::from(payload(N));
    let bufs = (0..4)
        .map(|i| data.slice(i * N / 4..(i + 1) * N / 4))
        .collect();
    b.send(C, bufs);
    poll_until(&mut b, &mut rec, |r| r.has(C, Ev::Sent(N)));
    assert!(reader.join().unwrap() == payload(N));
    close_and_wait(&mut b, &mut rec, C);
}

#[test]
fn eof_after_data_and_send_after_eof() {
    let (mut b, mut rec) = (open(), Rec::default());
    let (mut client, _l) = tcp_conn(&mut b, &mut rec);
    client.write_all(b"abc").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    poll_until(&mut b, &mut rec, |r| r.has(C, Ev::Eof));
    assert_eq!(rec.data[&C], b"abc");
    assert_eq!(rec.events.last(), Some(&(C, Ev::Eof)));
    b.send(C, vec![Bytes::from_static(b"bye")]);
    poll_until(&mut b, &mut rec, |r| r.has(C, Ev::Sent(3)));
    let mut buf = [0; 3];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"bye");
    close_and_wait(&mut b, &mut rec, C);
    assert_eq!(rec.count(C, Ev::Eof), 1);
    assert!(!rec.has(C, Ev::Failed));
}

#[test]
fn pause_and_resume() {
    const N: usize = 4 << 20;
    let (mut b, mut rec) = (open(), Rec::default());
    let (client, _l) = tcp_conn(&mut b, &mut rec);
    rec.pause = true;
    let mut w = client.try_clone().unwrap();
    let writer = thread::spawn(move || w.write_all(&payload(N)).unwrap());
    poll_until(&mut b, &mut rec, |r| r.bytes(C) > 0);
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        b.poll(Some(Duration::from_millis(20)), &mut rec).unwrap();
    }
    // Paused after the first chunk: at most the chunks already taken from the kernel follow.
    assert!(rec.chunks <= 3, "{} chunks while paused", rec.chunks);
    assert!(rec.bytes(C) < N);
    rec.pause = false;
    b.resume(C);
    poll_until(&mut b, &mut rec, |r| r.bytes(C) == N);
    writer.join().unwrap();
    assert!(rec.data[&C] == payload(N));
    close_and_wait(&mut b, &mut rec, C);
}

#[test]
fn close_wakes_blocked_reader_and_writer() {
    let (mut b, mut rec) = (open(), Rec::default());
    let (client, _l) = tcp_conn(&mut b, &mut rec);
    // The client never reads: the writer blocks once the socket buffers are full.
    b.send(C, vec![Bytes::from(vec![7u8; 32 << 20])]);
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    close_and_wait(&mut b, &mut rec, C);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert!(!rec.has(C, Ev::Sent(32 << 20)));
    assert!(!rec.has(C, Ev::Failed));
    // Nothing about C after `closed`.
    b.poll(Some(Duration::from_millis(50)), &mut rec).unwrap();
    assert_eq!(rec.events.last(), Some(&(C, Ev::Closed)));
    drop(client);
}

#[test]
fn close_after_eof_reports_closed_in_next_poll() {
    let (mut b, mut rec) = (open(), Rec::default());
    let (client, _l) = tcp_conn(&mut b, &mut rec);
    client.shutdown(Shutdown::Write).unwrap();
    poll_until(&mut b, &mut rec, |r| r.has(C, Ev::Eof));
    // Let the reader thread exit so that `close` finds no thread left.
    thread::sleep(Duration::from_millis(20));
    b.poll(Some(Duration::ZERO), &mut rec).unwrap();
    b.close(C);
    assert!(!rec.has(C, Ev::Closed));
    let start = Instant::now();
    b.poll(Some(Duration::from_secs(5)), &mut rec).unwrap();
    assert!(start.elapsed() < Duration::from_millis(500));
    assert!(rec.has(C, Ev::Closed));
    assert_eq!(b.stats().conns, 0);
}

#[test]
fn reset_reports_failed_once() {
    let (mut b, mut rec) = (open(), Rec::default());
    let (client, _l) = tcp_conn(&mut b, &mut rec);
    b.send(C, vec![Bytes::from_static(b"unread")]);
    poll_until(&mut b, &mut rec, |r| r.has(C, Ev::Sent(6)));
    thread::sleep(Duration::from_millis(20));
    drop(client); // unread data: the kernel resets the connection
    poll_until(&mut b, &mut rec, |r| {
        r.has(C, Ev::Failed) || r.has(C, Ev::Eof)
    });
    close_and_wait(&mut b, &mut rec, C);
    assert!(rec.count(C, Ev::Failed) + rec.count(C, Ev::Eof) == 1);
}

#[test]
fn waker_from_another_thread() {
    let (mut b, mut rec) = (open(), Rec::default());
    let w = b.waker();
    let start = Instant::now();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        w.wake().unwrap();
    });
    b.poll(None, &mut rec).unwrap();
    assert_eq!(rec.woken, 1);
    assert!(start.elapsed() < Duration::from_secs(1));
    t.join().unwrap();
    // Coalesced: many wakes, one `woken`; and a pending wake-up keeps poll from blocking.
    let w = b.waker();
    for _ in 0..5 {
        w.wake().unwrap();
    }
    b.poll(None, &mut rec).unwrap();
    assert_eq!(rec.woken, 2);
    let start = Instant::now();
    b.poll(Some(Duration::from_millis(30)), &mut rec).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(rec.woken, 2);
}

#[test]
fn remove_listener_frees_the_port_and_drops_queued() {
    let (mut b, mut rec) = (open(), Rec::default());
    let (l, addr) = tcp_listener();
    let l = Listener::Tcp(l);
    b.add_listener(L, &l).unwrap();
    // Accepted by the thread but not yet reported: dropped by remove_listener.
    let mut client = TcpStream::connect(addr).unwrap();
    thread::sleep(Duration::from_millis(50));
    b.remove_listener(L);
    b.poll(Some(Duration::from_millis(20)), &mut rec).unwrap();
    assert!(rec.accepted.is_empty());
    client
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    assert!(matches!(client.read(&mut [0; 1]), Ok(0) | Err(_)));
    drop(l);
    // Listening again on the same port works: no handle of the old listener survives.
    let again = TcpListener::bind(addr).unwrap();
    drop(again);
    // And a listener can be added again under the same id.
    let (l2, addr2) = tcp_listener();
    let l2 = Listener::Tcp(l2);
    b.add_listener(L, &l2).unwrap();
    let _c = TcpStream::connect(addr2).unwrap();
    poll_until(&mut b, &mut rec, |r| r.accepted.len() == 1);
    assert_eq!(rec.accept_errors, 0);
}

#[test]
fn poll_times_out_when_idle() {
    let (mut b, mut rec) = (open(), Rec::default());
    let start = Instant::now();
    b.poll(Some(Duration::from_millis(40)), &mut rec).unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(40) && took < Duration::from_secs(1));
    b.poll(Some(Duration::ZERO), &mut rec).unwrap();
    assert!(rec.events.is_empty() && rec.woken == 0);
}

#[test]
fn chunks_never_exceed_read_buffer_size() {
    const N: usize = 300_000;
    let config = Config {
        read_buffer_size: 1000,
        ..Config::default()
    };
    let (mut b, mut rec) = (StdNet::open(&config).unwrap(), Rec::default());
    let (client, _l) = tcp_conn(&mut b, &mut rec);
    let mut w = client.try_clone().unwrap();
    let writer = thread::spawn(move || w.write_all(&payload(N)).unwrap());
    poll_until(&mut b, &mut rec, |r| r.bytes(C) == N);
    writer.join().unwrap();
    assert!(rec.data[&C] == payload(N));
    assert!(rec.max_chunk <= 1000, "{}", rec.max_chunk);
    close_and_wait(&mut b, &mut rec, C);
    assert!(StdNet::open(&Config {
        read_buffer_size: 0,
        ..Config::default()
    })
    .is_err());
}
