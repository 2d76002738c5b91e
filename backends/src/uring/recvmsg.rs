//! Receiving datagrams: one multishot `RECVMSG` per datagram socket, selecting from the
//! datagram buffer group (`bufring/dgram.rs`, registered when the first datagram socket is
//! added). Each completion is one datagram in one buffer: the `io_uring_recvmsg_out` header,
//! the source address and the payload, parsed with [`RecvMsgOut`] and reported with one
//! [`Sink::datagram`]; the buffer goes back to the group when the callback returns.
//!
//! * **Truncation**: the receive asks for `MSG_TRUNC`, so the header's payload length is the
//!   datagram's real length; a datagram longer than the buffer's payload area is reported with
//!   its first bytes and `truncated` (also when the kernel sets `MSG_TRUNC` in the header's
//!   flags).
//! * **Backpressure**: an empty group ends the multishot with `ENOBUFS`; the socket waits on
//!   `Uring::dgram_starved` and is re-armed at the end of the pass that returned the buffers
//!   (`Uring::rearm_starved_dgrams`, called from `reap`). The datagrams wait in the socket's
//!   receive buffer meanwhile: nothing the kernel queued is lost.
//! * **Errors**: the network's (an ICMP port unreachable as `ECONNREFUSED` on a connected
//!   socket, unreachable hosts and networks, ...) end the multishot too: they are reported
//!   with [`Sink::datagram_error`] and the receive is re-armed. A socket that cannot receive
//!   at all (`EBADF`, `ENOTSOCK`, `EINVAL`, `EFAULT`, `EOPNOTSUPP`), or that gives nothing but
//!   errors [`MAX_ERRORS`] times in a row, is [`Sink::failed`].
//! * `Flow::Pause` cancels the multishot (what is already completed is still delivered) and
//!   `resume` arms it again, as for streams.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use io_uring::types::{Fd, RecvMsgOut};
use io_uring::{cqueue, opcode};

use super::bufring::{DgramRing, DgramSlot, DGRAM_BGID};
use super::state::Dgram;
use super::user_data::{cqe_error, Kind, Tag};
use super::Uring;
use crate::contract::{Flow, Id, Sink};
use crate::socket::Socket;

/// The payload area of a datagram buffer at most: no UDP datagram is larger (65,507 bytes
/// over IPv4, 65,527 over IPv6 without jumbograms), so a larger `read_buffer_size` would only
/// reserve memory that is never written.
const MAX_DATAGRAM: usize = 64 * 1024;

/// Receive errors in a row, with no datagram between, after which the socket is failed
/// rather than re-armed once more (an error that every receive meets again).
const MAX_ERRORS: u32 = 64;

impl Uring {
    /// [`Backend::add_datagram`](crate::Backend::add_datagram): registers the datagram buffer
    /// group if this is the first datagram socket, tracks the socket and arms its receive.
    pub(super) fn start_datagrams(&mut self, id: Id, socket: &Socket) -> io::Result<()> {
        if let Err(why) = &self.caps.datagrams {
            return Err(io::Error::new(io::ErrorKind::Unsupported, why.clone()));
        }
        if !socket.is_datagram() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "add_datagram needs a datagram socket",
            ));
        }
        self.check_new_id(id)?;
        self.dgram_group()?;
        self.dgrams
            .insert(Box::new(Dgram::new(id, socket.as_raw_fd())));
        self.arm_recvmsg(id);
        Ok(())
    }

    /// Registers the datagram buffer group, once.
    ///
    /// # Errors
    /// `ENOMEM` when `RLIMIT_MEMLOCK` has no page left for its descriptors (a resource
    /// shortage: the loop offers the socket again later), or the mapping failed.
    fn dgram_group(&mut self) -> io::Result<()> {
        if self.dgram_bufs.is_some() {
            return Ok(());
        }
        let payload = self.read_buffer_size.min(MAX_DATAGRAM);
        let group = DgramRing::new(self.dgram_buffers, payload)?;
        // SAFETY: the group is stored in `self.dgram_bufs` right below and only dropped after
        // it was unregistered or the ring destroyed (see `Drop for Uring`).
        unsafe { group.register(&self.ring.submitter()) }?;
        self.dgram_bufs = Some(group);
        Ok(())
    }

    /// Arms the multishot receive of datagram socket `id` if it should be running; says
    /// whether it did.
    pub(super) fn arm_recvmsg(&mut self, id: Id) -> bool {
        let (Some(d), Some(group)) = (self.dgrams.get_mut(id), self.dgram_bufs.as_ref()) else {
            return false;
        };
        if d.recv_armed || d.paused || d.closing || d.failed || d.starved || d.cancels > 0 {
            return false;
        }
        d.recv_armed = true;
        d.ops += 1;
        let sqe = opcode::RecvMsgMulti::new(Fd(d.fd), group.msghdr(), DGRAM_BGID)
            .flags(libc::MSG_TRUNC as u32)
            .build()
            .user_data(Tag::conn(Kind::RecvMsg, id).encode());
        // SAFETY: the `msghdr` belongs to the group, which lives until the ring is destroyed;
        // the buffers come from the registered group.
        unsafe { self.push(sqe) };
        true
    }

    /// A datagram arrived (or the multishot ended): report it and give its buffer back.
    pub(super) fn on_recvmsg<S: Sink>(
        &mut self,
        id: Id,
        res: i32,
        flags: u32,
        more: bool,
        sink: &mut S,
    ) {
        let slot = match (cqueue::buffer_select(flags), self.dgram_bufs.as_mut()) {
            (Some(bid), Some(group)) => group.take(bid, usize::try_from(res).unwrap_or(0)),
            _ => None,
        };
        let Some(group) = self.dgram_bufs.as_ref() else {
            return;
        };
        let Some(d) = self.dgrams.get_mut(id) else {
            // A completion for a socket already forgotten cannot happen (an entry lives until
            // its last completion); the buffer goes back all the same.
            log::error!("io_uring: datagram completion for unknown socket {id:?}");
            return self.return_dgram_buffer(slot);
        };
        if !more {
            d.recv_armed = false;
            d.ops -= 1;
        }
        let mut cancel = false;
        if let Some(slot) = slot {
            if !d.closing && !d.failed {
                // SAFETY: this completion filled `slot`, which stays out of the ring until it
                // is recycled below, after the sink returned.
                let buf = unsafe { group.data(slot) };
                let (delivered, answer) = deliver(id, buf, group.msghdr(), sink);
                self.poll_read += delivered;
                if let Some(flow) = answer {
                    d.errors = 0;
                    if flow == Flow::Pause && !d.paused {
                        d.paused = true;
                        cancel = d.recv_armed && d.cancels == 0;
                    }
                }
            }
        } else if res == -libc::ENOBUFS {
            // Backpressure: the group is empty. Wait for buffers, never fail.
            self.dgram_nobufs += 1;
            if !d.starved && !d.paused && !d.closing {
                d.starved = true;
                self.dgram_starved.push_back(id);
            }
        } else if res < 0 {
            receive_error(d, res, sink);
        }
        self.return_dgram_buffer(slot);
        if cancel {
            self.cancel_dgram_op(id, Tag::conn(Kind::RecvMsg, id));
        }
        if !more {
            self.after_dgram_op(id, sink);
        }
    }

    fn return_dgram_buffer(&mut self, slot: Option<DgramSlot>) {
        if let (Some(slot), Some(group)) = (slot, self.dgram_bufs.as_mut()) {
            group.recycle(slot);
        }
    }

    /// Re-arms the datagram sockets whose receive ran out of buffers, at the end of a pass
    /// (every buffer a completion of the pass borrowed is back): as many as there are free
    /// buffers, the longest waiting first.
    pub(super) fn rearm_starved_dgrams(&mut self) {
        let mut budget = self.dgram_bufs.as_ref().map_or(0, DgramRing::free);
        while budget > 0 {
            let Some(id) = self.dgram_starved.pop_front() else {
                break;
            };
            if let Some(d) = self.dgrams.get_mut(id) {
                d.starved = false;
                if self.arm_recvmsg(id) {
                    budget -= 1;
                }
            }
        }
    }
}

