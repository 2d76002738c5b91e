//! The provided-buffer ring: one per loop, shared by every connection's multishot receive.
//!
//! Two allocations: the ring of `entries` descriptors (page aligned, as the kernel requires)
//! and one contiguous block of `entries * buf_size` bytes for the buffers themselves. All
//! buffers start in the ring, in id order. A plain receive completion takes one buffer, a
//! bundle as many consecutive ring entries as its bytes span; the completion names the first
//! (`IORING_CQE_F_BUFFER` plus the buffer id). The backend lends the bytes to the sink and puts
//! the buffers straight back at the tail. The kernel reads the tail with acquire ordering, so
//! the descriptor writes are published with a release store of the tail.
//!
//! The kernel consumes entries strictly in ring order, so a copy of that order (`order`: the
//! buffer ids from the kernel's head to our tail) says which buffers a bundle filled; the
//! descriptors cannot, because by the time a completion is handled its slots may already hold
//! buffers recycled since. Buffers go back in the order they were taken, so the ring keeps
//! cycling through ids `0, 1, .., entries - 1` and a bundle's buffers are, but at the wrap,
//! adjacent in memory: [`BufRing::take_filled`] hands them out as contiguous runs.

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
    /// Allocates the ring and its buffers and puts every buffer in the ring.
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
            out: entries as usize,
            order: VecDeque::with_capacity(n),
        };
        for bid in 0..entries {
            br.recycle(bid);
        }
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

    /// Puts buffer `bid` back at the tail of the ring, where the kernel can pick it again.
    pub fn recycle(&mut self, bid: u16) {
        let bid = bid % self.entries;
        let mask = self.entries - 1;
        let slot = usize::from(self.tail & mask);
        // SAFETY: `slot < entries`, inside the ring allocation. The kernel only reads
        // descriptors between its head and our published tail; this slot is beyond the tail
        // (the kernel consumed it, or it was never filled), so nothing reads it concurrently.
        // The setters write only addr/len/bid, never the `resv` field that doubles as the
        // tail in slot 0.
        unsafe {
            let entry = &mut *self.ring.as_ptr().add(slot);
            entry.set_addr(self.bufs.as_ptr().add(usize::from(bid) * self.buf_size) as u64);
            entry.set_len(self.buf_size as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: `BufRingEntry::tail` needs the address of the ring's first entry, which
        // `self.ring` is; the tail is a naturally aligned u16 inside the allocation. The
        // kernel reads it concurrently, hence the atomic access.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        // Release: the descriptor written above becomes visible before the new tail.
        tail.store(self.tail, Ordering::Release);
        self.out -= 1;
        self.order.push_back(bid);
    }

    /// Puts every buffer of `run` back, in order.
    pub fn recycle_run(&mut self, run: Run) {
        for k in 0..run.count {
            self.recycle(run.first.wrapping_add(k));
        }
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
    use super::{BufRing, Run};

    fn run(first: u16, count: u16, len: usize) -> Run {
        Run { first, count, len }
    }

    #[test]
    fn bundles_come_out_as_adjacent_runs_split_at_the_wrap() {
        let mut br = BufRing::new(8, 16).unwrap();
        let mut runs = Vec::new();
        // A bundle of 40 bytes fills buffers 0, 1 and 2 (16 + 16 + 8).
        br.take_filled(0, 40, true, &mut runs);
        assert_eq!(runs, [run(0, 3, 40)]);
        assert_eq!(br.free(), 5);
        for r in runs.drain(..) {
            br.recycle_run(r);
        }
        assert_eq!(br.free(), 8);
        // The ring now reads 3..=7, 0, 1, 2: six full buffers from 3 wrap after 7.
        br.take_filled(3, 96, true, &mut runs);
        assert_eq!(runs, [run(3, 5, 80), run(0, 1, 16)]);
        // A plain receive takes one buffer whatever the length says.
        br.take_filled(1, 16, false, &mut runs);
        assert_eq!(runs[2], run(1, 1, 16));
        assert_eq!(br.free(), 1);
        for r in runs.drain(..) {
            br.recycle_run(r);
        }
        assert_eq!(br.free(), 8);
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
