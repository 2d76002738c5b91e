//! The engine: listeners, loop threads, start and stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use gnet_backends::{Backend, BackendKind, Listener};

use crate::addr::ListenAddr;
use crate::balance::Balancer;
use crate::error::{Error, Result};
use crate::eventloop::EventLoop;
use crate::handle::LoopShared;
use crate::handler::{Action, EventHandler};
use crate::listen;
use crate::options::Options;
use crate::select::{self, Visit};

pub(crate) struct EngineInner {
    pub(crate) loops: Vec<Arc<LoopShared>>,
    pub(crate) balancer: Balancer,
    pub(crate) single_acceptor: bool,
    stopping: AtomicBool,
    shut_down: AtomicBool,
    addrs: Vec<ListenAddr>,
    listeners: Mutex<Vec<(ListenAddr, listen::Endpoint)>>,
    /// The socket files of Unix listeners, removed at shutdown.
    unix_files: Mutex<Vec<listen::UnixFile>>,
    backend: BackendKind,
    fallback: Option<String>,
    signals: crate::signal::Slot,
    /// The handler's `Context` type, which `Engine::for_each_conn` checks its type against.
    pub(crate) context: crate::broadcast::ContextType,
}

/// A handle to a running engine: `Clone + Send + Sync`, usable from any thread.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.inner.backend)
            .field("addrs", &self.inner.addrs)
            .field("loops", &self.inner.loops.len())
            .finish()
    }
}

impl Engine {
    /// Asks the engine to stop: listeners close at once, every connection flushes what its
    /// handler wrote (bounded by `Options::shutdown_timeout`) and sees `on_close`, then
    /// `on_shutdown` runs and [`run`] returns. Does not wait.
    ///
    /// # Errors
    /// [`Error::EngineShutdown`] if the engine is already stopping or stopped.
    pub fn stop(&self) -> Result<()> {
        // SeqCst: pairs with the fence in `LoopShared::set_waker` (flag first, then waker).
        if self.inner.stopping.swap(true, Ordering::SeqCst) {
            return Err(Error::EngineShutdown);
        }
        for l in &self.inner.loops {
            l.wake();
        }
        Ok(())
    }

