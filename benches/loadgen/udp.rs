//! The UDP load: `--conns` connected UDP sockets (one source port each, so a server with a
//! socket per loop sees them spread), each keeping up to `--pipeline` datagrams in flight.
//!
//! Every datagram is one whole message of `--size` bytes built by [`Payload`] (its header
//! names the socket and the sequence number), and every echo is checked whole: its length,
//! the socket it came back on and every byte. UDP may drop datagrams, so a datagram not
//! echoed within `--loss-timeout` is counted lost and its slot in the pipeline reused; an
//! echo that arrives after that is counted late and otherwise ignored. Anything else that
//! differs (a datagram never sent, a short or long one, a wrong byte) stops the run as a
//! mismatch, like a wrong byte on TCP.
//!
//! The phases follow the TCP driver's: a probe echo on every socket, a warm-up, then a
//! measured window in closed loop (saturation) or open loop (`--rate`, bursts of
//! `--pipeline` datagrams due together, latency counted from the due time).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::driver::{Fatal, Samples, Schedule, Window};
use super::histogram::Histogram;
use super::payload::Payload;

const MS: u64 = 1_000_000;
/// How often datagrams overdue for their echo are looked for.
const SWEEP_EVERY: u64 = 5 * MS;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Probe,
    Closed,
    Open,
}

/// A datagram sent and not echoed yet.
struct Sent {
    seq: u64,
    /// When its latency starts: when it was sent, or in open loop when it was due.
    clock: u64,
    /// When it went out, for the loss timeout.
    at: u64,
}

struct Flow {
    id: u32,
    sock: Option<UdpSocket>,
    next_seq: u64,
    inflight: VecDeque<Sent>,
    /// Open loop: due times of datagrams not sent yet.
    backlog: VecDeque<u64>,
    echoed: u64,
}

