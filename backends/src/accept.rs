//! Accepting, the policy every backend follows: which `accept` errors concern one connection,
//! which mean the process is out of resources, which mean the listener is unusable, and the
//! bookkeeping of a listener that pauses.
//!
//! | verdict | errors | what the backend does |
//! |---|---|---|
//! | [`Verdict::Retry`] | `EINTR`, `ECONNABORTED`, `ECONNRESET`, `EPROTO`, `EPERM` (a firewall verdict), `ETIMEDOUT`, and the network errors Linux passes on from the new connection (`ENETDOWN`, `ENOPROTOOPT`, `EHOSTDOWN`, `ENONET`, `EHOSTUNREACH`, `EOPNOTSUPP`, `ENETUNREACH`) | skips that connection and accepts the next at once |
//! | [`Verdict::Stop`] | `EBADF`, `ENOTSOCK`, `EINVAL` (not a listening socket), `EFAULT` | reports the error and accepts nothing more on that listener |
//! | [`Verdict::Pause`] | `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, and anything else | pauses the listener: see below |
//!
//! **A pause** leaves the pending connections in the kernel's listen backlog, where they wait
//! at no cost, instead of retrying in a loop: a listener that cannot accept because the
//! descriptor table is full would otherwise fail again at once, forever (an io_uring accept
//! re-armed on `EMFILE` burned a whole core). The listener is tried again after [`BACKOFF`],
//! or as soon as a connection of the same backend closes (which frees a descriptor), so a
//! server at its descriptor limit recovers without delay and idles while it waits.
//!
//! **Reporting** is once per episode: the first resource error is handed to
//! [`Sink::accept_error`](crate::Sink::accept_error) (the loop logs it as a warning), the
//! retries that fail again are logged at debug level, and the end of the episode (an accept
//! pass that emptied the backlog) is logged once at info level with its length.

use std::io;
use std::time::{Duration, Instant};

use crate::contract::Id;

/// How long a paused listener rests before `accept` is tried again (unless a connection
/// closes first).
pub(crate) const BACKOFF: Duration = Duration::from_millis(100);

/// The most [`Verdict::Retry`] errors one accept pass skips in a row before it pauses the
/// listener anyway: an error that was wrongly taken for a one-connection error must not turn
/// into a busy loop.
pub(crate) const MAX_SKIPPED: usize = 64;

/// What an `accept` error means for the listener; see the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It concerned one connection only: accept the next at once.
    Retry,
    /// The process or the system is out of resources: pause the listener.
    Pause,
    /// The listener cannot accept at all: stop accepting on it.
    Stop,
}

/// Sorts an error of `accept` (not `WouldBlock`, which every backend handles itself).
pub(crate) fn classify(e: &io::Error) -> Verdict {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | TimedOut
    ) {
        return Verdict::Retry;
    }
    if e.kind() == InvalidInput {
        // EINVAL (WSAEINVAL): the socket is not listening.
        return Verdict::Stop;
    }
    // An error without an errno (an address family the converter does not know) concerns
    // that one connection.
    let Some(code) = e.raw_os_error() else {
        return Verdict::Retry;
    };
    classify_errno(code)
}

