//! Heavier tests of the io_uring backend: large payloads, buffer-ring exhaustion, many
//! connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;

use super::tests::{assert_whole, config, connect, listen, open, pump, run_in_child, Ev, Rec};
use crate::contract::{Backend, Config, Id};

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i + seed) % 251) as u8).collect()
}

#[test]
fn uring_one_mib_whole_both_ways() {
    const MIB: usize = 1 << 20;
    let mut u = open(&config(32, 16 * 1024));
    let mut rec = Rec::default();
    let (_l, addr) = listen(&mut u);
    let (client, id, sock) = connect(&mut u, &mut rec, addr, 0);
    let t = std::thread::spawn(move || {
        let mut client = client;
        client.write_all(&pattern(MIB, 0)).unwrap();
        let mut back = vec![0u8; 2 * MIB];
        client.read_exact(&mut back).unwrap();
        back
    });
    pump(&mut u, &mut rec, "1 MiB", |_, r| r.len(id) == MIB);
    let got = Bytes::from(rec.data.remove(&id).unwrap());
    assert!(got[..] == pattern(MIB, 0)[..], "received bytes differ");
    // One buffer (SEND, resubmitted on short sends) ...
    u.send(id, vec![got.clone()]);
    pump(&mut u, &mut rec, "sent 1", |_, r| {
        r.count(|e| matches!(e, Ev::Sent(_, MIB))) == 1
    });
    // ... then sixteen (SENDMSG with an iovec array).
    u.send(
        id,
        (0..16)
            .map(|i| got.slice(i * MIB / 16..(i + 1) * MIB / 16))
            .collect(),
    );
    pump(&mut u, &mut rec, "sent 2", |_, r| {
        r.count(|e| matches!(e, Ev::Sent(_, MIB))) == 2
    });
    let back = t.join().unwrap();
    assert!(
        back[..MIB] == got[..] && back[MIB..] == got[..],
        "echoed bytes differ"
    );
    u.close(id);
    pump(&mut u, &mut rec, "closed", |_, r| r.is_closed(id));
    drop(sock);
    assert_eq!(rec.failures(), 0);
    assert_whole(&u);
}

#[test]
fn uring_more_traffic_than_buffers_is_backpressure() {
    const CONNS: usize = 50;
    const EACH: usize = 256 * 1024;
    // A small submission queue too: re-arming 50 receives at once overflows it, which
    // exercises submitting from inside `push`.
    let mut u = open(&Config {
        ring_entries: 16,
        ..config(8, 4096)
    });
    let mut rec = Rec::default();
    let (_l, addr) = listen(&mut u);
    let (clients, servers) = connect_many(&mut u, &mut rec, addr, CONNS);
    let writers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                c.write_all(&pattern(EACH, 0)).unwrap();
                c
            })
        })
        .collect();
    pump(&mut u, &mut rec, "all bytes", |_, r| {
        servers.iter().all(|(id, _)| r.len(*id) == EACH)
    });
    assert_eq!(rec.failures(), 0);
    assert_eq!(rec.count(|e| matches!(e, Ev::Eof(_) | Ev::Closed(_))), 0);
    let expect = pattern(EACH, 0);
    for (id, _) in &servers {
        assert!(rec.data[id] == expect, "bytes of {id:?} lost or reordered");
    }
    assert!(
        u.nobufs > 0,
        "the ring never ran empty: the test did not exercise ENOBUFS"
    );
    eprintln!("ENOBUFS backpressure events: {}", u.nobufs);
    // Each receive here is a bundle of several buffers, so starved connections are re-armed
    // one per receive's worth of buffers, not one per buffer: about one ENOBUFS per receive
    // (~400). Re-arming one per free buffer, and again each round before the kernel saw the
    // previous re-arms, gave 2,200-3,000.
    let buffers_of_data = (CONNS * EACH / 4096) as u64;
    assert!(
        u.nobufs <= buffers_of_data / 2,
        "{} ENOBUFS for {buffers_of_data} buffers of data: re-arms outrun the buffers",
        u.nobufs
    );
    close_all(&mut u, &mut rec, &servers, writers);
    assert_eq!(u.stats().conns, 0);
}

