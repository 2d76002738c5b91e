//! The provided-buffer ring: one per loop, shared by every connection's multishot receive.
//!
//! Two allocations: the ring of `entries` descriptors (page aligned, as the kernel requires)
//! and one contiguous block of `entries * buf_size` bytes for the buffers themselves. All
//! buffers start in the ring. The kernel takes one per receive completion; the completion
//! names it (`IORING_CQE_F_BUFFER` plus the buffer id), the backend lends its bytes to the sink
//! and puts it straight back at the tail. The kernel reads the tail with acquire ordering, so
//! the descriptor writes are published with a release store of the tail.

use std::alloc::{self, Layout};
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

    /// The bytes the kernel wrote into buffer `bid`: `len` bytes at its start.
    ///
    /// # Safety
    /// A completion reaped by the caller named `bid` as its buffer and reported `len` bytes,
    /// and `bid` has not been recycled since (the kernel does not write into it meanwhile).
    pub unsafe fn data(&self, bid: u16, len: usize) -> &[u8] {
        debug_assert!(bid < self.entries && len <= self.buf_size);
        let len = len.min(self.buf_size);
        let bid = usize::from(bid % self.entries);
        // SAFETY: the buffer lies inside the `bufs` allocation (`bid < entries`,
        // `len <= buf_size`); the kernel finished writing it before it posted the completion,
        // which the caller reaped with acquire ordering; it is not in the ring, so nothing
        // writes to it while the returned borrow of `self` lives.
        unsafe { std::slice::from_raw_parts(self.bufs.as_ptr().add(bid * self.buf_size), len) }
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
    }

    /// Notes that a completion handed buffer `bid` to us (it is out of the ring now).
    pub fn taken(&mut self) {
        self.out += 1;
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
