//! Sending: a batch arrives in order and is one `sent` with its total, sends keep the order
//! they were handed in, a send larger than the socket buffers completes once the peer reads,
//! and a send to a reset peer is one `failed`.

use std::time::Duration;

use bytes::Bytes;

use super::peer::{pattern, read_n};
use super::{Ev, Fixture, Recorder};
use crate::contract::{Backend, Id};

/// `reclaim` hands back buffers of finished sends only: never ahead of their `sent`, never
/// more than were sent.
fn check_reclaims(rec: &Recorder) {
    let (mut sends, mut sent, mut reclaims) = (0, 0, 0);
    for e in &rec.events {
        match e {
            Ev::Sent(_, n) => (sends, sent) = (sends + 1, sent + n),
            Ev::Reclaimed(..) => reclaims += 1,
            _ => {}
        }
        assert!(
            reclaims <= sends,
            "a reclaim ahead of its sent: {}",
            rec.tail()
        );
    }
    assert!(
        rec.reclaimed().1 <= sent,
        "more reclaimed than sent: {}",
        rec.tail()
    );
}

/// A batch of several buffers: `sent` once with the total, the bytes in order; the send
/// completes without the poll after it blocking.
pub(crate) fn sends_a_batch_in_order<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let a = Id::new(1, 1);
    let client = fx.tcp_pair(a);
    let batch = ["hel", "lo", ", ", "wor", "ld"].map(|s| Bytes::from_static(s.as_bytes()));
    fx.send(a, batch.to_vec());
    let took = fx.poll_timed(None);
    assert!(
        took < Duration::from_secs(1),
        "the poll after a small send blocked {took:?}"
    );
    fx.pump("sent", |r, _| r.sent_count(a) == 1);
    assert_eq!(read_n(&client, 12), b"hello, world");
    fx.settle(Duration::from_millis(20));
    assert_eq!(fx.rec.sent_count(a), 1);
    assert_eq!(fx.rec.of(a), [Ev::Sent(a, 12)]);
    check_reclaims(&fx.rec);
    fx.close_and_wait(a);
    fx.assert_reaped();
}

/// Send after send (one in flight at a time), batches of one to five buffers: the peer gets
/// them in the order they were handed in.
pub(crate) fn sends_in_the_order_handed_in<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let a = Id::new(12, 40);
    let client = fx.tcp_pair(a);
    let mut expected = Vec::new();
    for round in 0..30 {
        let bufs: Vec<Bytes> = (0..1 + round % 5)
            .map(|k| Bytes::from(pattern(1 + 997 * k + 31 * round, round + k)))
            .collect();
        bufs.iter().for_each(|b| expected.extend_from_slice(b));
        fx.send(a, bufs);
        fx.pump("sent", |r, _| r.sent_count(a) == round + 1);
    }
    let got = read_n(&client, expected.len());
    assert!(got == expected, "bytes reordered or altered");
    assert_eq!(fx.rec.count(|e| matches!(e, Ev::Sent(..))), 30);
    check_reclaims(&fx.rec);
    fx.close_and_wait(a);
    fx.assert_reaped();
}

/// 1 MiB in 2,048 buffers (more than one `sendmsg` takes) through a send buffer of a few
/// KiB: not done while the peer does not read, then `sent` once with the total, every byte in
/// order.
#[cfg(unix)]
pub(crate) fn large_send_completes_when_the_peer_reads<B: Backend>() {
    use std::os::fd::AsFd;
    const CHUNK: usize = 512;
    const CHUNKS: usize = 2048;
    let mut fx = Fixture::<B>::new();
    let a = Id::new(6, 3);
    let client = fx.tcp_pair(a);
    super::peer::set_sndbuf(fx.socket(a).as_fd(), 4096);
    let bufs: Vec<Bytes> = (0..CHUNKS)
        .map(|i| Bytes::from(pattern(CHUNK, i)))
        .collect();
    let expected: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
    fx.send(a, bufs);
    fx.settle(Duration::from_millis(100));
    assert!(
        fx.rec.sending(a),
        "1 MiB fitted into socket buffers of a few KiB: {}",
        fx.rec.tail()
    );
    let reader = std::thread::spawn(move || (read_n(&client, CHUNK * CHUNKS), client));
    fx.pump("sent", |r, _| r.sent_count(a) == 1);
    let (got, _client) = reader.join().unwrap();
    assert!(got == expected, "bytes reordered or altered");
    fx.settle(Duration::from_millis(20));
    assert_eq!(fx.rec.of(a), [Ev::Sent(a, CHUNK * CHUNKS)]);
    check_reclaims(&fx.rec);
    fx.close_and_wait(a);
    fx.assert_reaped();
}

/// A send to a peer that reset the connection is one `failed`, and nothing else.
#[cfg(unix)]
pub(crate) fn send_to_a_reset_peer_fails_once<B: Backend>() {
    use std::os::fd::AsFd;
    let mut fx = Fixture::<B>::new();
    let a = Id::new(3, 3);
    let client = fx.tcp_pair(a);
    super::peer::reset_on_close(client.as_fd());
    drop(client);
    std::thread::sleep(Duration::from_millis(20));
    fx.send(a, vec![Bytes::from_static(b"into the void")]);
    fx.pump("failed", |r, _| r.has_failed(a));
    fx.settle(Duration::from_millis(50));
    let events = fx.rec.of(a);
    assert!(matches!(events[..], [Ev::Failed(..)]), "{events:?}");
    fx.close_and_wait(a);
    fx.assert_reaped();
}
