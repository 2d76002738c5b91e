//! A datagram socket's threads: the reader, one blocking `recv_from` and one message per
//! datagram, and the writer, which sends each datagram of a batch whole and in order.
//!
//! Both use the loop's socket, borrowed as a stream connection's threads do (`borrowed.rs`),
//! and the same [`ConnShared`] state: `closing`, `paused`, the datagrams in flight to the loop,
//! and the writer's batch.
//!
//! # Receiving
//!
//! std cannot say that a datagram was truncated, so the reader receives into a buffer one
//! byte larger than `read_buffer_size`: a datagram that fills more than `read_buffer_size`
//! bytes of it did not fit, and is reported with its first `read_buffer_size` bytes and
//! `truncated` set. (On Windows a `recvfrom` into a buffer too small fails with `WSAEMSGSIZE`,
//! and std then drops the source address; there the buffer holds the largest UDP datagram
//! instead, `ANY_DATAGRAM` bytes, and the same comparison finds the truncated ones.) Each
//! datagram goes to the loop as an exact-size copy, so the reader's buffer never leaves the
//! thread and a socket holds one receive buffer whatever the traffic: unlike a stream's
//! reader it holds it while idle too (one blocking call must wait for any size), which is
//! fine for the few datagram sockets a loop has.
//!
//! The reader stays at most [`MAX_IN_FLIGHT`] datagrams, or two receive buffers' worth of
//! bytes, ahead of the loop (whichever comes first, and always at least one), and reads
//! nothing while paused; the kernel's receive buffer holds the rest, as it would for any
//! slow receiver.
//!
//! Errors that came from the network (an ICMP port unreachable arriving as
//! `ECONNREFUSED` on a connected socket, or `WSAECONNRESET` on Windows; unreachable hosts
//! and networks, a path MTU too small) are reported as datagram errors and the reader goes
//! on: each report consumes the socket's pending error, so this cannot spin. Anything else
//! means the socket itself is broken, and fails it.
//!
//! # Sending
//!
//! The writer (started by the first `send_to`) sends each datagram with one blocking
//! `send_to`, or `send` for the connected peer. A datagram that fails (`EMSGSIZE`, an
//! unreachable destination, a refusal the network reported) is reported and the batch goes
//! on; then `sent` reports the whole batch. The writer never fails the socket: a socket that
//! is really broken fails its reader. On Unix a send that blocks gives up every 100 ms (the
//! send timeout of a stream connection's writer) to look at the closing flag.
//!
//! # Waking at close
//!
//! A datagram socket has no stream to shut down, and a thread blocked in `recv_from` cannot
//! be woken portably without closing the loop's descriptor. `close` calls `shutdown` on it
//! anyway: Linux and Android wake every thread blocked on the socket, connected or not
//! (their `inet_shutdown` wakes the waiters before it returns `ENOTCONN` for an unconnected
//! one), and a blocked `send` returns `EPIPE`. On other systems, where that is not known
//! to hold, the reader also has a receive timeout of [`TICK`] (100 ms) after which it looks
//! at the closing flag, so `closed` comes within about that. A datagram sent to the socket
//! itself would wake it too, but not a connected socket (the kernel drops datagrams from
//! anyone but the peer), and it needs a second socket or a send from the loop's thread:
//! the timeout is the one mechanism that works for every datagram socket everywhere.

