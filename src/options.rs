//! Engine options.

use std::time::Duration;

use gnet_backends::BackendKind;

/// The most event loops an engine runs.
pub(crate) const MAX_LOOPS: usize = 1024;

/// How accepted connections are spread over the loops when one acceptor serves them all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadBalancing {
    /// Each loop in turn.
    #[default]
    RoundRobin,
    /// The loop with the fewest connections.
    LeastConnections,
    /// A hash of the peer's IP address (not its port, unlike Go gnet), so one client host
    /// always lands on the same loop. Unnamed Unix peers fall back to round-robin.
    SourceAddrHash,
}

/// Which backend the engine runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendChoice {
    /// The best one usable here: io_uring, then epoll (Linux) or kqueue, then std-net. The
    /// fallback is logged with its reason. The environment variable `GNET_BACKEND` overrides
    /// this choice.
    #[default]
    Auto,
    /// Exactly this backend, or an error that says why it cannot run. `GNET_BACKEND`
    /// overrides it too.
    Only(BackendKind),
}

/// Engine options, built fluently.
///
/// # Examples
/// ```
/// use gnet::{Options, LoadBalancing};
/// let opts = Options::new().loops(4).load_balancing(LoadBalancing::LeastConnections).ticker(true);
/// assert_eq!(opts.num_loops(), 4);
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) loops: usize,
    pub(crate) multicore: bool,
    pub(crate) lb: LoadBalancing,
    pub(crate) reuse_port: bool,
    pub(crate) reuse_addr: bool,
    pub(crate) read_buffer_size: usize,
    pub(crate) max_inbound: usize,
    pub(crate) max_outbound: usize,
    pub(crate) max_loop_backlog: usize,
    pub(crate) tcp_nodelay: bool,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) keepalive_count: Option<u32>,
    pub(crate) send_buffer: Option<usize>,
    pub(crate) recv_buffer: Option<usize>,
    pub(crate) pin_cores: bool,
    pub(crate) ticker: bool,
    pub(crate) backend: BackendChoice,
    pub(crate) close_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) ring_buffers: u16,
    pub(crate) ring_entries: u32,
    pub(crate) recv_bundles: bool,
    /// `None`: the backend's default.
    pub(crate) direct_write_min: Option<Option<usize>>,
    pub(crate) backlog: i32,
    pub(crate) honour_env: bool,
    pub(crate) stop_on_signals: bool,
    pub(crate) multicast_interface: u32,
    pub(crate) dial_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            loops: 0,
            multicore: false,
            lb: LoadBalancing::RoundRobin,
            reuse_port: false,
            reuse_addr: true,
            read_buffer_size: 64 * 1024,
            max_inbound: 4 * 1024 * 1024,
            max_outbound: 4 * 1024 * 1024,
            max_loop_backlog: 64 * 1024 * 1024,
            tcp_nodelay: true,
            keepalive: None,
            keepalive_interval: None,
            keepalive_count: None,
            send_buffer: None,
            recv_buffer: None,
            pin_cores: false,
            ticker: false,
            backend: BackendChoice::Auto,
            close_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            ring_buffers: 256,
            ring_entries: 1024,
            recv_bundles: true,
            direct_write_min: None,
            backlog: 1024,
            honour_env: true,
            stop_on_signals: false,
            multicast_interface: 0,
            dial_timeout: Duration::from_secs(10),
        }
    }
}

impl Options {
    /// The defaults: one loop, round-robin, TCP_NODELAY on, reuse-addr on, 64 KiB reads,
    /// 4 MiB inbound and outbound limits per connection, backend `Auto`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of event loops (threads). `0` means one, or one per core with
    /// [`Options::multicore`].
    pub fn loops(mut self, n: usize) -> Self {
        self.loops = n;
        self
    }

    /// One loop per available core (when [`Options::loops`] is 0).
    pub fn multicore(mut self, on: bool) -> Self {
        self.multicore = on;
        self
    }

