//! Closing: `closed` after everything is reaped, nothing after it, no FIN of the backend's
//! own, in every state a connection can be in; and an index reused by a new generation.

use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::peer::{pattern, read_n, read_within};
use super::{Ev, Fixture};
use crate::contract::{Backend, Id};

/// The poll after `close` returns promptly, whatever the backend still has to cancel; then
/// `closed` comes within a second, once, and nothing else for `id` since `close`; the
/// connection is counted until then.
pub(super) fn close_promptly<B: Backend>(fx: &mut Fixture<B>, id: Id) {
    let conns = fx.stats().conns;
    let seen = fx.rec.events.len();
    let start = Instant::now();
    fx.close(id);
    assert_eq!(
        fx.stats().conns,
        conns,
        "{id} untracked before its closed was reported"
    );
    let took = fx.poll_timed(Some(Duration::from_secs(5)));
    assert!(
        took < Duration::from_secs(1),
        "the poll after close blocked {took:?}"
    );
    fx.pump(&format!("closed({id})"), |r, _| r.is_closed(id));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "closed {took:?} after close");
    let since: Vec<&Ev> = fx.rec.events[seen..]
        .iter()
        .filter(|e| e.id() == Some(id))
        .collect();
    assert_eq!(since, [&Ev::Closed(id)], "reports for {id} after close");
    assert_eq!(fx.stats().conns, conns - 1);
}

/// An idle connection that exchanged bytes: closed, reaped, nothing reported after, and no
/// FIN until the loop drops the socket.
pub(crate) fn close_reaps_an_idle_connection<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let a = Id::new(9, 4);
    let mut client = fx.tcp_pair(a);
    client.write_all(b"ping").unwrap();
    fx.pump("ping", |r, _| r.len(a) == 4);
    fx.send(a, vec![Bytes::from_static(b"pong")]);
    fx.pump("sent", |r, _| r.sent_count(a) == 1);
    assert_eq!(read_n(&client, 4), b"pong");
    close_promptly(&mut fx, a);
    fx.assert_reaped();
    // The peer writes on; the recorder fails the test on any report for `a`.
    client.write_all(b"anyone?").unwrap();
    fx.settle(Duration::from_millis(50));
    assert_eq!(fx.rec.of(a).last(), Some(&Ev::Closed(a)));
    // The backend shut nothing down: the peer sees the end only when the loop drops the socket.
    assert_eq!(
        read_within(&client, Duration::from_millis(100)).unwrap(),
        None
    );
    fx.drop_socket(a);
    match read_within(&client, Duration::from_secs(5)) {
        Ok(Some(0)) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {} // the unread "anyone?"
        other => panic!("the socket is still open after the loop dropped it: {other:?}"),
    }
}

/// A send that cannot finish (32 MiB to a peer that does not read) is abandoned by `close`:
/// `closed` comes within a second, without `sent` or `failed`.
pub(crate) fn close_during_a_send_in_flight<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let a = Id::new(2, 2);
    let _client = fx.tcp_pair(a);
    fx.send(a, vec![Bytes::from(vec![7u8; 32 << 20])]);
    fx.settle(Duration::from_millis(50));
    assert!(
        fx.rec.sending(a),
        "32 MiB sent to a peer that reads nothing"
    );
    close_promptly(&mut fx, a);
    fx.settle(Duration::from_millis(50));
    assert_eq!(fx.rec.of(a), [Ev::Closed(a)]);
    fx.assert_reaped();
}

/// A send handed in just before `close` is abandoned too, even one the kernel took at once:
/// no `sent` is reported after `close`.
pub(crate) fn close_right_after_a_send<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let a = Id::new(3, 3);
    let _client = fx.tcp_pair(a);
    fx.send(a, vec![Bytes::from_static(b"quick")]);
    close_promptly(&mut fx, a);
    assert_eq!(fx.rec.of(a), [Ev::Closed(a)]);
    fx.assert_reaped();
}

/// `close` after `eof` (and a send after it).
pub(crate) fn close_after_eof<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let a = Id::new(4, 8);
    let mut client = fx.tcp_pair(a);
    client.write_all(b"x").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    fx.pump("eof", |r, _| r.ended(a));
    fx.send(a, vec![Bytes::from_static(b"reply")]);
    fx.pump("sent", |r, _| r.sent_count(a) == 1);
    fx.settle(Duration::from_millis(20));
    close_promptly(&mut fx, a);
    assert_eq!(
        fx.rec.of(a),
        [
            Ev::Received(a, 1),
            Ev::Eof(a),
            Ev::Sent(a, 5),
            Ev::Closed(a)
        ]
    );
    fx.assert_reaped();
    fx.drop_socket(a);
    assert_eq!(read_n(&client, 5), b"reply");
}

