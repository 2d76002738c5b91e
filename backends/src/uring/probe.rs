//! What the kernel offers, found once at open: the opcodes the backend submits (a kernel
//! without those streams need is [`OpenError::Unavailable`]), what it can do besides streams
//! ([`Capabilities`]: a missing opcode costs that feature only), and whether receives are
//! bundles.

use io_uring::{opcode, IoUring, Probe};

use super::setup::map_error;
use crate::contract::{Capabilities, Config, OpenError};

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

/// Opcodes every backend opened in this process pretends the kernel lacks (a child process of
/// a test: `testing::pretend_io_uring_lacks`).
static HIDDEN_IN_PROCESS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// Makes every io_uring backend opened in this process from now on see a kernel without the
/// opcodes named (`"RECVMSG"`, `"SENDMSG"`, `"CONNECT"`); unknown names are ignored.
pub(crate) fn hide_in_process(names: &[&str]) {
    let codes = names
        .iter()
        .filter_map(|n| match *n {
            "RECVMSG" => Some(opcode::RecvMsgMulti::CODE),
            "SENDMSG" => Some(opcode::SendMsg::CODE),
            "CONNECT" => Some(opcode::Connect::CODE),
            _ => None,
        })
        .collect();
    *HIDDEN_IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner()) = codes;
}

fn supported(probe: &Probe, code: u8) -> bool {
    #[cfg(test)]
    if HIDDEN.with(|h| h.borrow().contains(&code)) {
        return false;
    }
    let hidden = HIDDEN_IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
    if hidden.contains(&code) {
        return false;
    }
    probe.is_supported(code)
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
