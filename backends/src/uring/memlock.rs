//! `RLIMIT_MEMLOCK`, which io_uring's memory is charged to: the step-down to a ring that fits
//! ([`Ladder`]), and what to tell an operator whose limit is too small.
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
//!
//! **The step-down.** On `ENOMEM` under a limit an open halves the submission queue (the
//! completion queue follows at four times it) down to [`MIN_ENTRIES`], and, when it is the
//! buffer ring's registration that fails, the ring buffers down to [`MIN_BUFFERS`]. At 64 KiB
//! one ring gets 256 entries, two 128 each (the engine's probe opens one per loop, and
//! makes them one size), eight do not fit. A smaller ring that fits is remembered
//! for the process ([`Fit`], per limit and configuration): later opens (the loops after the
//! engine's probe, an engine started again) begin there, and `ENOMEM` at a size that fitted
//! before, up to [`SETTLE`] after a ring was closed, is waited out: it is most likely the
//! memory of that ring, not back yet.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::contract::{Config, OpenError};

/// The smallest submission queue the step-down goes to: 64 entries, 256 completions; 4 pages
/// with 256 ring buffers. A ring this small still serves (the backend submits whenever the
/// queue is full, and the kernel keeps completions that overflow): echoing 512 B at 1,000
/// connections, pipeline 16, it took 0.49-0.52 µs of server CPU per message against
/// 0.46-0.50 for 1024 entries (saturation runs on a busy 2-core VM). Smaller rings save a
/// page or two at most; below this the limit is better raised.
pub(super) const MIN_ENTRIES: u32 = 64;
/// The fewest ring buffers the step-down goes to: one page of descriptors (the default).
pub(super) const MIN_BUFFERS: u16 = 256;
/// How long after a ring was closed `ENOMEM` at a size that fitted before is waited out: the
/// kernel returns a closed ring's memory about 20 ms later (measured, also with both cores
/// busy).
const SETTLE: Duration = Duration::from_millis(250);
/// The pause between attempts while waiting.
const RETRY: Duration = Duration::from_millis(2);

/// The ring's sizes the step-down changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sizes {
    /// Submission queue entries.
    pub entries: u32,
    /// Provided-buffer ring entries.
    pub buffers: u16,
}

impl Sizes {
    fn min(self, other: Sizes) -> Sizes {
        Sizes {
            entries: self.entries.min(other.entries),
            buffers: self.buffers.min(other.buffers),
        }
    }

    /// Whether a ring of `self` is no larger than one of `other`.
    fn within(self, other: Sizes) -> bool {
        self.entries <= other.entries && self.buffers <= other.buffers
    }
}

/// Sizes from `asked` down to `now`, naming only what changed as a range:
/// `1024 down to 256 submission entries (256 ring buffers)`.
fn span(asked: Sizes, now: Sizes) -> String {
    let entries = match (asked.entries, now.entries) {
        (a, n) if a == n => format!("{a} submission entries"),
        (a, n) => format!("{a} down to {n} submission entries"),
    };
    match (asked.buffers, now.buffers) {
        (a, n) if a == n => format!("{entries} ({a} ring buffers)"),
        (a, n) => format!("{entries} and {a} down to {n} ring buffers"),
    }
}

/// A smaller ring than configured that fitted under a limit, in this process.
struct Fit {
    limit: Memlock,
    asked: Sizes,
    fit: Sizes,
}

/// The smallest ring that fitted since the limit or the configuration last changed.
static FIT: Mutex<Option<Fit>> = Mutex::new(None);

/// When this process last closed a ring.
static LAST_CLOSE: Mutex<Option<Instant>> = Mutex::new(None);

/// Held by every open ring, dropped after it: notes the close, whose memory the kernel
/// returns to the limit only some 20 ms later, for the opens that follow.
pub(super) struct Closing;

impl Drop for Closing {
    fn drop(&mut self) {
        *LAST_CLOSE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
}

/// The sizes one open tries, from the configured ones (or the smaller ones that fitted
/// before) down.
pub(super) struct Ladder {
    limit: Memlock,
    asked: Sizes,
    now: Sizes,
    /// A ring this size or smaller fitted in this process under this limit.
    known: Option<Sizes>,
    /// When this open closed a ring it could not complete.
    released: Option<Instant>,
}

impl Ladder {
    /// The ladder for `config`, starting where a smaller ring fitted before, if one did.
    pub fn new(config: &Config) -> Ladder {
        let asked = Sizes {
            entries: config.ring_entries.clamp(1, 32768),
            buffers: config.ring_buffers,
        };
        let limit = Memlock::read();
        let known = FIT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|f| f.limit == limit && f.asked == asked)
            .map(|f| f.fit);
        if let Some(k) = known {
            log::debug!(
                "io_uring: starting at {} entries and {} ring buffers, which fitted {limit} before",
                k.entries,
                k.buffers
            );
        }
        Ladder {
            limit,
            asked,
            now: known.unwrap_or(asked),
            known,
            released: None,
        }
    }

    /// The sizes to try now.
    pub fn sizes(&self) -> Sizes {
        self.now
    }

