//! What rides in a submission's `user_data`: which operation a completion belongs to, and
//! for whom.
//!
//! # `user_data` layout
//!
//! ```text
//!  63    60 59                         32 31                          0
//! +--------+-----------------------------+-----------------------------+
//! |  kind  |   index (28 bits)           |   generation (32 bits)      |
//! +--------+-----------------------------+-----------------------------+
//! ```
//!
//! For connection operations `index`/`generation` are the [`Id`]'s, so a completion that
//! arrives for an old connection whose index was reused is recognised (generation mismatch)
//! and dropped after its buffer is returned. A datagram of a `send_to` batch carries its
//! position in the batch in the low half instead ([`Tag::datagram`]). The other kinds (the
//! listeners' poll, the waker, global cancellations) carry zeros.

use std::io;

use crate::contract::Id;

/// The largest connection or listener index that fits the encoding.
pub(super) const MAX_INDEX: usize = (1 << 28) - 1;

/// The operation a completion belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    /// The multishot poll on the epoll instance that watches the listeners.
    Accept = 1,
    /// Multishot receive on a connection.
    Recv = 2,
    /// Send or sendmsg on a connection.
    Send = 3,
    /// A cancellation aimed at a connection's operations (counted on the connection).
    ConnCancel = 4,
    /// The waker's eventfd poll.
    Wake = 5,
    /// Any other cancellation (listener removal, shutdown): only counted globally.
    Cancel = 6,
    /// Multishot receive of datagrams on a datagram socket.
    RecvMsg = 7,
    /// One datagram of a `send_to` batch; the low half is its position in the batch, not a
    /// generation (see [`Tag::datagram`]).
    SendTo = 8,
    /// A cancellation aimed at a datagram socket's operations.
    DgramCancel = 9,
    /// Connecting a socket.
    Connect = 10,
    /// A cancellation of a connect.
    ConnectCancel = 11,
}

impl Kind {
    fn from_bits(bits: u8) -> Option<Kind> {
        Some(match bits {
            1 => Kind::Accept,
            2 => Kind::Recv,
            3 => Kind::Send,
            4 => Kind::ConnCancel,
            5 => Kind::Wake,
            6 => Kind::Cancel,
            7 => Kind::RecvMsg,
            8 => Kind::SendTo,
            9 => Kind::DgramCancel,
            10 => Kind::Connect,
            11 => Kind::ConnectCancel,
            _ => return None,
        })
    }
}

/// A decoded `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tag {
    pub kind: Kind,
    pub index: usize,
    pub generation: u32,
}

impl Tag {
    pub fn conn(kind: Kind, id: Id) -> Tag {
        Tag {
            kind,
            index: id.index(),
            generation: id.generation(),
        }
    }

    /// The datagram at `position` in the `send_to` batch of the datagram socket at `index`.
    /// No generation: a socket's entry is only forgotten once its batch's last completion is
    /// reaped, so the entry at `index` is the one the completion belongs to.
    pub fn datagram(index: usize, position: usize) -> Tag {
        Tag {
            kind: Kind::SendTo,
            index,
            generation: position as u32,
        }
    }

    pub fn plain(kind: Kind) -> Tag {
        Tag {
            kind,
            index: 0,
            generation: 0,
        }
    }

    pub fn encode(self) -> u64 {
        debug_assert!(self.index <= MAX_INDEX);
        (u64::from(self.kind as u8) << 60)
            | (((self.index & MAX_INDEX) as u64) << 32)
            | u64::from(self.generation)
    }

    pub fn decode(user_data: u64) -> Option<Tag> {
        Some(Tag {
            kind: Kind::from_bits((user_data >> 60) as u8)?,
            index: ((user_data >> 32) as usize) & MAX_INDEX,
            generation: user_data as u32,
        })
    }

    pub fn conn_id(self) -> Id {
        Id::new(self.index, self.generation)
    }
}

/// The `io::Error` for a negative completion result.
pub(super) fn cqe_error(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uring_user_data_round_trip() {
        let id = Id::new(MAX_INDEX, u32::MAX);
        for kind in [
            Kind::Recv,
            Kind::Send,
            Kind::ConnCancel,
            Kind::RecvMsg,
            Kind::DgramCancel,
            Kind::Connect,
            Kind::ConnectCancel,
        ] {
            let t = Tag::conn(kind, id);
            let back = Tag::decode(t.encode()).unwrap();
            assert_eq!(back, t);
            assert_eq!(back.conn_id(), id);
        }
        let d = Tag::datagram(MAX_INDEX, 70_000);
        assert_eq!(Tag::decode(d.encode()), Some(d));
        assert_eq!((d.index, d.generation), (MAX_INDEX, 70_000));
        let l = Tag::plain(Kind::Accept);
        assert_eq!(Tag::decode(l.encode()), Some(l));
        assert_eq!(Tag::decode(0), None);
    }
}
