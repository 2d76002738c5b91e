//! The event loop: one per thread, generic over the backend.
//!
//! Each iteration is: `poll` the backend (it reports into [`Core`], which runs the handler and
//! records what the backend must be asked next), then [`Core::apply`] asks it — register new
//! connections, send what callbacks wrote (one send per connection per iteration), close what
//! is done. The loop ends when the engine stops and the last connection is closed.

mod callbacks;
mod deadlines;
mod dial;
mod sink;
mod table;
mod visit;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gnet_backends::{Addr, Backend, Id, Socket};

use crate::conn::{ConnState, Phase};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::handle::{refuse, LoopShared, Task};
use crate::handler::{Action, CloseCause, EventHandler};
use crate::listen::Endpoint;
use crate::local::Local;
use crate::options::Options;
use deadlines::{Deadlines, Timeout};
use table::Table;

/// How long connections the backend could not register wait before they are offered again
/// (unless a connection closes first).
const HOLD_RETRY: Duration = Duration::from_millis(100);

/// The most cross-thread tasks one loop iteration takes from the queue.
const MAX_TASKS_PER_ITERATION: usize = 1024;

pub(crate) struct EventLoop<B: Backend, H: EventHandler> {
    backend: B,
    core: Core<H>,
}

/// Everything but the backend: the loop's state, and the [`gnet_backends::Sink`] the backend
/// reports into.
pub(crate) struct Core<H: EventHandler> {
    index: usize,
    handler: Arc<H>,
    engine: Engine,
    shared: Arc<LoopShared>,
    opts: Arc<Options>,
    /// Connections and listeners: one id space.
    conns: Table<H::Context>,
    /// Accepted here (or handed over by another loop), to register after `poll`.
    incoming: Vec<(Socket, Addr)>,
    /// Accepted connections the backend could not take for lack of resources (descriptors,
    /// memory, threads): kept alive, in order, and offered again at `held_retry`.
    held: Vec<(Socket, Addr)>,
    /// When to offer `held` again: [`HOLD_RETRY`] after the failure, or as soon as a
    /// connection closes (freeing what was missing).
    held_retry: Option<Instant>,
    /// When the current stretch of held connections began (reported once, at its start).
    held_since: Option<Instant>,
    /// `connected` reports of the backend, handled after `poll`.
    connect_results: Vec<(Id, std::io::Result<()>)>,
    /// Connections whose output, close or resume needs the backend after `poll`.
    dirty: Vec<Id>,
    /// Connections to resume receiving on.
    resume: Vec<Id>,
    /// Deadlines of draining connections.
    deadlines: Deadlines,
    woken: bool,
    tasks: Vec<Task>,
    next_tick: Option<Instant>,
    stopping: bool,
    /// What callbacks reach of the loop: the buffer pool (buffers of finished sends, reused by
    /// the next writes), the ids, the operations they ask for.
    local: Local<H::Context>,
}

impl<B: Backend, H: EventHandler> EventLoop<B, H> {
    pub(crate) fn new(
        mut backend: B,
        index: usize,
        handler: Arc<H>,
        engine: Engine,
        opts: Arc<Options>,
        endpoints: Vec<Endpoint>,
    ) -> Result<Self> {
        let shared = engine.inner.loops[index].clone();
        shared.set_waker(backend.waker());
        let mut conns = Table::new();
        let mut local = Local::default();
        let mut datagrams = Vec::new();
        for e in endpoints {
            match e {
                Endpoint::Listener(l) => conns.insert_listener(local.ids.take(), l),
                Endpoint::Datagram(s) => datagrams.push(s),
            }
        }
        for (id, l) in conns.listeners() {
            backend.add_listener(id, l)?;
        }
        if !datagrams.is_empty() {
            if let Err(why) = backend.capabilities().datagrams {
                return Err(Error::BackendUnavailable {
                    backend: B::KIND,
                    reason: format!("it cannot serve UDP here: {why}"),
                });
            }
        }
        for s in datagrams {
            let id = local.ids.take();
            let local = s.local_addr()?;
            backend.add_datagram(id, &s)?;
            conns.insert_conn(ConnState::datagram(s, id, local, true, opts.max_outbound));
        }
        let next_tick = (opts.ticker && index == 0).then(Instant::now);
        Ok(EventLoop {
            backend,
            core: Core {
                index,
                handler,
                engine,
                shared,
                opts,
                conns,
                incoming: Vec::new(),
                held: Vec::new(),
                held_retry: None,
                held_since: None,
                connect_results: Vec::new(),
                dirty: Vec::new(),
                resume: Vec::new(),
                deadlines: Deadlines::default(),
                // As if woken: the first poll does not wait, so the first iteration sees a
                // stop made before this loop had a waker to be woken with (from `on_boot`).
                woken: true,
                tasks: Vec::new(),
                next_tick,
                stopping: false,
                local,
            },
        })
    }

