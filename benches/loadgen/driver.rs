//! The single-threaded event loop on `mio`: opening the connections, then closed-loop,
//! open-loop or idle load.
//!
//! | phase  | a connection may start message `seq` when                          |
//! |--------|-------------------------------------------------------------------|
//! | Probe  | `seq == 0` (the one echo that proves the connection works)         |
//! | Idle   | never                                                              |
//! | Closed | `seq < echoed + pipeline`                                          |
//! | Open   | that, and the schedule has made it due (`started + backlog`)       |
//!
//! The open-loop schedule issues bursts of `pipeline` messages, all due at the same instant,
//! at `rate / pipeline` bursts per second, round robin over the connections: a pipeline of
//! 16 then batches as it does in closed loop, and the load generator is not held to one
//! `write` per message.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::conn::{Conn, ConnError, Shared, State};
use super::histogram::Histogram;
use super::payload::Payload;
use super::procfs::{self, CpuSample};

const SCRATCH_LEN: usize = 64 * 1024;
const RBUF_LEN: usize = 256 * 1024;
const MS: u64 = 1_000_000;
/// How long past `--warmup` the load waits for every connection to have had its warm-up
/// echoes before measuring anyway (a server starving some connection must not hang the run).
const WARMUP_GRACE: Duration = Duration::from_secs(10);

/// The clock of a load run, shared by the TCP and UDP drivers: when it started, when the
/// window may open, when the warm-up stops waiting, and in open loop the burst schedule.
pub struct Schedule {
    pub t0: u64,
    pub measure_at: u64,
    pub give_up_at: u64,
    /// Nanoseconds between bursts of `pipeline` messages (open loop; 0 in closed loop).
    interval: f64,
}

impl Schedule {
    pub fn new(now: u64, warmup: Duration, rate: Option<f64>, pipeline: u64) -> Schedule {
        let measure_at = now + warmup.as_nanos() as u64;
        Schedule {
            t0: now,
            measure_at,
            give_up_at: measure_at + WARMUP_GRACE.as_nanos() as u64,
            // Open loop sends bursts of `pipeline` messages, so the interval is per burst.
            interval: rate.map_or(0.0, |r| 1e9 * pipeline as f64 / r),
        }
    }

    /// How many bursts are due by `now`.
    pub fn due(&self, now: u64) -> u64 {
        ((now - self.t0) as f64 / self.interval) as u64 + 1
    }

    /// When burst `k` is due.
    pub fn burst_at(&self, k: u64) -> u64 {
        self.t0 + (k as f64 * self.interval) as u64
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Probe,
    Idle,
    Closed,
    Open,
}

/// A failure that invalidates the whole run.
pub enum Fatal {
    Mismatch(String),
    Setup(String),
}

/// What the measured window of a load run saw.
#[derive(Default)]
pub struct Window {
    /// How long the warm-up took.
    pub warmup_secs: f64,
    pub secs: f64,
    pub msgs: u64,
    pub reads: u64,
    pub writes: u64,
    /// Polls while measuring, and the readiness events they returned.
    pub polls: (u64, u64),
    pub hist: Histogram,
    pub client_cpu_secs: f64,
    pub server_cpu_secs: Option<f64>,
    /// The server's CPU from `/proc/PID/stat` alone (10 ms resolution).
    pub server_stat_cpu_secs: Option<f64>,
    /// Busy time of the server's core (`--server-core`).
    pub server_core_secs: Option<f64>,
}

pub struct Driver {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    shared: Shared,
    addr: SocketAddr,
    pipeline: u64,
    phase: Phase,
    /// Polls while measuring, and the events they returned (counted as they are handled).
    window_polls: (u64, u64),
    pub errors: u64,
    pub connect_retries: u64,
    pub last_error: Option<String>,
}

fn sample(pid: &str) -> Option<CpuSample> {
    procfs::cpu_sample(pid).ok()
}

/// The CPU counters read when the window opens and when it closes.
pub struct Samples {
    client: CpuSample,
    server: Option<CpuSample>,
    /// When, and the idle seconds of the server's core then.
    core: Option<(Instant, f64)>,
}

impl Samples {
    /// Fills in the CPU fields of `w` from these samples to `end`.
    pub fn until(&self, end: &Samples, w: &mut Window) {
        let both = self.server.zip(end.server);
        w.client_cpu_secs = self.client.until(&end.client);
        w.server_cpu_secs = both.map(|(a, b)| a.until(&b));
        w.server_stat_cpu_secs = both.map(|(a, b)| b.stat_secs - a.stat_secs);
        w.server_core_secs = self
            .core
            .zip(end.core)
            .map(|(a, b)| (b.0 - a.0).as_secs_f64() - (b.1 - a.1));
    }

