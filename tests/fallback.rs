//! io_uring forbidden for real: in a child process whose seccomp filter makes `io_uring_setup`
//! fail with `EPERM`, `Auto` must serve on epoll and say why, and an explicit `uring` request
//! must fail with an error that names the reason.
#![cfg(all(gnet_uring, gnet_epoll))]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod util;

use gnet::{BackendChoice, BackendKind, Error, ListenAddr, Options};
use util::PlainEcho;

/// Whether this process is the child that runs a test's other half.
fn in_child() -> bool {
    util::child::role().is_some()
}

fn run_child(test: &str) -> String {
    util::child::run_to_end(test, "fallback", &[])
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_is_denied() {
    if !in_child() {
        let text = run_child("auto_falls_back_to_epoll_when_io_uring_is_denied");
        assert!(
            text.contains("CHILD-OK auto"),
            "child did not finish:\n{text}"
        );
        return;
    }
    gnet_backends::testing::deny_io_uring().expect("install the seccomp filter");
    let opts = Options::new().honour_env(false);
    let running = gnet::start(PlainEcho, &["tcp://127.0.0.1:0"], opts)
        .expect("Auto must still start")
        .expect("running");
    let engine = running.engine().clone();
    assert_eq!(engine.backend(), BackendKind::Epoll);
    let why = engine
        .fallback_reason()
        .expect("a fallback reason")
        .to_string();
    assert!(why.contains("EPERM"), "reason should name EPERM: {why}");
    let ListenAddr::Tcp(addr) = engine.addrs()[0].clone() else {
        panic!()
    };
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"still serving").unwrap();
    let mut b = [0u8; 13];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"still serving");
    running.stop().unwrap();
    println!("CHILD-OK auto: {why}");
}

#[test]
fn explicit_uring_fails_clearly_when_io_uring_is_denied() {
    if !in_child() {
        let text = run_child("explicit_uring_fails_clearly_when_io_uring_is_denied");
        assert!(
            text.contains("CHILD-OK explicit"),
            "child did not finish:\n{text}"
        );
        return;
    }
    gnet_backends::testing::deny_io_uring().expect("install the seccomp filter");
    let opts = Options::new()
        .honour_env(false)
        .backend(BackendChoice::Only(BackendKind::Uring));
    match gnet::start(PlainEcho, &["tcp://127.0.0.1:0"], opts) {
        Err(e @ Error::BackendUnavailable { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("uring") && msg.contains("EPERM"), "{msg}");
            println!("CHILD-OK explicit: {msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("uring must not start when io_uring is denied"),
    }
}

#[test]
fn gnet_backend_env_overrides_the_choice() {
    if !in_child() {
        let text = util::child::run_to_end(
            "gnet_backend_env_overrides_the_choice",
            "fallback",
            &[("GNET_BACKEND", "stdnet")],
        );
        assert!(text.contains("CHILD-OK env"), "{text}");
        return;
    }
    let running = gnet::start(PlainEcho, &["tcp://127.0.0.1:0"], Options::new())
        .unwrap()
        .unwrap();
    assert_eq!(running.engine().backend(), BackendKind::StdNet);
    running.stop().unwrap();
    println!("CHILD-OK env");
}

/// An io_uring without multishot `RECVMSG` still serves TCP, and an engine with a UDP address
/// falls back to epoll (saying why) instead of failing; an explicit `uring` with a UDP address
/// fails with that reason.
#[test]
fn a_missing_opcode_costs_one_feature_not_the_backend() {
    if !in_child() {
        let text = run_child("a_missing_opcode_costs_one_feature_not_the_backend");
        assert!(
            text.contains("CHILD-OK opcode"),
            "child did not finish:\n{text}"
        );
        return;
    }
    gnet_backends::testing::pretend_io_uring_lacks(&["RECVMSG"]);
    let auto = Options::new().honour_env(false);
    // TCP only: io_uring as usual.
    let tcp = gnet::start(PlainEcho, &["tcp://127.0.0.1:0"], auto.clone())
        .expect("a TCP engine starts")
        .expect("running");
    assert_eq!(tcp.engine().backend(), BackendKind::Uring);
    tcp.stop().unwrap();
    // With UDP: epoll, and the reason.
    let udp = gnet::start(PlainEcho, &["udp://127.0.0.1:0"], auto)
        .expect("a UDP engine starts")
        .expect("running");
    assert_eq!(udp.engine().backend(), BackendKind::Epoll);
    let why = udp
        .engine()
        .fallback_reason()
        .expect("a reason")
        .to_string();
    assert!(why.contains("RECVMSG") && why.contains("UDP"), "{why}");
    let ListenAddr::Udp(a) = udp.engine().addrs()[0].clone() else {
        panic!()
    };
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.send_to(b"still served", a).unwrap();
    let mut b = [0u8; 32];
    let (n, _) = c.recv_from(&mut b).unwrap();
    assert_eq!(&b[..n], b"still served");
    udp.stop().unwrap();
    // Explicitly io_uring with UDP: an error naming the reason.
    let only = Options::new()
        .honour_env(false)
        .backend(BackendChoice::Only(BackendKind::Uring));
    match gnet::start(PlainEcho, &["udp://127.0.0.1:0"], only) {
        Err(e @ Error::BackendUnavailable { .. }) => {
            assert!(e.to_string().contains("RECVMSG"), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("uring must not serve UDP without RECVMSG"),
    }
    println!("CHILD-OK opcode: {why}");
}
