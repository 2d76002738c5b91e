//! Connecting: one `IORING_OP_CONNECT` per socket, streams (TCP, Unix) and datagram sockets
//! alike (a datagram socket's connect has no handshake and completes at once, through the
//! same path). The destination is a [`socket2::SockAddr`] boxed in the socket's entry, which
//! lives until the connect's completion is reaped. The kernel waits for the handshake itself
//! and completes with its result: [`Sink::connected`], after which the entry is forgotten and
//! the loop registers the socket again under the same id. A close before that cancels the
//! connect (`close.rs`) and reports `closed`, never `connected`.

use std::io;
use std::os::fd::AsRawFd;

use io_uring::opcode;
use io_uring::types::Fd;

use super::state::{Connecting, Pending};
use super::user_data::{cqe_error, Kind, Tag};
use super::Uring;
use crate::contract::{Id, Sink};
use crate::socket::{Addr, Socket};

impl Uring {
    /// [`Backend::connect`](crate::Backend::connect). A connect that cannot even be submitted
    /// (no `CONNECT` here, an unnamed Unix address, an id in use) is reported failed by the
    /// next poll.
    pub(super) fn start_connect(&mut self, id: Id, socket: &Socket, to: &Addr) {
        if let Err(e) = self.submit_connect(id, socket, to) {
            self.pending.push_back(Pending::Connected(id, e));
        }
    }

    fn submit_connect(&mut self, id: Id, socket: &Socket, to: &Addr) -> io::Result<()> {
        if let Err(why) = &self.caps.connect {
            return Err(io::Error::new(io::ErrorKind::Unsupported, why.clone()));
        }
        self.check_new_id(id)?;
        let addr = match to {
            Addr::Inet(a) => socket2::SockAddr::from(*a),
            Addr::Unix(Some(path)) => socket2::SockAddr::unix(path)?,
            Addr::Unix(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cannot connect to an unnamed Unix socket",
                ))
            }
        };
        let entry = Box::new(Connecting {
            id,
            addr,
            ops: 1,
            closing: false,
        });
        let sqe = opcode::Connect::new(
            Fd(socket.as_raw_fd()),
            entry.addr.as_ptr(),
            entry.addr.len(),
        )
        .build()
        .user_data(Tag::conn(Kind::Connect, id).encode());
        self.connects.insert(entry);
        // SAFETY: the address is in the boxed entry, now owned by `self.connects`, which keeps
        // it (unmoved: the box's contents stay put) until this operation's completion is
        // reaped: the entry is only removed when its `ops` is zero.
        unsafe { self.push(sqe) };
        Ok(())
    }

    /// The connect completed: report it and forget the entry; or, when the loop closed it
    /// meanwhile, wait for the cancellation too and report `closed`.
    pub(super) fn on_connect<S: Sink>(&mut self, id: Id, res: i32, sink: &mut S) {
        let Some(c) = self.connects.get_mut(id) else {
            log::error!("io_uring: connect completion for unknown {id:?}");
            return;
        };
        c.ops -= 1;
        if c.closing {
            return self.after_connect_op(id, sink);
        }
        self.connects.remove(id);
        let result = if res < 0 { Err(cqe_error(res)) } else { Ok(()) };
        sink.connected(id, result);
    }
}
