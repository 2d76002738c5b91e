//! The readiness engine: the epoll and kqueue backends are [`Readiness`] on two selectors
//! (`crate::selector`). Its design is written on the type.

mod conn;
mod connect;
mod dgram;
mod mmsg;
mod report;
mod table;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::contract::{
    Backend, BackendKind, Capabilities, Config, Datagram, Id, OpenError, Sink, Stats, Wake,
};
use crate::socket::{Addr, Listener, Socket};

use crate::listeners::Listeners;
use crate::selector::waker::Waker;
use crate::selector::{Interest, Native, Ready, Selector, Token};
use conn::{Conn, ReadEnd};
use connect::{Connecting, Start};
use dgram::Dgram;
use mmsg::RecvArea;
use report::Report;
use table::{Entry, Table};

/// A readiness backend, epoll or kqueue (whichever this target has): one per event loop.
///
/// The readiness engine: the epoll and kqueue backends are this one type on two selectors
/// (`crate::selector`), with the system calls done here so the loop sees the same
/// completion-shaped events as on io_uring. The selector registers, waits and decodes events
/// into readable / writable / closing for a token; everything below is the engine's, the same
/// on both.
///
/// # Design
///
/// - **Registration.** A connection is registered once, in `add_conn`, for both directions,
///   edge-triggered, and the peer's FIN (`Interest::Stream`), and deregistered once, in
///   `close`: no re-registration on the hot path. Edge-triggered writability costs nothing
///   while nothing is pending: the kernel signals write space only after a send hit a full
///   buffer, and a writable event that rides along with a readable one is ignored unless a
///   send is in flight. The selector stores a `Token` with each registration: a table
///   index, a listener id, or the waker, so dispatch is an index into a table, not a lookup
///   by descriptor. Connections, datagram sockets and sockets being connected share one table
///   (`table.rs`), since the loop keeps their indexes unique together.
/// - **Receiving.** One read buffer per loop ([`Config::read_buffer_size`]), lent to
///   [`Sink::received`] for each `recv`. An edge marks the connection readable and puts it on a
///   ready list; each `poll` gives every connection on the list one pass of at most
///   [`Config::read_chunk`] bytes, and a connection with bytes left goes to the back of the list
///   for the next `poll` (which then does not block): the edge is remembered, not lost. One
///   `poll` reads at most [`Config::poll_read_budget`] bytes in all, so what handlers write
///   in reply is flushed before more is read.
///   [`Flow::Pause`](crate::Flow::Pause) stops the pass and keeps the readable mark; `resume`
///   queues the connection again. A read of 0 is `eof`, after every byte before it (kqueue may
///   say end-of-stream while bytes are still queued: they are read first).
/// - **Sending.** `send` writes at once (`sendmsg` that never raises `SIGPIPE`, up to
///   `IOV_MAX` buffers per call, until done or `EAGAIN`); a remainder waits for writability.
///   `sent` or `failed` produced inside `send` is queued and reported by the next `poll`.
/// - **Datagrams** (`dgram.rs`, `mmsg.rs`). `add_datagram` registers both directions, and the
///   socket takes its turn on the same ready list within the same budgets, each datagram
///   counting at least 1 KiB so that a flood of tiny ones ends a pass too. A pass receives
///   until `EAGAIN`: on Linux `recvmmsg` of up to 32 datagrams per call, each into a buffer
///   of `read_buffer_size` (at most 1 MiB of them, so 16 at 64 KiB; allocated with the first
///   datagram socket), elsewhere `recvmsg` of one; one [`Sink::datagram`] each, `truncated`
///   from `MSG_TRUNC`. `Flow::Pause` takes effect after the batch in hand. Errors the network
///   reports (ICMP) are [`Sink::datagram_error`]s and receiving goes on. `send_to` calls
///   `sendmmsg` (one message per datagram, up to 32 per call; elsewhere `sendmsg` of one)
///   until done or `EAGAIN`, then on writability; a datagram the kernel refuses is tried
///   once more, because a send also returns the socket's pending error (from an earlier
///   datagram) without sending, then reported and skipped.
/// - **Connecting** (`connect.rs`). A non-blocking `connect(2)`; in progress, the socket is
///   registered for writability and its event's `SO_ERROR` decides; done at once (Unix, UDP,
///   an immediate error), it is reported by the next `poll`. Reporting [`Sink::connected`]
///   forgets the id (deregistered), so the loop can add the socket again under it.
/// - **Closing.** `close` deregisters, drops the send in flight and queues `closed`. Queued
///   reports for an id closed since are dropped (a pending `connected` among them).
/// - **Waking.** The selector's signal with a coalescing flag (`selector/waker.rs`).
pub struct Readiness {
    selector: Native,
    waker: Arc<Waker>,
    /// Everything but listeners, by index: streams, datagram sockets, sockets connecting.
    table: Table,
    listeners: Listeners,
    /// Connections with bytes to read and datagram sockets with datagrams, in the order they
    /// get their next pass.
    ready: VecDeque<Id>,
    /// Reports produced outside `poll`, delivered by the next one.
    deferred: VecDeque<Report>,
    /// `closed` reports queued and not yet delivered (for [`Stats::conns`]).
    closing: usize,
    /// The loop's one read buffer.
    buf: Box<[u8]>,
    /// The datagram buffers, one per message of a `recvmmsg`, allocated with the first
    /// datagram socket.
    area: RecvArea,
    read_chunk: usize,
    poll_read_budget: usize,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(Native::KIND.name())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Puts `id` at the back of the ready list unless it is on it.
fn enqueue(ready: &mut VecDeque<Id>, queued: &mut bool, id: Id) {
    if !*queued {
        *queued = true;
        ready.push_back(id);
    }
}

impl Readiness {
    fn deliver_deferred<S: Sink>(&mut self, sink: &mut S) {
        while let Some(report) = self.deferred.pop_front() {
            let deliver = match &report {
                Report::Closed(_) => {
                    self.closing -= 1;
                    // The loop drops the socket when told: a descriptor is free again.
                    self.listeners.connection_closed();
                    true
                }
                // The id is forgotten as `connected` is reported; a connect closed since gets
                // nothing.
                Report::Connected(id, _) => self.forget_connecting(*id),
                // Nothing more for an id closed since the report was queued.
                other => self.table.contains(other.id()),
            };
            if deliver {
                report.deliver(sink);
            }
        }
    }