    pub fn take(server_pid: Option<&str>, server_core: Option<usize>) -> Samples {
        Samples {
            client: sample("self").unwrap_or_default(),
            server: server_pid.and_then(sample),
            core: server_core.and_then(|c| Some((Instant::now(), procfs::core_idle_secs(c).ok()?))),
        }
    }
}

/// The measured window, once open: its bounds on the shared clock and the counters at its
/// start.
struct Opened {
    start: u64,
    end: u64,
    cpu: Samples,
}

impl Driver {
    pub fn new(addr: SocketAddr, conns: usize, size: usize, pipeline: u64) -> io::Result<Self> {
        Ok(Driver {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            conns: (0..conns as u32).map(Conn::new).collect(),
            shared: Shared {
                payload: Payload::new(size),
                scratch: vec![0; SCRATCH_LEN],
                rbuf: vec![0; RBUF_LEN],
                start: Instant::now(),
                measuring: false,
                hist: Histogram::new(),
                window_msgs: 0,
                warm_after: 0,
                warm_conns: 0,
                window_reads: 0,
                window_writes: 0,
            },
            addr,
            pipeline,
            phase: Phase::Probe,
            window_polls: (0, 0),
            errors: 0,
            connect_retries: 0,
            last_error: None,
        })
    }

    fn allowed(&self, c: &Conn) -> u64 {
        match self.phase {
            Phase::Probe => 1,
            Phase::Idle => c.rx_seq,
            Phase::Closed => c.rx_seq + self.pipeline,
            Phase::Open => (c.rx_seq + self.pipeline).min(c.started() + c.backlog.len() as u64),
        }
    }

    fn pump(&mut self, id: usize) -> io::Result<()> {
        let allowed = self.allowed(&self.conns[id]);
        self.conns[id].pump(&mut self.shared, allowed)
    }

    fn close(&mut self, id: usize) {
        if let Some(mut stream) = self.conns[id].stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
    }

    /// Drops connection `id` after a failure during the load; it is not replaced.
    fn lose(&mut self, id: usize, why: &ConnError) {
        self.close(id);
        self.conns[id].state = State::Failed;
        self.errors += 1;
        self.last_error = Some(format!("connection {id}: {why}"));
    }

    // ---- opening -------------------------------------------------------------------------

    fn start_connect(&mut self, id: usize) -> io::Result<()> {
        let mut stream = TcpStream::connect(self.addr)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll
            .registry()
            .register(&mut stream, Token(id), interest)?;
        let conn = &mut self.conns[id];
        conn.stream = Some(stream);
        conn.state = State::Connecting;
        Ok(())
    }

    /// Advances connection `id` through connecting and its probe echo; `Ok(true)` once it
    /// is ready.
    fn setup_event(&mut self, id: usize, ev: &Event) -> Result<bool, ConnError> {
        if self.conns[id].state == State::Connecting {
            let stream = self.conns[id].stream.as_ref().expect("connecting stream");
            if let Some(e) = stream.take_error().map_err(ConnError::Io)? {
                return Err(ConnError::Io(e));
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected && !ev.is_error() => {
                    return Ok(false);
                }
                Err(e) => return Err(ConnError::Io(e)),
            }
            stream.set_nodelay(true).map_err(ConnError::Io)?;
            self.conns[id].state = State::Probing;
            self.pump(id).map_err(ConnError::Io)?;
        }
        if self.conns[id].state == State::Probing {
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                self.conns[id].on_readable(&mut self.shared)?;
            }
            if self.conns[id].rx_seq >= 1 {
                self.conns[id].state = State::Ready;
                return Ok(true);
            }
            self.pump(id).map_err(ConnError::Io)?;
        }
        Ok(false)
    }

