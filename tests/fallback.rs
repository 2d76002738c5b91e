//! io_uring forbidden for real: in a child process whose seccomp filter makes `io_uring_setup`
//! fail with `EPERM`, `Auto` must serve on epoll and say why, and an explicit `uring` request
//! must fail with an error that names the reason.
#![cfg(all(target_os = "linux", feature = "uring", feature = "epoll"))]

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
