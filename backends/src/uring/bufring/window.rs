//! The window ring, for plain receives: `entries` buffers of `read_buffer_size` each, of which
//! only a window is posted. A plain receive fills one buffer (never two), so it can take up to
//! a whole buffer whatever the average; and since it writes only what arrived, a window of
//! large buffers touches no more memory than the received bytes.
//!
//! The window is sized once per poll ([`WindowRing::adapt`]) to as many buffers as hold
//! [`CYCLE_BYTES`] at the recent fill per buffer: small messages get the whole ring, 16 KiB
//! ones 32 buffers, full buffers [`MIN_WINDOW`]. Buffers `0 .. window` are posted in id order,
//! after the last one posted while the ring still holds some and from buffer 0 once it has
//! drained, so the kernel keeps filling the same few buffers while they are still in cache.
//! Buffers never posted are never touched, so their pages are never faulted in either.

use std::collections::VecDeque;
use std::io;

use super::super::area::Area;
use super::{locate, Descriptors, Run, CYCLE_BYTES, MIN_WINDOW};

pub(in crate::uring) struct WindowRing {
    pub(super) desc: Descriptors,
    area: Area,
    buf_size: usize,
    /// The ids of the buffers in the ring, from the kernel's head to our tail.
    order: VecDeque<u16>,
    /// Per buffer: posted, or lent out in a completion (not free to post).
    busy: Vec<bool>,
    /// Buffers lent out in completions and not recycled yet.
    pub(super) out: usize,
    /// How many buffers [`WindowRing::replenish`] keeps in the ring.
    pub(super) window: usize,
    /// Bytes a receive leaves in its buffer, a moving average in sixteenths.
    fill16: usize,
    /// The buffer posted last.
    last_posted: u16,
}

impl WindowRing {
    /// Allocates `entries` buffers of `buf_size` bytes (address space: pages are only
    /// touched once a buffer is posted) and posts the first window.
    pub fn new(entries: u16, buf_size: usize) -> io::Result<WindowRing> {
        let desc = Descriptors::new(entries, buf_size)?;
        let n = usize::from(entries);
        let size = n
            .checked_mul(buf_size)
            .and_then(|b| b.checked_next_multiple_of(super::PAGE))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large"))?;
        let mut w = WindowRing {
            desc,
            area: Area::new(size, false)?,
            buf_size,
            order: VecDeque::with_capacity(n),
            busy: vec![false; n],
            out: 0,
            window: n.min(MIN_WINDOW),
            fill16: 0,
            last_posted: entries - 1,
        };
        w.replenish();
        Ok(w)
    }

    /// The bytes the kernel wrote into a buffer: `run.len` bytes from its start.
    ///
    /// # Safety
    /// `run` came from [`WindowRing::take_filled`] for a completion the caller reaped, and has
    /// not been recycled since (the kernel does not write into it meanwhile).
    pub unsafe fn data(&self, run: Run) -> &[u8] {
        let start = usize::try_from(run.pos).unwrap_or(usize::MAX);
        debug_assert!(start.saturating_add(run.len) <= self.area.size);
        let len = run.len.min(self.area.size.saturating_sub(start));
        // SAFETY: the bytes lie inside the area (`start + len <= size`); the kernel finished
        // writing them before it posted the completion, which the caller reaped with acquire
        // ordering; the buffer is not in the ring, so nothing writes to it while the returned
        // borrow of `self` lives.
        unsafe { std::slice::from_raw_parts(self.area.base.as_ptr().add(start), len) }
    }

    /// Takes the buffer of `run` back from the backend, free to be posted again.
    pub fn recycle_run(&mut self, run: Run) {
        let bid = (run.pos / self.buf_size as u64) as usize;
        match self.busy.get_mut(bid) {
            Some(busy) if *busy => {
                *busy = false;
                self.out -= 1;
            }
            _ => log::error!("io_uring: buffer {bid} recycled twice"),
        }
    }

    /// The next buffer to post: the first free one from `from` up to the window's end, then
    /// from the window's start, then (while the backend holds buffers of the window in a
    /// callback) beyond the window.
    fn next_free(&self, from: usize) -> Option<u16> {
        let total = self.busy.len();
        let window = self.window.min(total);
        let from = if from < window { from } else { 0 };
        (from..window)
            .chain(0..from)
            .chain(window..total)
            .find(|&b| !self.busy[b])
            .map(|b| b as u16)
    }

    /// Tops the ring up to the window with free buffers, in ascending id order (after the last
    /// one posted while the ring holds some, from 0 once it has drained), and publishes them.
    pub fn replenish(&mut self) {
        let mut from = if self.order.is_empty() {
            0
        } else {
            usize::from(self.last_posted) + 1
        };
        while self.order.len() < self.window {
            let Some(bid) = self.next_free(from) else {
                break;
            };
            from = usize::from(bid) + 1;
            self.busy[usize::from(bid)] = true;
            self.last_posted = bid;
            // SAFETY: the ring holds fewer than `entries` descriptors (`order` counts every one
            // the kernel may not have consumed, and is below the window, at most `entries`);
            // buffer `bid` lies inside the area and was free: neither posted nor lent out.
            unsafe {
                let addr = self
                    .area
                    .base
                    .as_ptr()
                    .add(usize::from(bid) * self.buf_size);
                self.desc.push(addr, self.buf_size as u32, bid);
            }
            self.order.push_back(bid);
        }
        self.desc.publish();
    }