    /// Checks every option against its bounds, the same for every backend. `gnet::start` (and
    /// so `run` and `rotate`) calls it before anything is bound or started; call it yourself
    /// to check options early, for example right after parsing a command line.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`](crate::Error::InvalidOptions) naming the first option out of
    /// bounds, its value and the bounds.
    ///
    /// # Examples
    /// ```
    /// use gnet::Options;
    /// assert!(Options::new().read_buffer_size(16 * 1024).validate().is_ok());
    /// let e = Options::new().read_buffer_size(usize::MAX).validate().unwrap_err();
    /// assert!(e.to_string().contains("read_buffer_size"));
    /// ```
    pub fn validate(&self) -> crate::Result<()> {
        const KIB: usize = 1024;
        const MIB: usize = 1024 * KIB;
        let check = |ok: bool, name: &str, value: String, bounds: &str| {
            if ok {
                Ok(())
            } else {
                Err(crate::Error::InvalidOptions(format!(
                    "{name} is {value}; it must be {bounds}"
                )))
            }
        };
        let bytes = |n: usize| format!("{n} bytes");
        let secs = |d: Duration| format!("{d:?}");
        let n = self.num_loops();
        check(n <= MAX_LOOPS, "loops", n.to_string(), "at most 1024")?;
        let r = self.read_buffer_size;
        check(
            (KIB..=64 * MIB).contains(&r),
            "read_buffer_size",
            bytes(r),
            "from 1 KiB to 64 MiB",
        )?;
        for (name, v) in [
            ("max_inbound_buffer", self.max_inbound),
            ("max_outbound_buffer", self.max_outbound),
            ("max_loop_backlog", self.max_loop_backlog),
        ] {
            check(v >= KIB, name, bytes(v), "at least 1 KiB")?;
        }
        let rb = self.ring_buffers;
        check(
            rb.is_power_of_two(),
            "ring_buffers",
            rb.to_string(),
            "a power of two from 1 to 32768",
        )?;
        let re = self.ring_entries;
        check(
            re.is_power_of_two() && (8..=32768).contains(&re),
            "ring_entries",
            re.to_string(),
            "a power of two from 8 to 32768",
        )?;
        check(
            self.backlog >= 1,
            "backlog",
            self.backlog.to_string(),
            "at least 1",
        )?;
        let keepalive_secs =
            |d: Duration| d.subsec_nanos() == 0 && (1..=32767).contains(&d.as_secs());
        if let Some(idle) = self.keepalive {
            let ok = keepalive_secs(idle);
            check(
                ok,
                "tcp_keepalive",
                secs(idle),
                "whole seconds from 1 to 32767",
            )?;
        }
        if let Some(i) = self.keepalive_interval {
            let ok = keepalive_secs(i);
            check(
                ok,
                "tcp_keepalive_interval",
                secs(i),
                "whole seconds from 1 to 32767",
            )?;
        }
        if let Some(c) = self.keepalive_count {
            check(
                (1..=127).contains(&c),
                "tcp_keepalive_count",
                c.to_string(),
                "from 1 to 127",
            )?;
        }
        for (name, v) in [
            ("socket_send_buffer", self.send_buffer),
            ("socket_recv_buffer", self.recv_buffer),
        ] {
            if let Some(v) = v {
                let ok = (1..=i32::MAX as usize).contains(&v);
                check(ok, name, bytes(v), "from 1 byte to 2147483647")?;
            }
        }
        Ok(())
    }

    /// The loops the engine will start.
    pub fn num_loops(&self) -> usize {
        if self.loops > 0 {
            self.loops
        } else if self.multicore {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        }
    }

    /// How the single acceptor spreads connections (ignored in reuse-port mode, where the
    /// kernel spreads them).
    pub fn load_balancing(mut self, lb: LoadBalancing) -> Self {
        self.lb = lb;
        self
    }

    /// A listener per loop with `SO_REUSEPORT` (the kernel spreads connections), instead of
    /// one acceptor and a load balancer. Ignored for Unix sockets.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// `SO_REUSEADDR` on listeners (on by default, so a restart can bind at once).
    pub fn reuse_addr(mut self, on: bool) -> Self {
        self.reuse_addr = on;
        self
    }

    /// Writes of at least this many bytes, made while a connection has nothing queued or in
    /// flight, go straight to the socket with a non-blocking `send` from inside the callback;
    /// only what the kernel does not take is copied into the outbound queue. That saves the
    /// copy for large replies while small writes keep being coalesced into one send per
    /// callback. The default depends on the backend: 4 KiB on epoll and io_uring; stdnet
    /// always queues. `None` queues every write.
    pub fn direct_write_min(mut self, bytes: Option<usize>) -> Self {
        self.direct_write_min = Some(bytes);
        self
    }

