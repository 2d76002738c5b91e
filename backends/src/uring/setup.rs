//! Opening the backend: building the ring (setup-flag ladder), registering the buffer ring,
//! mapping set-up failures to [`OpenError`]; and what the open found (flags, sizes).

use std::collections::VecDeque;
use std::io;
use std::mem::ManuallyDrop;
use std::sync::Arc;

use io_uring::IoUring;

use super::bufring::{BufRing, DGRAM_BUFFERS};
use super::memlock::{Closing, Ladder, Memlock};
use super::probe::{probe, use_bundles};
use super::state::Table;
use super::waker::EventFdWaker;
use super::Uring;
use crate::contract::{Config, OpenError};
use crate::listeners::Listeners;
use crate::selector::epoll::Poller;

/// The setup-flag tiers tried in order; the kernel answers `EINVAL` to flags it does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tier {
    /// `SUBMIT_ALL | SINGLE_ISSUER | DEFER_TASKRUN` (6.1+).
    DeferTaskrun,
    /// `SUBMIT_ALL | COOP_TASKRUN | TASKRUN_FLAG` (5.19+).
    CoopTaskrun,
    /// No optional flags.
    Plain,
}

impl Tier {
    pub fn describe(self) -> &'static str {
        match self {
            Tier::DeferTaskrun => "SUBMIT_ALL|SINGLE_ISSUER|DEFER_TASKRUN",
            Tier::CoopTaskrun => "SUBMIT_ALL|COOP_TASKRUN|TASKRUN_FLAG",
            Tier::Plain => "no optional setup flags",
        }
    }
}

/// The symbolic name of the errno values set-up can return.
pub(super) fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => "ENOSYS".into(),
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::ENOMEM) => "ENOMEM".into(),
        Some(libc::EMFILE) => "EMFILE".into(),
        Some(libc::ENFILE) => "ENFILE".into(),
        Some(libc::EFAULT) => "EFAULT".into(),
        Some(libc::EEXIST) => "EEXIST".into(),
        Some(n) => format!("errno {n}"),
        None => e.to_string(),
    }
}

/// Maps a failed `io_uring_setup`/`io_uring_register` call (named by `call`) to an
/// [`OpenError`]: missing or forbidden means `Unavailable`, `ENOMEM` under a memlock limit
/// `ResourceLimit` (with the advice), anything else an operator must fix `Failed`.
pub(super) fn map_error(call: &str, e: io::Error) -> OpenError {
    let name = errno_name(&e);
    match e.raw_os_error() {
        Some(libc::ENOSYS) => OpenError::Unavailable(format!(
            "{call} returned {name}: this kernel or sandbox has no io_uring \
             (kernel older than 5.1, CONFIG_IO_URING=n, gVisor, ...)"
        )),
        Some(libc::EPERM) | Some(libc::EACCES) => OpenError::Unavailable(format!(
            "{call} returned {name}: io_uring is disabled by seccomp or sysctl \
             (container seccomp profile, or kernel.io_uring_disabled / io_uring_group)"
        )),
        Some(libc::EINVAL) => OpenError::Unavailable(format!(
            "{call} returned {name}: the kernel does not support what the io_uring backend \
             needs (Linux 6.0 or newer)"
        )),
        Some(libc::ENOMEM) => {
            let limit = Memlock::read();
            if limit.limited() {
                OpenError::ResourceLimit(format!(
                    "{call} returned {name}: {limit} is too small; {}",
                    limit.fixes()
                ))
            } else {
                OpenError::Failed(io::Error::new(
                    e.kind(),
                    format!(
                        "{call} returned {name} with no memlock limit: the kernel is short of \
                         memory; free some, or use smaller ring_entries / ring_buffers"
                    ),
                ))
            }
        }
        _ => OpenError::Failed(io::Error::new(e.kind(), format!("{call} failed: {e}"))),
    }
}