    fn dispatch<S: Sink>(&mut self, token: Token, ready: Ready, sink: &mut S) -> io::Result<()> {
        match token {
            Token::Waker => {
                self.waker.reset()?;
                sink.woken();
            }
            Token::Listener(index) => self.listeners.on_ready(index, sink),
            Token::Conn(index) => match self.table.by_index(index) {
                None => {}
                Some(Entry::Stream(conn)) => {
                    // Writes first: finishing a send frees memory and may unblock the peer.
                    if ready.writable() && conn.sending() {
                        if let Some(report) = conn.flush() {
                            report.deliver(sink);
                        }
                    }
                    conn.on_ready(ready.readable(), ready.closing());
                    if conn.wants_read() {
                        enqueue(&mut self.ready, &mut conn.queued, conn.id);
                    }
                }
                Some(Entry::Connecting(c)) => {
                    if let Some(result) = c.outcome(ready) {
                        let id = c.id;
                        self.forget_connecting(id);
                        sink.connected(id, result);
                    }
                }
                Some(Entry::Datagram(d)) => {
                    if ready.writable() && d.sending() {
                        d.flush(&mut |report| report.deliver(sink));
                    }
                    d.on_ready(ready.readable());
                    if d.wants_read() {
                        enqueue(&mut self.ready, &mut d.queued, d.id);
                    }
                }
            },
        }
        Ok(())
    }

