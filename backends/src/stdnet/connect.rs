//! Outbound connects: a thread per stream socket being connected, on the loop's socket
//! (borrowed, as a connection's threads do), which it hands back non-blocking.
//!
//! std cannot connect a socket that already exists, so the thread uses socket2 on the
//! borrowed socket, in one of two ways:
//!
//! - **Blocking** (TCP on Linux and Android): `connect_timeout`, which waits in `poll`.
//!   `close` cancels it by shutting down the socket's read side: a socket in `SYN_SENT` is
//!   disconnected and the connect fails at once (`ECONNRESET`), and a shutdown that came
//!   before the thread's connect makes the `poll` of that connect return at once (the socket
//!   reads as ended; socket2 then says `Ok`, which is never reported: the id is closing).
//!   Checked on Linux 6.18, both orders and 200 interleavings. The read side only, so that a
//!   connect that had just completed sends no FIN (as for a connection, a backend never sends
//!   one of its own).
//! - **Polled** (TCP elsewhere, and Unix-domain sockets everywhere): a non-blocking `connect`,
//!   then a look at the socket (its pending error, its peer) every tick, 1 ms backing off to
//!   10 ms as the accept thread does, parked so that `close` wakes it at once with `unpark`.
//!   Nothing is known there about what `shutdown` does to a connect in progress (Winsock
//!   refuses to shut down a socket that is not connected), and a parked thread is woken
//!   portably. A Unix-domain connect that finds the listener's backlog full (`EAGAIN` on
//!   Linux, where socket2's `connect_timeout` would poll a socket that is not connecting and
//!   fail with "no error set after POLLHUP") is tried again at each tick.
//!
//! Either way the thread gives up after [`CONNECT_TIMEOUT`] (`TimedOut`). The loop's connect
//! timeout is the one that counts (it closes the id when its timer expires); this one only
//! makes sure a connect thread ends even if nobody closes it. The thread's last message,
//! [`Msg::Connected`], comes after it dropped its handle of the socket, so `closed` (for a
//! cancelled connect) or `connected` both mean that the socket is the loop's again.
//!
//! A datagram socket needs no handshake: `connect` sets its peer at once, on the loop's
//! thread, and the result is reported by the next `poll`.

use std::io;
use std::net::{Shutdown, SocketAddr};
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{SockAddr, SockRef};

use super::borrowed::Borrowed;
use super::queue::{Msg, Shared};
use super::{StdNet, STACK_SIZE};
use crate::contract::Id;
use crate::socket::{Addr, Socket};

/// How long a connecting thread tries before it reports `TimedOut`: longer than a loop's own
/// connect timeout should be, and about as long as Linux keeps retrying a SYN by default
/// (127 s); Windows gives up after about 21 s by itself.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// First pause of a polled connect between two looks at the socket.
const TICK_MIN: Duration = Duration::from_millis(1);
/// Longest pause of a polled connect between two looks at the socket.
const TICK_MAX: Duration = Duration::from_millis(10);

/// Whether a TCP connect blocks in `connect_timeout`, cancelled by `shutdown` (see the module
/// documentation), rather than being polled.
const SHUTDOWN_ABORTS_CONNECT: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// The loop's side of a connect in progress.
pub(super) struct Connecting {
    /// The loop closed the id: `closed` is due when the connect ends, never `connected`.
    pub(super) closing: bool,
    stop: Arc<AtomicBool>,
    /// The connecting thread, to wake at `close`; none when the result was known at once.
    thread: Option<thread::Thread>,
    /// The socket, to shut down at `close`; dropped then, or with the entry.
    socket: Option<Arc<Borrowed>>,
}

/// Where a socket connects to, checked against the kind of socket.
enum Target {
    Tcp(SocketAddr),
    #[cfg(unix)]
    Unix(PathBuf),
    Udp(SocketAddr),
}

impl Connecting {
    /// Starts connecting `socket` to `to`: returns the entry, and the result when it is known
    /// at once (a datagram socket, an address that does not fit the socket, a thread that
    /// could not be started), which the caller reports at the next `poll`.
    pub(super) fn start(
        id: Id,
        socket: &Socket,
        to: &Addr,
        shared: &Arc<Shared>,
    ) -> (Connecting, Option<io::Result<()>>) {
        let mut entry = Connecting {
            closing: false,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            socket: None,
        };
        let target = match target(socket, to) {
            Ok(Target::Udp(addr)) => return (entry, Some(connect_udp(socket, addr))),
            Ok(target) => target,
            Err(e) => return (entry, Some(Err(e))),
        };
        let handle = StdNet::lend(socket);
        let stop = entry.stop.clone();
        match spawn(id, handle.clone(), target, stop, shared.clone()) {
            Ok(thread) => {
                entry.thread = Some(thread);
                entry.socket = Some(handle);
                (entry, None)
            }
            Err(e) => (entry, Some(Err(e))),
        }
    }

