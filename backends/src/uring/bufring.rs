//! The provided-buffer ring: one per loop, shared by every connection's multishot receive.
//!
//! Two allocations: the ring of `entries` descriptors (page aligned, as the kernel requires)
//! and one contiguous block of `entries * buf_size` bytes for the buffers themselves. A plain
//! receive completion takes one buffer, a bundle as many consecutive ring entries as its bytes
//! span; the completion names the first (`IORING_CQE_F_BUFFER` plus the buffer id). The
//! backend lends the bytes to the sink and takes the buffers back when the callback ends. The
//! kernel reads the tail with acquire ordering, so the descriptor writes are published with a
//! release store of the tail.
//!
//! **Hot reuse.** Not every free buffer sits in the ring. The kernel consumes entries strictly
//! in ring order, so a ring holding all its buffers walks through every one of them in turn:
//! with 256 buffers of 64 KiB, received bytes land in up to 16 MiB of memory cycled FIFO, far
//! more than a core's cache, and by the time a reply copies them out again they have been
//! evicted. Instead only a window of buffers is posted: [`BufRing::replenish`] tops the ring
//! up before each submission with buffers `0 .. window`, cycled in order, so the kernel keeps
//! filling the same few buffers. The window is sized from the traffic ([`BufRing::adapt`],
//! once per poll): as many buffers as hold [`CYCLE_BYTES`] at the recent fill per buffer.
//! Small messages touch a few bytes of each buffer and get the whole ring; large ones (a
//! bundle fills its buffers) get a few buffers, and the connections they leave without one
//! wait on `ENOBUFS`, which costs a re-arm (measured: far less than the cache misses it
//! saves, even at 10,000 connections). Buffers never posted are never touched, so their
//! pages are never faulted in either.
//!
//! **Adjacent bundles.** The ring's order (`order`: the buffer ids from the kernel's head to
//! our tail) says which buffers a bundle filled; the descriptors cannot, because by the time
//! a completion is handled its slots may already hold buffers posted since.
//! [`BufRing::take_filled`] hands a bundle's buffers out as runs of buffers adjacent in
//! memory, and each run is one callback (and, for an echo, one send): a bundle should fill
//! adjacent buffers. Buffers are posted in ascending id order, continuing after the last one
//! posted while the ring still holds some (so that the kernel's next bundle runs on into
//! them), and from buffer 0 when the ring has drained, which under load it mostly has: the
//! window's wrap is then at the ring's end, where no bundle can cross it. (The first version
//! reposted the most recently returned buffers, sorted; as the window grew and shrank the set
//! it cycled scattered over the ring, and half of all 16 KiB bundles at 1,000 connections
//! came out as two runs.)

use std::alloc::{self, Layout};
use std::collections::VecDeque;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// The buffer group id of the loop's ring (one group per ring).
pub(super) const BGID: u16 = 0;

const PAGE: usize = 4096;

/// The bytes of buffer memory the ring should cycle through: a quarter of a typical 2 MiB L2,
/// so that received bytes are still cached when the reply copies them out (see the module
/// documentation). Measured at 16 KiB messages, capped server: 256 KiB and 1 MiB do no better.
const CYCLE_BYTES: usize = 512 * 1024;
/// The smallest window.
const MIN_WINDOW: usize = 8;

pub(super) struct BufRing {
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    bufs: NonNull<u8>,
    bufs_layout: Layout,
    entries: u16,
    buf_size: usize,
    /// Our copy of the tail: the next ring slot to fill.
    tail: u16,
    /// Buffers the kernel handed back in completions and we have not recycled yet.
    out: usize,
    /// The ids of the buffers in the ring, from the kernel's head to our tail.
    order: VecDeque<u16>,
    /// Per buffer: posted to the ring or handed out in a completion (not free to post).
    busy: Vec<bool>,
    /// Buffers neither in the ring nor handed out.
    spare: usize,
    /// How many buffers [`BufRing::replenish`] keeps in the ring.
    window: usize,
    /// Bytes a receive leaves in each buffer it takes, a moving average in sixteenths.
    fill16: usize,
    /// Buffers a receive takes, a moving average in sixteenths.
    per_recv16: usize,
    /// The buffer posted last.
    last_posted: u16,
    /// The highest buffer id ever posted (buffers are first posted in id order).
    #[cfg(test)]
    pub highest: u16,
}

/// Buffers `first .. first + count` (adjacent in memory) holding `len` bytes of one
/// receive completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub first: u16,
    pub count: u16,
    pub len: usize,
}