    /// One read pass for each connection on the ready list, until the poll's read budget is
    /// spent; those with bytes left go to the back, those not reached stay at the front.
    fn read_ready<S: Sink>(&mut self, sink: &mut S) {
        let mut left = self.poll_read_budget;
        for _ in 0..self.ready.len() {
            if left == 0 {
                break;
            }
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let chunk = self.read_chunk.min(left);
            let (end, n) = match self.table.get_mut(id) {
                Some(Entry::Stream(conn)) => {
                    let pass = conn.read(&mut self.buf, chunk, sink);
                    conn.queued = pass.0 == ReadEnd::Budget;
                    pass
                }
                Some(Entry::Datagram(d)) => {
                    let pass = d.receive(&mut self.area, chunk, sink);
                    d.queued = pass.0 == ReadEnd::Budget;
                    pass
                }
                Some(Entry::Connecting(_)) | None => continue,
            };
            left = left.saturating_sub(n);
            if end == ReadEnd::Budget {
                self.ready.push_back(id);
            }
        }
    }

    /// Forgets the socket `connect` was connecting as `id` (deregistering it if it was
    /// registered), before `connected` is reported; `false` if there is none (it was closed).
    fn forget_connecting(&mut self, id: Id) -> bool {
        if !matches!(self.table.get_mut(id), Some(Entry::Connecting(_))) {
            return false;
        }
        if let Some((fd, interest)) = self.table.remove(id).as_ref().and_then(Entry::registration) {
            if let Err(e) = self.selector.deregister(fd, interest) {
                log::warn!(
                    "{}: deregistering connected socket {id:?}: {e}",
                    Native::KIND
                );
            }
        }
        true
    }

    /// The wait for this poll: none when something is already due.
    fn wait_time(&self, timeout: Option<Duration>) -> Option<Duration> {
        if !self.deferred.is_empty() || !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        match self.listeners.next_retry() {
            None => timeout,
            Some(at) => {
                let until = at.saturating_duration_since(Instant::now());
                Some(timeout.map_or(until, |t| t.min(until)))
            }
        }
    }
}

impl Backend for Readiness {
    const KIND: BackendKind = Native::KIND;
    // A direct send replaces the sendmsg the queued bytes would cost later: worth it as soon
    // as the copy into the queue costs more than nothing.
    const DIRECT_SEND: Option<usize> = Some(4096);

    fn open(config: &Config) -> Result<Self, OpenError> {
        let (selector, waker) = Native::open()?;
        Ok(Readiness {
            selector,
            waker: Arc::new(waker),
            table: Table::default(),
            listeners: Listeners::default(),
            ready: VecDeque::new(),
            deferred: VecDeque::new(),
            closing: 0,
            buf: vec![0; config.read_buffer_size.max(1)].into_boxed_slice(),
            area: RecvArea::new(config.read_buffer_size),
            read_chunk: config.read_chunk,
            poll_read_budget: config.poll_read_budget.max(1),
        })
    }

    fn waker(&self) -> Arc<dyn Wake> {
        self.waker.clone()
    }

