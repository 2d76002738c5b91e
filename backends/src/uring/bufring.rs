//! The provided-buffer ring: one per loop, shared by every connection's multishot receive.
//!
//! Two pieces of memory: the ring of `entries` descriptors (page aligned, as the kernel
//! requires; [`Descriptors`]) and the **area** the descriptors point into ([`Area`](super::area::Area)). A plain
//! receive completion fills one descriptor's buffer, a bundle as many consecutive ones as its
//! bytes span; the completion names the first (by its buffer id). The backend lends the bytes
//! to the sink and takes the buffers back when the callback ends. The kernel reads the tail
//! with acquire ordering, so the descriptor writes are published with a release store of the
//! tail.
//!
//! **Sized for the cache.** The kernel consumes descriptors strictly in ring order, so a ring
//! that cycled all its memory (256 buffers of 64 KiB by default: 16 MiB) would have received
//! bytes evicted from the core's cache by the time the reply copies them out. Both kinds of
//! ring below keep the bytes a receive writes within about [`CYCLE_BYTES`], sized from the
//! traffic once per poll, and the connections they leave without a buffer wait on `ENOBUFS`,
//! which costs a re-arm (measured: far less than the cache misses it saves).
//!
//! Which kind depends on the receives:
//! - **Bundles** (6.16+): a [`bytes::ByteRing`]. A bundle's bytes reach the handler as one
//!   slice only if its buffers are adjacent in memory, so the descriptors are slices carved
//!   one after the other from one small area mapped twice back to back: what runs past the end
//!   continues in the second mapping, and no bundle is ever split. The slices are sized to
//!   about one receive's worth, so small messages pack densely.
//! - **Plain receives**: a [`window::WindowRing`]. A receive fills one buffer and never spans
//!   two, so adjacency does not matter, but a receive can only take what its buffer holds:
//!   every buffer has the full `read_buffer_size`, and only a window of them is posted, as many
//!   as hold [`CYCLE_BYTES`] at the recent fill per buffer. (The byte ring's slices, sized to
//!   the average receive, would cap what one receive takes and halve the receives one pass can
//!   serve: 10% lower saturation at 10,000 connections, 16 KiB, in a capped run.)

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

mod bytes;
mod dgram;
mod window;

pub(super) use dgram::{DgramRing, Slot as DgramSlot, DGRAM_BGID, DGRAM_BUFFERS};

/// The buffer group id of the loop's stream ring (datagrams have a group of their own,
/// [`DGRAM_BGID`]).
pub(super) const BGID: u16 = 0;

const PAGE: usize = 4096;

/// The bytes of buffer memory received data should cycle through: a quarter of a typical
/// 2 MiB L2, so that received bytes are still cached when the reply copies them out.
/// Measured at 16 KiB messages, capped server: 256 KiB and 1 MiB do no better.
const CYCLE_BYTES: usize = 512 * 1024;
/// The fewest buffers of `read_buffer_size` a ring keeps posted (when it has as many).
const MIN_WINDOW: usize = 8;

/// `len` bytes of one receive completion, adjacent in memory from byte `pos` of the ring's
/// area (a position that may run past the area's size on a byte ring), spread over `count`
/// buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub pos: u64,
    pub count: u16,
    pub len: usize,
}

/// Where buffer `first`, named by a receive completion, stands among the buffers in the ring
/// (`ids`, from the kernel's head): at the head, normally. Anywhere else is a kernel or
/// bookkeeping bug and is logged; not in the ring at all gives `None`, so that nothing is
/// ever lent twice.
fn locate(first: u16, mut ids: impl Iterator<Item = u16>) -> Option<usize> {
    match ids.position(|b| b == first) {
        Some(0) => Some(0),
        Some(at) => {
            log::error!(
                "io_uring: receive completion named buffer {first}, {at} entries past the \
                 ring's head; taking it from there"
            );
            Some(at)
        }
        None => {
            log::error!("io_uring: receive completion named buffer {first}, not in the ring");
            None
        }
    }
}

