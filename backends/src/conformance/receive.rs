//! Receiving: every byte in order, what arrived before `add_conn`, slice sizes, then at most one
//! of `eof` or `failed`, and `Flow::Pause` until `resume`.

use std::io::Write;
use std::net::{Shutdown, TcpListener};
use std::thread;
use std::time::Duration;

use super::peer::{pattern, tcp_client, write_in_pieces};
use super::{Ev, Fixture};
use crate::contract::{Backend, Config, Flow, Id};
use crate::socket::Socket;

/// A small receive buffer and ring, so that a few MiB go round them many times.
fn small_buffers() -> Config {
    Config {
        read_buffer_size: 4096,
        ring_buffers: 16,
        ..Config::default()
    }
}

const STREAM: usize = 3 << 20;

/// Streams [`STREAM`] bytes into each of `conns` at once from peer threads, in random-sized
/// writes, and checks that each connection received them byte for byte, in order. Closes the
/// connections after.
fn stream_into<B: Backend, W: Write + Send + 'static>(fx: &mut Fixture<B>, conns: Vec<(Id, W)>) {
    let ids: Vec<Id> = conns.iter().map(|(id, _)| *id).collect();
    let writers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, (_, w))| {
            thread::spawn(move || write_in_pieces(w, &pattern(STREAM, i), 64 * 1024, i as u64))
        })
        .collect();
    fx.pump("every byte of every stream", |r, _| {
        ids.iter().all(|id| r.len(*id) >= STREAM)
    });
    for w in writers {
        w.join().expect("writer");
    }
    for (i, id) in ids.iter().enumerate() {
        let got = fx.rec.take_bytes(*id);
        assert_eq!(got.len(), STREAM, "{id}: more bytes than were sent");
        let first_bad = got
            .iter()
            .zip(pattern(STREAM, i))
            .position(|(a, b)| *a != b);
        assert_eq!(
            first_bad, None,
            "{id}: bytes differ from offset {first_bad:?}"
        );
    }
    // A connection with nothing to read holds no receive buffer.
    fx.assert_holding_no_buffer(ids.len());
    for id in ids {
        fx.close_and_wait(id);
    }
    fx.assert_reaped();
}

/// Two TCP connections streaming at once in random-sized writes.
pub(crate) fn receives_tcp_in_order<B: Backend>() {
    let mut fx = Fixture::<B>::open(small_buffers());
    let (a, b) = (Id::new(3, 1), Id::new(1000, 2));
    let conns = vec![(a, fx.tcp_pair(a)), (b, fx.tcp_pair(b))];
    stream_into(&mut fx, conns);
}

/// Two Unix stream connections streaming at once in random-sized writes.
#[cfg(unix)]
pub(crate) fn receives_unix_in_order<B: Backend>() {
    let mut fx = Fixture::<B>::open(small_buffers());
    let (a, b) = (Id::new(0, 5), Id::new(7, 9));
    let conns = vec![(a, fx.unix_pair(a)), (b, fx.unix_pair(b))];
    stream_into(&mut fx, conns);
}

/// Bytes and the end of stream that were waiting in the socket before `add_conn` are
/// reported like any others.
pub(crate) fn receives_what_arrived_before_add_conn<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = tcp_client(l.local_addr().unwrap());
    let (server, _) = l.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    client.write_all(b"early").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    thread::sleep(Duration::from_millis(20));
    let a = Id::new(2, 2);
    fx.add(a, Socket::Tcp(server));
    fx.pump("eof", |r, _| r.ended(a));
    assert_eq!(fx.rec.bytes(a), b"early");
    assert_eq!(fx.rec.of(a).last(), Some(&Ev::Eof(a)));
    fx.close_and_wait(a);
    fx.assert_reaped();
}

/// No slice is larger than `read_buffer_size` (receive bundles of io_uring, the contract's
/// one exception, are off).
pub(crate) fn slices_fit_the_read_buffer<B: Backend>() {
    const N: usize = 300_000;
    let config = Config {
        read_buffer_size: 1000,
        recv_bundles: false,
        ..Config::default()
    };
    let mut fx = Fixture::<B>::open(config);
    let a = Id::new(1, 1);
    let client = fx.tcp_pair(a);
    let writer = thread::spawn(move || write_in_pieces(&client, &pattern(N, 3), 50_000, 3));
    fx.pump("every byte", |r, _| r.len(a) == N);
    writer.join().unwrap();
    assert!(fx.rec.bytes(a) == pattern(N, 3), "bytes differ");
    assert!(
        fx.rec.largest_slice() <= 1000,
        "a slice of {}",
        fx.rec.largest_slice()
    );
    fx.close_and_wait(a);
    fx.assert_reaped();
}

