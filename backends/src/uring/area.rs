//! The memory a buffer ring's entries are carved from: one `memfd` mapped twice, back to
//! back, so that bytes running past the end of the area continue, contiguously, in the second
//! mapping (`base + size + i` is `base + i`). Where the second mapping cannot be made the area
//! is mapped once and the caller must not let an entry cross its end.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// The memory entries are carved from, mapped twice in a row where possible.
pub(super) struct Area {
    /// The first byte; the mapping lasts as long as the `Area`.
    pub base: NonNull<u8>,
    /// Bytes of memory, a multiple of the page size.
    pub size: usize,
    /// `base + size + i` is the same memory as `base + i`, for `i < size`.
    pub mirrored: bool,
}

impl Area {
    /// Maps `size` bytes (a multiple of the page size), twice in a row if `mirror` asks for
    /// it and the system allows; once otherwise.
    pub fn new(size: usize, mirror: bool) -> io::Result<Area> {
        if mirror {
            match Area::mirrored(size) {
                Ok(area) => return Ok(area),
                Err(e) => log::debug!(
                    "io_uring buffer ring: no mirrored mapping ({e}); a bundle across the end \
                     of the buffer area arrives as two slices"
                ),
            }
        }
        // SAFETY: an anonymous private mapping at an address the kernel chooses; no existing
        // memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Area {
            base: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            size,
            mirrored: false,
        })
    }

    /// Maps one `memfd` of `size` bytes twice, back to back.
    fn mirrored(size: usize) -> io::Result<Area> {
        let len = libc::off_t::try_from(size).map_err(|_| io::Error::other("area too large"))?;
        // SAFETY: a NUL-terminated name and valid flags; the result is checked below.
        let fd = unsafe { libc::memfd_create(c"gnet-bufring".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `fd` is an open memfd; ftruncate only sets its size.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // Reserve the address range first, so that the two halves are adjacent.
        // SAFETY: an anonymous inaccessible reservation at an address the kernel chooses.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * size,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        for half in 0..2 {
            // SAFETY: the target lies inside the reservation made above, which nothing else
            // uses; MAP_FIXED replaces exactly that part of it with the memfd's pages.
            let p = unsafe {
                libc::mmap(
                    base.cast::<u8>().add(half * size).cast(),
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                let e = io::Error::last_os_error();
                // SAFETY: the whole reservation is ours and nothing points into it yet.
                unsafe { libc::munmap(base, 2 * size) };
                return Err(e);
            }
        }
        // A shared mapping would otherwise be shared with a child after `fork` (private memory
        // is copied on write instead): keep children out of it. Failure leaves the default.
        // SAFETY: advice on the range mapped above; it does not change its contents.
        unsafe { libc::madvise(base, 2 * size, libc::MADV_DONTFORK) };
        Ok(Area {
            base: NonNull::new(base.cast())
                .ok_or_else(|| io::Error::other("mmap returned null"))?,
            size,
            mirrored: true,
        })
    }

    /// Bytes addressable from `base`.
    pub fn mapped(&self) -> usize {
        if self.mirrored {
            2 * self.size
        } else {
            self.size
        }
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the range is exactly what `Area::new` mapped; the owner drops the area only
        // once the kernel can no longer write into it (see `BufRing`'s drop).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped()) };
    }
}