use std::io;
use std::net::{Shutdown, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::borrowed::Borrowed;
use super::conn::{self, ConnShared, State};
use super::queue::{Msg, Shared};
use crate::contract::{Datagram, Id};
use crate::socket::Socket;

/// Datagrams a reader may have queued for the loop and not yet seen delivered.
pub(super) const MAX_IN_FLIGHT: usize = 64;

/// Whether `shutdown` wakes a thread blocked in `recv_from` on a datagram socket (see the
/// module documentation); elsewhere the reader has a receive timeout of [`TICK`].
const SHUTDOWN_WAKES_RECV: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// The receive timeout of a datagram socket where `shutdown` does not wake its reader: how
/// long `closed` may take there.
const TICK: Duration = Duration::from_millis(100);

/// Bytes that hold any UDP datagram (the payload of one is at most 65,527 bytes, over IPv6
/// without jumbograms): the receive buffer on Windows (see the module documentation).
#[cfg(windows)]
const ANY_DATAGRAM: usize = 65_536;

/// Sets the loop's datagram socket up for its threads: blocking mode, the writer's send
/// timeout on Unix, and the reader's receive timeout where `shutdown` does not wake it (and
/// none elsewhere: one the socket came with would fail an idle reader).
///
/// # Errors
/// `InvalidInput` for a socket that is not a datagram socket; setting the mode or a timeout
/// failing.
pub(super) fn prepare(socket: &Socket) -> io::Result<()> {
    let udp = udp(socket)?;
    udp.set_nonblocking(false)?;
    #[cfg(unix)]
    udp.set_write_timeout(Some(conn::WRITER_TICK))?;
    udp.set_read_timeout((!SHUTDOWN_WAKES_RECV).then_some(TICK))
}

/// Wakes the socket's threads at `close` (see the module documentation). Errors (`ENOTCONN`
/// for an unconnected socket, which is still woken on Linux) do not matter here.
pub(super) fn wake(socket: &Socket) {
    if let Socket::Udp(udp) = socket {
        let _ = socket2::SockRef::from(udp).shutdown(Shutdown::Both);
    }
}

/// Whether the reader must wait for the loop before it receives another datagram: it may
/// always have one in flight, and at most [`MAX_IN_FLIGHT`] or two receive buffers' worth.
pub(super) fn over_budget(st: &State, size: usize) -> bool {
    st.in_flight > 0 && (st.in_flight >= MAX_IN_FLIGHT || st.queued_bytes >= size.saturating_mul(2))
}

/// Starts the reader thread of the datagram socket `id`.
pub(super) fn spawn_reader(
    id: Id,
    socket: Arc<Borrowed>,
    state: Arc<ConnShared>,
    shared: Arc<Shared>,
    size: usize,
) -> io::Result<JoinHandle<()>> {
    conn::spawn("recv", id, socket, state, shared, move |id, s, st, sh| {
        if let Ok(udp) = udp(s) {
            reader(id, udp, st, sh, size);
        }
    })
}

/// Starts the writer thread of the datagram socket `id`.
pub(super) fn spawn_writer(
    id: Id,
    socket: Arc<Borrowed>,
    state: Arc<ConnShared>,
    shared: Arc<Shared>,
) -> io::Result<JoinHandle<()>> {
    conn::spawn("send", id, socket, state, shared, |id, s, st, sh| {
        if let Ok(udp) = udp(s) {
            writer(id, udp, s, st, sh);
        }
    })
}

/// The reader: one message per datagram until `close` or a broken socket, within the budget
/// of [`over_budget`], and nothing while paused.
fn reader(id: Id, udp: &UdpSocket, state: &ConnShared, shared: &Shared, size: usize) {
    let mut buf = vec![0u8; recv_len(size)];
    loop {
        {
            let mut st = state.lock();
            while !st.closing && (st.paused || over_budget(&st, size)) {
                st = state.wait(st);
            }
            if st.closing {
                return;
            }
        }
        match udp.recv_from(&mut buf) {
            Ok((n, from)) => {
                let data = buf[..n.min(size)].to_vec();
                {
                    let mut st = state.lock();
                    if st.closing {
                        return;
                    }
                    st.in_flight += 1;
                    st.queued_bytes += data.len();
                }
                let truncated = n > size;
                shared.push(Msg::Datagram {
                    id,
                    from,
                    data,
                    truncated,
                });
            }
            Err(e) if retry(&e) => {}
            Err(_) if state.closing() => return,
            Err(error) if from_the_network(&error) => {
                shared.push(Msg::DatagramError {
                    id,
                    to: None,
                    error,
                });
            }
            Err(error) => {
                shared.push(Msg::Failed { conn: id, error });
                return;
            }
        }
    }
}

/// The size of the reader's buffer for `read_buffer_size` (see the module documentation).
fn recv_len(size: usize) -> usize {
    let len = size.saturating_add(1);
    #[cfg(windows)]
    let len = len.max(ANY_DATAGRAM);
    len
}

/// Whether a failed receive should simply be repeated: interrupted, or the receive timeout
/// expired where the reader has one (whoever is closing is then seen at the top of the loop).
/// Elsewhere a `WouldBlock` means that someone made the socket non-blocking behind stdnet's
/// back: an error.
fn retry(e: &io::Error) -> bool {
    match e.kind() {
        io::ErrorKind::Interrupted => true,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => !SHUTDOWN_WAKES_RECV,
        _ => false,
    }
}

/// Whether a receive error is one the network reported (an ICMP error turned into the
/// socket's pending error), after which the socket still works.
fn from_the_network(e: &io::Error) -> bool {
    use io::ErrorKind::{ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionReset) {
        return true;
    }
    // The other kinds (HostUnreachable, ...) are named by std only from Rust 1.83 on.
    #[cfg(unix)]
    let network = [
        libc::EHOSTUNREACH,
        libc::ENETUNREACH,
        libc::ENETDOWN,
        libc::EHOSTDOWN,
        libc::EMSGSIZE,
        libc::EPROTO,
        libc::ENOPROTOOPT,
        libc::EOPNOTSUPP,
    ];
    #[cfg(windows)]
    let network = [
        wsa::WSAENETDOWN,
        wsa::WSAENETUNREACH,
        wsa::WSAENETRESET,
        wsa::WSAEHOSTUNREACH,
    ];
    e.raw_os_error().is_some_and(|code| network.contains(&code))
}

/// Winsock error codes (`winerror.h`) of the ICMP reports a UDP receive returns on Windows;
/// the crate has no Windows bindings of its own to name them.
#[cfg(windows)]
mod wsa {
    pub(super) const WSAENETDOWN: i32 = 10050;
    pub(super) const WSAENETUNREACH: i32 = 10051;
    /// A time-to-live expired on the way (`SIO_UDP_NETRESET`, on by default).
    pub(super) const WSAENETRESET: i32 = 10052;
    pub(super) const WSAEHOSTUNREACH: i32 = 10065;
}

/// The writer: sends each batch the loop hands over, every datagram whole and in order,
/// reporting those that fail, then `sent` with the batch's total length; exits at `close`.
fn writer(id: Id, udp: &UdpSocket, socket: &Socket, state: &ConnShared, shared: &Shared) {
    loop {
        let batch = {
            let mut st = state.lock();
            loop {
                if st.closing {
                    return;
                }
                if let Some(batch) = st.datagrams.take() {
                    break batch;
                }
                st = state.wait(st);
            }
        };
        let n = batch.iter().map(|d| d.data.len()).sum();
        for d in &batch {
            if state.closing() {
                return; // the rest of the batch is abandoned
            }
            if let Err(error) = send(udp, socket, d, state) {
                if state.closing() {
                    return;
                }
                let to = d.to;
                shared.push(Msg::DatagramError { id, to, error });
            }
        }
        drop(batch);
        shared.push(Msg::Sent { conn: id, n });
    }
}

/// Sends one datagram whole, trying again after an interruption or a send timeout (Unix)
/// unless the socket is closing.
fn send(udp: &UdpSocket, socket: &Socket, d: &Datagram, state: &ConnShared) -> io::Result<()> {
    loop {
        let res = match d.to {
            Some(to) => udp.send_to(&d.data, to),
            None => udp.send(&d.data),
        };
        match res {
            Ok(n) if n == d.data.len() => return Ok(()),
            // The kernel sends a datagram whole or not at all; never report a cut one as sent.
            Ok(n) => return Err(cut(n, d.data.len())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if conn::send_timed_out(&e, socket, state) => {}
            Err(e) => return Err(e),
        }
    }
}

fn cut(n: usize, len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::WriteZero,
        format!("sent {n} bytes of a {len}-byte datagram"),
    )
}

/// The datagram socket inside a [`Socket`].
///
/// # Errors
/// `InvalidInput` for a stream socket.
pub(super) fn udp(socket: &Socket) -> io::Result<&UdpSocket> {
    match socket {
        Socket::Udp(udp) => Ok(udp),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a datagram socket",
        )),
    }
}
