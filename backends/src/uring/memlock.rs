//! `RLIMIT_MEMLOCK`, which io_uring's memory is charged to, and what to tell an operator
//! whose limit is too small.
//!
//! What is charged, measured on Linux 6.18 as a user without `CAP_IPC_LOCK` (a process with
//! it is charged nothing): the ring's memory (the completion queue, the submission index
//! array and the submission entries, each rounded up to pages) and the provided-buffer ring's
//! descriptors (16 bytes per `ring_buffers` entry), but not the buffer area they point into
//! (plain memory). 1024 submission entries with the default 256 ring buffers take 35 pages
//! (140 KiB), 512 take 18, 256 take 10, 128 take 6, 64 take 4. The charge is per user, summed
//! over all of the user's processes, and comes back asynchronously after a ring is closed
//! (about 20 ms later, measured). Kernels up to 5.11 charged the rings too; later ones
//! changed what they count more than once, so the backend goes by the kernel's answer
//! (`ENOMEM`), never by a formula.

use std::fmt;

/// This process's `RLIMIT_MEMLOCK`, in bytes (`RLIM_INFINITY`: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Memlock {
    pub soft: u64,
    pub hard: u64,
}

impl Memlock {
    /// The current limit (no limit if it cannot be read).
    pub fn read() -> Memlock {
        let mut r = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: `r` is a valid, writable rlimit that outlives the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
            log::debug!(
                "io_uring: getrlimit(RLIMIT_MEMLOCK): {}",
                std::io::Error::last_os_error()
            );
        }
        Memlock {
            soft: r.rlim_cur,
            hard: r.rlim_max,
        }
    }

    /// Whether there is a limit at all: without one, `ENOMEM` means the kernel is short of
    /// memory.
    pub fn limited(self) -> bool {
        self.soft != libc::RLIM_INFINITY
    }

    /// What the operator can do: the limit, its value, and the ways to raise it or to be
    /// exempt from it.
    pub fn advice(self) -> String {
        format!(
            "io_uring's rings are charged to the locked-memory limit, {self}, shared by all \
             of this user's processes; raise it (ulimit -l, up to the hard limit; memlock in \
             /etc/security/limits.conf; LimitMEMLOCK= in a systemd unit; docker run --ulimit \
             memlock=BYTES) or run with CAP_IPC_LOCK, which is charged nothing"
        )
    }
}

impl fmt::Display for Memlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RLIMIT_MEMLOCK {} (hard limit {})",
            Bytes(self.soft),
            Bytes(self.hard)
        )
    }
}

/// A byte count as `ulimit` users read it: `64 KiB`, `8 MiB`, `unlimited`.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        match self.0 {
            libc::RLIM_INFINITY => f.write_str("unlimited"),
            n if n >= MIB && n % MIB == 0 => write!(f, "{} MiB", n / MIB),
            n if n % KIB == 0 => write!(f, "{} KiB", n / KIB),
            n => write!(f, "{n} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Bytes, Memlock};

    #[test]
    fn limits_read_as_ulimit_shows_them() {
        assert_eq!(Bytes(64 * 1024).to_string(), "64 KiB");
        assert_eq!(Bytes(8 << 20).to_string(), "8 MiB");
        assert_eq!(Bytes(1536 * 1024).to_string(), "1536 KiB");
        assert_eq!(Bytes(1000).to_string(), "1000 bytes");
        assert_eq!(Bytes(libc::RLIM_INFINITY).to_string(), "unlimited");
        let m = Memlock {
            soft: 64 * 1024,
            hard: libc::RLIM_INFINITY,
        };
        assert_eq!(
            m.to_string(),
            "RLIMIT_MEMLOCK 64 KiB (hard limit unlimited)"
        );
        assert!(m.limited());
        assert!(m.advice().contains("CAP_IPC_LOCK"));
    }
}
