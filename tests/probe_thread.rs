//! Starting an engine leaves nothing behind on the caller's thread: choosing the backend opens
//! and closes io_uring rings, whose teardown runs as task work of the thread that made them
//! and interrupted that thread's next blocking call (a `recv` with a timeout failed with
//! `EINTR`). The probe now runs on a thread of its own.
#![cfg(gnet_uring)]

mod util;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

#[test]
fn a_blocking_call_after_start_is_not_interrupted() {
    for round in 0..5 {
        let server = util::Server::start(
            util::PlainEcho,
            &[util::TCP],
            util::opts(gnet::BackendKind::Uring),
        );
        // Nothing will arrive: the call must wait out its timeout, not return early.
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let start = Instant::now();
        let e = s.recv_from(&mut [0u8; 8]).expect_err("nothing was sent");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "round {round}: recv returned {e} after {:?}",
            start.elapsed()
        );
        server.stop().expect("engine result");
    }
}
