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
        #[cfg(all(target_os = "linux", feature = "uring"))]
        BackendKind::Uring => Some(v.visit::<gnet_backends::uring::Uring>()),
        #[cfg(all(target_os = "linux", feature = "epoll"))]
        BackendKind::Epoll => Some(v.visit::<gnet_backends::epoll::Epoll>()),
        #[cfg(feature = "stdnet")]
        BackendKind::StdNet => Some(v.visit::<gnet_backends::stdnet::StdNet>()),
        _ => {
            let _ = v;
            None
        }
    }
}

pub(crate) fn backend_config(opts: &Options) -> Config {
    Config {
        read_buffer_size: opts.read_buffer_size,
        ring_buffers: opts.ring_buffers,
        ring_entries: opts.ring_entries,
        recv_bundles: opts.recv_bundles,
        ..Config::default()
    }
}

/// Opens (and drops) the backend as a loop will; `Ok` carries what the operator should be
/// told about the instance even though it works (an io_uring ring reduced to fit the memlock
/// limit).
struct Probe<'a>(&'a Config);

impl Visit for Probe<'_> {
    type Out = std::result::Result<Option<String>, OpenError>;
    fn visit<B: Backend>(self) -> Self::Out {
        #[cfg(all(target_os = "linux", feature = "uring"))]
        if B::KIND == BackendKind::Uring {
            return probe_uring(self.0);
        }
        B::open(self.0).map(|_| None)
    }
}

/// The io_uring probe: the ring may come out smaller than configured, which is worth a
/// warning (the loops' rings start at the same size: the backend remembers what fitted).
#[cfg(all(target_os = "linux", feature = "uring"))]
fn probe_uring(cfg: &Config) -> std::result::Result<Option<String>, OpenError> {
    let ring = gnet_backends::uring::Uring::open(cfg)?;
    Ok(ring
        .reduced()
        .map(|why| format!("io_uring ring reduced {why}")))
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
pub(crate) fn choose(opts: &Options) -> Result<(BackendKind, Option<String>)> {
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
    match choice {
        BackendChoice::Only(kind) => match dispatch(kind, Probe(&cfg)) {
            None => Err(Error::BackendUnavailable {
                backend: kind,
                reason: format!(
                    "not compiled into this build for this target (enable the `{kind}` feature)"
                ),
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
            Some(Err(OpenError::Failed(e))) => Err(Error::BackendUnavailable {
                backend: kind,
                reason: e.to_string(),
            }),
        },
        BackendChoice::Auto => {
            let mut reasons: Vec<String> = Vec::new();
            for kind in gnet_backends::compiled() {
                match dispatch(kind, Probe(&cfg)) {
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
                    Some(Err(OpenError::Failed(e))) => {
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