/// `close` after `failed` (the peer reset the connection).
#[cfg(unix)]
pub(crate) fn close_after_failed<B: Backend>() {
    use std::os::fd::AsFd;
    let mut fx = Fixture::<B>::new();
    let a = Id::new(6, 6);
    let client = fx.tcp_pair(a);
    super::peer::reset_on_close(client.as_fd());
    drop(client);
    fx.pump("failed", |r, _| r.has_failed(a));
    fx.settle(Duration::from_millis(20));
    close_promptly(&mut fx, a);
    assert_eq!(
        fx.rec.of(a),
        [Ev::Failed(a, ErrorKind::ConnectionReset), Ev::Closed(a)]
    );
    fx.assert_reaped();
}

/// Twenty connections closed at once in five states (idle, bytes arriving, a send in flight,
/// after `eof`, after `failed`): each reported closed once, everything reaped.
#[cfg(unix)]
pub(crate) fn close_many_in_every_state<B: Backend>() {
    use std::os::fd::AsFd;
    let mut fx = Fixture::<B>::new();
    let ids: Vec<Id> = (0..20).map(|i| Id::new(i * 3, i as u32 + 1)).collect();
    let mut peers = Vec::new();
    let mut writers = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let mut client = fx.tcp_pair(id);
        match i % 5 {
            0 => client.write_all(b"hello").unwrap(),
            1 => {
                let w = client.try_clone().unwrap();
                writers.push(std::thread::spawn(move || {
                    let _ = (&w).write_all(&pattern(4 << 20, 1));
                }));
            }
            2 => {
                super::peer::set_sndbuf(fx.socket(id).as_fd(), 4096);
                super::peer::set_rcvbuf(client.as_fd(), 4096);
                fx.send(id, vec![Bytes::from(pattern(1 << 20, 2))]);
            }
            3 => client.shutdown(std::net::Shutdown::Write).unwrap(),
            _ => {
                super::peer::reset_on_close(client.as_fd());
                continue; // dropped: reset
            }
        }
        peers.push(client);
    }
    fx.pump("eofs, failures and bytes", |r, _| {
        ids.iter().enumerate().all(|(i, id)| match i % 5 {
            1 => r.len(*id) > 0,
            3 | 4 => r.ended(*id),
            0 => r.len(*id) == 5,
            _ => true,
        })
    });
    for &id in &ids {
        fx.close(id);
    }
    fx.pump("every connection closed", |r, _| {
        ids.iter().all(|id| r.is_closed(*id))
    });
    for &id in &ids {
        assert_eq!(fx.rec.times(&Ev::Closed(id)), 1);
        assert_eq!(
            fx.rec.sent_count(id),
            0,
            "{id}: a send that could not finish was sent"
        );
    }
    fx.settle(Duration::from_millis(50));
    fx.assert_reaped();
    for &id in &ids {
        fx.drop_socket(id);
    }
    drop(peers);
    for w in writers {
        w.join().unwrap();
    }
}

/// An index reused with a new generation gets nothing of its earlier occupant, which was
/// closed with bytes arriving and a send in flight, and whose peer goes on writing.
pub(crate) fn stale_id_gets_nothing_of_the_old<B: Backend>() {
    let config = crate::contract::Config {
        read_buffer_size: 1024,
        read_chunk: 1024,
        poll_read_budget: 4096,
        ring_buffers: 16,
        ..Default::default()
    };
    let mut fx = Fixture::<B>::open(config);
    let (old, new) = (Id::new(4, u32::MAX - 1), Id::new(4, u32::MAX));
    let mut old_peer = fx.tcp_pair(old);
    old_peer.write_all(&pattern(32 * 1024, 1)).unwrap();
    fx.pump("the old connection's first bytes", |r, _| r.len(old) > 0);
    fx.send(old, vec![Bytes::from(vec![1u8; 32 << 20])]);
    fx.close(old);
    fx.pump("closed(old)", |r, _| r.is_closed(old));

    // The loop may reuse the index now. It keeps the old socket a while here, so that the old
    // peer's bytes still reach it.
    let mut new_peer = fx.tcp_pair(new);
    old_peer.set_nonblocking(true).unwrap();
    let _ = old_peer.write(&pattern(64 * 1024, 2)); // what fits

    new_peer.write_all(b"new").unwrap();
    fx.send(new, vec![Bytes::from_static(b"to-new")]);
    fx.pump("the new connection's bytes and sent", |r, _| {
        r.len(new) >= 3 && r.sent_count(new) == 1
    });
    fx.settle(Duration::from_millis(100));
    assert_eq!(fx.rec.bytes(new), b"new");
    let reports = fx.rec.of(new);
    let unexpected = |e: &&Ev| !matches!(e, Ev::Received(..) | Ev::Sent(_, 6));
    assert_eq!(reports.iter().find(unexpected), None, "{reports:?}");
    assert_eq!(read_n(&new_peer, 6), b"to-new");
    assert_eq!(fx.rec.of(old).last(), Some(&Ev::Closed(old)));

    fx.drop_socket(old);
    fx.close_and_wait(new);
    fx.assert_reaped();
}
