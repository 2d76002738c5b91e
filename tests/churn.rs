//! Opens and closes 10,000 connections (some mid-transfer, some reset) on every backend, then
//! checks that nothing leaked: no descriptor, no connection, no receive buffer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

mod util;

use gnet::{BackendChoice, BackendKind, ListenAddr, Options};
use util::{wait_until, PlainEcho};

/// The tests count the process's descriptors: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn churn(kind: BackendKind) {
    let _guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let opts = Options::new()
        .loops(2)
        .backend(BackendChoice::Only(kind))
        .honour_env(false)
        .ring_buffers(64);
    let running = gnet::start(PlainEcho, &["tcp://127.0.0.1:0"], opts)
        .expect("engine starts")
        .expect("not shut down in on_boot");
    let engine = running.engine().clone();
    assert_eq!(engine.backend(), kind);
    let ListenAddr::Tcp(addr) = engine.addrs()[0].clone() else {
        panic!("tcp address expected")
    };
    let before = open_fds();
    let total = 10_000;
    let batch = 500;
    let payload = vec![0x5au8; 256 * 1024];
    let mut done = 0;
    while done < total {
        let mut clients = Vec::with_capacity(batch);
        for i in 0..batch {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            match (done + i) % 10 {
                // Mid-transfer: a large write whose echo is never read.
                0 => {
                    s.set_nonblocking(true).unwrap();
                    let _ = s.write(&payload);
                }
                // A full round trip.
                1 => {
                    s.write_all(b"ping").unwrap();
                    let mut b = [0u8; 4];
                    s.read_exact(&mut b).unwrap();
                    assert_eq!(&b, b"ping");
                }
                // A reset with unread data on the server side.
                2 => {
                    s.write_all(b"abort").unwrap();
                    socket2::SockRef::from(&s)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                }
                _ => {}
            }
            clients.push(s);
        }
        drop(clients);
        done += batch;
    }
    wait_until("every connection to close", || {
        engine.count_connections() == 0
    });
    for s in engine.backend_stats() {
        assert_eq!(
            s.conns, 0,
            "{kind}: backend still tracks connections: {s:?}"
        );
        assert_eq!(
            s.buffers_free, s.buffers_total,
            "{kind}: receive buffers missing from the ring: {s:?}"
        );
    }
    wait_until("descriptors to return to the baseline", || {
        open_fds() <= before
    });
    assert_eq!(open_fds(), before, "{kind}: descriptors leaked");
    running.stop().expect("clean stop");
}

#[cfg(gnet_uring)]
#[test]
fn churn_10k_uring() {
    churn(BackendKind::Uring);
}

#[cfg(gnet_epoll)]
#[test]
fn churn_10k_epoll() {
    churn(BackendKind::Epoll);
}

#[cfg(gnet_kqueue)]
#[test]
fn churn_10k_kqueue() {
    churn(BackendKind::Kqueue);
}

#[cfg(gnet_stdnet)]
#[test]
fn churn_10k_stdnet() {
    churn(BackendKind::StdNet);
}
