//! Starting, checking and stopping the echo servers under test.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

pub const GNET_BACKENDS: [&str; 3] = ["uring", "epoll", "stdnet"];
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One server under test: tokio's baseline or gnet's echo on one backend.
#[derive(Clone)]
pub struct ServerSpec {
    /// `tokio`, `uring`, `epoll` or `stdnet`.
    pub name: String,
    pub binary: PathBuf,
    pub loops: usize,
    pub log_dir: PathBuf,
    /// Serve UDP (`udp://`) rather than TCP.
    pub udp: bool,
}

impl ServerSpec {
    /// `tcp` or `udp`.
    pub fn scheme(&self) -> &'static str {
        if self.udp {
            "udp"
        } else {
            "tcp"
        }
    }

    pub fn label(&self) -> String {
        if self.name == "tokio" {
            "tokio".to_string()
        } else {
            format!("gnet-{}", self.name)
        }
    }
}

pub struct Running {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub backend: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now (for UDP, a port no UDP socket is bound to).
fn free_port(ip: IpAddr, udp: bool) -> std::io::Result<u16> {
    if udp {
        return Ok(UdpSocket::bind((ip, 0))?.local_addr()?.port());
    }
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// The value of `key=` in a line such as `gnet echo: backend=epoll addr=tcp://127.0.0.1:9000`.
fn token<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

/// Prefixes `taskset -c CORE` when `core` is given.
pub fn pinned(core: Option<usize>, program: &Path) -> Command {
    match core {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Starts the server listening on `ip` (on `core` when given) and waits for its first
/// stdout line.
pub fn start(spec: &ServerSpec, core: Option<usize>, ip: IpAddr) -> Result<Running, String> {
    if !spec.binary.is_file() {
        return Err(format!("{} is not built", spec.binary.display()));
    }
    let port = free_port(ip, spec.udp).map_err(|e| format!("no free port on {ip}: {e}"))?;
    let log_path = spec.log_dir.join(format!("{}.stderr", spec.label()));
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut cmd = pinned(core, &spec.binary);
    cmd.arg("--addr")
        .arg(format!(
            "{}://{}",
            spec.scheme(),
            SocketAddr::from((ip, port))
        ))
        .arg("--loops")
        .arg(spec.loops.to_string());
    if spec.name != "tokio" {
        cmd.arg("--backend").arg(&spec.name);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.binary.display()))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep draining so that a chatty server never blocks on a full pipe.
        for _ in lines {}
    });
    let pid = child.id();
    let first = match rx.recv_timeout(START_TIMEOUT) {
        Ok(Some(Ok(line))) => line,
        _ => {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(format!(
                "no start-up line within {START_TIMEOUT:?} ({status}); stderr: {}",
                tail(&log_path)
            ));
        }
    };
    let running = |backend: &str, addr: SocketAddr| Running {
        child,
        pid,
        addr,
        backend: backend.to_string(),
    };
    let backend = token(&first, "backend").unwrap_or("?").to_string();
    let addr = token(&first, "addr")
        .map(|a| a.trim_start_matches("tcp://").trim_start_matches("udp://"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| SocketAddr::from((ip, port)));
    Ok(running(&backend, addr))
}

/// One blocking echo of 64 bytes, to prove the server serves.
fn echo_check(addr: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_secs(3);
    let mut last = String::new();
    for _ in 0..50 {
        let mut s = match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => s,
            Err(e) => {
                last = e.to_string();
                thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let _ = s.set_read_timeout(Some(timeout));
        let msg: Vec<u8> = (0..64u8).collect();
        s.write_all(&msg).map_err(|e| format!("write: {e}"))?;
        let mut back = vec![0; msg.len()];
        s.read_exact(&mut back)
            .map_err(|e| format!("no echo: {e}"))?;
        return if back == msg {
            Ok(())
        } else {
            Err("the echo differs from what was sent".into())
        };
    }
    Err(format!("cannot connect to {addr}: {last}"))
}

/// One datagram of 64 bytes echoed, retried a few times (a datagram may be lost).
fn echo_check_udp(addr: SocketAddr) -> Result<(), String> {
    let local = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
    sock.connect(addr).map_err(|e| format!("connect: {e}"))?;
    let _ = sock.set_read_timeout(Some(Duration::from_millis(300)));
    let msg: Vec<u8> = (0..64u8).collect();
    let mut back = [0; 128];
    let mut last = String::new();
    for _ in 0..10 {
        sock.send(&msg).map_err(|e| format!("send: {e}"))?;
        match sock.recv(&mut back) {
            Ok(n) if back[..n] == msg[..] => return Ok(()),
            Ok(n) => return Err(format!("the echo ({n} bytes) differs from what was sent")),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("no echo from udp://{addr}: {last}"))
}

/// Starts `spec` once and checks that it runs the backend it was asked for and echoes.
pub fn probe(spec: &ServerSpec) -> Result<(), String> {
    let server = start(spec, None, IpAddr::from([127, 0, 0, 1]))?;
    if server.backend != spec.name {
        return Err(format!(
            "asked for backend {}, the server reported backend={}",
            spec.name, server.backend
        ));
    }
    if spec.udp {
        echo_check_udp(server.addr)
    } else {
        echo_check(server.addr)
    }
}