#[cfg(unix)]
fn classify_errno(code: i32) -> Verdict {
    match code {
        libc::EPROTO | libc::EPERM | libc::EOPNOTSUPP | libc::ENETDOWN | libc::ENETUNREACH => {
            Verdict::Retry
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        libc::ENOPROTOOPT | libc::EHOSTDOWN | libc::ENONET | libc::EHOSTUNREACH => Verdict::Retry,
        libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EFAULT => Verdict::Stop,
        _ => Verdict::Pause,
    }
}

#[cfg(not(unix))]
fn classify_errno(_code: i32) -> Verdict {
    // Winsock's codes are not sorted here: resting is the safe answer to anything unknown.
    Verdict::Pause
}

/// Whether `e` says the process or the system ran short of a resource (descriptors, memory,
/// kernel buffers, threads) rather than that something is wrong: worth trying again once
/// something was released.
pub fn is_resource_shortage(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::OutOfMemory {
        return true;
    }
    #[cfg(unix)]
    if let Some(code) = e.raw_os_error() {
        return matches!(
            code,
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
                | libc::ENOBUFS
                | libc::ENOSPC
                | libc::EAGAIN
        );
    }
    false
}

/// Whether a listener rests, and the episode of resource errors it is in.
#[derive(Debug, Default)]
pub(crate) struct Pause {
    /// Set while resting: when to try again.
    retry_at: Option<Instant>,
    episode: Option<Episode>,
}

#[derive(Debug)]
struct Episode {
    since: Instant,
    errors: u64,
}

impl Pause {
    /// Whether the listener rests (its readiness is ignored until it is due).
    #[cfg_attr(not(gnet_selector), allow(dead_code))] // used by listeners.rs
    pub(crate) fn resting(&self) -> bool {
        self.retry_at.is_some()
    }

    /// When the resting listener is to be tried again.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether the listener rests and its time has come.
    #[cfg_attr(not(gnet_selector), allow(dead_code))] // used by listeners.rs
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|at| at <= now)
    }

    /// A connection closed: a descriptor is free, try at once instead of after the back-off.
    #[cfg_attr(not(gnet_selector), allow(dead_code))] // used by listeners.rs
    pub(crate) fn hurry(&mut self, now: Instant) {
        if let Some(at) = self.retry_at.as_mut() {
            *at = (*at).min(now);
        }
    }

    /// Accepting hit a resource error: rest for [`BACKOFF`]. Returns the error to report
    /// (with what happens next) if it is the first of an episode; the others are only logged
    /// at debug level.
    pub(crate) fn rest(&mut self, id: Id, error: io::Error) -> Option<io::Error> {
        let now = Instant::now();
        self.retry_at = Some(now + BACKOFF);
        match self.episode.as_mut() {
            Some(ep) => {
                ep.errors += 1;
                log::debug!("accept on listener {id}: {error} (still paused)");
                None
            }
            None => {
                self.episode = Some(Episode {
                    since: now,
                    errors: 1,
                });
                Some(paused(error))
            }
        }
    }

    /// The listener is tried again (its rest is over, whatever the outcome).
    pub(crate) fn wake(&mut self) {
        self.retry_at = None;
    }

    /// An accept pass found nothing more pending (`WouldBlock`): an episode, if one was on,
    /// is over.
    pub(crate) fn drained(&mut self, id: Id) {
        if let Some(ep) = self.episode.take() {
            log::info!(
                "accept on listener {id}: accepting again after {:.1?} paused on resource \
                 errors ({} failed attempts)",
                ep.since.elapsed(),
                ep.errors
            );
        }
    }
}

/// The first error of an episode, with what happens next.
fn paused(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "{e}; accepting paused: retried every {} ms and whenever a connection closes, \
             pending connections wait in the listen backlog (raise the descriptor limit, \
             `ulimit -n`, if this persists)",
            BACKOFF.as_millis()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn one_list_one_policy() {
        let v = |code| classify(&io::Error::from_raw_os_error(code));
        for code in [libc::ECONNABORTED, libc::EINTR, libc::EPROTO, libc::EPERM] {
            assert_eq!(v(code), Verdict::Retry, "errno {code}");
        }
        for code in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EIO,
        ] {
            assert_eq!(v(code), Verdict::Pause, "errno {code}");
        }
        for code in [libc::EBADF, libc::ENOTSOCK, libc::EINVAL] {
            assert_eq!(v(code), Verdict::Stop, "errno {code}");
        }
        let no_errno = io::Error::new(io::ErrorKind::InvalidData, "odd address family");
        assert_eq!(classify(&no_errno), Verdict::Retry);
    }

    #[test]
    fn an_episode_is_reported_once_and_a_close_hurries_the_retry() {
        let mut p = Pause::default();
        let id = Id(0);
        let emfile = || io::Error::other("too many open files");
        let first = p.rest(id, emfile()).expect("the first error is reported");
        assert!(first.to_string().contains("accepting paused"), "{first}");
        assert!(p.resting() && !p.due(Instant::now()));
        for _ in 0..5 {
            p.wake();
            assert!(
                p.rest(id, emfile()).is_none(),
                "reported twice in one episode"
            );
        }
        p.hurry(Instant::now());
        assert!(p.due(Instant::now()));
        p.wake();
        p.drained(id);
        assert!(!p.resting());
        assert!(
            p.rest(id, emfile()).is_some(),
            "a new episode is reported again"
        );
    }
}
