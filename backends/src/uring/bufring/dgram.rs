//! The datagram buffer group: whole buffers, one per datagram, for the datagram sockets'
//! multishot `RECVMSG`.
//!
//! A group of its own because the stream ring's entries follow the stream traffic (a byte
//! ring's slices of about one receive's worth, 2 KiB for small messages): a datagram landing in
//! one would be cut at the entry's end. Here every buffer holds a whole `read_buffer_size`
//! datagram behind the header the kernel writes first:
//!
//! ```text
//! | io_uring_recvmsg_out (16) | name (sockaddr_storage, 128) | payload (read_buffer_size) |
//! ```
//!
//! (`read_buffer_size` up to 64 KiB: no UDP datagram is larger.)
//!
//! Registered lazily, when the first datagram socket is added, so a server without datagram
//! sockets has no group, no memory and no memlock charge for it. [`DGRAM_BUFFERS`] buffers: a
//! buffer comes back as soon as the callback that borrowed it returns, so the buffers only
//! need to cover what one pass of the loop receives; a burst beyond them waits in the socket's
//! receive buffer (the multishot ends with `ENOBUFS` and is re-armed after the pass). The
//! memory is address space until used: a small datagram touches one page of its buffer.
//!
//! Every buffer is either in the ring or lent out for one callback, so the ring never holds
//! more descriptors than it has entries, and a returned buffer is posted again at once.

use std::io;

use super::super::area::Area;
use super::{Descriptors, PAGE};
use io_uring::Submitter;

/// The buffer group id of the datagram buffers.
pub(in crate::uring) const DGRAM_BGID: u16 = 1;

/// Buffers in the datagram group (a power of two).
pub(in crate::uring) const DGRAM_BUFFERS: u16 = 64;

/// `struct io_uring_recvmsg_out`: four `u32` (name, control and payload lengths, flags).
const OUT_HEADER: usize = 16;

/// The name area of each buffer: room for any socket address.
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_storage>();

/// One buffer of the group, lent out for one completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::uring) struct Slot {
    pub bid: u16,
    /// Bytes the kernel wrote: header, name area and (at most the buffer's) payload.
    pub len: usize,
}

pub(in crate::uring) struct DgramRing {
    desc: Descriptors,
    area: Area,
    /// Bytes per buffer: header, name area, payload.
    buf_size: usize,
    /// Per buffer: in the ring (not lent out).
    posted: Vec<bool>,
    /// Buffers lent out and not yet recycled.
    out: usize,
    /// The layout the kernel follows when it fills a buffer (name length, no control data),
    /// read by the kernel from each multishot `RECVMSG` and by [`io_uring::types::RecvMsgOut`]
    /// to find the parts. Boxed: its address is handed to the kernel and must not move.
    msg: Box<libc::msghdr>,
}

