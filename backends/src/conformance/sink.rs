//! The recording sink of the suite: every report in order, the bytes per connection, the
//! datagrams, and the contract's per-id rules checked as the reports come in.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::contract::{Flow, Id, Sink};
use crate::socket::{Addr, Socket};

/// One report, in the order the backend made it. Received bytes are kept per connection in
/// the [`Recorder`], datagrams in [`Recorder::datagrams`]; the event keeps only their length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ev {
    Accepted(Id, Addr),
    AcceptError(Id, io::ErrorKind),
    Received(Id, usize),
    Eof(Id),
    Sent(Id, usize),
    /// `reclaim`: how many buffers, how many bytes.
    Reclaimed(usize, usize),
    Failed(Id, io::ErrorKind),
    Closed(Id),
    Woken,
    /// `datagram`: the socket, the source, the length delivered, `truncated`.
    Datagram(Id, SocketAddr, usize, bool),
    /// `datagram_error`: the socket, the destination (`None`: about the socket).
    DatagramError(Id, Option<SocketAddr>, io::ErrorKind),
    /// `connected`: `None` when connected, else the error's kind.
    Connected(Id, Option<io::ErrorKind>),
}

/// One datagram as [`Sink::datagram`] delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dgram {
    pub(crate) id: Id,
    pub(crate) from: SocketAddr,
    pub(crate) data: Vec<u8>,
    pub(crate) truncated: bool,
}

impl Ev {
    /// The connection or listener the event is about (`None` for `reclaim` and `woken`).
    pub(crate) fn id(&self) -> Option<Id> {
        match self {
            Ev::Accepted(id, _)
            | Ev::AcceptError(id, _)
            | Ev::Received(id, _)
            | Ev::Eof(id)
            | Ev::Sent(id, _)
            | Ev::Failed(id, _)
            | Ev::Closed(id)
            | Ev::Datagram(id, ..)
            | Ev::DatagramError(id, ..)
            | Ev::Connected(id, _) => Some(*id),
            Ev::Reclaimed(..) | Ev::Woken => None,
        }
    }
}

/// Records every report and panics, naming the event, as soon as a backend breaks one of the
/// contract's rules for an id: an empty slice; anything after `closed`; `received` or `eof`
/// after `eof` or `failed`; a `datagram` after `failed`; a second `failed`; `sent` with no
/// send (or `send_to` batch) in flight (see [`Recorder::expect_sent`]) or with another total
/// than the send's; a `datagram_error` about a datagram with no batch in flight;
/// `connected` with no connect in flight (see [`Recorder::expect_connected`]).
pub(crate) struct Recorder {
    pub(crate) events: Vec<Ev>,
    /// Accepted sockets not yet taken by the test: the loop owns them.
    pub(crate) accepted: VecDeque<(Id, Socket, Addr)>,
    /// The answer to every `received` and `datagram`.
    pub(crate) answer: Flow,
    /// Every datagram delivered, in order, with its bytes.
    pub(crate) datagrams: Vec<Dgram>,
    data: HashMap<Id, Vec<u8>>,
    /// Sends in flight and their totals.
    sending: HashMap<Id, usize>,
    /// Connects in flight.
    connecting: HashSet<Id>,
    ended: HashSet<Id>,
    failed: HashSet<Id>,
    closed: HashSet<Id>,
    largest_slice: usize,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            events: Vec::new(),
            accepted: VecDeque::new(),
            answer: Flow::Continue,
            datagrams: Vec::new(),
            data: HashMap::new(),
            sending: HashMap::new(),
            connecting: HashSet::new(),
            ended: HashSet::new(),
            failed: HashSet::new(),
            closed: HashSet::new(),
            largest_slice: 0,
        }
    }
}

impl Recorder {
    /// Everything received on `conn`, in order.
    pub(crate) fn bytes(&self, conn: Id) -> &[u8] {
        self.data.get(&conn).map_or(&[], Vec::as_slice)
    }

    /// How many bytes `conn` received.
    pub(crate) fn len(&self, conn: Id) -> usize {
        self.bytes(conn).len()
    }