    /// Whether a thread is connecting (and will report [`Msg::Connected`] through the queue).
    pub(super) fn has_thread(&self) -> bool {
        self.thread.is_some()
    }

    /// Cancels the connect at `close`: the thread stops promptly and reports; `closed` is then
    /// due instead of `connected`.
    pub(super) fn cancel(&mut self) {
        self.closing = true;
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = &self.thread {
            thread.unpark();
        }
        if let Some(socket) = self.socket.take() {
            if SHUTDOWN_ABORTS_CONNECT && socket.is_tcp() {
                let _ = socket.shutdown(Shutdown::Read);
            }
        }
    }
}

fn target(socket: &Socket, to: &Addr) -> io::Result<Target> {
    match (socket, to) {
        (Socket::Tcp(_), Addr::Inet(a)) => Ok(Target::Tcp(*a)),
        (Socket::Udp(_), Addr::Inet(a)) => Ok(Target::Udp(*a)),
        #[cfg(unix)]
        (Socket::Unix(_), Addr::Unix(Some(path))) => Ok(Target::Unix(path.clone())),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {} socket cannot connect to {to}", kind(socket)),
        )),
    }
}

fn kind(socket: &Socket) -> &'static str {
    match socket {
        Socket::Tcp(_) => "TCP",
        Socket::Udp(_) => "UDP",
        #[cfg(unix)]
        Socket::Unix(_) => "Unix-domain stream",
    }
}

/// A datagram socket's connect: no handshake, it only sets the peer.
fn connect_udp(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    match socket {
        Socket::Udp(udp) => udp.connect(addr),
        _ => Err(io::ErrorKind::InvalidInput.into()),
    }
}

/// Starts the connecting thread; it reports [`Msg::Connected`] as its last act.
fn spawn(
    id: Id,
    socket: Arc<Borrowed>,
    target: Target,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
) -> io::Result<thread::Thread> {
    let handle = thread::Builder::new()
        .name(format!("gnet-connect-{}", id.index()))
        .stack_size(STACK_SIZE)
        .spawn(move || {
            let run = || run(&socket, &target, &stop);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
                .unwrap_or_else(|_| Err(io::Error::other("stdnet: the connect thread panicked")));
            drop(socket);
            shared.push(Msg::Connected { id, result });
        })?;
    Ok(handle.thread().clone())
}

/// The thread's body: connects, then switches the socket back to non-blocking mode, as the
/// loop handed it over (`connect_timeout` leaves it blocking).
fn run(socket: &Socket, target: &Target, stop: &AtomicBool) -> io::Result<()> {
    if stop.load(Ordering::Acquire) {
        return Err(io::ErrorKind::Interrupted.into());
    }
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let result = match (socket, target) {
        (Socket::Tcp(s), Target::Tcp(addr)) if SHUTDOWN_ABORTS_CONNECT => {
            SockRef::from(s).connect_timeout(&SockAddr::from(*addr), CONNECT_TIMEOUT)
        }
        (Socket::Tcp(s), Target::Tcp(addr)) => {
            polled(SockRef::from(s), &SockAddr::from(*addr), deadline, stop)
        }
        #[cfg(unix)]
        (Socket::Unix(s), Target::Unix(path)) => {
            SockAddr::unix(path).and_then(|addr| polled(SockRef::from(s), &addr, deadline, stop))
        }
        _ => Err(io::ErrorKind::InvalidInput.into()),
    };
    let restored = socket.set_nonblocking(true);
    result.and(restored)
}

/// A polled connect (see the module documentation): `Ok` once connected, the socket's error,
/// `Interrupted` when `stop` was set, `TimedOut` after `deadline`.
pub(super) fn polled(
    sock: SockRef<'_>,
    addr: &SockAddr,
    deadline: Instant,
    stop: &AtomicBool,
) -> io::Result<()> {
    sock.set_nonblocking(true)?;
    let mut tick = TICK_MIN;
    let mut in_progress = false;
    loop {
        if in_progress {
            if let Some(e) = sock.take_error()? {
                return Err(e);
            }
            if sock.peer_addr().is_ok() {
                return Ok(());
            }
        } else {
            match sock.connect(addr) {
                Ok(()) => return Ok(()),
                // POSIX: an interrupted connect goes on asynchronously, as one in progress.
                Err(e) if in_progress_error(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    in_progress = true;
                    continue;
                }
                // A Unix-domain listener's backlog is full (Linux): try again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if stop.load(Ordering::Acquire) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        thread::park_timeout(tick.min(deadline - now));
        tick = (tick * 2).min(TICK_MAX);
    }
}

/// Whether a non-blocking `connect` failed only because it goes on in the background:
/// `EINPROGRESS` on Unix, `WSAEWOULDBLOCK` on Windows.
fn in_progress_error(e: &io::Error) -> bool {
    #[cfg(unix)]
    return e.raw_os_error() == Some(libc::EINPROGRESS);
    #[cfg(windows)]
    return e.kind() == io::ErrorKind::WouldBlock;
}