    /// Opens every connection and echoes one message on each, with at most `concurrency`
    /// of them being opened at a time; failed attempts are retried with back-off until
    /// `timeout`.
    pub fn open_all(&mut self, concurrency: usize, timeout: Duration) -> Result<(), Fatal> {
        self.phase = Phase::Probe;
        let n = self.conns.len();
        let deadline = self.shared.now_ns() + timeout.as_nanos() as u64;
        let (mut next, mut opening, mut ready) = (0usize, 0usize, 0usize);
        let mut retries: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
        while ready < n {
            let now = self.shared.now_ns();
            if now > deadline {
                return Err(Fatal::Setup(format!(
                    "only {ready} of {n} connections to {} were up after {:.1} s; last error: {}",
                    self.addr,
                    timeout.as_secs_f64(),
                    self.last_error.as_deref().unwrap_or("none")
                )));
            }
            while opening < concurrency {
                let id = match retries.peek() {
                    Some(&Reverse((due, id))) if due <= now => {
                        retries.pop();
                        id
                    }
                    _ if next < n => {
                        next += 1;
                        next - 1
                    }
                    _ => break,
                };
                opening += 1;
                if let Err(e) = self.start_connect(id) {
                    opening -= 1;
                    retries.push(Reverse((self.retry_later(id, &ConnError::Io(e)), id)));
                }
            }
            let wait = if retries.is_empty() { 100 } else { 2 };
            self.poll_once(Some(Duration::from_millis(wait)))?;
            let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            for ev in events.iter() {
                let id = ev.token().0;
                match self.setup_event(id, ev) {
                    Ok(true) => {
                        opening -= 1;
                        ready += 1;
                    }
                    Ok(false) => {}
                    Err(ConnError::Mismatch(m)) => return Err(Fatal::Mismatch(m)),
                    Err(e) => {
                        opening -= 1;
                        retries.push(Reverse((self.retry_later(id, &e), id)));
                    }
                }
            }
            self.events = events;
        }
        Ok(())
    }

    /// Resets connection `id` after a failed attempt and returns when to try again.
    fn retry_later(&mut self, id: usize, why: &ConnError) -> u64 {
        self.close(id);
        self.connect_retries += 1;
        self.last_error = Some(format!("connection {id}: {why}"));
        let conn = &mut self.conns[id];
        conn.reset();
        conn.attempts += 1;
        let backoff = (2 * MS) << conn.attempts.min(9);
        self.shared.now_ns() + backoff
    }