    /// Resizes the window to the traffic seen: as many buffers as hold [`CYCLE_BYTES`] at the
    /// recent fill, at least [`MIN_WINDOW`], at most all of them. Called once per poll.
    pub fn adapt(&mut self) {
        if self.fill16 == 0 {
            // Nothing received yet.
            return;
        }
        let fill = (self.fill16 / 16).max(1);
        self.window = (CYCLE_BYTES / fill).max(MIN_WINDOW).min(self.busy.len());
    }

    /// Free buffers the kernel will find in the ring after the next replenish.
    pub fn available(&self) -> usize {
        (self.busy.len() - self.out).min(self.window)
    }

    /// Takes out of the ring the buffer a plain receive filled (`first`, `len` bytes) and
    /// appends it to `runs`. A completion naming a buffer that is not in the ring (a kernel or
    /// bookkeeping bug) is logged and yields nothing, so no buffer is ever lent twice.
    pub fn take_filled(&mut self, first: u16, len: usize, runs: &mut Vec<Run>) {
        let Some(at) = locate(first, self.order.iter().copied()) else {
            return;
        };
        self.order.remove(at);
        self.out += 1;
        let len = len.min(self.buf_size);
        runs.push(Run {
            pos: u64::from(first) * self.buf_size as u64,
            count: 1,
            len,
        });
        self.fill16 = if self.fill16 == 0 {
            len * 16
        } else {
            (self.fill16 * 7 + len * 16) / 8
        };
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::{CYCLE_BYTES, MIN_WINDOW};
    use super::WindowRing;

    /// `n` plain receives of `len` bytes, each taken from the ring's head and given back,
    /// `per_poll` per poll; returns the buffers they used.
    fn feed(w: &mut WindowRing, n: usize, len: usize, per_poll: usize) -> BTreeSet<u16> {
        let mut used = BTreeSet::new();
        let mut runs = Vec::new();
        for _ in 0..n / per_poll {
            for _ in 0..per_poll {
                let first = *w.order.front().expect("a buffer in the ring");
                w.take_filled(first, len, &mut runs);
            }
            for r in runs.drain(..) {
                used.insert((r.pos / w.buf_size as u64) as u16);
                w.recycle_run(r);
            }
            w.replenish();
            w.adapt();
        }
        used
    }

    #[test]
    fn the_window_follows_the_fill() {
        let mut w = WindowRing::new(256, 64 * 1024).unwrap();
        assert_eq!(w.order.len(), MIN_WINDOW);
        // Small messages touch a few bytes per buffer: the whole ring is posted.
        feed(&mut w, 64, 100, 1);
        assert_eq!(w.window, 256);
        assert_eq!(w.order.len(), 256);
        // 16 KiB in each buffer: 512 KiB worth. A shrunken window posts nothing more until
        // the ring drains below it.
        feed(&mut w, 300, 16 * 1024, 1);
        assert_eq!(w.window, CYCLE_BYTES / (16 * 1024));
        assert!(w.order.len() <= 32);
        // Full buffers: the minimum.
        feed(&mut w, 64, 64 * 1024, 1);
        assert_eq!(w.window, MIN_WINDOW);
        assert_eq!(w.out, 0);
    }

    #[test]
    fn full_buffers_cycle_the_first_few_in_order() {
        let mut w = WindowRing::new(64, 64 * 1024).unwrap();
        // The window grows and shrinks, then large receives, three per poll (the ring rarely
        // drains): only buffers 0 .. MIN_WINDOW are used.
        feed(&mut w, 40, 1000, 1);
        assert_eq!(w.window, 64);
        feed(&mut w, 200, 64 * 1024, 1);
        let used = feed(&mut w, 300, 64 * 1024, 3);
        assert_eq!(w.window, MIN_WINDOW);
        let window: BTreeSet<u16> = (0..MIN_WINDOW as u16).collect();
        assert_eq!(used, window);
        assert_eq!(w.out, 0);
    }

    #[test]
    fn a_buffer_lent_out_is_not_posted_until_recycled() {
        let mut w = WindowRing::new(8, 1024).unwrap();
        let mut runs = Vec::new();
        w.take_filled(0, 1000, &mut runs);
        assert_eq!(runs[0].pos, 0);
        assert_eq!(runs[0].len, 1000);
        // Buffer 0 is out: refills and later receives never see it.
        for _ in 0..20 {
            w.replenish();
            assert!(!w.order.contains(&0), "{:?}", w.order);
            let first = *w.order.front().unwrap();
            let mut more = Vec::new();
            w.take_filled(first, 10, &mut more);
            w.recycle_run(more[0]);
        }
        w.recycle_run(runs[0]);
        assert_eq!(w.out, 0);
        // A completion naming a buffer that is no longer in the ring takes nothing.
        w.replenish();
        let first = *w.order.front().unwrap();
        let mut twice = Vec::new();
        w.take_filled(first, 10, &mut twice);
        w.take_filled(first, 10, &mut twice);
        assert_eq!(twice.len(), 1);
        assert_eq!(w.out, 1);
    }
}
