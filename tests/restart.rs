//! A server killed outright (`SIGKILL`, nothing of it runs) must leave its port free for an
//! immediate restart, on every backend: 10 rounds out of 10, each with connections open.
//!
//! io_uring used to keep the port for 5-17 ms after the process was gone: its armed accept
//! held a reference to the listening socket until the kernel tore the ring down, which it
//! does asynchronously. It now accepts through an epoll instance, which holds none.
#![cfg(target_os = "linux")]

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use gnet::BackendKind;
use util::child::{self, Child};

const ROUNDS: usize = 10;
const CONNS: usize = 300;
const PORT: &str = "GNET_TEST_PORT";

/// The child: serves on the given port until killed.
fn serve_until_killed(kind: BackendKind) {
    let port = std::env::var(PORT).expect("the port to serve on");
    let addr = format!("tcp://127.0.0.1:{port}");
    let _server = util::Server::start(util::PlainEcho, &[&addr], util::opts(kind));
    println!("READY");
    // Blocks until the parent kills the process.
    let _ = std::io::stdin().read_line(&mut String::new());
}

/// A listener the way a restarted server binds it (`SO_REUSEADDR`, as gnet does by default).
fn bind_again(addr: SocketAddr) -> std::io::Result<()> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(128)
}

fn killed_server_frees_its_port_at_once(kind: BackendKind) {
    if child::role().as_deref() == Some("killed") {
        return serve_until_killed(kind);
    }
    let port = child::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let name = child::test_name(kind, "killed_server_frees_its_port_at_once");
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let mut c = Child::spawn(&name, "killed", &[(PORT, port.to_string())]);
        c.expect_line("READY", util::WAIT_TIMEOUT);
        let mut conns: Vec<TcpStream> = (0..CONNS)
            .map(|_| TcpStream::connect_timeout(&addr, util::IO_TIMEOUT).expect("connect"))
            .collect();
        for s in &mut conns {
            s.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
            s.write_all(b"up?").unwrap();
            let mut b = [0u8; 3];
            s.read_exact(&mut b).expect("echo before the kill");
        }
        let status = c.kill();
        assert!(!status.success(), "the child was killed");
        if let Err(e) = bind_again(addr) {
            failures.push(format!("round {round}: {e}"));
        }
        drop(conns);
        // Whatever happened, the next round needs the port: let the kernel finish.
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        failures.is_empty(),
        "{kind}: the port was still taken right after the kill in {} of {ROUNDS} rounds: {failures:?}",
        failures.len()
    );
}

per_backend!(killed_server_frees_its_port_at_once);
