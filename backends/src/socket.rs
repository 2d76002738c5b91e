//! The sockets the loop owns and lends to its backend.

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
#[cfg(unix)]
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

/// A socket owned by the loop: a stream connection or a datagram socket. Dropping it closes
/// the descriptor.
#[derive(Debug)]
#[non_exhaustive]
pub enum Socket {
    /// A TCP connection (or, before `Backend::connect` completes, a TCP socket connecting).
    Tcp(TcpStream),
    /// A Unix-domain stream connection (or one connecting).
    #[cfg(unix)]
    Unix(UnixStream),
    /// A UDP socket: bound, and connected to one peer or not.
    Udp(UdpSocket),
}

/// A listening stream socket, owned by the loop.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-domain stream listener.
    #[cfg(unix)]
    Unix(UnixListener),
}

/// A socket address: an IP address and port, or a Unix-domain path (`None` when unnamed, as
/// the client side of a Unix connection usually is).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Addr {
    /// IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix-domain socket path; `None` for an unnamed socket.
    Unix(Option<PathBuf>),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(a) => write!(f, "{a}"),
            Addr::Unix(Some(p)) => write!(f, "{}", p.display()),
            Addr::Unix(None) => f.write_str("(unnamed)"),
        }
    }
}

#[cfg(unix)]
fn unix_addr(a: std::os::unix::net::SocketAddr) -> Addr {
    Addr::Unix(a.as_pathname().map(|p| p.to_path_buf()))
}

impl Socket {
    /// The local address.
    ///
    /// # Errors
    /// Whatever `getsockname` reports.
    pub fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Socket::Tcp(s) => s.local_addr().map(Addr::Inet),
            #[cfg(unix)]
            Socket::Unix(s) => s.local_addr().map(unix_addr),
            Socket::Udp(s) => s.local_addr().map(Addr::Inet),
        }
    }

    /// The peer's address (a datagram socket's only when it is connected).
    ///
    /// # Errors
    /// Whatever `getpeername` reports.
    pub fn peer_addr(&self) -> io::Result<Addr> {
        match self {
            Socket::Tcp(s) => s.peer_addr().map(Addr::Inet),
            #[cfg(unix)]
            Socket::Unix(s) => s.peer_addr().map(unix_addr),
            Socket::Udp(s) => s.peer_addr().map(Addr::Inet),
        }
    }

    /// Shuts down one or both directions of a stream.
    ///
    /// # Errors
    /// Whatever `shutdown` reports (`NotConnected` once the peer is gone); `Unsupported` for a
    /// datagram socket.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.shutdown(how),
            #[cfg(unix)]
            Socket::Unix(s) => s.shutdown(how),
            Socket::Udp(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a datagram socket has no stream to shut down",
            )),
        }
    }

    /// Whether this is a TCP socket.
    pub fn is_tcp(&self) -> bool {
        matches!(self, Socket::Tcp(_))
    }

    /// Whether this is a datagram socket.
    pub fn is_datagram(&self) -> bool {
        matches!(self, Socket::Udp(_))
    }

    /// Switches non-blocking mode.
    ///
    /// # Errors
    /// Whatever `ioctl(FIONBIO)` reports.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_nonblocking(on),
            #[cfg(unix)]
            Socket::Unix(s) => s.set_nonblocking(on),
            Socket::Udp(s) => s.set_nonblocking(on),
        }
    }

    /// Sends what the kernel takes now, without blocking and without `SIGPIPE`: `Ok(n)` for
    /// the first `n` bytes of `buf`, `WouldBlock` when the send buffer is full.
    ///
    /// # Errors
    /// Whatever `send` reports; `Unsupported` where there is no non-blocking send flag
    /// (Windows).
    pub fn try_send(&self, buf: &[u8]) -> io::Result<usize> {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // Without `MSG_NOSIGNAL` (Apple's systems) the kqueue backend set `SO_NOSIGPIPE`
            // on the socket in `add_conn`.
            #[cfg(gnet_msg_nosignal)]
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            #[cfg(not(gnet_msg_nosignal))]
            let flags = libc::MSG_DONTWAIT;
            // SAFETY: the descriptor is owned by `self` and open for the whole call; the
            // pointer and length describe `buf`, which the kernel only reads.
            let n = unsafe { libc::send(self.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }
        #[cfg(not(unix))]
        {
            let _ = buf;
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no non-blocking send on this platform",
            ))
        }
    }

    /// A second handle to the same socket (a `dup` with close-on-exec).
    ///
    /// # Errors
    /// Whatever `dup` reports (`EMFILE`, ...).
    pub fn try_clone(&self) -> io::Result<Socket> {
        match self {
            Socket::Tcp(s) => s.try_clone().map(Socket::Tcp),
            #[cfg(unix)]
            Socket::Unix(s) => s.try_clone().map(Socket::Unix),
            Socket::Udp(s) => s.try_clone().map(Socket::Udp),
        }
    }
}

impl Listener {
    /// The bound address.
    ///
    /// # Errors
    /// Whatever `getsockname` reports.
    pub fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(Addr::Inet),
            #[cfg(unix)]
            Listener::Unix(l) => l.local_addr().map(unix_addr),
        }
    }

    /// A second handle to the same listener (a `dup` with close-on-exec).
    ///
    /// # Errors
    /// Whatever `dup` reports.
    pub fn try_clone(&self) -> io::Result<Listener> {
        match self {
            Listener::Tcp(l) => l.try_clone().map(Listener::Tcp),
            #[cfg(unix)]
            Listener::Unix(l) => l.try_clone().map(Listener::Unix),
        }
    }

    /// Accepts one connection with the portable `std` call (blocking or not, as the listener
    /// is set), returning it with its peer address.
    ///
    /// # Errors
    /// Whatever `accept` reports; `WouldBlock` on a non-blocking listener with nothing pending.
    pub fn accept_std(&self) -> io::Result<(Socket, Addr)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| (Socket::Tcp(s), Addr::Inet(a))),
            #[cfg(unix)]
            Listener::Unix(l) => l.accept().map(|(s, a)| (Socket::Unix(s), unix_addr(a))),
        }
    }
}

#[cfg(unix)]
mod unix_fd {
    use super::{Listener, Socket};
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

    impl AsRawFd for Socket {
        fn as_raw_fd(&self) -> RawFd {
            match self {
                Socket::Tcp(s) => s.as_raw_fd(),
                Socket::Unix(s) => s.as_raw_fd(),
                Socket::Udp(s) => s.as_raw_fd(),
            }
        }
    }

    impl AsFd for Socket {
        fn as_fd(&self) -> BorrowedFd<'_> {
            match self {
                Socket::Tcp(s) => s.as_fd(),
                Socket::Unix(s) => s.as_fd(),
                Socket::Udp(s) => s.as_fd(),
            }
        }
    }

    impl AsRawFd for Listener {
        fn as_raw_fd(&self) -> RawFd {
            match self {
                Listener::Tcp(l) => l.as_raw_fd(),
                Listener::Unix(l) => l.as_raw_fd(),
            }
        }
    }

    impl AsFd for Listener {
        fn as_fd(&self) -> BorrowedFd<'_> {
            match self {
                Listener::Tcp(l) => l.as_fd(),
                Listener::Unix(l) => l.as_fd(),
            }
        }
    }
}
