//! Choosing the backend once at startup, and the one place that names each implementation.

use gnet_backends::{Backend, BackendKind, Config, OpenError};

use crate::error::{Error, Result};
use crate::options::{BackendChoice, Options};

/// Something to do with a backend type chosen at run time: the event loop is generic over the
/// backend, so the choice becomes one monomorphised instantiation, not a `dyn` call per event.
pub(crate) trait Visit {
    type Out;
    fn visit<B: Backend>(self) -> Self::Out;
}

/// Runs `v` with the implementation of `kind`; `None` when it is not compiled in.
pub(crate) fn dispatch<V: Visit>(kind: BackendKind, v: V) -> Option<V::Out> {
    match kind {
        #[cfg(gnet_uring)]
        BackendKind::Uring => Some(v.visit::<gnet_backends::uring::Uring>()),
        #[cfg(gnet_epoll)]
        BackendKind::Epoll => Some(v.visit::<gnet_backends::epoll::Epoll>()),
        #[cfg(gnet_kqueue)]
        BackendKind::Kqueue => Some(v.visit::<gnet_backends::kqueue::Kqueue>()),
        #[cfg(gnet_stdnet)]
        BackendKind::StdNet => Some(v.visit::<gnet_backends::stdnet::StdNet>()),
        _ => {
            let _ = v;
            None
        }
    }
}

pub(crate) fn backend_config(opts: &Options) -> Config {
    let mut cfg = Config::default();
    cfg.read_buffer_size = opts.read_buffer_size;
    cfg.ring_buffers = opts.ring_buffers;
    cfg.ring_entries = opts.ring_entries;
    cfg.recv_bundles = opts.recv_bundles;
    cfg
}

/// Opens (and drops) the backend as the loops will; `Ok` carries what the operator should be
/// told even though it works (io_uring rings reduced to fit the memlock limit).
struct Probe<'a> {
    cfg: &'a Config,
    #[cfg_attr(not(gnet_uring), allow(dead_code))]
    loops: usize,
    /// The engine serves UDP addresses: a backend without datagrams will not do.
    datagrams: bool,
}

impl Visit for Probe<'_> {
    type Out = std::result::Result<Option<String>, OpenError>;
    fn visit<B: Backend>(self) -> Self::Out {
        #[cfg(gnet_uring)]
        if B::KIND == BackendKind::Uring {
            return probe_uring(self.cfg, self.loops, self.datagrams);
        }
        let b = B::open(self.cfg)?;
        serves(&b, self.datagrams)?;
        Ok(None)
    }
}

/// Runs a probe on a thread of its own, which ends with it. An io_uring ring that is closed
/// leaves work for the thread that made it (its cancellations and teardown run as that
/// thread's task work, which interrupts the thread's next blocking call): probing on the
/// caller's thread made a client's `recv` with a timeout fail with `EINTR` after
/// `gnet::start`.
fn probe_on_own_thread(
    kind: BackendKind,
    probe: Probe<'_>,
) -> Option<std::result::Result<Option<String>, OpenError>> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("gnet-probe".into())
            .spawn_scoped(s, move || dispatch(kind, probe))
            .map(|t| {
                t.join().unwrap_or_else(|_| {
                    Some(Err(OpenError::Unavailable(
                        "the backend probe panicked".into(),
                    )))
                })
            })
            .unwrap_or_else(|e| Some(Err(OpenError::Failed(e))))
    })
}

/// Whether an opened backend can do what the engine needs of it besides streams: a missing
/// capability makes it unavailable for this engine (so `Auto` falls back, with the reason).
fn serves<B: Backend>(b: &B, datagrams: bool) -> std::result::Result<(), OpenError> {
    match b.capabilities().datagrams {
        Err(why) if datagrams => Err(OpenError::Unavailable(format!(
            "it cannot serve UDP addresses here: {why}"
        ))),
        _ => Ok(()),
    }
}

