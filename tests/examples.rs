//! The examples against each other, on every backend, as a user runs them: `client` checks
//! every reply of many messages over many connections, through `proxy` to `echo` (TCP), to
//! `udp_echo` (UDP datagrams) and to `unix_echo` (a Unix socket), and exits 0; clients of
//! `push` get its ticks on every loop, `blocking` answers from its pool, `codec --client`
//! checks every reply of the `codec` server (a length-field protocol), and `chat` relays
//! lines between clients on several loops.
#![cfg(target_os = "linux")]

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use gnet::BackendKind;
use util::child::example_binary;

/// A server example running as a child, its stdout after the first line, killed when
/// dropped.
struct Server(Child, BufReader<ChildStdout>);

impl Server {
    /// SIGTERM: the example must stop gracefully, print that it shut down, and exit 0.
    fn stop_on_sigterm(mut self, name: &str) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid fits pid_t");
        // SAFETY: kill has no memory-safety obligations; the child has not been waited for,
        // so its pid names it still.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill {name}");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{name} still runs"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.1, &mut rest);
        assert!(status.success(), "{name} after SIGTERM: {status:?}");
        assert!(
            rest.contains(&format!("gnet {name}: shut down")),
            "{name} printed {rest:?}"
        );
    }
}

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
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the first line");
    let want = format!("gnet {name}: backend={kind} addr=");
    assert!(line.starts_with(&want), "{name} printed {line:?}");
    let addr = line[want.len()..]
        .split_whitespace()
        .next()
        .expect("an address")
        .to_string();
    (Server(child, out), addr)
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

