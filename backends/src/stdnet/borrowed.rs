//! The connection's socket as its threads use it: the loop's own socket, borrowed, never
//! duplicated.
//!
//! A `dup` per connection would make an established connection depend on a descriptor it
//! gets later (a writer started at the first send used to make one, and die of `EMFILE` when
//! the table had filled up since) and would let accepted-but-unregistered connections eat the
//! descriptors their registration needs. Borrowing is sound because of the contract: the loop
//! keeps the socket open from `add_conn` until the backend reports `closed`, and stdnet
//! reports `closed` only after every thread of the connection has exited, its last use of
//! the socket behind it.
#![allow(unsafe_code)]

use std::mem::ManuallyDrop;
use std::ops::Deref;

use crate::socket::Socket;

/// A [`Socket`] that refers to the loop's descriptor and never closes it.
pub(super) struct Borrowed(ManuallyDrop<Socket>);

impl Borrowed {
    /// Borrows `socket` for as long as the returned value (and its clones' threads) live.
    ///
    /// # Safety
    /// `socket` must stay open until the returned value and everything made from it are
    /// dropped, and nothing may close its descriptor in between.
    pub(super) unsafe fn new(socket: &Socket) -> Borrowed {
        #[cfg(unix)]
        {
            use std::os::fd::{AsRawFd, FromRawFd};
            let fd = socket.as_raw_fd();
            // SAFETY: the descriptor is open for as long as the caller promised; the value
            // is wrapped in `ManuallyDrop`, so it never closes the descriptor it shares.
            let same = unsafe {
                match socket {
                    Socket::Tcp(_) => Socket::Tcp(std::net::TcpStream::from_raw_fd(fd)),
                    Socket::Unix(_) => {
                        Socket::Unix(std::os::unix::net::UnixStream::from_raw_fd(fd))
                    }
                    Socket::Udp(_) => Socket::Udp(std::net::UdpSocket::from_raw_fd(fd)),
                }
            };
            Borrowed(ManuallyDrop::new(same))
        }
        #[cfg(windows)]
        {
            use std::os::windows::io::{AsRawSocket, FromRawSocket};
            // SAFETY: as above, for the socket handle.
            let same = unsafe {
                match socket {
                    Socket::Tcp(s) => {
                        Socket::Tcp(std::net::TcpStream::from_raw_socket(s.as_raw_socket()))
                    }
                    Socket::Udp(s) => {
                        Socket::Udp(std::net::UdpSocket::from_raw_socket(s.as_raw_socket()))
                    }
                }
            };
            Borrowed(ManuallyDrop::new(same))
        }
    }
}

impl Deref for Borrowed {
    type Target = Socket;

    fn deref(&self) -> &Socket {
        &self.0
    }
}