    fn add_listener(&mut self, id: Id, listener: &Listener) -> io::Result<()> {
        if self.listeners.contains(id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "listener id in use",
            ));
        }
        self.selector.register(
            listener.as_fd(),
            Interest::Listener,
            Token::Listener(id.index()),
        )?;
        self.listeners.insert(id, listener.as_raw_fd());
        Ok(())
    }

    fn remove_listener(&mut self, id: Id) {
        let Some(fd) = self.listeners.remove(id) else {
            log::warn!(
                "{}: remove_listener({}) for an unknown listener",
                Self::KIND,
                id.0
            );
            return;
        };
        // SAFETY: the loop keeps the listener open until this call returns.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if let Err(e) = self.selector.deregister(fd, Interest::Listener) {
            log::warn!("{}: deregistering listener {}: {e}", Self::KIND, id.0);
        }
    }

    fn add_conn(&mut self, id: Id, socket: &Socket) -> io::Result<()> {
        if !self.table.is_free(id.index()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "connection index in use",
            ));
        }
        // Readiness that already holds (bytes that arrived before this call) is reported by
        // the next wait: registration checks it, also for edge-triggered interest.
        crate::sys::set_nosigpipe(socket.as_fd())?;
        self.selector
            .register(socket.as_fd(), Interest::Stream, Token::Conn(id.index()))?;
        self.table
            .insert(Entry::Stream(Conn::new(id, socket.as_raw_fd())));
        Ok(())
    }

    fn send(&mut self, conn: Id, bufs: Vec<Bytes>) {
        let Some(c) = self.table.stream_mut(conn) else {
            log::warn!("{}: send on unknown stream connection {conn:?}", Self::KIND);
            return;
        };
        if let Some(report) = c.send(bufs) {
            self.deferred.push_back(report);
        }
    }

    fn resume(&mut self, id: Id) {
        let (wants, queued) = match self.table.get_mut(id) {
            Some(Entry::Stream(c)) => (c.resume(), &mut c.queued),
            Some(Entry::Datagram(d)) => (d.resume(), &mut d.queued),
            Some(Entry::Connecting(_)) | None => return,
        };
        if wants {
            enqueue(&mut self.ready, queued, id);
        }
    }

    fn close(&mut self, conn: Id) {
        let Some(entry) = self.table.remove(conn) else {
            log::warn!("{}: close of unknown connection {conn:?}", Self::KIND);
            return;
        };
        if let Some((fd, interest)) = entry.registration() {
            if let Err(e) = self.selector.deregister(fd, interest) {
                log::warn!("{}: deregistering {conn:?}: {e}", Self::KIND);
            }
        }
        // Dropping the entry drops the send in flight; the loop still owns the descriptor.
        drop(entry);
        self.closing += 1;
        self.deferred.push_back(Report::Closed(conn));
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    fn add_datagram(&mut self, id: Id, socket: &Socket) -> io::Result<()> {
        if !socket.is_datagram() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "add_datagram: not a datagram socket",
            ));
        }
        if !self.table.is_free(id.index()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "datagram socket index in use",
            ));
        }
        // Before registering: once added, the socket needs nothing more.
        self.area.reserve();
        self.selector
            .register(socket.as_fd(), Interest::Datagram, Token::Conn(id.index()))?;
        self.table
            .insert(Entry::Datagram(Dgram::new(id, socket.as_raw_fd())));
        Ok(())
    }

    fn send_to(&mut self, id: Id, batch: Vec<Datagram>) {
        let Some(d) = self.table.dgram_mut(id) else {
            log::warn!("{}: send_to on unknown datagram socket {id:?}", Self::KIND);
            return;
        };
        let deferred = &mut self.deferred;
        d.send(batch, &mut |report| deferred.push_back(report));
    }

    fn connect(&mut self, id: Id, socket: &Socket, to: &Addr) {
        if !self.table.is_free(id.index()) {
            debug_assert!(false, "{}: connect on {id:?}, an index in use", Self::KIND);
            log::error!(
                "{}: connect on {id:?}, an index in use: ignored",
                Self::KIND
            );
            return;
        }
        let done = match connect::start(socket, to) {
            Start::Pending => self
                .selector
                .register(socket.as_fd(), Interest::Connect, Token::Conn(id.index()))
                .err()
                .map(Err),
            Start::Done(result) => Some(result),
        };
        let registered = done.is_none();
        self.table.insert(Entry::Connecting(Connecting::new(
            id,
            socket.as_raw_fd(),
            registered,
        )));
        // Reported by the next poll, unless `close` comes first.
        if let Some(result) = done {
            self.deferred.push_back(Report::Connected(id, result));
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            buffers_total: 1 + self.area.buffers(),
            buffers_free: 1 + self.area.buffers(),
            ops_in_flight: 0,
            conns: self.table.len() + self.closing,
        }
    }

    fn poll<S: Sink>(&mut self, timeout: Option<Duration>, sink: &mut S) -> io::Result<()> {
        let n = self.selector.wait(self.wait_time(timeout))?;
        self.deliver_deferred(sink);
        for i in 0..n {
            let (token, ready) = self.selector.event(i);
            self.dispatch(token, ready, sink)?;
        }
        self.listeners.retry_due(sink);
        self.read_ready(sink);
        Ok(())
    }
}
