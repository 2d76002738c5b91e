//! Load balancing across loops for the single-acceptor mode.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gnet_backends::Addr;

use crate::handle::LoopShared;
use crate::options::LoadBalancing;

/// Picks the loop that serves a new connection.
pub(crate) struct Balancer {
    kind: LoadBalancing,
    next: AtomicUsize,
}

impl Balancer {
    pub(crate) fn new(kind: LoadBalancing) -> Self {
        Balancer {
            kind,
            next: AtomicUsize::new(0),
        }
    }

    fn round_robin(&self, n: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % n
    }

    /// The index of the loop for a connection from `peer`.
    pub(crate) fn pick(&self, loops: &[Arc<LoopShared>], peer: &Addr) -> usize {
        let n = loops.len();
        if n <= 1 {
            return 0;
        }
        match self.kind {
            LoadBalancing::RoundRobin => self.round_robin(n),
            LoadBalancing::LeastConnections => loops
                .iter()
                .enumerate()
                .min_by_key(|(_, l)| l.conns.load(Ordering::Relaxed))
                .map_or(0, |(i, _)| i),
            LoadBalancing::SourceAddrHash => match peer {
                Addr::Inet(a) => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    a.ip().hash(&mut h);
                    (h.finish() % n as u64) as usize
                }
                Addr::Unix(Some(p)) => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    p.hash(&mut h);
                    (h.finish() % n as u64) as usize
                }
                // Unnamed Unix peers (and kinds of address to come) have nothing to hash.
                _ => self.round_robin(n),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loops(n: usize) -> Vec<Arc<LoopShared>> {
        (0..n)
            .map(|i| Arc::new(LoopShared::new(i, usize::MAX, usize::MAX)))
            .collect()
    }

    #[test]
    fn round_robin_cycles() {
        let l = loops(3);
        let b = Balancer::new(LoadBalancing::RoundRobin);
        let peer = Addr::Unix(None);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(&l, &peer)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_connections_picks_the_emptiest() {
        let l = loops(3);
        l[0].conns.store(5, Ordering::Relaxed);
        l[1].conns.store(2, Ordering::Relaxed);
        l[2].conns.store(7, Ordering::Relaxed);
        let b = Balancer::new(LoadBalancing::LeastConnections);
        assert_eq!(b.pick(&l, &Addr::Unix(None)), 1);
    }

    #[test]
    fn source_hash_ignores_the_port() {
        let l = loops(4);
        let b = Balancer::new(LoadBalancing::SourceAddrHash);
        let a = b.pick(&l, &Addr::Inet("10.1.2.3:1000".parse().unwrap()));
        for port in 1001..1050 {
            let p = Addr::Inet(format!("10.1.2.3:{port}").parse().unwrap());
            assert_eq!(b.pick(&l, &p), a);
        }
    }
}