    /// Whether [`Engine::stop`] was called (or a handler asked for shutdown).
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::Acquire)
    }

    /// Whether the engine has fully shut down ([`run`] returned or is returning).
    pub fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Ordering::Acquire)
    }

    /// Open connections, summed over the loops.
    pub fn count_connections(&self) -> usize {
        self.inner
            .loops
            .iter()
            .map(|l| l.conns.load(Ordering::Relaxed))
            .sum()
    }

    /// The bound addresses (port 0 resolved to the port the kernel chose).
    pub fn addrs(&self) -> &[ListenAddr] {
        &self.inner.addrs
    }

    /// The backend the engine runs on.
    pub fn backend(&self) -> BackendKind {
        self.inner.backend
    }

    /// When `Auto` fell back from a better backend: why.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.inner.fallback.as_deref()
    }

    /// The backend counters of every loop (buffer ring occupancy, operations in flight,
    /// connections), asked of each loop in turn; waits up to a second per loop.
    pub fn backend_stats(&self) -> Vec<gnet_backends::Stats> {
        let mut out = Vec::new();
        for l in &self.inner.loops {
            let (tx, rx) = mpsc::channel();
            if l.push(crate::handle::Task::Stats { reply: tx }).is_ok() {
                if let Ok(s) = rx.recv_timeout(std::time::Duration::from_secs(1)) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Number of event loops.
    pub fn num_loops(&self) -> usize {
        self.inner.loops.len()
    }

    /// Dials `addr` (`tcp://`, `udp://` for a connected UDP socket, `unix://`) from a loop of
    /// this engine (the one with the fewest connections), without blocking: the connection
    /// comes up with `on_open` (its context `ctx`, which must be the handler's `Context`
    /// type), or the dial fails (refused, unreachable, [`Options::dial_timeout`]) with
    /// [`EventHandler::on_dial_error`], which gets the context back. Works from any thread,
    /// a callback of this engine's included (to dial onto the callback's own loop, use
    /// [`Conn::dial`](crate::Conn::dial)).
    ///
    /// # Errors
    /// [`Error::InvalidAddress`] or [`Error::UnsupportedProtocol`] for an address that cannot
    /// be dialed; [`Error::WrongContext`] for a `ctx` that is not the handler's `Context`
    /// (a `None` of another type carries nothing and is accepted);
    /// [`Error::EngineShutdown`] once the engine stops.
    pub fn dial<C: Send + 'static>(&self, addr: &str, ctx: Option<C>) -> Result<()> {
        let addr = ListenAddr::parse(addr)?;
        let ctx = self.erase(ctx)?;
        self.to_a_loop(crate::handle::Task::Dial { addr, ctx })
    }

    /// Hands an established socket (`Socket::Tcp`, `Socket::Unix`, or a connected
    /// `Socket::Udp`) to a loop of this engine, which serves it as one of its connections:
    /// `on_open` with the context `ctx` (the handler's `Context` type), then traffic as usual.
    /// When it cannot be registered, [`EventHandler::on_dial_error`] says why.
    ///
    /// # Errors
    /// [`Error::WrongContext`] for a `ctx` that is not the handler's `Context` (as
    /// [`Engine::dial`]); [`Error::EngineShutdown`] once the engine stops.
    pub fn enroll<C: Send + 'static>(
        &self,
        socket: gnet_backends::Socket,
        ctx: Option<C>,
    ) -> Result<()> {
        let ctx = self.erase(ctx)?;
        self.to_a_loop(crate::handle::Task::Enroll { socket, ctx })
    }

    /// A context on its way to a loop, type-erased once it is known to be the handler's
    /// `Context`.
    fn erase<C: Send + 'static>(
        &self,
        ctx: Option<C>,
    ) -> Result<Option<Box<dyn std::any::Any + Send>>> {
        let Some(c) = ctx else { return Ok(None) };
        self.inner.context.check::<C>()?;
        Ok(Some(Box::new(c)))
    }

    /// Queues `task` on the loop with the fewest connections.
    fn to_a_loop(&self, task: crate::handle::Task) -> Result<()> {
        if self.is_stopping() {
            return Err(Error::EngineShutdown);
        }
        let loops = &self.inner.loops;
        let target = loops
            .iter()
            .min_by_key(|l| l.conns.load(Ordering::Relaxed))
            .ok_or(Error::EngineShutdown)?;
        target.push(task).map_err(|t| {
            crate::handle::refuse(t);
            Error::EngineShutdown
        })
    }

    /// The listeners, while the engine has not shut down.
    fn live_listeners(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, Vec<(ListenAddr, listen::Endpoint)>>> {
        let ls = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.is_shut_down() {
            return Err(Error::EngineShutdown);
        }
        Ok(ls)
    }

    /// A duplicate of the listener, when the engine has exactly one address.
    ///
    /// # Errors
    /// [`Error::Unsupported`] with several addresses; [`Error::EngineShutdown`] after shutdown.
    pub fn dup(&self) -> Result<Listener> {
        let ls = self.live_listeners()?;
        match ls.as_slice() {
            [(_, e)] => dup_endpoint(e),
            _ => Err(Error::Unsupported(
                "dup with several listeners; use dup_listener",
            )),
        }
    }

    /// A duplicate of the listener bound to `addr` (as given to [`rotate`], or as bound).
    ///
    /// # Errors
    /// [`Error::InvalidAddress`] when no listener has that address; [`Error::EngineShutdown`]
    /// after shutdown.
    pub fn dup_listener(&self, addr: &str) -> Result<Listener> {
        let want = ListenAddr::parse(addr)?;
        let ls = self.live_listeners()?;
        for (asked, e) in ls.iter() {
            if *asked == want || listen::bound_addr(e, asked) == want {
                return dup_endpoint(e);
            }
        }
        Err(Error::InvalidAddress {
            addr: addr.to_string(),
            reason: "no listener of this engine has this address".into(),
        })
    }
}

fn dup_endpoint(e: &listen::Endpoint) -> Result<Listener> {
    match e {
        listen::Endpoint::Listener(l) => Ok(l.try_clone()?),
        listen::Endpoint::Datagram(_) => Err(Error::Unsupported(
            "dup of a UDP address: it has a socket per loop, not a listener",
        )),
    }
}

/// Serves `addr` with `handler` until the engine shuts down.
///
/// # Errors
/// A bad address, a failure to bind, an unusable backend (see [`Options::backend`]).
pub fn run<H: EventHandler>(handler: H, addr: &str, opts: Options) -> Result<()> {
    rotate(handler, &[addr], opts)
}

/// Serves several addresses with one engine (one set of loops) until it shuts down.
///
/// # Errors
/// As [`run`].
pub fn rotate<H: EventHandler>(handler: H, addrs: &[&str], opts: Options) -> Result<()> {
    match start(handler, addrs, opts)? {
        Some(running) => running.wait(),
        None => Ok(()),
    }
}

