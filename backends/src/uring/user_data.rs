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
//! and dropped after its buffer is returned. The other kinds (the listeners' poll, the
//! waker, global cancellations) carry zeros.

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
        for kind in [Kind::Recv, Kind::Send, Kind::ConnCancel] {
            let t = Tag::conn(kind, id);
            let back = Tag::decode(t.encode()).unwrap();
            assert_eq!(back, t);
            assert_eq!(back.conn_id(), id);
        }
        let l = Tag::plain(Kind::Accept);
        assert_eq!(Tag::decode(l.encode()), Some(l));
        assert_eq!(Tag::decode(0), None);
    }
}
