//! io_uring forbidden for real: in a child process whose seccomp filter makes `io_uring_setup`
//! fail with `EPERM`, `Auto` must serve on epoll and say why, and an explicit `uring` request
//! must fail with an error that names the reason.
#![cfg(all(target_os = "linux", feature = "uring", feature = "epoll"))]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

mod util;

use gnet::{BackendChoice, BackendKind, Error, ListenAddr, Options};
use util::PlainEcho;

const CHILD: &str = "GNET_FALLBACK_CHILD";

fn run_child(test: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("spawn the child test process");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    text
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_is_denied() {
    if std::env::var_os(CHILD).is_none() {
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
    if std::env::var_os(CHILD).is_none() {
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
    if std::env::var_os(CHILD).is_none() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "gnet_backend_env_overrides_the_choice",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("GNET_BACKEND", "stdnet")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{text}");
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