/// Parses one datagram's buffer and reports it: the payload bytes delivered (for the poll's
/// read budget) and the sink's answer, `None` when the buffer did not hold a datagram
/// (logged: a header cut short, an address of an unknown family).
fn deliver<S: Sink>(id: Id, buf: &[u8], msg: &libc::msghdr, sink: &mut S) -> (usize, Option<Flow>) {
    let Ok(out) = RecvMsgOut::parse(buf, msg) else {
        log::error!(
            "io_uring: datagram completion on {id:?} shorter than its header ({} bytes); \
             dropped",
            buf.len()
        );
        return (0, None);
    };
    let Some(from) = source(out.name_data()) else {
        log::error!("io_uring: datagram on {id:?} from an address of an unknown family; dropped");
        return (0, None);
    };
    let payload = out.payload_data();
    let truncated =
        out.is_payload_truncated() || out.incoming_payload_len() as usize > payload.len();
    let flow = sink.datagram(id, from, payload, truncated);
    (payload.len(), Some(flow))
}

/// A receive that ended with an error other than `ENOBUFS`: nothing for a cancellation or an
/// interruption (the caller re-arms), `failed` for a socket that cannot receive or only errs,
/// `datagram_error` for the rest (the network's), after which the receive is re-armed.
fn receive_error<S: Sink>(d: &mut Dgram, res: i32, sink: &mut S) {
    let id = d.id;
    match -res {
        libc::ECANCELED | libc::EINTR | libc::EAGAIN => {}
        e if d.closing || d.failed => log::debug!("io_uring: {id:?}: {e} while closing"),
        libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EFAULT | libc::EOPNOTSUPP => {
            d.failed = true;
            sink.failed(id, cqe_error(res));
        }
        _ => {
            d.errors += 1;
            if d.errors >= MAX_ERRORS {
                d.failed = true;
                sink.failed(id, cqe_error(res));
            } else {
                sink.datagram_error(id, None, cqe_error(res));
            }
        }
    }
}

/// The socket address in a `recvmsg` name area (`sockaddr_in` or `sockaddr_in6`, in the
/// kernel's layout: the family in host order, the port in network order).
fn source(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(name.get(0..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddrV4::new(Ipv4Addr::from(ip), port).into())
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_ne_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddrV6::new(Ipv6Addr::from(ip), port, flowinfo, scope).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::source;
    use std::net::SocketAddr;

    #[test]
    fn uring_datagram_source_addresses() {
        let mut v4 = vec![0u8; 16];
        v4[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&4242u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(source(&v4), Some("10.1.2.3:4242".parse().unwrap()));
        let mut v6 = vec![0u8; 28];
        v6[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&53u16.to_be_bytes());
        v6[23] = 1;
        v6[24..28].copy_from_slice(&7u32.to_ne_bytes());
        let want: SocketAddr = "[::1%7]:53".parse().unwrap();
        assert_eq!(source(&v6), Some(want));
        assert_eq!(source(&v6[..20]), None, "cut short");
        assert_eq!(source(&[0u8; 16]), None, "AF_UNSPEC");
    }
}