/// Starts a client engine: loops without listeners, which serve the connections it dials
/// ([`Engine::dial`]) or is handed ([`Engine::enroll`]) with `handler` (Go gnet's `Client`).
/// `on_boot` runs first, on the calling thread; stop it like a server, with
/// [`Running::stop`] or [`Engine::stop`].
///
/// # Errors
/// Invalid options, an unusable backend.
pub fn client<H: EventHandler>(handler: H, opts: Options) -> Result<Running> {
    match start_engine(handler, Vec::new(), opts)? {
        Some(running) => Ok(running),
        None => Err(Error::EngineShutdown),
    }
}

/// An engine running on its own threads, from [`start`].
pub struct Running {
    engine: Engine,
    thread: JoinHandle<Result<()>>,
}

impl Running {
    /// The engine handle.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Waits until the engine has shut down.
    ///
    /// # Errors
    /// A loop's fatal error, or a panic of the engine thread.
    pub fn wait(self) -> Result<()> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(Error::HandlerPanic("engine thread panicked".into())))
    }

    /// [`Engine::stop`], then [`Running::wait`].
    ///
    /// # Errors
    /// As [`Running::wait`].
    pub fn stop(self) -> Result<()> {
        let _ = self.engine.stop();
        self.wait()
    }
}

/// Binds, boots and starts the engine without blocking: `on_boot` runs on the calling thread,
/// the loops on their own. `Ok(None)` when `on_boot` asked for shutdown.
///
/// # Errors
/// As [`run`].
pub fn start<H: EventHandler>(
    handler: H,
    addrs: &[&str],
    opts: Options,
) -> Result<Option<Running>> {
    opts.validate()?;
    let parsed: Vec<ListenAddr> = addrs
        .iter()
        .map(|a| ListenAddr::parse(a))
        .collect::<Result<_>>()?;
    if parsed.is_empty() {
        return Err(Error::InvalidOptions(
            "no address to serve (for an engine that only dials, use gnet::client)".into(),
        ));
    }
    start_engine(handler, parsed, opts)
}

fn start_engine<H: EventHandler>(
    handler: H,
    parsed: Vec<ListenAddr>,
    opts: Options,
) -> Result<Option<Running>> {
    opts.validate()?;
    crate::signal::check(&opts)?;
    let datagrams = parsed.iter().any(|a| matches!(a, ListenAddr::Udp(_)));
    let (backend, fallback) = select::choose(&opts, datagrams)?;
    let n = opts.num_loops();
    let listeners = bind_all(&parsed, &opts, n)?;
    let single_acceptor = !opts.reuse_port && n > 1;
    let loops: Vec<Arc<LoopShared>> = (0..n)
        .map(|i| Arc::new(LoopShared::new(i, opts.max_loop_backlog, opts.max_outbound)))
        .collect();
    let engine = Engine {
        inner: Arc::new(EngineInner {
            loops,
            balancer: Balancer::new(opts.lb),
            single_acceptor,
            stopping: AtomicBool::new(false),
            shut_down: AtomicBool::new(false),
            addrs: listeners.bound.clone(),
            listeners: Mutex::new(listeners.originals),
            unix_files: Mutex::new(listeners.files),
            backend,
            fallback,
            signals: Default::default(),
            context: crate::broadcast::ContextType::of::<H::Context>(),
        }),
    };
    let handler = Arc::new(handler);
    if handler.on_boot(&engine) == Action::Shutdown {
        finish(&engine);
        return Ok(None);
    }
    let stop_on_signals = opts.stop_on_signals;
    let spawn = SpawnLoops {
        handler,
        engine: engine.clone(),
        opts,
        per_loop: listeners.per_loop,
    };
    let thread = select::dispatch(backend, spawn).ok_or(Error::BackendUnavailable {
        backend,
        reason: "not compiled in".into(),
    })??;
    let running = Running { engine, thread };
    // Once the loops are up, so that a stop on a signal wakes them.
    if stop_on_signals {
        if let Err(e) = running.engine.inner.signals.watch(&running.engine) {
            let _ = running.stop();
            return Err(e);
        }
    }
    Ok(Some(running))
}

struct Bound {
    bound: Vec<ListenAddr>,
    originals: Vec<(ListenAddr, listen::Endpoint)>,
    per_loop: Vec<Vec<listen::Endpoint>>,
    files: Vec<listen::UnixFile>,
}