    /// Forgets the bytes received on `conn` (a large stream, checked already).
    pub(crate) fn take_bytes(&mut self, conn: Id) -> Vec<u8> {
        self.data.remove(&conn).unwrap_or_default()
    }

    /// The largest slice one `received` delivered, on any connection.
    pub(crate) fn largest_slice(&self) -> usize {
        self.largest_slice
    }

    /// The sizes of the slices `conn` received, in order.
    pub(crate) fn slices(&self, conn: Id) -> Vec<usize> {
        let of = |e: &Ev| match e {
            Ev::Received(c, n) if *c == conn => Some(*n),
            _ => None,
        };
        self.events.iter().filter_map(of).collect()
    }

    pub(crate) fn count(&self, pred: impl Fn(&Ev) -> bool) -> usize {
        self.events.iter().filter(|e| pred(e)).count()
    }

    /// How many times exactly `ev` was reported.
    pub(crate) fn times(&self, ev: &Ev) -> usize {
        self.count(|e| e == ev)
    }

    /// The events about `id`, in order.
    pub(crate) fn of(&self, id: Id) -> Vec<Ev> {
        let mine = |e: &&Ev| e.id() == Some(id);
        self.events.iter().filter(mine).cloned().collect()
    }

    pub(crate) fn is_closed(&self, conn: Id) -> bool {
        self.closed.contains(&conn)
    }

    /// `eof` or `failed` was reported for `conn`.
    pub(crate) fn ended(&self, conn: Id) -> bool {
        self.ended.contains(&conn)
    }

    pub(crate) fn has_failed(&self, conn: Id) -> bool {
        self.failed.contains(&conn)
    }

    pub(crate) fn sent_count(&self, conn: Id) -> usize {
        self.count(|e| matches!(e, Ev::Sent(c, _) if *c == conn))
    }

    /// Whether the send handed to `conn` is still awaiting its `sent`.
    pub(crate) fn sending(&self, conn: Id) -> bool {
        self.sending.contains_key(&conn)
    }

    pub(crate) fn woken(&self) -> usize {
        self.times(&Ev::Woken)
    }

    /// The buffers and bytes handed back by `reclaim`.
    pub(crate) fn reclaimed(&self) -> (usize, usize) {
        self.events.iter().fold((0, 0), |(b, n), e| match e {
            Ev::Reclaimed(bufs, bytes) => (b + bufs, n + bytes),
            _ => (b, n),
        })
    }

    /// Notes a send of `total` bytes handed to `conn` (a `send_to` batch's total, failed
    /// datagrams included): the one `sent` it may produce must carry that total. Panics when
    /// a send is already in flight (the loop never does that).
    pub(crate) fn expect_sent(&mut self, conn: Id, total: usize) {
        let before = self.sending.insert(conn, total);
        assert!(before.is_none(), "a second send in flight on {conn}");
    }

    /// Notes a connect started for `id`: one `connected` (or `closed`) may follow.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn expect_connected(&mut self, id: Id) {
        assert!(self.connecting.insert(id), "a second connect of {id}");
    }

    /// What `connected` reported for `id`: `None` before it came, `Some(Ok(()))` connected,
    /// else the error's kind.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn connected(&self, id: Id) -> Option<Result<(), io::ErrorKind>> {
        self.events.iter().find_map(|e| match e {
            Ev::Connected(c, result) if *c == id => Some(result.map_or(Ok(()), Err)),
            _ => None,
        })
    }

    /// The datagrams `id` received, in order.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn datagrams_of(&self, id: Id) -> Vec<&Dgram> {
        self.datagrams.iter().filter(|d| d.id == id).collect()
    }

    /// The `datagram_error`s reported for `id`: destination and kind.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn datagram_errors(&self, id: Id) -> Vec<(Option<SocketAddr>, io::ErrorKind)> {
        let of = |e: &Ev| match e {
            Ev::DatagramError(d, to, kind) if *d == id => Some((*to, *kind)),
            _ => None,
        };
        self.events.iter().filter_map(of).collect()
    }

    /// The last events, for failure messages.
    pub(crate) fn tail(&self) -> String {
        let mut out = String::new();
        let skip = self.events.len().saturating_sub(20);
        if skip > 0 {
            let _ = write!(out, "({skip} earlier) ");
        }
        for e in &self.events[skip..] {
            let _ = write!(out, "{e:?} ");
        }
        out
    }

    fn violation(&self, ev: &Ev, rule: &str) -> ! {
        panic!("contract: {ev:?} {rule}; events so far: {}", self.tail())
    }

    fn push(&mut self, ev: Ev) {
        if let Some(id) = ev.id() {
            if self.closed.contains(&id) {
                self.violation(&ev, "after closed");
            }
        }
        self.events.push(ev);
    }
}

