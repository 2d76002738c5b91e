//! Direct writes (`Options::direct_write_min`): a large write made while nothing is queued goes
//! to the socket from inside the callback. Checked on every backend: bytes arrive complete and
//! in write order however small and large writes interleave, including a write far larger than
//! the socket buffers (the kernel takes part, the rest is queued behind it); the backends that
//! allow it really skip the queue, stdnet and `direct_write_min(None)` never do.

mod util;

use std::io::Write;
use std::sync::{Arc, Mutex};

use gnet::{Action, BackendKind, Conn, EventHandler};
use util::{assert_bytes_eq, opts, Rng, Server, TCP};

const BIG: usize = 64 * 1024;
const HUGE: usize = 8 << 20;
const MID: usize = 8 * 1024;

/// The bytes of a write: a deterministic pattern per (tag, length).
fn blob(tag: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(tag * 7919 + len as u64);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// What the handler writes for each one-byte command, in order.
fn script(cmd: u8) -> Vec<Vec<u8>> {
    match cmd {
        b'a' => vec![b"s1".to_vec(), blob(1, BIG), b"s2".to_vec()],
        b'b' => vec![blob(2, BIG), b"s3".to_vec(), blob(3, BIG)],
        b'c' => vec![blob(4, HUGE), b"end".to_vec()],
        b'd' => vec![blob(5, BIG), blob(6, BIG), blob(7, 100), blob(8, BIG)],
        b'e' => vec![blob(9, MID), b"s4".to_vec()],
        _ => vec![b"?".to_vec()],
    }
}

#[derive(Default)]
struct Seen {
    /// What the first write of each command added to `outbound_buffered()`. (The queue may
    /// still count an earlier reply that reached the client: stdnet reports sends from its
    /// writer thread, so the next command can be handled before that report.)
    after_first: Vec<(u8, usize)>,
}

struct Scripted {
    seen: Arc<Mutex<Seen>>,
}

impl EventHandler for Scripted {
    type Context = ();
    fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
        while let Some(cmd) = c.next(1).map(|b| b[0]) {
            let before = c.outbound_buffered();
            for (i, w) in script(cmd).iter().enumerate() {
                c.write(w);
                if i == 0 {
                    let queued = c.outbound_buffered() - before;
                    self.seen.lock().unwrap().after_first.push((cmd, queued));
                }
            }
        }
        Action::None
    }
}

/// Runs the commands against a server whose `direct_write_min` is `direct` (`None`: the
/// backend's default) and returns what the handler saw queued after each first write.
fn run(kind: BackendKind, direct: Option<Option<usize>>, cmds: &[u8]) -> Vec<(u8, usize)> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let handler = Scripted { seen: seen.clone() };
    let mut o = opts(kind);
    if let Some(d) = direct {
        o = o.direct_write_min(d);
    }
    let server = Server::start(handler, &[TCP], o);
    let mut client = server.connect(0);
    for &cmd in cmds {
        client.write_all(&[cmd]).expect("send command");
        if cmd == b'c' {
            // Let the server fill the socket buffers before reading anything, so the direct
            // send of the 8 MiB write is partial and its rest waits in the queue.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let want: Vec<u8> = script(cmd).concat();
        let got = client.read_n(want.len());
        assert_bytes_eq(&got, &want, &format!("{kind}: reply to {:?}", cmd as char));
    }
    server.stop().expect("stop");
    let seen = seen.lock().unwrap();
    seen.after_first.clone()
}

fn in_order_and_complete(kind: BackendKind) {
    let seen = run(kind, Some(Some(4096)), b"abdca");
    let direct = kind != BackendKind::StdNet;
    for (cmd, queued) in seen {
        match cmd {
            // The first write of 'a' is small: it is queued whatever the backend.
            b'a' => assert_eq!(queued, 2, "{kind}: small first write of 'a' is queued"),
            b'b' | b'd' if direct => assert_eq!(
                queued, 0,
                "{kind}: a 64 KiB write with nothing queued should go straight to the kernel"
            ),
            b'b' | b'd' => assert_eq!(queued, BIG, "{kind}: stdnet queues every write"),
            b'c' if direct => assert!(
                queued < HUGE,
                "{kind}: the kernel should have taken part of the 8 MiB write directly"
            ),
            b'c' => assert_eq!(queued, HUGE),
            _ => unreachable!(),
        }
    }
}

fn disabled_queues_everything(kind: BackendKind) {
    let seen = run(kind, Some(None), b"abdcae");
    for (cmd, queued) in seen {
        let first = script(cmd)[0].len();
        assert_eq!(
            queued, first,
            "{kind}: with direct writes off the first write of {:?} stays queued",
            cmd as char
        );
    }
}

/// The defaults: epoll and io_uring send an 8 KiB and a 64 KiB write directly, stdnet queues
/// both.
fn backend_defaults(kind: BackendKind) {
    let seen = run(kind, None, b"eb");
    let want_mid = match kind {
        BackendKind::StdNet => MID,
        _ => 0,
    };
    let want_big = match kind {
        BackendKind::StdNet => BIG,
        _ => 0,
    };
    assert_eq!(seen, vec![(b'e', want_mid), (b'b', want_big)], "{kind}");
}

per_backend!(
    in_order_and_complete,
    disabled_queues_everything,
    backend_defaults
);