fn bind_all(parsed: &[ListenAddr], opts: &Options, loops: usize) -> Result<Bound> {
    let mut bound = Vec::new();
    let mut originals = Vec::new();
    let mut files = Vec::new();
    let mut per_loop: Vec<Vec<listen::Endpoint>> = (0..loops).map(|_| Vec::new()).collect();
    for asked in parsed {
        // UDP: always a socket per loop, and the kernel spreads datagrams over them. TCP: per
        // loop in reuse-port mode, else loop 0 accepts and hands connections over.
        let udp = matches!(asked, ListenAddr::Udp(_));
        let reuse_port = udp || (opts.reuse_port && matches!(asked, ListenAddr::Tcp(_)));
        // On an error below, the socket files created so far are removed as `files` drops.
        let (first, file) = listen::bind(asked, opts, reuse_port)?;
        files.extend(file);
        let actual = listen::bound_addr(&first, asked);
        per_loop[0].push(first.try_clone()?);
        if reuse_port || opts.reuse_port {
            for slot in per_loop.iter_mut().skip(1) {
                // Unix sockets cannot share a path: every loop accepts on the same listener.
                let e = if reuse_port {
                    listen::bind(&actual, opts, true)?.0
                } else {
                    first.try_clone()?
                };
                slot.push(e);
            }
        }
        bound.push(actual);
        originals.push((asked.clone(), first));
    }
    Ok(Bound {
        bound,
        originals,
        per_loop,
        files,
    })
}

fn finish(engine: &Engine) {
    let inner = &engine.inner;
    inner.signals.close();
    inner.stopping.store(true, Ordering::Release);
    {
        let mut ls = inner.listeners.lock().unwrap_or_else(|p| p.into_inner());
        inner.shut_down.store(true, Ordering::Release);
        ls.clear();
    }
    drop(std::mem::take(
        &mut *inner.unix_files.lock().unwrap_or_else(|p| p.into_inner()),
    ));
}

struct SpawnLoops<H: EventHandler> {
    handler: Arc<H>,
    engine: Engine,
    opts: Options,
    per_loop: Vec<Vec<listen::Endpoint>>,
}

impl<H: EventHandler> Visit for SpawnLoops<H> {
    type Out = Result<JoinHandle<Result<()>>>;

    fn visit<B: Backend>(self) -> Self::Out {
        let SpawnLoops {
            handler,
            engine,
            opts,
            mut per_loop,
        } = self;
        let n = engine.inner.loops.len();
        let cfg = select::backend_config(&opts);
        let opts = Arc::new(opts);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let listeners = if i < per_loop.len() {
                std::mem::take(&mut per_loop[i])
            } else {
                Vec::new()
            };
            let (handler, eng, opts, cfg, ready) = (
                handler.clone(),
                engine.clone(),
                opts.clone(),
                cfg.clone(),
                ready_tx.clone(),
            );
            let t = std::thread::Builder::new()
                .name(format!("gnet-loop-{i}"))
                .spawn(move || {
                    if opts.pin_cores {
                        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
                        if let Err(e) = gnet_backends::pin_current_thread(i % cores) {
                            log::warn!("gnet: pinning loop {i} failed: {e}");
                        }
                    }
                    let backend = match B::open(&cfg) {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = ready.send(Err(Error::BackendUnavailable {
                                backend: B::KIND,
                                reason: e.to_string(),
                            }));
                            return Ok(());
                        }
                    };
                    let lp = EventLoop::new(backend, i, handler, eng, opts, listeners);
                    let lp = match lp {
                        Ok(lp) => {
                            let _ = ready.send(Ok(()));
                            lp
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return Ok(());
                        }
                    };
                    drop(ready);
                    lp.run()
                });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    let _ = engine.stop();
                    return Err(Error::Io(e));
                }
            }
        }
        drop(ready_tx);
        let mut first_err = None;
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => break,
            }
        }
        if let Some(e) = first_err {
            let _ = engine.stop();
            for t in threads {
                let _ = t.join();
            }
            finish(&engine);
            return Err(e);
        }
        let t = std::thread::Builder::new()
            .name("gnet-engine".into())
            .spawn(move || {
                let mut result = Ok(());
                for t in threads {
                    match t.join() {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            result = result.and(Err(e));
                        }
                        Err(_) => {
                            result = result.and(Err(Error::HandlerPanic(
                                "an event loop thread panicked".into(),
                            )));
                        }
                    }
                }
                handler.on_shutdown(&engine);
                finish(&engine);
                result
            })
            .map_err(Error::Io)?;
        Ok(t)
    }
}
