//! One client connection: what it has sent, what has come back, and the check in between.
//!
//! The connection never stores a message. It keeps the position it has written up to
//! (`tx_seq`, `tx_off`) and the position it has verified up to (`rx_seq`, `rx_off`); the bytes
//! themselves are produced into, and checked against, [`Payload`] on the fly, so 10,000
//! connections with 16 deep pipelines of 16 KiB messages cost a few hundred bytes each.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};

use mio::net::TcpStream;

use super::histogram::Histogram;
use super::payload::Payload;

/// Buffers and clocks shared by every connection of the (single-threaded) driver.
pub struct Shared {
    pub payload: Payload,
    pub scratch: Vec<u8>,
    pub rbuf: Vec<u8>,
    pub start: std::time::Instant,
    /// Completions are counted and timed only while this is set.
    pub measuring: bool,
    pub hist: Histogram,
    pub window_msgs: u64,
    /// Echoes a connection must have had for the warm-up to count it (0: none needed).
    pub warm_after: u64,
    /// Connections that have had `warm_after` echoes.
    pub warm_conns: usize,
    /// Reads and writes that moved data while measuring: how many syscalls the server's
    /// reply pattern costs the client per message.
    pub window_reads: u64,
    pub window_writes: u64,
}

impl Shared {
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// Why a connection stopped.
pub enum ConnError {
    Io(io::Error),
    Eof,
    /// The echo differs from what was sent: the run is invalid.
    Mismatch(String),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Eof => f.write_str("closed by the server"),
            ConnError::Mismatch(m) => f.write_str(m),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    Waiting,
    Connecting,
    Probing,
    Ready,
    Failed,
}

pub struct Conn {
    pub id: u32,
    pub stream: Option<TcpStream>,
    pub state: State,
    pub attempts: u32,
    pub tx_seq: u64,
    tx_off: usize,
    pub rx_seq: u64,
    rx_off: usize,
    bytes_tx: u64,
    bytes_rx: u64,
    /// Send times (ns since start) of messages started and not yet fully echoed.
    inflight: VecDeque<u64>,
    /// Open loop: scheduled times of messages not started yet.
    pub backlog: VecDeque<u64>,
}

impl Conn {
    pub fn new(id: u32) -> Self {
        Conn {
            id,
            stream: None,
            state: State::Waiting,
            attempts: 0,
            tx_seq: 0,
            tx_off: 0,
            rx_seq: 0,
            rx_off: 0,
            bytes_tx: 0,
            bytes_rx: 0,
            inflight: VecDeque::new(),
            backlog: VecDeque::new(),
        }
    }

    /// Forgets a failed attempt so that the next one starts a fresh stream.
    pub fn reset(&mut self) {
        *self = Conn {
            attempts: self.attempts,
            ..Conn::new(self.id)
        };
    }

    /// Messages whose first byte has been written.
    pub fn started(&self) -> u64 {
        self.tx_seq + u64::from(self.tx_off > 0)
    }

    /// Writes messages with sequence numbers below `allowed` until they are all written or
    /// the socket is full (a writable event resumes it).
    pub fn pump(&mut self, shared: &mut Shared, allowed: u64) -> io::Result<()> {
        let size = shared.payload.size();
        loop {
            let (mut seq, mut off, mut len) = (self.tx_seq, self.tx_off, 0);
            while len < shared.scratch.len() && (off > 0 || seq < allowed) {
                let n = (size - off).min(shared.scratch.len() - len);
                let out = &mut shared.scratch[len..len + n];
                shared.payload.fill(self.id, seq, off, out);
                len += n;
                off += n;
                if off == size {
                    seq += 1;
                    off = 0;
                }
            }
            if len == 0 {
                return Ok(());
            }
            let stream = self.stream.as_mut().expect("pump on a connected stream");
            match stream.write(&shared.scratch[..len]) {
                Ok(written) => {
                    let now = shared.now_ns();
                    shared.window_writes += u64::from(shared.measuring);
                    self.commit(written, size, now);
                    if written < len {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn commit(&mut self, mut written: usize, size: usize, now: u64) {
        self.bytes_tx += written as u64;
        while written > 0 {
            if self.tx_off == 0 {
                // Open loop: a message's clock started when it was due, not when it went out.
                let sent = self.backlog.pop_front().unwrap_or(now);
                self.inflight.push_back(sent);
            }
            let n = (size - self.tx_off).min(written);
            self.tx_off += n;
            written -= n;
            if self.tx_off == size {
                self.tx_seq += 1;
                self.tx_off = 0;
            }
        }
    }

    /// Reads until the socket is drained, checking every byte; returns how many messages
    /// came back complete.
    pub fn on_readable(&mut self, shared: &mut Shared) -> Result<u64, ConnError> {
        let mut done = 0;
        loop {
            let stream = self.stream.as_mut().expect("read on a connected stream");
            match stream.read(&mut shared.rbuf) {
                Ok(0) => return Err(ConnError::Eof),
                Ok(n) => {
                    let now = shared.now_ns();
                    shared.window_reads += u64::from(shared.measuring);
                    let rbuf = std::mem::take(&mut shared.rbuf);
                    let result = self.consume(shared, &rbuf[..n], now);
                    shared.rbuf = rbuf;
                    done += result?;
                    // A short read drained the socket; epoll reports the next arrival anew.
                    if n < shared.rbuf.len() {
                        return Ok(done);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(done),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
    }

    fn consume(
        &mut self,
        shared: &mut Shared,
        mut data: &[u8],
        now: u64,
    ) -> Result<u64, ConnError> {
        if self.bytes_rx + data.len() as u64 > self.bytes_tx {
            return Err(ConnError::Mismatch(format!(
                "connection {}: received {} bytes but only {} were sent",
                self.id,
                self.bytes_rx + data.len() as u64,
                self.bytes_tx
            )));
        }
        let size = shared.payload.size();
        let mut done = 0;
        while !data.is_empty() {
            let n = (size - self.rx_off).min(data.len());
            if let Err(bad) = shared
                .payload
                .verify(self.id, self.rx_seq, self.rx_off, &data[..n])
            {
                let stream_offset = self.bytes_rx + (bad.offset - self.rx_off) as u64;
                return Err(ConnError::Mismatch(format!(
                    "connection {}: echoed byte differs at stream offset {} (message {}, offset {} \
                     of {}): expected {:#04x}, got {:#04x}",
                    self.id, stream_offset, self.rx_seq, bad.offset, size, bad.expected, bad.got
                )));
            }
            self.bytes_rx += n as u64;
            self.rx_off += n;
            data = &data[n..];
            if self.rx_off == size {
                self.rx_off = 0;
                self.rx_seq += 1;
                if self.rx_seq == shared.warm_after {
                    shared.warm_conns += 1;
                }
                done += 1;
                let sent = self.inflight.pop_front().unwrap_or(now);
                if shared.measuring {
                    shared.hist.record(now.saturating_sub(sent));
                    shared.window_msgs += 1;
                }
            }
        }
        Ok(done)
    }
}
