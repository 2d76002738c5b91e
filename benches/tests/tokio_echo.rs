//! The tokio comparison server stops on SIGTERM too: clients that were answered see a FIN, it
//! exits with status 0, and a second SIGTERM while a client holds its stop back ends it.

#[path = "../../tests/util/process.rs"]
mod process;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use process::{send_signal, EchoProcess};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_LINE: &str = "tokio echo: backend=tokio ";

fn start(port: u16) -> EchoProcess {
    let args = ["--addr".to_string(), format!("127.0.0.1:{port}")];
    EchoProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_tokio_echo")),
        &args,
        FIRST_LINE,
    )
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to tokio_echo");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

#[test]
fn tokio_echo_stops_on_sigterm() {
    process::raise_nofile_limit(400);
    let port = free_port();
    let mut echo = start(port);
    let mut clients: Vec<TcpStream> = (0..100).map(|_| connect(port)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let msg: Vec<u8> = (0..100 + i).map(|k| (k * 7 + i) as u8).collect();
        c.write_all(&msg).unwrap();
        let mut back = vec![0; msg.len()];
        c.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg, "client {i}: the echo differs");
    }
    send_signal(&echo.child, libc::SIGTERM);
    let mut endings = Vec::new();
    for c in &mut clients {
        let mut buf = [0; 16];
        endings.push(c.read(&mut buf).map_err(|e| e.kind()));
    }
    let status = echo.wait_exit(process::WAIT_TIMEOUT);
    assert!(
        endings.iter().all(|e| *e == Ok(0)) && status.is_some_and(|s| s.code() == Some(0)),
        "tokio_echo after SIGTERM: reads {endings:?}, exit status {status:?}; stderr:\n{}",
        echo.stderr_text()
    );
}

#[test]
fn a_second_sigterm_ends_tokio_echo_at_once() {
    let port = free_port();
    let mut echo = start(port);
    // A client that writes and never reads, until its writes block: the server is then in
    // the middle of writing back, which holds a graceful stop.
    let mut stuck = connect(port);
    stuck
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let chunk = vec![9u8; 64 * 1024];
    let started = Instant::now();
    while stuck.write_all(&chunk).is_ok() {
        assert!(
            started.elapsed() < IO_TIMEOUT,
            "the client's writes never blocked"
        );
    }
    send_signal(&echo.child, libc::SIGTERM);
    echo.wait_stderr("stopping gracefully");
    assert_eq!(
        echo.wait_exit(Duration::from_millis(300)),
        None,
        "tokio_echo exited after one SIGTERM although a write was in progress"
    );
    send_signal(&echo.child, libc::SIGTERM);
    let status = echo.wait_exit(IO_TIMEOUT);
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(libc::SIGTERM),
        "tokio_echo after a second SIGTERM: {status:?}"
    );
}
