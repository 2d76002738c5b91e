//! The fixture every test of the suite runs in: one backend, its [`Recorder`], the sockets the
//! loop owns, the counters of the backend at rest, and [`Fixture::pump`].

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::peer::tcp_client;
use super::sink::Recorder;
use crate::contract::{Backend, Config, Datagram, Id, Stats};
use crate::socket::{Addr, Listener, Socket};

/// How long [`Fixture::pump`] waits for its condition before it fails the test.
pub(crate) const PUMP_TIMEOUT: Duration = Duration::from_secs(10);
/// The timeout of each `poll` made by [`Fixture::pump`] and [`Fixture::settle`].
const TICK: Duration = Duration::from_millis(10);
/// When [`Fixture::poll_timed`] wakes a `poll` that did not return by itself.
const WATCHDOG: Duration = Duration::from_secs(3);

/// One backend as a loop drives it, with what the loop would own.
pub(crate) struct Fixture<B: Backend> {
    /// Declared first, so dropped first: the sockets it borrows outlive it.
    pub(crate) backend: B,
    pub(crate) rec: Recorder,
    /// The counters of the backend with no connection: its standing operations and buffers.
    rest: Stats,
    /// The sockets of the connections, datagram sockets and connects; the loop drops one only
    /// after its `closed`.
    sockets: HashMap<Id, Socket>,
    /// Ids `close` was called for (the loop calls it once per id).
    closing: HashSet<Id>,
}

impl<B: Backend> Fixture<B> {
    /// Opens the backend with the default configuration.
    pub(crate) fn new() -> Self {
        Self::open(Config::default())
    }

    /// Opens the backend with `config` and notes its counters at rest.
    pub(crate) fn open(config: Config) -> Self {
        let backend = B::open(&config).unwrap_or_else(|e| panic!("{}: open: {e}", B::KIND));
        let mut me = Fixture {
            backend,
            rec: Recorder::default(),
            rest: Stats::default(),
            sockets: HashMap::new(),
            closing: HashSet::new(),
        };
        me.backend
            .poll(Some(Duration::ZERO), &mut me.rec)
            .expect("poll");
        me.note_rest();
        assert!(
            me.rec.events.is_empty(),
            "a fresh backend reported {:?}",
            me.rec.events
        );
        me
    }

    /// Takes the current counters as those of the backend at rest (after a listener was
    /// added, which may arm a standing operation). Only while no connection is registered.
    fn note_rest(&mut self) {
        assert!(self.sockets.is_empty(), "listeners go first in these tests");
        self.rest = self.backend.stats();
        let s = self.rest;
        assert_eq!(s.conns, 0, "{}: {s:?}", B::KIND);
        assert_eq!(s.buffers_free, s.buffers_total, "{}: {s:?}", B::KIND);
    }

    /// Polls (10 ms at a time) until `done` holds; fails the test after [`PUMP_TIMEOUT`],
    /// saying what it waited for.
    pub(crate) fn pump(&mut self, what: &str, mut done: impl FnMut(&Recorder, &B) -> bool) {
        let deadline = Instant::now() + PUMP_TIMEOUT;
        while !done(&self.rec, &self.backend) {
            if Instant::now() >= deadline {
                panic!(
                    "{}: waited {PUMP_TIMEOUT:?} for {what}; {:?}; events: {}",
                    B::KIND,
                    self.backend.stats(),
                    self.rec.tail()
                );
            }
            self.backend.poll(Some(TICK), &mut self.rec).expect("poll");
        }
    }

    /// Polls for about `time`, whatever happens.
    pub(crate) fn settle(&mut self, time: Duration) {
        let end = Instant::now() + time;
        while Instant::now() < end {
            self.backend.poll(Some(TICK), &mut self.rec).expect("poll");
        }
    }