pub struct UdpDriver {
    poll: Poll,
    events: Events,
    flows: Vec<Flow>,
    payload: Payload,
    sbuf: Vec<u8>,
    /// One byte longer than a datagram, so that a longer echo shows as longer.
    rbuf: Vec<u8>,
    start: Instant,
    addr: SocketAddr,
    pipeline: u64,
    loss_timeout: u64,
    phase: Phase,
    measuring: bool,
    hist: Histogram,
    /// While measuring: echoes, receives, sends, polls and the events they returned.
    window: (u64, u64, u64, (u64, u64)),
    warm_after: u64,
    warm_flows: usize,
    /// Datagrams given up on, and echoes that came after that.
    pub lost: u64,
    pub late: u64,
    /// Of `lost`, those given up on while measuring.
    pub window_lost: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

impl UdpDriver {
    pub fn new(
        addr: SocketAddr,
        conns: usize,
        size: usize,
        pipeline: u64,
        loss_timeout: Duration,
    ) -> io::Result<Self> {
        let flows = (0..conns as u32)
            .map(|id| Flow {
                id,
                sock: None,
                next_seq: 0,
                inflight: VecDeque::new(),
                backlog: VecDeque::new(),
                echoed: 0,
            })
            .collect();
        Ok(UdpDriver {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            flows,
            payload: Payload::new(size),
            sbuf: vec![0; size],
            rbuf: vec![0; size + 1],
            start: Instant::now(),
            addr,
            pipeline,
            loss_timeout: loss_timeout.as_nanos() as u64,
            phase: Phase::Probe,
            measuring: false,
            hist: Histogram::new(),
            window: (0, 0, 0, (0, 0)),
            warm_after: 0,
            warm_flows: 0,
            lost: 0,
            late: 0,
            window_lost: 0,
            errors: 0,
            last_error: None,
        })
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn live_conns(&self) -> usize {
        self.flows.iter().filter(|f| f.sock.is_some()).count()
    }

    /// Drops socket `id` after an error; it is not replaced.
    fn lose(&mut self, id: usize, why: &io::Error) {
        if let Some(mut sock) = self.flows[id].sock.take() {
            let _ = self.poll.registry().deregister(&mut sock);
        }
        self.errors += 1;
        self.last_error = Some(format!("socket {id}: {why}"));
    }

    /// Whether flow `f` may send another datagram now.
    fn may_send(&self, f: &Flow) -> bool {
        match self.phase {
            Phase::Probe => f.echoed == 0 && f.inflight.is_empty(),
            Phase::Closed => (f.inflight.len() as u64) < self.pipeline,
            Phase::Open => (f.inflight.len() as u64) < self.pipeline && !f.backlog.is_empty(),
        }
    }

    /// Sends what flow `id` may send, until the socket would block.
    fn pump(&mut self, id: usize) -> io::Result<()> {
        while self.flows[id].sock.is_some() && self.may_send(&self.flows[id]) {
            let flow = &mut self.flows[id];
            let seq = flow.next_seq;
            self.payload.fill(flow.id, seq, 0, &mut self.sbuf);
            let sock = flow.sock.as_ref().expect("checked above");
            match sock.send(&self.sbuf) {
                Ok(_) => {
                    let at = self.start.elapsed().as_nanos() as u64;
                    let clock = flow.backlog.pop_front().unwrap_or(at);
                    flow.inflight.push_back(Sent { seq, clock, at });
                    flow.next_seq += 1;
                    self.window.2 += u64::from(self.measuring);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Receives every datagram waiting on flow `id` and checks each.
    fn on_readable(&mut self, id: usize) -> Result<(), Fatal> {
        loop {
            let Some(sock) = self.flows[id].sock.as_ref() else {
                return Ok(());
            };
            let n = match sock.recv(&mut self.rbuf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.lose(id, &e);
                    return Ok(());
                }
            };
            let now = self.now_ns();
            self.window.1 += u64::from(self.measuring);
            self.check(id, n, now)?;
        }
    }

    fn check(&mut self, id: usize, n: usize, now: u64) -> Result<(), Fatal> {
        let size = self.payload.size();
        let flow = &mut self.flows[id];
        if n != size {
            return Err(Fatal::Mismatch(format!(
                "socket {id}: an echoed datagram of {n}{} bytes, every one sent has {size}",
                if n > size { " or more" } else { "" }
            )));
        }
        let data = &self.rbuf[..n];
        let conn = u32::from_le_bytes(data[..4].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(data[4..12].try_into().expect("8 bytes"));
        if conn != flow.id || seq >= flow.next_seq {
            return Err(Fatal::Mismatch(format!(
                "socket {id}: echo names socket {conn} message {seq}, which this socket never sent"
            )));
        }
        if let Err(bad) = self.payload.verify(flow.id, seq, 0, data) {
            return Err(Fatal::Mismatch(format!(
                "socket {id}: echoed datagram {seq} differs at offset {} of {size}: expected \
                 {:#04x}, got {:#04x}",
                bad.offset, bad.expected, bad.got
            )));
        }
        // Almost always the oldest: loopback keeps a socket's datagrams in order.
        let Some(i) = flow.inflight.iter().position(|s| s.seq == seq) else {
            self.late += 1;
            return Ok(());
        };
        let sent = flow.inflight.remove(i).expect("position found");
        flow.echoed += 1;
        if flow.echoed == self.warm_after {
            self.warm_flows += 1;
        }
        if self.measuring {
            self.hist.record(now.saturating_sub(sent.clock));
            self.window.0 += 1;
        }
        Ok(())
    }

    /// Gives up on datagrams sent more than the loss timeout ago and refills those pipelines.
    fn sweep(&mut self, now: u64) {
        for id in 0..self.flows.len() {
            let flow = &mut self.flows[id];
            let before = flow.inflight.len();
            flow.inflight
                .retain(|s| now.saturating_sub(s.at) < self.loss_timeout);
            let gone = before - flow.inflight.len();
            if gone > 0 {
                self.lost += gone as u64;
                if let Err(e) = self.pump(id) {
                    self.lose(id, &e);
                }
            }
        }
    }

    fn poll_and_handle(&mut self, timeout: Duration) -> Result<(), Fatal> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(Fatal::Setup(format!("poll failed: {e}"))),
        }
        self.window.3 .0 += u64::from(self.measuring);
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let mut result = Ok(());
        for ev in events.iter() {
            self.window.3 .1 += u64::from(self.measuring);
            let id = ev.token().0;
            if ev.is_readable() || ev.is_error() {
                result = self.on_readable(id);
                if result.is_err() {
                    break;
                }
            }
            if let Err(e) = self.pump(id) {
                self.lose(id, &e);
            }
        }
        self.events = events;
        result
    }

    /// Opens every socket and has one datagram echoed on each, resending lost probes,
    /// within `timeout`.
    pub fn open_all(&mut self, timeout: Duration) -> Result<(), Fatal> {
        let local: SocketAddr = if self.addr.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        for id in 0..self.flows.len() {
            let setup = |poll: &Poll| -> io::Result<UdpSocket> {
                let mut sock = UdpSocket::bind(local)?;
                sock.connect(self.addr)?;
                poll.registry().register(
                    &mut sock,
                    Token(id),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(sock)
            };
            let sock = setup(&self.poll)
                .map_err(|e| Fatal::Setup(format!("socket {id}: cannot set up: {e}")))?;
            self.flows[id].sock = Some(sock);
        }
        self.phase = Phase::Probe;
        let deadline = self.now_ns() + timeout.as_nanos() as u64;
        let mut next_sweep = 0;
        loop {
            let now = self.now_ns();
            let waiting = self.flows.iter().filter(|f| f.echoed == 0).count();
            if waiting == 0 {
                return Ok(());
            }
            if now > deadline {
                return Err(Fatal::Setup(format!(
                    "{waiting} of {} sockets had no echo from udp://{} after {:.1} s; last \
                     error: {}",
                    self.flows.len(),
                    self.addr,
                    timeout.as_secs_f64(),
                    self.last_error.as_deref().unwrap_or("none")
                )));
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_EVERY;
                for id in 0..self.flows.len() {
                    if let Err(e) = self.pump(id) {
                        self.lose(id, &e);
                    }
                }
            }
            self.poll_and_handle(Duration::from_millis(5))?;
        }
    }

    /// Open loop: queues every burst of `pipeline` datagrams that has fallen due (bursts go
    /// round robin over the sockets) and lets those sockets send.
    fn issue_due(&mut self, issued: &mut u64, plan: &Schedule, now: u64) {
        let due = plan.due(now);
        let n = self.flows.len() as u64;
        let first = *issued;
        while *issued < due {
            let id = (*issued % n) as usize;
            let at = plan.burst_at(*issued);
            let backlog = &mut self.flows[id].backlog;
            backlog.extend(std::iter::repeat_n(at, self.pipeline as usize));
            *issued += 1;
        }
        for k in first..due.min(first + n) {
            let id = (k % n) as usize;
            if let Err(e) = self.pump(id) {
                self.lose(id, &e);
            }
        }
    }

    /// The TCP driver's `run_load`, for datagrams: warm-up, then a window of `duration` in
    /// closed loop, or in open loop at `rate`.
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
        let plan = Schedule::new(self.now_ns(), warmup, rate, self.pipeline);
        let (t0, measure_at) = (plan.t0, plan.measure_at);
        let warm_needed = if warmup_msgs == 0 {
            0
        } else {
            self.warm_after = self.flows.iter().map(|f| f.echoed).max().unwrap_or(0) + warmup_msgs;
            self.warm_flows = 0;
            self.live_conns()
        };
        let (mut issued, mut next_sweep) = (0u64, t0 + SWEEP_EVERY);
        let mut opened: Option<(u64, u64, Samples, f64, u64)> = None;
        for id in 0..self.flows.len() {
            if let Err(e) = self.pump(id) {
                self.lose(id, &e);
            }
        }
        loop {
            let now = self.now_ns();
            let warm = self.warm_flows >= warm_needed || now >= plan.give_up_at;
            if opened.is_none() && now >= measure_at && warm {
                let cpu = Samples::take(server_pid, server_core);
                let start = self.now_ns();
                let end = start + duration.as_nanos() as u64;
                opened = Some((start, end, cpu, (start - t0) as f64 / 1e9, self.lost));
                self.measuring = true;
            }
            if let Some((start, end, cpu, warmup_secs, lost_before)) = &opened {
                if now >= *end {
                    self.measuring = false;
                    self.window_lost = self.lost - lost_before;
                    let (msgs, reads, writes, polls) = self.window;
                    let mut w = Window {
                        warmup_secs: *warmup_secs,
                        secs: (self.now_ns() - start) as f64 / 1e9,
                        msgs,
                        reads,
                        writes,
                        polls,
                        hist: std::mem::take(&mut self.hist),
                        ..Window::default()
                    };
                    cpu.until(&Samples::take(server_pid, server_core), &mut w);
                    return Ok(w);
                }
            }
            // Early rather than late: the sweep need not be punctual, and a poll timeout
            // rounded down to 0 ms must not spin until it is due.
            if now + 2 * MS >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_EVERY;
            }
            let mut wake = opened
                .as_ref()
                .map_or(measure_at.max(now + 3 * MS), |w| w.1)
                .min(next_sweep);
            if rate.is_some() {
                self.issue_due(&mut issued, &plan, now);
                wake = wake.min(plan.burst_at(issued));
            }
            let gap = wake.saturating_sub(self.now_ns());
            let timeout = Duration::from_millis((gap / MS).saturating_sub(1).min(100));
            self.poll_and_handle(timeout)?;
        }
    }
}
