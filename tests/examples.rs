//! The examples against each other, on every backend, as a user runs them: `client` checks
//! every reply of many messages over many connections, through `proxy` to `echo` (TCP), to
//! `udp_echo` (UDP datagrams) and to `unix_echo` (a Unix socket), and exits 0; `codec
//! --client` checks every reply of the `codec` server (a length-field protocol).
#![cfg(target_os = "linux")]

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gnet::BackendKind;
use util::child::example_binary;

/// A server example running as a child, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts example `name` and waits for its first line, which must name the backend; returns
/// it with the address it printed.
fn start(name: &str, kind: BackendKind, args: &[&str]) -> (Server, String) {
    let mut child = Command::new(example_binary(name))
        .args(["--backend", kind.name()])
        .args(args)
        .env_remove("GNET_BACKEND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let out = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("the first line");
    let want = format!("gnet {name}: backend={kind} addr=");
    assert!(line.starts_with(&want), "{name} printed {line:?}");
    let addr = line[want.len()..]
        .split_whitespace()
        .next()
        .expect("an address")
        .to_string();
    (Server(child), addr)
}

/// Runs the `client` example to its end against `addr`; it must check everything and exit 0.
fn client(kind: BackendKind, addr: &str, conns: &str, msgs: &str, size: &str) {
    let start = Instant::now();
    let out = Command::new(example_binary("client"))
        .args(["--backend", kind.name(), "--addr", addr])
        .args([
            "--conns",
            conns,
            "--msgs",
            msgs,
            "--size",
            size,
            "--timeout",
            "30",
        ])
        .env_remove("GNET_BACKEND")
        .output()
        .expect("run the client example");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{kind}: client against {addr} failed:\n{text}"
    );
    assert!(text.contains("checked in"), "{kind}: {text}");
    assert!(start.elapsed() < Duration::from_secs(60));
}

fn client_through_proxy_to_echo(kind: BackendKind) {
    let (_echo, echo_addr) = start("echo", kind, &["--addr", "tcp://127.0.0.1:0"]);
    let (_proxy, proxy_addr) = start(
        "proxy",
        kind,
        &[
            "--addr",
            "tcp://127.0.0.1:0",
            "--upstream",
            &echo_addr,
            "--loops",
            "2",
        ],
    );
    client(kind, &echo_addr, "20", "200", "512");
    client(kind, &proxy_addr, "20", "200", "4096");
}

fn client_to_udp_echo(kind: BackendKind) {
    let (_udp, addr) = start(
        "udp_echo",
        kind,
        &["--addr", "udp://127.0.0.1:0", "--loops", "2"],
    );
    client(kind, &addr, "10", "200", "1200");
}

fn client_to_unix_echo(kind: BackendKind) {
    let path = util::unix_addr();
    let (_unix, addr) = start("unix_echo", kind, &["--addr", &path]);
    assert_eq!(addr, path);
    client(kind, &addr, "10", "200", "700");
}

fn codec_client_to_codec_server(kind: BackendKind) {
    let (_server, addr) = start(
        "codec",
        kind,
        &["--addr", "tcp://127.0.0.1:0", "--loops", "2"],
    );
    let out = Command::new(example_binary("codec"))
        .args(["--client", "--backend", kind.name(), "--addr", &addr])
        .args([
            "--conns",
            "6",
            "--frames",
            "300",
            "--loops",
            "2",
            "--timeout",
            "30",
        ])
        .env_remove("GNET_BACKEND")
        .output()
        .expect("run the codec client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{kind}: codec --client failed:\n{text}"
    );
    let want = format!("gnet codec client: backend={kind} addr={addr}");
    assert!(text.starts_with(&want), "{kind}: first line of {text}");
    assert!(
        text.contains("1800 replies on 6 connections checked"),
        "{kind}: {text}"
    );
}

per_backend!(
    codec_client_to_codec_server,
    client_through_proxy_to_echo,
    client_to_udp_echo,
    client_to_unix_echo,
);