/// The io_uring probe opens a ring for every loop, all at once as the engine will, since the
/// memlock limit counts them together, and wants them all of one size. A ring opened beside
/// others may come out smaller than they did; then the probe closes them all and tries again:
/// the backend starts every ring at the smallest size that fitted (and waits for the closed
/// rings' memory to come back), until the rings fit as one size or stop getting smaller.
#[cfg(gnet_uring)]
fn probe_uring(
    cfg: &Config,
    loops: usize,
    datagrams: bool,
) -> std::result::Result<Option<String>, OpenError> {
    use gnet_backends::uring::Uring;
    /// Rounds of the probe: each one that does not settle shrinks the rings (halving from
    /// 1024 entries reaches the backend's floor in four), so this is a guard, not a limit.
    const ROUNDS: usize = 8;
    let size = |r: &Uring| (r.ring_entries(), r.ring_buffers());
    let mut smallest_before = None;
    let mut round = 0;
    loop {
        round += 1;
        let mut rings = Vec::with_capacity(loops);
        let mut failed = None;
        while rings.len() < loops && failed.is_none() {
            match Uring::open(cfg) {
                Ok(ring) => rings.push(ring),
                Err(e) => failed = Some(e),
            }
        }
        let smallest = rings.iter().map(size).min();
        let uniform = rings.iter().all(|r| Some(size(r)) == smallest);
        let shrinking = (smallest < smallest_before || smallest_before.is_none()) && round < ROUNDS;
        match failed {
            None if uniform || round == ROUNDS => {
                if let Some(r) = rings.first() {
                    serves(r, datagrams)?;
                }
                return Ok(rings.last().and_then(Uring::reduced).map(|why| {
                    if loops == 1 {
                        format!("io_uring ring reduced {why}")
                    } else {
                        format!("io_uring rings of the {loops} loops reduced {why}")
                    }
                }));
            }
            Some(OpenError::ResourceLimit(why)) if !shrinking || rings.is_empty() => {
                return Err(OpenError::ResourceLimit(if rings.is_empty() {
                    why
                } else {
                    format!(
                        "{loops} loops take a ring each, and ring {} does not fit beside the \
                         other {}: {why}; or run fewer loops (Options::loops)",
                        rings.len() + 1,
                        rings.len()
                    )
                }));
            }
            Some(e @ (OpenError::Unavailable(_) | OpenError::Failed(_))) => return Err(e),
            _ => log::debug!(
                "gnet: io_uring rings of {} sizes for {loops} loops; opening them again at \
                 the smallest, {smallest:?}",
                if uniform { "too large" } else { "different" }
            ),
        }
        smallest_before = smallest;
    }
}

/// Why `kind` is not in this build: the target lacks its mechanism, or its Cargo feature is off.
fn not_compiled(kind: BackendKind) -> String {
    // Where the mechanism exists, and whether this target is one of those places.
    let platform = match kind {
        BackendKind::Uring | BackendKind::Epoll => Some(("Linux", cfg!(target_os = "linux"))),
        BackendKind::Kqueue => Some(("macOS and the BSDs", cfg!(gnet_kqueue_os))),
        _ => None,
    };
    match platform {
        Some((only, false)) => {
            format!("not available on this target: {kind} exists on {only} only")
        }
        _ => format!("not compiled into this build (enable the `{kind}` feature)"),
    }
}

/// Says a fallback out loud: through `log` when a logger is installed, on stderr otherwise.
pub(crate) fn announce(msg: &str) {
    if log::max_level() == log::LevelFilter::Off {
        eprintln!("gnet: {msg}");
    } else {
        log::warn!("gnet: {msg}");
    }
}

/// The backend the engine will run, and why it fell back if it did.
pub(crate) fn choose(opts: &Options, datagrams: bool) -> Result<(BackendKind, Option<String>)> {
    let mut choice = opts.backend;
    if opts.honour_env {
        if let Ok(v) = std::env::var("GNET_BACKEND") {
            if !v.trim().is_empty() && !v.eq_ignore_ascii_case("auto") {
                let kind = BackendKind::parse(&v).ok_or_else(|| {
                    Error::InvalidOptions(format!(
                        "GNET_BACKEND={v:?} is not one of uring, epoll, kqueue, stdnet, auto"
                    ))
                })?;
                choice = BackendChoice::Only(kind);
            }
        }
    }
    let cfg = backend_config(opts);
    // The engine refuses more than 1024 loops; no need to open more rings than that first.
    let loops = opts.num_loops().clamp(1, 1024);
    let probe = || Probe {
        cfg: &cfg,
        loops,
        datagrams,
    };
    match choice {
        BackendChoice::Only(kind) => match probe_on_own_thread(kind, probe()) {
            None => Err(Error::BackendUnavailable {
                backend: kind,
                reason: not_compiled(kind),
            }),
            Some(Ok(note)) => {
                if let Some(note) = note {
                    announce(&note);
                }
                Ok((kind, None))
            }
            Some(Err(OpenError::Unavailable(reason) | OpenError::ResourceLimit(reason))) => {
                Err(Error::BackendUnavailable {
                    backend: kind,
                    reason,
                })
            }
            // `Failed`, and whatever later versions add: reported, never hidden.
            Some(Err(e)) => Err(Error::BackendUnavailable {
                backend: kind,
                reason: e.to_string(),
            }),
        },
        BackendChoice::Auto => {
            let mut reasons: Vec<String> = Vec::new();
            for kind in gnet_backends::compiled() {
                match probe_on_own_thread(kind, probe()) {
                    Some(Ok(note)) => {
                        let why = (!reasons.is_empty()).then(|| reasons.join("; "));
                        if let Some(why) = &why {
                            announce(&format!("{why}; using {kind}"));
                        }
                        if let Some(note) = note {
                            announce(&note);
                        }
                        return Ok((kind, why));
                    }
                    Some(Err(
                        OpenError::Unavailable(reason) | OpenError::ResourceLimit(reason),
                    )) => {
                        reasons.push(format!("{kind} unavailable: {reason}"));
                    }
                    Some(Err(e)) => {
                        return Err(Error::BackendUnavailable {
                            backend: kind,
                            reason: e.to_string(),
                        })
                    }
                    None => {}
                }
            }
            Err(Error::InvalidOptions(format!(
                "no usable backend: {}",
                reasons.join("; ")
            )))
        }
    }
}