    /// `io_uring_setup` returned `ENOMEM`. `Ok`: try again at [`Ladder::sizes`] (the same
    /// after a pause, or a smaller ring).
    pub fn ring_enomem(&mut self) -> Result<(), OpenError> {
        if self.wait() {
            return Ok(());
        }
        self.smaller_ring("io_uring_setup")
    }

    /// Registering the buffer ring returned `ENOMEM`. `Ok(true)`: register again with
    /// [`Ladder::sizes`]; `Ok(false)`: even the fewest buffers do not fit beside this ring,
    /// the caller closes it and builds a smaller one.
    pub fn buffers_enomem(&mut self) -> Result<bool, OpenError> {
        if self.wait() {
            return Ok(true);
        }
        let floor = self.asked.buffers.min(MIN_BUFFERS);
        if self.now.buffers > floor {
            let fewer = (self.now.buffers / 2).max(floor);
            log::debug!(
                "io_uring: registering {} ring buffers returned ENOMEM ({}); trying {fewer}",
                self.now.buffers,
                self.limit
            );
            self.now.buffers = fewer;
            return Ok(true);
        }
        self.smaller_ring("io_uring_register(IORING_REGISTER_PBUF_RING)")?;
        self.released = Some(Instant::now());
        Ok(false)
    }

    /// The ring opened at [`Ladder::sizes`]. When that is smaller than configured: remembers
    /// it for the next opens and says why, for the engine to tell the operator.
    pub fn fitted(&self) -> Option<String> {
        if self.now == self.asked {
            return None;
        }
        let mut fit = FIT.lock().unwrap_or_else(|p| p.into_inner());
        let smallest = match &*fit {
            Some(f) if f.limit == self.limit && f.asked == self.asked => f.fit.min(self.now),
            _ => self.now,
        };
        *fit = Some(Fit {
            limit: self.limit,
            asked: self.asked,
            fit: smallest,
        });
        let note = format!(
            "from {}: {} holds no more; {}",
            span(self.asked, self.now),
            self.limit,
            self.limit.fixes()
        );
        log::debug!("io_uring: {note}");
        Some(note)
    }

    /// Whether to wait and try the same sizes again: a ring was closed less than [`SETTLE`]
    /// ago, and these sizes (or larger ones) fitted before or a ring this open just closed was
    /// larger, so the memory is probably on its way back.
    fn wait(&self) -> bool {
        if !self.limit.limited() {
            return false;
        }
        let fitted_before = self.known.is_some_and(|k| self.now.within(k));
        if !fitted_before && self.released.is_none() {
            return false;
        }
        let closed = *LAST_CLOSE.lock().unwrap_or_else(|p| p.into_inner());
        match closed.max(self.released) {
            Some(at) if at.elapsed() < SETTLE => {
                std::thread::sleep(RETRY);
                true
            }
            _ => false,
        }
    }

    /// Halves the submission queue, or fails when it is at the floor already.
    fn smaller_ring(&mut self, call: &str) -> Result<(), OpenError> {
        let floor = self.asked.entries.min(MIN_ENTRIES);
        if !self.limit.limited() || self.now.entries <= floor {
            return Err(self.exhausted(call));
        }
        let smaller = (self.now.entries / 2).max(floor);
        log::debug!(
            "io_uring: {call} with {} submission entries and {} ring buffers returned ENOMEM \
             ({}); trying {smaller} entries",
            self.now.entries,
            self.now.buffers,
            self.limit
        );
        self.now.entries = smaller;
        Ok(())
    }

    /// The error once nothing smaller is left to try.
    fn exhausted(&self, call: &str) -> OpenError {
        if !self.limit.limited() {
            return super::setup::map_error(call, std::io::Error::from_raw_os_error(libc::ENOMEM));
        }
        let tried = if self.now == self.asked {
            "a ring of"
        } else {
            "every ring from"
        };
        OpenError::ResourceLimit(format!(
            "{call} returned ENOMEM for {tried} {}: {} is too small; {}",
            span(self.asked, self.now),
            self.limit,
            self.limit.fixes()
        ))
    }
}

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

    /// What the operator can do about the limit: the ways to raise it or to be exempt.
    pub fn fixes(self) -> &'static str {
        "io_uring's rings are charged to it, summed over all of this user's processes; raise \
         it (ulimit -l, up to the hard limit; memlock in /etc/security/limits.conf; \
         LimitMEMLOCK= in a systemd unit; docker run --ulimit memlock=BYTES) or run with \
         CAP_IPC_LOCK, which is charged nothing"
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
    use super::{span, Bytes, Memlock, Sizes};

    #[test]
    fn spans_name_what_changed() {
        let s = |entries, buffers| Sizes { entries, buffers };
        assert_eq!(
            span(s(1024, 256), s(128, 256)),
            "1024 down to 128 submission entries (256 ring buffers)"
        );
        assert_eq!(
            span(s(1024, 4096), s(256, 1024)),
            "1024 down to 256 submission entries and 4096 down to 1024 ring buffers"
        );
        assert_eq!(
            span(s(16, 256), s(16, 256)),
            "16 submission entries (256 ring buffers)"
        );
    }

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
        assert!(m.fixes().contains("CAP_IPC_LOCK"));
    }
}