    /// One `poll(timeout)`, timed. A poll that blocks for more than [`WATCHDOG`] is woken by
    /// another thread, so a test of one that should not block fails instead of hanging.
    pub(crate) fn poll_timed(&mut self, timeout: Option<Duration>) -> Duration {
        let waker = self.backend.waker();
        let (returned, wait) = mpsc::channel::<()>();
        let watchdog = thread::spawn(move || {
            if wait.recv_timeout(WATCHDOG).is_err() {
                let _ = waker.wake();
            }
        });
        let start = Instant::now();
        self.backend.poll(timeout, &mut self.rec).expect("poll");
        let took = start.elapsed();
        let _ = returned.send(());
        watchdog.join().expect("watchdog");
        took
    }

    pub(crate) fn stats(&self) -> Stats {
        self.backend.stats()
    }

    /// Everything is reaped: no connection tracked, every buffer back, no operation in flight
    /// but the backend's standing ones.
    pub(crate) fn assert_reaped(&self) {
        self.assert_quiet(0);
    }

    /// `conns` connections are tracked, no buffer is lent out, and no operation is in flight
    /// but the standing ones (the connections are paused or done receiving).
    pub(crate) fn assert_quiet(&self, conns: usize) {
        self.assert_holding_no_buffer(conns);
        let (now, rest) = (self.stats(), self.rest);
        let what = format!("{}: {now:?}, at rest {rest:?}", B::KIND);
        assert_eq!(
            now.ops_in_flight, rest.ops_in_flight,
            "operations in flight: {what}"
        );
    }

    /// `conns` connections are tracked and no receive buffer is lent out (they are idle).
    pub(crate) fn assert_holding_no_buffer(&self, conns: usize) {
        let (now, rest) = (self.stats(), self.rest);
        let what = format!("{}: {now:?}, at rest {rest:?}", B::KIND);
        assert_eq!(now.conns, conns, "connections tracked: {what}");
        assert_eq!(now.buffers_total, rest.buffers_total, "{what}");
        assert_eq!(
            now.buffers_free, now.buffers_total,
            "buffers lent out: {what}"
        );
    }

    /// A loopback TCP listener registered as `id`.
    pub(crate) fn listen_tcp(&mut self, id: Id) -> (Listener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("local_addr");
        let l = Listener::Tcp(l);
        self.backend.add_listener(id, &l).expect("add_listener");
        self.note_rest();
        (l, addr)
    }

    /// A Unix listener on a fresh path, registered as `id`.
    #[cfg(unix)]
    pub(crate) fn listen_unix(&mut self, id: Id) -> (Listener, super::peer::TempPath) {
        let path = super::peer::TempPath::new("listen");
        let l = std::os::unix::net::UnixListener::bind(&path.0).expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let l = Listener::Unix(l);
        self.backend.add_listener(id, &l).expect("add_listener");
        self.note_rest();
        (l, path)
    }

    /// Waits for the next accepted connection, which must come from `listener`.
    pub(crate) fn accept(&mut self, listener: Id) -> (Socket, Addr) {
        self.pump("a connection accepted", |r, _| !r.accepted.is_empty());
        let (from, socket, peer) = self.rec.accepted.pop_front().expect("accepted");
        assert_eq!(from, listener, "accepted on the wrong listener id");
        (socket, peer)
    }

    /// Starts receiving on `socket` as connection `id`; the fixture keeps the socket.
    pub(crate) fn add(&mut self, id: Id, socket: Socket) {
        self.backend.add_conn(id, &socket).expect("add_conn");
        self.keep(id, socket);
    }

    fn keep(&mut self, id: Id, socket: Socket) {
        assert!(
            self.sockets.insert(id, socket).is_none(),
            "{id} added twice"
        );
    }

