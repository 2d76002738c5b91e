//! The provided-buffer ring: one per loop, shared by every connection's multishot receive.
//!
//! Two pieces of memory: the ring of `entries` descriptors (page aligned, as the kernel
//! requires) and the **area** the descriptors point into. Each descriptor ("entry") is a
//! slice of the area; a plain receive completion fills one entry, a bundle as many
//! consecutive entries as its bytes span; the completion names the first (by its buffer id).
//! The backend lends the bytes to the sink and takes the entries back when the callback ends.
//! The kernel reads the tail with acquire ordering, so the descriptor writes are published
//! with a release store of the tail.
//!
//! **A byte ring.** Entries are carved from the area one after the other, as from a circular
//! byte buffer: each starts where the previous one ended, and the carving goes round when it
//! reaches the end, as far as the oldest bytes still in use (in the ring, or lent to the
//! sink) allow. The kernel consumes entries strictly in ring order, so a bundle always fills
//! entries adjacent in memory, and its bytes reach the sink as one slice. The area is mapped
//! twice, back to back (one `memfd`, two mappings), so that an entry or a bundle that runs
//! past the end of the area continues, contiguously, in the second mapping: no bundle is ever
//! split, not even at the wrap. (Where the second mapping cannot be made, entries stop short
//! of the end and a bundle across it arrives as two slices.)
//!
//! **Sized for the cache.** The area is small, [`AREA_BYTES`] by default (never more than
//! the configured `ring_buffers × read_buffer_size`), so the bytes a receive writes are still
//! cached when the reply copies them out. The size of the entries follows the traffic
//! ([`BufRing::adapt`], once per poll): about one receive's worth, between the area divided by
//! the ring's entries and `read_buffer_size`. Small messages get many small entries (a
//! thousand connections with a few bytes each are served in one pass), large ones a few
//! large entries, and the connections they leave without one wait on `ENOBUFS`, which costs
//! a re-arm. Earlier versions gave every entry a whole `read_buffer_size` buffer and posted
//! only a window of them: small messages then spread over hundreds of buffers, and a bundle
//! that crossed the window's wrap came out as two slices (two callbacks and, for an echo, two
//! sends: 23% of all bundles at 1,000 connections, 16 KiB pipeline 16).
//!
//! The ring's order (`posted`: the entries from the kernel's head to our tail) says which
//! entries a bundle filled; the descriptors cannot, because by the time a completion is
//! handled its slots may already hold entries posted since.

use std::alloc::{self, Layout};
use std::collections::VecDeque;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

use super::area::Area;

/// The buffer group id of the loop's ring (one group per ring).
pub(super) const BGID: u16 = 0;

const PAGE: usize = 4096;

/// The size of the area: a quarter of a typical 2 MiB L2, so that received bytes are still
/// cached when the reply copies them out. (Measured with whole buffers at 16 KiB messages,
/// capped server: 256 KiB and 1 MiB do no better.)
const AREA_BYTES: usize = 512 * 1024;
/// The area holds at least this many entries of `read_buffer_size` (when the configuration
/// allows as much).
const MIN_WINDOW: usize = 8;
/// The smallest entry.
const MIN_CHUNK: usize = 512;
/// Entries start on cache lines.
const ALIGN: usize = 64;

/// One descriptor in the ring.
#[derive(Clone, Copy, Debug)]
struct Entry {
    bid: u16,
    /// Byte position in the area, counted from the start without wrapping.
    pos: u64,
    len: u32,
}

/// Bytes lent out in a completion, not yet recycled.
#[derive(Debug)]
struct Held {
    pos: u64,
    count: u16,
    done: bool,
}