/// A line client of a server example's `tcp://` address.
fn line_client(addr: &str) -> (TcpStream, BufReader<TcpStream>) {
    let a = addr.strip_prefix("tcp://").expect("a tcp address");
    let s = TcpStream::connect(a).unwrap_or_else(|e| panic!("connect {a}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn read_line_or_eof(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    match r.read_line(&mut line).expect("a line or the end") {
        0 => None,
        _ => Some(line),
    }
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("a line");
    assert!(line.ends_with('\n'), "a whole line: {line:?}");
    line
}

fn push_ticks_every_connection(kind: BackendKind) {
    let (push, addr) = start(
        "push",
        kind,
        &[
            "--addr",
            "tcp://127.0.0.1:0",
            "--loops",
            "2",
            "--interval",
            "20",
        ],
    );
    // Round robin: the connections are on both loops.
    let mut clients: Vec<_> = (0..4).map(|_| line_client(&addr)).collect();
    for (i, (_, r)) in clients.iter_mut().enumerate() {
        let mut last = None;
        for _ in 0..3 {
            let line = read_line(r);
            let n: u64 = line
                .strip_prefix("push ")
                .and_then(|n| n.trim_end().parse().ok())
                .unwrap_or_else(|| panic!("{kind}: client {i} got {line:?}"));
            assert!(last.map_or(true, |l| n > l), "{kind}: {n} after {last:?}");
            last = Some(n);
        }
    }
    push.stop_on_sigterm("push");
    for (_, r) in &mut clients {
        // Ticks until the stop, then the end of the stream.
        while read_line_or_eof(r).is_some() {}
    }
}

fn blocking_answers_from_its_pool(kind: BackendKind) {
    let (blocking, addr) = start(
        "blocking",
        kind,
        &[
            "--addr",
            "tcp://127.0.0.1:0",
            "--loops",
            "2",
            "--threads",
            "3",
            "--delay",
            "20",
        ],
    );
    let mut clients: Vec<_> = (0..3).map(|_| line_client(&addr)).collect();
    for (w, _) in &mut clients {
        // The last request in two writes: a partial line waits for its end.
        w.write_all(b"10\n1000\nxyz\n2").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        w.write_all(b"0\n").unwrap();
    }
    for (_, r) in &mut clients {
        let mut got: Vec<String> = (0..4).map(|_| read_line(r)).collect();
        // Answered as the pool finishes: in any order.
        got.sort();
        assert_eq!(
            got,
            [
                "1 10: 4 primes below 10\n",
                "2 1000: 168 primes below 1000\n",
                "3 xyz: not a number\n",
                "4 20: 8 primes below 20\n",
            ],
            "{kind}"
        );
    }
    blocking.stop_on_sigterm("blocking");
}

/// `chat` on two loops: nicknames, a message reaching every other client (on both loops) and
/// not its sender, `/who`, a line over the maximum closing only its sender (and telling the
/// others it left), `/quit`, then a graceful stop.
fn chat_broadcasts_to_the_others(kind: BackendKind) {
    let (chat, addr) = start(
        "chat",
        kind,
        &["--addr", "tcp://127.0.0.1:0", "--loops", "2"],
    );
    let names = ["ann", "bob", "cy", "dee"];
    let mut clients: Vec<_> = names.iter().map(|_| line_client(&addr)).collect();
    // A broadcast reaches a loop's connections at the loop's next iteration: a client that
    // joined just after another may still hear of that one (`* ann joined` reaching bob).
    // Those late notices are the only lines skipped.
    let next = |r: &mut BufReader<TcpStream>, reader: usize| loop {
        let line = read_line(r);
        if !names[..reader]
            .iter()
            .any(|n| line == format!("* {n} joined\n"))
        {
            return line;
        }
    };
    for (i, name) in names.iter().enumerate() {
        let (earlier, rest) = clients.split_at_mut(i);
        let (s, r) = &mut rest[0];
        assert_eq!(read_line(r), "* welcome; your nickname?\n");
        writeln!(s, "{name}").unwrap();
        let hello = read_line(r);
        assert!(
            hello.starts_with(&format!("* hello {name},")),
            "{kind}: {hello:?}"
        );
        // Everyone already there hears of the newcomer.
        for (j, (_, r)) in earlier.iter_mut().enumerate() {
            assert_eq!(next(r, j), format!("* {name} joined\n"), "{kind}");
        }
    }
    // Split across writes, with \r\n: one line all the same.
    clients[0].0.write_all(b"hello, ").unwrap();
    clients[0].0.write_all(b"all\r\n").unwrap();
    for (j, (_, r)) in clients.iter_mut().enumerate().skip(1) {
        assert_eq!(next(r, j), "ann: hello, all\n", "{kind}");
    }
    writeln!(clients[1].0, "/who").unwrap();
    assert_eq!(read_line(&mut clients[1].1), "* 4 online\n", "{kind}");
    // Ann's next line is what she gets first: she did not get her own message.
    writeln!(clients[0].0, "/who").unwrap();
    assert_eq!(read_line(&mut clients[0].1), "* 4 online\n", "{kind}");
    // A line over 1 KiB closes only its sender.
    clients[3].0.write_all(&[b'x'; 2000]).unwrap();
    assert_eq!(
        read_line_or_eof(&mut clients[3].1),
        None,
        "{kind}: dee not closed"
    );
    for (_, r) in &mut clients[..3] {
        assert_eq!(read_line(r), "* dee left\n", "{kind}");
    }
    writeln!(clients[2].0, "/quit").unwrap();
    assert_eq!(read_line(&mut clients[2].1), "* bye\n");
    assert_eq!(
        read_line_or_eof(&mut clients[2].1),
        None,
        "{kind}: /quit did not close"
    );
    for (_, r) in &mut clients[..2] {
        assert_eq!(read_line(r), "* cy left\n", "{kind}");
    }
    writeln!(clients[1].0, "still here").unwrap();
    assert_eq!(read_line(&mut clients[0].1), "bob: still here\n", "{kind}");
    chat.stop_on_sigterm("chat");
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
    chat_broadcasts_to_the_others,
    codec_client_to_codec_server,
    client_through_proxy_to_echo,
    client_to_udp_echo,
    client_to_unix_echo,
    push_ticks_every_connection,
    blocking_answers_from_its_pool,
);