    pub(crate) fn run(mut self) -> Result<()> {
        let result = loop {
            let timeout = self.core.timeout();
            if let Err(e) = self.backend.poll(timeout, &mut self.core) {
                log::error!("gnet: loop {} poll failed: {e}", self.core.index);
                let _ = self.core.engine.stop();
                break Err(Error::Io(e));
            }
            self.core.apply(&mut self.backend);
            if self.core.stopping && self.core.conns.no_conns() {
                break Ok(());
            }
        };
        for t in self.core.shared.exit() {
            refuse(t);
        }
        result
    }
}

impl<H: EventHandler> Core<H> {
    fn timeout(&mut self) -> Option<Duration> {
        if self.woken {
            // Tasks are left over from the last iteration.
            return Some(Duration::ZERO);
        }
        let conns = &self.conns;
        let drain = self
            .deadlines
            .next(|id, at| conns.conn(id).is_some_and(|s| s.deadline == Some(at)));
        let at = [self.next_tick, drain, self.held_retry]
            .into_iter()
            .flatten()
            .min();
        at.map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// The live state for `id`, or `None` for a stale id.
    fn state(&mut self, id: Id) -> Option<&mut ConnState<H::Context>> {
        self.conns.conn_mut(id)
    }

    fn mark(&mut self, id: Id) {
        self.dirty.push(id);
    }

    /// Decides to close `id`: output already queued is still delivered (bounded by the close
    /// timeout) unless the cause is an error that makes that pointless.
    fn begin_close(&mut self, id: Id, cause: CloseCause) {
        let Some(st) = self.state(id) else { return };
        if !st.is_open() {
            return;
        }
        st.phase = Phase::Draining { cause };
        st.refuse_handles();
        let which = if self.stopping {
            Timeout::Shutdown
        } else {
            Timeout::Close
        };
        self.set_deadline(id, which);
        self.mark(id);
    }

    /// Gives a draining connection its deadline for `which` timeout, unless it already has an
    /// earlier one. A timeout too large to represent means no deadline.
    fn set_deadline(&mut self, id: Id, which: Timeout) {
        let timeout = match which {
            Timeout::Close => self.opts.close_timeout,
            Timeout::Shutdown => self.opts.shutdown_timeout,
            Timeout::Dial => self.opts.dial_timeout,
        };
        let Some(at) = Instant::now().checked_add(timeout) else {
            return;
        };
        let Some(st) = self.state(id) else { return };
        if st.deadline.is_some_and(|d| d <= at) {
            return;
        }
        st.deadline = Some(at);
        self.deadlines.push(which, at, id);
    }

    /// The connection failed (an I/O error, a panicking handler): drop its output and close
    /// it now, with a reset.
    fn fail(&mut self, id: Id, cause: CloseCause) {
        let Some(st) = self.state(id) else { return };
        if matches!(st.phase, Phase::Closing { .. }) {
            return;
        }
        st.abandon_output();
        st.phase = Phase::Draining { cause };
        st.refuse_handles();
        self.mark(id);
    }

    fn apply<B: Backend>(&mut self, backend: &mut B) {
        if self.woken {
            self.woken = false;
            self.run_tasks(backend);
        }
        if !self.stopping && self.engine.is_stopping() {
            self.begin_stop(backend);
        }
        self.register_incoming(backend);
        self.tick();
        self.expire_deadlines(backend);
        self.connects_done(backend);
        self.run_ops(backend);
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in dirty.drain(..) {
            self.flush(backend, id);
        }
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        for id in std::mem::take(&mut self.resume) {
            if let Some(st) = self.state(id) {
                if st.paused && st.is_open() {
                    st.paused = false;
                    backend.resume(id);
                }
            }
        }
    }

    fn begin_stop<B: Backend>(&mut self, backend: &mut B) {
        self.stopping = true;
        for id in self.conns.listener_ids() {
            // The backend first, then the listener may go.
            backend.remove_listener(id);
            self.conns.remove_listener(id);
            self.local.ids.release(id);
        }
        self.incoming.clear();
        self.held.clear();
        self.held_retry = None;
        let ids = self.conns.conn_ids();
        for id in ids {
            if self
                .state(id)
                .is_some_and(|s| matches!(s.phase, Phase::Connecting))
            {
                self.cancel_dial(backend, id, Error::EngineShutdown);
            } else if self.state(id).is_some_and(|s| s.is_open()) {
                self.begin_close(id, CloseCause::Shutdown);
            } else {
                // Already draining: the stop's deadline applies too, if it comes first.
                self.set_deadline(id, Timeout::Shutdown);
            }
        }
    }

    fn run_tasks<B: Backend>(&mut self, backend: &mut B) {
        let mut tasks = std::mem::take(&mut self.tasks);
        if self.shared.drain(&mut tasks, MAX_TASKS_PER_ITERATION) {
            // More next time round (the poll will not wait): sockets get their turn between.
            self.woken = true;
        }
        for t in tasks.drain(..) {
            match t {
                Task::Register { socket, peer } => {
                    if self.stopping {
                        drop(socket);
                    } else {
                        self.incoming.push((socket, peer));
                    }
                }
                Task::Write { id, bufs, done } => self.async_write(id, bufs, done),
                Task::Wake { id } => {
                    // A UDP server socket has no buffered input to be woken for.
                    if self
                        .state(id)
                        .is_some_and(|s| s.is_open() && !s.is_server_datagram())
                    {
                        self.traffic(id, None);
                    }
                }
                Task::Close { id } => {
                    // A UDP server socket serves every peer: a handle cannot close it.
                    if !self.state(id).is_some_and(|s| s.is_server_datagram()) {
                        self.begin_close(id, CloseCause::Local);
                    }
                }
                Task::Dial { addr, ctx } => self.dial_task(addr, ctx),
                Task::Enroll { socket, ctx } => self.enroll(backend, socket, ctx),
                Task::Stats { reply } => {
                    let _ = reply.send(backend.stats());
                }
                Task::ForEach { f } => self.for_each_task(f),
                Task::Broadcast { data } => self.broadcast_task(data),
                Task::With { id, f } => self.with_task(id, f),
            }
        }
        self.tasks = tasks;
    }

    fn async_write(
        &mut self,
        id: Id,
        bufs: Vec<bytes::Bytes>,
        done: Option<crate::handle::WriteCallback>,
    ) {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        self.shared.uncharge(crate::handle::charge(len));
        let Some(st) = self.state(id) else {
            // Its connection is gone (the slot may serve another one).
            if let Some(done) = done {
                done(Err(Error::ConnClosed));
            }
            return;
        };
        // The handle that queued it checked the budgets when it did.
        let accepted = st.is_open();
        if accepted {
            for b in bufs {
                st.queue_bytes(b);
            }
            if let Some(done) = done {
                st.waiters.push_back((st.written_total, len, done));
            }
        } else if let Some(done) = done {
            done(Err(Error::ConnClosed));
        }
        if let Some(h) = st.handle.get() {
            // Publish first, then release the charge, so the handles never see less than
            // there is.
            h.publish(st.pending());
            h.uncharge(len);
        }
        if accepted {
            self.mark(id);
        }
    }

    fn register_incoming<B: Backend>(&mut self, backend: &mut B) {
        if self.held_retry.is_some_and(|at| at <= Instant::now()) {
            // The held connections came first: they go first.
            self.held_retry = None;
            self.held.append(&mut self.incoming);
            std::mem::swap(&mut self.held, &mut self.incoming);
        }
        for (socket, peer) in std::mem::take(&mut self.incoming) {
            if !self.held.is_empty() {
                // Behind one that could not be registered: wait with it, in order.
                self.held.push((socket, peer));
                continue;
            }
            let id = self.local.ids.take();
            if let Err(e) = backend.add_conn(id, &socket) {
                self.local.ids.release(id);
                if gnet_backends::is_resource_shortage(&e) {
                    self.hold(socket, peer, &e);
                } else {
                    log::warn!(
                        "gnet: loop {} could not register a connection, closing it: {e}",
                        self.index
                    );
                }
                continue;
            }
            if self.held.is_empty() {
                if let Some(since) = self.held_since.take() {
                    log::info!(
                        "gnet: loop {} registers connections again after {:.1?}",
                        self.index,
                        since.elapsed()
                    );
                }
            }
            self.conns.insert_conn(ConnState::new(socket, id, peer));
            self.established::<B>(id);
        }
    }

    /// Keeps a connection the backend had no resources for: it is not dropped (its peer would
    /// see it closed for no fault of its own) but offered again later, like a connection still
    /// in the listen backlog. Reported once per stretch.
    fn hold(&mut self, socket: Socket, peer: Addr, e: &std::io::Error) {
        if self.held_since.is_none() {
            self.held_since = Some(Instant::now());
            log::warn!(
                "gnet: loop {}: no resources to register an accepted connection ({e}); it waits \
                 and is offered again when a connection closes, or in {} ms",
                self.index,
                HOLD_RETRY.as_millis()
            );
        }
        self.held.push((socket, peer));
        self.held_retry
            .get_or_insert_with(|| Instant::now() + HOLD_RETRY);
    }

    #[cfg(unix)]
    fn configure(&self, socket: &Socket) {
        if !socket.is_tcp() {
            return;
        }
        let s = socket2::SockRef::from(socket);
        let o = &self.opts;
        let mut r = s.set_nodelay(o.tcp_nodelay);
        if let Some(idle) = o.keepalive {
            let ka = socket2::TcpKeepalive::new().with_time(idle);
            #[cfg(gnet_keepalive_interval)]
            let ka = ka.with_interval(
                o.keepalive_interval
                    .unwrap_or((idle / 5).max(Duration::from_secs(1))),
            );
            #[cfg(gnet_keepalive_retries)]
            let ka = ka.with_retries(o.keepalive_count.unwrap_or(5));
            r = r.and(s.set_tcp_keepalive(&ka));
        }
        if let Some(n) = o.send_buffer {
            r = r.and(s.set_send_buffer_size(n));
        }
        if let Some(n) = o.recv_buffer {
            r = r.and(s.set_recv_buffer_size(n));
        }
        if let Err(e) = r {
            log::debug!("gnet: socket options on an accepted connection: {e}");
        }
    }

    #[cfg(not(unix))]
    fn configure(&self, socket: &Socket) {
        if let Socket::Tcp(s) = socket {
            let _ = s.set_nodelay(self.opts.tcp_nodelay);
        }
    }

    fn tick(&mut self) {
        let Some(at) = self.next_tick else { return };
        if self.stopping || Instant::now() < at {
            return;
        }
        let engine = self.engine.clone();
        let handler = self.handler.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.on_tick(&engine)));
        let (delay, action) = r.unwrap_or_else(|p| {
            log::error!("gnet: on_tick panicked: {}", callbacks::panic_message(&p));
            (Duration::from_secs(1), Action::None)
        });
        if action == Action::Shutdown {
            let _ = self.engine.stop();
        }
        // A delay too large to represent stops the ticker.
        self.next_tick = Instant::now().checked_add(delay);
    }

    fn expire_deadlines<B: Backend>(&mut self, backend: &mut B) {
        let now = Instant::now();
        while let Some((id, at)) = self.deadlines.pop_due(now) {
            let Some(st) = self.state(id).filter(|s| s.deadline == Some(at)) else {
                continue;
            };
            if let Phase::Connecting = st.phase {
                self.dial_timed_out(backend, id, at);
            } else if let Phase::Draining { .. } = st.phase {
                if st.pending() > 0 {
                    let unsent = st.abandon_output();
                    st.phase = Phase::Closing {
                        cause: CloseCause::Error(Error::CloseTimeout { unsent }),
                    };
                    backend.close(id);
                } else {
                    self.mark(id);
                }
            }
        }
    }

    /// Hands queued output to the backend, and finishes a drain once nothing is left.
    fn flush<B: Backend>(&mut self, backend: &mut B, id: Id) {
        let Some(st) = self.conns.conn_mut(id) else {
            return;
        };
        if let Phase::Connecting = st.phase {
            return; // its output waits for the connection
        }
        st.dirty = false;
        if let Some(h) = st.handle.get() {
            h.publish(st.pending());
        }
        if st.close_requested && st.is_open() {
            st.close_requested = false;
            let cause = st.close_cause.take().unwrap_or(CloseCause::Local);
            self.begin_close(id, cause);
            return self.flush(backend, id);
        }
        if matches!(st.phase, Phase::Closing { .. }) {
            return;
        }
        if let Some(d) = st.dgram.as_mut() {
            if d.in_flight {
                return;
            }
            if !d.is_empty() {
                let (batch, n) = d.take_batch();
                st.sending = n;
                backend.send_to(id, batch);
                return;
            }
        }
        if st.sending == 0 && !st.out.is_empty() {
            let (bufs, n) = st.out.take_pooled(&mut self.local.pool);
            st.sending = n;
            backend.send(id, bufs);
            return;
        }
        if st.sending == 0 {
            if let Phase::Draining { .. } = st.phase {
                let Phase::Draining { cause, .. } = std::mem::replace(&mut st.phase, Phase::Open)
                else {
                    unreachable!()
                };
                if matches!(
                    cause,
                    CloseCause::Local
                        | CloseCause::PeerClosed
                        | CloseCause::Shutdown
                        | CloseCause::Codec(_)
                ) {
                    let _ = st.socket.shutdown(std::net::Shutdown::Write);
                }
                st.phase = Phase::Closing { cause };
                backend.close(id);
            }
        }
    }
}