/// `eof` comes after every byte, once, and is the last report of the receiving side; sending
/// still works after it.
pub(crate) fn eof_after_all_data<B: Backend>() {
    let mut fx = Fixture::<B>::new();
    let a = Id::new(2, 9);
    let mut client = fx.tcp_pair(a);
    client.write_all(b"last ").unwrap();
    client.write_all(b"words").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    fx.pump("eof", |r, _| r.ended(a));
    assert_eq!(fx.rec.bytes(a), b"last words");
    fx.settle(Duration::from_millis(50));
    let events = fx.rec.of(a);
    assert_eq!(events.last(), Some(&Ev::Eof(a)), "{events:?}");
    assert_eq!(fx.rec.times(&Ev::Eof(a)), 1);
    assert!(!fx.rec.has_failed(a));

    fx.send(a, vec![bytes::Bytes::from_static(b"bye")]);
    fx.pump("sent after eof", |r, _| r.sent_count(a) == 1);
    assert_eq!(super::peer::read_n(&client, 3), b"bye");
    fx.close_and_wait(a);
    fx.assert_reaped();
}

/// A reset by the peer is one `failed` (connection reset) and no `eof`.
#[cfg(unix)]
pub(crate) fn reset_is_one_failed<B: Backend>() {
    use std::os::fd::AsFd;
    let mut fx = Fixture::<B>::new();
    let a = Id::new(8, 1);
    let client = fx.tcp_pair(a);
    super::peer::reset_on_close(client.as_fd());
    drop(client);
    fx.pump("failed", |r, _| r.ended(a));
    fx.settle(Duration::from_millis(50));
    assert_eq!(
        fx.rec.of(a),
        [Ev::Failed(a, std::io::ErrorKind::ConnectionReset)]
    );
    fx.close_and_wait(a);
    fx.assert_reaped();
}

/// After `Flow::Pause` a backend delivers at most what it had already taken from the kernel,
/// then nothing however long the pause lasts, holding no buffer and no receive; after `resume`
/// everything arrives, in order.
pub(crate) fn pause_stops_receiving_until_resume<B: Backend>() {
    const N: usize = 4 << 20;
    let config = small_buffers();
    // What a backend can have taken from the kernel and not delivered: its ring's area on
    // io_uring, two chunks ahead on stdnet, nothing on epoll.
    let allowance = config.read_buffer_size * usize::from(config.ring_buffers);
    let mut fx = Fixture::<B>::open(config);
    let a = Id::new(5, 2);
    let client = fx.tcp_pair(a);
    fx.rec.answer = Flow::Pause;
    let writer = thread::spawn(move || write_in_pieces(&client, &pattern(N, 5), 64 * 1024, 5));
    fx.pump("the first bytes", |r, _| r.len(a) > 0);
    let first = fx.rec.slices(a)[0];
    fx.settle(Duration::from_millis(200));
    let paused = fx.rec.len(a);
    assert!(
        paused <= first + allowance,
        "{paused} bytes delivered after a pause at {first} (allowed {allowance} more)"
    );
    fx.settle(Duration::from_millis(200));
    assert_eq!(fx.rec.len(a), paused, "bytes read while paused");
    fx.assert_quiet(1);

    fx.rec.answer = Flow::Continue;
    fx.backend.resume(a);
    // The bytes wait in the socket: the poll after `resume` must not block.
    let took = fx.poll_timed(None);
    assert!(
        took < Duration::from_secs(1),
        "the poll after resume blocked {took:?}"
    );
    fx.pump("every byte after resume", |r, _| r.len(a) == N);
    writer.join().unwrap();
    assert!(fx.rec.bytes(a) == pattern(N, 5), "bytes lost or reordered");
    fx.close_and_wait(a);
    fx.assert_reaped();
}
