//! Tests over real loopback sockets with a recording [`Sink`].

mod datagram;
mod io;
mod lifecycle;

use std::io as stdio;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::contract::{Backend, Config, Flow, Id, Sink};
use crate::socket::{Addr, Listener, Socket};

use super::Epoll;

/// What the backend reported, in order (fields are read through `Debug` in failure messages).
#[derive(Debug)]
#[allow(dead_code)]
pub(super) enum Ev {
    Accepted(Id, Addr),
    AcceptError(Id, stdio::ErrorKind),
    Received(Id, Vec<u8>),
    Eof(Id),
    Sent(Id, usize),
    Failed(Id, stdio::ErrorKind),
    Closed(Id),
    Woken,
}

/// Records every report; keeps accepted sockets; pauses after `pause_after` received calls.
#[derive(Default)]
pub(super) struct Recorder {
    pub(super) events: Vec<Ev>,
    pub(super) accepted: Vec<Socket>,
    pub(super) pause_after: Option<usize>,
    received_calls: usize,
    /// Buffers handed back by `reclaim`.
    pub(super) reclaimed: Vec<bytes::Bytes>,
}

impl Sink for Recorder {
    fn reclaim(&mut self, bufs: Vec<bytes::Bytes>) {
        self.reclaimed.extend(bufs);
    }
    fn accepted(&mut self, listener: Id, socket: Socket, peer: Addr) {
        self.accepted.push(socket);
        self.events.push(Ev::Accepted(listener, peer));
    }
    fn accept_error(&mut self, listener: Id, error: stdio::Error) {
        self.events.push(Ev::AcceptError(listener, error.kind()));
    }
    fn received(&mut self, conn: Id, data: &[u8]) -> Flow {
        assert!(!data.is_empty(), "received an empty slice");
        self.received_calls += 1;
        self.events.push(Ev::Received(conn, data.to_vec()));
        match self.pause_after {
            Some(n) if self.received_calls >= n => Flow::Pause,
            _ => Flow::Continue,
        }
    }
    fn eof(&mut self, conn: Id) {
        self.events.push(Ev::Eof(conn));
    }
    fn sent(&mut self, conn: Id, n: usize) {
        self.events.push(Ev::Sent(conn, n));
    }
    fn failed(&mut self, conn: Id, error: stdio::Error) {
        self.events.push(Ev::Failed(conn, error.kind()));
    }
    fn closed(&mut self, conn: Id) {
        self.events.push(Ev::Closed(conn));
    }
    fn woken(&mut self) {
        self.events.push(Ev::Woken);
    }
    fn datagram(&mut self, _: Id, _: std::net::SocketAddr, _: &[u8], _: bool) -> Flow {
        panic!("a datagram on a stream test")
    }
    fn datagram_error(&mut self, _: Id, _: Option<std::net::SocketAddr>, e: std::io::Error) {
        panic!("a datagram error on a stream test: {e}")
    }
    fn connected(&mut self, _: Id, _: std::io::Result<()>) {
        panic!("connected on a stream test")
    }
}

impl Recorder {
    /// All bytes received on `conn`, concatenated.
    pub(super) fn bytes(&self, conn: Id) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.events {
            if let Ev::Received(c, d) = e {
                if *c == conn {
                    out.extend_from_slice(d);
                }
            }
        }
        out
    }

    pub(super) fn count(&self, pred: impl Fn(&Ev) -> bool) -> usize {
        self.events.iter().filter(|e| pred(e)).count()
    }
}

pub(super) const LONG: Duration = Duration::from_secs(5);

pub(super) fn open(config: &Config) -> Epoll {
    Epoll::open(config).expect("epoll opens")
}

/// Polls (10 ms at a time) until `done` holds; panics after [`LONG`].
pub(super) fn poll_until(ep: &mut Epoll, sink: &mut Recorder, done: impl Fn(&Recorder) -> bool) {
    let deadline = Instant::now() + LONG;
    while !done(sink) {
        assert!(
            Instant::now() < deadline,
            "timed out; events so far: {:?}",
            sink.events
        );
        ep.poll(Some(Duration::from_millis(10)), sink)
            .expect("poll");
    }
}

/// A loopback listener registered as listener 0.
pub(super) fn listen(ep: &mut Epoll) -> (Listener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    let l = Listener::Tcp(l);
    ep.add_listener(Id(0), &l).expect("add_listener");
    (l, addr)
}

/// A connected pair: the server side registered as `id`, the client side blocking.
pub(super) fn pair(ep: &mut Epoll, id: Id) -> (Socket, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (server, _) = l.accept().expect("accept");
    server.set_nonblocking(true).expect("nonblocking");
    let server = Socket::Tcp(server);
    ep.add_conn(id, &server).expect("add_conn");
    (server, client)
}

/// Sets `SO_SNDBUF` (the kernel doubles it and applies a minimum).
pub(super) fn set_sndbuf(fd: std::os::fd::BorrowedFd<'_>, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: `fd` is live for the borrow; the option value points to a `c_int` valid for
    // reads of `size_of::<c_int>()` bytes, the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt: {}", stdio::Error::last_os_error());
}

/// The backend may be opened on one thread and moved to its loop's thread.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Epoll>();
};