pub(super) struct BufRing {
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    area: Area,
    entries: u16,
    /// The largest entry (`read_buffer_size`).
    max_chunk: usize,
    /// The smallest entry: the area divided by the ring's entries (at least [`MIN_CHUNK`]).
    min_chunk: usize,
    /// Our copy of the tail: the next ring slot to fill.
    tail: u16,
    /// Where the next entry is carved (a byte position counted without wrapping).
    pos: u64,
    /// The entries in the ring, from the kernel's head to our tail.
    posted: VecDeque<Entry>,
    /// Runs lent out in completions, oldest first.
    held: VecDeque<Held>,
    /// Entries in `held` not recycled yet.
    out: usize,
    /// The size of the entries posted next.
    chunk: usize,
    /// How many entries [`BufRing::replenish`] keeps in the ring.
    window: usize,
    /// Bytes per receive, a moving average in sixteenths (a plain receive that filled its
    /// entry counts as one of `max_chunk`: the socket probably held more).
    fill16: usize,
    /// Entries a receive takes, a moving average in sixteenths.
    per_recv16: usize,
    /// Completions whose bytes came out as more than one run.
    #[cfg(test)]
    pub splits: usize,
}

/// `len` bytes of one receive completion, adjacent in memory from byte position `pos`,
/// spread over `count` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub pos: u64,
    pub count: u16,
    pub len: usize,
}

impl BufRing {
    /// Allocates the ring and its area and posts the first entries.
    ///
    /// `entries` must be a power of two in `1..=32768`, `buf_size` (the largest entry) in
    /// `1..=u32::MAX`. The area is the smaller of [`AREA_BYTES`] (or [`MIN_WINDOW`] entries
    /// of `buf_size`, if larger) and `entries * buf_size`, rounded up to pages.
    pub fn new(entries: u16, buf_size: usize) -> io::Result<BufRing> {
        BufRing::build(entries, buf_size, true)
    }