    /// Size of one receive buffer (the largest chunk one `on_traffic` sees fresh from the
    /// kernel, except with io_uring receive bundles, where one chunk spans every buffer the
    /// completion filled; see [`Options::recv_bundles`]). From 1 KiB to 64 MiB (checked
    /// when the engine starts, see [`Options::validate`]). Default 64 KiB.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes;
        self
    }

    /// The most bytes a connection may hold received but not consumed by the handler. Past it
    /// the connection is closed with [`Error::InboundOverflow`](crate::Error::InboundOverflow),
    /// so a peer cannot grow memory without bound. At least 1 KiB; default 4 MiB.
    pub fn max_inbound_buffer(mut self, bytes: usize) -> Self {
        self.max_inbound = bytes;
        self
    }

    /// High-water mark of a connection's outbound queue. Past it, the loop stops reading from
    /// that connection until the queue drains below half, and
    /// [`ConnHandle::async_write`](crate::ConnHandle::async_write) is refused with
    /// [`Error::OutboundFull`](crate::Error::OutboundFull). Bytes the backend had already
    /// received when reading paused are still handed to the handler, so the queue can exceed
    /// the mark by what is in flight: on io_uring up to what the buffer ring holds (about
    /// 512 KiB at a time by default, at most `ring_buffers × read_buffer_size`). At least
    /// 1 KiB; default 4 MiB.
    pub fn max_outbound_buffer(mut self, bytes: usize) -> Self {
        self.max_outbound = bytes;
        self
    }

    /// The most that other threads may have handed to one loop's connections with
    /// [`ConnHandle`](crate::ConnHandle) writes and the loop not yet taken: their bytes plus
    /// 128 per write (the task's own cost). Past it such writes are refused at the call with
    /// [`Error::OutboundFull`](crate::Error::OutboundFull), so a flood of them from many
    /// threads (each under its connection's [`Options::max_outbound_buffer`]) cannot grow the
    /// queue without bound. The loop takes at most 1,024 tasks per iteration, serving its
    /// sockets in between. Default 64 MiB.
    pub fn max_loop_backlog(mut self, bytes: usize) -> Self {
        self.max_loop_backlog = bytes;
        self
    }

    /// `TCP_NODELAY` on accepted connections (on by default).
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.tcp_nodelay = on;
        self
    }

    /// TCP keepalive: idle time before the first probe (`None` = off, the default), in whole
    /// seconds from 1 to 32767 (what Linux accepts).
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.keepalive = idle;
        self
    }

    /// TCP keepalive probe interval (default: idle / 5, at least a second), in whole seconds
    /// from 1 to 32767.
    pub fn tcp_keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = Some(interval);
        self
    }

    /// TCP keepalive probe count, from 1 to 127 (default 5).
    pub fn tcp_keepalive_count(mut self, count: u32) -> Self {
        self.keepalive_count = Some(count);
        self
    }

    /// `SO_SNDBUF` of accepted connections, from 1 byte to `i32::MAX` (the kernel doubles the
    /// value and caps it at `net.core.wmem_max`).
    pub fn socket_send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = Some(bytes);
        self
    }

    /// `SO_RCVBUF` of accepted connections, from 1 byte to `i32::MAX` (doubled and capped at
    /// `net.core.rmem_max`).
    pub fn socket_recv_buffer(mut self, bytes: usize) -> Self {
        self.recv_buffer = Some(bytes);
        self
    }

    /// Pin loop `i` to core `i % cores`.
    pub fn pin_cores(mut self, on: bool) -> Self {
        self.pin_cores = on;
        self
    }

    /// Call [`EventHandler::on_tick`](crate::EventHandler::on_tick) (on loop 0).
    pub fn ticker(mut self, on: bool) -> Self {
        self.ticker = on;
        self
    }

    /// The backend to run on.
    pub fn backend(mut self, choice: BackendChoice) -> Self {
        self.backend = choice;
        self
    }

    /// Whether `GNET_BACKEND` may override [`Options::backend`] (on by default; tests that
    /// must run a given backend turn it off).
    pub fn honour_env(mut self, on: bool) -> Self {
        self.honour_env = on;
        self
    }

    /// How long an orderly close waits for queued output to reach the kernel before it gives
    /// up and closes anyway (the peer stopped reading). Default 30 s.
    pub fn close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }

    /// How long a dial ([`Engine::dial`](crate::Engine::dial),
    /// [`Conn::dial`](crate::Conn::dial)) may take to connect before it fails with
    /// [`Error::DialTimeout`](crate::Error::DialTimeout). More than zero; default 10 s.
    pub fn dial_timeout(mut self, d: Duration) -> Self {
        self.dial_timeout = d;
        self
    }

    /// How long [`Engine::stop`](crate::Engine::stop) lets connections flush. Default 5 s.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// io_uring: entries in each loop's provided-buffer ring, a power of two up to 32768.
    /// More entries let one pass serve more connections with small messages. With receive
    /// bundles the entries are slices of one area of at most `ring_buffers ×
    /// read_buffer_size` bytes (512 KiB by default), sized to the traffic; without, buffers
    /// of `read_buffer_size`, a window of them posted at a time. Default 256.
    pub fn ring_buffers(mut self, n: u16) -> Self {
        self.ring_buffers = n;
        self
    }

    /// io_uring: let one receive completion fill several ring buffers (a bundle) on kernels
    /// that support it well (6.16+). Default on: a connection with more than one buffer's
    /// worth waiting is drained by one receive, which saves completions and the extra TCP
    /// ACKs that back-to-back receives of one socket provoke. Off is for comparison.
    pub fn recv_bundles(mut self, on: bool) -> Self {
        self.recv_bundles = on;
        self
    }

    /// io_uring: submission queue entries per ring, a power of two from 8 to 32768. Default
    /// 1024.
    pub fn ring_entries(mut self, n: u32) -> Self {
        self.ring_entries = n;
        self
    }

    /// The network interface (its index, as `ip link` lists them) on which a multicast UDP
    /// listen address joins its group; 0 (the default) lets the system choose. Go gnet's
    /// `WithMulticastInterfaceIndex`.
    pub fn multicast_interface(mut self, index: u32) -> Self {
        self.multicast_interface = index;
        self
    }

    /// Listen backlog, at least 1 (the kernel caps it at `net.core.somaxconn`). Default 1024.
    pub fn backlog(mut self, n: i32) -> Self {
        self.backlog = n;
        self
    }

    /// Stop gracefully on SIGINT or SIGTERM: the first one is logged and calls
    /// [`Engine::stop`](crate::Engine::stop) (connections flush what was written to them,
    /// `on_close` and `on_shutdown` run, Unix socket files are removed, [`run`](crate::run)
    /// returns), a second one while the engine stops ends the process at once by the signal's
    /// default action. Off by default: a library does not install signal handlers unasked.
    ///
    /// The handlers are installed by `gnet::start` (and so `run` and `rotate`) once the loops
    /// are up, through the `signal-hook` crate, and removed with the watcher thread when the
    /// engine has shut down, so engines started one after another in a process each get the
    /// signals. signal-hook cannot give the default disposition back: once no engine watches
    /// any more, SIGINT and SIGTERM are ignored (the process usually exits right after `run`
    /// returns). Handlers the program installed itself keep running alongside. On Windows
    /// (stdnet) it works through signal-hook's flags (Ctrl-C is SIGINT), which a thread polls
    /// every 100 ms.
    ///
    /// # Errors
    /// Without the `signal` Cargo feature (a default one) the engine refuses to start with
    /// [`Error::InvalidOptions`](crate::Error::InvalidOptions).
    ///
    /// # Examples
    /// ```no_run
    /// # use gnet::{Action, Conn, EventHandler, Options};
    /// # struct Echo;
    /// # impl EventHandler for Echo {
    /// #     type Context = ();
    /// #     fn on_traffic(&self, _: &mut Conn<'_, ()>) -> Action { Action::None }
    /// # }
    /// // Returns Ok(()) after Ctrl-C, once every connection has been closed in order.
    /// gnet::run(Echo, "tcp://127.0.0.1:9000", Options::new().stop_on_signals(true))?;
    /// # Ok::<(), gnet::Error>(())
    /// ```
    pub fn stop_on_signals(mut self, on: bool) -> Self {
        self.stop_on_signals = on;
        self
    }
}
