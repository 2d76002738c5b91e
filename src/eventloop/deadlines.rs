//! The drain deadlines of closing connections.
//!
//! Every deadline is "now + a timeout", and there are only three timeouts (`close_timeout`,
//! `shutdown_timeout` once the engine stops, and `dial_timeout` for connections being
//! dialed), so the deadlines are kept in one queue per timeout, each already in time order: the next deadline is the earlier of two queue fronts,
//! and the due ones are popped from the fronts. A connection that finished draining (or whose
//! deadline was moved) leaves its entry behind; entries are checked against the connection's
//! own deadline when they come out, and stale ones at the fronts are popped eagerly, so a
//! loop that closes thousands of connections a second keeps short queues (a list scanned in
//! full at every iteration used to cost a quarter of the loop's time under such churn).

use std::collections::VecDeque;
use std::time::Instant;

use gnet_backends::Id;

/// Which timeout a deadline came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timeout {
    Close = 0,
    Shutdown = 1,
    Dial = 2,
}

#[derive(Debug, Default)]
pub(super) struct Deadlines {
    queues: [VecDeque<(Instant, Id)>; 3],
}

impl Deadlines {
    /// Schedules `at` for `id`; `at` must be now + the timeout `which` stands for.
    pub(super) fn push(&mut self, which: Timeout, at: Instant, id: Id) {
        let q = &mut self.queues[which as usize];
        debug_assert!(q.back().map_or(true, |(last, _)| *last <= at));
        q.push_back((at, id));
    }

    /// Drops the entries at the fronts for which `current` says they are no longer the
    /// connection's deadline, then returns the earliest deadline left.
    pub(super) fn next(&mut self, current: impl Fn(Id, Instant) -> bool) -> Option<Instant> {
        for q in &mut self.queues {
            while q.front().is_some_and(|&(at, id)| !current(id, at)) {
                q.pop_front();
            }
        }
        self.queues
            .iter()
            .filter_map(|q| q.front())
            .map(|e| e.0)
            .min()
    }

    /// Pops one entry due at `now`, if any: the connection and the deadline it was given.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Id, Instant)> {
        let q = self
            .queues
            .iter_mut()
            .filter(|q| q.front().is_some_and(|&(at, _)| at <= now))
            .min_by_key(|q| q.front().map(|e| e.0))?;
        q.pop_front().map(|(at, id)| (id, at))
    }

    /// Entries held (stale ones included).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_stale_fronts_dropped() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Deadlines::default();
        for i in 0..1000 {
            d.push(Timeout::Close, t0 + ms(30_000 + i), Id::new(i as usize, 1));
        }
        d.push(Timeout::Shutdown, t0 + ms(500), Id::new(5000, 1));
        // Every close deadline but the last is stale (those connections are gone).
        let last = Id::new(999, 1);
        let next = d.next(|id, _| id == last || id.index() == 5000);
        assert_eq!(next, Some(t0 + ms(500)));
        assert_eq!(d.len(), 2, "the stale fronts were dropped");
        assert_eq!(d.pop_due(t0 + ms(499)), None);
        assert_eq!(
            d.pop_due(t0 + ms(40_000)),
            Some((Id::new(5000, 1), t0 + ms(500)))
        );
        assert_eq!(d.pop_due(t0 + ms(40_000)), Some((last, t0 + ms(30_999))));
        assert_eq!(d.pop_due(t0 + ms(40_000)), None);
    }
}