    fn build(entries: u16, buf_size: usize, mirror: bool) -> io::Result<BufRing> {
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
        let configured = n.checked_mul(buf_size).ok_or_else(too_big)?;
        let wanted = AREA_BYTES.max(buf_size.saturating_mul(MIN_WINDOW));
        let size = configured
            .min(wanted)
            .checked_next_multiple_of(PAGE)
            .ok_or_else(too_big)?;
        let area = Area::new(size, mirror)?;
        // SAFETY: `ring_layout` has a non-zero size (at least one page).
        let ring = NonNull::new(unsafe { alloc::alloc_zeroed(ring_layout) }.cast::<BufRingEntry>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let max_chunk = buf_size.min(size);
        let min_chunk = (size / n).max(MIN_CHUNK).min(max_chunk);
        let mut br = BufRing {
            ring,
            ring_layout,
            area,
            entries,
            max_chunk,
            min_chunk,
            tail: 0,
            pos: 0,
            posted: VecDeque::with_capacity(n),
            held: VecDeque::new(),
            out: 0,
            chunk: max_chunk,
            window: (size / max_chunk).clamp(1, n),
            fill16: 0,
            per_recv16: 16,
            #[cfg(test)]
            splits: 0,
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

    /// Where byte position `pos` lies in the area.
    fn offset(&self, pos: u64) -> usize {
        (pos % self.area.size as u64) as usize
    }

    /// The bytes the kernel wrote for a run: `run.len` bytes from its position.
    ///
    /// # Safety
    /// `run` came from [`BufRing::take_filled`] for a completion the caller reaped, and has
    /// not been recycled since (the kernel does not write into it meanwhile).
    pub unsafe fn data(&self, run: Run) -> &[u8] {
        let start = self.offset(run.pos);
        debug_assert!(start + run.len <= self.area.mapped());
        let len = run.len.min(self.area.mapped() - start);
        // SAFETY: the bytes lie inside the mapping (`start + len <= mapped`; a run that goes
        // past the end of the area only exists when the area is mirrored); the kernel finished
        // writing them before it posted the completion, which the caller reaped with acquire
        // ordering; they are not in the ring, so nothing writes to them while the returned
        // borrow of `self` lives.
        unsafe { std::slice::from_raw_parts(self.area.base.as_ptr().add(start), len) }
    }

    /// Takes the entries of `run` back from the backend.
    pub fn recycle_run(&mut self, run: Run) {
        match self.held.iter_mut().find(|h| h.pos == run.pos && !h.done) {
            Some(h) => {
                h.done = true;
                self.out -= usize::from(h.count);
            }
            None => log::error!("io_uring: buffer run at {} recycled twice", run.pos),
        }
        while self.held.front().is_some_and(|h| h.done) {
            self.held.pop_front();
        }
    }

    /// The oldest byte position still in use: lent out, or in the ring.
    fn oldest(&self) -> u64 {
        let held = self.held.front().map_or(self.pos, |h| h.pos);
        let posted = self.posted.front().map_or(self.pos, |e| e.pos);
        held.min(posted)
    }

    /// Where the next entry of `chunk` bytes would go, if the area has room for it.
    fn next_slot(&self, chunk: u64) -> Option<u64> {
        let size = self.area.size as u64;
        let mut at = self.pos;
        if !self.area.mirrored && at % size + chunk > size {
            // Without the second mapping an entry must not run past the end.
            at = at.next_multiple_of(size);
        }
        (at + chunk - self.oldest() <= size).then_some(at)
    }

    /// Tops the ring up to the window with entries carved after the last one, and publishes
    /// them to the kernel.
    pub fn replenish(&mut self) {
        let mask = self.entries - 1;
        let want = self.window.min(usize::from(self.entries));
        let before = self.tail;
        while self.posted.len() < want {
            let chunk = self.chunk as u64;
            let Some(at) = self.next_slot(chunk) else {
                break;
            };
            let slot = self.tail & mask;
            // SAFETY: `slot < entries`, inside the ring allocation. The kernel only reads
            // descriptors between its head and our published tail; the ring holds fewer than
            // `entries` descriptors (`posted` counts every one the kernel may not have consumed
            // yet), so this slot is beyond the tail and nothing reads it concurrently. The
            // setters write only addr/len/bid, never the `resv` field that doubles as the tail
            // in slot 0. The address and length stay inside the mapping: `offset < size` and
            // `chunk <= size`, with the area mapped twice, or `offset + chunk <= size`.
            unsafe {
                let entry = &mut *self.ring.as_ptr().add(usize::from(slot));
                entry.set_addr(self.area.base.as_ptr().add(self.offset(at)) as u64);
                entry.set_len(self.chunk as u32);
                entry.set_bid(slot);
            }
            self.tail = self.tail.wrapping_add(1);
            self.posted.push_back(Entry {
                bid: slot,
                pos: at,
                len: self.chunk as u32,
            });
            self.pos = at + chunk;
        }
        if self.tail == before {
            return;
        }
        // SAFETY: `BufRingEntry::tail` needs the address of the ring's first entry, which
        // `self.ring` is; the tail is a naturally aligned u16 inside the allocation. The
        // kernel reads it concurrently, hence the atomic access.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        // Release: the descriptors written above become visible before the new tail.
        tail.store(self.tail, Ordering::Release);
    }

    /// Sizes the entries to the traffic seen: about one receive's worth, within
    /// `min_chunk ..= max_chunk`, and as many of them as the area holds. Called once per poll.
    pub fn adapt(&mut self) {
        if self.fill16 == 0 {
            // Nothing received yet.
            return;
        }
        let fill = (self.fill16 / 16).next_multiple_of(ALIGN);
        self.chunk = fill.clamp(self.min_chunk, self.max_chunk);
        self.window = (self.area.size / self.chunk).clamp(1, usize::from(self.entries));
    }

    /// Entries the kernel will find in the ring after the next [`BufRing::replenish`].
    pub fn available(&self) -> usize {
        let used = (self.pos - self.oldest()) as usize;
        let room = self.area.size.saturating_sub(used) / self.chunk;
        (self.posted.len() + room).min(self.window)
    }

    /// How many entries a receive takes, on recent average (at least one).
    pub fn buffers_per_recv(&self) -> usize {
        self.per_recv16.div_ceil(16).max(1)
    }

    /// How many entries the ring is kept at.
    #[cfg(test)]
    pub fn window(&self) -> usize {
        self.window
    }

    /// Whether the area is mapped twice (bundles never split).
    #[cfg(test)]
    pub fn mirrored(&self) -> bool {
        self.area.mirrored
    }

    /// Takes out of the ring the entries a receive completion filled and appends its bytes to
    /// `runs`: one run, or two where a bundle crosses the end of an area mapped once.
    ///
    /// `first` is the buffer id the completion names, `len` its byte count. A plain receive
    /// fills one entry; a bundle as many consecutive entries as `len` spans, every one full
    /// but the last. A completion naming an entry that is not in the ring (a kernel or
    /// bookkeeping bug) is logged and yields nothing, so nothing is ever lent twice.
    pub fn take_filled(&mut self, first: u16, len: usize, bundle: bool, runs: &mut Vec<Run>) {
        let at = if self.posted.front().is_some_and(|e| e.bid == first) {
            0
        } else if let Some(at) = self.posted.iter().position(|e| e.bid == first) {
            log::error!(
                "io_uring: receive completion named buffer {first}, {at} entries past the \
                 ring's head; taking it from there"
            );
            at
        } else {
            log::error!("io_uring: receive completion named buffer {first}, not in the ring");
            return;
        };
        let mut count = 1;
        let mut cap = self.posted[at].len as usize;
        if bundle {
            while cap < len && at + count < self.posted.len() {
                cap += self.posted[at + count].len as usize;
                count += 1;
            }
        }
        let size = self.area.size as u64;
        let mut left = len;
        let start = runs.len();
        let mut end = 0;
        for e in self.posted.drain(at..at + count) {
            let n = left.min(e.len as usize);
            left -= n;
            let adjacent =
                runs.len() > start && end == e.pos && (self.area.mirrored || e.pos % size != 0);
            match runs.last_mut() {
                Some(r) if adjacent => {
                    r.count += 1;
                    r.len += n;
                }
                _ => runs.push(Run {
                    pos: e.pos,
                    count: 1,
                    len: n,
                }),
            }
            end = e.pos + u64::from(e.len);
        }
        for r in &runs[start..] {
            self.held.push_back(Held {
                pos: r.pos,
                count: r.count,
                done: false,
            });
        }
        self.out += count;
        #[cfg(test)]
        {
            self.splits += (runs.len() - start).saturating_sub(1);
        }
        // Moving averages over the last few receives, in sixteenths. A plain receive that
        // filled its entry was probably limited by it: ask for the largest entries (the ring
        // still holds a window of entries carved before, so a smaller step would take many
        // windows to reach the size the traffic needs).
        let demand = if !bundle && len >= cap {
            self.max_chunk
        } else {
            len
        };
        self.fill16 = if self.fill16 == 0 {
            demand * 16
        } else {
            (self.fill16 * 7 + demand * 16) / 8
        };
        self.per_recv16 = (self.per_recv16 * 7 + count * 16) / 8;
    }

    /// Entries in all (the ring's capacity).
    pub fn total(&self) -> usize {
        usize::from(self.entries)
    }

    /// `total` less the entries lent out in completions and not recycled yet.
    pub fn free(&self) -> usize {
        self.total() - self.out
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the ring was allocated in `build` with this layout and is freed once. The
        // owner (`Uring`) drops this only after the buffer group was unregistered and the
        // io_uring destroyed with nothing in flight, or leaks it instead; the area is unmapped
        // by its own drop right after.
        unsafe { alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout) };
    }
}

#[cfg(test)]
mod tests;