    /// Starts receiving datagrams on `socket` as datagram socket `id`; the fixture keeps the
    /// socket. What a backend sets up with its first datagram socket (io_uring's datagram
    /// buffer group, epoll's `recvmmsg` buffers) stays: part of the backend at rest from now.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn add_datagram(&mut self, id: Id, socket: Socket) {
        self.backend
            .add_datagram(id, &socket)
            .expect("add_datagram");
        self.keep(id, socket);
        self.rest.buffers_total = self.stats().buffers_total;
    }

    /// A bound, non-blocking loopback UDP socket registered as datagram socket `id`; returns
    /// its address.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn udp(&mut self, id: Id) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_nonblocking(true).expect("nonblocking");
        let addr = s.local_addr().expect("local_addr");
        self.add_datagram(id, Socket::Udp(s));
        addr
    }

    /// Starts connecting `socket` (made as the loop makes one: not connected, non-blocking)
    /// to `to` as `id`; the fixture keeps the socket.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn connect(&mut self, id: Id, socket: Socket, to: &Addr) {
        self.rec.expect_connected(id);
        self.backend.connect(id, &socket, to);
        self.keep(id, socket);
    }

    /// Waits for the `connected` of `id` and returns what it said.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn connected(&mut self, id: Id) -> Result<(), io::ErrorKind> {
        self.pump(&format!("connected({id})"), |r, _| {
            r.connected(id).is_some()
        });
        self.rec.connected(id).expect("connected")
    }

    /// Registers the socket of `id`, connected, again under the same id, as the loop does:
    /// as a stream connection, or (`datagram`) as a datagram socket.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn add_connected(&mut self, id: Id, datagram: bool) {
        assert_eq!(
            self.rec.connected(id),
            Some(Ok(())),
            "{id} is not connected"
        );
        let socket = &self.sockets[&id];
        let added = if datagram {
            self.backend.add_datagram(id, socket)
        } else {
            self.backend.add_conn(id, socket)
        };
        added.expect("add after connected");
        self.rest.buffers_total = self.stats().buffers_total;
    }

    /// A loopback TCP connection whose server side is registered as `id`; returns the
    /// client side (blocking, with timeouts).
    pub(crate) fn tcp_pair(&mut self, id: Id) -> TcpStream {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = tcp_client(l.local_addr().expect("local_addr"));
        let (server, _) = l.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        self.add(id, Socket::Tcp(server));
        client
    }

    /// A Unix stream pair whose one side is registered as `id`; returns the other.
    #[cfg(unix)]
    pub(crate) fn unix_pair(&mut self, id: Id) -> std::os::unix::net::UnixStream {
        let (server, client) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        server.set_nonblocking(true).expect("nonblocking");
        let timeout = Some(super::peer::IO_TIMEOUT);
        client.set_read_timeout(timeout).expect("timeout");
        client.set_write_timeout(timeout).expect("timeout");
        self.add(id, Socket::Unix(server));
        client
    }

    /// The socket of connection `id`, as the loop owns it.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn socket(&self, id: Id) -> &Socket {
        &self.sockets[&id]
    }

    /// Hands `bufs` to the backend, noting the total its `sent` must carry.
    pub(crate) fn send(&mut self, id: Id, bufs: Vec<Bytes>) {
        let total = bufs.iter().map(Bytes::len).sum();
        self.rec.expect_sent(id, total);
        self.backend.send(id, bufs);
    }

    /// Hands a `send_to` batch to the backend, noting the total its `sent` must carry: every
    /// datagram's length, those that fail included.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn send_to(&mut self, id: Id, batch: Vec<Datagram>) {
        let total = batch.iter().map(|d| d.data.len()).sum();
        self.rec.expect_sent(id, total);
        self.backend.send_to(id, batch);
    }

    /// Asks the backend to close `id` (once, as the loop does).
    pub(crate) fn close(&mut self, id: Id) {
        assert!(self.closing.insert(id), "close({id}) called twice");
        self.backend.close(id);
    }

    /// Closes `id` and waits for its `closed`.
    pub(crate) fn close_and_wait(&mut self, id: Id) {
        self.close(id);
        self.pump(&format!("closed({id})"), |r, _| r.is_closed(id));
    }

    /// Drops the socket of `id`, which must be reported closed (the loop's rule).
    pub(crate) fn drop_socket(&mut self, id: Id) {
        assert!(self.rec.is_closed(id), "{id} dropped before closed");
        drop(self.sockets.remove(&id));
    }
}
