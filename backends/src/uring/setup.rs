//! Opening the backend: building the ring (setup-flag ladder), probing the opcodes the backend
//! uses, registering the buffer ring, and mapping set-up failures to [`OpenError`].

use std::io;

use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::sync::Arc;

use io_uring::{opcode, IoUring, Probe};

use super::bufring::{BufRing, DGRAM_BUFFERS};
use super::memlock::{Closing, Ladder, Memlock};
use super::state::Table;
use super::waker::EventFdWaker;
use super::Uring;
use crate::contract::{Capabilities, Config, OpenError};
use crate::listeners::Listeners;
use crate::poller::Poller;

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

/// Checks that the ring has what the backend relies on (the opcodes it submits for streams and
/// the features of its submit path) and finds what it can do besides (see
/// [`capabilities`]).
pub(super) fn probe(ring: &IoUring) -> Result<Capabilities, OpenError> {
    let params = ring.params();
    if !params.is_feature_ext_arg() {
        return Err(OpenError::Unavailable(
            "io_uring lacks IORING_FEAT_EXT_ARG (Linux 5.11+); the backend needs 6.0+".into(),
        ));
    }
    if !params.is_feature_fast_poll() {
        return Err(OpenError::Unavailable(
            "io_uring lacks IORING_FEAT_FAST_POLL (Linux 5.7+); the backend needs 6.0+".into(),
        ));
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| map_error("io_uring_register(IORING_REGISTER_PROBE)", e))?;
    let needed = [
        (opcode::RecvMulti::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
    ];
    for (code, name) in needed {
        if !supported(&probe, code) {
            return Err(OpenError::Unavailable(format!(
                "io_uring opcode IORING_OP_{name} is not supported by this kernel"
            )));
        }
    }
    // Multishot receive (6.0) cannot be probed as an opcode (it is a flag of RECV). SEND_ZC
    // arrived in the same release, so its absence means a kernel too old for multishot
    // receive, where every RECV would fail with EINVAL at run time.
    if !supported(&probe, opcode::SendZc::CODE) {
        return Err(OpenError::Unavailable(
            "this kernel predates Linux 6.0 (no IORING_OP_SEND_ZC, hence no multishot receive)"
                .into(),
        ));
    }
    Ok(capabilities(&probe))
}

/// What the backend can do besides streams, from the opcodes the kernel has. A missing one
/// costs that feature only; the backend still opens and serves streams.
///
/// * Datagrams: a multishot `RECVMSG` and `SENDMSG`. Multishot `RECVMSG` is a flag of the
///   opcode, which cannot be probed; it arrived in 6.0 with multishot `RECV`, which the
///   backend already requires (see [`probe`]), so the opcode is what is left to check.
/// * Connect: `CONNECT` (5.5).
fn capabilities(probe: &Probe) -> Capabilities {
    let missing = |code: u8, name: &str, what: &str| {
        if supported(probe, code) {
            Ok(())
        } else {
            Err(format!(
                "io_uring opcode IORING_OP_{name} is not supported by this kernel; no {what} \
                 on the io_uring backend"
            ))
        }
    };
    let mut caps = Capabilities::all();
    caps.datagrams = missing(opcode::RecvMsgMulti::CODE, "RECVMSG", "datagram sockets").and(
        missing(opcode::SendMsg::CODE, "SENDMSG", "datagram sockets"),
    );
    caps.connect = missing(opcode::Connect::CODE, "CONNECT", "outbound connections");
    caps
}

#[cfg(test)]
thread_local! {
    /// Opcodes the probe of backends opened on this thread pretends the kernel lacks.
    static HIDDEN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Makes the backends opened on this thread (a test's) see a kernel without `opcodes`.
#[cfg(test)]
pub(super) fn hide_opcodes(opcodes: &[u8]) {
    HIDDEN.with(|h| *h.borrow_mut() = opcodes.to_vec());
}

fn supported(probe: &Probe, code: u8) -> bool {
    #[cfg(test)]
    if HIDDEN.with(|h| h.borrow().contains(&code)) {
        return false;
    }
    probe.is_supported(code)
}

impl Uring {
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

/// The first kernel release whose receive bundles this backend uses. Bundles arrived in 6.10,
/// but fixes to their ordering and buffer accounting landed through 2025; older kernels keep
/// the plain multishot receive, which is only slower, never wrong.
const BUNDLES_FROM: (u32, u32) = (6, 16);

/// Whether receives should be bundles: asked for by the configuration, announced by the ring
/// (`IORING_FEAT_RECVSEND_BUNDLE`) and on a kernel from [`BUNDLES_FROM`] on.
pub(super) fn use_bundles(config: &Config, ring: &IoUring) -> bool {
    if !config.recv_bundles {
        return false;
    }
    if !ring.params().is_feature_recvsend_bundle() {
        log::debug!("io_uring: no IORING_FEAT_RECVSEND_BUNDLE; plain multishot receives");
        return false;
    }
    match std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(release) => match parse_release(&release) {
            Some(v) if v >= BUNDLES_FROM => true,
            _ => {
                log::debug!(
                    "io_uring: kernel {} predates {}.{}; plain multishot receives",
                    release.trim(),
                    BUNDLES_FROM.0,
                    BUNDLES_FROM.1
                );
                false
            }
        },
        Err(e) => {
            log::debug!("io_uring: kernel release unknown ({e}); plain multishot receives");
            false
        }
    }
}

/// `(major, minor)` of a kernel release string such as `6.18.44-fc-v657`.
pub(super) fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod release_tests {
    use super::parse_release;

    #[test]
    fn kernel_release_strings() {
        assert_eq!(parse_release("6.18.44-fc-v657\n"), Some((6, 18)));
        assert_eq!(parse_release("6.9.0"), Some((6, 9)));
        assert_eq!(parse_release("5.15.0-105-generic"), Some((5, 15)));
        assert!(parse_release("6.16.0") >= Some((6, 16)));
        assert!(parse_release("6.9.12") < Some((6, 16)));
        assert_eq!(parse_release("garbage"), None);
        assert_eq!(parse_release(""), None);
    }
}