/// Builds the ring with the best setup flags the kernel accepts, at the ladder's size: on
/// `ENOMEM` under a memlock limit, a smaller one (see [`Ladder`]).
pub(super) fn build(ladder: &mut Ladder) -> Result<(IoUring, Tier), OpenError> {
    let tiers = [Tier::DeferTaskrun, Tier::CoopTaskrun, Tier::Plain];
    let mut t = 0;
    loop {
        let tier = tiers[t];
        let entries = ladder.sizes().entries;
        match build_with(tier, entries) {
            Ok(ring) => return Ok((ring, tier)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                log::debug!("io_uring_setup with {} returned EINVAL", tier.describe());
                t += 1;
                if t == tiers.len() {
                    return Err(map_error("io_uring_setup", e));
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => ladder.ring_enomem()?,
            Err(e) => return Err(map_error("io_uring_setup", e)),
        }
    }
}

/// One `io_uring_setup` with `tier`'s flags and `entries` submission entries.
fn build_with(tier: Tier, entries: u32) -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    b.setup_cqsize(entries.saturating_mul(4)).setup_clamp();
    match tier {
        Tier::DeferTaskrun => {
            b.setup_submit_all()
                .setup_single_issuer()
                .setup_defer_taskrun();
        }
        Tier::CoopTaskrun => {
            b.setup_submit_all()
                .setup_coop_taskrun()
                .setup_taskrun_flag();
        }
        Tier::Plain => {}
    }
    b.build(entries)
}

/// The provided-buffer ring for `ring`, registered, with the ladder's number of buffers: on
/// `ENOMEM` under a memlock limit, fewer. `Ok(None)`: even the fewest do not fit beside this
/// ring; the caller closes it and builds a smaller one.
///
/// # Safety
/// The returned ring must outlive its registration: the caller unregisters the group (or
/// destroys `ring`) before dropping it.
pub(super) unsafe fn buffers(
    ring: &IoUring,
    config: &Config,
    bundles: bool,
    ladder: &mut Ladder,
) -> Result<Option<BufRing>, OpenError> {
    loop {
        let bufs = BufRing::new(ladder.sizes().buffers, config.read_buffer_size, bundles)
            .map_err(OpenError::Failed)?;
        // SAFETY: forwarded to the caller; a ring whose registration failed is not registered.
        match unsafe { bufs.register(&ring.submitter()) } {
            Ok(()) => return Ok(Some(bufs)),
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {
                if !ladder.buffers_enomem()? {
                    return Ok(None);
                }
            }
            Err(e) => return Err(map_error("io_uring_register(IORING_REGISTER_PBUF_RING)", e)),
        }
    }
}

impl Uring {
    /// The setup flags the kernel accepted for this ring.
    pub fn setup_flags(&self) -> &'static str {
        self.tier.describe()
    }

    /// Submission queue entries: [`Config::ring_entries`], or fewer when `RLIMIT_MEMLOCK`
    /// did not hold a ring that large (see [`Uring::reduced`]).
    pub fn ring_entries(&self) -> u32 {
        self.ring.params().sq_entries()
    }

    /// Entries of the provided-buffer ring: [`Config::ring_buffers`], or fewer when
    /// `RLIMIT_MEMLOCK` did not hold that many.
    pub fn ring_buffers(&self) -> usize {
        self.bufs.total()
    }

    /// When the ring is smaller than configured: why (the memlock limit, its value, how to
    /// raise it) and by how much. `None` for a ring of the configured sizes.
    pub fn reduced(&self) -> Option<&str> {
        self.reduced.as_deref()
    }

    /// Whether receives are bundles (one completion may fill several ring buffers).
    pub fn recv_bundles(&self) -> bool {
        self.bundles
    }

    /// Whether the loop's waits are kept out of the I/O wait figures
    /// (`IORING_ENTER_NO_IOWAIT`, Linux 6.15+).
    pub fn waits_without_iowait(&self) -> bool {
        self.enter_flags & super::ring::ENTER_NO_IOWAIT != 0
    }

    /// [`Backend::open`](crate::Backend::open): the ring at the best tier and the largest
    /// size that fits, its opcodes probed, the buffer ring registered, the waker armed.
    pub(super) fn open(config: &Config) -> Result<Uring, OpenError> {
        let waker = EventFdWaker::new().map_err(OpenError::Failed)?;
        let accept_poller = Poller::new().map_err(OpenError::Failed)?;
        let mut ladder = Ladder::new(config);
        let (ring, tier, bundles, bufs, caps) = loop {
            let (ring, tier) = build(&mut ladder)?;
            let caps = probe(&ring)?;
            let bundles = use_bundles(config, &ring);
            // SAFETY: `bufs` is stored in the `Uring` below next to the ring; its `Drop`
            // unregisters the group and destroys the ring before it frees the buffer memory.
            if let Some(bufs) = unsafe { buffers(&ring, config, bundles, &mut ladder) }? {
                break (ring, tier, bundles, bufs, caps);
            }
            // Not even the fewest buffers fit beside this ring: close it, try a smaller one.
        };
        log::debug!(
            "io_uring backend: {}, sq {} cq {}, {} buffers of {} bytes, {} receives",
            tier.describe(),
            ring.params().sq_entries(),
            ring.params().cq_entries(),
            bufs.total(),
            config.read_buffer_size,
            if bundles { "bundled" } else { "plain" }
        );
        let mut me = Uring {
            ring: ManuallyDrop::new(ring),
            bufs: ManuallyDrop::new(bufs),
            tier,
            waker: Arc::new(waker),
            wake_armed: false,
            conns: Vec::new(),
            nconns: 0,
            unreported_closes: 0,
            listeners: Listeners::default(),
            accept_poller,
            accept_armed: false,
            starved: VecDeque::new(),
            pending: VecDeque::new(),
            backlog: Vec::new(),
            scratch: Vec::new(),
            inflight: 0,
            shutting_down: false,
            nobufs: 0,
            rearms_queued: 0,
            poll_read_budget: config.poll_read_budget.max(1),
            poll_read: 0,
            bundles,
            filled: Vec::new(),
            spare_sends: Vec::new(),
            enter_flags: 0,
            reduced: None,
            caps,
            read_buffer_size: config.read_buffer_size,
            dgrams: Table::default(),
            dgram_bufs: None,
            dgram_buffers: DGRAM_BUFFERS,
            dgram_starved: VecDeque::new(),
            dgram_nobufs: 0,
            chain: Vec::new(),
            chain_ops: 0,
            chain_moved: false,
            connects: Table::default(),
            _closing: Closing,
        };
        me.arm_wake();
        me.first_enter().map_err(OpenError::Failed)?;
        me.reduced = ladder.fitted();
        Ok(me)
    }
}