/// Many connections, a ring of 8 buffers: each starved connection is re-armed only when a
/// buffer is free for it, so the `ENOBUFS` count stays near one per connection. Re-arming
/// every starved connection whenever any buffer came back made it grow with the square of
/// the connection count (4,503 here before the change), each failure a wasted receive and
/// submission.
#[test]
fn uring_starved_connections_rearm_as_buffers_allow() {
    const CONNS: usize = 300;
    let mut u = open(&config(8, 4096));
    let mut rec = Rec::default();
    let (_l, addr) = listen(&mut u);
    let (mut clients, ids) = connect_many(&mut u, &mut rec, addr, CONNS);
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&pattern(64, i)).unwrap();
    }
    pump(&mut u, &mut rec, "every connection's bytes", |_, r| {
        ids.iter().all(|(id, _)| r.len(*id) == 64)
    });
    for (i, (id, _)) in ids.iter().enumerate() {
        assert!(rec.data[id] == pattern(64, i), "bytes of {id:?} differ");
    }
    assert_eq!(rec.failures(), 0);
    assert!(
        u.nobufs > 0,
        "the ring never ran empty: ENOBUFS not exercised"
    );
    assert!(
        u.nobufs <= 2 * CONNS as u64,
        "{} ENOBUFS for {CONNS} connections: starved receives re-armed without buffers",
        u.nobufs
    );
    for (id, _) in &ids {
        u.close(*id);
    }
    pump(&mut u, &mut rec, "all closed", |_, r| {
        r.count(|e| matches!(e, Ev::Closed(_))) == CONNS
    });
    drop(clients);
    assert_whole(&u);
}

/// Connections parked on an empty ring are re-armed a few at a time, and one with nothing to
/// read completes nothing once re-armed: the connections parked behind it must be re-armed
/// all the same. Here every receive but the first stream's finds the ring empty at once; the
/// connection parked last has bytes waiting behind six idle ones.
#[test]
fn uring_idle_parked_connections_hold_up_no_one() {
    use crate::conformance::{peer, Fixture};
    let mut fx = Fixture::<super::Uring>::open(config(8, 4096));
    let mut streams = Vec::new();
    for i in 0..2 {
        let id = Id::new(i, 1);
        let mut client = fx.tcp_pair(id);
        client.write_all(&peer::pattern(64 * 1024, i)).unwrap();
        streams.push((id, client));
    }
    let idle: Vec<_> = (2..8)
        .map(|i| (Id::new(i, 1), fx.tcp_pair(Id::new(i, 1))))
        .collect();
    let last = Id::new(8, 1);
    let mut client = fx.tcp_pair(last);
    client.write_all(b"hello").unwrap();
    fx.pump("the bytes of the connection parked last", |r, _| {
        r.len(last) == 5
    });
    fx.pump("both streams", |r, _| {
        streams.iter().all(|(id, _)| r.len(*id) == 64 * 1024)
    });
    assert!(
        fx.backend.nobufs > 0,
        "the ring never ran empty: nothing was parked"
    );
    for id in streams.iter().chain(&idle).map(|(id, _)| *id).chain([last]) {
        fx.close_and_wait(id);
    }
    fx.assert_reaped();
}

/// A few connections streaming large payloads: every byte arrives, and every receive
/// completion reaches the sink as one slice, however often the bundles go round the end of the
/// buffer area (the area is mapped twice in a row, so the end is no seam).
#[test]
fn uring_streamed_bundles_arrive_as_one_slice_each() {
    const CONNS: usize = 4;
    const EACH: usize = 8 << 20;
    let mut u = open(&config(256, 64 * 1024));
    let mut rec = Rec::default();
    let (_l, addr) = listen(&mut u);
    let mut servers = Vec::new();
    let mut writers = Vec::new();
    for i in 0..CONNS {
        let (c, id, s) = connect(&mut u, &mut rec, addr, i);
        servers.push((id, s));
        writers.push(std::thread::spawn(move || {
            let mut c = c;
            let data = pattern(EACH, i);
            for chunk in data.chunks(256 * 1024) {
                c.write_all(chunk).unwrap();
            }
            c
        }));
    }
    pump(&mut u, &mut rec, "all bytes", |_, r| {
        servers.iter().all(|(id, _)| r.len(*id) == EACH)
    });
    for (i, (id, _)) in servers.iter().enumerate() {
        assert!(rec.data[id] == pattern(EACH, i), "bytes of {id:?} differ");
    }
    assert_eq!(rec.failures(), 0);
    eprintln!(
        "window {}, ENOBUFS {}, split completions {}, bundles {}",
        u.bufs.window(),
        u.nobufs,
        u.bufs.splits(),
        u.recv_bundles()
    );
    if u.recv_bundles() {
        assert!(u.bufs.mirrored(), "the buffer area is not mirrored here");
    }
    assert_eq!(u.bufs.splits(), 0, "completions delivered as two slices");
    close_all(&mut u, &mut rec, &servers, writers);
}