/// The ring of buffer descriptors the kernel reads.
struct Descriptors {
    ring: NonNull<BufRingEntry>,
    layout: Layout,
    entries: u16,
    /// Our copy of the tail: the next ring slot to fill.
    tail: u16,
    /// The tail the kernel has seen.
    published: u16,
}

impl Descriptors {
    /// Checks the configuration and allocates `entries` descriptors.
    fn new(entries: u16, buf_size: usize) -> io::Result<Descriptors> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring_buffers must be a power of two up to 32768, not {entries}"),
            ));
        }
        if buf_size == 0 || u32::try_from(buf_size).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "read_buffer_size must be from 1 byte to 4 GiB - 1 (an io_uring buffer \
                     length is 32 bits), not {buf_size}"
                ),
            ));
        }
        let bytes =
            (usize::from(entries) * std::mem::size_of::<BufRingEntry>()).next_multiple_of(PAGE);
        let layout = Layout::from_size_align(bytes, PAGE)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large"))?;
        // SAFETY: `layout` has a non-zero size (at least one page).
        let ring = NonNull::new(unsafe { alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(Descriptors {
            ring,
            layout,
            entries,
            tail: 0,
            published: 0,
        })
    }

    /// The slot the next [`Descriptors::push`] writes.
    fn next_slot(&self) -> u16 {
        self.tail & (self.entries - 1)
    }

    /// Writes the next descriptor (not yet visible to the kernel: see
    /// [`Descriptors::publish`]).
    ///
    /// # Safety
    /// Fewer than `entries` descriptors are posted and not yet consumed by the kernel (so the
    /// slot lies beyond the kernel's view of the ring), and `addr .. addr + len` stays valid,
    /// writable memory, used by nothing else, until the kernel hands the buffer back in a
    /// completion or the group is unregistered.
    unsafe fn push(&mut self, addr: *mut u8, len: u32, bid: u16) {
        let slot = usize::from(self.next_slot());
        // SAFETY: `slot < entries`, inside the allocation; per the contract the kernel does not
        // read it concurrently. The setters write only addr/len/bid, never the `resv` field
        // that doubles as the tail in slot 0.
        unsafe {
            let entry = &mut *self.ring.as_ptr().add(slot);
            entry.set_addr(addr as u64);
            entry.set_len(len);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the descriptors pushed so far visible to the kernel.
    fn publish(&mut self) {
        if self.tail == self.published {
            return;
        }
        // SAFETY: `BufRingEntry::tail` needs the address of the ring's first entry, which
        // `self.ring` is; the tail is a naturally aligned u16 inside the allocation. The
        // kernel reads it concurrently, hence the atomic access.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        // Release: the descriptors written before become visible before the new tail.
        tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
    }

    /// Registers the ring as buffer group `bgid` of `submitter`'s ring.
    ///
    /// # Safety
    /// `self` must outlive the registration: the caller unregisters it (or destroys the
    /// io_uring) before dropping `self`.
    unsafe fn register(&self, submitter: &Submitter<'_>, bgid: u16) -> io::Result<()> {
        // SAFETY: the ring memory is page aligned, holds `entries` descriptors and, per this
        // function's contract, stays allocated until the group is unregistered.
        unsafe {
            submitter.register_buf_ring_with_flags(self.ring.as_ptr() as u64, self.entries, bgid, 0)
        }
    }
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout and freed once. The owner (`Uring`) drops
        // the ring only after the buffer group was unregistered and the io_uring destroyed
        // with nothing in flight, or leaks it instead.
        unsafe { alloc::dealloc(self.ring.as_ptr().cast(), self.layout) };
    }
}

/// The loop's buffer ring: a byte ring for bundled receives, a window of whole buffers for
/// plain ones (see the module documentation).
pub(super) enum BufRing {
    Bytes(bytes::ByteRing),
    Window(window::WindowRing),
}

impl BufRing {
    /// A ring of `entries` descriptors (a power of two up to 32768) whose buffers hold up to
    /// `buf_size` bytes each, for receives that are bundles or not.
    pub fn new(entries: u16, buf_size: usize, bundles: bool) -> io::Result<BufRing> {
        Ok(if bundles {
            BufRing::Bytes(bytes::ByteRing::new(entries, buf_size)?)
        } else {
            BufRing::Window(window::WindowRing::new(entries, buf_size)?)
        })
    }

    /// Registers the ring as buffer group [`BGID`] of `submitter`'s ring.
    ///
    /// # Safety
    /// `self` must outlive the registration: the caller unregisters it (or destroys the
    /// io_uring) before dropping `self`.
    pub unsafe fn register(&self, submitter: &Submitter<'_>) -> io::Result<()> {
        let desc = match self {
            BufRing::Bytes(r) => &r.desc,
            BufRing::Window(r) => &r.desc,
        };
        // SAFETY: forwarded contract; the descriptors live as long as `self`.
        unsafe { desc.register(submitter, BGID) }
    }

    /// The bytes the kernel wrote for a run.
    ///
    /// # Safety
    /// `run` came from [`BufRing::take_filled`] for a completion the caller reaped, and has
    /// not been recycled since (the kernel does not write into it meanwhile).
    pub unsafe fn data(&self, run: Run) -> &[u8] {
        // SAFETY: forwarded contract.
        unsafe {
            match self {
                BufRing::Bytes(r) => r.data(run),
                BufRing::Window(r) => r.data(run),
            }
        }
    }

    /// Takes the buffers of `run` back from the backend.
    pub fn recycle_run(&mut self, run: Run) {
        match self {
            BufRing::Bytes(r) => r.recycle_run(run),
            BufRing::Window(r) => r.recycle_run(run),
        }
    }

    /// Tops the ring up and publishes the new descriptors to the kernel.
    pub fn replenish(&mut self) {
        match self {
            BufRing::Bytes(r) => r.replenish(),
            BufRing::Window(r) => r.replenish(),
        }
    }

    /// Resizes to the traffic seen. Called once per poll.
    pub fn adapt(&mut self) {
        match self {
            BufRing::Bytes(r) => r.adapt(),
            BufRing::Window(r) => r.adapt(),
        }
    }

    /// Buffers the kernel will find in the ring after the next [`BufRing::replenish`].
    pub fn available(&self) -> usize {
        match self {
            BufRing::Bytes(r) => r.available(),
            BufRing::Window(r) => r.available(),
        }
    }

    /// How many buffers a receive takes, on recent average (at least one).
    pub fn buffers_per_recv(&self) -> usize {
        let per_recv16 = match self {
            BufRing::Bytes(r) => r.per_recv16,
            BufRing::Window(_) => 16,
        };
        per_recv16.div_ceil(16).max(1)
    }

    /// Takes out of the ring the buffers a receive completion filled and appends its bytes to
    /// `runs` (`first`: the buffer id the completion names, `len`: its byte count).
    pub fn take_filled(&mut self, first: u16, len: usize, runs: &mut Vec<Run>) {
        match self {
            BufRing::Bytes(r) => r.take_filled(first, len, runs),
            BufRing::Window(r) => r.take_filled(first, len, runs),
        }
    }

    /// Buffers in all (the ring's capacity).
    pub fn total(&self) -> usize {
        match self {
            BufRing::Bytes(r) => usize::from(r.desc.entries),
            BufRing::Window(r) => usize::from(r.desc.entries),
        }
    }

    /// `total` less the buffers lent out in completions and not recycled yet.
    pub fn free(&self) -> usize {
        self.total()
            - match self {
                BufRing::Bytes(r) => r.out,
                BufRing::Window(r) => r.out,
            }
    }

    /// How many buffers the ring is kept at.
    #[cfg(test)]
    pub fn window(&self) -> usize {
        match self {
            BufRing::Bytes(r) => r.window,
            BufRing::Window(r) => r.window,
        }
    }

    /// Whether receives can never be split: a byte ring on a mirrored area.
    #[cfg(test)]
    pub fn mirrored(&self) -> bool {
        matches!(self, BufRing::Bytes(r) if r.area.mirrored)
    }

    /// Completions whose bytes came out as more than one run.
    #[cfg(test)]
    pub fn splits(&self) -> usize {
        match self {
            BufRing::Bytes(r) => r.splits,
            BufRing::Window(_) => 0,
        }
    }
}