    fn poll_once(&mut self, timeout: Option<Duration>) -> Result<(), Fatal> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {
                self.window_polls.0 += u64::from(self.shared.measuring);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(Fatal::Setup(format!("poll failed: {e}"))),
        }
    }

    // ---- load ----------------------------------------------------------------------------

    fn load_event(&mut self, id: usize, ev: &Event) -> Result<(), Fatal> {
        if self.conns[id].state != State::Ready {
            return Ok(());
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            match self.conns[id].on_readable(&mut self.shared) {
                Ok(_) => {}
                Err(ConnError::Mismatch(m)) => return Err(Fatal::Mismatch(m)),
                Err(e) => {
                    self.lose(id, &e);
                    return Ok(());
                }
            }
        }
        if let Err(e) = self.pump(id) {
            self.lose(id, &ConnError::Io(e));
        }
        Ok(())
    }

    fn handle_events(&mut self) -> Result<(), Fatal> {
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let mut result = Ok(());
        for ev in events.iter() {
            self.window_polls.1 += u64::from(self.shared.measuring);
            result = self.load_event(ev.token().0, ev);
            if result.is_err() {
                break;
            }
        }
        self.events = events;
        result
    }

    /// Open loop: hands every burst of `pipeline` messages that has fallen due to its
    /// connection (bursts go round robin), then lets those connections write.
    fn issue_due(&mut self, issued: &mut u64, plan: &Schedule, now: u64) {
        let due = plan.due(now);
        let n = self.conns.len() as u64;
        let first = *issued;
        while *issued < due {
            let id = (*issued % n) as usize;
            if self.conns[id].state == State::Ready {
                let at = plan.burst_at(*issued);
                let backlog = &mut self.conns[id].backlog;
                backlog.extend(std::iter::repeat_n(at, self.pipeline as usize));
            }
            *issued += 1;
        }
        for k in first..due.min(first + n) {
            let id = (k % n) as usize;
            if self.conns[id].state == State::Ready {
                if let Err(e) = self.pump(id) {
                    self.lose(id, &ConnError::Io(e));
                }
            }
        }
    }

    /// Runs the load for `warmup` and until every connection has had `warmup_msgs` echoes
    /// (waiting at most [`WARMUP_GRACE`] past `warmup` for that), then measures for
    /// `duration`. With `rate`, messages are issued on a fixed schedule (open loop);
    /// otherwise each connection keeps `pipeline` messages in flight (closed loop).
    pub fn run_load(
        &mut self,
        rate: Option<f64>,
        (warmup, warmup_msgs): (Duration, u64),
        duration: Duration,
        server_pid: Option<&str>,
        server_core: Option<usize>,
    ) -> Result<Window, Fatal> {
        self.phase = if rate.is_some() {
            Phase::Open
        } else {
            Phase::Closed
        };
        let plan = Schedule::new(self.shared.now_ns(), warmup, rate, self.pipeline);
        let (t0, measure_at) = (plan.t0, plan.measure_at);
        // Counted from here: every connection has had its one probe echo already.
        let warm_needed = if warmup_msgs == 0 {
            0
        } else {
            self.shared.warm_after =
                self.conns.iter().map(|c| c.rx_seq).max().unwrap_or(0) + warmup_msgs;
            self.shared.warm_conns = 0;
            self.live_conns()
        };
        let mut issued = 0u64;
        let mut warmup_secs = 0.0;
        let mut window: Option<Opened> = None;
        for id in 0..self.conns.len() {
            if self.conns[id].state == State::Ready {
                if let Err(e) = self.pump(id) {
                    self.lose(id, &ConnError::Io(e));
                }
            }
        }
        loop {
            let now = self.shared.now_ns();
            let warm = self.shared.warm_conns >= warm_needed || now >= plan.give_up_at;
            if window.is_none() && now >= measure_at && warm {
                let cpu = Samples::take(server_pid, server_core);
                let start = self.shared.now_ns();
                window = Some(Opened {
                    start,
                    end: start + duration.as_nanos() as u64,
                    cpu,
                });
                warmup_secs = (start - t0) as f64 / 1e9;
                self.shared.measuring = true;
            }
            if let Some(Opened { start, end, cpu }) = &window {
                if now >= *end {
                    self.shared.measuring = false;
                    let secs = (self.shared.now_ns() - start) as f64 / 1e9;
                    let mut w = Window {
                        warmup_secs,
                        secs,
                        msgs: self.shared.window_msgs,
                        polls: self.window_polls,
                        reads: self.shared.window_reads,
                        writes: self.shared.window_writes,
                        hist: std::mem::take(&mut self.shared.hist),
                        ..Window::default()
                    };
                    cpu.until(&Samples::take(server_pid, server_core), &mut w);
                    return Ok(w);
                }
            }
            // Past `measure_at` and still warming up: look again within a few milliseconds
            // (echoes arriving end the poll sooner).
            let mut wake = window
                .as_ref()
                .map_or(measure_at.max(now + 3 * MS), |w| w.end);
            if rate.is_some() {
                self.issue_due(&mut issued, &plan, now);
                wake = wake.min(plan.burst_at(issued));
            }
            let gap = wake.saturating_sub(self.shared.now_ns());
            // epoll_wait counts whole milliseconds; closer deadlines are met by polling.
            let timeout = Duration::from_millis((gap / MS).saturating_sub(1).min(100));
            self.poll_once(Some(timeout))?;
            self.handle_events()?;
        }
    }

    /// Keeps the connections open and quiet for `hold`; any byte that arrives is an error.
    pub fn hold_idle(&mut self, hold: Duration) -> Result<(), Fatal> {
        self.phase = Phase::Idle;
        let end = self.shared.now_ns() + hold.as_nanos() as u64;
        loop {
            let gap = end.saturating_sub(self.shared.now_ns());
            if gap == 0 {
                return Ok(());
            }
            self.poll_once(Some(Duration::from_nanos(gap.min(100 * MS))))?;
            self.handle_events()?;
        }
    }

    pub fn live_conns(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| c.state == State::Ready)
            .count()
    }

    /// Closes every connection with a reset (`SO_LINGER` 0), so that repeated runs of
    /// 10,000 connections leave no `TIME_WAIT` entries holding local ports.
    pub fn close_all(&mut self) {
        for id in 0..self.conns.len() {
            if let Some(stream) = self.conns[id].stream.as_ref() {
                let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
            }
            self.close(id);
        }
    }
}
