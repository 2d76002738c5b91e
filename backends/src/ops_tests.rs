//! The recording sink of the backends' own datagram and connect tests (`stdnet`'s
//! `dgram_connect_tests.rs`, `uring`'s `tests_ops.rs`). The generic tests that were here are
//! in the conformance suite (`crate::conformance`, `datagram.rs` and `connect.rs`).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

use crate::contract::{Flow, Id, Sink};
use crate::socket::{Addr, Socket};

/// Everything a backend reported, in order, for the datagram and connect tests.
#[derive(Default)]
pub(crate) struct Rec {
    /// (socket, source, bytes, truncated)
    pub datagrams: Vec<(Id, SocketAddr, Vec<u8>, bool)>,
    pub errors: Vec<(Id, Option<SocketAddr>, io::Error)>,
    pub sent: Vec<(Id, usize)>,
    pub connected: Vec<(Id, io::Result<()>)>,
    pub received: HashMap<Id, Vec<u8>>,
    pub failed: Vec<(Id, io::Error)>,
    pub closed: Vec<Id>,
    /// What `datagram` answers.
    pub flow: Option<Flow>,
}

impl Sink for Rec {
    fn accepted(&mut self, _: Id, _: Socket, _: Addr) {}
    fn accept_error(&mut self, _: Id, _: io::Error) {}
    fn received(&mut self, conn: Id, data: &[u8]) -> Flow {
        self.received
            .entry(conn)
            .or_default()
            .extend_from_slice(data);
        Flow::Continue
    }
    fn eof(&mut self, _: Id) {}
    fn sent(&mut self, id: Id, n: usize) {
        self.sent.push((id, n));
    }
    fn failed(&mut self, id: Id, error: io::Error) {
        self.failed.push((id, error));
    }
    fn closed(&mut self, id: Id) {
        self.closed.push(id);
    }
    fn woken(&mut self) {}
    fn datagram(&mut self, id: Id, from: SocketAddr, data: &[u8], truncated: bool) -> Flow {
        self.datagrams.push((id, from, data.to_vec(), truncated));
        self.flow.unwrap_or(Flow::Continue)
    }
    fn datagram_error(&mut self, id: Id, to: Option<SocketAddr>, error: io::Error) {
        self.errors.push((id, to, error));
    }
    fn connected(&mut self, id: Id, result: io::Result<()>) {
        self.connected.push((id, result));
    }
}
