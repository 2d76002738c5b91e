//! The byte ring, for bundled receives: descriptors are slices carved one after the other
//! from one small area, as from a circular byte buffer. Each starts where the previous one
//! ended, and the carving goes round when it reaches the end, as far as the oldest bytes still
//! in use (in the ring, or lent to the sink) allow. The kernel consumes descriptors strictly in
//! ring order, so a bundle always fills slices adjacent in memory, and its bytes reach the sink
//! as one slice. The area ([`Area`]) is mapped twice, back to back, so that a slice or a bundle
//! that runs past its end continues, contiguously, in the second mapping: no bundle is ever
//! split, not even at the wrap. (Where the second mapping cannot be made, slices stop short of
//! the end and a bundle across it arrives as two slices.)
//!
//! The area is [`CYCLE_BYTES`] (never more than the configured `ring_buffers ×
//! read_buffer_size`). The slices follow the traffic ([`ByteRing::adapt`], once per poll):
//! about one receive's worth, between the area divided by the ring's entries and
//! `read_buffer_size`. Small messages get many small slices (a thousand connections with a
//! few bytes each are served in a few passes), large ones a few large slices. The window of
//! whole buffers that came before split a bundle wherever its buffers were not adjacent: 23%
//! of all bundles at 1,000 connections, 16 KiB pipeline 16, each split a second callback and,
//! for an echo, a second send.
//!
//! The ring's order (`posted`: the entries from the kernel's head to our tail) says which
//! entries a bundle filled; the descriptors cannot, because by the time a completion is
//! handled their slots may already hold entries posted since.

use std::collections::VecDeque;
use std::io;

use super::super::area::Area;
use super::{locate, Descriptors, Run, CYCLE_BYTES, MIN_WINDOW, PAGE};

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

pub(in crate::uring) struct ByteRing {
    pub(super) desc: Descriptors,
    pub(super) area: Area,
    /// The largest entry (`read_buffer_size`).
    max_chunk: usize,
    /// The smallest entry: the area divided by the ring's entries (at least [`MIN_CHUNK`]).
    min_chunk: usize,
    /// Where the next entry is carved (a byte position counted without wrapping).
    pos: u64,
    /// The entries in the ring, from the kernel's head to our tail.
    posted: VecDeque<Entry>,
    /// Runs lent out in completions, oldest first.
    held: VecDeque<Held>,
    /// Entries in `held` not recycled yet.
    pub(super) out: usize,
    /// The size of the entries posted next.
    chunk: usize,
    /// How many entries [`ByteRing::replenish`] keeps in the ring.
    pub(super) window: usize,
    /// Bytes per receive, a moving average in sixteenths.
    fill16: usize,
    /// Entries a receive takes, a moving average in sixteenths.
    pub(super) per_recv16: usize,
    /// Completions whose bytes came out as more than one run.
    #[cfg(test)]
    pub splits: usize,
}

impl ByteRing {
    /// Allocates the ring and its area and posts the first entries.
    ///
    /// `entries` must be a power of two in `1..=32768`, `buf_size` (the largest entry) in
    /// `1..=u32::MAX`. The area is the smaller of [`CYCLE_BYTES`] (or [`MIN_WINDOW`] entries
    /// of `buf_size`, if larger) and `entries * buf_size`, rounded up to pages.
    pub fn new(entries: u16, buf_size: usize) -> io::Result<ByteRing> {
        ByteRing::build(entries, buf_size, true)
    }

    fn build(entries: u16, buf_size: usize, mirror: bool) -> io::Result<ByteRing> {
        let desc = Descriptors::new(entries, buf_size)?;
        let n = usize::from(entries);
        let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large");
        let configured = n.checked_mul(buf_size).ok_or_else(too_big)?;
        let wanted = CYCLE_BYTES.max(buf_size.saturating_mul(MIN_WINDOW));
        let size = configured
            .min(wanted)
            .checked_next_multiple_of(PAGE)
            .ok_or_else(too_big)?;
        let area = Area::new(size, mirror)?;
        let max_chunk = buf_size.min(size);
        let min_chunk = (size / n).max(MIN_CHUNK).min(max_chunk);
        let mut br = ByteRing {
            desc,
            area,
            max_chunk,
            min_chunk,
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

    /// Where byte position `pos` lies in the area.
    fn offset(&self, pos: u64) -> usize {
        (pos % self.area.size as u64) as usize
    }

    /// The bytes the kernel wrote for a run: `run.len` bytes from its position.
    ///
    /// # Safety
    /// `run` came from [`ByteRing::take_filled`] for a completion the caller reaped, and has
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
        let want = self.window.min(usize::from(self.desc.entries));
        while self.posted.len() < want {
            let chunk = self.chunk as u64;
            let Some(at) = self.next_slot(chunk) else {
                break;
            };
            let bid = self.desc.next_slot();
            // SAFETY: `posted` counts every descriptor the kernel may not have consumed yet and
            // stays below `entries`. The entry stays inside the mapping (`offset < size` and
            // `chunk <= size`, with the area mapped twice, or `offset + chunk <= size`), and
            // `next_slot` placed it after every byte still in the ring or lent out, within one
            // area's length of the oldest: nothing else uses it until it is handed back.
            unsafe {
                let addr = self.area.base.as_ptr().add(self.offset(at));
                self.desc.push(addr, self.chunk as u32, bid);
            }
            self.posted.push_back(Entry {
                bid,
                pos: at,
                len: self.chunk as u32,
            });
            self.pos = at + chunk;
        }
        self.desc.publish();
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
        self.window = (self.area.size / self.chunk).clamp(1, usize::from(self.desc.entries));
    }

    /// Entries the kernel will find in the ring after the next [`ByteRing::replenish`].
    pub fn available(&self) -> usize {
        let used = (self.pos - self.oldest()) as usize;
        let room = self.area.size.saturating_sub(used) / self.chunk;
        (self.posted.len() + room).min(self.window)
    }

    /// Takes out of the ring the entries a bundle filled and appends its bytes to `runs`: one
    /// run, or two where it crosses the end of an area mapped once.
    ///
    /// `first` is the buffer id the completion names, `len` its byte count: the bundle filled
    /// as many consecutive entries as `len` spans, every one full but the last. A completion
    /// naming an entry that is not in the ring (a kernel or bookkeeping bug) is logged and
    /// yields nothing, so nothing is ever lent twice.
    pub fn take_filled(&mut self, first: u16, len: usize, runs: &mut Vec<Run>) {
        let Some(at) = locate(first, self.posted.iter().map(|e| e.bid)) else {
            return;
        };
        let mut count = 1;
        let mut cap = self.posted[at].len as usize;
        while cap < len && at + count < self.posted.len() {
            cap += self.posted[at + count].len as usize;
            count += 1;
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
        // Moving averages over the last few receives, in sixteenths.
        self.fill16 = if self.fill16 == 0 {
            len * 16
        } else {
            (self.fill16 * 7 + len * 16) / 8
        };
        self.per_recv16 = (self.per_recv16 * 7 + count * 16) / 8;
    }
}

#[cfg(test)]
mod tests;