/// Opens `n` connections to `addr` and adds their server sides to the backend.
fn connect_many(
    u: &mut super::Uring,
    rec: &mut Rec,
    addr: std::net::SocketAddr,
    n: usize,
) -> (Vec<TcpStream>, Vec<(Id, crate::socket::Socket)>) {
    (0..n)
        .map(|i| {
            let (c, id, s) = connect(u, rec, addr, i);
            (c, (id, s))
        })
        .unzip()
}

/// Joins the writer threads, closes every server side, waits until all are reported closed
/// and checks that every buffer is back in the ring.
fn close_all(
    u: &mut super::Uring,
    rec: &mut Rec,
    servers: &[(Id, crate::socket::Socket)],
    writers: Vec<std::thread::JoinHandle<TcpStream>>,
) {
    let clients: Vec<TcpStream> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for (id, _) in servers {
        u.close(*id);
    }
    pump(u, rec, "all closed", |_, r| {
        r.count(|e| matches!(e, Ev::Closed(_))) == servers.len()
    });
    drop(clients);
    assert_whole(u);
}

fn small_sndbuf(s: &crate::socket::Socket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 16 * 1024;
    // SAFETY: a valid socket descriptor, a pointer to a live c_int and its exact length.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn uring_open_close_2000_connections_leaks_nothing() {
    // The descriptor count is per process: run alone, away from the other tests' sockets.
    let name = concat!(
        module_path!(),
        "::uring_open_close_2000_connections_leaks_nothing"
    );
    if run_in_child(name.split_once("::").map_or(name, |(_, rest)| rest)).is_some() {
        return;
    }
    const BATCH: usize = 100;
    const ROUNDS: usize = 20;
    let mut u = open(&config(64, 4096));
    let mut rec = Rec::default();
    let (_l, addr) = listen(&mut u);
    for _ in 0..3 {
        u.poll(Some(Duration::from_millis(1)), &mut rec).unwrap();
    }
    let fds_before = open_fds();
    let big = Bytes::from(vec![7u8; 512 * 1024]);
    let mut next = 0u32;
    for round in 0..ROUNDS {
        let mut conns = Vec::new();
        for i in 0..BATCH {
            let mut c = TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                c.write_all(&[1u8; 1000]).unwrap();
            }
            conns.push(c);
        }
        pump(&mut u, &mut rec, "accepts", |_, r| {
            r.accepted.len() == BATCH
        });
        let mut servers = Vec::new();
        for (i, (_, s, _)) in rec.accepted.drain(..).enumerate() {
            next = next.wrapping_add(1);
            let id = Id::new(i, next);
            u.add_conn(id, &s).unwrap();
            if i % 4 == 0 {
                // Much larger than the (shrunk) socket buffers: still in flight at close.
                small_sndbuf(&s);
                u.send(id, vec![big.clone()]);
            }
            servers.push((id, s));
        }
        for _ in 0..2 {
            u.poll(Some(Duration::from_millis(1)), &mut rec).unwrap();
        }
        for (id, _) in &servers {
            u.close(*id);
        }
        pump(&mut u, &mut rec, "closed", |_, r| {
            r.count(|e| matches!(e, Ev::Closed(_))) == (round + 1) * BATCH
        });
        drop(servers);
        drop(conns);
    }
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
    let s = u.stats();
    assert_eq!((s.conns, s.ops_in_flight), (0, 2), "{s:?}");
    assert_whole(&u);
    assert_eq!(rec.count(|e| matches!(e, Ev::Sent(..))), 0);
}