impl DgramRing {
    /// `entries` buffers (a power of two) for datagrams of up to `payload` bytes, all posted.
    pub fn new(entries: u16, payload: usize) -> io::Result<DgramRing> {
        let buf_size = OUT_HEADER + NAME_LEN + payload;
        let desc = Descriptors::new(entries, buf_size)?;
        let size = usize::from(entries)
            .checked_mul(buf_size)
            .and_then(|b| b.checked_next_multiple_of(PAGE))
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "datagram buffers too large")
            })?;
        // SAFETY: `msghdr` is a plain C struct for which all-zero bytes is a valid value (null
        // pointers, zero lengths).
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msg.msg_namelen = NAME_LEN as libc::socklen_t;
        let mut ring = DgramRing {
            desc,
            area: Area::new(size, false)?,
            buf_size,
            posted: vec![false; usize::from(entries)],
            out: 0,
            msg,
        };
        for bid in 0..entries {
            ring.post(bid);
        }
        ring.desc.publish();
        Ok(ring)
    }

    /// Registers the group as [`DGRAM_BGID`] of `submitter`'s ring.
    ///
    /// # Safety
    /// `self` must outlive the registration: the caller unregisters it (or destroys the
    /// io_uring) before dropping `self`.
    pub unsafe fn register(&self, submitter: &Submitter<'_>) -> io::Result<()> {
        // SAFETY: forwarded contract; the descriptors live as long as `self`.
        unsafe { self.desc.register(submitter, DGRAM_BGID) }
    }

    /// The `msghdr` every datagram socket's `RECVMSG` is given.
    pub fn msghdr(&self) -> &libc::msghdr {
        &self.msg
    }

    /// Puts buffer `bid` (not in the ring) at the ring's tail; published by the caller.
    fn post(&mut self, bid: u16) {
        let i = usize::from(bid);
        debug_assert!(!self.posted[i]);
        // SAFETY: `bid < entries`, so the buffer lies inside the area; it is in neither the
        // ring nor a caller's hands (`posted` is false and it was recycled or never posted),
        // and every other buffer is either posted or lent out, so fewer than `entries`
        // descriptors are in the ring. The area lives as long as `self`, which outlives the
        // registration.
        unsafe {
            let addr = self.area.base.as_ptr().add(i * self.buf_size);
            self.desc.push(addr, self.buf_size as u32, bid);
        }
        self.posted[i] = true;
    }

    /// Takes buffer `bid`, named by a completion that wrote `len` bytes into it, out of the
    /// ring. `None` (logged) for a buffer that is not in the ring: nothing is lent twice.
    pub fn take(&mut self, bid: u16, len: usize) -> Option<Slot> {
        match self.posted.get_mut(usize::from(bid)) {
            Some(posted) if *posted => {
                *posted = false;
                self.out += 1;
                Some(Slot {
                    bid,
                    len: len.min(self.buf_size),
                })
            }
            _ => {
                log::error!("io_uring: datagram completion named buffer {bid}, not in the ring");
                None
            }
        }
    }

    /// The bytes the kernel wrote into a slot.
    ///
    /// # Safety
    /// `slot` came from [`DgramRing::take`] for a completion the caller reaped, and has not
    /// been recycled since (the kernel does not write into it meanwhile).
    pub unsafe fn data(&self, slot: Slot) -> &[u8] {
        let start = usize::from(slot.bid) * self.buf_size;
        // SAFETY: the buffer lies inside the area and `len <= buf_size`; the kernel finished
        // writing it before it posted the completion, which the caller reaped with acquire
        // ordering; it is out of the ring until recycled, so nothing writes to it while the
        // returned borrow of `self` lives.
        unsafe { std::slice::from_raw_parts(self.area.base.as_ptr().add(start), slot.len) }
    }

    /// Gives a slot's buffer back to the kernel.
    pub fn recycle(&mut self, slot: Slot) {
        if self.posted[usize::from(slot.bid)] {
            log::error!("io_uring: datagram buffer {} recycled twice", slot.bid);
            return;
        }
        self.out -= 1;
        self.post(slot.bid);
        self.desc.publish();
    }

    /// Buffers in all.
    pub fn total(&self) -> usize {
        self.posted.len()
    }

    /// Buffers not lent out.
    pub fn free(&self) -> usize {
        self.total() - self.out
    }
}

#[cfg(test)]
mod tests {
    use super::DgramRing;

    #[test]
    fn uring_datagram_buffers_are_lent_once_and_come_back() {
        let mut r = DgramRing::new(4, 1000).unwrap();
        assert_eq!((r.total(), r.free()), (4, 4));
        let a = r.take(2, 5000).unwrap();
        assert_eq!(a.len, 16 + 128 + 1000, "clamped to the buffer");
        assert!(r.take(2, 10).is_none(), "not in the ring any more");
        assert_eq!(r.free(), 3);
        r.recycle(a);
        r.recycle(a);
        assert_eq!(r.free(), 4);
        assert!(r.take(2, 10).is_some());
    }
}