impl BufRing {
    /// Allocates the ring and its buffers and posts the first [`MIN_WINDOW`] of them.
    ///
    /// `entries` must be a power of two in `1..=32768`, `buf_size` in `1..=u32::MAX`.
    pub fn new(entries: u16, buf_size: usize) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring_buffers must be a power of two up to 32768, not {entries}"),
            ));
        }
        if buf_size == 0 || u32::try_from(buf_size).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("read_buffer_size must be in 1..=4 GiB, not {buf_size}"),
            ));
        }
        let n = usize::from(entries);
        let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large");
        let ring_bytes = (n * std::mem::size_of::<BufRingEntry>()).next_multiple_of(PAGE);
        let ring_layout = Layout::from_size_align(ring_bytes, PAGE).map_err(|_| too_big())?;
        let bufs_bytes = n.checked_mul(buf_size).ok_or_else(too_big)?;
        let bufs_layout = Layout::from_size_align(bufs_bytes, 64).map_err(|_| too_big())?;

        // SAFETY: `ring_layout` has a non-zero size (at least one page).
        let ring = NonNull::new(unsafe { alloc::alloc_zeroed(ring_layout) }.cast::<BufRingEntry>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: `bufs_layout` has a non-zero size (`entries >= 1`, `buf_size >= 1`).
        let Some(bufs) = NonNull::new(unsafe { alloc::alloc(bufs_layout) }) else {
            // SAFETY: `ring` was allocated just above with `ring_layout` and is not used again.
            unsafe { alloc::dealloc(ring.as_ptr().cast(), ring_layout) };
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        };
        let mut br = BufRing {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            buf_size,
            tail: 0,
            out: 0,
            order: VecDeque::with_capacity(n),
            busy: vec![false; n],
            spare: n,
            window: n.min(MIN_WINDOW),
            fill16: 0,
            per_recv16: 16,
            last_posted: entries - 1,
            #[cfg(test)]
            highest: 0,
        };
        br.replenish();
        Ok(br)
    }

    /// Registers the ring as buffer group [`BGID`] of `submitter`'s ring.
    ///
    /// # Safety
    /// `self` must outlive the registration: the caller unregisters it (or destroys the
    /// io_uring) before dropping `self`.
    pub unsafe fn register(&self, submitter: &Submitter<'_>) -> io::Result<()> {
        // SAFETY: the ring memory is page aligned, holds `entries` descriptors and, per this
        // function's contract, stays allocated until the group is unregistered.
        unsafe {
            submitter.register_buf_ring_with_flags(self.ring.as_ptr() as u64, self.entries, BGID, 0)
        }
    }

    /// The bytes the kernel wrote into a run of buffers: `run.len` bytes from the start of
    /// buffer `run.first`.
    ///
    /// # Safety
    /// `run` came from [`BufRing::take_filled`] for a completion the caller reaped, and its
    /// buffers have not been recycled since (the kernel does not write into them meanwhile).
    pub unsafe fn data(&self, run: Run) -> &[u8] {
        let start = usize::from(run.first) * self.buf_size;
        let total = usize::from(self.entries) * self.buf_size;
        debug_assert!(run.first < self.entries && start + run.len <= total);
        let len = run.len.min(total.saturating_sub(start));
        // SAFETY: the bytes lie inside the `bufs` allocation (`start + len <= total`, the
        // run's buffers are adjacent); the kernel finished writing them before it posted the
        // completion, which the caller reaped with acquire ordering; they are not in the ring,
        // so nothing writes to them while the returned borrow of `self` lives.
        unsafe { std::slice::from_raw_parts(self.bufs.as_ptr().add(start), len) }
    }

    /// Takes buffer `bid` back from the backend, free to be posted again.
    pub fn recycle(&mut self, bid: u16) {
        let bid = usize::from(bid % self.entries);
        debug_assert!(self.busy[bid], "buffer {bid} recycled twice");
        if std::mem::replace(&mut self.busy[bid], false) {
            self.out -= 1;
            self.spare += 1;
        }
    }

    /// Takes every buffer of `run` back.
    pub fn recycle_run(&mut self, run: Run) {
        for k in 0..run.count {
            self.recycle(run.first.wrapping_add(k));
        }
    }

    /// The next buffer to post: the first free one from `from` up to the window's end, then
    /// from the window's start, then (when the backend holds buffers of the window in a
    /// callback) beyond the window.
    fn next_free(&self, from: usize) -> Option<u16> {
        let window = self.window.min(self.total());
        let from = if from < window { from } else { 0 };
        (from..window)
            .chain(0..from)
            .chain(window..self.total())
            .find(|&b| !self.busy[b])
            .map(|b| b as u16)
    }

    /// Tops the ring up to the window with free buffers and publishes them to the kernel.
    ///
    /// Buffers are posted in ascending id order within `0 .. window`, after the last one
    /// posted while the ring still holds buffers, from 0 once it has drained (see the module
    /// documentation): a bundle fills consecutive ring entries, and when those are adjacent
    /// in memory the handler gets its bytes as one slice (two slices cost two callbacks and,
    /// for a reply of each, two sends).
    pub fn replenish(&mut self) {
        let want = self.window.saturating_sub(self.order.len()).min(self.spare);
        if want == 0 {
            return;
        }
        let mask = self.entries - 1;
        let mut from = if self.order.is_empty() {
            0
        } else {
            usize::from(self.last_posted) + 1
        };
        for _ in 0..want {
            let Some(bid) = self.next_free(from) else {
                break;
            };
            from = usize::from(bid) + 1;
            self.busy[usize::from(bid)] = true;
            self.spare -= 1;
            self.last_posted = bid;
            let slot = usize::from(self.tail & mask);
            // SAFETY: `slot < entries`, inside the ring allocation. The kernel only reads
            // descriptors between its head and our published tail; the ring holds fewer than
            // `entries` buffers, so this slot is beyond the tail (the kernel consumed it, or it
            // was never filled) and nothing reads it concurrently. The setters write only
            // addr/len/bid, never the `resv` field that doubles as the tail in slot 0.
            unsafe {
                let entry = &mut *self.ring.as_ptr().add(slot);
                entry.set_addr(self.bufs.as_ptr().add(usize::from(bid) * self.buf_size) as u64);
                entry.set_len(self.buf_size as u32);
                entry.set_bid(bid);
            }
            self.tail = self.tail.wrapping_add(1);
            self.order.push_back(bid);
            #[cfg(test)]
            {
                self.highest = self.highest.max(bid);
            }
        }
        // SAFETY: `BufRingEntry::tail` needs the address of the ring's first entry, which
        // `self.ring` is; the tail is a naturally aligned u16 inside the allocation. The
        // kernel reads it concurrently, hence the atomic access.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        // Release: the descriptors written above become visible before the new tail.
        tail.store(self.tail, Ordering::Release);
    }

    /// Resizes the window to the traffic seen: as many buffers as hold [`CYCLE_BYTES`] at
    /// the recent fill, at least [`MIN_WINDOW`], at most all of them. Called once per poll.
    pub fn adapt(&mut self) {
        if self.fill16 == 0 {
            // Nothing received yet.
            return;
        }
        let fill = (self.fill16 / 16).max(1);
        self.window = (CYCLE_BYTES / fill).max(MIN_WINDOW).min(self.total());
    }

    /// Free buffers the kernel will find in the ring after the next [`BufRing::replenish`].
    pub fn available(&self) -> usize {
        self.free().min(self.window)
    }

    /// How many buffers a receive takes, on recent average (at least one).
    pub fn buffers_per_recv(&self) -> usize {
        self.per_recv16.div_ceil(16).max(1)
    }

    /// How many buffers the ring is kept at.
    #[cfg(test)]
    pub fn window(&self) -> usize {
        self.window
    }

    /// Takes out of the ring the buffers a receive completion filled, in the order the kernel
    /// filled them, and appends them to `runs` as runs of buffers adjacent in memory.
    ///
    /// `first` is the buffer the completion names, `len` its byte count. A plain receive fills
    /// one buffer; a bundle fills `ceil(len / buf_size)` consecutive ring entries, every one
    /// full but the last. A completion naming a buffer that is not in the ring (a kernel or
    /// bookkeeping bug) is logged and yields nothing, so no buffer is ever put back twice.
    pub fn take_filled(&mut self, first: u16, len: usize, bundle: bool, runs: &mut Vec<Run>) {
        let at = if self.order.front() == Some(&first) {
            0
        } else if let Some(at) = self.order.iter().position(|&b| b == first) {
            log::error!(
                "io_uring: receive completion named buffer {first}, {at} entries past the \
                 ring's head; taking it from there"
            );
            at
        } else {
            log::error!("io_uring: receive completion named buffer {first}, not in the ring");
            return;
        };
        let count = if bundle && len > self.buf_size {
            len.div_ceil(self.buf_size)
        } else {
            1
        };
        let count = count.min(self.order.len() - at);
        let mut left = len;
        let start = runs.len();
        for bid in self.order.drain(at..at + count) {
            let n = left.min(self.buf_size);
            left -= n;
            let ours = runs.len() > start;
            match runs.last_mut() {
                Some(r) if ours && r.first.wrapping_add(r.count) == bid => {
                    r.count += 1;
                    r.len += n;
                }
                _ => runs.push(Run {
                    first: bid,
                    count: 1,
                    len: n,
                }),
            }
        }
        self.out += count;
        // Moving averages over the last few receives, in sixteenths.
        let fill = len.min(count * self.buf_size) / count.max(1);
        self.fill16 = if self.fill16 == 0 {
            fill * 16
        } else {
            (self.fill16 * 7 + fill * 16) / 8
        };
        self.per_recv16 = (self.per_recv16 * 7 + count * 16) / 8;
    }

    /// Buffers in all.
    pub fn total(&self) -> usize {
        usize::from(self.entries)
    }

    /// Buffers in the ring or in flight to us inside completions not yet reaped, that is, not
    /// held by the backend.
    pub fn free(&self) -> usize {
        self.total() - self.out
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both blocks were allocated in `new` with these layouts and are freed once.
        // The owner (`Uring`) drops this only after the buffer group was unregistered and the
        // io_uring destroyed with nothing in flight, or leaks it instead.
        unsafe {
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            alloc::dealloc(self.bufs.as_ptr(), self.bufs_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{BufRing, Run, CYCLE_BYTES, MIN_WINDOW};

    fn run(first: u16, count: u16, len: usize) -> Run {
        Run { first, count, len }
    }

    fn give_back(br: &mut BufRing, runs: &mut Vec<Run>) {
        for r in runs.drain(..) {
            br.recycle_run(r);
        }
        br.replenish();
    }

    /// `n` receives of `len` bytes, each taken from the ring's head, given back and followed
    /// by the end-of-poll resize, as the backend does; returns the buffers they used.
    fn feed(br: &mut BufRing, n: usize, len: usize, bundle: bool) -> BTreeSet<u16> {
        let mut runs = Vec::new();
        let mut used = BTreeSet::new();
        for _ in 0..n {
            let first = *br.order.front().unwrap();
            br.take_filled(first, len, bundle, &mut runs);
            used.extend(runs.iter().flat_map(|r| r.first..r.first + r.count));
            give_back(br, &mut runs);
            br.adapt();
        }
        used
    }

    #[test]
    fn bundles_come_out_as_adjacent_runs() {
        let mut br = BufRing::new(8, 16).unwrap();
        assert_eq!(br.order, [0, 1, 2, 3, 4, 5, 6, 7]);
        let mut runs = Vec::new();
        // A bundle of 40 bytes fills buffers 0, 1 and 2 (16 + 16 + 8).
        br.take_filled(0, 40, true, &mut runs);
        assert_eq!(runs, [run(0, 3, 40)]);
        assert_eq!(br.free(), 5);
        // They come back as a run and are posted again in ascending order.
        give_back(&mut br, &mut runs);
        assert_eq!(br.free(), 8);
        assert_eq!(br.order, [3, 4, 5, 6, 7, 0, 1, 2]);
        // Six full buffers from 3: five adjacent, then 0 (not adjacent to 7).
        br.take_filled(3, 96, true, &mut runs);
        assert_eq!(runs, [run(3, 5, 80), run(0, 1, 16)]);
        // A plain receive takes one buffer whatever the length says.
        br.take_filled(1, 16, false, &mut runs);
        assert_eq!(runs[2], run(1, 1, 16));
        assert_eq!(br.free(), 1);
        give_back(&mut br, &mut runs);
        assert_eq!(br.free(), 8);
    }

    #[test]
    fn buffers_returned_out_of_order_are_posted_adjacent() {
        let mut br = BufRing::new(8, 16).unwrap();
        let mut runs = Vec::new();
        // Two bundles, handed back newest first (as a stack would pop them).
        br.take_filled(0, 32, true, &mut runs);
        br.take_filled(2, 32, true, &mut runs);
        assert_eq!(runs, [run(0, 2, 32), run(2, 2, 32)]);
        br.recycle_run(runs[1]);
        br.recycle_run(runs[0]);
        runs.clear();
        br.replenish();
        assert_eq!(br.order, [4, 5, 6, 7, 0, 1, 2, 3]);
        // A bundle over the whole ring: 4..8, then 0..4 past the wrap, two runs.
        br.take_filled(4, 128, true, &mut runs);
        assert_eq!(runs, [run(4, 4, 64), run(0, 4, 64)]);
        // The ring has drained: posted again from buffer 0, so the wrap is at the ring's end.
        br.recycle_run(runs[0]);
        br.recycle_run(runs[1]);
        runs.clear();
        br.replenish();
        assert_eq!(br.order, [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn the_most_recently_returned_buffers_are_posted_next() {
        // Large fills: the window is the minimum, most buffers stay spare.
        let mut br = BufRing::new(64, 64 * 1024).unwrap();
        assert_eq!(br.order.len(), MIN_WINDOW);
        let used = feed(&mut br, 200, 64 * 1024, true);
        assert_eq!(br.window(), MIN_WINDOW);
        // 200 receives went round the same few buffers; the rest were never posted.
        assert_eq!(used.len(), MIN_WINDOW, "buffers used: {used:?}");
        assert_eq!(br.free(), 64);
    }

    #[test]
    fn the_window_follows_the_fill() {
        let mut br = BufRing::new(256, 64 * 1024).unwrap();
        // Small messages touch a few bytes per buffer: the whole ring is posted.
        feed(&mut br, 64, 100, false);
        assert_eq!(br.window(), 256);
        assert_eq!(br.order.len(), 256);
        // 16 KiB in each buffer: 512 KiB worth.
        feed(&mut br, 64, 16 * 1024, false);
        assert_eq!(br.window(), CYCLE_BYTES / (16 * 1024));
        // Bundles filling their buffers: the minimum. A shrunken window posts nothing more
        // until the ring drains below it.
        feed(&mut br, 64, 4 * 64 * 1024, true);
        assert_eq!(br.window(), MIN_WINDOW);
        assert_eq!(br.buffers_per_recv(), 4);
        assert!(br.order.len() <= 32);
        assert_eq!(br.available(), MIN_WINDOW);
        assert_eq!(br.free(), 256);
    }

    #[test]
    fn the_cycled_buffers_stay_adjacent_as_the_window_changes() {
        let mut br = BufRing::new(64, 64 * 1024).unwrap();
        // The window grows (small fills) and shrinks (full buffers) a few times.
        for _ in 0..3 {
            feed(&mut br, 40, 1000, false);
            feed(&mut br, 40, 3 * 64 * 1024, true);
        }
        // Then bundles of one to three buffers, two receives per poll, so that the ring
        // rarely drains: the kernel goes on into what was posted after the last buffer.
        let mut runs = Vec::new();
        let (mut receives, mut splits) = (0, 0);
        let mut used = BTreeSet::new();
        for i in 0..300usize {
            for k in 0..2 {
                let Some(&first) = br.order.front() else {
                    break;
                };
                let before = runs.len();
                br.take_filled(first, (1 + (i + k) % 3) * 64 * 1024 - 100, true, &mut runs);
                receives += 1;
                splits += runs.len() - before - 1;
            }
            used.extend(runs.iter().flat_map(|r| r.first..r.first + r.count));
            give_back(&mut br, &mut runs);
            br.adapt();
        }
        assert_eq!(br.window(), MIN_WINDOW);
        // Only the window's first buffers are cycled, so a bundle splits only at the wrap
        // from the last of them back to buffer 0.
        let window: BTreeSet<u16> = (0..MIN_WINDOW as u16).collect();
        assert!(
            used.is_subset(&window),
            "buffers used: {used:?}; splits {splits} in {receives} receives"
        );
        assert!(
            splits * 4 < receives,
            "{splits} splits in {receives} receives"
        );
    }

    #[test]
    fn a_completion_naming_an_absent_buffer_takes_nothing() {
        let mut br = BufRing::new(4, 16).unwrap();
        let mut runs = Vec::new();
        br.take_filled(0, 16, false, &mut runs);
        // Buffer 0 is out; a second completion naming it must not hand it out twice.
        br.take_filled(0, 16, false, &mut runs);
        assert_eq!(runs, [run(0, 1, 16)]);
        assert_eq!(br.free(), 3);
        // A completion naming a buffer past the head takes from there (and logs).
        br.take_filled(2, 16, false, &mut runs);
        assert_eq!(runs[1], run(2, 1, 16));
        assert_eq!(br.free(), 2);
    }

    #[test]
    fn a_bundle_is_capped_by_the_buffers_in_the_ring() {
        let mut br = BufRing::new(4, 16).unwrap();
        let mut runs = Vec::new();
        br.take_filled(0, 1000, true, &mut runs);
        assert_eq!(runs, [run(0, 4, 64)]);
        assert_eq!(br.free(), 0);
    }
}