impl Sink for Recorder {
    fn accepted(&mut self, listener: Id, socket: Socket, peer: Addr) {
        self.accepted.push_back((listener, socket, peer.clone()));
        self.push(Ev::Accepted(listener, peer));
    }

    fn accept_error(&mut self, listener: Id, error: io::Error) {
        self.push(Ev::AcceptError(listener, error.kind()));
    }

    fn received(&mut self, conn: Id, data: &[u8]) -> Flow {
        let ev = Ev::Received(conn, data.len());
        if data.is_empty() {
            self.violation(&ev, "is empty");
        }
        if self.ended.contains(&conn) {
            self.violation(&ev, "after eof or failed");
        }
        self.largest_slice = self.largest_slice.max(data.len());
        self.data.entry(conn).or_default().extend_from_slice(data);
        self.push(ev);
        self.answer
    }

    fn eof(&mut self, conn: Id) {
        let ev = Ev::Eof(conn);
        if !self.ended.insert(conn) {
            self.violation(&ev, "after eof or failed");
        }
        self.push(ev);
    }

    fn sent(&mut self, conn: Id, n: usize) {
        let ev = Ev::Sent(conn, n);
        match self.sending.remove(&conn) {
            Some(total) if total == n => {}
            Some(total) => self.violation(&ev, &format!("for a send of {total} bytes")),
            None => self.violation(&ev, "with no send in flight"),
        }
        self.push(ev);
    }

    fn reclaim(&mut self, bufs: Vec<Bytes>) {
        let bytes = bufs.iter().map(Bytes::len).sum();
        self.push(Ev::Reclaimed(bufs.len(), bytes));
    }

    fn failed(&mut self, conn: Id, error: io::Error) {
        let ev = Ev::Failed(conn, error.kind());
        if !self.failed.insert(conn) {
            self.violation(&ev, "a second time");
        }
        // A failed send may follow `eof` (the peer shut down its side, then reset); nothing
        // of the connection's receiving may follow a failure.
        self.ended.insert(conn);
        self.sending.remove(&conn);
        self.push(ev);
    }

    fn closed(&mut self, conn: Id) {
        self.push(Ev::Closed(conn));
        self.closed.insert(conn);
        self.sending.remove(&conn);
        self.connecting.remove(&conn);
    }

    fn woken(&mut self) {
        self.push(Ev::Woken);
    }

    fn datagram(&mut self, id: Id, from: SocketAddr, data: &[u8], truncated: bool) -> Flow {
        let ev = Ev::Datagram(id, from, data.len(), truncated);
        if self.failed.contains(&id) {
            self.violation(&ev, "after failed");
        }
        self.datagrams.push(Dgram {
            id,
            from,
            data: data.to_vec(),
            truncated,
        });
        self.push(ev);
        self.answer
    }

    fn datagram_error(&mut self, id: Id, to: Option<SocketAddr>, error: io::Error) {
        let ev = Ev::DatagramError(id, to, error.kind());
        if to.is_some() && !self.sending.contains_key(&id) {
            self.violation(&ev, "about a datagram with no batch in flight");
        }
        self.push(ev);
    }

    fn connected(&mut self, id: Id, result: io::Result<()>) {
        let ev = Ev::Connected(id, result.err().map(|e| e.kind()));
        if !self.connecting.remove(&id) {
            self.violation(&ev, "with no connect in flight");
        }
        self.push(ev);
    }
}
